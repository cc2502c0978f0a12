"""Search stage: the Sentinel-2 Items of a STAC API over an AOI and a date range (pystac-client),
ranked by how clear the AOI itself is on each: the share of the AOI's pixels that the Item's SCL
calls clear (not no-data, saturated, cloud shadow, cloud, cirrus or snow), read over HTTP for the
AOI's window only. The whole tile's `eo:cloud_cover` only filters (a tile 80 % cloudy can be
clear over a small AOI, and the reverse); Items without an SCL asset are ranked by it, and say so.

    found = search("https://earth-search.aws.element84.com/v1", "sentinel-2-l2a", aoi, "2023-06-01/2023-08-31")
    chosen = choose(found, 3)   # the three clearest over the AOI, each covering it
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AtlasError, AtlasWarning
from ..read import SCL_INVALID
from ..read.stac import stac_api_io

#: SCL classes that leave a pixel unusable for a label: no data, saturated, shadow, cloud, cirrus, snow
SCL_UNUSABLE = (*SCL_INVALID, 11)
MAX_TILE_CLOUD = 80.0  # default: Items whose whole tile is more cloudy than this (%) are not considered
MIN_AOI_CLEAR = 0.5  # default: an Item is chosen only where at least this share of the AOI is clear


@dataclass(frozen=True)
class Found:
    """One Item of a search: where to read it, its date, and how clear it is."""

    url: str  # the Item's own URL (what classify reads)
    id: str
    date: str  # YYYY-MM-DD
    tile_cloud: float | None  # eo:cloud_cover of the whole tile, %
    aoi_clear: float | None  # share of the AOI's pixels the SCL calls clear; None without an SCL asset
    covers: float  # share of the AOI inside the Item's footprint
    footprint: object = field(default=None, compare=False, repr=False)  # shapely geometry, EPSG:4326
    item: dict = field(default_factory=dict, compare=False, repr=False)  # the Item's JSON

    @property
    def rank(self) -> tuple[float, float]:
        """Sort key, best first: AOI clear share (else 1 - tile cloud), then coverage."""
        clear = self.aoi_clear if self.aoi_clear is not None else (
            1 - self.tile_cloud / 100 if self.tile_cloud is not None else 0.0)
        return (-clear * min(1.0, self.covers), -self.covers)


def parse_range(text: str, flag: str) -> str:
    """'YYYY-MM-DD/YYYY-MM-DD' checked (start before end), as STAC's datetime parameter."""
    from ..dates import user_date

    parts = str(text).split("/")
    if len(parts) != 2:
        raise AtlasError(f"{flag} {text!r}: expected START/END, e.g. 2023-06-01/2023-08-31")
    start, end = (user_date(p.strip(), flag) for p in parts)
    if start > end:
        raise AtlasError(f"{flag} {text!r}: the start is after the end")
    return f"{start}T00:00:00Z/{end}T23:59:59Z"


