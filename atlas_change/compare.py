"""Compare stage: two classified dates of one AOI on one common grid -> change raster,
from-to transition table in hectares (from the CRS), and a summary stamped with both models."""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import geometry_mask
from rasterio.windows import from_bounds

from .assemble import (RUN_KEYS, SKY_SNOW, change_categories, class_categories, cloud_code, hectares, read_json, read_raster,
                       staged_output, write_cog, write_file)
from .classes import CLASSES
from .dates import metadata_date, user_date
from .errors import AtlasError, AtlasWarning
from .infer import DEFAULT_VIEWS

CHANGE_CODE_DOC = ("from_id * 100 + to_id (class ids 1..10 in EuroSAT order); 0 = unchanged, nodata, cloud, snow, "
                   "outside the AOI, or below --min-confidence on either date")


@dataclass(frozen=True)
class ClassMap:
    """A classify output folder: lulc.tif + confidence.tif + run.json."""

    folder: str
    crs: CRS
    transform: Affine
    shape: tuple[int, int]
    model: str
    weights_sha256: str
    date: str | None
    tta_views: int
    temperature: float = 1.0  # the model card's calibration when the map was made (1.0: none)


def tta_views(run: dict) -> int:
    """The --tta a run.json was made with (1 for outputs from before test-time augmentation existed)."""
    return int(run.get("parameters", {}).get("tta_views", 1))


def load_map(folder: str | os.PathLike, date: str | None = None) -> ClassMap:
    """A classify output folder, checked: run.json readable, lulc.tif readable and stamped with the
    model that run.json names (a run.json edited to pass for another model is refused)."""
    d = Path(folder)
    run = read_json(d / "run.json", RUN_KEYS)
    lulc, transform, crs, tags = read_raster(d / "lulc.tif")
    model, sha = run["model"]["model"], run["model"]["weights_sha256"]
    if (tags.get("MODEL"), tags.get("WEIGHTS_SHA256")) != (model, sha):
        raise AtlasError(f"{d / 'run.json'}: names model {model} ({str(sha)[:12]}) but lulc.tif is stamped "
                         f"{tags.get('MODEL')} ({str(tags.get('WEIGHTS_SHA256'))[:12]}); classify the scene again")
    return ClassMap(str(d), crs, transform, lulc.shape, model, sha,
                    date or metadata_date(run["input"].get("date")), tta_views(run),
                    float(run["model"].get("temperature", 1.0)))


def is_output_folder(p: Path) -> bool:
    """Whether `p` is (or was meant to be) a classify output folder rather than a scene."""
    return p.is_dir() and any((p / f).exists() for f in ("lulc.tif", "run.json", "confidence.tif", "tiles.parquet"))


def resolve_input(src: str | os.PathLike, date: str | None, out_root: Path, **classify_kw) -> ClassMap:
    """A classify output folder as is, or a scene classified into out_root/<scene name>/ (reused
    when that folder already holds a sound result of the same input, model and parameters)."""
    p = Path(src)
    if is_output_folder(p):
        return load_map(p, date)
    from .pipeline import classify, resolve_model, scene_stem

    card, _ = resolve_model(str(p), classify_kw.get("model"), classify_kw.get("bands"))
    folder = out_root / scene_stem(p)
    try:
        run = read_json(folder / "run.json", RUN_KEYS)
        if (run["input"]["path"] == os.path.abspath(p) and run["model"]["weights_sha256"] == card.weights_sha256
                and run.get("parameters", {}).get("stride") == classify_kw.get("stride", 64)
                and tta_views(run) == classify_kw.get("tta", DEFAULT_VIEWS)):
            return load_map(folder, date)
    except AtlasError:  # none yet, or damaged: classify again
        pass
    classify(p, out=folder, **{**classify_kw, "model": card.path})
    return load_map(folder, date)


def read_aoi(aoi: str | os.PathLike | None, bbox: str | None, bbox_crs: str, crs: CRS):
    """The AOI as one shapely geometry in `crs` (GeoJSON / GeoPackage file, or a bbox)."""
    return aoi_union(read_aoi_frame(aoi, bbox, bbox_crs, crs), aoi or "--aoi-bbox")


