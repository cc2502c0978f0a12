"""The change decision's transition prior fitted to a model: pairs of EuroSAT patches with known
change and no change, decided by `joint.decide_pair` under each prior strength; the rule picks the
prior that finds the most change while the cells called changed would mostly be real where change
is rare (docs/change.md). Pure numpy; the probabilities come from the caller.
"""
from __future__ import annotations

import numpy as np

from .joint import decide_pair

STAYS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)


def pairs(y: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first, second, changed): n no-change pairs (two different patches of one class) and n change
    pairs (patches of two classes), as indices into the split."""
    by = [np.flatnonzero(y == c) for c in range(10)]
    first = rng.integers(0, len(y), 2 * n)
    second = np.empty_like(first)
    for k, i in enumerate(first):
        if k < n:
            pool = by[y[i]]
            j = i
            while j == i:
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
