"""Outputs, shared by every stage: the one place that writes rasters (Cloud-Optimized GeoTIFFs with
their legends), JSON, CSV and GeoParquet, all-or-nothing, and reads them back; the class map's
Dataset and cell table from cell probabilities; the lock of an output folder."""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import rasterio.shutil
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import RasterioError
import rasterio.windows

from .classes import CLASSES, COLOURS, GROUP_NAMES, NODATA_ID, group_of
from .errors import AtlasError


def build_dataset(cell_probs: np.ndarray, has: np.ndarray, transform: Affine, crs: CRS, attrs: dict,
                  cloud: np.ndarray | None = None, snow: np.ndarray | None = None) -> xr.Dataset:
    """(rows, cols, classes) probabilities + data mask -> Dataset with `lulc` (uint8 ids 1..10,
    0 = nodata), `confidence` (top-1 probability, NaN = nodata), `probabilities`, `cloud` and `snow`
    (uint8: 1 = left unlabelled because of cloud or shadow / snow or ice, else 0)."""
    rows, cols, n = cell_probs.shape
    lulc = np.where(has, cell_probs.argmax(axis=-1) + 1, NODATA_ID).astype(np.uint8)
    conf = np.where(has, cell_probs.max(axis=-1, initial=0.0), np.nan).astype(np.float32)
    probs = np.where(has[..., None], cell_probs, np.nan).transpose(2, 0, 1)
    x = transform.c + (np.arange(cols) + 0.5) * transform.a
    y = transform.f + (np.arange(rows) + 0.5) * transform.e
    ds = xr.Dataset(
        {"lulc": (("y", "x"), lulc), "confidence": (("y", "x"), conf),
         "probabilities": (("class", "y", "x"), probs),
         "cloud": (("y", "x"), np.zeros((rows, cols), np.uint8) if cloud is None else cloud.astype(np.uint8)),
         "snow": (("y", "x"), np.zeros((rows, cols), np.uint8) if snow is None else snow.astype(np.uint8))},
        coords={"y": y, "x": x, "class": list(CLASSES)},
        attrs=attrs,
    )
    ds["lulc"].attrs.update(class_ids={c: i + 1 for i, c in enumerate(CLASSES)})
    ds["lulc"] = ds["lulc"].rio.write_nodata(NODATA_ID, encoded=False)  # ds.lulc.rio.nodata == 0
    ds["confidence"] = ds["confidence"].rio.write_nodata(np.nan, encoded=False)
    ds["probabilities"] = ds["probabilities"].rio.write_nodata(np.nan, encoded=False)
    return ds.rio.write_crs(crs).rio.write_transform(transform)  # ds.rio.crs / .rio.transform()


def cell_boxes(t: Affine, r: np.ndarray, c: np.ndarray):
    """The cells at rows `r`, cols `c` of the grid `t` as shapely polygons."""
    import shapely

    x0, y0 = t.c + c * t.a, t.f + r * t.e
    return shapely.box(x0, y0 + t.e, x0 + t.a, y0)


def cell_polygons(t: Affine, crs: CRS, r: np.ndarray, c: np.ndarray, columns: dict):
    """The cells at rows `r`, cols `c` of the grid `t` as a GeoDataFrame: row, col, `columns`, hectares."""
    import geopandas as gpd

    return gpd.GeoDataFrame({"row": r.astype(np.int32), "col": c.astype(np.int32), **columns,
                             "hectares": np.full(len(r), abs(t.a * t.e) / 1e4)}, geometry=cell_boxes(t, r, c), crs=crs)


def class_columns(cls: np.ndarray) -> dict:
    """class_id (as given), class_name and group of class ids 1..10."""
    return {"class_id": cls, "class_name": np.asarray(CLASSES, dtype=object)[cls.astype(int) - 1],
            "group": np.asarray(GROUP_NAMES, dtype=object)[group_of(cls) - 1]}


def cells_frame(ds: xr.Dataset, rows: slice = slice(None)):
    """One row per labelled map cell (no overlap; the cells every hectare figure counts): row, col,
    polygon, class, group, confidence, the class probabilities, hectares; of the map `rows` only."""
    r0 = rows.start or 0
    lulc = ds["lulc"].values[rows]
    r, c = np.nonzero(lulc)
    p = ds["probabilities"].values[:, rows][:, r, c].T
    columns = {**class_columns(lulc[r, c].astype(np.uint8)),
               "confidence": ds["confidence"].values[rows][r, c].astype(np.float32),
               **{f"p_{name}": p[:, i].astype(np.float32) for i, name in enumerate(CLASSES)}}
    return cell_polygons(ds.rio.transform(), ds.rio.crs, r + r0, c, columns)