def search(api: str, collection: str, aoi, period: str, *, max_tile_cloud: float = MAX_TILE_CLOUD,
           flag: str = "--before-range", limit: int = 500, strict: bool = True) -> list[Found]:
    """The Items of `collection` at `api` that intersect `aoi` (a shapely geometry in EPSG:4326)
    within `period` (START/END), with at most `max_tile_cloud` % tile cloud, ranked best first.
    AtlasError naming the API's URL when it cannot be searched; an Item whose SCL cannot be read is
    an AtlasError too, or with `strict=False` a warning, the Item ranked by its tile's cloud cover
    (the atlas lists it as failed when it cannot be classified either)."""
    from pystac_client import Client
    from pystac_client.warnings import DoesNotConformTo

    import shapely
    from shapely.geometry import mapping, shape

    when = parse_range(period, flag)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DoesNotConformTo)
            client = Client.open(api, stac_io=stac_api_io())
            items = list(client.search(collections=[collection], intersects=mapping(aoi), datetime=when,
                                       max_items=limit).items())
    except Exception as e:  # pystac-client raises APIError, requests' errors, JSON errors, ...
        bound = e.__context__ if isinstance(e.__context__, AtlasError) else None  # stac_api_io's bounds, as APIError
        why = bound.args[0].split(": ", 1)[-1] if bound else f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        raise AtlasError(f"{api}: cannot search the STAC API ({why})") from None
    from ..read.stac import item_problem

    if len(items) >= limit:
        warnings.warn(f"{api}: the search stopped at its first {limit} items ({flag} {period}); the clearest may be "
                      "among those not read: narrow the period or the AOI", AtlasWarning, stacklevel=2)
    found, skipped = [], {}
    for it in items:
        d = it.to_dict()
        why = item_problem({"assets": {}, **d}) if isinstance(d.get("assets", {}), dict) else "assets is not an object"
        try:
            footprint = shape(it.geometry) if it.geometry else None
            if footprint is not None and not footprint.is_valid:
                footprint = shapely.make_valid(footprint)
        except (TypeError, ValueError, AttributeError, KeyError, shapely.errors.GEOSException):
            why = why or "its geometry is not a GeoJSON geometry"
        if why:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        cloud = it.properties.get("eo:cloud_cover")
        if cloud is not None and float(cloud) > max_tile_cloud:
            continue
        covers = 1.0 if footprint is None else float(shapely.area(shapely.intersection(footprint, aoi)) / aoi.area)
        url = it.get_self_href() or f"{api.rstrip('/')}/collections/{collection}/items/{it.id}"
        when_taken = it.datetime or it.common_metadata.start_datetime  # an Item with a range has datetime null
        if when_taken is None:
            continue
        try:
            clear = aoi_clear(it.to_dict(), url, aoi)
        except AtlasError as e:
            if strict:
                raise
            warnings.warn(f"{e}; ranked by its tile's cloud cover", AtlasWarning, stacklevel=2)
            clear = None
        found.append(Found(url, it.id, when_taken.date().isoformat(), None if cloud is None else float(cloud), clear,
                           covers, footprint, it.to_dict()))
    for why, n in skipped.items():
        warnings.warn(f"{api}: {n} item(s) skipped: {why}", AtlasWarning, stacklevel=2)
    return sorted(found, key=lambda f: (*f.rank, f.date))


def aoi_clear(item: dict, url: str, aoi) -> float | None:
    """Share of the AOI's pixels within the Item's raster that its SCL calls clear (its no-data
    outside the swath counts as not clear; `Found.covers` says how much of the AOI the Item
    reaches); None when the Item has no SCL asset. Reads only the AOI's window of the SCL."""
    from rasterio.errors import RasterioIOError, WindowError
    from rasterio.features import geometry_mask
    from rasterio.warp import transform_geom
    from rasterio.windows import Window, from_bounds
    from shapely.geometry import shape

    from ..read.scene import open_dataset
    from ..read.stac import band_assets, gdal_path

    assets = band_assets(item)
    if "SCL" not in assets:
        return None
    path = gdal_path(assets["SCL"][1]["href"], url)
    try:
        src = open_dataset(path)  # as the reader opens it (no side-car probing over HTTP), kept for classify
        geom = transform_geom("EPSG:4326", src.crs, aoi.__geo_interface__)
        try:
            win = from_bounds(*shape(geom).bounds, transform=src.transform).round_offsets().round_lengths()
            win = win.intersection(Window(0, 0, src.width, src.height))
        except WindowError:  # the AOI misses the raster
            return 0.0
        scl = src.read(1, window=win)
        inside = geometry_mask([geom], out_shape=scl.shape, transform=src.window_transform(win), invert=True,
                               all_touched=True)
    except RasterioIOError as e:
        raise AtlasError(f"{path.removeprefix('/vsicurl/')}: cannot read the SCL of {url} "
                         f"({str(e).splitlines()[0][:160]})") from None
    if not inside.any():
        return 0.0
    return float((~np.isin(scl[inside], SCL_UNUSABLE)).mean())


@dataclass(frozen=True)
class Pick:
    """One date of a period: one Item that covers the AOI, or several that together do (a mosaic)."""

    date: str
    items: tuple[Found, ...]  # clearest over the AOI first
    clear: float  # share of the AOI clear (a mosaic: the sum over its Items, an estimate where they overlap)

    @property
    def url(self) -> str | None:
        """The one Item's URL; None for a mosaic (mosaic.write_mosaic makes its file)."""
        return self.items[0].url if len(self.items) == 1 else None