def aoi_union(gdf, name: str):
    """The AOI's features as one valid geometry; AtlasError when it has no area."""
    import shapely

    geom = gdf.geometry.union_all() if len(gdf) else None
    if geom is None or geom.is_empty or geom.area == 0:
        raise AtlasError(f"{name}: the AOI is empty (no polygon with area)")
    return shapely.make_valid(geom)


def read_aoi_frame(aoi: str | os.PathLike | None, bbox: str | None, bbox_crs: str, crs: CRS):
    """The AOI's features in `crs`, with their attributes (GeoJSON / GeoPackage file, or a bbox)."""
    import geopandas as gpd
    import shapely

    if bbox:
        try:
            minx, miny, maxx, maxy = (float(v) for v in bbox.split(","))
        except ValueError:
            raise AtlasError(f"--aoi-bbox {bbox!r}: expected minx,miny,maxx,maxy") from None
        if minx >= maxx or miny >= maxy:
            raise AtlasError(f"--aoi-bbox {bbox!r}: min must be below max")
        gdf = gpd.GeoDataFrame(geometry=[shapely.box(minx, miny, maxx, maxy)], crs=bbox_crs)
        name = "--aoi-bbox"
    else:
        name = str(aoi)
        try:
            gdf = gpd.read_file(aoi)
        except Exception as e:  # pyogrio raises several types for unreadable files
            raise AtlasError(f"{name}: not a readable vector file ({str(e).splitlines()[0]})") from None
        if gdf.crs is None:
            raise AtlasError(f"{name}: the AOI has no CRS")
    return gdf.to_crs(crs)


def common_grid(a: ClassMap, b: ClassMap, aoi) -> tuple[Affine, tuple[int, int]]:
    """The cells of the maps' shared grid that cover the AOI; errors when the maps' grids differ."""
    if a.crs != b.crs:
        raise AtlasError(f"{b.folder}: CRS {b.crs.to_string()} differs from {a.folder}'s {a.crs.to_string()}; "
                         "aligning them would resample the class map: classify both dates from scenes in one CRS")
    ta, tb = a.transform, b.transform
    if (ta.a, ta.e) != (tb.a, tb.e) or ((tb.c - ta.c) / ta.a) % 1 or ((tb.f - ta.f) / ta.e) % 1:
        raise AtlasError(f"{b.folder}: its grid (cell {tb.a:g} m, origin {tb.c:.2f}, {tb.f:.2f}) is not aligned with "
                         f"{a.folder}'s (cell {ta.a:g} m, origin {ta.c:.2f}, {ta.f:.2f}); use the same stride and tile grid")
    minx, miny, maxx, maxy = aoi.bounds
    for m in (a, b):
        bx0, by1 = m.transform.c, m.transform.f
        bx1, by0 = bx0 + m.shape[1] * m.transform.a, by1 + m.shape[0] * m.transform.e
        minx, miny, maxx, maxy = max(minx, bx0), max(miny, by0), min(maxx, bx1), min(maxy, by1)
    if minx >= maxx or miny >= maxy:
        raise AtlasError("the AOI does not overlap both maps (check the AOI's CRS and the scenes' footprints)")
    sx, sy = ta.a, -ta.e
    eps = 1e-6  # cells; AOI vertices that went through a reprojection land a hair off the cell edges
    col0 = np.floor((minx - ta.c) / sx + eps)
    col1 = np.ceil((maxx - ta.c) / sx - eps)
    row0 = np.floor((ta.f - maxy) / sy + eps)
    row1 = np.ceil((ta.f - miny) / sy - eps)
    transform = Affine(sx, 0, ta.c + col0 * sx, 0, -sy, ta.f - row0 * sy)
    return transform, (int(row1 - row0), int(col1 - col0))


def _read_on(m: ClassMap, name: str, transform: Affine, shape: tuple[int, int], fill):
    """`name` of map `m` on the compare grid; all `fill` where the map has no such file (cloud.tif
    of results made before cloud masking)."""
    bounds = (transform.c, transform.f + shape[0] * transform.e, transform.c + shape[1] * transform.a, transform.f)
    if not (Path(m.folder) / name).exists():
        return np.full(shape, fill)
    with rasterio.open(Path(m.folder) / name) as src:
        win = from_bounds(*bounds, transform=src.transform).round_offsets().round_lengths()
        return src.read(1, window=win, boundless=True, fill_value=fill)