#: cells.parquet is written this many cells (whole map rows) at a time, one row group each
CELLS_PER_PART = 200_000


class CellsWriter:
    """cells.parquet (GeoParquet) written a part at a time (`add(frame)`: cells_frame rows), one row
    group each, so that its polygons are never held for the whole map; `bbox` (minx, miny, maxx,
    maxy), what the "geo" metadata says the cells lie in (written first, so known before them)."""

    def __init__(self, path: Path, bbox: tuple[float, float, float, float]):
        self.path, self.bbox, self.writer, self.first = Path(path), [float(v) for v in bbox], None, None

    def add(self, frame) -> None:
        from geopandas.io.arrow import _geopandas_to_arrow
        import pyarrow.parquet as pq

        if self.first is None:
            self.first = frame
        if frame.empty:
            return
        table = _geopandas_to_arrow(frame, index=False)
        try:
            if self.writer is None:
                geo = json.loads(table.schema.metadata[b"geo"])
                geo["columns"]["geometry"]["bbox"] = self.bbox
                self.writer = pq.ParquetWriter(self.path, table.schema.with_metadata(
                    {**table.schema.metadata, b"geo": json.dumps(geo).encode()}))
            self.writer.write_table(table.cast(self.writer.schema))
        except OSError as e:  # a full disk, a lost mount
            raise AtlasError(f"{self.path}: cannot write ({e.strerror or str(e).splitlines()[0][:160]})") from None

    def close(self) -> None:
        try:
            if self.writer is None:  # no labelled cell: the (empty) table as geopandas writes it
                self.first.to_parquet(self.path, index=False)
            else:
                self.writer.close()
        except OSError as e:
            raise AtlasError(f"{self.path}: cannot write ({e.strerror or str(e).splitlines()[0][:160]})") from None


def map_bounds(transform: Affine, rows: slice, cols: slice) -> tuple[float, float, float, float]:
    """(minx, miny, maxx, maxy) of the cells rows x cols of the grid `transform`."""
    xs = (transform.c + cols.start * transform.a, transform.c + cols.stop * transform.a)
    ys = (transform.f + rows.start * transform.e, transform.f + rows.stop * transform.e)
    return min(xs), min(ys), max(xs), max(ys)


def labelled_bounds(ds: xr.Dataset) -> tuple[float, float, float, float]:
    """The bounds of a map's labelled cells (its whole extent when none is)."""
    lulc = ds["lulc"].values
    rows, cols = np.flatnonzero(lulc.any(axis=1)), np.flatnonzero(lulc.any(axis=0))
    if not rows.size:
        return map_bounds(ds.rio.transform(), slice(0, lulc.shape[0]), slice(0, lulc.shape[1]))
    return map_bounds(ds.rio.transform(), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))