def choose(found: list[Found], n: int, min_clear: float = MIN_AOI_CLEAR, aoi=None) -> list[Pick]:
    """The `n` clearest dates of `found` (ranked), each at least `min_clear` clear over the AOI (by
    SCL, else by tile cloud): per date the best Item that covers the whole AOI, else, with `aoi`,
    the Items of that date that together cover it (a mosaic, clearest first)."""
    import shapely

    picks = []
    for date in dict.fromkeys(f.date for f in found):
        items = [f for f in found if f.date == date]  # already best first
        whole = [f for f in items if f.covers >= 0.999]
        if whole:
            picks.append(Pick(date, (whole[0],), -whole[0].rank[0]))
        elif aoi is not None and all(f.footprint is not None for f in items):
            union = shapely.intersection(shapely.union_all([f.footprint for f in items]), aoi)
            if shapely.area(union) / aoi.area >= 0.999:
                picks.append(Pick(date, tuple(items), min(1.0, sum(-f.rank[0] for f in items))))
    good = sorted((p for p in picks if p.clear >= min_clear), key=lambda p: (-p.clear, p.date))[:n]
    return sorted(good, key=lambda p: p.date)


def listing(found: list[Found], chosen: list[Pick], title: str) -> str:
    """What --dry-run prints for one side: every Item found, best first, the chosen marked."""
    lines = [f"{title}: {len(found)} item(s), {len(chosen)} date(s) chosen"]
    ids = {f.id for p in chosen for f in p.items}
    mosaic = {f.id for p in chosen if len(p.items) > 1 for f in p.items}
    for f in found:
        clear = "no SCL" if f.aoi_clear is None else f"{100 * f.aoi_clear:5.1f} % of the AOI clear"
        tile = "?" if f.tile_cloud is None else f"{f.tile_cloud:.1f}"
        lines.append(f"  {'*' if f.id in ids else ' '} {f.date}  {clear}  tile cloud {tile} %  covers "
                     f"{100 * f.covers:.0f} % of the AOI{' (mosaic)' if f.id in mosaic else ''}  {f.url}")
    return "\n".join(lines)


def save_item(f: Found, folder: Path) -> Path:
    """The Item of `f` as a local JSON file in `folder` (stac.save_item)."""
    from ..read.stac import save_item as save

    import json

    from ..names import digest, safe_name

    # the id is the catalogue's data, not a path: made safe, and told apart by the Item's own content
    key = digest(f.url, json.dumps(f.item, sort_keys=True, default=str), n=8)
    return save(f.item, f.url, Path(folder) / f"{safe_name(f.id, max_len=60)}_{key}.json")


def tile_of(item: dict) -> str:
    """The tile grid a STAC Item is on: its MGRS tile (Earth Search's mgrs:*, the Planetary Computer's
    s2:mgrs_tile), else its CRS and footprint."""
    p = item.get("properties", {})
    if p.get("s2:mgrs_tile"):
        return str(p["s2:mgrs_tile"])
    if p.get("mgrs:grid_square"):
        return f"{p.get('mgrs:utm_zone')}{p.get('mgrs:latitude_band')}{p['mgrs:grid_square']}"
    crs = item_crs(item) or "footprint"  # an Item without proj: its bbox alone
    return f"{crs} {[round(v, 3) for v in item.get('bbox') or []]}"


def item_crs(item: dict) -> str | None:
    """A STAC Item's CRS as its properties name it (proj:code, else proj:epsg as 'EPSG:n'); None where
    they name none."""
    p = item.get("properties", {})
    crs = p.get("proj:code") or p.get("proj:epsg")
    return f"EPSG:{crs}" if isinstance(crs, int) else crs or None


def one_grid(picks: list[Pick]) -> bool:
    """Whether every pick is one Item of one tile: then the maps share the tile's own grid; else
    (a mosaic anywhere, or Items of several tiles) every date must become a mosaic on the AOI's
    grid, since compare refuses maps on grids that do not align."""
    return all(len(p.items) == 1 for p in picks) and len({tile_of(p.items[0].item) for p in picks}) <= 1


def scene_files(sides: list[list[Pick]], folder: Path, aoi) -> list[list[Path | str]]:
    """What each pick is read from: the Item's URL where `one_grid`, else a mosaic file in `folder`
    (one Item or several, on the AOI's grid)."""
    from ..read.mosaic import mosaic_path, write_mosaic

    if one_grid([p for side in sides for p in side]):
        return [[p.url for p in side] for side in sides]
    return [[write_mosaic(mosaic_path(folder, p), p.date, [f.url for f in p.items], aoi) for p in side]
            for side in sides]


