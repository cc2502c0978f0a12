"""Calibration: class probabilities that mean what they say. Temperature scaling (Guo et al. 2017,
"On Calibration of Modern Neural Networks", ICML): one number T, fitted on the validation split by
minimising the negative log-likelihood, divides the log-probabilities before the softmax:
p' = softmax(log p / T). The top class never changes (labels are the same), only how sure the
model says it is; --min-confidence then gates on p'. Measured by the expected calibration error
(ECE, 15 equal-width confidence bins) on the test split, before and after.

Map cells need a second temperature per stride: a stride-64 cell is one 640 m patch, confidently
labelled even where it straddles two land covers, while a stride-16 cell averages the 16 patches over
it. So each stride gets T_s, fitted the same way on the cells of mosaics of EuroSAT val patches laid
out in fields of 1-4 patches a side with the grid at a random offset (a cell's truth: the class of
most of its pixels), scored on mosaics of test patches, and applied by classify to the cell
probabilities at that stride (after the patch temperature; labels unchanged).

The `calibrate` command then fits the change decision's transition prior to those calibrated
probabilities (change/prior.py): every map carries it and compare decides that model's maps with it."""
from __future__ import annotations

import os

import numpy as np

from ..errors import AtlasError
from .infer import apply_temperature

BINS = 15
STRIDES = (64, 32, 16)
#: the calibration mosaics: patches a side (cut to 16 after a random offset), largest field of each
#: mosaic in turn (patches a side), mosaics per split, seed
MOSAICS = {"patches": 18, "fields": (1, 2, 3, 4), "mosaics": 24, "seed": 7}


