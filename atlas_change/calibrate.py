"""Calibration: class probabilities that mean what they say. Temperature scaling (Guo et al. 2017,
"On Calibration of Modern Neural Networks", ICML): one number T, fitted on the validation split by
minimising the negative log-likelihood, divides the log-probabilities before the softmax:
p' = softmax(log p / T). The top class never changes (labels are the same), only how sure the
model says it is; --min-confidence then gates on p'. Measured by the expected calibration error
(ECE, 15 equal-width confidence bins) on the test split, before and after."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .errors import AtlasError

BINS = 15


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), row by row (T = 1: unchanged)."""
    if temperature == 1.0:
        return probs
    z = np.log(np.maximum(probs, 1e-12)) / np.float32(temperature)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


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


def calibrate(data: str | os.PathLike, model: str, splits: str | None = None, views: int | None = None,
              runtime: str | None = None, quiet: bool = False) -> dict:
    """Fit the model's temperature on the validation split (with `views` test-time views, default the
    classify default), score ECE on test before and after, and write both into the model's card.json
    (the weights, and so their SHA-256, are untouched)."""
    from .infer import DEFAULT_RUNTIME, DEFAULT_VIEWS, get_predictor
    from .registry import load_card
    from .train import RGB_BANDS, band_indices, load_split

    card = load_card(model)
    views, runtime = views or DEFAULT_VIEWS, runtime or DEFAULT_RUNTIME
    raw = {}
    for split in ("val", "test"):
        X, y, _ = load_split(data, split, splits, quiet)
        if X.shape[-1] != len(RGB_BANDS):
            raise AtlasError(f"{data}: calibration reads the EuroSAT RGB JPEGs (their val split); MS has none")
        x = X[..., band_indices(card.bands, RGB_BANDS)]
        raw[split] = (get_predictor(card, runtime)(x, prescaled=True, views=views, calibrated=False), y)
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
    path = Path(card.path) / "card.json"
    doc = json.loads(path.read_text())
    doc["calibration"] = record
    tmp = path.with_name(".card.json.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    return record