def choose_periods(api: str, collection: str, aoi, periods: dict[str, str], *, n: int = 3,
                   max_tile_cloud: float = MAX_TILE_CLOUD, min_clear: float = MIN_AOI_CLEAR,
                   required: bool = True, hint: str = "") -> tuple[dict[str, list[Pick]], list[str]]:
    """Each period (label -> START/END; the label names it in messages) searched and its `n`
    clearest dates chosen -> ({label: picks}, the `listing` of each); AtlasError naming the API
    where a period has none and `required` (ending in `hint`)."""
    chosen, text = {}, []
    for label, period in periods.items():
        found = search(api, collection, aoi, period, max_tile_cloud=max_tile_cloud, flag=label)
        chosen[label] = choose(found, n, min_clear, aoi)
        text.append(listing(found, chosen[label], f"{label} {period}"))
        if not chosen[label] and required:
            raise AtlasError(f"{api}: no {collection} item of {period} covers the AOI (alone or with the other "
                             f"items of its date) and is at least {100 * min_clear:g} % clear over it ({label}: "
                             f"{len(found)} found{hint})")
    return chosen, text


def resolve_periods(api: str, collection: str, aoi, periods: dict[str, str], folder: Path, *, n: int = 3,
                    max_tile_cloud: float = MAX_TILE_CLOUD, min_clear: float = MIN_AOI_CLEAR,
                    echo=print) -> tuple[dict[str, Path], dict[str, tuple[str, ...]]]:
    """Search each named period (START/END) and keep its `n` clearest dates as local files in
    `folder` (the Item, or a mosaic on the AOI's grid where `one_grid` says the dates need one):
    -> ({date: file}, {period: its dates})."""
    from ..read.mosaic import mosaic_path, write_mosaic

    chosen, text = choose_periods(api, collection, aoi, periods, n=n, max_tile_cloud=max_tile_cloud,
                                  min_clear=min_clear)
    for t in text:
        echo(t)
    picks = [p for side in chosen.values() for p in side]
    if len({p.date for p in picks}) < len(picks):
        raise AtlasError(f"{api}: a date is chosen for two periods; make the periods' ranges disjoint")
    native = one_grid(picks)
    scenes: dict[str, Path] = {}
    for p in picks:
        files = [save_item(f, folder) for f in p.items]
        scenes[p.date] = files[0] if native else write_mosaic(mosaic_path(folder, p), p.date,
                                                              [f.name for f in files], aoi)
    return dict(sorted(scenes.items())), {k: tuple(p.date for p in v) for k, v in chosen.items()}


def kept_periods(search: dict, aoi_file: Path, folder: Path, *, stored_only: bool = False, force: bool = False,
                 echo=print) -> tuple[dict[str, Path], dict[str, tuple[str, ...]]] | None:
    """A job's search (jobfile.SEARCH_KEYS) over the AOI in `aoi_file`, done once: its result kept in
    `folder` (search.json, the Items, mosaics) and read back while the search table is unchanged
    (`force`: search again), so that reruns read the same scenes whatever the catalogue answers
    later. None when `stored_only` and nothing is kept yet."""
    import json
    from datetime import datetime, timezone

    from rasterio.crs import CRS

    from ..outputs import atomic_write
    from ..change.compare import read_aoi

    record = folder / "search.json"
    try:
        kept = json.loads(record.read_text())
        if kept["search"] != search or force:
            raise ValueError("the search changed")
        scenes = {d: folder / f for d, f in kept["scenes"].items()}
        if not all(p.is_file() for p in scenes.values()):
            raise ValueError("a kept file is gone")
        return scenes, {k: tuple(v) for k, v in kept["periods"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        if stored_only:
            return None
    aoi = read_aoi(str(aoi_file), None, "EPSG:4326", CRS.from_epsg(4326))
    scenes, periods = resolve_periods(search["api"], search["collection"], aoi, search["periods"], folder,
                                      n=search["scenes_per_period"], max_tile_cloud=search["max_tile_cloud"],
                                      min_clear=search["min_aoi_clear"], echo=echo)
    doc = {"search": search, "scenes": {d: p.name for d, p in scenes.items()}, "periods": periods,
           "searched": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write(record, lambda f: f.write(json.dumps(doc, indent=1).encode()))
    return scenes, periods