def add_cells(cells: CellsWriter, ds: xr.Dataset, row0: int = 0, per_part: int = CELLS_PER_PART) -> None:
    """The labelled cells of `ds` into `cells`, a part of whole rows at a time, their rows counted
    from `row0` (where `ds` starts in the whole map)."""
    step = max(1, per_part // max(1, ds.sizes["x"]))
    for r in range(0, max(1, ds.sizes["y"]), step):
        frame = cells_frame(ds, slice(r, r + step))
        frame["row"] += np.int32(row0)
        cells.add(frame)


def write_cells(path: Path, ds: xr.Dataset, per_part: int = CELLS_PER_PART) -> None:
    """cells.parquet of a whole map, built and written a band of map rows at a time."""
    w = CellsWriter(path, labelled_bounds(ds))
    add_cells(w, ds, 0, per_part)
    w.close()


#: cloud.tif values: 0 = no data (outside the scene, or too much nodata to label), 1 = clear (labelled),
#: 2 = not labelled because of cloud or cloud shadow, 3 = not labelled because of snow or ice
SKY_NODATA, SKY_CLEAR, SKY_CLOUD, SKY_SNOW = 0, 1, 2, 3
CLOUD_DOC = ("0 = nodata (outside the scene), 1 = clear (labelled), 2 = not labelled: cloud or cloud shadow "
             "(run.json clouds), 3 = not labelled: snow or ice (run.json surface)")
SKY_CATEGORIES = {SKY_NODATA: ("nodata", (0, 0, 0)), SKY_CLEAR: ("clear", (200, 200, 200)),
                  SKY_CLOUD: ("cloud or shadow", (0, 200, 255)), SKY_SNOW: ("snow or ice", (255, 140, 220))}


def sky_codes(lulc: np.ndarray, cloud: np.ndarray, snow: np.ndarray | None = None) -> np.ndarray:
    """cloud.tif's values from the class map (0 = nodata) and the cloud and snow flags of the cells."""
    codes = np.where(cloud.astype(bool), SKY_CLOUD, np.where(lulc > 0, SKY_CLEAR, SKY_NODATA))
    if snow is not None:
        codes = np.where(snow.astype(bool) & (codes == SKY_NODATA), SKY_SNOW, codes)
    return codes.astype(np.uint8)


def cloud_code(path: Path) -> int:
    """The value of cloud cells in a cloud.tif: 2, or 1 in files written before 'clear' got its own
    value (no CLOUD_CODES tag; there 0 meant clear or nodata)."""
    if not Path(path).exists():
        return SKY_CLOUD
    with rasterio.open(path) as src:
        return SKY_CLOUD if "CLOUD_CODES" in src.tags() else 1


def hectares(value: float) -> float:
    """Hectares as stored and shown: to 0.01 ha (one 10 m pixel), never 913.9200000000001."""
    return round(float(value), 2)

#: a category: value -> (name, (r, g, b))
Categories = dict[int, tuple[str, tuple[int, int, int]]]


def write_cog(path: Path, array: np.ndarray, transform: Affine, crs: CRS, nodata, tags: dict,
              description: str | list[str] = "", categories: Categories | None = None) -> None:
    """Write one band (or (bands, rows, cols) with a description per band) as a Cloud-Optimized
    GeoTIFF (DEFLATE): a CogWriter given the whole array at once."""
    shape = array.shape[-2:]
    with CogWriter(path, shape, 1 if array.ndim == 2 else len(array), array.dtype, transform, crs, nodata, tags,
                   description, categories) as w:
        w.write(0, array)


class CogWriter:
    """A Cloud-Optimized GeoTIFF (DEFLATE) written a band of rows at a time (`write(row0, array)`, 2-D or
    (bands, rows, cols) with a description per band): the rows go into a tiled GeoTIFF beside `path`,
    from which GDAL makes the COG and its overviews when the block ends, so the raster is never held
    whole. Continuous data get `average` overviews. With `categories` (a categorical raster: class
    ids, change codes) the overviews use `mode`, so they hold only values of the full-resolution
    raster, and the legend travels with the file (value 0 = nodata, transparent): a palette inside
    the file (every category: a COG copied or served alone keeps its colours); `<file>.aux.xml`
    (GDAL's sidecar, read by GDAL, QGIS and ArcGIS) with the palette, the category names and a raster
    attribute table of the values present; `<name>.qml`, a paletted QGIS style listing only the values
    present. A write that fails (a full disk, a lost mount) is one AtlasError naming `path`."""

    def __init__(self, path: Path, shape: tuple[int, int], count: int, dtype, transform: Affine, crs: CRS, nodata,
                 tags: dict, description: str | list[str] = "", categories: Categories | None = None):
        self.path, self.count, self.categories = Path(path), count, categories
        self.part = self.path.with_name(f".{self.path.name}.part.tif")
        self.present: set[int] = set()
        self.said: list[str] = []
        names = description if isinstance(description, (list, tuple)) else [description]
        profile = dict(driver="GTiff", width=shape[1], height=shape[0], count=count, dtype=dtype, crs=crs,
                       transform=transform, nodata=nodata, tiled=True, blockxsize=512, blockysize=512,
                       compress="DEFLATE", BIGTIFF="IF_SAFER")
        self.dst = self._guard(lambda: rasterio.open(self.part, "w", **profile))
        self.dst.update_tags(**tags)
        for i, name in enumerate(names, 1):
            self.dst.set_band_description(i, name)
        if categories is not None and count == 1:  # the palette inside the file (before any pixel: TIFF allows
            # no later change; a TIFF of several bands holds none: theirs is in the .aux.xml sidecar alone)
            self.dst.write_colormap(1, palette(categories, max(categories)))

    def _guard(self, fn):
        """fn(), a GDAL or OS failure as one AtlasError naming the file (libtiff's own words where it
        printed them), nothing of it printed raw."""
        from rasterio._err import CPLE_BaseError

        from . import captured_stderr

        problem = None
        with captured_stderr() as said:  # libtiff prints its write errors itself ("_tiffWriteProc: ...")
            try:
                result = fn()
            except (OSError, RasterioError, CPLE_BaseError) as e:
                problem = getattr(e, "strerror", None) or str(e).splitlines()[0][:160]
        self.said += said  # a write may fail in GDAL's cache and raise only when flushed: held till then
        if problem is not None:
            lines = [ln.strip() for ln in self.said if ln.strip()]
            # the system's own words where libtiff's write said them (a full disk), else its last line
            cause = next((ln for ln in lines if ln.startswith("_tiffWriteProc")), lines[-1] if lines else problem)
            self.discard()
            raise AtlasError(f"{self.path}: cannot write ({cause.rstrip('.').split(': ', 1)[-1]})")
        return result

    def write(self, row0: int, array: np.ndarray, col0: int = 0) -> None:
        """`array` (rows, cols) or (bands, rows, cols) at row `row0`, column `col0` of the raster."""
        bands = array if array.ndim == 3 else array[None]
        if self.categories is not None:
            self.present.update(int(v) for v in np.unique(bands))
        window = rasterio.windows.Window(col0, row0, bands.shape[2], bands.shape[1])
        self._guard(lambda: self.dst.write(bands, window=window))

    def close(self) -> None:
        """Make the COG (and the legend's sidecars) from the rows written; the part file is removed."""
        def finish():
            self.dst.close()
            rasterio.shutil.copy(str(self.part), str(self.path), driver="COG", compress="DEFLATE", BIGTIFF="IF_SAFER",
                                 overview_resampling="mode" if self.categories is not None else "average")
            with rasterio.open(self.path) as check:  # GDAL may finish "successfully" on a truncated file
                check.read(1, window=rasterio.windows.Window(0, 0, 1, 1))

        try:
            self._guard(finish)
        finally:
            self.part.unlink(missing_ok=True)
        sys.stderr.writelines(self.said)  # what GDAL said of a file that was written after all
        if self.categories is not None:
            present = {v: self.categories[v] for v in sorted(self.present) if v in self.categories}
            Path(f"{self.path}.aux.xml").write_text(_pam_categories(present, self.count))
            self.path.with_suffix(".qml").write_text(qml_paletted(present))
        elif self.count > 1:  # class probabilities: QGIS would paint bands 1-3 as a meaningless RGB
            self.path.with_suffix(".qml").write_text(qml_gray(1, 0.0, 1.0))

    def __enter__(self) -> "CogWriter":
        return self

    def discard(self) -> None:
        """Close and remove the part file without making the COG (its errors are not the cause: unsaid)."""
        from . import captured_stderr

        with captured_stderr():
            try:
                self.dst.close()
            except (OSError, RasterioError):
                pass
        self.part.unlink(missing_ok=True)

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def palette(categories: Categories, vmax: int) -> dict[int, tuple[int, int, int, int]]:
    """Colour table 0..vmax: each category's colour, opaque; 0 (nodata) and unused values transparent
    (GeoTIFF stores no alpha: clients that read the .aux.xml sidecar get it)."""
    return {v: (*categories[v][1], 255) if v in categories and v != NODATA_ID else (0, 0, 0, 0)
            for v in range(vmax + 1)}


def _pam_categories(present: Categories, count: int = 1) -> str:
    """GDAL's PAM sidecar for `count` categorical bands (each the same legend): palette 0..max value
    present (absent values and 0 transparent), category names by value when the values are dense (class
    maps), and a raster attribute table (Value, Class, Red, Green, Blue) of the values present."""
    from xml.sax.saxutils import escape

    vmax = max(present, default=0)
    dense = vmax < 2 * len(present) + 16  # class ids: names by value; sparse change codes: the table only
    colours = "".join(f'<Entry c1="{r}" c2="{g}" c3="{b}" c4="255"/>' if v in present and v != NODATA_ID else
                      '<Entry c1="0" c2="0" c3="0" c4="0"/>'
                      for v in range(vmax + 1) for r, g, b in [present.get(v, ("", (0, 0, 0)))[1]])
    names = ""
    if dense:
        names = "<CategoryNames>" + "".join(f"<Category>{escape(present[v][0]) if v in present else ''}</Category>"
                                            for v in range(vmax + 1)) + "</CategoryNames>"
    fields = [("Value", 0, 5), ("Class", 2, 2), ("Red", 0, 6), ("Green", 0, 7), ("Blue", 0, 8)]  # GFT, GFU
    defs = "".join(f'<FieldDefn index="{i}"><Name>{n}</Name><Type>{t}</Type><Usage>{u}</Usage></FieldDefn>'
                   for i, (n, t, u) in enumerate(fields))
    rows = "".join(f'<Row index="{i}"><F>{v}</F><F>{escape(name)}</F>' + "".join(f"<F>{c}</F>" for c in rgb) + "</Row>"
                   for i, (v, (name, rgb)) in enumerate(sorted((k, x) for k, x in present.items() if k != NODATA_ID)))
    return ("<PAMDataset>" + "".join(
        f'<PAMRasterBand band="{band}"><ColorInterp>Palette</ColorInterp>{names}<ColorTable>{colours}</ColorTable>'
        f'<GDALRasterAttributeTable tableType="thematic">{defs}{rows}</GDALRasterAttributeTable></PAMRasterBand>'
        for band in range(1, count + 1)) + "</PAMDataset>\n")


def qml_paletted(present: Categories) -> str:
    """QGIS raster style: one palette entry (colour and legend label) per value present; 0 stays transparent."""
    from xml.sax.saxutils import quoteattr

    entries = "".join(f'<paletteEntry value="{v}" color="#{r:02x}{g:02x}{b:02x}" alpha="255" label={quoteattr(name)}/>'
                      for v, (name, (r, g, b)) in sorted(present.items()) if v != NODATA_ID)
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            '<qgis version="3.22.0" styleCategories="Symbology"><pipe>'
            '<rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">'
            f"<rasterTransparency/><colorPalette>{entries}</colorPalette></rasterrenderer>"
            '<brightnesscontrast brightness="0" contrast="0" gamma="1"/>'
            '<huesaturation saturation="0" colorizeOn="0" grayscaleMode="0"/>'
            '<rasterresampler maxOversampling="2"/></pipe><blendMode>0</blendMode></qgis>\n')


