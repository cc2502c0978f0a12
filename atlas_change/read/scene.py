"""Read stage, the scene: every kind of input, once opened, is a `Scene` on one 10 m grid whose
windows are read in the band order a stage asks for (`select`).

Nothing here reads the whole scene: `Scene.read(window)` reads one window (GDAL resamples the
20 m / 60 m bands onto the 10 m grid through a WarpedVRT), and `Scene.to_xarray()` gives a lazy,
dask-chunked DataArray built on the same reader.
"""
from __future__ import annotations

import functools
import os
import re
import threading
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import CRSError, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from ..dates import metadata_date
from ..errors import AtlasError, AtlasWarning

#: SCL classes that are no data (0) or saturated/defective (1)
SCL_NODATA = (0, 1)
#: SCL classes that are cloud shadow (3), cloud medium (8) or high (9) probability, thin cirrus (10)
SCL_CLOUD = (3, 8, 9, 10)
SCL_INVALID = SCL_NODATA + SCL_CLOUD


@dataclass(frozen=True)
class BandSource:
    """One band of the scene: a GDAL path, a 1-based band index, and whether it needs warping."""

    path: str
    index: int = 1
    warp: bool = False
    resampling: str = "bilinear"


@dataclass(frozen=True)
class Scene:
    """A scene on one grid: the sources of the bands selected (a model's, in its order), and the
    catalog of every band the input holds to select others from."""

    path: str
    kind: str  # "geotiff", "safe", "band-files", "stac-item" or "mosaic"
    level: str | None  # "L1C", "L2A" or None when unknown
    bands: tuple[str, ...]
    sources: tuple[BandSource, ...]
    crs_wkt: str
    transform: tuple[float, ...]
    width: int
    height: int
    block: int  # internal tile size (pixels) of the first source, for chunk alignment
    offset: float = 0.0  # added to every digital number (baseline >= 04.00: -1000)
    offset_how: str = "no offset in the metadata"  # how `offset` was decided (run.json)
    nodata: float = 0.0
    mask: BandSource | None = None  # L2A scene classification (SCL)
    date: str | None = None
    band_mapping: dict[str, str] = field(default_factory=dict)  # band -> where it came from
    available: tuple[str, ...] = ()  # every Sentinel-2 band the input holds
    col_off: int = 0  # a crop (cropped): where this grid starts in the files' own grid, in pixels
    row_off: int = 0
    catalog: tuple[tuple[str, BandSource, str], ...] = ()  # every band the input holds: (band, source, mapping)

    def select(self, bands: tuple[str, ...]) -> "Scene":
        """This scene (the input opened once) for `bands`, in that order; AtlasError naming the input
        where it lacks some."""
        have = {b: (s, m) for b, s, m in self.catalog}
        missing = [b for b in bands if b not in have]
        if missing:
            m = ", ".join(missing)
            if self.kind == "geotiff":
                why = f"lacks band(s) {m} that the model needs (file has {', '.join(self.available)})"
            elif self.kind == "stac-item":
                why = f"the STAC Item has no GeoTIFF asset for band(s) {m} (it has {', '.join(self.available) or 'none'})"
            elif self.kind == "mosaic":
                why = f"not every item of the mosaic holds band(s) {m} (all hold {', '.join(self.available) or 'none'})"
            else:
                why = f"{self.level or 'the'} product lacks band(s) {m} that the model needs" + (
                    " (L2A has no B10: use a model without it, such as spectrumnet-rgb)"
                    if "B10" in missing and self.level == "L2A" else "")
            raise AtlasError(f"{self.path}: {why}")
        return replace(self, bands=tuple(bands), sources=tuple(have[b][0] for b in bands),
                       band_mapping={b: have[b][1] for b in bands})

    @property
    def crs(self) -> CRS:
        return CRS.from_wkt(self.crs_wkt)

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform[:6])

    def read(self, window: Window, raw: bool = False, scl: bool = True,
             factor: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Read `window` of every band -> (array (bands, h, w), bool mask (h, w) that is True where
        every band holds data and, with `scl`, the L2A scene classification says clear ground
        (without it the SCL is not read: see cloud.chunk_cloud).
        The array is float32 with the DN offset applied (negative results clip to 0), or with `raw`
        the file's own digital numbers, offset not applied, as read (one GDAL read per file for the
        bands that file holds). `factor` > 1 reads (h, w) / factor pixels, each the mean of factor x
        factor pixels (GDAL's `average` resampling; the window must be a multiple of `factor`)."""
        h, w = int(window.height) // factor, int(window.width) // factor
        kw = {} if factor == 1 else {"out_shape": None, "resampling": Resampling.average}
        out = None
        valid = np.ones((h, w), dtype=bool)
        i = 0
        for src, indexes in self._runs():
            if kw:
                kw["out_shape"] = (len(indexes), h, w)
            data = self._dataset(src).read(indexes, window=self._file_window(src, window), **kw)
            if out is None:
                out = np.empty((len(self.sources), h, w), dtype=data.dtype if raw else np.float32)
            if data.dtype.kind == "f":  # NaN is nodata in a float scene, whatever the file declares
                nan = np.isnan(data)
                valid &= ~nan.any(axis=0)
                data[nan] = 0 if np.isnan(self.nodata) else self.nodata
            out[i:i + len(indexes)] = data
            valid &= (data != self.nodata).all(axis=0)
            i += len(indexes)
        if scl and self.mask is not None:
            valid &= ~np.isin(self.read_scl(window), SCL_INVALID)
        if self.offset and not raw:
            out += self.offset
            np.maximum(out, 0, out=out)
        return out, valid

    def holds_blocks(self, window: Window) -> bool:
        """False when some band's file stores no block at all inside `window` (a sparse GeoTIFF:
        GDAL reads absent blocks as nodata), so the window is nodata without reading a pixel. Asks
        GDAL's TIFF directory (BLOCK_OFFSET_x_y, once per block: stored_blocks), not the pixels; True
        for other formats."""
        for src, _ in self._runs():
            ds = self._dataset(src)
            if src.warp or ds.driver != "GTiff":
                continue
            bh, bw = ds.block_shapes[src.index - 1]
            w = self._file_window(src, window)
            r0, c0 = int(w.row_off) // bh, int(w.col_off) // bw
            r1, c1 = (int(w.row_off + w.height) - 1) // bh, (int(w.col_off + w.width) - 1) // bw
            if not stored_blocks(src.path, _stamp(src.path), src.index)[r0:r1 + 1, c0:c1 + 1].any():
                return False
        return True

    def stored_window(self) -> Window | None:
        """The part of this grid where the first band's GeoTIFF stores blocks (a sparse file: GDAL
        reads absent blocks as nodata), widened outwards to multiples of 64 px from the grid's origin
        and to one patch at least; the whole grid for files that store every block and for other
        formats; None when the file stores no block at all."""
        whole = Window(0, 0, self.width, self.height)
        src = self.sources[0]
        ds = self._dataset(src)
        if src.warp or ds.driver != "GTiff":
            return whole
        stored = stored_blocks(src.path, _stamp(src.path), src.index)
        if stored.all():
            return whole
        rows, cols = np.flatnonzero(stored.any(axis=1)), np.flatnonzero(stored.any(axis=0))
        bh, bw = ds.block_shapes[src.index - 1]
        (r0, r1), (c0, c1) = ((_widen(a[0] * b - off, (a[-1] + 1) * b - off, n) if a.size else (0, 0))
                              for a, b, off, n in ((rows, bh, self.row_off, self.height),
                                                   (cols, bw, self.col_off, self.width)))
        if r1 <= r0 or c1 <= c0:
            return None
        return Window(c0, r0, c1 - c0, r1 - r0)

    def read_scl(self, window: Window) -> np.ndarray:
        """The L2A scene classification (SCL) of `window` on the 10 m grid (nearest neighbour)."""
        return self._dataset(self.mask).read(self.mask.index, window=self._file_window(self.mask, window))

    def _file_window(self, src: BandSource, window: Window) -> Window:
        """`window` of this (maybe cropped) grid in the file's own pixels; warped sources are
        already on this grid."""
        if src.warp or not (self.col_off or self.row_off):
            return window
        return Window(window.col_off + self.col_off, window.row_off + self.row_off, window.width, window.height)

    def window_of(self, bounds: tuple[float, float, float, float]) -> Window | None:
        """The pixels of this grid that cover `bounds` (minx, miny, maxx, maxy in its CRS), widened
        outwards to multiples of 64 from the grid's origin (so patches fall where they fall on the
        whole scene) and clipped to it; None when they miss the scene."""
        inv = ~self.affine
        xs, ys = zip(*(inv * (x, y) for x in bounds[::2] for y in bounds[1::2]))
        c0, r0 = max(0, int(np.floor(min(xs))) // 64 * 64), max(0, int(np.floor(min(ys))) // 64 * 64)
        c1 = min(self.width, -(-int(np.ceil(max(xs))) // 64) * 64)
        r1 = min(self.height, -(-int(np.ceil(max(ys))) // 64) * 64)
        return Window(c0, r0, c1 - c0, r1 - r0) if c1 > c0 and r1 > r0 else None

    def cropped(self, window: Window) -> "Scene":
        """This scene restricted to `window` of its grid (reads then fetch only those pixels)."""
        c, r = int(window.col_off), int(window.row_off)
        return replace(self, col_off=self.col_off + c, row_off=self.row_off + r, width=int(window.width),
                       height=int(window.height), transform=tuple(self.affine * Affine.translation(c, r))[:6])

    def _runs(self) -> list[tuple[BandSource, list[int]]]:
        """Consecutive sources from the same file, grouped so that one read fetches them all."""
        runs: list[tuple[BandSource, list[int]]] = []
        for src in self.sources:
            if runs and not src.warp and not runs[-1][0].warp and runs[-1][0].path == src.path:
                runs[-1][1].append(src.index)
            else:
                runs.append((src, [src.index]))
        return runs

    def _dataset(self, src: BandSource):
        if not src.warp:
            return open_dataset(src.path)
        return _open_warped(src.path, _stamp(src.path), threading.get_ident(), self.crs_wkt, self.transform, self.width, self.height,
                            src.resampling, self.nodata)

    def to_xarray(self, chunk: int = 1024):
        """Lazy (band, y, x) float32 DataArray with dask chunks of `chunk` pixels (a multiple
        of 64 and of the file's internal tiles), georeferenced with rioxarray."""
        import dask.array as da
        import rioxarray  # noqa: F401  (registers .rio)
        import xarray as xr

        chunk = aligned_chunk(chunk, self.block)
        chunks = ((len(self.bands),), _splits(self.height, chunk), _splits(self.width, chunk))

        def block(block_info=None):
            (_, _), (r0, r1), (c0, c1) = block_info[None]["array-location"]
            data, valid = self.read(Window(c0, r0, c1 - c0, r1 - r0))
            data[:, ~valid] = np.nan
            return data

        arr = da.map_blocks(block, chunks=chunks, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32))
        t = self.affine
        x = t.c + (np.arange(self.width) + 0.5) * t.a
        y = t.f + (np.arange(self.height) + 0.5) * t.e
        da_ = xr.DataArray(arr, dims=("band", "y", "x"), coords={"band": list(self.bands), "y": y, "x": x},
                           name="reflectance_dn")
        return da_.rio.write_crs(self.crs).rio.write_transform(t)


def _widen(start: int, stop: int, n: int, unit: int = 64) -> tuple[int, int]:
    """[start, stop) clipped to [0, n), widened to multiples of `unit` and to `unit` at least (an
    empty range stays empty)."""
    start, stop = max(0, start), min(n, stop)
    if stop <= start:
        return 0, 0
    start, stop = start // unit * unit, min(n, -(-stop // unit) * unit)
    return (max(0, stop - unit), stop) if stop - start < unit else (start, stop)


def aligned_chunk(chunk: int, block: int) -> int:
    """Smallest multiple of both 64 and the file's tile size that is >= `chunk`."""
    unit = np.lcm(64, max(int(block), 1))
    if unit > 4096:  # striped files: rows of the full width, any multiple of 64 will do
        unit = 64
    return int(max(unit, -(-chunk // unit) * unit))


def _splits(n: int, size: int) -> tuple[int, ...]:
    return tuple(min(size, n - i) for i in range(0, n, size))


def is_url(p: str) -> bool:
    return str(p).startswith(("http://", "https://"))


def input_path(p: str | os.PathLike) -> str:
    """How run.json names an input: a URL as it is, a file or folder by its absolute path."""
    return str(p) if is_url(str(p)) else os.path.abspath(p)


def _stamp(path: str) -> tuple[int, int]:
    """(size, mtime) of the file behind a GDAL path (the .zip of a /vsizip/ path)."""
    if path.startswith("/vsizip/"):
        path = path[len("/vsizip/"):path.lower().index(".zip/") + 4]
    try:
        st = os.stat(path)
    except OSError:
        return 0, 0
    return st.st_size, st.st_mtime_ns


def open_dataset(path: str, stamp: tuple[int, int] | None = None):
    """An open dataset, cached per thread (GDAL handles are not thread-safe; a Dask worker thread
    reads many chunks of one file); a file rewritten since (other size or mtime) is opened afresh,
    never read through a stale handle."""
    return _open_stamped(path, stamp or _stamp(path), threading.get_ident())


@functools.lru_cache(maxsize=256)
def _open_stamped(path: str, stamp: tuple[int, int], thread: int):
    if path.startswith(("/vsicurl/", "/vsis3/")):  # no probing for side-car files (.aux.xml, .msk, ...):
        with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):  # nine 404s per COG otherwise
            return rasterio.open(path)
    return rasterio.open(path)


@functools.lru_cache(maxsize=64)
def stored_blocks(path: str, stamp: tuple[int, int], bidx: int) -> np.ndarray:
    """Per block (or strip) of band `bidx` of a GeoTIFF, whether the file stores it (rows, cols of
    blocks): asked once per file version, each block once, however many chunks share it (a striped
    file's strips span every chunk of their row)."""
    ds = open_dataset(path, stamp)
    (bh, bw), (h, w) = ds.block_shapes[bidx - 1], ds.shape
    rows, cols = -(-h // bh), -(-w // bw)
    return np.array([[ds.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=bidx) is not None for c in range(cols)]
                     for r in range(rows)], dtype=bool).reshape(rows, cols)


@functools.lru_cache(maxsize=256)
def _open_warped(path, stamp, thread, crs_wkt, transform, width, height, resampling, nodata):
    return WarpedVRT(open_dataset(path, stamp), crs=CRS.from_wkt(crs_wkt), transform=Affine(*transform[:6]),
                     width=width, height=height, resampling=Resampling[resampling],
                     src_nodata=nodata, nodata=nodata)


def crop_to(scene: Scene, bbox: tuple[float, float, float, float], bbox_crs: str, path: str) -> tuple[Scene, Window]:
    """`scene` cropped to the 64 px blocks that cover `bbox` (in `bbox_crs`), and that window of its grid."""
    from rasterio.warp import transform_bounds

    try:
        bounds = transform_bounds(CRS.from_user_input(bbox_crs), scene.crs, *bbox, densify_pts=21)
    except Exception as e:  # an unknown CRS, a bbox that does not project
        raise AtlasError(f"{path}: cannot place the AOI bounds {bbox} ({bbox_crs}) on the scene ({e})") from None
    window = scene.window_of(bounds)
    if window is None or window.width < 64 or window.height < 64:
        raise AtlasError(f"{path}: the AOI {tuple(round(v, 6) for v in bbox)} ({bbox_crs}) does not overlap the "
                         "scene by a whole 64 x 64 patch")
    return scene.cropped(window), window


#: pixel sizes (m) taken as Sentinel-2's 10 m grid: a reprojected scene is rarely exactly 10 m
PIXEL_M = (9.0, 11.0)
#: largest departure of the CRS's areal scale from 1 at the scene's centre: UTM keeps within 0.2 % over
#: its zone, national conformal and equal-area CRSs within a few tenths of a percent; Web Mercator is
#: 2 at 45 degrees of latitude
AREAL_SCALE_TOLERANCE = 0.02
#: a float raster whose brightest 1 % stays at or below this is reflectance (0-1; snow and cloud reach
#: 1-1.5), not digital numbers (those are reflectance x 10000)
REFLECTANCE_MAX = 2.0


def areal_scale(crs: CRS, xy: tuple[float, float]) -> float:
    """How much the projected `crs` enlarges areas at `xy` (its own coordinates): 1 on an equal-area or
    true-scale grid; NaN where PROJ cannot say."""
    from pyproj import CRS as ProjCRS
    from pyproj import Proj, Transformer
    from pyproj.exceptions import CRSError as ProjCRSError

    try:
        own = ProjCRS.from_wkt(crs.to_wkt())
        lon, lat = Transformer.from_crs(own, 4326, always_xy=True).transform(*xy)
        return float(Proj(own).get_factors(lon, lat).areal_scale)
    except (ProjCRSError, ValueError, RuntimeError):
        return float("nan")


def check_grid(p: str, ds) -> None:
    """AtlasError unless the raster has a projected CRS in metres that keeps areas at the scene
    (AREAL_SCALE_TOLERANCE), a north-up grid, pixels of about 10 m (PIXEL_M) and digital numbers
    (check_scale)."""
    if ds.crs is None and ds.gcps[0]:
        raise AtlasError(f"{p}: georeferenced by {len(ds.gcps[0])} ground control points only, not on a grid; "
                         "warp it onto one (gdalwarp -t_srs EPSG:326NN -tr 10 10 IN OUT) first")
    if ds.crs is None:
        raise AtlasError(f"{p}: the raster has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:32632) first")
    if ds.crs.is_geographic:
        raise AtlasError(f"{p}: geographic CRS ({ds.crs.to_string()}, degrees) cannot give areas in hectares; "
                         "reproject it to a projected CRS such as UTM (gdalwarp -t_srs EPSG:326NN) first")
    try:
        unit, to_metre = ds.crs.linear_units_factor
    except CRSError:  # a projected CRS whose WKT names no linear unit
        unit, to_metre = "an unnamed unit", float("nan")
    if not abs(to_metre - 1.0) < 1e-9:  # also NaN
        raise AtlasError(f"{p}: its CRS ({ds.crs.to_string()}) measures in {unit}, not metres: map cells and "
                         "hectares are in metres; reproject it (gdalwarp -t_srs EPSG:326NN -tr 10 10) first")
    t = ds.transform
    if t.b != 0 or t.d != 0:
        raise AtlasError(f"{p}: its grid is rotated (not north-up), so its pixels are no map cells; warp it "
                         f"north-up (gdalwarp -t_srs {ds.crs.to_string()} -tr 10 10 IN OUT) first")
    areal = areal_scale(ds.crs, t * (ds.width / 2, ds.height / 2))
    if not abs(areal - 1.0) <= AREAL_SCALE_TOLERANCE:  # also NaN
        raise AtlasError(f"{p}: its CRS ({ds.crs.to_string()}) stretches areas {areal:.3g}x at the scene (its "
                         f"{abs(t.a):g} m pixels are {abs(t.a) / areal ** 0.5:.3g} m on the ground): hectares and "
                         "the 10 m patch scale would be wrong; reproject it to UTM or an equal-area CRS (gdalwarp "
                         "-t_srs EPSG:326NN -tr 10 10) first")
    if not (PIXEL_M[0] <= abs(t.a) <= PIXEL_M[1] and PIXEL_M[0] <= abs(t.e) <= PIXEL_M[1]):
        raise AtlasError(f"{p}: {abs(t.a):g} x {abs(t.e):g} m pixels; the models read 64 x 64 patches of "
                         "Sentinel-2's 10 m grid (EuroSAT's): resample it to 10 m (gdalwarp -tr 10 10 -r "
                         "bilinear) first")
    check_scale(p, ds)


def date_from_name(p: str) -> str | None:
    m = re.search(r"_(\d{8})T\d{4,6}_", os.path.basename(p.rstrip("/")))
    return metadata_date(m[1]) if m else None


#: the 10 m bands whose darkest pixels tell whether a product carries the +1000 DN offset
OFFSET_BANDS = ("B02", "B03", "B04", "B08")


def sample_pixels(ds, index: int) -> np.ndarray:
    """Valid (finite, non-zero) pixels of band `index` of an open raster, cheaply (sample_band)."""
    v = sample_band(ds, index)
    return v[(v != 0) & np.isfinite(v)]


def sample_band(ds, index: int) -> np.ndarray:
    """Pixels of band `index` of an open raster, cheaply, the same places for every band: the whole band
    from its coarsest overview of at least 256 px where the file has overviews (a COG: a few blocks over
    HTTP), else 9 windows of 256 x 256 spread over it; none where they cannot be read."""
    levels = [f for f in ds.overviews(index) if min(ds.height, ds.width) // f >= 256]
    try:
        if levels:
            vals = [ds.read(index, out_shape=(ds.height // levels[-1], ds.width // levels[-1]))]
        else:
            h, w = min(256, ds.height), min(256, ds.width)
            vals = [ds.read(index, window=Window(c, r, w, h)) for r in np.linspace(0, ds.height - h, 3).astype(int)
                    for c in np.linspace(0, ds.width - w, 3).astype(int)]
    except RasterioIOError:  # a damaged file: the sample says nothing; the read of the pixels names the fault
        return np.empty(0)
    return np.concatenate([x.ravel() for x in vals])


def check_scale(p: str, ds) -> None:
    """AtlasError where the raster's pixels cannot be Sentinel-2 digital numbers (reflectance x 10000,
    16-bit): 8-bit pixels (a rendered image), or floats no larger than reflectance (0-1)."""
    kind = np.dtype(ds.dtypes[0])
    if kind.itemsize == 1:
        raise AtlasError(f"{p}: 8-bit pixels (0-255): a rendered image, not Sentinel-2 digital numbers "
                         "(reflectance x 10000, 16-bit); export the bands themselves")
    if kind.kind == "f":
        v = sample_pixels(ds, 1)
        top = float(np.percentile(v, 99)) if v.size else None
        if top is not None and top <= REFLECTANCE_MAX:
            raise AtlasError(f"{p}: its pixels are reflectance (99 % at or below {top:.3g}), not digital numbers "
                             "(reflectance x 10000): scale them first, e.g. gdal_calc.py -A IN --allBands=A "
                             "--calc='A*10000' --type=UInt16 --outfile=OUT")


def check_offset(offset: float, said: str, bands: list[tuple[str, int]]) -> tuple[float, str]:
    """Cross-check a claimed offset (-1000: baseline >= 04.00 added 1000 to every DN) against the
    pixels, since catalogue and product flags are sometimes wrong: with the offset, no valid pixel
    is below 1000 DN (reflectance 0). When the darkest 1 % of a 10 m band's pixels (sample_pixels)
    lies below 1000 DN, the offset is not there; with no offset claimed and none of them below 1000,
    a warning says that a lost flag is likely (not acted on: a bright desert or snowfield looks the
    same). -> (offset, how)."""
    dark = []
    for path, index in bands:
        v = sample_pixels(open_dataset(path), index)
        if v.size:
            dark.append(float(np.percentile(v, 1)))
    if not offset:
        if dark and min(dark) >= 1000:
            warnings.warn(f"{bands[0][0]}: no offset ({said}), yet the darkest 1 % of its 10 m pixels is at "
                          f"{min(dark):.0f} DN, where reflectance would be 0.1: if it comes from a product of "
                          "processing baseline 04.00 or later (2022 on) whose offset flag was lost, pass "
                          "--offset -1000", AtlasWarning, stacklevel=3)
        return 0.0, f"no offset ({said})"
    if dark and min(dark) < 1000:
        return 0.0, (f"{said} implies {offset:+g} DN, but the darkest 1 % of its pixels are at {min(dark):.0f} DN, "
                     "below the offset's floor of 1000: no offset applied")
    return offset, f"{offset:+g} DN ({said}; the pixels agree: darkest 1 % at " + (
        f"{min(dark):.0f} DN)" if dark else "no valid pixel read)")
