"""The change decision against the prior's strength on scenes (docs/change.md): false change, found
change and the undecided share, at stride 64 and 16, for each `--stay`, next to the per-date rule it
replaced (both dates' top-1 probability >= 0.6). Each scene is classified once per stride; `compare`
then decides again for every prior, the model's own (its card's, fitted by `calibrate` on EuroSAT val
pairs) among them. Nothing here is fitted.

1. **EuroSAT known change** (`stride_stability.py`'s layout of real EuroSAT MS test patches, one date a
   side, each date other patches of the same classes, a 2 x 2 patch block Forest -> Residential, the
   grid 30 px off the patches): found = changed cells whose centre is in the block, false = the others.
2. **No change**: the SSL4EO-S12 L1C and L2A products of one acquisition (real_scenes.to_utm).
3. **Real L2A with pasted change**: the Major TOM 199U_1099R cell (10.68 km) after, and before it the
   same cell with 8 blocks of 640 m of its own land pasted over others (for each: a block the shipped
   model's float network calls Forest, SeaLake, River or Residential put where it calls AnnualCrop,
   PermanentCrop, Pasture or HerbaceousVegetation, all bands at their own resolution). A pasted block is found where
   any of its cells is decided changed (at stride 16 a cell averages the 16 patches over it, most of
   which see the block only in part); false change = changed cells more than 640 m from any block.
   The land outside the blocks is the same pixels on both dates, so this measures finding, not noise;
   case 2 measures noise.

    python benchmarks/change_prior_scenes.py --shared ../shared [--model spectrumnet-rgb]
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

from atlas_change.classes import CLASSES  # noqa: E402
from atlas_change.change.compare import compare  # noqa: E402
from stride_stability import BLOCK, classified, cut, mosaic  # noqa: E402

STAYS = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.97)
STRIDES = (64, 16)
OFFSET = 30
SOURCES = ("Forest", "SeaLake", "River", "Residential")
TARGETS = ("AnnualCrop", "PermanentCrop", "Pasture", "HerbaceousVegetation")


def paste(scene: Path, labels: np.ndarray, conf: np.ndarray, out: Path, n: int = 8,
          rng=np.random.default_rng(0)) -> tuple[Path, list[tuple[int, int]]]:
    """`scene` (a band folder) with `n` stride-64 cells of SOURCES classes copied over cells of TARGETS
    classes (the surest of each, sources apart from targets by at least two cells) -> (folder, the
    pasted cells (row, col))."""
    names = np.asarray(["", *CLASSES])[labels]
    with rasterio.open(scene / "B02.tif") as ds:  # whole 640 m cells only (the last ones reach past the scene)
        whole = np.zeros(labels.shape, bool)
        whole[:ds.height // 64, :ds.width // 64] = True
    src = [tuple(x) for x in np.argwhere(np.isin(names, SOURCES) & (conf > 0.5) & whole)]
    dst = [tuple(x) for x in np.argwhere(np.isin(names, TARGETS) & (conf > 0.5) & whole)]
    rng.shuffle(src), rng.shuffle(dst)
    pairs, used = [], set()
    for d in dst:
        if len(pairs) == n:
            break
        if any(abs(d[0] - u[0]) <= 2 and abs(d[1] - u[1]) <= 2 for u in used):
            continue
        s = next((s for s in src if s not in used and max(abs(s[0] - d[0]), abs(s[1] - d[1])) > 2), None)
        if s is not None:
            pairs.append((s, d)), used.update([s, d])
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(scene.glob("B*.tif")):
        with rasterio.open(f) as ds:
            data, profile, k = ds.read(), ds.profile, 640 // round(ds.res[0])
        for (sr, sc), (dr, dc) in pairs:
            data[:, dr * k:(dr + 1) * k, dc * k:(dc + 1) * k] = data[:, sr * k:(sr + 1) * k, sc * k:(sc + 1) * k]
        with rasterio.open(out / f.name, "w", **profile) as dst_:
            dst_.write(data)
    return out, [d for _, d in pairs]


def decisions(before: Path, after: Path, out: Path, stride: int, stays=STAYS, dates=("2021-06-01", "2022-06-01")):
    """{stay or 'per-date': (changed, uncertain, valid) cell masks} of the two classify folders."""
    with rasterio.open(before / "lulc.tif") as src:
        b = src.bounds
        crs = str(src.crs)
    res = {}
    for stay in stays:
        folder = out / f"cmp_{stride}_{stay}"
        compare(before, after, aoi_bbox=f"{b.left},{b.bottom},{b.right},{b.top}", aoi_crs=crs, out=folder,
                stay=stay, before_date=dates[0], after_date=dates[1])
        with rasterio.open(folder / "change.tif") as c, rasterio.open(folder / "p_change.tif") as p:
            code, pc = c.read(1), p.read(1)
        valid = ~np.isnan(pc)
        res[stay] = (code > 0, valid & (pc < 0.6) & (pc > 0.4), valid)
    with rasterio.open(folder / "before_probabilities.tif") as x, rasterio.open(folder / "after_probabilities.tif") as y:
        pa, pb = x.read(), y.read()
    valid = ~np.isnan(pa[0]) & ~np.isnan(pb[0])
    sure = valid & (np.nan_to_num(pa).max(0) >= 0.6) & (np.nan_to_num(pb).max(0) >= 0.6)
    res["per-date"] = (sure & (np.nan_to_num(pa).argmax(0) != np.nan_to_num(pb).argmax(0)), valid & ~sure, valid)
    return res


def main() -> None:
    from real_scenes import to_utm

    from atlas_change.model.registry import load_card

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.environ.get("ATLAS_SHARED", "../shared"))
    ap.add_argument("--model", default="spectrumnet-rgb")
    ap.add_argument("--runtime", help="classify's --runtime for the maps decided (default: classify's); the "
                    "pasted blocks are always chosen from the float network's labels (openvino-float)")
    ap.add_argument("--blocks-from", help="model whose labels choose the pasted blocks (default --model): the "
                    "same blocks for two models compared")
    a = ap.parse_args()
    shared, root = Path(a.shared), Path(tempfile.mkdtemp(prefix="atlas-prior-"))
    warnings.simplefilter("ignore")
    print(f"## Change decision against the prior ({time.strftime('%Y-%m-%d %H:%M')}, model {a.model}, "
          f"runtime {a.runtime or 'default'}, blocks chosen by {a.blocks_from or a.model}, {os.cpu_count()} CPU cores)\n")
    print("| case | stride | rule | false change | found change | undecided share of valid |")
    print("|---|---|---|---|---|---|")
    own = load_card(a.model).change_stay
    stays = tuple(sorted({*STAYS, *([own] if own else [])}))
    rows = []
    known = [mosaic(shared, root, k, OFFSET) for k in (1, 4)]
    pair = sorted((shared / "scenes" / "ssl4eo-s12-l1c-l2a-pair").glob("*/*/*"))
    l1c, l2a = (to_utm(p, root / p.parts[-3]) for p in sorted(pair, key=lambda p: p.parts[-3] != "s2c"))
    tom = cut(next((shared / "scenes" / "major-tom-l2a" / "199U").glob("*/*")), root / "tom", 0)
    ref = classified(tom, root, a.blocks_from or a.model, 64, "openvino-float")
    with rasterio.open(ref / "lulc.tif") as x, rasterio.open(ref / "confidence.tif") as y:
        pasted, blocks = paste(tom, x.read(1), y.read(1), root / "tom_pasted")
    for stride in STRIDES:
        maps = [classified(p, root, a.model, stride, a.runtime) for p in known]
        for rule, (changed, unsure, valid) in decisions(*maps, root / "known", stride, stays).items():
            y, x = (np.indices(changed.shape) + 0.5) * stride + OFFSET
            inside = (y < BLOCK) & (x < BLOCK)
            rows.append(("EuroSAT known change (1 date a side)", stride, rule,
                         f"{(changed & ~inside).sum()} of {(valid & ~inside).sum()} cells",
                         f"{(changed & inside).sum()} of {(valid & inside).sum()} cells", unsure.sum() / valid.sum()))
        maps = [classified(p, root, a.model, stride, a.runtime) for p in (l1c, l2a)]
        for rule, (changed, unsure, valid) in decisions(*maps, root / "ssl4eo", stride, stays).items():
            rows.append(("SSL4EO-S12 L1C vs L2A (no change)", stride, rule, f"{changed.sum()} of {valid.sum()} cells",
                         "", unsure.sum() / valid.sum()))
        maps = [classified(pasted, root, a.model, stride, a.runtime), classified(tom, root, a.model, stride, a.runtime)]
        k = 64 // stride
        for rule, (changed, unsure, valid) in decisions(*maps, root / "tom", stride, stays).items():
            found, near = 0, np.zeros(changed.shape, bool)
            for r, c in blocks:
                found += changed[r * k:(r + 1) * k, c * k:(c + 1) * k].any()
                near[max(0, (r - 1) * k):(r + 2) * k, max(0, (c - 1) * k):(c + 2) * k] = True
            rows.append(("Major TOM 199U L2A, 8 pasted blocks", stride, rule,
                         f"{(changed & ~near).sum()} of {(valid & ~near).sum()} cells", f"{found} of {len(blocks)} blocks",
                         unsure.sum() / valid.sum()))
    for case, stride, rule, false, found, unsure in rows:
        name = ("per-date threshold (before)" if rule == "per-date"
                else f"joint, stay {rule:g}" + (" (**the model's prior**)" if rule == own else ""))
        print(f"| {case} | {stride} | {name} | {false} | {found} | {100 * unsure:.1f} % |")


if __name__ == "__main__":
    main()