def qml_gray(band: int, vmin: float, vmax: float) -> str:
    """QGIS raster style: one band in grey from `vmin` (black) to `vmax` (white), the same stretch
    everywhere (a probability reads alike in every map); the other bands stay one click away."""
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            '<qgis version="3.22.0" styleCategories="Symbology"><pipe>'
            f'<rasterrenderer type="singlebandgray" grayBand="{band}" gradient="BlackToWhite" opacity="1" '
            'alphaBand="-1" nodataColor=""><rasterTransparency/><contrastEnhancement>'
            f"<minValue>{vmin:g}</minValue><maxValue>{vmax:g}</maxValue><algorithm>StretchToMinimumMaximum</algorithm>"
            "</contrastEnhancement></rasterrenderer>"
            '<brightnesscontrast brightness="0" contrast="0" gamma="1"/>'
            '<huesaturation saturation="0" colorizeOn="0" grayscaleMode="0"/>'
            '<rasterresampler maxOversampling="2"/></pipe><blendMode>0</blendMode></qgis>\n')


def class_categories() -> Categories:
    """EuroSAT class ids 1..10 with their names and colours, and 0 = nodata (transparent)."""
    return {NODATA_ID: ("nodata", (0, 0, 0)), **{i + 1: (name, rgb) for i, (name, rgb) in enumerate(zip(CLASSES, COLOURS))}}


