"""The atlas run: for every period, the region's Items searched once (the choice kept in
`<out>/<period>/items.json`, so a rerun reads the same scenes), the clearest Item of every tile
classified over the region's part of it (`<out>/<period>/tiles/<tile>/`, a classify output each),
the period's map merged onto the atlas grid (`<out>/<period>/`, a classify output on that grid plus
probabilities.tif and observations.tif), the change through the periods (`<out>/change/`, compare's
joint decision over every period), and hectares per unit (stats). Every step is skipped where its
output is already there and made from the same inputs; a tile that fails is tried again, then
listed in atlas.json, and the units' figures say how many of their hectares no tile saw."""
from __future__ import annotations

import time
import traceback
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path


from ..change.joint import DEFAULT_THRESHOLD
from ..errors import AtlasError, AtlasWarning
from ..mapping.pipeline import ClassifyOptions
from ..names import digest, safe_name
from ..outputs import atomic_write, folder_lock, read_json, strict_json
from .grid import EEA_CRS, grid_crs, region_grid

ATLAS_FILE = "atlas.json"
LOCK_FILE = ".atlas-lock"  # held by the run writing the folder: a second one is refused


@dataclass(frozen=True)
class AtlasSpec:
    """What an atlas is made of; `periods` maps a period's name to its START/END range; `classify`:
    how every tile is classified (its `bbox` is set per tile, to the region's part of it)."""

    region: Path | str  # a vector file or folder, or its http(s) URL (local_region)
    unit_field: str
    stac_api: str
    periods: dict[str, str]
    out: Path
    classify: ClassifyOptions = field(default_factory=ClassifyOptions)
    collection: str = "sentinel-2-l2a"
    grid_crs: str = EEA_CRS
    cell: float | None = None  # metres; None: the stride's cell (stride x 10 m)
    origin: tuple[float, float] = (0.0, 0.0)
    max_tile_cloud: float = 80.0
    min_confidence: float = DEFAULT_THRESHOLD
    stay: float | None = None  # None: the prior fitted to the model (compare.resolve_stay)
    retries: int = 1
    tiles_at_once: int = 2  # tiles classified at the same time, their chunks on one Dask client

    @property
    def stride(self) -> int:
        return self.classify.stride

    @property
    def cell_m(self) -> float:
        return float(self.cell or self.stride * 10)


def check_spec(spec: AtlasSpec) -> None:
    """Refuse what would fail late: period names that are not folder names, bad ranges, no periods,
    change settings that are not probabilities."""
    from ..batch.search import parse_range
    from ..change.compare import check_decision

    if not spec.periods:
        raise AtlasError("atlas: no --period given; give one or more NAME=START/END")
    for name, rng in spec.periods.items():
        if safe_name(name) != name or name in ("change", "tiles"):
            raise AtlasError(f"--period {name}={rng}: the name must be a plain folder name (letters, digits, - _ .)")
        parse_range(rng, f"--period {name}")
    if spec.cell_m < spec.stride * 10:
        raise AtlasError(f"--cell {spec.cell_m:g}: smaller than the map's own cells ({spec.stride} px x 10 m)")
    if spec.retries < 0:
        raise AtlasError(f"--retries {spec.retries}: expected 0 or more")
    if spec.tiles_at_once < 1:
        raise AtlasError(f"--tiles-at-once {spec.tiles_at_once}: expected 1 or more")
    check_decision(spec.min_confidence, spec.stay)  # used after every tile is classified: refused now


@dataclass(frozen=True)
class Tile:
    """The Item chosen for one tile of a period, stored locally."""

    tile: str
    id: str
    date: str
    item: str  # the local copy of the Item's JSON (relative to the period folder)
    url: str
    footprint: dict | None  # GeoJSON geometry, EPSG:4326
    aoi_clear: float | None
    tile_cloud: float | None

    @property
    def key(self) -> str:
        return f"{safe_name(self.tile, max_len=40)}_{digest(self.url, self.item, n=6)}"


