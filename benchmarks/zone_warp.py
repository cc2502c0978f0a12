"""Which kernel a mosaic warps 10 m bands with: one place in two UTM zones, cell labels compared.

Where an AOI lies across a UTM zone boundary, compare (and a STAC search's mosaic) reads each date
on the AOI's grid, and GDAL warps the bands onto it (read/mosaic.py). The same land, given once in
its own zone and once in the neighbouring one, should then get the same labels. For each real place
the neighbouring zone's copy is made here (rasterio's reproject); `compare` classifies both on the
AOI's grid; the table gives the share of cells whose two labels agree, and what the joint change
decision made of it (it should find no change: the land is one).

- fit: the Major TOM L2A cell 199U_1099R (Laos / Thailand, UTM 48N), as delivered, against a copy
  warped into 47N (bilinear, as gdalwarp's default);
- held out: the SSL4EO-S12 L1C and L2A products of tile 43RCP (delivered in EPSG:4326), each warped
  into 43N and into 42N with one kernel (bilinear or Lanczos), the 43N copy against the 42N copy.

Kernels: the mosaic's warp of the 10 m bands with bilinear (the rule before 2026-12-06), nearest,
cubic, lanczos, and `rule` (read.mosaic.regridded: cubic for 10 m bands, 20 / 60 m bands with
their reader's kernel). One model (the default, spectrumnet-rgb), one view; small places, so read
the table as direction, not size.

    python benchmarks/zone_warp.py --shared ../shared [--kernels bilinear,rule]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rasterio  # noqa: E402
from rasterio.enums import Resampling  # noqa: E402
from rasterio.warp import calculate_default_transform, reproject  # noqa: E402

from atlas_change.change.compare import compare  # noqa: E402
from atlas_change.read import mosaic  # noqa: E402
from bench_classify import append_results, cpu_name  # noqa: E402

MT = "scenes/major-tom-l2a/199U/199U_1099R/S2B_MSIL2A_20200223T032739_N9999_R018_T48QUE_20230924T183543"
SS = "scenes/ssl4eo-s12-l1c-l2a-pair/{}/0000200/20200604T054639_20200604T054831_T43RCP"
MT_AOI = "103.72563,17.89021,103.78189,17.94479"  # 6 x 6 km inside the cell
SS_AOI = "73.2955,30.4553,73.3163,30.4726"  # 2 x 2 km inside the 2.6 km patch


def warp_folder(src: Path, dst: Path, crs: str, kernel: str) -> Path:
    """Every band file of a band folder warped to `crs` at 10 m (and metadata.json copied)."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name == "metadata.json":
            (dst / f.name).write_bytes(f.read_bytes())
        if not (f.suffix == ".tif" and f.stem.upper().startswith("B")):
            continue
        with rasterio.open(f) as s:
            t, w, h = calculate_default_transform(s.crs, crs, s.width, s.height, *s.bounds, resolution=10)
            with rasterio.open(dst / f.name, "w", **{**s.profile, "crs": crs, "transform": t, "width": w, "height": h}) as d:
                reproject(rasterio.band(s, 1), rasterio.band(d, 1), resampling=Resampling[kernel])
    return dst


def cases(shared: Path, tmp: Path) -> list[tuple[str, Path, Path, str, int]]:
    """(name, one zone's folder, the other zone's folder, AOI bbox, stride) of every place."""
    mt = shared / MT
    out = [("fit: Major TOM 199U L2A, 48N as delivered / 47N copy (bilinear)", mt,
            warp_folder(mt, tmp / "mt47" / mt.name, "EPSG:32647", "bilinear"), MT_AOI, 64)]
    for level, sub in (("L1C", "s2c"), ("L2A", "s2a")):
        src = shared / SS.format(sub)
        for copy in ("bilinear", "lanczos"):
            a, b = (warp_folder(src, tmp / f"{sub}-{copy}-{z}" / src.name, f"EPSG:326{z}", copy) for z in (43, 42))
            out.append((f"held out: SSL4EO 43RCP {level}, 43N / 42N copies ({copy})", a, b, SS_AOI, 16))
    return out


def kernel_rule(kernel: str):
    """read.mosaic.regridded for `kernel`: 'rule' is the package's own; else every band that way."""
    if kernel == "rule":
        return mosaic.regridded
    return lambda src: replace(src, warp=True, resampling=kernel)


def agreement(s: dict) -> tuple[float, int]:
    """Share of the AOI's cells labelled on both sides whose two labels agree, and how many."""
    maps = []
    for side in ("before", "after"):
        with rasterio.open(Path(s[side]["source"]) / "lulc.tif") as src:
            maps.append(src.read(1))
    both = (maps[0] > 0) & (maps[1] > 0)
    return float((maps[0] == maps[1])[both].mean()), int(both.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--kernels", default="bilinear,nearest,cubic,lanczos,rule")
    a = ap.parse_args()
    rows, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, one, other, aoi, stride in cases(Path(a.shared), tmp):
            for kernel in a.kernels.split(","):
                mosaic.regridded = kernel_rule(kernel)  # (classify runs in this process: scheduler sync)
                out = tmp / "out" / f"{len(rows)}" / "cmp"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    s = compare(str(one), str(other), aoi_bbox=aoi, out=out, stride=stride, tta=1, scheduler="sync",
                                before_date="2020-01-01", after_date="2020-01-02", quiet=True)
                share, n = agreement(s)
                rows.append(f"| {name} | {stride} | {kernel} | {share:.1%} of {n} | {s['changed_ha']:.1f} | "
                            f"{s['uncertain_ha']:.1f} | {s['valid_ha']:.1f} |")
                print(rows[-1], flush=True)
                run = json.loads((Path(s["before"]["source"]) / "run.json").read_text())
    append_results(
        f"\n## {time.strftime('%Y-%m-%d %H:%M')} - zone_warp ({cpu_name()}, {os.cpu_count()} cores; model "
        f"{run['model']['model']} {run['model']['weights_sha256'][:12]}, 1 view; {time.perf_counter() - t0:.0f} s)\n\n"
        "One place in two UTM zones, both read on the AOI's grid by a mosaic whose 10 m bands are warped with "
        "`kernel`: the share of cells whose two labels agree, and the joint change decision's hectares (no change "
        "is the truth).\n\n"
        "| place | stride | kernel | labels agree | changed ha | uncertain ha | valid ha |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