def compare(before: str | os.PathLike, after: str | os.PathLike, *, aoi: str | None = None,
            aoi_bbox: str | None = None, aoi_crs: str = "EPSG:4326", out: str | os.PathLike | None = None,
            min_confidence: float = 0.6, allow_model_mismatch: bool = False, before_date: str | None = None,
            after_date: str | None = None, **classify_kw) -> dict:
    """Compare two dates over an AOI; returns the summary dict and, with `out`, writes before.tif,
    after.tif, change.tif, transitions.csv and summary.json there (all or nothing)."""
    before_date, after_date = user_date(before_date, "--before-date"), user_date(after_date, "--after-date")
    out_root = Path(out).parent if out else Path("outputs")
    a = resolve_input(before, before_date, out_root, **classify_kw)
    b = resolve_input(after, after_date, out_root, **classify_kw)
    if a.tta_views != b.tta_views:
        warnings.warn(f"{b.folder}: classified with --tta {b.tta_views} but {a.folder} with --tta {a.tta_views}: "
                      "some label differences may come from that, not from the land", AtlasWarning, stacklevel=2)
    if a.temperature != b.temperature:
        warnings.warn(f"{b.folder}: confidences calibrated with temperature {b.temperature:g} but {a.folder}'s with "
                      f"{a.temperature:g} (same labels): which cells pass --min-confidence may differ for that reason; "
                      "reclassify the older date", AtlasWarning, stacklevel=2)
    mismatch = a.weights_sha256 != b.weights_sha256
    if mismatch and not allow_model_mismatch:
        raise AtlasError(f"{b.folder}: made by model {b.model} ({b.weights_sha256[:12]}) but {a.folder} by "
                         f"{a.model} ({a.weights_sha256[:12]}); differences would mix model and land change. "
                         "Reclassify with one model, or pass --allow-model-mismatch")
    if a.crs.is_geographic:
        raise AtlasError(f"{a.folder}: geographic CRS; areas need a projected CRS")
    features = read_aoi_frame(aoi, aoi_bbox, aoi_crs, a.crs)
    geom = aoi_union(features, aoi or "--aoi-bbox")
    transform, shape = common_grid(a, b, geom)
    in_aoi = geometry_mask([geom], out_shape=shape, transform=transform, invert=True)
    la = np.where(in_aoi, _read_on(a, "lulc.tif", transform, shape, 0), 0).astype(np.uint8)
    lb = np.where(in_aoi, _read_on(b, "lulc.tif", transform, shape, 0), 0).astype(np.uint8)
    sky_a, sky_b = (_read_on(m, "cloud.tif", transform, shape, 0) for m in (a, b))
    cloud_a = in_aoi & (sky_a == cloud_code(Path(a.folder) / "cloud.tif"))
    cloud_b = in_aoi & (sky_b == cloud_code(Path(b.folder) / "cloud.tif"))
    snow_a, snow_b = in_aoi & (sky_a == SKY_SNOW) & ~cloud_a, in_aoi & (sky_b == SKY_SNOW) & ~cloud_b
    ca = _read_on(a, "confidence.tif", transform, shape, np.nan)
    cb = _read_on(b, "confidence.tif", transform, shape, np.nan)
    valid = (la > 0) & (lb > 0)
    confident = valid & (ca >= min_confidence) & (cb >= min_confidence)
    changed = confident & (la != lb)
    code = np.where(changed, la.astype(np.uint16) * 100 + lb, 0).astype(np.uint16)
    cell_ha = abs(transform.a * transform.e) / 1e4
    n = len(CLASSES)
    matrix = np.bincount((la[confident] - 1).astype(int) * n + (lb[confident] - 1), minlength=n * n).reshape(n, n)
    tot_a = np.bincount(la[valid], minlength=n + 1)[1:]
    tot_b = np.bincount(lb[valid], minlength=n + 1)[1:]
    summary = {
        "before": {"source": a.folder, "date": a.date, "model": a.model, "weights_sha256": a.weights_sha256,
                   "tta_views": a.tta_views},
        "after": {"source": b.folder, "date": b.date, "model": b.model, "weights_sha256": b.weights_sha256,
                  "tta_views": b.tta_views},
        "model_mismatch": mismatch,
        "crs": a.crs.to_string(), "transform": list(transform)[:6], "shape": list(shape), "cell_area_ha": cell_ha,
        "min_confidence": min_confidence,
        "aoi_ha": hectares(geom.area / 1e4), "aoi_cells_ha": hectares(in_aoi.sum() * cell_ha),
        "cloud_ha": hectares((cloud_a | cloud_b).sum() * cell_ha),
        "cloud_before_ha": hectares(cloud_a.sum() * cell_ha), "cloud_after_ha": hectares(cloud_b.sum() * cell_ha),
        "snow_ha": hectares(((snow_a | snow_b) & ~cloud_a & ~cloud_b).sum() * cell_ha),
        "snow_before_ha": hectares(snow_a.sum() * cell_ha), "snow_after_ha": hectares(snow_b.sum() * cell_ha),
        "nodata_ha": hectares((in_aoi & ~valid & ~cloud_a & ~cloud_b & ~snow_a & ~snow_b).sum() * cell_ha),
        "valid_ha": hectares(valid.sum() * cell_ha), "confident_ha": hectares(confident.sum() * cell_ha),
        "uncertain_ha": hectares((valid & ~confident).sum() * cell_ha), "changed_ha": hectares(changed.sum() * cell_ha),
        "net_change_ha": {c: hectares((matrix[:, i].sum() - matrix[i].sum()) * cell_ha) for i, c in enumerate(CLASSES)},
        "change_code": CHANGE_CODE_DOC,
    }
    if out is not None:
        _write_compare(Path(out), la, lb, ca, cb, code, matrix, tot_a, tot_b, cell_ha, transform, a.crs, summary,
                       features)
    return summary


