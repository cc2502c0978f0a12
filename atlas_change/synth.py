"""Synthetic Sentinel-2-like scenes on disk, for the demo, the tests and the benchmarks.

These are made-up digital numbers on a real UTM grid: good for checking georeferencing, band
handling, nodata and speed; they are never used to train a model."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from .bands import EUROSAT_ORDER

#: rough L1C digital numbers per band (EuroSAT order) for a few surfaces
SIGNATURES = np.array([
    # B01  B02  B03  B04  B05  B06  B07  B08  B09 B10  B11  B12  B8A
    [1300, 1000, 900, 700, 1100, 2200, 2700, 2600, 800, 12, 1500, 800, 2900],   # vegetation
    [1250, 950, 850, 600, 900, 1600, 1900, 1800, 600, 10, 900, 450, 2000],      # forest
    [1400, 1250, 1200, 1300, 1450, 1600, 1700, 1650, 600, 14, 2300, 1800, 1800],  # built-up
    [1300, 1050, 900, 650, 600, 550, 520, 480, 300, 9, 200, 120, 450],          # water
], dtype=np.float32)
#: a thick cumulus cloud (bright in every band, some cirrus-band signal): s2cloudless gives it p ~ 1
CLOUD = np.array([5200, 5000, 4800, 4900, 5000, 5100, 5200, 5300, 3000, 300, 3600, 2600, 5300], dtype=np.float32)


def make_scene(path: str | os.PathLike, width: int = 1024, height: int = 1024, *,
               bands: tuple[str, ...] = EUROSAT_ORDER, crs: str = "EPSG:32632",
               origin: tuple[float, float] = (600000.0, 5000040.0), res: float = 10.0,
               nodata_border: int = 0, descriptions: bool = True, seed: int = 0,
               block: int = 512, tags: dict | None = None,
               clouds: tuple[tuple[int, int, int, int], ...] = ()) -> Path:
    """Write a tiled, deflate-compressed uint16 GeoTIFF of `bands` (window by window, so any size
    fits in memory). Land-cover blobs of 256 px with noise; `nodata_border` pixels of 0 on every edge;
    a thick cloud over each (row, col, height, width) of `clouds` (the same land under it: a scene
    with clouds and one without, same seed, differ only there)."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    order = [EUROSAT_ORDER.index(b) for b in bands]
    sig = SIGNATURES[:, order]
    cover = rng.integers(0, len(SIGNATURES), size=(-(-height // 256), -(-width // 256)))
    profile = dict(driver="GTiff", width=width, height=height, count=len(bands), dtype="uint16", crs=crs,
                   transform=Affine(res, 0, origin[0], 0, -res, origin[1]), nodata=0, tiled=True,
                   blockxsize=block, blockysize=block, compress="deflate", BIGTIFF="IF_SAFER")
    with rasterio.open(path, "w", **profile) as dst:
        if descriptions:
            for i, b in enumerate(bands):
                dst.set_band_description(i + 1, b)
        if tags:
            dst.update_tags(**tags)
        for r in range(0, height, block):
            for c in range(0, width, block):
                h, w = min(block, height - r), min(block, width - c)
                rows = np.arange(r, r + h) // 256
                cols = np.arange(c, c + w) // 256
                base = sig[cover[rows][:, cols]]  # (h, w, bands)
                noise = rng.normal(1.0, 0.08, size=(h, w, 1)).astype(np.float32)
                data = np.clip(base * noise, 1, 65535).astype(np.uint16).transpose(2, 0, 1)
                for cr, cc, ch, cw in clouds:
                    y0, y1, x0, x1 = max(cr - r, 0), min(cr + ch - r, h), max(cc - c, 0), min(cc + cw - c, w)
                    if y0 < y1 and x0 < x1:
                        data[:, y0:y1, x0:x1] = (CLOUD[order][:, None, None] * noise[y0:y1, x0:x1, 0]).astype(np.uint16)
                if nodata_border:
                    yy, xx = np.mgrid[r:r + h, c:c + w]
                    edge = ((yy < nodata_border) | (xx < nodata_border) |
                            (yy >= height - nodata_border) | (xx >= width - nodata_border))
                    data[:, edge] = 0
                dst.write(data, window=Window(c, r, w, h))
    return path


DEMO_DATES = ("2023-06-01", "2024-06-01")


def demo_inputs(folder: str | os.PathLike, size: int = 1024) -> Path:
    """The inputs of jobs/example.toml in `folder`: two synthetic dates of one UTM 32N area
    (scene_<date>.tif, DATE tag set, 100 px nodata border)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for seed, day in enumerate(DEMO_DATES):
        if not (folder / f"scene_{day}.tif").exists():
            make_scene(folder / f"scene_{day}.tif", size, size, nodata_border=100, seed=seed, tags={"DATE": day})
    return folder
