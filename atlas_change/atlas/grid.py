"""The atlas grid: one grid of square cells for a whole region, in an equal-area CRS. For Europe the
EEA reference grid (ETRS89-LAEA, EPSG:3035), whose cells lie at multiples of their size from the
CRS's origin, so that atlases of neighbouring regions, and of other cell sizes that divide each
other (640 m, 160 m), share cell edges."""
from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from ..errors import AtlasError

EEA_CRS = "EPSG:3035"
#: atlas grids beyond this many cells are refused: a guard against a mistaken cell size or region (memory
#: does not grow with the grid, period.BAND_CELLS; its files and time do: Europe at 160 m is ~6 x 10^8 cells)
MAX_CELLS = 1_000_000_000


@dataclass(frozen=True)
class Grid:
    """`width` x `height` square cells of `cell` metres, the top-left corner at (`x0`, `y0`)."""

    crs: CRS
    x0: float
    y0: float
    cell: float
    width: int
    height: int

    @property
    def transform(self) -> Affine:
        return Affine(self.cell, 0.0, self.x0, 0.0, -self.cell, self.y0)

    @property
    def cell_ha(self) -> float:
        return self.cell * self.cell / 1e4

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return self.x0, self.y0 - self.height * self.cell, self.x0 + self.width * self.cell, self.y0

    def bands(self, cells: int) -> Iterator[tuple[int, "Grid"]]:
        """(first row, sub-grid) of the grid cut into bands of whole rows, about `cells` cells each."""
        rows = max(1, cells // self.width)
        for r0 in range(0, self.height, rows):
            yield r0, replace(self, y0=self.y0 - r0 * self.cell, height=min(rows, self.height - r0))

    def window(self, bounds: tuple[float, float, float, float]) -> tuple[int, int, int, int] | None:
        """(row, col, rows, cols) of the cells that `bounds` (in the grid's CRS) touches, clipped to
        the grid; None when it misses the grid."""
        left, bottom, right, top = bounds
        c0 = max(0, math.floor((left - self.x0) / self.cell))
        c1 = min(self.width, math.ceil((right - self.x0) / self.cell))
        r0 = max(0, math.floor((self.y0 - top) / self.cell))
        r1 = min(self.height, math.ceil((self.y0 - bottom) / self.cell))
        return None if c1 <= c0 or r1 <= r0 else (r0, c0, r1 - r0, c1 - c0)


def grid_crs(text: str) -> CRS:
    """A projected CRS with metres for the atlas grid; AtlasError otherwise."""
    try:
        crs = CRS.from_user_input(text)
    except Exception:  # noqa: BLE001  (rasterio raises CRSError, pyproj others)
        raise AtlasError(f"--grid-crs {text!r}: not a CRS (e.g. EPSG:3035)") from None
    if not crs.is_projected or (crs.linear_units or "").lower() not in ("metre", "meter", "m"):
        raise AtlasError(f"--grid-crs {text!r}: the atlas grid needs a projected CRS in metres (an equal-area one, "
                         "e.g. EPSG:3035 in Europe), for hectares")
    return crs


def region_grid(bounds: tuple[float, float, float, float], crs: CRS, cell: float,
                origin: tuple[float, float] = (0.0, 0.0), max_cells: int | None = None, name: str = "the region") -> Grid:
    """The smallest grid of `cell`-metre cells at multiples of `cell` from `origin` that covers
    `bounds` (in `crs`). More than `max_cells` cells (default $ATLAS_MAX_CELLS or MAX_CELLS) is refused."""
    left, bottom, right, top = bounds
    ox, oy = origin
    x0 = ox + math.floor((left - ox) / cell) * cell
    y1 = oy + math.ceil((top - oy) / cell) * cell
    width = max(1, math.ceil((right - x0) / cell))
    height = max(1, math.ceil((y1 - bottom) / cell))
    cap = max_cells or int(float(os.environ.get("ATLAS_MAX_CELLS", MAX_CELLS)))
    if width * height > cap:
        raise AtlasError(f"{name}: needs {width} x {height} cells of {cell:g} m, more than {cap:,}; use larger cells "
                         "(--cell), a smaller region, or set ATLAS_MAX_CELLS")
    return Grid(crs, x0, y1, float(cell), width, height)


def unit_index(geometries, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Per cell, 1 + the index of the geometry (in the grid's CRS) its centre lies in, 0 for none (GDAL's
    rasterisation without all_touched burns exactly the cells whose centre is inside); where units
    overlap, a cell is counted in the first of them only, so a cell is never counted twice."""
    from rasterio.features import rasterize

    shapes = [(g, i + 1) for i, g in reversed(list(enumerate(geometries))) if g is not None and not g.is_empty]
    if not shapes:
        return np.zeros(shape, np.int32)
    return rasterize(shapes, out_shape=shape, transform=transform, fill=0,
                     all_touched=False, dtype="int32")
