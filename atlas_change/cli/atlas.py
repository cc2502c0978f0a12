"""`atlas`: a region's atlas, period by period, from a STAC catalogue (atlas_change.atlas.run)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..atlas.grid import EEA_CRS
from ..batch.search import MAX_TILE_CLOUD
from ..change.joint import DEFAULT_STAY, DEFAULT_THRESHOLD
from ..errors import AtlasError
from ..model.infer import DEFAULT_RUNTIME, DEFAULT_VIEWS, RUNTIMES, VIEWS
from ..read.scene import is_url
from .helptext import WORKERS_HELP

EPILOG = """\
what it writes (OUT/):
  <period>/items.json        the Items found and the one chosen per tile (a rerun reads the same ones)
  <period>/tiles/<tile>/     each tile classified on its own UTM grid, over the region only
  <period>/lulc.tif ...      the period's map on the atlas grid: lulc, confidence, probabilities,
                             observations, cloud (COGs with overviews and legends), cells.parquet
  change/                    the change through the periods, decided from all of them together (a
                             region beyond ATLAS_BAND_CELLS cells: one compare output per band of rows)
  stats.csv, stats.parquet   hectares per unit, period and class (+ uncertain, cloud, snow, nodata):
                             a unit's rows of a period sum to the area of the cells centred in it
  changes.csv                from-to hectares per unit and step
  units.gpkg                 the units with those figures as attributes
  atlas.json                 every tile's outcome; failed tiles are listed there and counted as nodata
  every table, the GeoPackage, atlas.json and the page name the model and its weights' SHA-256

A rerun does only what is missing or out of date, and retries failed tiles.

example:
  python -m atlas_change atlas --region nuts3.gpkg --unit-field NUTS_ID \\
      --stac-api https://earth-search.aws.element84.com/v1 \\
      --period 2023=2023-06-01/2023-08-31 --period 2024=2024-06-01/2024-08-31 --out atlas/