def change_categories() -> Categories:
    """Every change code from_id * 100 + to_id ("AnnualCrop to Residential"), coloured by kind so that
    the raster never reads as a class map: reds for a conversion between land-cover groups, ambers for a
    change within one, a shade per 'to' class."""
    groups = group_of(np.arange(len(CLASSES) + 1))

    def colour(f: int, t: int) -> tuple[int, int, int]:
        return (220, 20 + 14 * t, 60 + 8 * t) if groups[f] != groups[t] else (250, 160 + 8 * t, 20)

    return {0: ("no change / nodata", (0, 0, 0)),
            **{f * 100 + t: (f"{CLASSES[f - 1]} to {CLASSES[t - 1]}", colour(f, t))
               for f in range(1, len(CLASSES) + 1) for t in range(1, len(CLASSES) + 1) if f != t}}


def raster_tags(attrs: dict) -> dict[str, str]:
    """GeoTIFF metadata: class names by id plus the provenance stamp (model, weights, bands)."""
    tags = {f"CLASS_{i + 1}": name for i, name in enumerate(CLASSES)}
    tags["CLASS_0"] = "nodata"
    tags.update({k.upper(): v if isinstance(v, str) else json.dumps(v) for k, v in attrs.items()})
    return tags


def strict_json(obj, indent: int | None = 2) -> str:
    """JSON that every parser reads (RFC 8259): NaN and infinities become null."""
    def clean(v):
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(obj), indent=indent, allow_nan=False, default=str) + "\n"


