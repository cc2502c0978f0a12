"""Compare stage: two classified dates (or periods of several, composited by composite.py) of one
AOI on one common grid -> change raster, from-to transition tables in hectares (classes and
land-cover groups), and a summary stamped with both models. Every hectare figure counts the same
non-overlapping map cells (cell_area_ha each)."""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import geometry_mask
from rasterio.windows import from_bounds

from ..outputs import (CLOUD_DOC, RUN_KEYS, SKY_CATEGORIES, SKY_NODATA, SUMMARY_KEYS, change_categories,
                       class_categories, hectares, read_json, read_raster, sky_codes, staged_output, strict_json,
                       new_files_undone, write_cog, write_file)
from ..classes import CLASSES, GROUP_NAMES, group_of
from .composite import EVIDENCE, Side, composite, make_side
from ..dates import metadata_date, user_date
from ..errors import AtlasError, AtlasWarning
from ..model.infer import DEFAULT_VIEWS
from .joint import DEFAULT_STAY, DEFAULT_THRESHOLD, PRIOR_SOURCE, decide_chain, viterbi
from ..names import digest
from ..read.scene import is_url

CHANGE_CODE_DOC = ("from_id * 100 + to_id (class ids 1..10 in EuroSAT order) where P(change) >= the threshold; "
                   "0 = unchanged, uncertain (neither P(change) nor P(no change) reaches it), nodata, cloud, snow "
                   "or outside the AOI")
#: vertices beyond which aoi.geojson holds the AOI simplified (GDAL reads GeoJSON objects up to 200 MB)
MAX_AOI_VERTICES = 200_000
#: dates further apart than this in day of year (either way round the year) are in different seasons
SEASON_DAYS = 45


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
    cell_temperature: float = 1.0  # and its cells' at the map's stride (calibrate.py; 1.0: none)
    #: the scene's own bounds (left, bottom, right, top): the map's last cells reach past them
    footprint: tuple[float, float, float, float] | None = None
    #: the network's arithmetic when the map was made (run.json parameters.inference_precision: bfloat16,
    #: float32, int8); '' for outputs that do not record it
    precision: str = ""
    #: the change prior the model's card carried when the map was made (calibrate; None: none fitted)
    stay: float | None = None


def footprint(run: dict, transform: Affine) -> tuple[float, float, float, float] | None:
    """The classified scene's bounds from run.json (its size in pixels, the map's origin and stride);
    None for outputs that do not record them."""
    size, stride = (run["input"].get("width"), run["input"].get("height")), run.get("parameters", {}).get("stride")
    if None in size or not stride:
        return None
    px, py = transform.a / stride, transform.e / stride
    xs, ys = (transform.c, transform.c + size[0] * px), (transform.f, transform.f + size[1] * py)
    return min(xs), min(ys), max(xs), max(ys)


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
                    float(run["model"].get("temperature", 1.0)), float(run["model"].get("cell_temperature", 1.0)),
                    footprint(run, transform), str(run.get("parameters", {}).get("inference_precision") or ""),
                    _stay(run["model"].get("change_prior_stay")))


def _stay(v) -> float | None:
    """A run.json's change prior, or None where it has none (or not a probability)."""
    return float(v) if isinstance(v, (int, float)) and 0 < v < 1 else None


def resolve_stay(stay: float | None, sides: list[Side]) -> tuple[float, str]:
    """(the transition prior's stay, where it comes from): `stay` where given, else the prior fitted to
    the maps' model (its card, when they were made), else the project's default."""
    if stay is not None:
        return stay, "given (--stay)"
    fitted = sorted({m.stay for s in sides for m in s.maps if m.stay is not None})
    if not fitted:
        return DEFAULT_STAY, (f"the project's default ({DEFAULT_STAY:g}): the maps' model card carries no fitted "
                              "change prior (calibrate fits one)")
    if len(fitted) > 1:
        why = ("made by different models" if len({m.weights_sha256 for s in sides for m in s.maps}) > 1
               else "their model's card was refitted between them")
        warnings.warn(f"the maps carry different change priors ({', '.join(f'{v:g}' for v in fitted)}: {why}); "
                      f"deciding with the strongest, {fitted[-1]:g}", AtlasWarning, stacklevel=3)
    return fitted[-1], f"fitted to {sides[0].model} (its card's calibration.change_prior, calibrate)"


def prior_brief(decision: dict) -> str:
    """'0.6 (fitted to spectrumnet-rgb)': a summary's change_decision's stay and, in short, where it
    came from."""
    return f"{decision['stay']:g} ({decision['stay_source'].split(' (')[0]})"


def check_decision(min_confidence: float, stay: float | None) -> None:
    """AtlasError unless the change decision's settings are probabilities (`stay` None: the model's)."""
    if not (0.5 <= min_confidence <= 1):  # also refuses NaN
        raise AtlasError(f"--min-confidence {min_confidence}: expected a probability from 0.5 to 1 "
                         "(the posterior that 'changed' or 'unchanged' needs)")
    if stay is not None and not (0 < stay < 1):  # also refuses NaN
        raise AtlasError(f"--stay {stay}: expected a probability strictly between 0 and 1")


def is_output_folder(p: Path) -> bool:
    """Whether `p` is (or was meant to be) a classify output folder rather than a scene."""
    return p.is_dir() and any((p / f).exists() for f in ("lulc.tif", "run.json", "confidence.tif", "cells.parquet", "tiles.parquet"))


