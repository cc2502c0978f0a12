"""Read stage, mosaics: the STAC Items of one date that together cover an AOI (neighbouring MGRS
tiles, also across a UTM zone boundary) as one `Scene` on one grid: the AOI's UTM zone at 10 m.
Any input `open_scene` reads may be an item: compare makes a mosaic of one local scene alone where
the scenes it compares lie on grids that do not align (compare.scenes_on_one_grid).
Each Item's bands are warped onto that grid by GDAL (WarpedVRT, as any band off the 10 m grid), and
where Items overlap the clearer pixel wins: per pixel the first Item, in the order given (clearest
over the AOI first), whose SCL calls it clear, else the first that has data. Each Item keeps its own
baseline offset (decided from its pixels), so the mosaic's digital numbers are all on the
pre-04.00 scale and its own offset is 0.

A mosaic is a small JSON file (`*.mosaic.json`, written by `write_mosaic`), so that every stage
can open it again by its path, and run.json names it:

    {"type": "atlas-change-mosaic", "date": "2023-06-05", "items": [URL, URL],
     "crs": "EPSG:32633", "transform": [10, 0, x0, 0, -10, y0], "width": W, "height": H}
"""
from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from ..errors import AtlasError
from ..outputs import atomic_write
from .scene import SCL_INVALID, BandSource, Scene

SUFFIX = ".mosaic.json"
GRID_M = 640.0  # mosaic grids start on multiples of 640 m (10 patches of 64 px): every date's mosaic of an AOI aligns


def is_mosaic(p: str) -> bool:
    return str(p).lower().endswith(SUFFIX) and os.path.isfile(p)


