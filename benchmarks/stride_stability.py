"""Changed and uncertain hectares of the same scenes and AOI at stride 64, 32 and 16, and with one
date against periods of three dates a side, through `classify` and `compare` themselves, on data
with known answers:

1. **Known change**: two dates laid out from the real EuroSAT MS test patches (13-band L1C, 64 x 64 px
   each) on a 6 x 6 grid (384 px, 1,474.56 ha): four areas of one class each (Forest, AnnualCrop,
   SeaLake, Pasture); on the second date every place shows another patch of the same class (the same
   land seen again: any change reported there is false), except a 2 x 2 block of Forest turned
   Residential (163.84 ha of true change).
   Periods: dates 1-3 against dates 4-6 (each date other patches of each class; the block changed on
   4-6), against date 1 against date 4 alone.
2. **No change at all**: the SSL4EO-S12 L1C and L2A products of one acquisition (warped to UTM as in
   real_scenes.py): the land is the same, so every changed hectare is false.

    python benchmarks/stride_stability.py --shared ../shared [--model spectrumnet-rgb]

Prints a Markdown table per case: changed, uncertain, conversion hectares, and for case 1 the true
change found (changed cells inside the block) and the false change (outside it).
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
from affine import Affine  # noqa: E402

import atlas_change  # noqa: E402
from atlas_change.bands import EUROSAT_ORDER  # noqa: E402
from atlas_change.compare import compare  # noqa: E402

N = 6  # patches a side
LAYOUT = np.array([["Forest"] * 3 + ["AnnualCrop"] * 3] * 3 + [["SeaLake"] * 3 + ["Pasture"] * 3] * 3)
CHANGED = (slice(0, 2), slice(0, 2))  # Forest -> Residential on date 2
X0, Y0 = 500000.0, 5000000.0


def mosaic(shared: Path, out: Path, date: int) -> Path:
    """One date of the known-change scene: patch (r, c) is the k-th test patch of its class, k
    shifted by the date so that each date sees other patches of the same class; the block is
    Residential on dates 4-6 (the one-date pair 1 -> 4, the periods 1-3 -> 4-6)."""
    test = shared / "eurosat" / "EuroSAT_MS_subset" / "test"
    files = {c: sorted((test / c).glob("*.tif")) for c in set(LAYOUT.ravel()) | {"Residential"}}
    data = np.zeros((13, N * 64, N * 64), np.uint16)
    for r in range(N):
        for c in range(N):
            cls = "Residential" if date >= 4 and CHANGED[0].start <= r < CHANGED[0].stop and \
                CHANGED[1].start <= c < CHANGED[1].stop else LAYOUT[r, c]
            f = files[cls][(r * N + c + (date - 1) * 3) % len(files[cls])]
            with rasterio.open(f) as src:
                data[:, r * 64:(r + 1) * 64, c * 64:(c + 1) * 64] = src.read()
    path = out / f"known_{date}.tif"
    profile = dict(driver="GTiff", width=N * 64, height=N * 64, count=13, dtype="uint16", crs="EPSG:32632",
                   transform=Affine(10, 0, X0, 0, -10, Y0), tiled=True, blockxsize=128, blockysize=128)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = EUROSAT_ORDER
        dst.update_tags(DATE=f"2021-0{5 + date % 3}-01" if date <= 3 else f"2022-0{5 + date % 3}-01")
    return path


def classified(p: Path, out: Path, model: str | None, stride: int) -> Path:
    folder = out / f"{p.stem}_s{stride}"
    if not (folder / "run.json").exists():
        atlas_change.classify(p, out=folder, stride=stride, scheduler="threads", **({"model": model} if model else {}))
    return folder


def run(before: list[Path], after: list[Path], out: Path, model: str | None, stride: int, truth=None,
        dates=(["2021-06-01"], ["2022-06-01"])) -> dict:
    maps = [[classified(p, out, model, stride) for p in side] for side in (before, after)]
    with rasterio.open(maps[0][0] / "lulc.tif") as src:
        b = src.bounds
    name = out / f"cmp_{before[0].stem}_{len(before)}_s{stride}"
    s = compare(maps[0], maps[1], aoi_bbox=f"{b.left},{b.bottom},{b.right},{b.top}", aoi_crs=str(src.crs),
                out=name, before_date=dates[0], after_date=dates[1])
    r = {k: s[k] for k in ("changed_ha", "uncertain_ha", "conversion_ha", "valid_ha")}
    if truth is not None:
        with rasterio.open(name / "change.tif") as src:
            code = src.read(1)
        k = 64 // stride
        inside = np.zeros(code.shape, bool)
        inside[CHANGED[0].start * k:CHANGED[0].stop * k, CHANGED[1].start * k:CHANGED[1].stop * k] = True
        cell = s["cell_area_ha"]
        r["true_found_ha"] = round(float(((code > 0) & inside).sum() * cell), 2)
        r["false_ha"] = round(float(((code > 0) & ~inside).sum() * cell), 2)
    return r


def main() -> None:
    from real_scenes import to_utm

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.environ.get("ATLAS_SHARED", "../shared"))
    ap.add_argument("--model", default="spectrumnet-rgb", help="model name (default spectrumnet-rgb: one model for L1C and L2A)")
    a = ap.parse_args()
    shared = Path(a.shared)
    tmp = Path(tempfile.mkdtemp(prefix="atlas-stride-"))
    warnings.simplefilter("ignore")
    print(f"## Stride stability ({time.strftime('%Y-%m-%d %H:%M')}, model {a.model or 'default'})\n")
    d = {k: mosaic(shared, tmp, k) for k in range(1, 7)}
    print("Known change (EuroSAT MS test patches, 1,474.56 ha; true change 163.84 ha Forest -> Residential):\n")
    print("| stride | dates a side | changed ha | true change found ha | false change ha | uncertain ha |")
    print("|---|---|---|---|---|---|")
    day = {k: f"2021-0{5 + k % 3}-01" if k <= 3 else f"2022-0{5 + k % 3}-01" for k in d}
    for stride in (64, 32, 16):
        for before, after in (([1], [4]), ([1, 2, 3], [4, 5, 6])):
            dates = ([day[k] for k in before], [day[k] for k in after])
            r = run([d[k] for k in before], [d[k] for k in after], tmp, a.model, stride, truth=True, dates=dates)
            print(f"| {stride} | {len(before)} | {r['changed_ha']:.2f} | {r['true_found_ha']:.2f} | {r['false_ha']:.2f} | "
                  f"{r['uncertain_ha']:.2f} |")
    pair = sorted((shared / "scenes" / "ssl4eo-s12-l1c-l2a-pair").glob("*/*/*"))
    l1c, l2a = (to_utm(p, tmp / p.parts[-3]) for p in sorted(pair, key=lambda p: p.parts[-3] != "s2c"))
    print("\nNo change (SSL4EO-S12 L1C vs L2A of one acquisition; every changed hectare is false):\n")
    print("| stride | changed ha | uncertain ha | valid ha |")
    print("|---|---|---|---|")
    for stride in (64, 32, 16):
        r = run([l1c], [l2a], tmp, a.model, stride)
        print(f"| {stride} | {r['changed_ha']:.2f} | {r['uncertain_ha']:.2f} | {r['valid_ha']:.2f} |")


if __name__ == "__main__":
    main()