def onthefly_folder(out_root: Path, src, window: list[int] | None, weights_sha256: str, classify_kw: dict) -> Path:
    """Where compare classifies a scene: out_root/<scene name>[_aoi_<col>_<row>_<w>x<h>]_<key>, the key
    a digest of the input's path, the model's weights and every classify parameter, so that two
    inputs of one file name, or one input at two strides, never share (and overwrite) a folder."""
    from ..mapping.pipeline import scene_stem
    from ..read import input_path

    params = json.dumps({k: v for k, v in sorted(classify_kw.items()) if k not in ("bbox", "bbox_crs", "quiet")},
                        sort_keys=True, default=str)
    key = digest(input_path(src), weights_sha256, window, params, n=8)
    aoi = "" if window is None else f"_aoi_{window[0]}_{window[1]}_{window[2]}x{window[3]}"
    return out_root / f"{scene_stem(src)}{aoi}_{key}"


def resolve_input(src: str | os.PathLike, date: str | None, out_root: Path, scene=None, **classify_kw) -> ClassMap:
    """A classify output folder as is, or a scene classified into its `onthefly_folder` (reused
    when that folder, or out_root/<scene name>/ of a whole-scene classify, already holds a sound
    result of the same input, model and parameters). `scene`: `src` opened already, if it was."""
    from ..read import input_path, is_url

    url = is_url(str(src))
    p = str(src) if url else Path(src)  # a STAC Item's URL stays a URL
    if not url and is_output_folder(p):
        return load_map(p, date)
    from ..mapping.pipeline import classify, resolve_model, scene_stem

    from ..read import crop_to, open_scene

    scene = scene or open_scene(str(p), None, classify_kw.get("bands"))
    card, _ = resolve_model(str(p), classify_kw.get("model"), scene)
    window = None
    if classify_kw.get("bbox") is not None:  # only the AOI's part of the scene (whole 64 px blocks)
        _, w = crop_to(scene, classify_kw["bbox"], classify_kw.get("bbox_crs", "EPSG:4326"), str(p))
        window = [int(v) for v in (w.col_off, w.row_off, w.width, w.height)]
    whole = out_root / scene_stem(p)
    folder = onthefly_folder(out_root, p, window, card.weights_sha256, classify_kw)
    for f, windows in ((whole, (None,)), (folder, (window,))):  # the whole scene classified will do too
        try:
            run = read_json(f / "run.json", RUN_KEYS)
            if (run["input"]["path"] == input_path(p) and run["model"]["weights_sha256"] == card.weights_sha256
                    and run.get("parameters", {}).get("stride") == classify_kw.get("stride", 64)
                    and run.get("parameters", {}).get("window") in windows
                    and tta_views(run) == classify_kw.get("tta", DEFAULT_VIEWS)):
                return load_map(f, date)
        except AtlasError:  # none yet, or damaged: classify again
            pass
    classify(p, out=folder, **{**classify_kw, "model": card.path})
    return load_map(folder, date)


def read_aoi(aoi: str | os.PathLike | None, bbox: str | None, bbox_crs: str, crs: CRS):
    """The AOI as one shapely geometry in `crs` (GeoJSON / GeoPackage file, or a bbox)."""
    return aoi_union(read_aoi_frame(aoi, bbox, bbox_crs, crs), aoi or "--aoi-bbox")


def aoi_union(gdf, name: str):
    """The AOI's features as one valid geometry; AtlasError when it has no area."""
    geom = gdf.geometry.union_all() if len(gdf) else None
    if geom is None or geom.is_empty or geom.area == 0:
        raise AtlasError(f"{name}: the AOI is empty (no polygon with area)")
    return shapely.make_valid(geom)


def read_aoi_frame(aoi: str | os.PathLike | None, bbox: str | None, bbox_crs: str, crs: CRS | None):
    """The AOI's features in `crs` (None: their own), with their attributes (GeoJSON / GeoPackage
    file, or a bbox)."""
    import geopandas as gpd

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
        if is_url(name):  # fetched here, bounded in bytes and time: geopandas reads any body, with no timeout
            import io

            from ..read.stac import fetch

            aoi = io.BytesIO(fetch(name, what="the AOI"))
        try:
            with warnings.catch_warnings():  # shapely's RuntimeWarning on NaN coordinates: refused below instead
                warnings.simplefilter("ignore", RuntimeWarning)
                gdf = gpd.read_file(aoi)
        except Exception as e:  # pyogrio raises several types for unreadable files
            raise AtlasError(f"{name}: not a readable vector file ({str(e).splitlines()[0]})") from None
        if gdf.crs is None:
            raise AtlasError(f"{name}: the AOI has no CRS")
    xy = shapely.get_coordinates(gdf.geometry.values)
    if not np.isfinite(xy).all():
        raise AtlasError(f"{name}: the AOI has a coordinate that is not a number (NaN or infinite)")
    degrees = (np.abs(xy[:, 0]) <= 180) & (np.abs(xy[:, 1]) <= 90)
    if gdf.crs.is_geographic and not degrees.all():
        x, y = xy[np.argmin(degrees)]  # the first point that is not lon / lat
        how = ("pass the CRS they are in with --aoi-crs" if bbox else "a GeoJSON file is read as WGS 84 lon / lat "
               "unless it names another CRS (RFC 7946): give degrees, or save it as a GeoPackage with its CRS")
        raise AtlasError(f"{name}: ({x:.10g}, {y:.10g}) is not a longitude / latitude in {gdf.crs.to_string()}; {how}")
    return gdf if crs is None else gdf.to_crs(crs)


def wgs84_bounds(features) -> tuple[float, float, float, float]:
    """The AOI's bounds in lon / lat (what classify's `bbox` takes with its default CRS)."""
    return tuple(float(v) for v in features.to_crs(4326).total_bounds)


def _te(m: ClassMap) -> str:
    """gdalwarp's -te (xmin ymin xmax ymax) of a map's cells: a scene warped onto it lands on its grid."""
    (x0, y0), (x1, y1) = m.transform * (0, 0), m.transform * (m.shape[1], m.shape[0])
    return f"{min(x0, x1):.0f} {min(y0, y1):.0f} {max(x0, x1):.0f} {max(y0, y1):.0f}"


