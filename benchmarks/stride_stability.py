"""Changed and uncertain hectares of the same scenes and AOI at stride 64, 32 and 16, with the grid
at several positions on the land, and with one date against periods of three dates a side, through
`classify` and `compare` themselves, on data with known answers:

1. **Known change**: two dates laid out from the real EuroSAT MS test patches (13-band L1C, 64 x 64 px
   each) on a 7 x 7 grid: four areas of one class each (Forest, AnnualCrop, SeaLake, Pasture); on the
   second date every place shows another patch of the same class (the same land seen again: any
   change reported there is false), except a 2 x 2 patch block of Forest turned Residential. The scene
   is the 384 x 384 px window starting `offset` px into the layout (the land does not care where a
   grid starts: at offset 0 every stride-64 patch is one EuroSAT patch, the best case for 64), so the
   true change is (128 - offset)^2 px.
   Periods: dates 1-3 against dates 4-6 (each date other patches of each class; the block changed on
   4-6), against date 1 against date 4 alone.
2. **No change at all**: the SSL4EO-S12 L1C and L2A products of one acquisition (warped to UTM as in
   real_scenes.py), cut `offset` px from the top left: every changed hectare is false.
3. **One real L2A date**: the Major TOM 199U_1099R cell (10.68 km), cut likewise: its uncertain
   hectares (the cells below --min-confidence).

Changed hectares are checked against the grid tolerance that `compare` reports (`grid_tolerance` in
summary.json, docs/change.md *Stride*): a cell places a boundary only to within half its width, so a figure
counted in cells can move by the band half a cell wide along the change's outline. Two strides agree
when they differ by no more than the sum of their two tolerances; the known change is found when
within its tolerance of the truth. Uncertain hectares are given with their ratio to stride 16's.

    python benchmarks/stride_stability.py --shared ../shared [--model spectrumnet-rgb] [--offsets 0 18 30 48]

Prints Markdown tables per case.
"""
from __future__ import annotations

import argparse
import itertools
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
from rasterio.windows import Window  # noqa: E402

import atlas_change  # noqa: E402
from atlas_change.bands import EUROSAT_ORDER  # noqa: E402
from atlas_change.change.compare import compare  # noqa: E402

N, SIDE = 7, 384  # patches a side of the layout, pixels a side of the scene
LAYOUT = np.array([["Forest"] * 3 + ["AnnualCrop"] * 4] * 3 + [["SeaLake"] * 3 + ["Pasture"] * 4] * 4)
BLOCK = 128  # the changed block: layout pixels [0, 128) x [0, 128)
X0, Y0 = 500000.0, 5000000.0
STRIDES = (64, 32, 16)
DAY = {k: f"2021-0{5 + k % 3}-01" if k <= 3 else f"2022-0{5 + k % 3}-01" for k in range(1, 7)}


def mosaic(shared: Path, out: Path, date: int, offset: int) -> Path:
    """One date of the known-change scene: layout patch (r, c) is the k-th test patch of its class, k
    shifted by the date so that each date sees other patches of the same class; the block is
    Residential on dates 4-6; the scene is the window `offset` px into the layout."""
    test = shared / "eurosat" / "EuroSAT_MS_subset" / "test"
    files = {c: sorted((test / c).glob("*.tif")) for c in set(LAYOUT.ravel()) | {"Residential"}}
    data = np.zeros((13, N * 64, N * 64), np.uint16)
    for r, c in itertools.product(range(N), range(N)):
        cls = "Residential" if date >= 4 and r * 64 < BLOCK and c * 64 < BLOCK else LAYOUT[r, c]
        f = files[cls][(r * N + c + (date - 1) * 3) % len(files[cls])]
        with rasterio.open(f) as src:
            data[:, r * 64:(r + 1) * 64, c * 64:(c + 1) * 64] = src.read()
    path = out / f"known_{date}_o{offset}.tif"
    profile = dict(driver="GTiff", width=SIDE, height=SIDE, count=13, dtype="uint16", crs="EPSG:32632",
                   transform=Affine(10, 0, X0, 0, -10, Y0), tiled=True, blockxsize=128, blockysize=128)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data[:, offset:offset + SIDE, offset:offset + SIDE])
        dst.descriptions = EUROSAT_ORDER
        dst.update_tags(DATE=DAY[date])
    return path


def cut(folder: Path, out: Path, offset: int) -> Path:
    """A band folder without its top `offset` rows and left `offset` columns of 10 m pixels (the
    bands at 20 / 60 m lose the same metres: offsets are multiples of 6 px)."""
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(folder.glob("B*.tif")):
        with rasterio.open(f) as src:
            o = offset * 10 // round(src.res[0])
            w = Window(o, o, src.width - o, src.height - o)
            profile = {**src.profile, "width": int(w.width), "height": int(w.height),
                       "transform": src.window_transform(w)}
            with rasterio.open(out / f.name, "w", **profile) as dst:
                dst.write(src.read(window=w))
    return out