def choose_tiles(spec: AtlasSpec, name: str, region, echo: Callable[[str], None]) -> list[Tile]:
    """The period's Items, one per tile (the clearest over the region), searched once: kept in
    `<out>/<name>/items.json` and reused as they are by every later run."""
    from ..batch.search import save_item, search, tile_of

    folder = spec.out / name
    listing = folder / "items.json"
    if listing.exists():
        return [Tile(**t) for t in read_json(listing)["chosen"]]
    found = search(spec.stac_api, spec.collection, region, spec.periods[name], max_tile_cloud=spec.max_tile_cloud,
                   flag=f"--period {name}", strict=False)
    best: dict[str, object] = {}
    for f in found:  # best first
        best.setdefault(tile_of(f.item), f)
    chosen = []
    for tile, f in sorted(best.items()):
        local = save_item(f, folder / "items")
        chosen.append(Tile(tile, f.id, f.date, str(local.relative_to(folder)), f.url,
                           f.item.get("geometry"), f.aoi_clear, f.tile_cloud))
    record = {"period": name, "range": spec.periods[name], "api": spec.stac_api, "collection": spec.collection,
              "searched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "found": [{"id": f.id, "tile": tile_of(f.item), "date": f.date, "url": f.url, "aoi_clear": f.aoi_clear,
                         "tile_cloud": f.tile_cloud} for f in found],
              "chosen": [t.__dict__ for t in chosen]}
    atomic_write(listing, lambda f: f.write(strict_json(record).encode()))
    echo(f"{name}: {len(found)} Items found, {len(chosen)} tiles chosen")
    return chosen


def tile_bbox(tile: Tile, region) -> tuple[float, float, float, float] | None:
    """Lon/lat bounds of the region's part of the tile's footprint (None: they do not meet)."""
    import shapely
    from shapely.geometry import shape

    part = region if tile.footprint is None else shapely.intersection(region, shapely.make_valid(shape(tile.footprint)))
    return None if part.is_empty else tuple(float(v) for v in part.bounds)


def classify_tile(spec: AtlasSpec, name: str, tile: Tile, region, client, quiet: bool) -> tuple[str, str]:
    """Classify one tile of one period unless its output is already there: -> (status, detail),
    status 'done', 'up to date', 'outside' or 'failed' (after `spec.retries` more tries)."""
    from ..change.compare import load_map
    from ..mapping.pipeline import classify

    folder = spec.out / name / "tiles" / tile.key
    if (folder / "run.json").exists():
        try:
            load_map(folder)
            return "up to date", ""
        except AtlasError:
            pass  # damaged: made again
    bbox = tile_bbox(tile, region)
    if bbox is None:
        return "outside", "the tile's footprint misses the region"
    options = replace(spec.classify, bbox=bbox, bbox_crs="EPSG:4326")
    detail = ""
    for _ in range(1 + spec.retries):
        try:
            # tiles at once would draw their progress bars over each other: their finishing lines say it
            classify(str(spec.out / name / tile.item), options, out=folder, client=client,
                     quiet=quiet or spec.tiles_at_once > 1)
            return "done", ""
        except AtlasError as e:
            detail = str(e)
        except Exception as e:  # noqa: BLE001  (one tile's fault must not stop the atlas)
            detail = f"{type(e).__name__}: {e}"
            if not quiet:
                traceback.print_exc()
    return "failed", detail


def classify_tiles(spec: AtlasSpec, work: list[tuple[str, Tile]], region, client, quiet: bool,
                   echo: Callable[[str], None]) -> dict[tuple[str, str], dict]:
    """Classify every (period, tile) of `work`, `spec.tiles_at_once` of them at a time, all sending
    their chunks to the one Dask `client` (so the cluster's workers stay busy while a tile is opened,
    its clouds decided or its map assembled here): -> {(period, tile key): status record}."""
    results: dict[tuple[str, str], dict] = {}

    def one(name: str, tile: Tile) -> dict:
        t0 = time.perf_counter()
        status, detail = classify_tile(spec, name, tile, region, client, quiet)
        return {"tile": tile.tile, "item": tile.id, "date": tile.date, "status": status, "error": detail,
                "seconds": round(time.perf_counter() - t0, 1)}

    with ThreadPoolExecutor(max(1, spec.tiles_at_once)) as pool:
        futures = {pool.submit(one, name, tile): (name, tile) for name, tile in work}
        for n, f in enumerate(as_completed(futures), 1):
            name, tile = futures[f]
            r = results[name, tile.key] = f.result()
            echo(f"{name} [{n}/{len(work)}] {tile.tile} {tile.id}: {r['status']}"
                 + (f": {r['error']}" if r["error"] else ""))
    return results


