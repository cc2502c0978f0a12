"""Benchmark: how long classify's "find data" pass takes on an enormous sparse GeoTIFF (which
chunks of the file store any block: `Scene.holds_blocks`, asked of GDAL's TIFF directory).

    python benchmarks/sparse_check.py [--size 100000] [--layout striped|tiled]

Writes a 13-band sparse GeoTIFF of --size x --size pixels (BigTIFF, deflate, band-interleaved,
striped one pixel row a strip as GDAL writes untiled files, or 256 px tiles) holding data in one
band of 256 rows only, then asks every 1024 x 1024 chunk of the scene whether it holds a block, as
classify does before any read. Prints the chunks, those with data and the seconds; appends nothing
(the figures go into RESULTS.md by hand, with the commit measured).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atlas_change.bands import EUROSAT_ORDER  # noqa: E402
from atlas_change.read import open_scene  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--layout", choices=("striped", "tiled"), default="striped")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sparse.tif"
        profile = dict(driver="GTiff", width=a.size, height=a.size, count=13, dtype="uint16", crs="EPSG:32632",
                       transform=Affine(10, 0, 500000, 0, -10, 5000000), nodata=0, compress="deflate",
                       sparse_ok=True, BIGTIFF="YES", interleave="band",
                       **({"tiled": True, "blockxsize": 256, "blockysize": 256} if a.layout == "tiled" else {}))
        with rasterio.open(path, "w", **profile) as d:
            d.descriptions = EUROSAT_ORDER
            row = a.size // 2
            d.write(np.full((13, 256, a.size), 1000, np.uint16), window=Window(0, row, a.size, 256))
        scene = open_scene(str(path))
        t0 = time.perf_counter()
        n = found = 0
        for r in range(0, a.size, 1024):
            for c in range(0, a.size, 1024):
                n += 1
                found += scene.holds_blocks(Window(c, r, min(1024, a.size - c), min(1024, a.size - r)))
        print(f"{a.layout} {a.size} x {a.size}: {n} chunks, {found} with data, {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