def classified(p: Path, out: Path, model: str, stride: int, runtime: str | None = None) -> Path:
    """`classify` of `p` at `stride` with `model` into a folder of `out` (kept: made once); `runtime`:
    classify's default where None."""
    folder = out / (f"{p.parent.name if p.is_dir() else ''}{p.stem}_{Path(model).name}_s{stride}"
                    f"{'_' + runtime if runtime else ''}")
    if not (folder / "run.json").exists():
        atlas_change.classify(p, out=folder, stride=stride, scheduler="threads", model=model,
                              **({"runtime": runtime} if runtime else {}))
    return folder


def run(before: list[Path], after: list[Path], out: Path, model: str, stride: int, offset: int | None = None,
        dates=(["2021-06-01"], ["2022-06-01"])) -> dict:
    maps = [[classified(p, out, model, stride) for p in side] for side in (before, after)]
    with rasterio.open(maps[0][0] / "lulc.tif") as src:
        b = src.bounds
    name = out / f"cmp_{before[0].stem}_{len(before)}_s{stride}"
    s = compare(maps[0], maps[1], aoi_bbox=f"{b.left},{b.bottom},{b.right},{b.top}", aoi_crs=str(src.crs),
                out=name, before_date=dates[0], after_date=dates[1])
    r = {k: s[k] for k in ("changed_ha", "uncertain_ha", "valid_ha")}
    r["tol_changed"] = s["grid_tolerance"]["changed_ha"]
    r["tol_uncertain"] = s["grid_tolerance"]["uncertain_ha"]
    if offset is not None:  # known change: cells whose centre lies in the block are inside it
        with rasterio.open(name / "change.tif") as src:
            code = src.read(1)
        y, x = (np.indices(code.shape) + 0.5) * stride + offset
        inside = (y < BLOCK) & (x < BLOCK)
        r["true_ha"] = (BLOCK - offset) ** 2 / 100
        r["found_ha"] = round(float(((code > 0) & inside).sum() * s["cell_area_ha"]), 2)
        r["false_ha"] = round(float(((code > 0) & ~inside).sum() * s["cell_area_ha"]), 2)
    return r


def one_date(folder: Path, min_confidence: float = 0.6) -> dict:
    """Uncertain and valid hectares of one classify output, over the cells whose centre is in the
    scene (compare's area definition)."""
    from atlas_change.outputs import read_json
    from atlas_change.change.compare import footprint, grid_tolerance
    from atlas_change.change.composite import centre_inside

    with rasterio.open(folder / "lulc.tif") as src:
        lulc, t = src.read(1), src.transform
    with rasterio.open(folder / "confidence.tif") as src:
        conf = src.read(1)
    valid = (lulc > 0) & centre_inside(footprint(read_json(folder / "run.json"), t), t, lulc.shape)
    cell = abs(t.a * t.e) / 1e4
    unsure = valid & (conf < min_confidence)
    return {"uncertain_ha": round(float(unsure.sum() * cell), 2), "valid_ha": round(float(valid.sum() * cell), 2),
            "tol_uncertain": grid_tolerance(unsure, valid, cell, unsure)["uncertain_ha"]}


def agree(rows: dict[int, dict], what: str = "changed") -> str:
    """Whether every stride pair's changed (uncertain) hectares differ by no more than their two tolerances."""
    bad = [f"{s}/{t}" for s, t in itertools.combinations(STRIDES, 2)
           if abs(rows[s][f"{what}_ha"] - rows[t][f"{what}_ha"]) > rows[s][f"tol_{what}"] + rows[t][f"tol_{what}"] + 1e-6]
    return "yes" if not bad else "no: " + ", ".join(bad)


def ratios(rows: dict[int, dict]) -> str:
    """Uncertain hectares at 64 and 32 over those at 16."""
    u = rows[16]["uncertain_ha"]
    return " / ".join(f"{rows[s]['uncertain_ha'] / u:.2f}" if u else "-" for s in (64, 32))


