"""Labels on real Sentinel-2 data, through `classify` itself (not the training loader): the 54 EuroSAT
MS test patches one by one, the six BigEarthNet L2A patches (one GeoTIFF per band, CORINE labels) and
the eo-learn L1C forest (clear and cloudy date). Prints a Markdown report for models/README.md.

    python benchmarks/real_scenes.py --shared ../shared --model spectrumnet-rgb --model resnet50-rgb
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import atlas_change  # noqa: E402
from atlas_change.classes import CLASSES  # noqa: E402


def ms_patches(shared: Path, model: str) -> tuple[float, int, dict]:
    """Accuracy of classify() on each EuroSAT MS test GeoTIFF (one 64 x 64 patch = one cell)."""
    files = sorted((shared / "eurosat" / "EuroSAT_MS_subset" / "test").glob("*/*.tif"))
    wrong = Counter()
    right = 0
    for p in files:
        lulc = int(atlas_change.classify(p, model=model, scheduler="sync")["lulc"].values[0, 0])
        if CLASSES[lulc - 1] == p.parent.name:
            right += 1
        else:
            wrong[f"{p.parent.name}->{CLASSES[lulc - 1]}"] += 1
    return right / len(files), len(files), dict(wrong.most_common())


def labels(path: Path, model: str, stride: int) -> tuple[Counter, float]:
    """Cells per class (and 'cloud (masked)'), mean confidence of the labelled cells (NaN: none)."""
    ds = atlas_change.classify(path, model=model, stride=stride, scheduler="sync")
    ids = ds["lulc"].values
    conf = ds["confidence"].values
    counts = Counter(CLASSES[i - 1] for i in ids[ids > 0].ravel())
    if ds["cloud"].values.any():
        counts["cloud (masked)"] = int(ds["cloud"].values.sum())
    return counts, float(np.nanmean(conf)) if (ids > 0).any() else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.environ.get("ATLAS_SHARED", "../shared"), help="the shared data folder")
    ap.add_argument("--model", action="append", required=True, help="model name (repeatable)")
    a = ap.parse_args()
    shared = Path(a.shared)
    print(f"## Real data through `classify` ({time.strftime('%Y-%m-%d')})\n")
    for model in a.model:
        acc, n, wrong = ms_patches(shared, model)
        print(f"### {model}\n")
        print(f"- EuroSAT MS test patches (13-band L1C GeoTIFFs) one by one through classify: "
              f"**{acc:.3f}** ({round(acc * n)}/{n}); errors: {json.dumps(wrong)}")
        print("\n| scene | reference | stride | labels (cells) | mean confidence |\n|---|---|---|---|---|")
        for d in sorted((shared / "scenes" / "bigearthnet-s2-example").iterdir()):
            ref = json.loads(next(d.glob("*_labels_metadata.json")).read_text())["labels"]
            counts, conf = labels(d, model, 32)
            print(f"| BigEarthNet L2A {d.name} | {'; '.join(ref)} | 32 | "
                  f"{', '.join(f'{k} {v}' for k, v in counts.most_common())} | {conf:.2f} |")
        for name in ("clear", "cloudy"):
            counts, conf = labels(shared / "scenes" / "eolearn-l1c13" / f"{name}.tif", model, 16)
            print(f"| eo-learn L1C {name}.tif | mostly forest (land_use.tif) | 16 | "
                  f"{', '.join(f'{k} {v}' for k, v in counts.most_common())} | {conf:.2f} |")
        print()


if __name__ == "__main__":
    main()