def on_lattice(ta: Affine, tb: Affine) -> bool:
    """Whether two grids (their cells' transforms, one CRS) have one cell size and cell edges."""
    return (ta.a, ta.e) == (tb.a, tb.e) and not ((tb.c - ta.c) / ta.a) % 1 and not ((tb.f - ta.f) / ta.e) % 1


def scenes_on_one_grid(periods: list, aoi_wgs84, folder: Path, stride: int, bands: str | None = None,
                       write: bool = True, opened: dict | None = None) -> tuple[list, str | None]:
    """The periods' inputs as given where any is not a scene (a classify output, or a mosaic: already
    on the AOI's grid) or where every scene's map would share one grid (one CRS, `stride`-pixel cells
    on one lattice); else, so that tiles of two UTM zones (or of one zone,
    their origins between cells) compare, each scene as a mosaic file of it alone in `folder`, on the
    AOI's grid (read.mosaic: its UTM zone at 10 m, bands warped by GDAL; not `write`: their paths
    alone). `opened` (path -> Scene) receives the scenes opened here, for the caller to reuse.
    -> (the periods' inputs, a sentence saying what was done, or None)."""
    from ..read import open_scene
    from ..read.mosaic import is_mosaic

    srcs = [str(s) for p in periods for s in ([p] if isinstance(p, (str, os.PathLike)) else p)]
    if any(is_mosaic(s) or is_output_folder(Path(s)) for s in srcs):  # (neither is a URL)
        return periods, None
    scenes = {s: open_scene(s, None, bands) for s in dict.fromkeys(srcs)}
    if opened is not None:
        opened.update(scenes)
    first = next(iter(scenes.values()))
    cell = Affine.scale(stride)
    if all(sc.crs == first.crs and on_lattice(first.affine * cell, sc.affine * cell) for sc in scenes.values()):
        return periods, None
    made = {s: str(mosaic_of_one(s, sc.date, aoi_wgs84, folder, write)) for s, sc in scenes.items()}
    crss = sorted({sc.crs.to_string() for sc in scenes.values()})
    note = (f"the scenes' grids differ ({', '.join(crss)}{'' if len(crss) > 1 else ', origins between cells'}): "
            f"{regrid_note(aoi_wgs84, folder)}")
    return [made[str(p)] if isinstance(p, (str, os.PathLike)) else [made[str(s)] for s in p] for p in periods], note


def mosaic_of_one(src: str, date: str | None, aoi_wgs84, folder: Path, write: bool = True) -> Path:
    """`folder`/<scene name>_<hash>.mosaic.json: a mosaic file of the scene `src` alone, on the AOI's
    grid, written unless not `write` (its path alone)."""
    from ..mapping.pipeline import scene_stem
    from ..read import input_path
    from ..read.mosaic import SUFFIX, aoi_grid, write_mosaic

    crs, t, w, h = aoi_grid(aoi_wgs84)
    path = folder / f"{scene_stem(src)}_{digest(input_path(src), crs.to_string(), tuple(t), w, h, n=8)}{SUFFIX}"
    if write:
        write_mosaic(path, date, [input_path(src)], aoi_wgs84)
    return path


def regrid_note(aoi_wgs84, folder: Path) -> str:
    """The end of the sentence that says scenes are read on the AOI's grid as one-scene mosaics."""
    from ..read.mosaic import aoi_grid

    return (f"each is read on the AOI's grid instead ({aoi_grid(aoi_wgs84)[0].to_string()}, 10 m; its bands warped "
            f"by GDAL), as a mosaic file in {folder}")


def common_grid(maps: list[ClassMap], aoi) -> tuple[Affine, tuple[int, int]]:
    """The cells of the maps' shared grid that cover the AOI; errors when the maps' grids differ."""
    a = maps[0]
    ta = a.transform
    for b in maps[1:]:
        if a.crs != b.crs:
            raise AtlasError(f"{b.folder}: CRS {b.crs.to_string()} differs from {a.folder}'s {a.crs.to_string()}; "
                             "aligning them would resample the class map: give compare the scenes themselves (it reads "
                             "them on the AOI's grid), or classify both dates from scenes on one grid "
                             f"(warp the scene, not its map, onto the other's: gdalwarp -t_srs {a.crs.to_string()} -tr 10 "
                             f"10 -te {_te(a)} -r cubic SCENE OUT.tif)")
        tb = b.transform
        if not on_lattice(ta, tb):
            raise AtlasError(f"{b.folder}: its grid (cell {tb.a:g} m, origin {tb.c:.2f}, {tb.f:.2f}) is not aligned "
                             f"with {a.folder}'s (cell {ta.a:g} m, origin {ta.c:.2f}, {ta.f:.2f}); use the same stride "
                             "and tile grid")
    minx, miny, maxx, maxy = aoi.bounds
    for m in maps:
        bx0, by1 = m.transform.c, m.transform.f
        bx1, by0 = bx0 + m.shape[1] * m.transform.a, by1 + m.shape[0] * m.transform.e
        minx, miny, maxx, maxy = max(minx, bx0), max(miny, by0), min(maxx, bx1), min(maxy, by1)
    if minx >= maxx or miny >= maxy:
        raise AtlasError("the AOI does not overlap every map (check the AOI's CRS and the scenes' footprints)")
    sx, sy = ta.a, -ta.e
    eps = 1e-6  # cells; AOI vertices that went through a reprojection land a hair off the cell edges
    col0 = np.floor((minx - ta.c) / sx + eps)
    col1 = np.ceil((maxx - ta.c) / sx - eps)
    row0 = np.floor((ta.f - maxy) / sy + eps)
    row1 = np.ceil((ta.f - miny) / sy - eps)
    transform = Affine(sx, 0, ta.c + col0 * sx, 0, -sy, ta.f - row0 * sy)
    return transform, (int(row1 - row0), int(col1 - col0))