def _write_compare(out: Path, la, lb, ca, cb, code, matrix, tot_a, tot_b, cell_ha, transform, crs, summary, features):
    with staged_output(out) as stage:
        stamp = {"BEFORE_MODEL": summary["before"]["model"], "BEFORE_WEIGHTS_SHA256": summary["before"]["weights_sha256"],
                 "AFTER_MODEL": summary["after"]["model"], "AFTER_WEIGHTS_SHA256": summary["after"]["weights_sha256"],
                 "BEFORE_DATE": summary["before"]["date"] or "", "AFTER_DATE": summary["after"]["date"] or "",
                 "MODEL_MISMATCH": str(summary["model_mismatch"]).lower()}
        names = {f"CLASS_{i + 1}": c for i, c in enumerate(CLASSES)}
        for name, arr, conf in (("before", la, ca), ("after", lb, cb)):
            write_cog(stage / f"{name}.tif", arr, transform, crs, 0, {**names, **stamp}, "class_id",
                      class_categories())
            write_cog(stage / f"{name}_confidence.tif", np.where(arr > 0, conf, np.nan).astype(np.float32),
                      transform, crs, float("nan"), stamp, "top1_probability")
        write_cog(stage / "change.tif", code, transform, crs, 0, {**names, **stamp, "CHANGE_CODE": CHANGE_CODE_DOC},
                  "change_code", change_categories())
        rows = ["from\\to," + ",".join(CLASSES) + ",total_before_ha"]
        for i, c in enumerate(CLASSES):
            rows.append(c + "," + ",".join(f"{hectares(v * cell_ha):.2f}" for v in matrix[i]) + f",{hectares(tot_a[i] * cell_ha):.2f}")
        rows.append("total_after_ha," + ",".join(f"{hectares(v * cell_ha):.2f}" for v in tot_b) + ",")
        write_file(stage / "transitions.csv", lambda p: p.write_text("\n".join(rows) + "\n"))
        write_file(stage / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=2) + "\n"))
        write_file(stage / "aoi.geojson", lambda p: features.to_file(p, driver="GeoJSON"))  # the AOI's own features