def ece(probs: np.ndarray, y: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: the mean over confidence bins of |accuracy - confidence|, weighted
    by the share of patches in each bin."""
    conf, right = probs.max(axis=1), probs.argmax(axis=1) == y
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    err = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            err += m.mean() * abs(right[m].mean() - conf[m].mean())
    return float(err)


def reliability(probs: np.ndarray, y: np.ndarray, lo: float = 0.85, hi: float = 0.95) -> tuple[float, int]:
    """Accuracy of the patches whose top probability lies in [lo, hi) (e.g. 'given 0.9'), and how many."""
    conf = probs.max(axis=1)
    m = (conf >= lo) & (conf < hi)
    return (float((probs.argmax(axis=1)[m] == y[m]).mean()) if m.any() else float("nan")), int(m.sum())


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """The T that minimises the negative log-likelihood of `y` under softmax(log p / T)."""
    from scipy.optimize import minimize_scalar

    logp = np.log(np.maximum(probs.astype(np.float64), 1e-12))

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        return float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1))).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(np.log(0.05), np.log(20)), method="bounded").x))


def mosaic(X: np.ndarray, y: np.ndarray, rng: np.random.Generator, max_field: int,
           n: int = MOSAICS["patches"]) -> tuple[np.ndarray, np.ndarray]:
    """(image (H, W, bands) of `X`'s dtype, class per pixel (H, W)): n x n patch places filled with
    fields of 1..max_field places a side, each of a random class, each place another random patch of
    that class, then cut n - 2 places a side at a random offset of 1-63 px (fields never line up with
    the grid)."""
    size = X.shape[1]
    img = np.zeros((n * size, n * size, X.shape[-1]), X.dtype)
    truth = np.full((n, n), -1, np.int16)
    by_class = [np.flatnonzero(y == k) for k in range(int(y.max()) + 1)]
    for r in range(n):
        for c in range(n):
            if truth[r, c] >= 0:
                continue
            k = int(rng.choice([j for j, idx in enumerate(by_class) if len(idx)]))
            h, w = (int(rng.integers(1, max_field + 1)) for _ in range(2))
            field = truth[r:r + h, c:c + w]
            field[field < 0] = k
    for r, c in np.ndindex(n, n):
        img[r * size:(r + 1) * size, c * size:(c + 1) * size] = X[rng.choice(by_class[truth[r, c]])]
    off, side = int(rng.integers(1, size)), (n - 2) * size
    pixels = np.repeat(np.repeat(truth, size, 0), size, 1)
    return img[off:off + side, off:off + side], pixels[off:off + side, off:off + side]


def mosaic_cells(predict, img: np.ndarray, truth: np.ndarray, stride: int,
                 n_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Classify's cells of a mosaic at `stride`: (cell probabilities (m, classes) = the mean of the
    patches over each cell, as classify averages them; each cell's truth, the class of most of its
    pixels). `predict(patches)` gives patch probabilities."""
    from ..tile import PATCH, average_to_cells, cut_patches

    patches, usable = cut_patches(img.transpose(2, 0, 1), np.ones(truth.shape, bool), stride, PATCH)
    probs = np.zeros(usable.shape + (n_classes,), np.float32)
    probs[usable] = predict(patches)
    cells, _ = average_to_cells(probs, usable, PATCH // stride)
    rows, cols = cells.shape[:2]
    block = truth[:rows * stride, :cols * stride].reshape(rows, stride, cols, stride)
    counts = np.stack([(block == k).sum(axis=(1, 3)) for k in range(n_classes)], axis=-1)
    return cells.reshape(-1, n_classes), counts.argmax(axis=-1).ravel()


def fit_stride_temperatures(splits: dict, predict, quiet: bool = False) -> dict:
    """Per stride: T_s fitted on the cells of val mosaics, kept only where it lowers the expected
    calibration error of the cells of test mosaics (else 1.0: temperature scaling minimises the
    likelihood and does not always fit averaged probabilities); ECE and the share of cells below 0.6
    on the test mosaics before and after. `splits`: {"val": (X, y), "test": (X, y)}; `predict(patches)`:
    calibrated patch probabilities."""
    from tqdm import tqdm

    cells = {}
    for split, (X, y) in splits.items():
        rng = np.random.default_rng(MOSAICS["seed"] + (split == "test"))
        got = {s: ([], []) for s in STRIDES}
        for i in tqdm(range(MOSAICS["mosaics"]), desc=f"{split} mosaics", unit="mosaic", disable=quiet):
            img, truth = mosaic(X, y, rng, MOSAICS["fields"][i % len(MOSAICS["fields"])])
            for s in STRIDES:
                for acc, a in zip(got[s], mosaic_cells(predict, img, truth, s)):
                    acc.append(a)
        cells[split] = {s: tuple(np.concatenate(a) for a in got[s]) for s in STRIDES}
    out = {}
    for s in STRIDES:
        fitted = fit_temperature(*cells["val"][s])
        p, yt = cells["test"][s]
        before, q = ece(p, yt), apply_temperature(p, fitted)
        kept = ece(q, yt) < before  # else the averaging calibrates well enough
        t, q = (fitted, q) if kept else (1.0, p)
        out[str(s)] = {"temperature": round(t, 4), "fitted": round(fitted, 4), "kept": bool(kept),
                       "ece_test_before": round(before, 4), "ece_test_after": round(ece(q, yt), 4),
                       "accuracy_test": round(float((p.argmax(1) == yt).mean()), 4),
                       "share_below_0.6_before": round(float((p.max(1) < 0.6).mean()), 4),
                       "share_below_0.6_after": round(float((q.max(1) < 0.6).mean()), 4), "cells_test": int(len(yt))}
    return out


def rgb_splits(data: str | os.PathLike, card, splits: str | None = None, quiet: bool = False) -> dict:
    """{"val": (X, y), "test": (X, y)}: the EuroSAT RGB JPEGs of both splits in the card's band order
    (AtlasError for the MS GeoTIFFs, which have no JPEG twins to calibrate on)."""
    from .train import RGB_BANDS, band_indices, load_split

    out = {}
    for split in ("val", "test"):
        X, y, _ = load_split(data, split, splits, quiet)
        if X.shape[-1] != len(RGB_BANDS):
            raise AtlasError(f"{data}: calibration reads the EuroSAT RGB JPEGs (their val split); MS has none")
        out[split] = (X[..., band_indices(card.bands, RGB_BANDS)], y)
    return out


def calibrate(data: str | os.PathLike, model: str, splits: str | None = None, views: int | None = None,
              runtime: str | None = None, quiet: bool = False, strides: bool = True) -> dict:
    """Fit the model's temperature on the validation split (with `views` test-time views, default the
    classify default), score ECE on test before and after; with `strides`, then a temperature per
    stride for map cells on mosaics (fit_stride_temperatures); write it all into the model's
    card.json (the weights, and so their SHA-256, are untouched)."""
    from .infer import DEFAULT_RUNTIME, DEFAULT_VIEWS, get_predictor
    from .registry import load_card, set_card_entry

    card = load_card(model)
    views, runtime = views or DEFAULT_VIEWS, runtime or DEFAULT_RUNTIME
    predictor = get_predictor(card, runtime)
    xy = rgb_splits(data, card, splits, quiet)
    raw = {s: (predictor(X, prescaled=True, views=views, calibrated=False), y) for s, (X, y) in xy.items()}
    t = fit_temperature(*raw["val"])
    test_p, test_y = raw["test"]
    after = apply_temperature(test_p, t)
    record = {"method": "temperature scaling (Guo et al. 2017), fitted on the EuroSAT val split",
              "temperature": round(t, 4), "tta_views": views, "runtime": runtime,
              "ece_test_before": round(ece(test_p, test_y), 4), "ece_test_after": round(ece(after, test_y), 4),
              "accuracy_of_0.85-0.95_before": [round(v, 4) if isinstance(v, float) else v
                                               for v in reliability(test_p, test_y)],
              "accuracy_of_0.85-0.95_after": [round(v, 4) if isinstance(v, float) else v
                                              for v in reliability(after, test_y)],
              "n_val": int(len(raw["val"][1])), "n_test": int(len(test_y))}
    if strides:
        record["stride_temperature"] = {
            "method": ("a second temperature per stride for map cells, fitted on the cells of "
                       f"{MOSAICS['mosaics']} mosaics of val patches in fields of 1-{max(MOSAICS['fields'])} "
                       "patches a side (grid at a random offset; truth: a cell's majority class), kept where it "
                       "lowers the calibration error on as many mosaics of test patches (else 1); classify "
                       "applies it to the cell probabilities"),
            **fit_stride_temperatures(xy, lambda x: apply_temperature(
                predictor(x, prescaled=True, views=views, calibrated=False), t), quiet)}
    set_card_entry(card.path, ("calibration",), record)  # a change prior fitted to the old one goes with it
    return record