"""


def add_parsers(sub) -> None:
    """The arguments of `atlas`."""
    p = sub.add_parser("atlas", help="a region's land-cover atlas per period, its change and hectares per unit",
                       description="Classify every Sentinel-2 tile of a region for each period, merge them onto one "
                       "equal-area grid, decide the change through the periods and sum hectares per unit.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--region", required=True, help="the units (any vector file GDAL reads, any CRS; or its "
                   "http(s) URL, fetched once into the cache); the region is their union")
    p.add_argument("--unit-field", required=True, help="the field that names each unit (e.g. NUTS_ID)")
    p.add_argument("--stac-api", required=True, help="STAC API to search (e.g. https://earth-search.aws.element84.com/v1)")
    p.add_argument("--collection", default="sentinel-2-l2a", help="collection to search (default sentinel-2-l2a)")
    p.add_argument("--period", action="append", required=True, metavar="NAME=START/END",
                   help="a period: its name (a folder name) and date range, e.g. 2023=2023-06-01/2023-08-31; "
                   "give it once per period, in time order")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--grid-crs", default=EEA_CRS,
                   help=f"projected CRS of the atlas grid (default {EEA_CRS}, ETRS89-LAEA: the EEA reference grid)")
    p.add_argument("--cell", type=float, help="atlas cell size in metres (default: the stride's, 640 m at --stride 64)")
    p.add_argument("--origin", default="0,0", help="X,Y the grid's cells are counted from, in --grid-crs (default 0,0: "
                   "the EEA grid's own origin)")
    p.add_argument("--stride", type=int, default=64, choices=(64, 32, 16), help="classify's stride (default 64)")
    p.add_argument("--model", help="model name or folder (default: classify's)")
    p.add_argument("--max-tile-cloud", type=float, default=MAX_TILE_CLOUD,
                   help=f"skip Items whose whole tile is more cloudy than this %% (default {MAX_TILE_CLOUD:g})")
    p.add_argument("--min-confidence", type=float, default=DEFAULT_THRESHOLD,
                   help=f"probability a cell's class needs to count in stats.csv as that class, else 'uncertain'; "
                   f"also the change decision's (default {DEFAULT_THRESHOLD})")
    p.add_argument("--stay", type=float,
                   help="transition prior of the change decision: probability of keeping a class (default: the "
                   f"prior fitted to the model, in its card; else {DEFAULT_STAY:g})")
    p.add_argument("--retries", type=int, default=1, help="tries more for a tile that fails (default 1)")
    p.add_argument("--tiles-at-once", type=int, default=2, metavar="N",
                   help="tiles classified at the same time, all sending their chunks to the one Dask cluster, which "
                   "stays busy while a tile is opened or assembled (default 2; more for a large cluster)")
    p.add_argument("--runtime", default=DEFAULT_RUNTIME, choices=RUNTIMES, help=f"inference runtime (default {DEFAULT_RUNTIME})")
    p.add_argument("--tta", type=int, default=DEFAULT_VIEWS, choices=VIEWS, help=f"test-time views (default {DEFAULT_VIEWS})")
    p.add_argument("--workers", type=int, help=WORKERS_HELP)
    p.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://host:8786), or 'sync'")
    p.add_argument("--allow-untrained", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", help="no progress lines or warnings")


def periods(values: list[str]) -> dict[str, str]:
    """NAME=START/END strings -> {name: range}; AtlasError for a malformed or repeated one."""
    out: dict[str, str] = {}
    for v in values:
        name, sep, rng = v.partition("=")
        if not sep or not name.strip() or not rng.strip():
            raise AtlasError(f"--period {v!r}: expected NAME=START/END, e.g. 2023=2023-06-01/2023-08-31")
        if name.strip() in out:
            raise AtlasError(f"--period {v!r}: the name {name.strip()!r} is given twice")
        out[name.strip()] = rng.strip()
    return out


def origin(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise AtlasError(f"--origin {text!r}: expected X,Y in metres") from None
    return x, y


def run(a) -> int:
    """Run `atlas` as the arguments ask; 1 when a tile failed (the atlas is written without it)."""
    from ..atlas.run import AtlasSpec
    from ..mapping.pipeline import ClassifyOptions

    options = ClassifyOptions(model=a.model, stride=a.stride, runtime=a.runtime, tta=a.tta,
                              allow_untrained=a.allow_untrained)
    region = a.region if is_url(a.region) else Path(a.region)
    spec = AtlasSpec(region, a.unit_field, a.stac_api, periods(a.period), Path(a.out), options,
                     a.collection, a.grid_crs, a.cell, origin(a.origin), a.max_tile_cloud, a.min_confidence, a.stay,
                     a.retries, a.tiles_at_once)
    return run_spec(spec, a.scheduler, a.workers, a.quiet)


def run_spec(spec, scheduler: str | None, workers: int | None, quiet: bool) -> int:
    """Make the atlas of `spec` (the `atlas` command, or `run` of a job file with an [atlas] table)."""
    from ..atlas.run import atlas

    record = atlas(spec, scheduler=scheduler, workers=workers, quiet=quiet, echo=(lambda s: None) if quiet else print)
    if not quiet:
        print(f"{spec.out}: {len(record['periods'])} period(s), {record['units']} unit(s); "
              f"{record['failed_tiles']} tile(s) failed (atlas.json)")
    return 1 if record["failed_tiles"] else 0


def status(spec) -> int:
    """What an atlas job has done (its atlas.json): tiles per period and outcome; 1 unless complete."""
    from ..atlas.run import ATLAS_FILE
    from ..outputs import read_json

    path = spec.out / ATLAS_FILE
    if not path.exists():
        print(f"{spec.out}: not made yet (no {ATLAS_FILE}); run the job")
        return 1
    record = read_json(path, ("periods",))  # AtlasError naming the file when damaged
    periods = record["periods"]
    for name, p in periods.items():
        tiles = p.get("tiles", {})
        counts: dict[str, int] = {}
        for t in tiles.values():
            counts[t["status"]] = counts.get(t["status"], 0) + 1
        print(f"{name} ({p.get('range')}): {len(tiles)} tiles: "
              + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        for key, t in tiles.items():
            if t["status"] == "failed":
                print(f"  {t['tile']} {t['item']}: failed: {t['error']}")
    return 1 if record.get("failed_tiles") else 0


COMMANDS = {"atlas": run}
