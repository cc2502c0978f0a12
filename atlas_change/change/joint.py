"""Change decided from every date together: each cell's posterior over its class history.

A cell's classes through the dates (or periods) form a Markov chain whose transition prior keeps a
class with probability `stay` and moves to each other class with (1 - stay) / (n - 1); each date's
calibrated class probabilities are its evidence (likelihoods up to a constant, the network having
been trained on near-balanced classes). The forward-backward recursions give, per cell, the
posterior of every date's class and of every step's (from, to) pair; two dates are the case of one
step, where the pair's posterior is p_a(i) * T(i, j) * p_b(j), normalised. A cell is *changed* where
P(change) >= `threshold`, *unchanged* where P(no change) >= it, otherwise *uncertain* (docs/change.md).
Pure numpy; arrays are (..., n) over any cell shape.
"""
from __future__ import annotations

import numpy as np

from ..classes import group_of

#: the prior probability that a cell keeps its class from one date (or period) to the next, where the
#: maps' model card carries none of its own (calibrate fits one per model: change/prior.py); the
#: shipped spectrumnet-rgb's, fitted on EuroSAT *val* pairs with known change (docs/change.md)
DEFAULT_STAY = 0.6
#: the posterior probability a decision (changed, or unchanged) needs; below it either way: uncertain
DEFAULT_THRESHOLD = 0.6
PRIOR_SOURCE = ("transition prior: keep the class with probability `stay`, move to each other class with "
                "(1 - stay) / 9; a model's own stay (calibrate, in its card) is the strongest prior that finds the "
                "most known change on pairs of EuroSAT val patches while at least 3 in 4 of the cells it calls "
                "changed would be real where 1 % of the cells change (atlas_change/change/prior.py), reported on "
                "test patches (docs/change.md)")


def transition_prior(stay: float, n: int = 10) -> np.ndarray:
    """(n, n): `stay` on the diagonal, (1 - stay) / (n - 1) elsewhere (rows sum to 1)."""
    if not 0 < stay < 1:
        raise ValueError(f"stay {stay}: expected a probability strictly between 0 and 1")
    t = np.full((n, n), (1 - stay) / (n - 1))
    np.fill_diagonal(t, stay)
    return t


def _evidence(p: np.ndarray) -> np.ndarray:
    """A date's class probabilities as evidence: NaN (not seen: cloud, nodata) -> no evidence (all 1),
    floored so that one date's zero cannot veto a class for good."""
    e = np.where(np.isnan(p), 1.0, p).astype(np.float64)
    return np.maximum(e, 1e-6)


