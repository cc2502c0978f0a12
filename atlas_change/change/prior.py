"""The change decision's transition prior fitted to a model: pairs of EuroSAT patches with known
change and no change, decided by `joint.decide_pair` under each prior strength; the rule picks the
prior that finds the most change while the cells called changed would mostly be real where change
is rare (docs/change.md). The `calibrate` command runs it (fit_card) last, through the model's
calibrated stride-64 cell probabilities (a cell is one patch), and writes it into the card.
"""
from __future__ import annotations

import numpy as np

from .joint import decide_pair

STAYS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)
#: the fit's rule and sample (docs/change.md): the strongest prior among those that find the most change
#: while at least `precision` of the cells called changed are real where `rate` of the cells change
RULE = {"pairs": 4000, "rate": 0.01, "precision": 0.75}
SEEDS = {"val": 1, "test": 2}


def pairs(y: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first, second, changed): n no-change pairs (two different patches of one class; the same patch
    where its class has no other) and n change pairs (patches of two classes), as indices into the split."""
    by = [np.flatnonzero(y == c) for c in range(10)]
    first = rng.integers(0, len(y), 2 * n)
    second = np.empty_like(first)
    for k, i in enumerate(first):
        if k < n:
            pool = by[y[i]]
            j = i
            while j == i and len(pool) > 1:
                j = pool[rng.integers(len(pool))]
        else:
            c = (y[i] + rng.integers(1, 10)) % 10
            j = by[c][rng.integers(len(by[c]))]
        second[k] = j
    return first, second, np.arange(2 * n) >= n


def table(pa, pb, y, first, second, changed, threshold: float) -> list[dict]:
    """Per prior strength: false change, found change (and right from / to), undecided shares."""
    rows = []
    for stay in STAYS:
        d = decide_pair(pa[first], pb[second], stay, threshold)
        nc, ch = ~changed, changed
        right = (d["before"] - 1 == y[first]) & (d["after"] - 1 == y[second])
        rows.append({"stay": stay, "false": d["changed"][nc].mean(), "found": d["changed"][ch].mean(),
                     "found_right": (d["changed"] & right)[ch].mean(),
                     "undecided_nc": (~d["changed"] & ~d["unchanged"])[nc].mean(),
                     "undecided_ch": (~d["changed"] & ~d["unchanged"])[ch].mean()})
    return rows


def precision(r: dict, rate: float) -> float:
    """Share of the cells called changed that changed, where `rate` of all cells change."""
    hit, false = r["found"] * rate, r["false"] * (1 - rate)
    return hit / (hit + false) if hit + false else 1.0


def choose(rows: list[dict], rate: float, target: float) -> float:
    """The prior that finds the most change with at least `target` precision at `rate` (strongest of equals)."""
    ok = [r for r in rows if precision(r, rate) >= target]
    if not ok:
        return max(r["stay"] for r in rows)
    best = max(round(r["found"], 3) for r in ok)
    return max(r["stay"] for r in ok if round(r["found"], 3) == best)


def l2a_moved(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The JPEG patches moved along the real L1C -> L2A change (augment.to_l2a, strength U(0, 1.2)), as a
    later L2A date would see the same land."""
    from ..model.augment import l2a_fit_rgb, to_l2a

    a, b = l2a_fit_rgb()
    return np.clip(to_l2a(X.astype(np.float32), rng.uniform(0, 1.2, (len(X), 1, 1, 1)), a, b), 0, 255)


def split_rows(predict, X: np.ndarray, y: np.ndarray, seed: int, n: int, threshold: float) -> list[dict]:
    """`table` on `n` pairs of each kind from one split: the first date as the patches are, the second
    L2A-moved. `predict(patches)`: calibrated stride-64 cell probabilities."""
    rng = np.random.default_rng(seed)
    pb = predict(l2a_moved(X, rng))
    first, second, changed = pairs(y, n, rng)
    return table(predict(X), pb, y, first, second, changed, threshold)


def fit(predict, splits: dict, threshold: float) -> dict:
    """The card's `change_prior`: the stay the rule picks on the val pairs, with the figures it gives on
    val and on test pairs. `splits`: {"val": (X, y), "test": (X, y)}."""
    rows = {s: split_rows(predict, X, y, SEEDS[s], RULE["pairs"], threshold) for s, (X, y) in splits.items()}
    stay = choose(rows["val"], RULE["rate"], RULE["precision"])

    def at(split: str) -> dict:
        r = next(r for r in rows[split] if r["stay"] == stay)
        return {k: round(float(v), 4) for k, v in r.items() if k != "stay"} | {
            "precision_at_rate": round(precision(r, RULE["rate"]), 4)}

    return {"stay": stay,
            "method": (f"transition prior of the change decision fitted on {RULE['pairs']} + {RULE['pairs']} pairs of "
                       "EuroSAT val patches (no change: two patches of one class; change: of two classes; the second "
                       "moved L2A-like), the strongest of the priors that find the most change while at least "
                       f"{RULE['precision']:g} of the cells called changed are real where {RULE['rate']:g} of the "
                       "cells change; reported on test pairs (atlas_change/change/prior.py, docs/change.md)"),
            "threshold": threshold, **{k: RULE[k] for k in ("rate", "precision")}, "val": at("val"), "test": at("test")}


def fit_card(data, model: str, splits: str | None = None, quiet: bool = False) -> dict:
    """Fit the change prior of a calibrated model through its card's temperatures, test-time views and
    runtime, on the EuroSAT RGB val and test splits, and write it into the card
    (`calibration.change_prior`); -> that record."""
    from ..errors import AtlasError
    from ..model.calibrate import rgb_splits
    from ..model.infer import DEFAULT_RUNTIME, apply_temperature, get_predictor
    from ..model.registry import load_card, set_card_entry
    from .joint import DEFAULT_THRESHOLD

    card = load_card(model)
    cal = card.calibration
    if "temperature" not in cal:
        raise AtlasError(f"{card.path}: not calibrated yet; run calibrate without --change-prior-only first")
    predictor = get_predictor(card, cal.get("runtime") or DEFAULT_RUNTIME)
    t, t64 = card.temperature, card.cell_temperature(64)
    views = int(cal.get("tta_views", 1))
    record = fit(lambda x: apply_temperature(apply_temperature(
        predictor(x, prescaled=True, views=views, calibrated=False), t), t64),
        rgb_splits(data, card, splits, quiet), DEFAULT_THRESHOLD)
    set_card_entry(card.path, ("calibration", "change_prior"), record)
    return record