def utm_of(lon: float, lat: float) -> CRS:
    """The WGS 84 / UTM zone of a point (EPSG 326zz north, 327zz south)."""
    zone = min(60, int((lon + 180) // 6) + 1)
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def unwrapped(aoi):
    """An AOI (EPSG:4326) that crosses the antimeridian, written with longitudes on both sides of +-180
    (bounds wider than 180 degrees), with its western longitudes moved past 180 so that it is one
    small shape again; any other AOI as it is."""
    import shapely

    minx, _, maxx, _ = aoi.bounds
    if maxx - minx <= 180:
        return aoi
    return shapely.transform(aoi, lambda xy: np.column_stack([np.where(xy[:, 0] < 0, xy[:, 0] + 360, xy[:, 0]),
                                                               xy[:, 1]]))


def aoi_grid(aoi, res: float = 10.0) -> tuple[CRS, Affine, int, int]:
    """The grid of a mosaic over `aoi` (shapely geometry, EPSG:4326): its centre's UTM zone, `res`
    metres, bounds widened outwards to multiples of GRID_M."""
    from rasterio.warp import transform_geom
    from shapely.geometry import shape

    aoi = unwrapped(aoi)
    c = aoi.centroid
    crs = utm_of((c.x + 180) % 360 - 180, c.y)
    minx, miny, maxx, maxy = shape(transform_geom("EPSG:4326", crs, aoi.__geo_interface__)).bounds
    x0, y1 = math.floor(minx / GRID_M) * GRID_M, math.ceil(maxy / GRID_M) * GRID_M
    x1, y0 = math.ceil(maxx / GRID_M) * GRID_M, math.floor(miny / GRID_M) * GRID_M
    return crs, Affine(res, 0, x0, 0, -res, y1), int(round((x1 - x0) / res)), int(round((y1 - y0) / res))


def mosaic_path(folder: Path, pick) -> Path:
    """Where a search's mosaic of one date goes: `folder`/<date>_<hash of its items>.mosaic.json."""
    import hashlib

    h = hashlib.sha256("\n".join(f.url for f in pick.items).encode()).hexdigest()[:12]
    return Path(folder) / f"{pick.date}_{h}{SUFFIX}"


def write_mosaic(path: str | os.PathLike, date: str | None, urls: list[str], aoi) -> Path:
    """Write the mosaic file of the Items `urls` (clearest first; or scenes' paths) of `date` (None:
    not known) over `aoi` (EPSG:4326)."""
    crs, t, w, h = aoi_grid(aoi)
    doc = {"type": "atlas-change-mosaic", "date": date, "items": list(urls), "crs": crs.to_string(),
           "transform": list(t)[:6], "width": w, "height": h}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(json.dumps(doc, indent=1).encode()))
    return path


@dataclass(frozen=True)
class MosaicScene(Scene):
    """Several Items' scenes (`parts`, each warped onto this grid) read as one."""

    parts: tuple[Scene, ...] = ()

    def _fuse(self, window: Window, factor: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(float32 bands with each part's offset applied, has data, fused SCL or None), copies of the
        last fuse of this window in this thread when there is one: a chunk reads its bands and then
        its SCL (pipeline.classify_chunk), and fusing reads every part's bands and SCL for both."""
        key = (int(window.col_off), int(window.row_off), int(window.width), int(window.height), factor)
        last = self.__dict__.setdefault("_last_fuse", {})  # per instance and thread; not a field
        got = last.get(threading.get_ident())
        if got is None or got[0] != key:
            got = last[threading.get_ident()] = (key, self._fuse_parts(window, factor))
        out, have, scl = got[1]
        return out.copy(), have.copy(), None if scl is None else scl.copy()

    def _fuse_parts(self, window: Window, factor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        h, w = int(window.height) // factor, int(window.width) // factor
        out = np.zeros((len(self.bands), h, w), np.float32)
        scl = np.zeros((h, w), np.uint8) if self.mask is not None and factor == 1 else None
        have, have_clear = np.zeros((h, w), bool), np.zeros((h, w), bool)
        for part in self.parts:
            data, valid = part.read(window, scl=False, factor=factor)
            s = part.read_scl(window) if scl is not None else None
            clear = valid & ~np.isin(s, SCL_INVALID) if s is not None else valid
            take = (clear & ~have_clear) | (valid & ~have)  # a clear pixel replaces a cloudy one taken before
            out[:, take] = data[:, take]
            if s is not None:
                scl[take] = s[take]
            have |= take
            have_clear |= take & clear
        return out, have, scl

    def read(self, window: Window, raw: bool = False, scl: bool = True,
             factor: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """As Scene.read; `raw` gives uint16 digital numbers, every part's offset already applied."""
        out, valid, fused = self._fuse(window, factor)
        if scl and fused is not None:
            valid &= ~np.isin(fused, SCL_INVALID)
        return (np.clip(out, 0, 65535).astype(np.uint16) if raw else out), valid

    def read_scl(self, window: Window) -> np.ndarray:
        return self._fuse(window)[2]

    def holds_blocks(self, window: Window) -> bool:
        return True

    def cropped(self, window: Window) -> "MosaicScene":
        c, r = int(window.col_off), int(window.row_off)
        t = tuple(self.affine * Affine.translation(c, r))[:6]
        size = {"width": int(window.width), "height": int(window.height), "transform": t}
        return replace(self, **size, parts=tuple(replace(p, **size) for p in self.parts))

    def select(self, bands: tuple[str, ...]) -> "MosaicScene":
        return replace(super().select(bands), parts=tuple(p.select(bands) for p in self.parts))


def local_scenes(p: str | os.PathLike) -> list[Path]:
    """The scene files and folders a mosaic file names (none of its STAC Items, URLs or kept copies):
    what a job hashes to see that a mosaic of local scenes has changed."""
    from .stac import is_item

    items = json.loads(Path(p).read_text())["items"]
    paths = [Path(p).parent / u for u in items if "://" not in u]
    return [q for q in paths if not is_item(str(q))]


def regridded(src: BandSource) -> BandSource:
    """A band read on the mosaic's grid: one its scene already warps (a 20 / 60 m band onto 10 m) with
    that kernel; one on its scene's own 10 m grid with cubic, since there the warp only moves and
    turns the grid, and bilinear would blur the texture the model reads (cell labels of one place
    warped from two UTM zones: benchmarks/RESULTS.md, 2026-12-06; Lanczos labels as cubic does and
    costs the read 58 % more CPU against cubic's 8 %)."""
    return replace(src, warp=True) if src.warp else replace(src, warp=True, resampling="cubic")


def open_mosaic(p: str) -> MosaicScene:
    """A mosaic file as a Scene of the bands every one of its Items holds (AtlasError naming the
    file or the Item)."""
    from . import open_scene

    try:
        doc = json.loads(Path(p).read_text())
        urls, date = [str(u) for u in doc["items"]], doc["date"] and str(doc["date"])
        crs, t = CRS.from_user_input(doc["crs"]), Affine(*doc["transform"][:6])
        w, h = int(doc["width"]), int(doc["height"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AtlasError(f"{p}: not a readable mosaic file ({type(e).__name__}: {str(e)[:120]})") from None
    if doc.get("type") != "atlas-change-mosaic" or not isinstance(doc["items"], list) or not urls:
        raise AtlasError(f"{p}: not a mosaic file (type atlas-change-mosaic with a list of items)")
    grid = {"crs_wkt": crs.to_wkt(), "transform": tuple(t)[:6], "width": w, "height": h, "col_off": 0, "row_off": 0}
    parts = []
    for u in urls:
        u = u if "://" in u else str(Path(p).parent / u)
        if is_mosaic(u):  # (its parts are on its own grid; and a mosaic naming itself would never end)
            raise AtlasError(f"{p}: its item {u} is a mosaic file; name that mosaic's items instead")
        s = open_scene(u, None)
        parts.append(replace(s, **grid, sources=tuple(regridded(b) for b in s.sources),
                             catalog=tuple((b, regridded(src), m) for b, src, m in s.catalog),
                             mask=replace(s.mask, warp=True) if s.mask is not None else None))
    available = tuple(b for b in parts[0].available if all(b in q.available for q in parts))
    parts = [q.select(available) for q in parts]
    levels = {q.level for q in parts}
    catalog = tuple((b, s, f"mosaic of {len(parts)} items, warped to {crs.to_string()} at {t.a:g} m, clearest pixel "
                           f"first: {m}, ...") for b, s, m in parts[0].catalog if b in available)
    return MosaicScene(
        path=p, kind="mosaic", level=levels.pop() if len(levels) == 1 else None, bands=available,
        sources=parts[0].sources, **grid, block=512, offset=0.0,
        offset_how="each item's own: " + "; ".join(f"{q.path}: {q.offset:g} ({q.offset_how})" for q in parts),
        nodata=0.0, mask=parts[0].mask if all(q.mask is not None for q in parts) else None, date=date,
        band_mapping={b: m for b, _, m in catalog}, available=available, catalog=catalog, parts=tuple(parts))