def forward_backward(probs: list[np.ndarray], stay: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Posteriors of a chain of dates: (per date the class marginals (..., n), per step the pair
    posterior (..., n, n) with from on axis -2). A date whose probabilities are NaN adds no evidence."""
    t = transition_prior(stay, probs[0].shape[-1])
    ev = [_evidence(p) for p in probs]
    fwd = [ev[0] / ev[0].sum(-1, keepdims=True)]
    for e in ev[1:]:
        a = (fwd[-1] @ t) * e
        fwd.append(a / a.sum(-1, keepdims=True))
    bwd = [np.ones_like(ev[-1])]
    for e in ev[:0:-1]:
        b = (bwd[0] * e) @ t.T
        bwd.insert(0, b / b.sum(-1, keepdims=True))
    marg = [f * b / (f * b).sum(-1, keepdims=True) for f, b in zip(fwd, bwd)]
    pairs = []
    for k in range(len(ev) - 1):
        x = fwd[k][..., :, None] * t * (ev[k + 1] * bwd[k + 1])[..., None, :]
        pairs.append(x / x.sum((-2, -1), keepdims=True))
    return marg, pairs


def p_same_throughout(probs: list[np.ndarray], stay: float) -> np.ndarray:
    """P(the cell keeps one class on every date) given all dates: the posterior mass of the constant
    histories, sum_c prod_d e_d(c) stay^(D-1), over the evidence of all histories (the forward pass)."""
    t = transition_prior(stay, probs[0].shape[-1])
    ev = [_evidence(p) for p in probs]
    a, const = ev[0], ev[0].copy()
    for e in ev[1:]:  # scaled forward pass and the constant paths, rescaled alike
        a, const = (a @ t) * e, const * stay * e
        s = a.sum(-1)
        a, const = a / s[..., None], const / s[..., None]
    return const.sum(-1) / a.sum(-1)


def decide_pair(pa: np.ndarray, pb: np.ndarray, stay: float = DEFAULT_STAY,
                threshold: float = DEFAULT_THRESHOLD) -> dict[str, np.ndarray]:
    """The joint decision for two dates (or periods) with class probabilities `pa`, `pb` (..., n):
    see `decide_step`."""
    (ma, mb), (pair,) = forward_backward([pa, pb], stay)
    return decide_step(pair, ma, mb, threshold)


def decide_step(pair: np.ndarray, ma: np.ndarray, mb: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """The decision of one step from its (from, to) posterior `pair` (..., n, n) and both dates'
    class marginals: 'p_change' (any class change), 'p_conversion' (a change between land-cover
    groups), 'changed', 'unchanged' (boolean, exclusive when threshold > 0.5), 'before' / 'after'
    class ids 1..n (the most probable pair among the changed ones for changed cells, among the
    unchanged ones for unchanged cells, each date's most probable class for uncertain ones) and
    'before_p' / 'after_p' (each date's posterior probability of that class)."""
    n = pair.shape[-1]
    diag = np.diagonal(pair, axis1=-2, axis2=-1)
    p_change = np.clip(1 - diag.sum(-1), 0, 1)
    groups = group_of(np.arange(1, n + 1))
    p_conversion = np.clip((pair * (groups[:, None] != groups[None, :])).sum((-2, -1)), 0, 1)
    changed, unchanged = p_change >= threshold, (1 - p_change) >= threshold
    flat = pair.reshape(*pair.shape[:-2], n * n)
    off = np.where(np.eye(n, dtype=bool).ravel(), -1, flat).argmax(-1)
    stay_cls = diag.argmax(-1)
    before = np.where(changed, off // n, np.where(unchanged, stay_cls, ma.argmax(-1))) + 1
    after = np.where(changed, off % n, np.where(unchanged, stay_cls, mb.argmax(-1))) + 1
    take = lambda m, c: np.take_along_axis(m, (c - 1)[..., None], -1)[..., 0]  # noqa: E731
    return {"p_change": p_change, "p_conversion": p_conversion, "changed": changed, "unchanged": unchanged,
            "before": before, "after": after, "before_p": take(ma, before), "after_p": take(mb, after)}


#: cells decided at a time by decide_chain: the pair posteriors take n x n float64 (800 bytes) a cell
CELLS_PER_BLOCK = 65_536


def decide_chain(probs: list[np.ndarray], stay: float, threshold: float, span: bool = False,
                 per_block: int = CELLS_PER_BLOCK) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray] | None]:
    """`decide_step` for every step of a chain of (rows, cols, n) maps, and for the span (first
    against last, `span_pair`) when `span`: -> (steps, span or None). Decided a band of rows at a time
    (each cell's history is its own), so that the pair posteriors are never held for the whole map."""
    rows = max(1, per_block // max(1, probs[0].shape[1]))
    steps: list[dict[str, np.ndarray]] = []
    whole: dict[str, np.ndarray] | None = None
    for r0 in range(0, probs[0].shape[0], rows):
        band = [p[r0:r0 + rows] for p in probs]
        marg, pairs = forward_backward(band, stay)
        parts = [decide_step(pairs[k], marg[k], marg[k + 1], threshold) for k in range(len(band) - 1)]
        del pairs
        if span:
            parts.append(decide_step(span_pair(band, stay), marg[0], marg[-1], threshold))
        if not steps:
            steps = [{k: np.empty(probs[0].shape[:-1], v.dtype) for k, v in part.items()} for part in parts]
        for out, part in zip(steps, parts):
            for k, v in part.items():
                out[k][r0:r0 + rows] = v
    if span:
        whole = steps.pop()
    return steps, whole


def viterbi(probs: list[np.ndarray], stay: float) -> np.ndarray:
    """The most probable class history of each cell: (D, ...) class ids 1..n."""
    t = np.log(transition_prior(stay, probs[0].shape[-1]))
    ev = [np.log(_evidence(p)) for p in probs]
    score, back = ev[0], []
    for e in ev[1:]:
        cand = score[..., :, None] + t  # (..., from, to)
        back.append(cand.argmax(-2))
        score = cand.max(-2) + e
    path = [score.argmax(-1)]
    for b in back[::-1]:
        path.insert(0, np.take_along_axis(b, path[0][..., None], -1)[..., 0])
    return np.stack(path) + 1


def span_pair(probs: list[np.ndarray], stay: float) -> np.ndarray:
    """The posterior of (first date's class, last date's class) given every date (..., n, n): one
    forward pass per first class (n of them), the dates between summed over."""
    t = transition_prior(stay, probs[0].shape[-1])
    ev = [_evidence(p) for p in probs]
    n = ev[0].shape[-1]
    out = np.empty((*ev[0].shape[:-1], n, n))
    for i in range(n):
        a = np.zeros_like(ev[0])
        a[..., i] = ev[0][..., i]
        for e in ev[1:]:
            a = (a @ t) * e
        out[..., i, :] = a
    return out / out.sum((-2, -1), keepdims=True)
