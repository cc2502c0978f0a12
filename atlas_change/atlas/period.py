"""A period's map on the atlas grid, written as a classify output (lulc.tif, confidence.tif,
cloud.tif, cells.parquet, run.json: what compare, export, view and sample read) plus
probabilities.tif and observations.tif; and the change through the periods by `compare`."""
from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import rasterio

from .. import __version__
from ..classes import CLASSES
from ..errors import AtlasError
from ..names import digest
from ..outputs import (CogWriter, MapWriter, atomic_write, build_dataset, change_categories, class_categories,
                       hectares, read_json, read_raster, staged_output, strict_json)
from .grid import Grid
from .merge import MIN_SEEN, merge_period, tile_bounds

#: the model stamp's keys (registry.ModelCard.stamp) that a period's map carries from its tiles
STAMP_KEYS = ("model", "architecture", "weights_sha256", "trained", "bands", "normalisation", "radiometry", "mean",
              "std", "temperature", "change_prior_stay")
FINGERPRINT = "atlas_inputs.json"


def inputs_key(folders: list[Path], grid: Grid) -> str:
    """A digest of what a period's map is made of: its tiles' run.json (each tile's input and model)
    and the atlas grid."""
    return digest(json.dumps([[f.name, (f / "run.json").read_text()] for f in sorted(folders)]),
                  json.dumps([grid.crs.to_string(), grid.x0, grid.y0, grid.cell, grid.width, grid.height]), n=16)


def one_model(runs: list[dict], folders: list[Path]) -> dict:
    """The model every tile was classified with; AtlasError naming two tiles that differ."""
    first = runs[0]["model"]
    for run, f in zip(runs[1:], folders[1:]):
        m = run["model"]
        if (m["weights_sha256"], m.get("cell_temperature"), run["parameters"].get("tta_views")) != (
                first["weights_sha256"], first.get("cell_temperature"), runs[0]["parameters"].get("tta_views")):
            raise AtlasError(f"{f}: classified with {m['model']} ({m['weights_sha256'][:12]}) but {folders[0]} with "
                             f"{first['model']} ({first['weights_sha256'][:12]}) or other settings; an atlas period "
                             "is one model's map: delete one of them and run again")
    return first


def write_period(spec, name: str, grid: Grid, folders: list[Path], tiles) -> bool:
    """Merge the period's tiles onto the grid and write `<out>/<name>/` unless it is there already,
    made from the same tiles; -> whether it was written. Nothing is written without a tile."""
    out = spec.out / name
    if not folders:
        return False
    key = inputs_key(folders, grid)
    try:
        if read_json(out / "run.json")["atlas"]["inputs"] == key and (out / "lulc.tif").exists():
            return False
    except (AtlasError, KeyError, TypeError):
        pass
    runs = [read_json(f / "run.json") for f in folders]
    model = one_model(runs, folders)
    start = spec.periods[name].split("/")[0]
    stamp = {k: model[k] for k in STAMP_KEYS if k in model}
    tta = runs[0]["parameters"].get("tta_views", 1)
    attrs = {"source": f"atlas period {name} ({spec.periods[name]}): {len(folders)} tiles", "date": start,
             "product_level": "atlas", "stride": spec.stride, "cell_size_m": grid.cell, **stamp,
             "cell_temperature": model.get("cell_temperature", 1.0), "atlas_change_version": __version__,
             "tta_views": tta}
    with staged_output(out) as stage:
        counts = write_bands(stage, folders, grid, attrs)
    run = {"input": {"path": str(out), "kind": "atlas period", "date": start, "period": name,
                     "range": spec.periods[name], "tiles": [f.name for f in folders],
                     "items": [{"tile": t.tile, "id": t.id, "date": t.date, "url": t.url} for t in tiles]},
           "model": {**stamp, "cell_temperature": model.get("cell_temperature", 1.0), "path": model.get("path")},
           "parameters": {"stride": spec.stride, "tta_views": tta,
                          "inference_precision": runs[0]["parameters"].get("inference_precision")},
           "output": {"crs": grid.crs.to_string(), "transform": list(grid.transform)[:6],
                      "shape": [grid.height, grid.width], "cell_area_ha": grid.cell_ha},
           "counts": {"cells_per_class": {c: int(counts[i]) for i, c in enumerate(CLASSES)},
                      "cloud_cells": int(counts["cloud"]), "cloud_ha": hectares(counts["cloud"] * grid.cell_ha),
                      "snow_cells": int(counts["snow"]), "snow_ha": hectares(counts["snow"] * grid.cell_ha),
                      "nodata_cells": int(counts["nodata"])},
           "atlas": {"inputs": key, "merge": "cell probabilities warped to the atlas grid by area-weighted average "
                                             "(GDAL 'average'), averaged over tiles weighted by the share of the cell "
                                             f"each saw clear; labelled where that share sums to >= {MIN_SEEN}; "
                                             f"merged and written {BAND_CELLS:,} cells (whole rows) at a time"},
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "atlas_change_version": __version__}
    atomic_write(out / "run.json", lambda f: f.write(strict_json(run).encode()))  # last: the period is done
    return True


