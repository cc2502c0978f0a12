"""Labels on real Sentinel-2 data, through `classify` itself (not the training loader), for each model
and setting given: the 54 EuroSAT MS test patches one by one; the eo-learn L1C forest (clear and
cloudy date; its cells against the land use eo-learn ships with it, mapped below); the six BigEarthNet
L2A patches against their CORINE labels (mapped to EuroSAT classes below); the two Major TOM L2A grid
cells; the L1C and the L2A product of one SSL4EO-S12 acquisition (agreement cell by cell). For each
scene with B03 and B08: water-labelled cells whose own pixels hold no water (< 1 % by the water test of
surface.py), and snow. Prints a Markdown report for models/README.md. Settings: 'default' (the RGB
model plus the water and snow tests) and 'rgb-only' (--no-surface-tests: the labels before those tests
existed) and 'float' (the default with --runtime openvino-float: the network in float where the card
ships an int8 one). With more than one model or setting, a last table pairs each with the first, cell
by cell on the labelled checks (which cells one gets right and the other wrong; exact McNemar p).

    python benchmarks/real_scenes.py --shared ../shared --model spectrumnet-rgb --model resnet50-rgb

These are few scenes (a few hundred cells): they show the kind of error, not rates to quote.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from rasterio.windows import Window  # noqa: E402

import atlas_change  # noqa: E402
from atlas_change.mapping import surface  # noqa: E402
from atlas_change.classes import CLASSES  # noqa: E402
from atlas_change.read import open_scene  # noqa: E402

#: CORINE level-3 classes of BigEarthNet -> the EuroSAT classes a 640 m patch of them may rightly get
CORINE_TO_EUROSAT = {
    "Continuous urban fabric": {"Residential"}, "Discontinuous urban fabric": {"Residential"},
    "Industrial or commercial units": {"Industrial"}, "Road and rail networks and associated land": {"Highway"},
    "Non-irrigated arable land": {"AnnualCrop"}, "Permanently irrigated land": {"AnnualCrop"},
    "Rice fields": {"AnnualCrop"}, "Vineyards": {"PermanentCrop"},
    "Fruit trees and berry plantations": {"PermanentCrop"}, "Olive groves": {"PermanentCrop"}, "Pastures": {"Pasture"},
    "Annual crops associated with permanent crops": {"AnnualCrop", "PermanentCrop"},
    "Complex cultivation patterns": {"AnnualCrop", "PermanentCrop", "Pasture", "HerbaceousVegetation"},
    "Land principally occupied by agriculture, with significant areas of natural vegetation":
        {"AnnualCrop", "PermanentCrop", "Pasture", "HerbaceousVegetation"},
    "Broad-leaved forest": {"Forest"}, "Coniferous forest": {"Forest"}, "Mixed forest": {"Forest"},
    "Natural grassland": {"HerbaceousVegetation", "Pasture"}, "Moors and heathland": {"HerbaceousVegetation"},
    "Sclerophyllous vegetation": {"HerbaceousVegetation"},
    "Transitional woodland/shrub": {"HerbaceousVegetation", "Forest"}, "Peatbogs": {"HerbaceousVegetation"},
    "Inland marshes": {"HerbaceousVegetation"}, "Water courses": {"River"}, "Water bodies": {"SeaLake", "River"},
    "Sea and ocean": {"SeaLake"}, "Coastal lagoons": {"SeaLake"}, "Estuaries": {"SeaLake", "River"},
}
#: eo-learn's land-use classes (its land_use.tif, mapped at 10 m) -> the EuroSAT classes a cell of them may
#: rightly get (as CORINE's closest classes above: shrubland as transitional woodland / shrub)
LANDUSE_TO_EUROSAT = {1: {"AnnualCrop", "PermanentCrop"}, 2: {"Forest"}, 3: {"Pasture", "HerbaceousVegetation"},
                      4: {"HerbaceousVegetation", "Forest"}, 5: {"River", "SeaLake"}, 6: {"HerbaceousVegetation"},
                      8: {"Residential", "Industrial", "Highway"}}
SETTINGS = {"default": {}, "rgb-only": {"surface_tests": False}, "float": {"runtime": "openvino-float"}}


def ms_patches(shared: Path, model: str, kw: dict) -> tuple[np.ndarray, dict]:
    """classify() on each EuroSAT MS test GeoTIFF (one 64 x 64 patch = one cell): (right or not per
    file, errors)."""
    files = sorted((shared / "eurosat" / "EuroSAT_MS_subset" / "test").glob("*/*.tif"))
    wrong, right = Counter(), []
    for p in files:
        lulc = int(atlas_change.classify(p, model=model, scheduler="sync", **kw)["lulc"].values[0, 0])
        right.append(bool(lulc) and CLASSES[lulc - 1] == p.parent.name)
        if not right[-1]:
            wrong[f"{p.parent.name}->{CLASSES[lulc - 1] if lulc else 'unlabelled'}"] += 1
    return np.array(right, dtype=np.int8), dict(wrong.most_common())


def water_share_per_cell(path: Path, stride: int, shape: tuple[int, int]) -> np.ndarray | None:
    """Each map cell's share of water pixels (surface.py's test), or None without B03 / B08."""
    scene = open_scene(path, ("B04", "B03", "B02"))
    plan = surface.plan(scene)
    if plan.water == "off":
        return None
    dn, valid = plan.scene.read(Window(0, 0, scene.width, scene.height))
    refl = {b: dn[i] / 10000 for i, b in enumerate(plan.scene.bands)}
    scl = scene.read_scl(Window(0, 0, scene.width, scene.height)) if plan.snow == "scl" else None
    water = surface.pixel_flags(plan, refl, scl)[0] & valid
    rows, cols = shape  # the last row / column of cells may reach past the scene: their share is of the inside
    pad = ((0, rows * stride - water.shape[0]), (0, cols * stride - water.shape[1]))
    w = np.pad(water, pad).reshape(rows, stride, cols, stride).sum(axis=(1, 3))
    n = np.pad(np.ones(water.shape), pad).reshape(rows, stride, cols, stride).sum(axis=(1, 3))
    return w / n


def labels(path: Path, model: str, stride: int, kw: dict) -> dict:
    """Cells per class, masked cells, mean confidence, water-labelled cells without water."""
    ds = atlas_change.classify(path, model=model, stride=stride, scheduler="sync", **kw)
    ids = ds["lulc"].values
    counts = Counter(CLASSES[i - 1] for i in ids[ids > 0].ravel())
    for var, name in (("cloud", "cloud (masked)"), ("snow", "snow (masked)")):
        if ds[var].values.any():
            counts[name] = int(ds[var].values.sum())
    share = water_share_per_cell(path, stride, ids.shape)
    watery = np.isin(ids, [CLASSES.index("River") + 1, CLASSES.index("SeaLake") + 1])
    dry_water = None if share is None else int((watery & (share < surface.MIN_WATER)).sum())
    conf = float(np.nanmean(ds["confidence"].values)) if (ids > 0).any() else float("nan")
    return {"counts": counts, "conf": conf, "ids": ids, "dry_water": dry_water, "water_cells": int(watery.sum())}


def landuse_consistent(ids: np.ndarray, landuse: Path, stride: int) -> np.ndarray:
    """Per cell (flattened): 1 where its land use allows its label, 0 where not, -1 where not scored
    (unlabelled, or no mapped land use). Each cell's land use is the most common of land_use.tif's pixels
    in it (the map's grid starts at the scene's corner, as land_use.tif does; no data (0) is left out)."""
    with rasterio.open(landuse) as src:
        lu = src.read(1)
    out = np.full(ids.size, -1, dtype=np.int8)
    for k, ((r, c), i) in enumerate(np.ndenumerate(ids)):
        block = lu[r * stride:(r + 1) * stride, c * stride:(c + 1) * stride]
        values, counts = np.unique(block[block > 0], return_counts=True)
        if i == 0 or not values.size or int(values[counts.argmax()]) not in LANDUSE_TO_EUROSAT:
            continue
        out[k] = CLASSES[i - 1] in LANDUSE_TO_EUROSAT[int(values[counts.argmax()])]
    return out


def corine_consistent(ids: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
    """Per cell (flattened): 1 where one of the patch's CORINE labels allows its label, 0 where none
    does, -1 where unlabelled (masked)."""
    allowed = set().union(*(CORINE_TO_EUROSAT.get(c, set()) for c in labels))
    return np.array([-1 if i == 0 else CLASSES[i - 1] in allowed for i in ids.ravel()], dtype=np.int8)


def mcnemar(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int, float]:
    """Paired comparison of two per-cell right (1) / wrong (0) / not scored (-1) vectors: (cells scored
    by both, b right where a is wrong, b wrong where a is right, exact two-sided McNemar p: the binomial
    test of the discordant cells at 1/2)."""
    both = (a >= 0) & (b >= 0)
    up, down = int((both & (a == 0) & (b == 1)).sum()), int((both & (a == 1) & (b == 0)).sum())
    n, k = up + down, min(up, down)
    p = min(1.0, 2 * sum(math.comb(n, j) for j in range(k + 1)) / 2 ** n) if n else 1.0
    return int(both.sum()), up, down, p


def cell_text(r: dict) -> str:
    parts = ", ".join(f"{k} {v}" for k, v in r["counts"].most_common()) or "none"
    dry = "" if r["dry_water"] is None else f"; water-labelled without water: {r['dry_water']}/{r['water_cells']}"
    return f"{parts}; {r['conf']:.2f}{dry}"


def to_utm(folder: Path, out: Path) -> Path:
    """A band folder in geographic coordinates (SSL4EO-S12: EPSG:4326) warped onto its UTM zone at the
    bands' own 10 / 20 / 60 m (GDAL, nearest neighbour for the DN), as a user would with gdalwarp."""
    from rasterio.warp import calculate_default_transform, reproject, Resampling

    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(folder.glob("B*.tif")):
        with rasterio.open(f) as src:
            lon = (src.bounds.left + src.bounds.right) / 2
            lat = (src.bounds.bottom + src.bounds.top) / 2
            epsg = (32600 if lat >= 0 else 32700) + int((lon + 180) // 6) + 1
            res = {"B1": 60, "B9": 60, "B10": 60, "B2": 10, "B3": 10, "B4": 10, "B8": 10}.get(f.stem, 20)
            t, w, h = calculate_default_transform(src.crs, f"EPSG:{epsg}", src.width, src.height, *src.bounds,
                                                  resolution=res)
            # snap onto a grid common to both products: origin a multiple of 60 m
            t = rasterio.Affine(res, 0, t.c // 60 * 60, 0, -res, -(-t.f // 60) * 60)
            profile = dict(driver="GTiff", width=w, height=h, count=1, dtype=src.dtypes[0], crs=f"EPSG:{epsg}",
                           transform=t, nodata=0)
            with rasterio.open(out / f.name, "w", **profile) as dst:
                reproject(rasterio.band(src, 1), rasterio.band(dst, 1), resampling=Resampling.nearest, dst_nodata=0)
    return out


def scenes(shared: Path, tmp: Path) -> list[tuple[str, tuple[str, ...], Path, int]]:
    """(name, reference, path, stride) of every real scene this report classifies: eo-learn L1C, the
    BigEarthNet L2A folders (reference: their CORINE labels), Major TOM L2A, and the SSL4EO-S12 pair
    warped to UTM under `tmp` (L1C first, then L2A)."""
    root = shared / "scenes"
    out = [(f"eo-learn L1C {n}.tif", ("mostly forest",), root / "eolearn-l1c13" / f"{n}.tif", 16)
           for n in ("clear", "cloudy")]
    for d in sorted((root / "bigearthnet-s2-example").iterdir()):
        ref = tuple(json.loads(next(d.glob("*_labels_metadata.json")).read_text())["labels"])
        out.append((f"BigEarthNet L2A {d.name.rsplit('_', 2)[-2]}_{d.name.rsplit('_', 1)[-1]} "
                    f"{d.name.split('_')[2][:6]}", ref, d, 32))
    out += [(f"Major TOM L2A {d.parts[-2]} {d.name.split('_')[2][:8]}", ("(no labels)",), d, 64)
            for d in sorted(root.glob("major-tom-l2a/*/*/*"))]
    pair = sorted((root / "ssl4eo-s12-l1c-l2a-pair").glob("*/*/*"))
    l1c, l2a = (to_utm(p, tmp / p.parts[-3]) for p in sorted(pair, key=lambda p: p.parts[-3] != "s2c"))
    return out + [("SSL4EO-S12 43RCP 2020-06-04 L1C", ("(the same acquisition)",), l1c, 32),
                  ("SSL4EO-S12 43RCP 2020-06-04 L2A", (), l2a, 32)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.environ.get("ATLAS_SHARED", "../shared"), help="the shared data folder")
    ap.add_argument("--model", action="append", required=True, help="model name (repeatable)")
    ap.add_argument("--setting", action="append", choices=SETTINGS, help="settings (default: all)")
    a = ap.parse_args()
    shared = Path(a.shared)
    real = scenes(shared, Path(tempfile.mkdtemp(prefix="atlas-real-")))
    print(f"## Real data through `classify` ({time.strftime('%Y-%m-%d %H:%M')})\n")
    import warnings

    warnings.simplefilter("ignore")
    scored = {}  # (model, setting) -> check -> per-cell right (1) / wrong (0) / not scored (-1)
    for model in a.model:
        for setting in a.setting or list(SETTINGS):
            kw = SETTINGS[setting]
            ms, wrong = ms_patches(shared, model, kw)
            hits = scored[model, setting] = {"EuroSAT MS test patches": ms, "BigEarthNet cells (CORINE)": [],
                                             "eo-learn cells (land_use.tif)": []}
            print(f"### {model}, {setting}\n")
            print(f"- EuroSAT MS test patches (13-band L1C) one by one: **{int(ms.sum())}/{ms.size}**; errors: "
                  f"{json.dumps(wrong)}")
            rows, l1c = [], None
            for name, ref, path, stride in real:
                r = labels(path, model, stride, kw)
                check = ""
                if name.startswith("BigEarthNet"):
                    hit = corine_consistent(r["ids"], ref)
                    hits["BigEarthNet cells (CORINE)"].append(hit)
                    check = f"; CORINE-consistent {int((hit == 1).sum())}/{int((hit >= 0).sum())}"
                elif name.startswith("eo-learn") and (lu := path.with_name("land_use.tif")).exists():
                    hit = landuse_consistent(r["ids"], lu, stride)
                    hits["eo-learn cells (land_use.tif)"].append(hit)
                    ok, n = int((hit == 1).sum()), int((hit >= 0).sum())
                    check = f"; consistent with each cell's land use (land_use.tif) {ok}/{n}" if n else ""
                elif name.startswith("SSL4EO") and name.endswith("L1C"):
                    l1c = r
                elif name.startswith("SSL4EO") and l1c is not None:
                    both = (l1c["ids"] > 0) & (r["ids"] > 0)
                    same = int((l1c["ids"][both] == r["ids"][both]).sum())
                    check = f"; **same label as the L1C product: {same}/{int(both.sum())} cells**"
                rows.append(f"| {name} | {'; '.join(ref)} | {stride} | {cell_text(r)}{check} |")
            for k in ("BigEarthNet cells (CORINE)", "eo-learn cells (land_use.tif)"):
                hits[k] = np.concatenate(hits[k]) if hits[k] else np.zeros(0, np.int8)
            ben = hits["BigEarthNet cells (CORINE)"]
            print(f"- BigEarthNet cells consistent with their CORINE labels (mapping in this script): "
                  f"**{int((ben == 1).sum())}/{int((ben >= 0).sum())}**")
            print("\n| scene | reference | stride | labels (cells); mean confidence; checks |\n|---|---|---|---|")
            print("\n".join(rows) + "\n")
    if len(scored) > 1:
        print(paired(scored))


def paired(scored: dict) -> str:
    """Markdown: each model and setting against the first, cell by cell on the labelled checks."""
    (first, *others) = scored
    out = [f"### Paired, cell by cell, against {first[0]}, {first[1]}\n",
           "Exact McNemar p on the discordant cells; neighbouring cells are not independent, so the "
           "real p is likely larger than shown.\n",
           "| model, setting | check | cells scored by both | right where the first is wrong | wrong where the "
           "first is right | p |", "|---|---|---|---|---|---|"]
    for other in others:
        pooled = [np.zeros(0, np.int8), np.zeros(0, np.int8)]
        for check, a in scored[first].items():
            b = scored[other][check]
            if a.size != b.size:
                continue
            pooled = [np.concatenate([pooled[0], a]), np.concatenate([pooled[1], b])]
            n, up, down, p = mcnemar(a, b)
            out.append(f"| {other[0]}, {other[1]} | {check} | {n} | {up} | {down} | {p:.3g} |")
        n, up, down, p = mcnemar(*pooled)
        out.append(f"| {other[0]}, {other[1]} | **all** | {n} | {up} | {down} | {p:.3g} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
