"""Composite stage: one side of a comparison from one classified date or a period of several.

Per map cell, each date on which the cell is labelled (valid and clear) is evidence for the period's
one class: the dates' calibrated probabilities multiplied and normalised (the 'product'; the
default), or averaged (the 'mean', the mean-probability composite of Dynamic World's tutorials, Brown
et al. 2022); the label is its argmax, the confidence its maximum, and the number of those dates is kept per cell.
A cell no date labels is cloud (or snow) where some date saw cloud (snow) there, else nodata. One
date is the same computation: its own labels and confidences."""
from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine

from ..outputs import SKY_SNOW, cloud_code
from ..classes import CLASSES
from ..errors import AtlasError


@dataclass(frozen=True)
class Side:
    """The classify outputs of one side of a comparison, checked to share model, --tta and calibration."""

    maps: tuple  # of compare.ClassMap, sorted by date

    @property
    def first(self):
        return self.maps[0]

    @property
    def folder(self) -> str:
        return self.first.folder if len(self.maps) == 1 else f"{self.first.folder} (+{len(self.maps) - 1} dates)"

    @property
    def dates(self) -> list[str]:
        return [m.date for m in self.maps]

    @property
    def label(self) -> str:
        """'2023-06-01', or '2023-06-01 to 2023-08-30 (3 dates)' for a period."""
        d = self.dates
        return d[0] if len(d) == 1 else f"{d[0]} to {d[-1]} ({len(d)} dates)"

    def day_of_year(self) -> int:
        """The median day of year of the side's dates (its season)."""
        return int(statistics.median(dt.date.fromisoformat(x).timetuple().tm_yday for x in self.dates))

    # one model, --tta and calibration for the whole side (make_side checks): the first map's
    model = property(lambda self: self.first.model)
    weights_sha256 = property(lambda self: self.first.weights_sha256)
    tta_views = property(lambda self: self.first.tta_views)
    temperature = property(lambda self: self.first.temperature)
    cell_temperature = property(lambda self: self.first.cell_temperature)
    crs = property(lambda self: self.first.crs)


def make_side(maps: list, flag: str) -> Side:
    """The maps of one side, each with a date, all of one model, --tta and calibration (else AtlasError;
    the grids are checked with the other side's in compare.common_grid)."""
    for m in maps:
        if m.date is None:
            raise AtlasError(f"{m.folder}: no acquisition date (none in the scene's metadata); a change needs to "
                             f"know which map came first: pass {flag} YYYY-MM-DD")
    maps = sorted(maps, key=lambda m: m.date)
    first = maps[0]
    for m in maps[1:]:
        if ((m.weights_sha256, m.tta_views, m.temperature, m.cell_temperature, "int8" in m.precision)
                != (first.weights_sha256, first.tta_views, first.temperature, first.cell_temperature,
                    "int8" in first.precision)):
            def how(x) -> str:
                return (f"{x.model} ({x.weights_sha256[:12]}, --tta {x.tta_views}, temperatures {x.temperature:g} / "
                        f"{x.cell_temperature:g}, {x.precision or 'arithmetic not recorded'})")

            raise AtlasError(f"{m.folder}: made by {how(m)} but {first.folder}, of the same period, by {how(first)}; "
                             "a period is one model's composite: reclassify")
    return Side(tuple(maps))


def read_probabilities(m, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """A classify output's cell probabilities (cells.parquet) on the compare grid: (rows, cols, 10),
    NaN where the map labels no cell (nodata, cloud, snow, outside)."""
    import pyarrow.parquet as pq

    path = Path(m.folder) / "cells.parquet"
    cols = ["row", "col", *(f"p_{c}" for c in CLASSES)]
    dr = int(round((m.transform.f - transform.f) / transform.e))
    dc = int(round((m.transform.c - transform.c) / transform.a))
    try:  # only the map's rows on the grid: its row groups elsewhere are skipped unread (an atlas's large maps)
        table = pq.read_table(path, columns=cols, filters=[("row", ">=", -dr), ("row", "<", shape[0] - dr)])
    except (OSError, ValueError) as e:  # pyarrow's errors for absent, damaged or older files
        raise AtlasError(f"{path}: unreadable ({str(e).splitlines()[0][:120]}); classify the scene again") from None
    r = table.column("row").to_numpy() + dr
    c = table.column("col").to_numpy() + dc
    inside = (r >= 0) & (r < shape[0]) & (c >= 0) & (c < shape[1])
    out = np.full((*shape, len(CLASSES)), np.nan, np.float32)
    for k, name in enumerate(cols[2:]):
        out[r[inside], c[inside], k] = table.column(name).to_numpy()[inside]
    return out


def centre_inside(bounds, transform: Affine, shape: tuple[int, int]) -> np.ndarray | bool:
    """Cells of the grid whose centre lies within `bounds` (left, bottom, right, top); True if None."""
    if bounds is None:
        return True
    left, bottom, right, top = bounds
    x = transform.c + (np.arange(shape[1]) + 0.5) * transform.a
    y = transform.f + (np.arange(shape[0]) + 0.5) * transform.e
    return ((y > bottom) & (y < top))[:, None] & ((x > left) & (x < right))[None, :]


#: how the dates of a period combine (compare --period-evidence; benchmarks/period_evidence.py)
EVIDENCE = ("product", "mean")


def composite(side: Side, transform: Affine, shape: tuple[int, int], in_aoi: np.ndarray, read_on,
              evidence: str = "product") -> dict:
    """The side's composite on the compare grid: lulc (0 = none), confidence (NaN = none),
    probabilities, observations (clear dates per cell), cloud and snow (cells no date labels that
    some date saw as cloud / snow); a map's cells count where their centre lies in its scene.
    `evidence` 'mean': the dates' probabilities averaged; 'product': each date as independent
    evidence for the period's one class, p(c) ∝ prod_d p_d(c) (floored at 1e-6).
    `read_on(map, file, transform, shape, fill)` reads a raster."""
    total = np.zeros((*shape, len(CLASSES)), np.float64)
    n = np.zeros(shape, np.int32)
    cloud = np.zeros(shape, bool)
    snow = np.zeros(shape, bool)
    for m in side.maps:
        p = read_probabilities(m, transform, shape)
        mine = in_aoi & centre_inside(m.footprint, transform, shape)  # cells past the scene's edge: not this date's
        ok = mine & ~np.isnan(p[..., 0])
        total[ok] += np.log(np.maximum(p[ok], 1e-6)) if evidence == "product" else p[ok]
        n += ok
        sky = read_on(m, "cloud.tif", transform, shape, 0)
        cloud |= mine & (sky == cloud_code(Path(m.folder) / "cloud.tif"))
        snow |= mine & (sky == SKY_SNOW)
    has = n > 0
    if evidence == "product":
        z = np.exp(total - total.max(axis=-1, keepdims=True))
        total = z / z.sum(axis=-1, keepdims=True) * np.maximum(n, 1)[..., None]
    mean = np.where(has[..., None], total / np.maximum(n, 1)[..., None], np.nan).astype(np.float32)
    lulc = np.where(has, np.nan_to_num(mean, nan=-1).argmax(axis=-1) + 1, 0).astype(np.uint8)
    conf = np.where(has, np.nan_to_num(mean, nan=0).max(axis=-1), np.nan).astype(np.float32)
    cloud &= ~has
    snow &= ~has & ~cloud
    return {"lulc": lulc, "confidence": conf, "probabilities": mean, "observations": n.astype(np.uint8),
            "cloud": cloud, "snow": snow}