def main() -> None:
    from real_scenes import to_utm

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.environ.get("ATLAS_SHARED", "../shared"))
    ap.add_argument("--model", default="spectrumnet-rgb", help="model name (default spectrumnet-rgb: one model for L1C and L2A)")
    ap.add_argument("--offsets", type=int, nargs="+", default=[0, 18, 30, 48],
                    help="where the grid starts on the land, px (multiples of 6, below 64)")
    a = ap.parse_args()
    if any(o % 6 or not 0 <= o < 64 for o in a.offsets):
        ap.error("--offsets: multiples of 6 px below 64 (the 60 m bands must lose whole pixels)")
    shared = Path(a.shared)
    root = Path(tempfile.mkdtemp(prefix="atlas-stride-"))
    warnings.simplefilter("ignore")
    print(f"## Stride stability ({time.strftime('%Y-%m-%d %H:%M')}, model {a.model})\n")
    print("Known change (EuroSAT MS test patches, 1,474.56 ha; true change (128 - offset)^2 px Forest -> "
          "Residential). Changed and uncertain ha with their grid tolerance (+-):\n")
    print("| offset px | stride | dates a side | true ha | changed ha | true change found ha | false change ha | "
          "uncertain ha | found within tolerance of truth |")
    print("|---|---|---|---|---|---|---|---|---|")
    checks = []
    for o in a.offsets:
        tmp = root / f"o{o}"
        tmp.mkdir()
        d = {k: mosaic(shared, tmp, k, o) for k in range(1, 7)}
        for before, after in (([1], [4]), ([1, 2, 3], [4, 5, 6])):
            rows = {}
            for stride in STRIDES:
                dates = ([DAY[k] for k in before], [DAY[k] for k in after])
                r = rows[stride] = run([d[k] for k in before], [d[k] for k in after], tmp, a.model, stride, o, dates)
                ok = abs(r["changed_ha"] - r["true_ha"]) <= r["tol_changed"] + 1e-6
                print(f"| {o} | {stride} | {len(before)} | {r['true_ha']:.2f} | {r['changed_ha']:.2f} +- {r['tol_changed']:.2f} | "
                      f"{r['found_ha']:.2f} | {r['false_ha']:.2f} | {r['uncertain_ha']:.2f} +- {r['tol_uncertain']:.2f} | "
                      f"{'yes' if ok else 'no'} |")
            checks.append(f"| known change | {o} | {len(before)} | {agree(rows)} | {agree(rows, 'uncertain')} | "
                          f"{ratios(rows)} |")
    pair = sorted((shared / "scenes" / "ssl4eo-s12-l1c-l2a-pair").glob("*/*/*"))
    l1c, l2a = (to_utm(p, root / p.parts[-3]) for p in sorted(pair, key=lambda p: p.parts[-3] != "s2c"))
    print("\nNo change (SSL4EO-S12 L1C vs L2A of one acquisition; every changed hectare is false):\n")
    print("| offset px | stride | changed ha | uncertain ha | valid ha |")
    print("|---|---|---|---|---|")
    for o in a.offsets:
        tmp = root / f"ssl4eo_o{o}"
        rows, before, after = {}, cut(l1c, tmp / "l1c", o), cut(l2a, tmp / "l2a", o)
        for stride in STRIDES:
            r = rows[stride] = run([before], [after], tmp, a.model, stride)
            print(f"| {o} | {stride} | {r['changed_ha']:.2f} +- {r['tol_changed']:.2f} | "
                  f"{r['uncertain_ha']:.2f} +- {r['tol_uncertain']:.2f} | {r['valid_ha']:.2f} |")
        checks.append(f"| SSL4EO-S12 L1C vs L2A | {o} | 1 | {agree(rows)} | {agree(rows, 'uncertain')} | {ratios(rows)} |")
    cell = next((shared / "scenes" / "major-tom-l2a" / "199U").glob("*/*"))
    print("\nOne real L2A date (Major TOM 199U_1099R, 2020-02-23):\n")
    print("| offset px | stride | uncertain ha | valid ha |")
    print("|---|---|---|---|")
    for o in a.offsets:
        tmp = root / f"tom_o{o}"
        rows, scene = {}, cut(cell, tmp / "199U", o)
        for stride in STRIDES:
            r = rows[stride] = one_date(classified(scene, tmp, a.model, stride))
            print(f"| {o} | {stride} | {r['uncertain_ha']:.2f} +- {r['tol_uncertain']:.2f} | {r['valid_ha']:.2f} |")
        checks.append(f"| Major TOM 199U (one date) | {o} | 1 | | {agree(rows, 'uncertain')} | {ratios(rows)} |")
    print("\nDo the changed and the uncertain hectares of strides 64, 32 and 16 agree within the sum of their "
          "tolerances? Uncertain hectares at 64 and 32 over 16's:\n")
    print("| case | offset px | dates a side | changed ha agree | uncertain ha agree | uncertain ha, 64 / 32 over 16 |")
    print("|---|---|---|---|---|---|")
    print("\n".join(checks))


if __name__ == "__main__":
    main()
