"""An atlas as a job file: the `atlas` command's options as an `[atlas]` table, run by
`python -m atlas_change run JOB` (paths relative to the job file):

    name = "province"
    output = "../outputs/province-atlas"
    stride = 64                          # optional: model, tta, runtime, min_confidence, stay
    [atlas]
    region = "../aoi/nuts3.gpkg"
    unit_field = "NUTS_ID"
    stac_api = "https://earth-search.aws.element84.com/v1"
    periods = { 2023 = "2023-06-01/2023-08-31", 2024 = "2024-06-01/2024-08-31" }
    # optional: collection, grid_crs, cell, origin = [x, y], max_tile_cloud, retries, tiles_at_once
"""
from __future__ import annotations

import os
from pathlib import Path

from ..batch.jobfile import Problems, read_toml
from ..mapping.pipeline import ClassifyOptions
from ..read.scene import is_url
from .run import AtlasSpec

TOP = {"name": str, "output": str, "model": str, "stride": int, "tta": int, "runtime": str, "min_confidence": float,
       "stay": float, "allow_untrained": bool, "atlas": dict}
TABLE = {"region": str, "unit_field": str, "stac_api": str, "periods": dict, "collection": str, "grid_crs": str,
         "cell": float, "origin": list, "max_tile_cloud": float, "retries": int,
         "tiles_at_once": int}
REQUIRED_TOP, REQUIRED_TABLE = ("name", "output", "atlas"), ("region", "unit_field", "stac_api", "periods")


def load_atlas_job(path: str | os.PathLike) -> AtlasSpec | None:
    """The AtlasSpec of a job file with an `[atlas]` table; None for other job files."""
    p = Path(path)
    data, text = read_toml(p)
    return atlas_spec(data, p, text) if "atlas" in data else None


def atlas_spec(data: dict, path: Path, text: str = "") -> AtlasSpec:
    """The AtlasSpec of a job file's TOML (`data`) holding an `[atlas]` table; AtlasError listing
    every problem at once (with its line, as for other job files)."""
    pr = Problems()
    if "aoi" in data:
        pr.bad("aoi", "a job file makes either AOIs ([[aoi]]) or an atlas ([atlas]), not both")
    top = {k: v for k, v in data.items() if k != "aoi"}
    pr.unknown(top, TOP, "")
    top = {k: v for k in TOP if (v := pr.get(top, k, TOP, "", required=k in REQUIRED_TOP)) is not None}
    table = top.get("atlas", {})
    pr.unknown(table, TABLE, "atlas.")
    table = {k: v for k in TABLE if (v := pr.get(table, k, TABLE, "atlas.", required=k in REQUIRED_TABLE)) is not None}
    periods = table.get("periods", {})
    if not all(isinstance(v, str) for v in periods.values()):
        pr.bad("atlas.periods", "each period is NAME = \"START/END\"")
    origin = table.get("origin", [0.0, 0.0])
    if not (len(origin) == 2 and all(isinstance(v, (int, float)) for v in origin)):
        pr.bad("atlas.origin", "expected [x, y] in metres")
    pr.check(path, text)
    base = path.parent

    def here(p: str) -> str:
        return p if "://" in p else os.path.normpath(base / p)

    model = top.get("model")
    if model and (base / model / "card.json").is_file():
        model = str(base / model)
    spec = {k: table[k] for k in ("collection", "grid_crs", "cell", "max_tile_cloud", "retries", "tiles_at_once")
            if k in table}
    spec.update({k: top[k] for k in ("min_confidence", "stay") if k in top})
    options = ClassifyOptions(model=model, **{k: top[k] for k in ("stride", "tta", "runtime", "allow_untrained")
                                              if k in top})
    region = here(table["region"])
    return AtlasSpec(region if is_url(region) else Path(region), table["unit_field"], table["stac_api"],
                     {str(k): v for k, v in periods.items()}, Path(here(top["output"])), options,
                     origin=(float(origin[0]), float(origin[1])), **spec)
