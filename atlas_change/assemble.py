"""Assemble stage: patch probabilities -> georeferenced class map, confidence and tile table;
and writing them (Cloud-Optimized GeoTIFFs, GeoParquet, run.json) all-or-nothing."""
from __future__ import annotations

import json
import os
import shutil
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
from rasterio.io import MemoryFile

from .classes import CLASSES, COLOURS, NODATA_ID
from .errors import AtlasError


def build_dataset(cell_probs: np.ndarray, has: np.ndarray, transform: Affine, crs: CRS, attrs: dict) -> xr.Dataset:
    """(rows, cols, classes) probabilities + data mask -> Dataset with `lulc` (uint8 ids 1..10,
    0 = nodata), `confidence` (top-1 probability, NaN = nodata) and `probabilities`."""
    rows, cols, n = cell_probs.shape
    lulc = np.where(has, cell_probs.argmax(axis=-1) + 1, NODATA_ID).astype(np.uint8)
    conf = np.where(has, cell_probs.max(axis=-1, initial=0.0), np.nan).astype(np.float32)
    probs = np.where(has[..., None], cell_probs, np.nan).transpose(2, 0, 1)
    x = transform.c + (np.arange(cols) + 0.5) * transform.a
    y = transform.f + (np.arange(rows) + 0.5) * transform.e
    ds = xr.Dataset(
        {"lulc": (("y", "x"), lulc), "confidence": (("y", "x"), conf),
         "probabilities": (("class", "y", "x"), probs)},
        coords={"y": y, "x": x, "class": list(CLASSES)},
        attrs=attrs,
    )
    ds["lulc"].attrs.update(nodata=NODATA_ID, class_ids={c: i + 1 for i, c in enumerate(CLASSES)})
    return ds.rio.write_crs(crs).rio.write_transform(transform)  # ds.rio.crs / .rio.transform()


def tiles_frame(probs: np.ndarray, usable: np.ndarray, stride: int, patch: int, transform: Affine, crs: CRS):
    """One row per classified patch: row, col, bounds, polygon, class, confidence, probabilities."""
    import geopandas as gpd
    import shapely

    r, c = np.nonzero(usable)
    p = probs[r, c]
    x0 = transform.c + c * stride * transform.a
    y0 = transform.f + r * stride * transform.e
    x1 = x0 + patch * transform.a
    y1 = y0 + patch * transform.e
    minx, maxx, miny, maxy = np.minimum(x0, x1), np.maximum(x0, x1), np.minimum(y0, y1), np.maximum(y0, y1)
    cls = p.argmax(axis=1) + 1
    data = {"row": r.astype(np.int32), "col": c.astype(np.int32), "minx": minx, "miny": miny, "maxx": maxx,
            "maxy": maxy, "class_id": cls.astype(np.uint8), "class_name": np.asarray(CLASSES)[cls - 1],
            "confidence": p.max(axis=1, initial=0.0)}
    data.update({f"p_{name}": p[:, i] for i, name in enumerate(CLASSES)})
    return gpd.GeoDataFrame(data, geometry=shapely.box(minx, miny, maxx, maxy), crs=crs)


def _write_cog(path: Path, array: np.ndarray, transform: Affine, crs: CRS, nodata, tags: dict,
               colormap: dict | None = None, description: str = "") -> None:
    profile = dict(driver="GTiff", width=array.shape[1], height=array.shape[0], count=1, dtype=array.dtype,
                   crs=crs, transform=transform, nodata=nodata)
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(array, 1)
            dst.update_tags(**tags)
            dst.set_band_description(1, description)
            if colormap:
                dst.write_colormap(1, colormap)
        with mem.open() as src:
            rasterio.shutil.copy(src, str(path), driver="COG", compress="DEFLATE",
                                 overview_resampling="nearest" if array.dtype == np.uint8 else "average")


def class_colormap() -> dict[int, tuple[int, int, int, int]]:
    cmap = {NODATA_ID: (0, 0, 0, 0)}
    cmap.update({i + 1: (*rgb, 255) for i, rgb in enumerate(COLOURS)})
    return cmap


def raster_tags(attrs: dict) -> dict[str, str]:
    """GeoTIFF metadata: class names by id plus the provenance stamp (model, weights, bands)."""
    tags = {f"CLASS_{i + 1}": name for i, name in enumerate(CLASSES)}
    tags["CLASS_0"] = "nodata"
    tags.update({k.upper(): v if isinstance(v, str) else json.dumps(v) for k, v in attrs.items()})
    return tags


def atomic_write(path: Path, write: Callable) -> None:
    """Write `path` through `write(binary file)` into a temporary name, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
            os.replace(f, out / f.name)
    except OSError as e:
        raise AtlasError(f"{out}: writing the outputs failed ({e.strerror or e})") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_outputs(ds: xr.Dataset, tiles, run: dict, out_dir: str | os.PathLike) -> Path:
    """Write lulc.tif, confidence.tif, tiles.parquet and run.json into `out_dir`, all or nothing."""
    with staged_output(out_dir) as stage:
        transform, crs = ds.rio.transform(), ds.rio.crs
        tags = raster_tags(ds.attrs)
        _write_cog(stage / "lulc.tif", ds["lulc"].values, transform, crs, NODATA_ID, tags, class_colormap(),
                   "class_id")
        _write_cog(stage / "confidence.tif", ds["confidence"].values, transform, crs, float("nan"), tags,
                   description="top1_probability")
        tiles.to_parquet(stage / "tiles.parquet", index=False)
        (stage / "run.json").write_text(json.dumps(run, indent=2, default=str) + "\n")
    return Path(out_dir)
