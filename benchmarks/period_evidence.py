"""How the dates of a period combine (compare --period-evidence): the mean of their probabilities, or
each date as evidence for the period's one class (the product), measured on known change with three
dates a side (`stride_stability.py`'s layout of real EuroSAT MS test patches: each date other patches
of the same classes, a 2 x 2 patch block Forest -> Residential on dates 4-6), the grid on the patches
(offset 0) and 30 px off, at stride 64 and 16. Every cell outside the block is a no-change cell seen on
six different patches of its class: any change there is false.

    python benchmarks/period_evidence.py --shared ../shared [--model spectrumnet-rgb]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import rasterio  # noqa: E402

from atlas_change.change.compare import compare  # noqa: E402
from stride_stability import BLOCK, DAY, classified, mosaic  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.environ.get("ATLAS_SHARED", "../shared"))
    ap.add_argument("--model", default="spectrumnet-rgb")
    a = ap.parse_args()
    shared, root = Path(a.shared), Path(tempfile.mkdtemp(prefix="atlas-evidence-"))
    warnings.simplefilter("ignore")
    print(f"## Period evidence ({time.strftime('%Y-%m-%d %H:%M')}, model {a.model}, {os.cpu_count()} CPU cores)\n")
    print("| grid offset px | stride | period evidence | false change cells | found cells of the block | uncertain ha | valid ha |")
    print("|---|---|---|---|---|---|---|")
    for off in (0, 30):
        dates = {k: mosaic(shared, root, k, off) for k in range(1, 7)}
        for stride in (64, 16):
            maps = {k: classified(p, root, a.model, stride) for k, p in dates.items()}
            with rasterio.open(maps[1] / "lulc.tif") as src:
                b, crs = src.bounds, str(src.crs)
            for ev in ("mean", "product"):
                out = root / f"c{off}_{stride}_{ev}"
                s = compare([maps[k] for k in (1, 2, 3)], [maps[k] for k in (4, 5, 6)], out=out, aoi_crs=crs,
                            aoi_bbox=f"{b.left},{b.bottom},{b.right},{b.top}", period_evidence=ev,
                            before_date=[DAY[k] for k in (1, 2, 3)], after_date=[DAY[k] for k in (4, 5, 6)])
                with rasterio.open(out / "change.tif") as src:
                    code = src.read(1)
                y, x = (np.indices(code.shape) + 0.5) * stride + off
                inside = (y < BLOCK) & (x < BLOCK)
                print(f"| {off} | {stride} | {ev} | {((code > 0) & ~inside).sum()} of {(~inside).sum()} | "
                      f"{((code > 0) & inside).sum()} of {inside.sum()} | {s['uncertain_ha']:.2f} | {s['valid_ha']:.2f} |")


if __name__ == "__main__":
    main()
