"""A period's map on the atlas grid, written as a classify output (lulc.tif, confidence.tif,
cloud.tif, cells.parquet, run.json: what compare, export, view and sample read) plus
probabilities.tif and observations.tif; and the change through the periods by `compare`."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from ..classes import CLASSES
from ..errors import AtlasError
from ..names import digest
from ..outputs import (atomic_write, build_dataset, hectares, read_json, staged_output, strict_json, write_cog,
                       write_outputs)
from .grid import Grid
from .merge import MIN_SEEN, merge_period

#: the model stamp's keys (registry.ModelCard.stamp) that a period's map carries from its tiles
STAMP_KEYS = ("model", "architecture", "weights_sha256", "trained", "bands", "normalisation", "radiometry", "mean",
              "std", "temperature")
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
    merged = merge_period(folders, grid)
    start = spec.periods[name].split("/")[0]
    stamp = {k: model[k] for k in STAMP_KEYS if k in model}
    tta = runs[0]["parameters"].get("tta_views", 1)
    attrs = {"source": f"atlas period {name} ({spec.periods[name]}): {len(folders)} tiles", "date": start,
             "product_level": "atlas", "stride": spec.stride, "cell_size_m": grid.cell, **stamp,
             "cell_temperature": model.get("cell_temperature", 1.0), "atlas_change_version": __version__,
             "tta_views": tta}
    ds = build_dataset(np.nan_to_num(merged["probabilities"]), merged["has"], grid.transform, grid.crs, attrs,
                       merged["cloud"], merged["snow"])
    lulc = ds["lulc"].values
    run = {"input": {"path": str(out), "kind": "atlas period", "date": start, "period": name,
                     "range": spec.periods[name], "tiles": [f.name for f in folders],
                     "items": [{"tile": t.tile, "id": t.id, "date": t.date, "url": t.url} for t in tiles]},
           "model": {**stamp, "cell_temperature": model.get("cell_temperature", 1.0), "path": model.get("path")},
           "parameters": {"stride": spec.stride, "tta_views": tta,
                          "inference_precision": runs[0]["parameters"].get("inference_precision")},
           "output": {"crs": grid.crs.to_string(), "transform": list(grid.transform)[:6], "shape": list(lulc.shape),
                      "cell_area_ha": grid.cell_ha},
           "counts": {"cells_per_class": {c: int((lulc == i + 1).sum()) for i, c in enumerate(CLASSES)},
                      "cloud_cells": int(merged["cloud"].sum()), "cloud_ha": hectares(merged["cloud"].sum() * grid.cell_ha),
                      "snow_cells": int(merged["snow"].sum()), "snow_ha": hectares(merged["snow"].sum() * grid.cell_ha),
                      "nodata_cells": int(((lulc == 0) & ~merged["cloud"] & ~merged["snow"]).sum())},
           "atlas": {"inputs": key, "merge": "cell probabilities warped to the atlas grid by area-weighted average "
                                             "(GDAL 'average'), averaged over tiles weighted by the share of the cell "
                                             f"each saw clear; labelled where that share sums to >= {MIN_SEEN}"},
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "atlas_change_version": __version__}
    with staged_output(out) as stage:
        tags = {"MODEL": stamp.get("model", ""), "WEIGHTS_SHA256": stamp.get("weights_sha256", "")}
        write_cog(stage / "probabilities.tif", ds["probabilities"].values.astype(np.float32), grid.transform, grid.crs,
                  float("nan"), tags, [f"p_{c}" for c in CLASSES])
        write_cog(stage / "observations.tif", merged["observations"], grid.transform, grid.crs, None,
                  {**tags, "OBSERVATIONS": "clear cell areas summed over the period's tiles (tiles overlap)"},
                  "clear_observations")
    write_outputs(ds, run, out)  # run.json last: the period is done when it is there
    return True


def _file_key(path: Path) -> str:
    """What tells a units file's versions apart: the SHA-256 of its bytes (a folder, e.g. a FileGDB: its
    files' sizes and times)."""
    import hashlib

    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return json.dumps(sorted((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in path.rglob("*") if f.is_file()))


def change_through(spec) -> str:
    """Compare every mapped period with the joint decision into `<out>/change/` unless it is there,
    made from the same period maps and settings; -> what was done."""
    from ..change.compare import compare_periods

    names = [n for n in spec.periods if (spec.out / n / "run.json").exists()]
    if len(names) < 2:
        return f"not decided: {len(names)} of {len(spec.periods)} periods have a map"
    key = digest(*[read_json(spec.out / n / "run.json")["atlas"]["inputs"] for n in names],
                 json.dumps([spec.stay, spec.min_confidence, str(spec.region)]),
                 _file_key(spec.region), n=16)  # the units are the AOI: a changed file decides again
    out = spec.out / "change"
    try:
        if read_json(out / FINGERPRINT)["inputs"] == key and (out / "summary.json").exists():
            return "up to date"
    except (AtlasError, KeyError, TypeError):  # absent or damaged: decided again
        pass
    compare_periods([str(spec.out / n) for n in names], aoi=str(spec.region), out=out, min_confidence=spec.min_confidence,
                    stay=spec.stay)
    atomic_write(out / FINGERPRINT, lambda f: f.write(strict_json({"inputs": key, "periods": names}).encode()))
    return f"decided over {', '.join(names)}"


def change_folders(spec, names: list[str]) -> dict[str, Path]:
    """step name ('2023->2024') -> compare folder: `<out>/change` itself for two periods, else its
    step folders (`<start>_<start>`, compare names them by the periods' dates) and the span."""
    root = spec.out / "change"
    if len(names) == 2:
        return {f"{names[0]}->{names[1]}": root}
    starts = [spec.periods[n].split("/")[0] for n in names]
    steps = {f"{a}->{b}": root / f"{sa}_{sb}" for a, b, sa, sb in zip(names, names[1:], starts, starts[1:])}
    return {**steps, f"{names[0]}->{names[-1]}": root / f"span_{starts[0]}_{starts[-1]}"}