#: atlas cells merged, written and decided at a time (whole rows of the grid): a band's arrays, not the
#: map's, are in memory (about 0.7 GB at the default); $ATLAS_BAND_CELLS sets it
BAND_CELLS = int(float(os.environ.get("ATLAS_BAND_CELLS", 1_000_000)))


def write_bands(folder: Path, tiles: list[Path], grid: Grid, attrs: dict) -> dict:
    """The period's map merged from its `tiles` and written into `folder` a band of grid rows at a
    time: a classify output's files (outputs.MapWriter) plus probabilities.tif and observations.tif;
    -> cell counts (class index 0..9, 'cloud', 'snow', 'nodata')."""
    shape = (grid.height, grid.width)
    tags = {"MODEL": attrs.get("model", ""), "WEIGHTS_SHA256": attrs.get("weights_sha256", "")}
    counts: dict = dict.fromkeys([*range(len(CLASSES)), "cloud", "snow", "nodata"], 0)
    with MapWriter(folder, shape, grid.transform, grid.crs, attrs) as maps, \
            CogWriter(folder / "probabilities.tif", shape, len(CLASSES), np.float32, grid.transform, grid.crs,
                      float("nan"), tags, [f"p_{c}" for c in CLASSES]) as probs, \
            CogWriter(folder / "observations.tif", shape, 1, np.float32, grid.transform, grid.crs, None,
                      {**tags, "OBSERVATIONS": "clear cell areas summed over the period's tiles (tiles overlap)"},
                      "clear_observations") as obs:
        where = {t: tile_bounds(t, grid.crs) for t in tiles}
        for r0, band in grid.bands(BAND_CELLS):
            (left, bottom, right, top) = band.bounds
            merged = merge_period([t for t, (x0, y0, x1, y1) in where.items()  # the tiles that reach the band
                                   if x0 < right and x1 > left and y0 < top and y1 > bottom], band)
            ds = build_dataset(np.nan_to_num(merged["probabilities"]), merged["has"], band.transform, grid.crs, attrs,
                               merged["cloud"], merged["snow"])
            maps.add(r0, ds)
            probs.write(r0, ds["probabilities"].values.astype(np.float32))
            obs.write(r0, merged["observations"])
            lulc = ds["lulc"].values
            for i in range(len(CLASSES)):
                counts[i] += int((lulc == i + 1).sum())
            counts["cloud"] += int(merged["cloud"].sum())
            counts["snow"] += int(merged["snow"].sum())
            counts["nodata"] += int(((lulc == 0) & ~merged["cloud"] & ~merged["snow"]).sum())
    return counts