def days_of_year_apart(a: Side, b: Side) -> int:
    """Days between two sides' (median) days of year, the shorter way round the year (0..183)."""
    gap = abs(a.day_of_year() - b.day_of_year())
    return min(gap, 365 - gap)


def check_dates(a: Side, b: Side) -> None:
    """Periods (or dates) in order, apart, and in one season, else a warning: one map on both sides, or
    both sides of one day, cannot show change; dates whose days of year (the periods' medians) are more
    than SEASON_DAYS apart are compared with a warning, since most of what changes between seasons is
    phenology, not land use."""
    both = sorted({os.path.realpath(m.folder) for m in a.maps} & {os.path.realpath(m.folder) for m in b.maps})
    if both:
        warnings.warn(f"{both[0]}: the same map is on both sides ({len(both)} of them): a map compared with itself "
                      "shows no change; give the other date's scene", AtlasWarning, stacklevel=3)
    elif a.dates[-1] > b.dates[0]:
        warnings.warn(f"{a.folder}: the 'before' date {a.dates[-1]} is later than the 'after' date {b.dates[0]}",
                      AtlasWarning, stacklevel=3)
    elif a.dates[-1] == b.dates[0]:
        warnings.warn(f"{b.folder}: the 'after' date {b.dates[0]} is the 'before' date: two scenes of one day "
                      "show no change of land, only differences between the scenes", AtlasWarning, stacklevel=3)
    gap = days_of_year_apart(a, b)
    if gap > SEASON_DAYS:
        warnings.warn(f"{b.folder}: {b.label} is {gap} days of the year from {a.label} (more than {SEASON_DAYS}): "
                      "crops, grass and leaves differ between seasons, so much of the change may be phenology; "
                      "compare the same season of each year, or periods of several dates", AtlasWarning, stacklevel=3)