def csv_text(rows: list[list]) -> str:
    """Rows as CSV that spreadsheets read as data: every text field quoted where needed (commas,
    quotes, line breaks), and text that a spreadsheet would run as a formula (=, +, -, @, tab or
    carriage return first) prefixed with an apostrophe (OWASP's CSV-injection advice); numbers as they are."""
    import csv
    import io

    def cell(v):
        if v is None:
            return ""
        if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
            return "'" + v
        return v

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([[cell(v) for v in r] for r in rows])
    return buf.getvalue()


def write_file(path: Path, write: Callable[[Path], object]) -> None:
    """`write(path)`, a failure (a full disk, a lost mount) as an AtlasError naming `path`."""
    try:
        write(path)
    except (OSError, RuntimeError) as e:  # pyarrow's and pyogrio's errors included
        raise AtlasError(f"{path}: cannot write ({getattr(e, 'strerror', None) or str(e).splitlines()[0][:160]})") from None


def atomic_write(path: Path, write: Callable) -> None:
    """Write `path` through `write(binary file)` into a temporary name, then rename it into place;
    a failure (e.g. a full disk) is an AtlasError naming `path`, and leaves nothing behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as e:
        raise AtlasError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def new_files_undone(folder: Path) -> Iterator[None]:
    """For the block: where it fails with an AtlasError, the files it added to `folder` are removed
    again, and the folders it made for them (`folder` and its parents, where empty): nothing left
    half-done."""
    had = set(folder.iterdir()) if folder.is_dir() else set()
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        yield
    except AtlasError:
        for f in set(folder.iterdir()) - had if folder.is_dir() else ():
            if f.is_file():
                f.unlink(missing_ok=True)
        for p in made:  # innermost first
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        raise


@contextmanager
def folder_lock(path: Path, busy: str, unwritable: str) -> Iterator[None]:
    """Hold the lock file `path` (its pid inside) for the block; AtlasError `busy` (with the holder's
    pid) when another process holds it, `unwritable` when it cannot be made. The operating system
    drops the lock when the process dies, so a killed run never blocks the next."""
    import fcntl

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+")
    except OSError as e:
        raise AtlasError(f"{unwritable} ({e.strerror})") from None
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise AtlasError(f"{busy} ({path} is held by pid {f.read().strip() or '?'}); wait for it or stop it") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        f.close()


# --- reading outputs back: every damaged file is named, with what is wrong ------------------------

#: what a classify folder's run.json and a compare folder's summary.json must hold to be read
RUN_KEYS = ("input.path", "model.model", "model.weights_sha256")
SUMMARY_KEYS = ("before.source", "after.source")


def read_json(path: Path, need: tuple[str, ...] = ()) -> dict:
    """A JSON object written by atlas-change, with the (dotted) keys `need`: 'model.weights_sha256'."""
    try:
        obj = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise AtlasError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise AtlasError(f"{path}: unreadable ({str(e).splitlines()[0][:120]})") from None
    for key in need:
        v = obj
        for part in key.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        if v is None:
            raise AtlasError(f"{path}: incomplete (no {key!r}); the step that wrote it must be run again")
    return obj


def read_raster(path: Path, every_band: bool = False, window=None) -> tuple[np.ndarray, Affine, CRS, dict]:
    """Band 1 (or every band, (bands, rows, cols)) of a raster written by atlas-change, whole or its
    `window` (rasterio Window): (array, transform, crs, tags); a missing, truncated or CRS-less file
    is an AtlasError naming it."""
    from rasterio.errors import CRSError, RasterioError

    if not Path(path).is_file():
        raise AtlasError(f"{path}: missing")
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise AtlasError(f"{path}: damaged (no CRS); the step that wrote it must be run again")
            return (src.read(window=window) if every_band else src.read(1, window=window)), src.transform, src.crs, \
                src.tags()
    except (RasterioError, CRSError) as e:
        raise AtlasError(f"{path}: damaged ({str(e).splitlines()[0][:160]}); the step that wrote it must be run again") from None


@contextmanager
def staged_output(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging folder beside `out_dir`; when the block succeeds, move its files into
    `out_dir`. A failure inside the block leaves `out_dir` as it was (no partial output)."""
    out = Path(out_dir)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        raise AtlasError(f"{out}: cannot write output here ({e.strerror})") from None
    try:
        yield stage
        out.mkdir(parents=True, exist_ok=True)
        for f in stage.iterdir():
            if f.is_dir() and (out / f.name).is_dir():  # a sequence's step folder of an earlier run
                shutil.rmtree(out / f.name)
            os.replace(f, out / f.name)
    except AtlasError as e:  # name the file as the user will look for it, not its staging copy
        raise AtlasError(str(e).replace(str(stage), str(out))) from None
    except OSError as e:
        raise AtlasError(f"{out}: writing the outputs failed ({e.strerror or e})") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_outputs(ds: xr.Dataset, run: dict, out_dir: str | os.PathLike) -> Path:
    """Write lulc.tif, confidence.tif, cloud.tif, cells.parquet and run.json into `out_dir`, all or nothing."""
    with staged_output(out_dir) as stage:
        with MapWriter(stage, (ds.sizes["y"], ds.sizes["x"]), ds.rio.transform(), ds.rio.crs, ds.attrs,
                       labelled_bounds(ds)) as w:
            w.add(0, ds)
        write_file(stage / "run.json", lambda p: p.write_text(strict_json(run)))
    return Path(out_dir)