def _file_key(path: Path) -> str:
    """What tells a units file's versions apart: the SHA-256 of its bytes (a folder, e.g. a FileGDB: its
    files' sizes and times)."""
    import hashlib

    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return json.dumps(sorted((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in path.rglob("*") if f.is_file()))


def change_through(spec, grid: Grid) -> str:
    """Compare every mapped period with the joint decision into `<out>/change/` unless it is there,
    made from the same period maps and settings; -> what was done. A grid of more than BAND_CELLS
    cells is decided band by band (decide_bands)."""
    from ..change.compare import compare_periods

    names = [n for n in spec.periods if (spec.out / n / "run.json").exists()]
    if len(names) < 2:
        return f"not decided: {len(names)} of {len(spec.periods)} periods have a map"
    key = digest(*[read_json(spec.out / n / "run.json")["atlas"]["inputs"] for n in names],
                 json.dumps([spec.stay, spec.min_confidence, str(spec.region), BAND_CELLS]),
                 _file_key(spec.region), n=16)  # the units are the AOI: a changed file decides again
    out = spec.out / "change"
    try:
        if read_json(out / FINGERPRINT)["inputs"] == key and (out / "summary.json").exists():
            return "up to date"
    except (AtlasError, KeyError, TypeError):  # absent or damaged: decided again
        pass
    folders = [str(spec.out / n) for n in names]
    shutil.rmtree(out, ignore_errors=True)  # decided again: nothing of the old decision (one folder or bands) stays
    if grid.width * grid.height <= BAND_CELLS:
        compare_periods(folders, aoi=str(spec.region), out=out, min_confidence=spec.min_confidence, stay=spec.stay)
        how = ""
    else:
        how = f" in {decide_bands(spec, grid, folders, out)} bands"
    atomic_write(out / FINGERPRINT, lambda f: f.write(strict_json({"inputs": key, "periods": names}).encode()))
    return f"decided over {', '.join(names)}{how}"


def decide_bands(spec, grid: Grid, folders: list[str], out: Path) -> int:
    """The change decided a band of grid rows at a time (each cell's history is its own, so the
    decisions are those of the whole): each band a compare output of its own, `<out>/bands/rows_<r0>/`
    (its AOI the region's part of the band); `<out>/summary.json` lists them. -> the bands decided."""
    import tempfile

    import geopandas as gpd
    import shapely

    from ..change.compare import compare_periods
    from .stats import as_multipolygon, read_units

    region = read_units(spec.region, spec.unit_field).to_crs(grid.crs).union_all()
    bands = []
    with staged_output(out) as stage, tempfile.TemporaryDirectory() as tmp:
        for r0, band in grid.bands(BAND_CELLS):
            part = shapely.intersection(region, shapely.box(*band.bounds))
            if part.is_empty or part.area == 0:
                continue
            aoi = Path(tmp) / f"rows_{r0}.gpkg"
            gpd.GeoDataFrame(geometry=[as_multipolygon(part)], crs=grid.crs).to_file(aoi)
            compare_periods(folders, aoi=str(aoi), out=stage / "bands" / f"rows_{r0}",
                            min_confidence=spec.min_confidence, stay=spec.stay)
            bands.append({"folder": f"bands/rows_{r0}", "rows": [r0, r0 + band.height]})
        if bands:
            mosaic_bands(stage, [stage / b["folder"] for b in bands], grid)
        summary = {"bands": bands, "periods": folders, "band_cells": BAND_CELLS,
                   "decided": "band by band of atlas rows, each band a compare output with its own summary.json; "
                              "every cell's decision is the one the whole grid would give (each cell's class history "
                              "is its own), the region's figures are the bands' sums (stats.csv, changes.csv); "
                              f"{', '.join(MOSAIC)} of every step mosaicked onto the atlas grid beside this file"}
        atomic_write(stage / "summary.json", lambda f: f.write(strict_json(summary).encode()))
    return len(bands)


#: the change rasters of a band-by-band decision that are mosaicked onto the atlas grid, and their legends
MOSAIC = {"change.tif": change_categories, "before.tif": class_categories, "after.tif": class_categories,
          "p_change.tif": None, "p_conversion.tif": None}


def mosaic_bands(out: Path, bands: list[Path], grid: Grid) -> None:
    """The bands' change rasters (MOSAIC) as one COG each on the atlas grid, in `out` (two periods) or
    in `out/<step>/` as the bands hold them, written a band at a time."""
    first = bands[0]
    steps = [d.relative_to(first) for d in (first, *sorted(first.iterdir())) if (d / "change.tif").exists()]
    for step in steps:
        (out / step).mkdir(parents=True, exist_ok=True)
        for name, legend in MOSAIC.items():
            with rasterio.open(first / step / name) as src:
                dtype, nodata, tags, desc = src.dtypes[0], src.nodata, src.tags(), src.descriptions[0] or ""
            with CogWriter(out / step / name, (grid.height, grid.width), 1, dtype, grid.transform, grid.crs, nodata,
                           tags, desc, legend() if legend else None) as w:
                for band in bands:
                    array, t, _, _ = read_raster(band / step / name)
                    w.write(round((grid.y0 - t.f) / grid.cell), array, col0=round((t.c - grid.x0) / grid.cell))


def change_folders(spec, names: list[str]) -> dict[str, list[Path]]:
    """step name ('2023->2024') -> its compare folders: `<out>/change` itself for two periods, else its
    step folders (`<start>_<start>`, compare names them by the periods' dates) and the span; one per
    band where the change was decided band by band."""
    root = spec.out / "change"
    try:
        roots = [root / b["folder"] for b in read_json(root / "summary.json")["bands"]]
    except (AtlasError, KeyError, TypeError):
        roots = [root]
    if len(names) == 2:
        return {f"{names[0]}->{names[1]}": roots}
    starts = [spec.periods[n].split("/")[0] for n in names]
    steps = {f"{a}->{b}": [r / f"{sa}_{sb}" for r in roots]
             for a, b, sa, sb in zip(names, names[1:], starts, starts[1:])}
    return {**steps, f"{names[0]}->{names[-1]}": [r / f"span_{starts[0]}_{starts[-1]}" for r in roots]}
