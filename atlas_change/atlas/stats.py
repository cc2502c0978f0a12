"""Hectares per administrative unit. A unit's hectares are the atlas cells whose centre lies in it
(one area definition, `grid.unit_index`), each cell counted once, in the equal-area grid's own
cell area: per period a cell is one of the ten classes (labelled and at least `min_confidence`
sure), `uncertain` (labelled, less sure), `cloud`, `snow` (seen, not labelled) or `nodata` (no tile
saw it), so that a unit's rows of one period sum to its area; per step of the change, a cell's
from-to pair where the joint decision is made, `uncertain` where it is not, `nodata` where a side
has no label."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..classes import CLASSES, GROUP_NAMES, group_of
from ..errors import AtlasError
from ..outputs import SKY_SNOW, atomic_write, cloud_code, csv_text, hectares, read_json, read_raster
from .grid import Grid, unit_index

#: the categories of a period's cells after the ten classes (ids 11..14)
OTHER = ("uncertain", "cloud", "snow", "nodata")
CATEGORIES = (*CLASSES, *OTHER)


def read_units(path: str | Path, field: str):
    """The units (any vector file GDAL reads, any CRS) as a GeoDataFrame with `unit` (from `field`)
    and `geometry`; AtlasError naming the file for what would make the figures wrong."""
    import geopandas as gpd
    import shapely

    try:
        gdf = gpd.read_file(path)
    except Exception as e:  # noqa: BLE001  (pyogrio raises several types)
        raise AtlasError(f"{path}: not a readable vector file ({str(e).splitlines()[0][:160]})") from None
    if gdf.crs is None:
        raise AtlasError(f"{path}: the units have no CRS")
    if field not in gdf.columns:
        raise AtlasError(f"{path}: no field {field!r} (--unit-field); fields: "
                         f"{', '.join(c for c in gdf.columns if c != gdf.geometry.name) or 'none'}")
    if len(gdf) == 0:
        raise AtlasError(f"{path}: no units")
    ids = gdf[field]
    if ids.isna().any():
        raise AtlasError(f"{path}: {int(ids.isna().sum())} unit(s) without a {field}")
    ids = ids.astype(str)
    if ids.duplicated().any():
        raise AtlasError(f"{path}: {field} {ids[ids.duplicated()].iloc[0]!r} names more than one unit; "
                         "merge them or choose a field that tells units apart")
    geom = gdf.geometry
    if geom.isna().any() or geom.is_empty.any():
        raise AtlasError(f"{path}: {int((geom.isna() | geom.is_empty).sum())} unit(s) without a geometry")
    if not np.isfinite(shapely.get_coordinates(geom.values)).all():
        raise AtlasError(f"{path}: a unit has a coordinate that is not a number")
    return gpd.GeoDataFrame({"unit": ids.values}, geometry=shapely.make_valid(geom.values), crs=gdf.crs)


def overlap_ha(units, crs) -> float:
    """Hectares where units overlap one another (the sum of their areas less the area of their union), in
    `crs` (the atlas grid's, equal-area by default); unit_index counts a cell there in the first unit."""
    projected = units.to_crs(crs).geometry
    return max(0.0, float(projected.area.sum() - projected.union_all().area) / 1e4)


def period_categories(folder: Path, min_confidence: float, rows: tuple[int, int], width: int) -> np.ndarray:
    """Per atlas cell of grid rows [r0, r1) its category id (1..10 classes, 11 uncertain, 12 cloud,
    13 snow, 14 nodata) from a period's lulc.tif, confidence.tif and cloud.tif; all nodata where the
    period has no map."""
    from rasterio.windows import Window

    cat = np.full((rows[1] - rows[0], width), CATEGORIES.index("nodata") + 1, np.uint8)
    if not (folder / "run.json").exists():
        return cat
    window = Window(0, rows[0], width, rows[1] - rows[0])
    lulc = read_raster(folder / "lulc.tif", window=window)[0]
    conf = read_raster(folder / "confidence.tif", window=window)[0]
    sky = read_raster(folder / "cloud.tif", window=window)[0]
    cat[sky == cloud_code(folder / "cloud.tif")] = CATEGORIES.index("cloud") + 1
    cat[sky == SKY_SNOW] = CATEGORIES.index("snow") + 1
    sure = (lulc > 0) & (np.nan_to_num(conf) >= min_confidence)
    cat[sure] = lulc[sure]
    cat[(lulc > 0) & ~sure] = CATEGORIES.index("uncertain") + 1
    return cat


def period_counts(units, grid: Grid, folder: Path, min_confidence: float) -> np.ndarray:
    """(units, categories) cell counts of one period, a band of grid rows at a time."""
    from .period import BAND_CELLS

    geoms = units.to_crs(grid.crs).geometry.values
    total = np.zeros((len(units), len(CATEGORIES)), np.int64)
    for r0, band in grid.bands(BAND_CELLS):
        index = unit_index(geoms, band.transform, (band.height, band.width))
        total += count(index, period_categories(folder, min_confidence, (r0, r0 + band.height), grid.width),
                       len(units), len(CATEGORIES))
    return total


def count(index: np.ndarray, values: np.ndarray, n_units: int, n_values: int) -> np.ndarray:
    """(units, values) cell counts: how many cells of each unit hold each value (1-based both)."""
    inside = index > 0
    flat = (index[inside].astype(np.int64) - 1) * n_values + (values[inside].astype(np.int64) - 1)
    return np.bincount(flat, minlength=n_units * n_values).reshape(n_units, n_values)


def period_model(folder: Path) -> tuple[str, str]:
    """(model name, weights SHA-256) of a period's map; empty where the period has no map."""
    if not (folder / "run.json").exists():
        return "", ""
    model = read_json(folder / "run.json", ("model",))["model"]
    return str(model.get("model", "")), str(model.get("weights_sha256", ""))


def period_rows(units, counts: np.ndarray, cell_ha: float, period: str, model: tuple[str, str] = ("", "")) -> list[list]:
    """stats.csv rows of one period from its (units, categories) `counts`: unit, period, class, group,
    cells, hectares, and the model and weights that made the period's map (every category, zeros
    too, so that every unit has the same rows)."""
    rows = []
    for u, unit in enumerate(units["unit"]):
        for k, name in enumerate(CATEGORIES):
            group = GROUP_NAMES[group_of(np.array([k + 1]))[0] - 1] if k < len(CLASSES) else name
            rows.append([unit, period, name, group, int(counts[u, k]), hectares(counts[u, k] * cell_ha), *model])
    return rows


def change_rows(units, step: str, folder: Path) -> list[list]:
    """changes.csv rows of one step: unit, step, from, to, cells, hectares over the units' cells on
    the compare grid: decided pairs (from == to: decided unchanged), `uncertain` -> `uncertain`
    where undecided, `nodata` -> `nodata` where a side has no label; and the model and weights of
    both sides (compare refuses sides of two models)."""
    from ..change.compare import read_decided

    d = read_decided(folder)
    after = read_json(folder / "summary.json", ("after",))["after"]
    model = (str(after.get("model", "")), str(after.get("weights_sha256", "")))
    index = unit_index(units.to_crs(d["crs"]).geometry.values, d["transform"], d["before"].shape)
    n = len(CLASSES)
    pair = np.where(d["confident"], (d["before"].astype(np.int64) - 1) * n + d["after"] - 1 + 1, 0)
    pair = np.where(d["valid"] & ~d["confident"], n * n + 1, pair)
    pair = np.where(~d["valid"], n * n + 2, pair)
    counts = count(index, pair, len(units), n * n + 2)
    cell_ha = abs(d["transform"].a * d["transform"].e) / 1e4
    names = [(a, b) for a in CLASSES for b in CLASSES] + [("uncertain", "uncertain"), ("nodata", "nodata")]
    rows = []
    for u, unit in enumerate(units["unit"]):
        for k, (a, b) in enumerate(names):
            if counts[u, k]:
                rows.append([unit, step, a, b, int(counts[u, k]), hectares(counts[u, k] * cell_ha), *model])
    return rows


def summed(rows: list[list], cell_ha: float) -> list[list]:
    """changes.csv rows of the bands of one step added up per unit and pair (hectares from the cells)."""
    cells: dict[tuple, int] = {}
    for unit, step, a, b, n, _, *model in rows:
        cells[(unit, step, a, b, *model)] = cells.get((unit, step, a, b, *model), 0) + n
    return [[unit, step, a, b, n, hectares(n * cell_ha), *model] for (unit, step, a, b, *model), n in cells.items()]


def write_stats(spec, units, grid: Grid) -> None:
    """stats.csv / stats.parquet (hectares per unit, period and category), changes.csv (from-to
    hectares per unit and step) and units.gpkg (the units with those figures as attributes)."""
    import pandas as pd

    from .period import change_folders

    rows = []
    for name in spec.periods:
        rows += period_rows(units, period_counts(units, grid, spec.out / name, spec.min_confidence), grid.cell_ha,
                            name, period_model(spec.out / name))
    header = ["unit", "period", "class", "group", "cells", "hectares", "model", "weights_sha256"]
    atomic_write(spec.out / "stats.csv", lambda f: f.write(csv_text([header, *rows]).encode()))
    frame = pd.DataFrame(rows, columns=header)
    atomic_write(spec.out / "stats.parquet", lambda f: frame.to_parquet(f, index=False))
    mapped = [n for n in spec.periods if (spec.out / n / "run.json").exists()]
    changes = []
    if len(mapped) >= 2 and (spec.out / "change" / "summary.json").exists():
        for step, folders in change_folders(spec, mapped).items():
            changes += summed([row for f in folders for row in change_rows(units, step, f)], grid.cell_ha)
    atomic_write(spec.out / "changes.csv", lambda f: f.write(csv_text(
        [["unit", "step", "from", "to", "cells", "hectares", "model", "weights_sha256"], *changes]).encode()))
    write_units(spec, units, frame, changes)
    from .page import write_page

    write_page(spec.out, units, frame, list(spec.periods))


def write_units(spec, units, frame, changes: list[list]) -> None:
    """units.gpkg: every unit with, per period, its hectares of each category (`<period>_<class>_ha`)
    and, per step, its hectares decided changed (`<step>_changed_ha`)."""
    import geopandas as gpd

    from ..publish.export import write_gpkg

    wide = frame.pivot_table(index="unit", columns=["period", "class"], values="hectares", aggfunc="sum")
    wide.columns = [f"{p}_{c}_ha" for p, c in wide.columns]
    gdf = units.join(wide, on="unit")
    for step in dict.fromkeys(r[1] for r in changes):
        changed = {}
        for unit, s, a, b, _, ha, *_model in changes:
            if s == step and a != b:
                changed[unit] = changed.get(unit, 0.0) + ha
        gdf[f"{step}_changed_ha"] = [hectares(changed.get(u, 0.0)) for u in gdf["unit"]]
    models = frame[frame["model"] != ""].drop_duplicates(["model", "weights_sha256"])
    gdf["model"] = ", ".join(models["model"])  # one, unless periods were mapped by different models
    gdf["weights_sha256"] = ", ".join(models["weights_sha256"])
    gdf = gpd.GeoDataFrame(gdf.drop(columns="geometry"), geometry=[as_multipolygon(g) for g in gdf.geometry],
                           crs=units.crs)
    write_gpkg({"units": gdf}, spec.out / "units.gpkg", geometry_type="MultiPolygon")


def as_multipolygon(geom):
    """The polygons of a unit's geometry as one MultiPolygon (make_valid may return a collection)."""
    import shapely

    polygons = [q for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")
                for q in shapely.get_parts(p)]
    return shapely.MultiPolygon(polygons)