def local_region(spec: AtlasSpec) -> AtlasSpec:
    """`spec` with a region given as an http(s) URL fetched (bounded as STAC Items are) into the cache
    (cache_dir()/regions/<the URL's digest>/<its file name>), rewritten only where its bytes changed:
    the output folder is not touched before the checks, and a rerun reads the same path."""
    import urllib.parse

    from ..model.registry import cache_dir
    from ..read.scene import is_url
    from ..read.stac import fetch

    url = str(spec.region)
    if not is_url(url):
        return spec
    data = fetch(url, what="the region's units")
    name = safe_name(Path(urllib.parse.urlparse(url).path).name, fallback="units")
    dest = cache_dir() / "regions" / digest(url, n=16) / name
    if not (dest.is_file() and dest.read_bytes() == data):
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(dest, lambda f: f.write(data))
    return replace(spec, region=dest)


def atlas(spec: AtlasSpec, *, scheduler: str | None = None, workers: int | None = None, quiet: bool = False,
          echo: Callable[[str], None] = print) -> dict:
    """Make (or bring up to date) the atlas of `spec`; -> the record written to `<out>/atlas.json`."""
    from ..mapping.cluster import dask_client
    from .stats import overlap_ha, period_model, read_units, write_stats
    from .period import change_through, write_period

    source, spec = str(spec.region), local_region(spec)
    check_spec(spec)
    units = read_units(spec.region, spec.unit_field)
    crs = grid_crs(spec.grid_crs)
    grid = region_grid(tuple(units.to_crs(crs).total_bounds), crs, spec.cell_m, spec.origin, name=str(spec.region))
    region = units.to_crs(4326).union_all()
    if (both := overlap_ha(units, crs)) >= grid.cell_ha:
        warnings.warn(f"{source}: its units overlap over {both:.1f} ha; a cell there is counted once, in the first "
                      "of them in the file (stats.csv, units.gpkg)", AtlasWarning, stacklevel=2)
    record = {"region": source, "unit_field": spec.unit_field, "units": len(units),
              "grid": {"crs": crs.to_string(), "cell_m": grid.cell, "origin": list(spec.origin),
                       "transform": list(grid.transform)[:6], "shape": [grid.height, grid.width]},
              "periods": {}}
    with ExitStack() as stack:
        stack.enter_context(folder_lock(spec.out / LOCK_FILE, f"{spec.out}: another atlas run is writing here",
                                        f"{spec.out}: cannot write the atlas's output folder"))
        chosen = {name: choose_tiles(spec, name, region, echo) for name in spec.periods}
        work = [(name, tile) for name, tiles in chosen.items() for tile in tiles]
        needed = any(not (spec.out / name / "tiles" / t.key / "run.json").exists() for name, t in work)
        client = stack.enter_context(dask_client(workers, scheduler)) if needed and scheduler != "sync" else None
        results = classify_tiles(spec, work, region, client, quiet, echo)
        for name, tiles in chosen.items():
            done = [spec.out / name / "tiles" / t.key for t in tiles
                    if results[name, t.key]["status"] in ("done", "up to date")]
            made = write_period(spec, name, grid, done, tiles)
            echo(f"{name}: map {'written' if made else 'up to date'} ({len(done)} of {len(tiles)} tiles)")
            model, weights = period_model(spec.out / name)
            record["periods"][name] = {"range": spec.periods[name], "model": model, "weights_sha256": weights,
                                       "tiles": {t.key: results[name, t.key] for t in tiles}}
        if len(spec.periods) >= 2:
            echo(f"change: {change_through(spec, grid)}")
        write_stats(spec, units, grid)
        record["failed_tiles"] = sum(r["status"] == "failed" for p in record["periods"].values()
                                     for r in p["tiles"].values())
        atomic_write(spec.out / ATLAS_FILE, lambda f: f.write(strict_json(record).encode()))
    return record
