"""One period's map on the atlas grid from the classify outputs of its tiles: each tile's cell
probabilities and sky (clear, cloud, snow) warped onto the atlas grid by area-weighted averaging
(GDAL's `average`), then averaged over the tiles that overlap, each weighted by the share of the
atlas cell it saw clear. Labels are never warped: a cell's class is the argmax of its merged
probabilities, so tiles on two UTM zones meet without a seam."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio.warp
from rasterio.enums import Resampling

from ..change.composite import read_probabilities
from ..change.compare import load_map
from ..classes import CLASSES
from ..outputs import SKY_CLEAR, SKY_NODATA, SKY_SNOW, cloud_code, read_raster
from .grid import Grid

#: a cell is labelled where the tiles saw at least this much of its area clear (in cell areas, summed
#: over tiles); else cloud or snow where at least this much of it was seen, else nodata
MIN_SEEN = 0.5


def _warp(layers: np.ndarray, src_transform, src_crs, grid: Grid, window, nodata=None) -> np.ndarray:
    """(bands, rows, cols) float32 from a tile's grid onto the atlas grid's `window`, area-weighted."""
    r0, c0, h, w = window
    out = np.full((len(layers), h, w), np.nan if nodata is not None else 0.0, np.float32)
    dst_transform = grid.transform * grid.transform.translation(c0, r0)
    rasterio.warp.reproject(layers, out, src_transform=src_transform, src_crs=src_crs, src_nodata=nodata,
                            dst_transform=dst_transform, dst_crs=grid.crs, dst_nodata=nodata,
                            resampling=Resampling.average)
    return out


def tile_on_grid(folder: str | Path, grid: Grid) -> tuple[tuple[int, int, int, int], dict] | None:
    """A tile's classify output on the atlas grid: its window and, there, `probs` (10, rows, cols;
    NaN where it labels nothing), the shares of each atlas cell it saw `clear`, `seen` at all
    (clear, cloud or snow), as `cloud` and as `snow`. None when the tile misses the grid."""
    m = load_map(folder)
    window = grid.window(_bounds_in(m, grid.crs))
    if window is None:
        return None
    probs = read_probabilities(m, m.transform, m.shape).transpose(2, 0, 1)
    sky = read_raster(Path(folder) / "cloud.tif")[0]
    code = cloud_code(Path(folder) / "cloud.tif")
    flags = np.stack([sky == SKY_CLEAR, sky != SKY_NODATA, sky == code, sky == SKY_SNOW]).astype(np.float32)
    p = _warp(np.ascontiguousarray(probs, np.float32), m.transform, m.crs, grid, window, nodata=np.nan)
    f = _warp(flags, m.transform, m.crs, grid, window)
    return window, {"probs": p, "clear": f[0], "seen": f[1], "cloud": f[2], "snow": f[3]}


def tile_bounds(folder: str | Path, crs) -> tuple[float, float, float, float]:
    """A tile's classify output's bounds in `crs` (the atlas grid's)."""
    return _bounds_in(load_map(folder), crs)


def _bounds_in(m, crs) -> tuple[float, float, float, float]:
    """A classify output's (ClassMap's) bounds in `crs`."""
    return rasterio.warp.transform_bounds(m.crs, crs, *_map_bounds(m), densify_pts=21)


def _map_bounds(m) -> tuple[float, float, float, float]:
    t, (rows, cols) = m.transform, m.shape
    xs, ys = (t.c, t.c + cols * t.a), (t.f, t.f + rows * t.e)
    return min(xs), min(ys), max(xs), max(ys)


def merge_period(folders: list[str | Path], grid: Grid) -> dict[str, np.ndarray]:
    """The period's map on `grid` from its tiles' classify outputs: `probabilities` (rows, cols, 10;
    NaN where unlabelled), `has` (labelled), `observations` (clear cell areas summed over tiles),
    `cloud` / `snow` (seen but not labelled, mostly cloud / snow)."""
    shape = (grid.height, grid.width)
    total = np.zeros((len(CLASSES), *shape), np.float32)
    clear, seen, cloud, snow = (np.zeros(shape, np.float32) for _ in range(4))
    for folder in folders:
        placed = tile_on_grid(folder, grid)
        if placed is None:
            continue
        (r0, c0, h, w), t = placed
        win = np.s_[r0:r0 + h, c0:c0 + w]
        total[(slice(None), *win)] += np.nan_to_num(t["probs"]) * t["clear"]
        clear[win] += t["clear"]
        seen[win] += t["seen"]
        cloud[win] += t["cloud"]
        snow[win] += t["snow"]
    has = clear >= MIN_SEEN
    probs = np.where(has[None], total / np.maximum(clear, 1e-12)[None], np.nan).astype(np.float32)
    probs /= np.where(has[None], probs.sum(axis=0, keepdims=True), 1.0)  # averaging keeps the sum: rounding only
    unlabelled = ~has & (seen >= MIN_SEEN)
    return {"probabilities": probs.transpose(1, 2, 0), "has": has, "observations": clear.astype(np.float32),
            "cloud": unlabelled & (cloud >= snow), "snow": unlabelled & (snow > cloud)}