def decide(la, lb, p_change, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(valid: labelled on both dates, decided: valid and P(change) or P(no change) at least
    `threshold`); change counts only where decided, the rest of the valid cells is uncertain."""
    valid = (la > 0) & (lb > 0)
    with np.errstate(invalid="ignore"):  # NaN of unlabelled cells
        return valid, valid & ((p_change >= threshold) | (1 - p_change >= threshold))


def decide_per_date(la, lb, ca, cb, min_confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The rule of compare outputs made before the joint decision (no p_change.tif): decided where
    both dates' top-1 probabilities are at least `min_confidence`."""
    valid = (la > 0) & (lb > 0)
    with np.errstate(invalid="ignore"):
        return valid, valid & (ca >= min_confidence) & (cb >= min_confidence)


def grid_tolerance(changed: np.ndarray, valid: np.ndarray, cell_ha: float,
                   uncertain: np.ndarray | None = None) -> dict:
    """How far the changed (and uncertain) hectares can move with the stride or where the grid
    falls (docs/change.md, *Stride*): the band half a cell wide along the outline of those cells
    within the valid ones (each side shared with another valid cell: half a cell's area)."""
    def band(mask: np.ndarray) -> float:
        n = int(((mask[1:] != mask[:-1]) & valid[1:] & valid[:-1]).sum())
        n += int(((mask[:, 1:] != mask[:, :-1]) & valid[:, 1:] & valid[:, :-1]).sum())
        return hectares(n * cell_ha / 2)

    return {"changed_ha": band(changed), **({"uncertain_ha": band(uncertain)} if uncertain is not None else {}),
            "definition": "+- hectares of a band half a cell wide along the outline of the changed (uncertain) "
                          "cells: a cell places a boundary only to within half its width, so changed_ha "
                          "(uncertain_ha) can move by that much with the stride or where the grid falls"}


def read_decided(folder: Path) -> dict:
    """A compare output's before / after classes with its valid and confident cells, decided again
    from its rasters as `compare` decided them (view and sample draw on them), its grid and summary."""
    summary = read_json(folder / "summary.json", SUMMARY_KEYS)
    la, t, crs, _ = read_raster(folder / "before.tif")
    lb = read_raster(folder / "after.tif")[0]
    threshold = float(summary.get("min_confidence", 0))
    if (folder / "p_change.tif").exists():
        valid, confident = decide(la, lb, read_raster(folder / "p_change.tif")[0], threshold)
    else:  # made before the joint decision
        ca, cb = (read_raster(folder / f"{p}_confidence.tif")[0] for p in ("before", "after"))
        valid, confident = decide_per_date(la, lb, ca, cb, threshold)
    return {"before": la, "after": lb, "valid": valid, "confident": confident, "transform": t, "crs": crs,
            "summary": summary}


def transition_rows(names, la, lb, valid, confident, cell_ha) -> list[str]:
    """The from-to table in hectares over the valid cells: decided cells by before (rows) and
    after (columns) class, the uncertain ones (valid, neither changed nor unchanged decided) in their
    own column by before class and row by after class; every row and column sums to its total."""
    n = len(names)
    matrix = np.bincount((la[confident] - 1).astype(int) * n + (lb[confident] - 1), minlength=n * n).reshape(n, n)
    unsure = valid & ~confident
    u_a, u_b = (np.bincount(x[unsure], minlength=n + 1)[1:] for x in (la, lb))
    tot_a, tot_b = (np.bincount(x[valid], minlength=n + 1)[1:] for x in (la, lb))

    def line(label, values):
        return label + "," + ",".join("" if v is None else f"{hectares(v * cell_ha):.2f}" for v in values)

    rows = ["from\\to," + ",".join(names) + ",uncertain_ha,total_before_ha"]
    rows += [line(c, [*matrix[i], u_a[i], tot_a[i]]) for i, c in enumerate(names)]
    rows.append(line("uncertain_ha", [*u_b, unsure.sum(), None]))
    rows.append(line("total_after_ha", [*tot_b, None, valid.sum()]))
    return rows


def _read_on(m: ClassMap, name: str, transform: Affine, shape: tuple[int, int], fill):
    """`name` of map `m` on the compare grid; all `fill` where the map has no such file (cloud.tif
    of results made before cloud masking)."""
    bounds = (transform.c, transform.f + shape[0] * transform.e, transform.c + shape[1] * transform.a, transform.f)
    if not (Path(m.folder) / name).exists():
        return np.full(shape, fill)
    with rasterio.open(Path(m.folder) / name) as src:
        win = from_bounds(*bounds, transform=src.transform).round_offsets().round_lengths()
        return src.read(1, window=win, boundless=True, fill_value=fill)


def resolve_side(srcs, dates, flag: str, out_root: Path, opened: dict | None = None, **classify_kw) -> Side:
    """One side of a comparison: a scene or classify output folder, or a list of them (a period),
    each with its date from `dates` (one date, or one per source; None: from its metadata);
    `opened`: path -> Scene of those opened already."""
    srcs = [srcs] if isinstance(srcs, (str, os.PathLike)) else list(srcs)
    if len(srcs) > 1 and dates is not None and not isinstance(dates, (list, tuple)):
        raise AtlasError(f"{flag}: one date given for a period of {len(srcs)} scenes; give one per scene")
    dates = dates if isinstance(dates, (list, tuple)) else [dates] * len(srcs)
    if not srcs or len(dates) != len(srcs):
        raise AtlasError(f"{flag}: {len(dates)} dates given for {len(srcs)} scenes")
    dates = [user_date(d, flag) for d in dates]  # two tiles of one day: two scenes, one date each
    maps = [resolve_input(s, d, out_root, (opened or {}).get(str(s)), **classify_kw) for s, d in zip(srcs, dates)]
    seen: dict[str, ClassMap] = {}
    for m in maps:  # one map given twice is one observation, not two
        key = os.path.realpath(m.folder)
        if key in seen:
            warnings.warn(f"{m.folder}: given twice for one period; counted once", AtlasWarning, stacklevel=3)
        seen.setdefault(key, m)
    return make_side(list(seen.values()), flag)


def compare(before, after, *, before_date=None, after_date=None, **kw) -> dict:
    """Compare two dates, or two periods, over an AOI; returns the summary dict and, with `out`,
    writes before.tif, after.tif (+ _confidence, _probabilities, _observations), change.tif,
    p_change.tif, p_conversion.tif, the transition tables and summary.json there (all or nothing).
    `before` / `after`: a scene or classify output, or a list of them (a period, composite.py);
    `before_date` / `after_date`: YYYY-MM-DD, one per scene of a period (default: from each one's
    metadata). Change is decided from both sides together (joint.py): `stay` is the transition
    prior's probability of keeping a class, `min_confidence` the posterior probability that a
    decision (changed, or unchanged) needs; None: the prior fitted to the maps' model (resolve_stay).
    Other keywords: `compare_periods`'s."""
    return compare_periods([before, after], [before_date, after_date], flags=("--before-date", "--after-date"), **kw)


def compare_periods(periods: list, dates: list | None = None, *, aoi: str | None = None,
                    aoi_bbox: str | None = None, aoi_crs: str = "EPSG:4326", out: str | os.PathLike | None = None,
                    min_confidence: float = DEFAULT_THRESHOLD, stay: float | None = None,
                    allow_model_mismatch: bool = False, flags: tuple[str, ...] | None = None,
                    period_evidence: str = "product", **classify_kw) -> dict:
    """Compare a sequence of dates or periods (each a scene or classify output, or a list of them)
    over an AOI, every cell's class history decided from all of them together (forward-backward
    over the periods with the transition prior: joint.py). Two: as `compare`. More: `out` holds one
    compare folder per step (`<first date>_<first date>`), `span_<first>_<last>` (the first period
    against the last, from the posterior of their two classes given every period), sequence.tif (the
    most probable class of each period, Viterbi) and summary.json (every step's figures); returns
    that summary. `dates`: per period one date, or one per scene, or None (from the metadata)."""
    check_decision(min_confidence, stay)
    if len(periods) < 2:
        raise AtlasError(f"compare: {len(periods)} period given; give two or more")
    if period_evidence not in EVIDENCE:
        raise AtlasError(f"--period-evidence {period_evidence!r}: choose one of {', '.join(EVIDENCE)}")
    dates = list(dates) if dates is not None else [None] * len(periods)
    flags = flags or tuple(f"--period-dates (period {k + 1})" for k in range(len(periods)))
    out_root = Path(out).parent if out else Path("outputs")
    aoi_features = read_aoi_frame(aoi, aoi_bbox, aoi_crs, None)  # read once: bounds now, features on the grid below
    classify_kw = {"bbox": wgs84_bounds(aoi_features), "bbox_crs": "EPSG:4326", **classify_kw}
    opened: dict = {}  # the scenes opened to check their grids, opened once
    with new_files_undone(out_root / "mosaics"):  # a compare that fails keeps no mosaic it wrote
        periods, regridded = scenes_on_one_grid(periods, aoi_union(aoi_features.to_crs(4326), aoi or "--aoi-bbox"),
                                                out_root / "mosaics", classify_kw.get("stride", 64),
                                                classify_kw.get("bands"), opened=opened)
        if regridded:
            warnings.warn(regridded, AtlasWarning, stacklevel=3)
        sides = [resolve_side(p, d, f, out_root, opened, **classify_kw) for p, d, f in zip(periods, dates, flags)]
        if sides[0].crs.is_geographic:
            raise AtlasError(f"{sides[0].first.folder}: geographic CRS; areas need a projected CRS")
        features = aoi_features.to_crs(sides[0].crs)
        geom = aoi_union(features, aoi or "--aoi-bbox")
        transform, shape = common_grid([m for s in sides for m in s.maps], geom)  # one CRS and grid, before figures
        if (outside := outside_scenes_ha(sides, geom)) > 0.01 * geom.area / 1e4:
            warnings.warn(f"{aoi or '--aoi-bbox'}: {outside:.2f} of the AOI's {geom.area / 1e4:.2f} ha lie outside the "
                          "scenes of some date and were not looked at (summary.json outside_scene_ha)", AtlasWarning,
                          stacklevel=3)
        for a, b in zip(sides, sides[1:]):  # on one grid: then how each was made (a stride's temperature is no warning)
            check_pair(a, b, allow_model_mismatch)
        grid = Grid(transform, shape, sides[0].crs, geom, geometry_mask([geom], out_shape=shape, transform=transform,
                                                                            invert=True))
        comps = [composite(s, transform, shape, grid.in_aoi, _read_on, period_evidence) for s in sides]
        probs = [k["probabilities"] for k in comps]
        stay = resolve_stay(stay, sides)
        decisions, span_decision = decide_chain(probs, stay[0], min_confidence, span=len(sides) > 2)
        steps = [step_result(sides[k], sides[k + 1], comps[k], comps[k + 1], decisions[k], grid, min_confidence, stay,
                             period_evidence)
                 for k in range(len(sides) - 1)]
        if len(sides) == 2:
            if out is not None:
                with staged_output(out) as stage:
                    _write_compare(stage, *steps[0], grid, features)
            return steps[0][-1]
        span = step_result(sides[0], sides[-1], comps[0], comps[-1], span_decision, grid, min_confidence, stay,
                           period_evidence)
        names = ([f"{a.dates[0]}_{b.dates[0]}" for a, b in zip(sides, sides[1:])]
                 + [f"span_{sides[0].dates[0]}_{sides[-1].dates[0]}"])
        history = np.where(np.stack([k["lulc"] > 0 for k in comps]), viterbi(probs, stay[0]), 0).astype(np.uint8)
        summary = sequence_summary(sides, names, [*steps, span], stay, min_confidence)
        if out is not None:
            with staged_output(out) as stage:
                for name, result in zip(names, [*steps, span]):
                    (stage / name).mkdir()
                    _write_compare(stage / name, *result, grid, features)
                write_cog(stage / "sequence.tif", history, transform, grid.crs, 0,
                          {f"CLASS_{i + 1}": c for i, c in enumerate(CLASSES)}, [s.label for s in sides],
                          class_categories())
                write_file(stage / "summary.json", lambda p: p.write_text(strict_json(summary)))
        return summary


@dataclass(frozen=True)
class Grid:
    """The compare grid: its transform, shape, CRS, the AOI (one geometry in that CRS) and the
    cells whose centre lies in it."""

    transform: Affine
    shape: tuple[int, int]
    crs: CRS
    geom: object
    in_aoi: np.ndarray


def outside_scenes_ha(sides: list[Side], geom) -> float:
    """Hectares of the AOI that no date of some side looked at (outside its scenes): for each side
    the union of its maps' scene footprints, intersected over the sides."""

    cover = None
    for s in sides:
        boxes = []
        for m in s.maps:
            t, (h, w) = m.transform, m.shape
            fp = m.footprint or (t.c, t.f + h * t.e, t.c + w * t.a, t.f)  # older outputs: the map's own bounds
            boxes.append(shapely.box(*fp))
        side = shapely.union_all(boxes)
        cover = side if cover is None else shapely.intersection(cover, side)
    return hectares(max(0.0, geom.area - shapely.intersection(geom, cover).area) / 1e4)


def check_pair(a: Side, b: Side, allow_model_mismatch: bool) -> None:
    """Warnings where two consecutive sides were made differently (--tta, calibration, seasons);
    AtlasError where by different model weights, unless allowed."""
    if a.tta_views != b.tta_views:
        warnings.warn(f"{b.folder}: classified with --tta {b.tta_views} but {a.folder} with --tta {a.tta_views}: "
                      "some label differences may come from that, not from the land", AtlasWarning, stacklevel=3)
    int8 = {s.label: s.first.precision for s in (a, b) if "int8" in s.first.precision}
    if int8 and len(int8) == 1:  # one side by the int8 network, the other by the float one: not one model
        warnings.warn(f"{b.folder}: one side was classified by the model's int8 network and the other by its float "
                      f"one ({a.first.precision or 'not recorded'} / {b.first.precision or 'not recorded'}): some label "
                      "differences may come from that, not from the land; classify both with one --runtime",
                      AtlasWarning, stacklevel=3)
    if (a.temperature, a.cell_temperature) != (b.temperature, b.cell_temperature):
        warnings.warn(f"{b.folder}: confidences calibrated with temperatures {b.temperature:g} (patches) and "
                      f"{b.cell_temperature:g} (cells) but {a.folder}'s with {a.temperature:g} and {a.cell_temperature:g} "
                      "(same labels): the change posteriors may differ for that reason; "
                      "reclassify the older date", AtlasWarning, stacklevel=3)
    check_dates(a, b)
    if a.weights_sha256 != b.weights_sha256 and not allow_model_mismatch:
        raise AtlasError(f"{b.folder}: made by model {b.model} ({b.weights_sha256[:12]}) but {a.folder} by "
                         f"{a.model} ({a.weights_sha256[:12]}); differences would mix model and land change. "
                         "Reclassify with one model, or pass --allow-model-mismatch")


def step_result(a: Side, b: Side, ka: dict, kb: dict, joint: dict, grid: Grid, min_confidence: float,
                stay: tuple[float, str], period_evidence: str = "product") -> tuple:
    """One step's maps, change code, posteriors and tables from its decision `joint`
    (joint.decide_step) -> (before, after, code, tables, posteriors, summary): the arguments of
    `_write_compare` before the grid, and the summary last."""
    transform, shape, in_aoi, geom = grid.transform, grid.shape, grid.in_aoi, grid.geom
    ka, kb = dict(ka), dict(kb)  # a period's composite serves the steps on either side of it
    mismatch = a.weights_sha256 != b.weights_sha256
    cloud_a, cloud_b = ka["cloud"], kb["cloud"]
    snow_a, snow_b = ka["snow"], kb["snow"]
    valid = (ka["lulc"] > 0) & (kb["lulc"] > 0)
    for k, side_ in (("before", ka), ("after", kb)):  # both dates' labels and their posteriors, jointly decided
        side_["lulc"] = np.where(valid, joint[k], side_["lulc"]).astype(side_["lulc"].dtype)
        side_["confidence"] = np.where(valid, joint[f"{k}_p"], side_["confidence"]).astype(np.float32)
    p_change = np.where(valid, joint["p_change"], np.nan).astype(np.float32)
    p_conversion = np.where(valid, joint["p_conversion"], np.nan).astype(np.float32)
    la, lb = ka["lulc"], kb["lulc"]
    valid, confident = decide(la, lb, p_change, min_confidence)
    changed = confident & (la != lb)
    code = np.where(changed, la.astype(np.uint16) * 100 + lb, 0).astype(np.uint16)
    ga, gb = group_of(la), group_of(lb)
    converted = confident & (ga != gb)
    cell_ha = abs(transform.a * transform.e) / 1e4
    ha = lambda mask: hectares(mask.sum() * cell_ha)  # noqa: E731
    groups = {}
    for i, g in enumerate(GROUP_NAMES, 1):
        groups[g] = {"before_ha": ha(valid & (ga == i)), "after_ha": ha(valid & (gb == i)),
                     "net_change_ha": hectares(ha(valid & (gb == i)) - ha(valid & (ga == i)))}
    conversions = {f"{GROUP_NAMES[f - 1]} -> {GROUP_NAMES[t - 1]}": ha(converted & (ga == f) & (gb == t))
                   for f in range(1, 5) for t in range(1, 5) if f != t and (converted & (ga == f) & (gb == t)).any()}

    def side(s: Side, k: dict) -> dict:
        obs = k["observations"][k["lulc"] > 0]
        return {"source": s.first.folder, "date": s.dates[0], "model": s.model, "weights_sha256": s.weights_sha256,
                "tta_views": s.tta_views, "temperatures": {"patch": s.temperature, "cell": s.cell_temperature},
                "inference_precision": s.first.precision or None, "sources": [m.folder for m in s.maps], "dates": s.dates, "period": s.label,
                "observations": {"mean": round(float(obs.mean()), 2) if obs.size else 0,
                                 "min": int(obs.min(initial=len(s.maps)))}}

    summary = {
        "before": side(a, ka), "after": side(b, kb),
        "model_mismatch": mismatch, "days_of_year_apart": days_of_year_apart(a, b),
        "composite": "per cell the class probabilities of the dates on which it is labelled (valid and clear) "
                     "combined as set by period_evidence: 'product' (each date evidence for the period's one class: "
                     "multiplied and normalised) or 'mean' (averaged); the evidence of the change decision",
        "period_evidence": period_evidence,
        "crs": a.crs.to_string(), "transform": list(transform)[:6], "shape": list(shape), "cell_area_ha": cell_ha,
        "area_definition": "every hectare figure counts the map cells (cell_area_ha each) whose centre is in the AOI "
                           "(and, for labels, cloud and snow, in the scene: a map's last row and column of cells reach "
                           "past the scene's edge)",
        "min_confidence": min_confidence,
        "change_decision": {"rule": "joint posterior over (before class, after class) from both sides' calibrated "
                                    "probabilities and a transition prior; changed where P(change) >= min_confidence, "
                                    "unchanged where P(no change) >= min_confidence, uncertain otherwise; from / to "
                                    "the most probable pair of the decision (before.tif, after.tif)",
                            "stay": stay[0], "stay_source": stay[1], "threshold": min_confidence,
                            "prior": PRIOR_SOURCE,
                            "p_change_mean": round(float(np.nanmean(p_change)), 4) if valid.any() else None},
        "aoi_ha": hectares(geom.area / 1e4), "aoi_cells_ha": ha(in_aoi),
        "outside_scene_ha": outside_scenes_ha([a, b], geom),
        "cloud_ha": ha(cloud_a | cloud_b), "cloud_before_ha": ha(cloud_a), "cloud_after_ha": ha(cloud_b),
        "snow_ha": ha((snow_a | snow_b) & ~cloud_a & ~cloud_b),
        "snow_before_ha": ha(snow_a), "snow_after_ha": ha(snow_b),
        "nodata_ha": ha(in_aoi & ~valid & ~cloud_a & ~cloud_b & ~snow_a & ~snow_b),
        "valid_ha": ha(valid), "confident_ha": ha(confident), "uncertain_ha": ha(valid & ~confident),
        "changed_ha": ha(changed), "conversion_ha": ha(converted), "within_group_change_ha": ha(changed & ~converted),
        "grid_tolerance": grid_tolerance(changed, valid, cell_ha, valid & ~confident),
        "net_change_ha": {c: hectares(ha(valid & (lb == i)) - ha(valid & (la == i)))
                          for i, c in enumerate(CLASSES, 1)},
        "net_change_definition": "after_ha - before_ha of each class (group) over the valid cells (labelled on "
                                 "both sides), decided and uncertain alike",
        "classes": {c: {"before_ha": ha(valid & (la == i)), "after_ha": ha(valid & (lb == i))}
                    for i, c in enumerate(CLASSES, 1)},
        "groups": groups, "group_conversions_ha": conversions,
        "group_definition": "CORINE Land Cover level 1: artificial = Highway, Industrial, Residential; agricultural = "
                            "AnnualCrop, PermanentCrop, Pasture; forest and semi-natural = Forest, HerbaceousVegetation; "
                            "water = River, SeaLake",
        "change_code": CHANGE_CODE_DOC,
    }
    tables = {"transitions.csv": transition_rows(CLASSES, la, lb, valid, confident, cell_ha),
              "transitions_groups.csv": transition_rows(GROUP_NAMES, ga, gb, valid, confident, cell_ha)}
    return ka, kb, code, tables, {"p_change.tif": p_change, "p_conversion.tif": p_conversion}, summary


def sequence_summary(sides: list[Side], names: list[str], results: list[tuple], stay: tuple[float, str],
                     min_confidence: float) -> dict:
    """summary.json of a sequence of more than two periods: the periods, and each step's (and the
    span's) folder and main figures (the full ones in its own summary.json)."""
    keys = ("valid_ha", "changed_ha", "conversion_ha", "uncertain_ha", "cloud_ha", "net_change_ha")

    def brief(name, r):
        s = r[-1]
        return {"folder": name, "before": s["before"]["period"], "after": s["after"]["period"],
                **{k: s[k] for k in keys}}

    return {"periods": [{"period": s.label, "dates": s.dates, "sources": [m.folder for m in s.maps]} for s in sides],
            "steps": [brief(n, r) for n, r in zip(names, results[:-1])], "span": brief(names[-1], results[-1]),
            "sequence": "sequence.tif: per period (one band each) the class of the most probable class history "
                        "of each cell (Viterbi over the periods with the transition prior); 0 where the period saw "
                        "the cell on no date",
            "change_decision": {**results[0][-1]["change_decision"], "span": "the span's decision is the first "
                                "period's class against the last's, from their joint posterior given every period"},
            "stay": stay[0], "stay_source": stay[1], "min_confidence": min_confidence, "model": sides[0].model,
            "weights_sha256": sides[0].weights_sha256}


def _write_compare(stage: Path, ka, kb, code, tables, posteriors: dict, summary: dict, grid: Grid, features):
    """One compare output's files written into `stage` (an empty folder)."""
    transform, crs = grid.transform, grid.crs
    stamp = {"BEFORE_MODEL": summary["before"]["model"], "BEFORE_WEIGHTS_SHA256": summary["before"]["weights_sha256"],
             "AFTER_MODEL": summary["after"]["model"], "AFTER_WEIGHTS_SHA256": summary["after"]["weights_sha256"],
             "BEFORE_DATE": " ".join(summary["before"]["dates"]), "AFTER_DATE": " ".join(summary["after"]["dates"]),
             "MODEL_MISMATCH": str(summary["model_mismatch"]).lower()}
    names = {f"CLASS_{i + 1}": c for i, c in enumerate(CLASSES)}
    for name, k in (("before", ka), ("after", kb)):
        arr = k["lulc"]
        write_cog(stage / f"{name}.tif", arr, transform, crs, 0, {**names, **stamp}, "class_id",
                  class_categories())
        write_cog(stage / f"{name}_confidence.tif", np.where(arr > 0, k["confidence"], np.nan).astype(np.float32),
                  transform, crs, float("nan"), stamp, "class_posterior_given_both_sides")
        write_cog(stage / f"{name}_probabilities.tif", k["probabilities"].transpose(2, 0, 1), transform, crs,
                  float("nan"), {**names, **stamp}, list(CLASSES))
        write_cog(stage / f"{name}_observations.tif", k["observations"], transform, crs, None, stamp,
                  "clear_observations")
        # the side's own sky on the compare grid (a period's composite: cloud only where no date saw the ground)
        write_cog(stage / f"{name}_cloud.tif", sky_codes(arr, k["cloud"], k["snow"]), transform, crs, SKY_NODATA,
                  {**stamp, "CLOUD_CODES": CLOUD_DOC}, "cloud_masked", SKY_CATEGORIES)
    for name, arr in posteriors.items():
        write_cog(stage / name, arr, transform, crs, float("nan"), stamp, name.removesuffix(".tif"))
    write_cog(stage / "change.tif", code, transform, crs, 0, {**names, **stamp, "CHANGE_CODE": CHANGE_CODE_DOC},
              "change_code", change_categories())
    for name, rows in tables.items():
        write_file(stage / name, lambda p, rows=rows: p.write_text("\n".join(rows) + "\n"))
    write_file(stage / "summary.json", lambda p: p.write_text(strict_json(summary)))
    write_file(stage / "aoi.geojson", lambda p: display_aoi(features, transform.a).to_file(p, driver="GeoJSON"))


def display_aoi(features, cell_m: float, max_vertices: int = MAX_AOI_VERTICES):
    """The AOI's own features and attributes for aoi.geojson (and the GeoPackage and map made from it);
    one of more than `max_vertices` vertices simplified to a tenth of a cell, so that every GeoJSON
    reader opens it (a drawing of the AOI: every figure is computed on the full AOI)."""
    if len(shapely.get_coordinates(features.geometry.values)) <= max_vertices:
        return features
    return features.assign(geometry=features.geometry.simplify(abs(cell_m) / 10, preserve_topology=True))
