"""How well are map cells calibrated at each stride, and how much does the per-stride cell temperature
that `calibrate` writes into the card (fitted on mosaics of val patches in fields of 1-4 patches) depend
on that guess at how fragmented land is?

Mosaics of real EuroSAT **test** JPEGs (calibrate.mosaic: fields of 1..F patches a side, each place
another test patch of its field's class, the grid at a random offset; a cell's truth is the class of
most of its pixels), cut into patches and averaged onto cells as classify does (calibrate.mosaic_cells),
`--tta 2`, the card's patch temperature. Per fragmentation and stride: accuracy, expected calibration
error (15 bins) and share of cells below 0.6 without and with the card's cell temperature, and the
temperature that would fit this fragmentation best.

    python benchmarks/stride_calibration.py --shared ../shared [--model spectrumnet-rgb] [--mosaics 12]

Prints one Markdown table.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from atlas_change.model.calibrate import STRIDES, apply_temperature, ece, fit_temperature, mosaic, mosaic_cells  # noqa: E402
from atlas_change.model.infer import DEFAULT_VIEWS, get_predictor  # noqa: E402
from atlas_change.model.registry import load_card  # noqa: E402
from atlas_change.model.train import RGB_BANDS, band_indices, load_split  # noqa: E402

FRAGMENTATIONS = ((1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), (3, 4))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.environ.get("ATLAS_SHARED", "../shared"))
    ap.add_argument("--model", default="spectrumnet-rgb")
    ap.add_argument("--mosaics", type=int, default=12, help="test mosaics per fragmentation (default 12)")
    a = ap.parse_args()
    card = load_card(a.model)
    X, y, _ = load_split(Path(a.shared) / "eurosat" / "EuroSAT_RGB", "test", quiet=True)
    X = X[..., band_indices(card.bands, RGB_BANDS)]
    predictor = get_predictor(card)
    print(f"## Map cells' calibration by fragmentation and stride ({a.model} {card.short_hash}, "
          f"{a.mosaics} mosaics of EuroSAT test patches each, --tta {DEFAULT_VIEWS})\n")
    print("Cell temperatures in the card: " + ", ".join(f"{s}: {card.cell_temperature(s):.2f}" for s in STRIDES) + "\n")
    print("| fields (patches a side) | stride | cells | accuracy | ECE without / with the card's cell T | "
          "share < 0.6 without / with | T that fits this fragmentation |")
    print("|---|---|---|---|---|---|---|")
    for fields in FRAGMENTATIONS:
        rng = np.random.default_rng(11)
        got = {s: ([], []) for s in STRIDES}
        for i in range(a.mosaics):
            img, truth = mosaic(X, y, rng, fields[i % len(fields)])
            for s in STRIDES:
                for acc, v in zip(got[s], mosaic_cells(lambda x: predictor(x, prescaled=True, views=DEFAULT_VIEWS),
                                                       img, truth, s)):
                    acc.append(v)
        for s in STRIDES:
            p, t = (np.concatenate(v) for v in got[s])
            q = apply_temperature(p, card.cell_temperature(s))
            print(f"| {'/'.join(map(str, fields))} | {s} | {len(t)} | {(p.argmax(1) == t).mean():.3f} | "
                  f"{ece(p, t):.3f} / {ece(q, t):.3f} | {(p.max(1) < 0.6).mean():.3f} / {(q.max(1) < 0.6).mean():.3f} | "
                  f"{fit_temperature(p, t):.2f} |", flush=True)


if __name__ == "__main__":
    main()
