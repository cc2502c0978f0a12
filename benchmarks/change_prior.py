"""How strong the change decision's transition prior should be for a model: every strength on pairs of
EuroSAT *val* and *test* patches, through the model's own calibrated probabilities and
`joint.decide_pair`, the function `compare` uses; the one the rule picks on val is what `calibrate`
writes into the card (atlas_change/change/prior.py, the same pairs and seeds). This prints the whole
table behind it, and takes other rules (--rate, --precision) without touching the card.

Pairs (one cell each, stride 64: a cell is one patch; the card's patch and stride-64 temperatures):
- **no change**: a patch, then *another* patch of the same class (the same land cover seen again, as
  in `stride_stability.py`), the second moved along the real L1C -> L2A change (`augment.to_l2a`,
  strength U(0, 1.2)) as a later L2A date would be: any change decided here is false;
- **change**: a patch, then a patch of another class (L2A-moved likewise): found when decided changed
  (and right when its from / to classes are the true ones).

Rule for the fit (written in docs/change.md): change is rare, so what matters is how many of the
cells called changed really changed where few do. Among the priors under which at least `--precision`
(3 in 4) of the cells called changed would be real change in a landscape where `--rate` (1 %) of the
cells change between the two dates (an upper range of yearly land-cover change: CORINE's change layers
map far less than that per year across Europe), the one that finds the most change (the strongest of
equals). The test pairs then say what that prior does on patches it was not chosen on; the real
scenes (`change_prior_scenes.py`) too.

    python benchmarks/change_prior.py --shared ../shared [--model spectrumnet-rgb] [--pairs 4000]

Prints Markdown tables (val and test) per prior strength, and the chosen one.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from atlas_change.model.calibrate import apply_temperature  # noqa: E402
from atlas_change.model.infer import DEFAULT_VIEWS, get_predictor  # noqa: E402
from atlas_change.change.joint import DEFAULT_THRESHOLD  # noqa: E402
from atlas_change.change.prior import RULE, SEEDS, choose, precision, split_rows  # noqa: E402
from atlas_change.model.registry import load_card  # noqa: E402
from atlas_change.model.train import load_split  # noqa: E402


def cells(card):
    """The model's calibrated stride-64 cell probabilities of JPEG patches (a cell is one patch)."""
    predict, t64 = get_predictor(card), card.cell_temperature(64)
    return lambda x: apply_temperature(np.concatenate(
        [predict(x[i:i + 512], prescaled=True, views=DEFAULT_VIEWS) for i in range(0, len(x), 512)]), t64)


def markdown(rows: list[dict], title: str) -> str:
    lines = [f"**{title}**", "", "| stay | false change (no-change pairs) | found (change pairs) | found with the right "
             "from / to | undecided, no-change pairs | undecided, change pairs | precision where 1 % changes |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['stay']:g} | {100 * r['false']:.2f} % | {100 * r['found']:.1f} % | {100 * r['found_right']:.1f} % | "
              f"{100 * r['undecided_nc']:.1f} % | {100 * r['undecided_ch']:.1f} % | {100 * precision(r, 0.01):.0f} % |"
              for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--model", default="spectrumnet-rgb")
    ap.add_argument("--pairs", type=int, default=RULE["pairs"], help="pairs of each kind per split")
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    ap.add_argument("--rate", type=float, default=RULE["rate"], help="share of cells that change (default 0.01)")
    ap.add_argument("--precision", type=float, default=RULE["precision"],
                    help="share of the cells called changed that must be real change at --rate (default 0.75)")
    a = ap.parse_args()
    card = load_card(a.model)
    data = Path(a.shared) / "eurosat" / "EuroSAT_RGB"
    print(f"model {card.name} ({card.weights_sha256[:12]}), threshold {a.threshold:g}, {a.pairs} pairs of each kind; "
          f"{os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d %H:%M')}\n")
    chosen, predict = None, cells(card)
    for split in ("val", "test"):
        X, y, _ = load_split(data, split, quiet=True)
        rows = split_rows(predict, X, y, SEEDS[split], a.pairs, a.threshold)
        print(markdown(rows, f"EuroSAT {split} pairs"), "\n")
        if split == "val":
            chosen = choose(rows, a.rate, a.precision)
            print(f"chosen on val: stay {chosen:g} (the most change found while at least {100 * a.precision:g} % of the "
                  f"cells called changed are real where {100 * a.rate:g} % of the cells change)\n")
        else:
            r = next(r for r in rows if r["stay"] == chosen)
            print(f"test at stay {chosen:g}: precision at {100 * a.rate:g} % change {100 * precision(r, a.rate):.0f} %, "
                  f"false {100 * r['false']:.2f} %, found {100 * r['found']:.1f} %, "
                  f"undecided {100 * r['undecided_nc']:.1f} % (no change) / {100 * r['undecided_ch']:.1f} % (change)")


if __name__ == "__main__":
    main()