class MapWriter:
    """The rasters and cell table of a classify output (lulc.tif, confidence.tif, cloud.tif,
    cells.parquet) written into `folder` a band of map rows at a time: `add(row0, ds)` with `ds` a
    build_dataset of those rows (its own transform); `cells_bbox`: what cells.parquet says its cells
    lie in (default: the whole map)."""

    def __init__(self, folder: Path, shape: tuple[int, int], transform: Affine, crs: CRS, attrs: dict,
                 cells_bbox: tuple[float, float, float, float] | None = None):
        tags = raster_tags(attrs)
        self.lulc = CogWriter(folder / "lulc.tif", shape, 1, np.uint8, transform, crs, NODATA_ID, tags, "class_id",
                              class_categories())
        self.confidence = CogWriter(folder / "confidence.tif", shape, 1, np.float32, transform, crs, float("nan"),
                                    tags, "top1_probability")
        self.cloud = CogWriter(folder / "cloud.tif", shape, 1, np.uint8, transform, crs, SKY_NODATA,
                               {**tags, "CLOUD": CLOUD_DOC, "CLOUD_CODES": CLOUD_DOC}, "cloud_masked", SKY_CATEGORIES)
        self.cells = CellsWriter(folder / "cells.parquet",
                                 cells_bbox or map_bounds(transform, slice(0, shape[0]), slice(0, shape[1])))

    def add(self, row0: int, ds: xr.Dataset) -> None:
        lulc = ds["lulc"].values
        self.lulc.write(row0, lulc.astype(np.uint8))
        self.confidence.write(row0, ds["confidence"].values.astype(np.float32))
        self.cloud.write(row0, sky_codes(lulc, ds["cloud"].values, ds["snow"].values))
        add_cells(self.cells, ds, row0)

    def __enter__(self) -> "MapWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        for w in (self.lulc, self.confidence, self.cloud):
            w.__exit__(exc_type, *exc)
        if exc_type is None:
            self.cells.close()
