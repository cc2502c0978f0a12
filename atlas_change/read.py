"""Read stage: open a multi-band GeoTIFF/COG or a Sentinel-2 SAFE product (folder or .zip) as a
`Scene` on one 10 m grid, and read windows of it in the model's band order.

Nothing here reads the whole scene: `Scene.read(window)` reads one window (GDAL resamples the
20 m / 60 m bands onto the 10 m grid through a WarpedVRT), and `open_scene(...).to_xarray()`
gives a lazy, dask-chunked DataArray built on the same reader.
"""
from __future__ import annotations

import functools
import json
import os
import re
import threading
import warnings
import xml.etree.ElementTree as ET
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from .bands import EUROSAT_ORDER, S2_BANDS, default_order, normalise_band, parse_bands
from .dates import metadata_date
from .errors import AtlasError

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
    """A scene on one grid, with the sources of the bands a model needs, in the model's order."""

    path: str
    kind: str  # "geotiff", "safe" or "band-files"
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
            data = self._dataset(src).read(indexes, window=window, **kw)
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
        GDAL's TIFF directory (BLOCK_OFFSET_x_y), not the pixels; True for other formats."""
        for src, _ in self._runs():
            ds = self._dataset(src)
            if src.warp or ds.driver != "GTiff":
                continue
            bh, bw = ds.block_shapes[0]
            r0, c0 = int(window.row_off) // bh, int(window.col_off) // bw
            r1 = (int(window.row_off + window.height) - 1) // bh
            c1 = (int(window.col_off + window.width) - 1) // bw
            if not any(ds.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=src.index) is not None
                       for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)):
                return False
        return True

    def read_scl(self, window: Window) -> np.ndarray:
        """The L2A scene classification (SCL) of `window` on the 10 m grid (nearest neighbour)."""
        return self._dataset(self.mask).read(self.mask.index, window=window)

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
            return _open(src.path)
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


def aligned_chunk(chunk: int, block: int) -> int:
    """Smallest multiple of both 64 and the file's tile size that is >= `chunk`."""
    unit = np.lcm(64, max(int(block), 1))
    if unit > 4096:  # striped files: rows of the full width, any multiple of 64 will do
        unit = 64
    return int(max(unit, -(-chunk // unit) * unit))


def _splits(n: int, size: int) -> tuple[int, ...]:
    return tuple(min(size, n - i) for i in range(0, n, size))


def _stamp(path: str) -> tuple[int, int]:
    """(size, mtime) of the file behind a GDAL path (the .zip of a /vsizip/ path)."""
    if path.startswith("/vsizip/"):
        path = path[len("/vsizip/"):path.lower().index(".zip/") + 4]
    try:
        st = os.stat(path)
    except OSError:
        return 0, 0
    return st.st_size, st.st_mtime_ns


def _open(path: str, stamp: tuple[int, int] | None = None):
    """An open dataset, cached per thread (GDAL handles are not thread-safe; a Dask worker thread
    reads many chunks of one file); a file rewritten since (other size or mtime) is opened afresh,
    never read through a stale handle."""
    return _open_stamped(path, stamp or _stamp(path), threading.get_ident())


@functools.lru_cache(maxsize=256)
def _open_stamped(path: str, stamp: tuple[int, int], thread: int):
    return rasterio.open(path)


@functools.lru_cache(maxsize=256)
def _open_warped(path, stamp, thread, crs_wkt, transform, width, height, resampling, nodata):
    return WarpedVRT(_open(path, stamp), crs=CRS.from_wkt(crs_wkt), transform=Affine(*transform[:6]),
                     width=width, height=height, resampling=Resampling[resampling],
                     src_nodata=nodata, nodata=nodata)


def open_scene(path: str | os.PathLike, model_bands: tuple[str, ...] = EUROSAT_ORDER,
               bands: str | tuple[str, ...] | None = None, offset: float | None = None) -> Scene:
    """Open a GeoTIFF/COG or a SAFE product (folder or .zip) for a model that needs `model_bands`.

    `bands` names the file's bands in order when the file does not say (GeoTIFF only);
    `offset` overrides the digital-number offset read from the metadata.
    Raises AtlasError with a one-line message naming the file and the problem.
    """
    p = str(path)
    if not os.path.exists(p):
        raise AtlasError(f"{p}: no such file or folder")
    if os.path.isdir(p) or p.lower().endswith(".zip"):
        scene = _open_safe(p, model_bands)
    else:
        scene = _open_geotiff(p, model_bands, bands)
    if offset is not None:
        scene = replace(scene, offset=float(offset), offset_how="--offset")
    return scene


def _check_grid(p: str, ds) -> None:
    if ds.crs is None:
        raise AtlasError(f"{p}: the raster has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:32632) first")
    if ds.crs.is_geographic:
        raise AtlasError(f"{p}: geographic CRS ({ds.crs.to_string()}, degrees) cannot give areas in hectares; "
                         "reproject it to a projected CRS such as UTM (gdalwarp -t_srs EPSG:326NN) first")
    t = ds.transform
    if t.b != 0 or t.d != 0:
        raise AtlasError(f"{p}: rotated grids are not supported")


def _open_geotiff(p: str, model_bands, bands) -> Scene:
    try:
        with warnings.catch_warnings():  # a missing CRS/transform is reported below as an error
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(p)
    except RasterioIOError as e:
        raise AtlasError(f"{p}: not a readable raster ({str(e).splitlines()[0]})") from None
    with ds:
        _check_grid(p, ds)
        names, how = _file_band_names(p, ds, bands)
        idx = _select(p, names, model_bands)
        tags = ds.tags()
        key = next((k for k in ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET") if k in tags), None)
        off, off_how = _check_offset(float(tags[key]) if key else 0.0, f"the {key} tag",
                                     [(p, names.index(b) + 1) for b in OFFSET_BANDS if b in names])
        level = tags.get("PROCESSING_LEVEL") or ("L2A" if len(names) == 12 and "B10" not in names else None)
        date = metadata_date(tags.get("DATE")) or metadata_date(tags.get("TIFFTAG_DATETIME")) or _date_from_name(p)
        try:  # a truncated or corrupt file often opens but fails on the first read of a block
            ds.read(1, window=Window(0, 0, min(ds.width, 1), min(ds.height, 1)))
        except RasterioIOError as e:
            raise AtlasError(f"{p}: cannot read pixels ({str(e).splitlines()[0]})") from None
        return Scene(
            path=p, kind="geotiff", level=level, bands=tuple(model_bands),
            sources=tuple(BandSource(p, i + 1) for i in idx),
            crs_wkt=ds.crs.to_wkt(), transform=tuple(ds.transform)[:6], width=ds.width, height=ds.height,
            block=ds.block_shapes[0][1], offset=off, offset_how=off_how,
            nodata=float(ds.nodata if ds.nodata is not None else 0),
            date=date, band_mapping={b: f"band {i + 1} ({how})" for b, i in zip(model_bands, idx)},
            available=names,
        )


def _file_band_names(p: str, ds, bands) -> tuple[tuple[str, ...], str]:
    """Band identity: user's --bands, else band descriptions, else the band count."""
    if bands:
        names = parse_bands(bands) if isinstance(bands, str) else tuple(normalise_band(b) for b in bands)
        if len(names) != ds.count:
            raise AtlasError(f"{p}: --bands names {len(names)} bands but the file has {ds.count}")
        return names, "--bands"
    desc = ds.descriptions
    if all(desc):
        try:
            names = tuple(normalise_band(d) for d in desc)
            if len(set(names)) == len(names):
                return names, "band description"
        except AtlasError:
            pass
    names = default_order(ds.count)
    if names is None:
        raise AtlasError(f"{p}: {ds.count} bands without Sentinel-2 band descriptions; "
                         "name them with --bands B02,B03,... (13 = EuroSAT/L1C order, 12 = L2A order)")
    return names, f"{ds.count}-band default order"


def _select(p: str, names: tuple[str, ...], model_bands) -> list[int]:
    missing = [b for b in model_bands if b not in names]
    if missing:
        raise AtlasError(f"{p}: lacks band(s) {', '.join(missing)} that the model needs "
                         f"(file has {', '.join(names)})")
    return [names.index(b) for b in model_bands]


# --- SAFE products ----------------------------------------------------------------------------

_JP2_RE = re.compile(r"IMG_DATA/(?:R(10|20|60)m/)?[^/]*_(B\d\d|B8A|SCL)(?:_(10|20|60)m)?\.jp2$", re.I)
_MTD_RE = re.compile(r"(^|/)MTD_MSIL(1C|2A)\.xml$")
#: a folder of one GeoTIFF per band: BigEarthNet-S2 (<patch>_B02.tif), Major TOM (B02.tif), SSL4EO-S12 (B2.tif),
#: with an optional SCL.tif; same groups as _JP2_RE
_TIF_RE = re.compile(r"()(?:^|/)(?:[^/]*_)?(B\d\d?|B8A|SCL)()\.tiff?$", re.I)


def _date_from_name(p: str) -> str | None:
    m = re.search(r"_(\d{8})T\d{4,6}_", os.path.basename(p.rstrip("/")))
    return metadata_date(m[1]) if m else None


def _safe_listing(p: str) -> tuple[list[str], callable, callable]:
    """(relative names, name -> GDAL path, name -> bytes) for a SAFE folder or zip."""
    if os.path.isdir(p):
        root = Path(p)
        names = [f.relative_to(root).as_posix() for f in root.rglob("*") if f.is_file()]
        return names, lambda n: str(root / n), lambda n: (root / n).read_bytes()
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as e:
        raise AtlasError(f"{p}: not a zip archive, or a damaged one ({_zip_problem(e)}); expected a zipped "
                         "Sentinel-2 .SAFE product") from None
    absp = os.path.abspath(p)

    def read(name: str) -> bytes:
        try:
            return zf.read(name)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
            raise AtlasError(f"{p}: damaged zip archive: cannot extract {name} ({_zip_problem(e)})") from None

    return zf.namelist(), lambda n: f"/vsizip/{absp}/{n}", read


def _zip_problem(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:120] or type(e).__name__


def _open_safe(p: str, model_bands) -> Scene:
    """A SAFE product (folder or zip), or a folder of one GeoTIFF per band (BigEarthNet layout:
    no metadata, so the level comes from the name and no offset is applied unless --offset)."""
    names, gdal_path, read_bytes = _safe_listing(p)
    mtd = [n for n in names if _MTD_RE.search(n)]
    band_re = _JP2_RE
    if mtd:
        kind, level = "safe", "L" + _MTD_RE.search(mtd[0]).group(2)
        offsets, baseline = _safe_offsets(p, read_bytes(mtd[0]))
    elif os.path.isdir(p) and any(_TIF_RE.search(n) for n in names):
        band_re, kind = _TIF_RE, "band-files"
        level, baseline = _folder_product(p, read_bytes if "metadata.json" in names else None)
        offsets = dict.fromkeys(S2_BANDS, -1000.0) if baseline >= "04.00" and baseline[:1].isdigit() else {}
        baseline += " (from the product name)" if baseline[:1].isdigit() else ""
    else:
        raise AtlasError(f"{p}: not a Sentinel-2 SAFE product (no MTD_MSIL1C.xml / MTD_MSIL2A.xml inside) "
                         "nor a folder of one GeoTIFF per band (B02.tif, B2.tif or *_B02.tif, ...)")
    files: dict[str, tuple[int, str]] = {}  # band -> (resolution, name), finest resolution wins
    for n in names:
        m = band_re.search(n)
        if m:
            try:
                band = m.group(2).upper() if m.group(2).upper() == "SCL" else normalise_band(m.group(2))
            except AtlasError:  # B13.tif and the like: not a Sentinel-2 band
                continue
            res = int(m.group(1) or m.group(3) or 0)
            if band not in files or (res and res < files[band][0]):
                files[band] = (res, n)
    missing = [b for b in model_bands if b not in files]
    if missing:
        raise AtlasError(f"{p}: {level or 'the'} product lacks band(s) {', '.join(missing)} that the model needs"
                         + (" (L2A has no B10: use a model without it, such as spectrumnet-rgb)"
                            if "B10" in missing and level == "L2A" else ""))
    ref_band = next((b for b in ("B02", "B03", "B04", "B08") if b in files), None)
    if ref_band is None:
        raise AtlasError(f"{p}: no 10 m band (B02, B03, B04 or B08) to set the grid")
    ref_path = gdal_path(files[ref_band][1])
    try:
        ref = _open(ref_path)
    except RasterioIOError as e:
        raise AtlasError(f"{p}: cannot read {files[ref_band][1]} ({str(e).splitlines()[0]})") from None
    _check_grid(p, ref)
    transform = tuple(ref.transform)[:6]

    def source(name: str, resampling: str) -> BandSource:
        path = gdal_path(name)
        try:
            ds = _open(path)
        except RasterioIOError as e:
            raise AtlasError(f"{p}: cannot read {name} ({str(e).splitlines()[0]})") from None
        same = tuple(ds.transform)[:6] == transform and ds.shape == ref.shape
        return BandSource(path, 1, warp=not same, resampling=resampling)

    sources = tuple(source(files[b][1], "bilinear") for b in model_bands)
    used = {offsets.get(b, 0.0) for b in model_bands}
    if len(used) > 1:
        raise AtlasError(f"{p}: bands have different add-offsets {sorted(used)}; not supported")
    offset, offset_how = _check_offset(used.pop() if used else 0.0, f"baseline {baseline}",
                                       [(gdal_path(files[b][1]), 1) for b in OFFSET_BANDS if b in files])
    mask = source(files["SCL"][1], "nearest") if "SCL" in files else None
    return Scene(
        path=p, kind=kind, level=level, bands=tuple(model_bands), sources=sources,
        crs_wkt=ref.crs.to_wkt(), transform=transform, width=ref.width, height=ref.height,
        block=ref.block_shapes[0][1], offset=offset, offset_how=offset_how, nodata=0.0, mask=mask,
        available=tuple(b for b in S2_BANDS if b in files),
        date=_date_from_name(p),
        band_mapping={b: f"{os.path.basename(files[b][1])} ({f'{files[b][0]} m' if files[b][0] else 'own grid'}"
                         f"{', resampled to 10 m' if s.warp else ''}); baseline {baseline}"
                      for b, s in zip(model_bands, sources)},
    )


#: the 10 m bands whose darkest pixels tell whether a product carries the +1000 DN offset
OFFSET_BANDS = ("B02", "B03", "B04", "B08")


def _check_offset(offset: float, said: str, bands: list[tuple[str, int]]) -> tuple[float, str]:
    """Cross-check a claimed offset (-1000: baseline >= 04.00 added 1000 to every DN) against the
    pixels, since catalogue and product flags are sometimes wrong: with the offset, no valid pixel
    is below 1000 DN (reflectance 0). Reads 9 windows of 256 x 256 spread over the scene; when the
    darkest 1 % of a 10 m band lies below 1000 DN, the offset is not there. -> (offset, how)."""
    if not offset:
        return 0.0, f"no offset ({said})"
    dark = []
    for path, index in bands:
        ds = _open(path)
        h, w = min(256, ds.height), min(256, ds.width)
        vals = [ds.read(index, window=Window(c, r, w, h)) for r in np.linspace(0, ds.height - h, 3).astype(int)
                for c in np.linspace(0, ds.width - w, 3).astype(int)]
        v = np.concatenate([x.ravel() for x in vals])
        v = v[(v != 0) & np.isfinite(v)]
        if v.size:
            dark.append(float(np.percentile(v, 1)))
    if dark and min(dark) < 1000:
        return 0.0, (f"{said} implies {offset:+g} DN, but the darkest 1 % of its pixels are at {min(dark):.0f} DN, "
                     "below the offset's floor of 1000: no offset applied")
    return offset, f"{offset:+g} DN ({said}; the pixels agree: darkest 1 % at " + (
        f"{min(dark):.0f} DN)" if dark else "no valid pixel read)")


def _folder_product(p: str, read_json) -> tuple[str | None, str]:
    """(level, processing baseline) of a band folder, from the product name in the folder's name
    (S2B_MSIL2A_20200223T032739_N9999_...) or in its metadata.json (SSL4EO-S12: PRODUCT_ID,
    PROCESSING_BASELINE); baseline 'unknown (...)' where neither says."""
    text = os.path.basename(os.path.abspath(p))
    meta = {}
    if read_json is not None:
        try:
            meta = json.loads(read_json("metadata.json"))
        except (ValueError, OSError, AtlasError):
            meta = {}
        text += " " + str(meta.get("PRODUCT_ID", ""))
    m = re.search(r"MSIL(1C|2A)", text)
    b = re.search(r"_N(\d{2})(\d{2})_", text)
    baseline = (str(meta["PROCESSING_BASELINE"]) if meta.get("PROCESSING_BASELINE")
                else f"{b[1]}.{b[2]}" if b else "unknown (no product metadata)")
    return (f"L{m[1]}" if m else None), baseline


def _safe_offsets(p: str, xml_bytes: bytes) -> tuple[dict[str, float], str]:
    """Per-band add-offset (RADIO_ADD_OFFSET for L1C, BOA_ADD_OFFSET for L2A) and the baseline."""
    try:
        root = ET.fromstring(xml_bytes)
    except ET.ParseError as e:
        raise AtlasError(f"{p}: product metadata XML is malformed ({e})") from None
    local = {el.tag.rsplit("}", 1)[-1]: el for el in root.iter()}
    baseline = (local["PROCESSING_BASELINE"].text or "").strip() if "PROCESSING_BASELINE" in local else "unknown"
    band_ids = {el.get("bandId"): el.get("physicalBand") for el in root.iter()
                if el.tag.rsplit("}", 1)[-1] == "Spectral_Information" and el.get("bandId")}
    offsets: dict[str, float] = {}
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] in ("RADIO_ADD_OFFSET", "BOA_ADD_OFFSET"):
            bid = el.get("band_id")
            name = band_ids.get(bid) or (S2_BANDS[int(bid)] if bid and bid.isdigit() and int(bid) < 13 else None)
            if name:
                offsets[normalise_band(name)] = float(el.text)
    return offsets, baseline
