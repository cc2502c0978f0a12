"""The job file: TOML naming the model, the output folder, the AOIs and, per AOI, the scenes by date,
read and fully validated into a `Job` (every problem reported at once, one per line, with its line
number and key). Paths are relative to the job file's folder; dates are YYYY-MM-DD:

    name = "example"
    model = "spectrumnet-rgb"           # optional: name under models/ or a model folder (default: the
                                        # default model that every scene of the job has the bands for)
    output = "../outputs/example"
    stride = 64                         # optional: 64, 32 or 16 (also chunk, max_nodata, max_cloud,
    tta = 2                             # min_confidence, runtime, allow_untrained, allow_model_mismatch)
    produce = ["classify", "compare", "gpkg", "html"]
    [[aoi]]
    name = "lake"                       # not "scenes" (the per-scene results' folder)
    file = "../aoi/lake.geojson"        # or its http(s) URL (fetched once, a copy kept)
    scenes = { 2023-06-01 = "../scenes/T32TQM_2023*.tif", 2024-06-01 = "https://.../items/S2B_..." }
    pairs = [["2023-06-01", "2024-06-01"]]   # optional: default consecutive dates (or periods); a list
                                        # of three or more is a sequence, decided from all of them
    # optional: periods of several scene dates, composited; pairs may then name periods
    periods = { summer-2023 = ["2023-06-01", "2023-07-16"], summer-2024 = ["2024-06-01", "2024-07-20"] }

    [[aoi]]                             # or: the scenes of each period found in a STAC API
    name = "farm"
    file = "../aoi/farm.geojson"
    search = { api = "https://earth-search.aws.element84.com/v1", periods = { summer-2023 = "2023-06-01/2023-08-31",
               summer-2024 = "2024-06-01/2024-08-31" } }   # optional: collection, scenes_per_period,
                                        # max_tile_cloud, min_aoi_clear (as compare --stac-api)
"""
from __future__ import annotations

import glob
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from ..mapping.cloud import MAX_CLOUD
from ..errors import AtlasError
from ..model.infer import DEFAULT_RUNTIME, DEFAULT_VIEWS, RUNTIMES, VIEWS
from ..change.joint import DEFAULT_THRESHOLD

PRODUCTS = ("classify", "compare", "gpkg", "html")
TOP_KEYS = {"name": str, "model": str, "output": str, "stride": int, "chunk": int, "max_nodata": float,
            "max_cloud": float, "cloud_mask": bool, "min_confidence": float, "stay": float, "tta": int, "runtime": str, "produce": list,
            "allow_untrained": bool, "allow_model_mismatch": bool, "aoi": list}
AOI_KEYS = {"name": str, "file": str, "scenes": dict, "pairs": list, "periods": dict, "search": dict}
SEARCH_KEYS = {"api": str, "collection": str, "periods": dict, "scenes_per_period": int, "max_tile_cloud": float,
               "min_aoi_clear": float}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
STATE_DIR = ".atlas-job"
#: folder names under the job's output that the job itself uses: no AOI may take them
RESERVED = ("scenes",)


@dataclass(frozen=True)
class AOI:
    name: str
    file: Path | str  # the AOI file, or its URL until jobs.resolve_remote keeps a copy
    scenes: dict[str, Path]  # date -> scene file or SAFE product, sorted by date
    pairs: tuple[tuple[str, ...], ...]  # (before, after) or a longer sequence: dates or period names
    periods: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name -> its dates (sorted)
    search: dict | None = None  # a STAC search (SEARCH_KEYS) whose result (jobs.resolve_remote) fills scenes
    remote: tuple[Path, ...] = ()  # scenes kept from a catalogue (searched, or an Item's URL): classified over the AOI

    def dates_of(self, name: str) -> tuple[str, ...]:
        """The scene dates a pair's side names: a period's dates, or the one date."""
        return self.periods.get(name, (name,))


@dataclass(frozen=True)
class Job:
    path: Path
    name: str
    model: str
    output: Path
    aois: tuple[AOI, ...]
    produce: tuple[str, ...] = PRODUCTS
    stride: int = 64
    chunk: int = 1024
    max_nodata: float = 0.0
    min_confidence: float = DEFAULT_THRESHOLD
    max_cloud: float = MAX_CLOUD
    cloud_mask: bool = True
    tta: int = DEFAULT_VIEWS
    runtime: str = DEFAULT_RUNTIME
    allow_untrained: bool = False
    allow_model_mismatch: bool = False
    model_why: str = "named in the job file"
    stay: float | None = None  # None: the prior fitted to the maps' model (compare.resolve_stay)


def read_toml(path: Path) -> tuple[dict, str]:
    """A job file's TOML and its text; AtlasError naming the file when it cannot be read or parsed."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise AtlasError(f"{path}: cannot read the job file ({getattr(e, 'strerror', None) or e})") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        raise AtlasError(f"{path}: not valid TOML: {e}") from None


def load_job(path: str | os.PathLike) -> Job:
    """Read and fully validate a job file; every problem is reported at once, with its line and key."""
    p = Path(path)
    data, text = read_toml(p)
    return parse_job(data, p, text)


class Problems:
    """Every problem of a job file, gathered (key, message), the typed `get` that records them, and
    `check`, which reports them all at once."""

    def __init__(self) -> None:
        self.found: list[tuple[str, str]] = []

    def bad(self, key: str, msg: str) -> None:
        self.found.append((key, msg))

    def get(self, d: dict, key: str, types: dict, where: str, default=None, required=False):
        if key not in d:
            if required:
                self.bad(f"{where}{key}", "missing")
            return default
        v, want = d[key], types[key]
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, want) or (want is int and isinstance(v, bool)):
            self.bad(f"{where}{key}", f"must be {want.__name__}, not {type(v).__name__} {v!r}"[:200])
            return default
        return v

    def unknown(self, d: dict, allowed: dict, where: str) -> None:
        """Record every key of `d` that `allowed` does not name."""
        for k in d:
            if k not in allowed:
                self.bad(f"{where}{k}", f"unknown key (allowed: {', '.join(allowed)})")

    def check(self, path: Path, text: str) -> None:
        """AtlasError listing every problem, each with its line in `text` where it can be found."""
        if self.found:
            where = [f"line {ln}: {k}" if (ln := _line_of(text, k)) else k for k, _ in self.found]
            raise AtlasError(f"{path}: {len(self.found)} problem{'s' if len(self.found) > 1 else ''}:"
                             + "".join(f"\n  {w}: {m}" for w, (_, m) in zip(where, self.found)))


def parse_job(data: dict, path: Path, text: str = "") -> Job:
    """Validate parsed TOML `data` of the job file `path` (relative paths resolve from its folder)."""
    pr = Problems()
    bad, get = pr.bad, pr.get
    base = path.parent
    pr.unknown(data, TOP_KEYS, "")
    name = get(data, "name", TOP_KEYS, "", required=True)
    if isinstance(name, str) and not NAME.match(name):
        bad("name", f"{name!r}: use letters, digits, '_', '-', '.'")
    model = get(data, "model", TOP_KEYS, "", default=None)
    output = get(data, "output", TOP_KEYS, "", required=True)
    stride = get(data, "stride", TOP_KEYS, "", default=64)
    if stride not in (64, 32, 16):
        bad("stride", f"{stride!r}: must be 64, 32 or 16")
        stride = 64
    chunk = get(data, "chunk", TOP_KEYS, "", default=1024)
    if chunk <= 0 or chunk % 64:
        bad("chunk", f"{chunk!r}: must be a positive multiple of 64")
    max_nodata = get(data, "max_nodata", TOP_KEYS, "", default=0.0)
    if not 0.0 <= max_nodata < 1.0:
        bad("max_nodata", f"{max_nodata!r}: must be in [0, 1)")
    max_cloud = get(data, "max_cloud", TOP_KEYS, "", default=MAX_CLOUD)
    if not 0.0 <= max_cloud <= 1.0:
        bad("max_cloud", f"{max_cloud!r}: must be in [0, 1]")
    min_conf = get(data, "min_confidence", TOP_KEYS, "", default=DEFAULT_THRESHOLD)
    if not 0.5 <= min_conf <= 1.0:
        bad("min_confidence", f"{min_conf!r}: must be from 0.5 to 1 (the posterior a change decision needs)")
    stay = get(data, "stay", TOP_KEYS, "", default=None)
    if stay is not None and not 0.0 < stay < 1.0:
        bad("stay", f"{stay!r}: must be strictly between 0 and 1 (the prior probability of keeping a class)")
    tta = get(data, "tta", TOP_KEYS, "", default=DEFAULT_VIEWS)
    if tta not in VIEWS:
        bad("tta", f"{tta!r}: must be one of {', '.join(map(str, VIEWS))}")
        tta = DEFAULT_VIEWS
    runtime = get(data, "runtime", TOP_KEYS, "", default=DEFAULT_RUNTIME)
    if runtime not in RUNTIMES:
        bad("runtime", f"{runtime!r}: must be one of {', '.join(RUNTIMES)}")
        runtime = DEFAULT_RUNTIME
    produce = get(data, "produce", TOP_KEYS, "", default=list(PRODUCTS))
    if not produce or any(v not in PRODUCTS for v in produce):
        bad("produce", f"{produce!r}: a non-empty list of {', '.join(PRODUCTS)}")
        produce = list(PRODUCTS)
    flags = {k: get(data, k, TOP_KEYS, "", default=False) for k in ("allow_untrained", "allow_model_mismatch")}
    cloud_mask = get(data, "cloud_mask", TOP_KEYS, "", default=True)

    aois: list[AOI] = []
    raw_aois = get(data, "aoi", TOP_KEYS, "", default=[], required=True)
    if "aoi" in data and not raw_aois:
        bad("aoi", "no [[aoi]] tables: name at least one AOI with its scenes")
    seen: set[str] = set()
    for i, a in enumerate(raw_aois):
        aoi = _parse_aoi(a, i, base, produce, seen, pr)
        if aoi is not None:
            aois.append(aoi)
    from ..model.registry import choose_model, load_card

    if isinstance(model, str) and (base / model / "card.json").is_file():
        model = str(base / model)
    why = "named in the job file"
    try:
        if model is None:  # the default model that every scene has the bands for
            card, why = choose_model(_common_bands(aois), str(path))
            model, why = card.path, f"{why} (every scene of the job)"
        card = load_card(model)
        if not card.trained and not flags["allow_untrained"]:
            bad("model", f"{card.path} is untrained (random weights); set allow_untrained = true to run it anyway")
    except AtlasError as e:
        bad("model", str(e))
    pr.check(path, text)
    return Job(path, name, model, Path(os.path.normpath(base / output)), tuple(aois), tuple(produce), stride, chunk,
               max_nodata, min_conf, max_cloud, cloud_mask, tta, runtime, flags["allow_untrained"],
               flags["allow_model_mismatch"], why, stay)


def _parse_aoi(a, i: int, base: Path, produce: list, seen: set[str], pr: Problems) -> AOI | None:
    """One [[aoi]] table checked: its AOI, or None where it cannot be made (the problems recorded in `pr`)."""
    bad, get = pr.bad, pr.get
    where = f"aoi[{i}]."
    if not isinstance(a, dict):
        bad(f"aoi[{i}]", "must be a table ([[aoi]])")
        return None
    pr.unknown(a, AOI_KEYS, where)
    aname = get(a, "name", AOI_KEYS, where, required=True)
    if isinstance(aname, str):
        if not NAME.match(aname):
            bad(f"{where}name", f"{aname!r}: use letters, digits, '_', '-', '.'")
        elif aname in RESERVED:
            bad(f"{where}name", f"{aname!r} is reserved (<output>/{aname}/ holds the job's per-scene results)")
        elif aname in seen:
            bad(f"{where}name", f"{aname!r} is used by two AOIs")
        seen.add(aname)
    afile = get(a, "file", AOI_KEYS, where, required=True)
    if isinstance(afile, str) and afile.startswith(("http://", "https://")):
        pass  # the AOI's URL: jobs.resolve_remote fetches, checks and keeps a copy, as for a STAC Item's URL
    elif isinstance(afile, str):
        afile = base / afile
        if not afile.is_file():
            bad(f"{where}file", f"{afile}: no such file")
        else:
            try:
                check_aoi(afile)
            except AtlasError as e:
                bad(f"{where}file", str(e))
    search = _check_search(get(a, "search", AOI_KEYS, where, default=None), f"{where}search.", pr)
    if search is not None and ("scenes" in a or "periods" in a):
        bad(f"{where}search", "an AOI names either scenes (and periods) or a search, not both")
    given = get(a, "scenes", AOI_KEYS, where, default={}, required=search is None) or {}
    scenes = _aoi_scenes(given, where, base, pr)
    dates = list(scenes)
    periods = _aoi_periods(get(a, "periods", AOI_KEYS, where, default={}) or {}, where, scenes, pr)
    if search is not None:  # its periods' dates are known once searched: pairs name periods
        names = list(search["periods"])
        pairs = [tuple(p) for p in get(a, "pairs", AOI_KEYS, where, default=None) or zip(names, names[1:])]
        for j, pair in enumerate(pairs):
            if len(pair) < 2 or not all(v in names for v in pair) or len(set(pair)) != len(pair):
                bad(f"{where}pairs[{j}]", f"{list(pair)!r}: must be [earlier, later, ...], two or more of the "
                    "search's periods")
        if "compare" in produce and len(names) < 2:
            bad(f"{where}search.periods", "compare needs at least two periods")
        if isinstance(aname, str) and isinstance(afile, (Path, str)):
            return AOI(aname, afile, {}, tuple(pairs), {}, search)
        return None
    pairs = []
    for j, pair in enumerate(get(a, "pairs", AOI_KEYS, where, default=None) or []):
        ds = [v.isoformat() if isinstance(v, date) else v for v in pair] if isinstance(pair, list) else []
        sides = [periods.get(v, (v,)) if isinstance(v, str) else () for v in ds]
        if (len(ds) < 2 or not all(s and all(d in scenes for d in s) for s in sides)
                or any(x[-1] >= y[0] for x, y in zip(sides, sides[1:]))):
            bad(f"{where}pairs[{j}]", f"{pair!r}: must be [earlier, later, ...], each a date of this AOI's scenes "
                "or one of its periods, each ending before the next begins")
        else:
            pairs.append(tuple(ds))
    if "pairs" not in a:
        order = sorted(periods, key=lambda k: periods[k][0]) if periods else dates
        pairs = list(zip(order, order[1:]))
    if "compare" in produce and len(given) < 2 and "scenes" in a:
        bad(f"{where}scenes", "compare needs at least two dates")
    if isinstance(aname, str) and isinstance(afile, (Path, str)):
        return AOI(aname, afile, scenes, tuple(pairs), periods)
    return None


def _aoi_scenes(given: dict, where: str, base: Path, pr: Problems) -> dict[str, Path | str]:
    """An AOI's `scenes` table checked: date -> its one scene file (or a STAC Item's URL), by date."""
    bad = pr.bad
    scenes: dict[str, Path | str] = {}
    for d, pattern in given.items():
        key = f"{where}scenes.{d}"
        if isinstance(d, date):
            d = d.isoformat()
        try:
            d = date.fromisoformat(d).isoformat()
        except ValueError:
            bad(key, f"{d!r} is not a date (YYYY-MM-DD)")
            continue
        if not isinstance(pattern, str):
            bad(key, f"must be a path or glob string, not {type(pattern).__name__}")
            continue
        if pattern.startswith(("http://", "https://")):  # a STAC Item's URL: jobs.resolve_remote keeps a copy
            scenes[d] = pattern
            continue
        hits = sorted(glob.glob(str(base / pattern)))
        if len(hits) != 1:
            shown = ", ".join(hits[:5]) + (f" and {len(hits) - 5} more" if len(hits) > 5 else "")
            bad(key, f"{pattern!r} matches {len(hits)} files{': ' + shown if hits else ''}; "
                "it must name exactly one scene")
            continue
        scenes[d] = Path(hits[0])
    return dict(sorted(scenes.items()))


def _aoi_periods(given: dict, where: str, scenes: dict, pr: Problems) -> dict[str, tuple[str, ...]]:
    """An AOI's `periods` table checked: name -> its dates (of the AOI's scenes, sorted)."""
    bad = pr.bad
    periods: dict[str, tuple[str, ...]] = {}
    for pname, pdates in given.items():
        key = f"{where}periods.{pname}"
        ds = [v.isoformat() if isinstance(v, date) else v for v in pdates] if isinstance(pdates, list) else []
        if not NAME.match(pname) or pname in scenes:
            bad(key, f"{pname!r}: a period's name uses letters, digits, '_', '-', '.' and is not a date")
        elif not ds or not all(isinstance(v, str) and v in scenes for v in ds) or len(set(ds)) != len(ds):
            bad(key, f"{pdates!r}: must list dates of this AOI's scenes, each once")
        else:
            periods[pname] = tuple(sorted(ds))
    return periods


def _check_search(raw: dict | None, where: str, pr: Problems) -> dict | None:
    """A search table with its defaults, its periods checked (START/END); None when absent."""
    from .search import MAX_TILE_CLOUD, MIN_AOI_CLEAR, parse_range

    if raw is None:
        return None
    bad, get = pr.bad, pr.get
    pr.unknown(raw, SEARCH_KEYS, where)
    out = {"api": get(raw, "api", SEARCH_KEYS, where, required=True),
           "collection": get(raw, "collection", SEARCH_KEYS, where, default="sentinel-2-l2a"),
           "scenes_per_period": get(raw, "scenes_per_period", SEARCH_KEYS, where, default=3),
           "max_tile_cloud": get(raw, "max_tile_cloud", SEARCH_KEYS, where, default=MAX_TILE_CLOUD),
           "min_aoi_clear": get(raw, "min_aoi_clear", SEARCH_KEYS, where, default=MIN_AOI_CLEAR), "periods": {}}
    if out["scenes_per_period"] is None or out["scenes_per_period"] < 1:
        bad(f"{where}scenes_per_period", "must be at least 1")
    for name, period in (get(raw, "periods", SEARCH_KEYS, where, required=True) or {}).items():
        if not NAME.match(name):
            bad(f"{where}periods.{name}", f"{name!r}: use letters, digits, '_', '-', '.'")
            continue
        try:
            parse_range(period, f"{where}periods.{name}")
            out["periods"][name] = period
        except AtlasError as e:
            bad(f"{where}periods.{name}", str(e))
    starts = [p.split("/")[0] for p in out["periods"].values()]
    if starts != sorted(starts):
        bad(f"{where}periods", "list the periods from the earliest to the latest")
    return out


def check_aoi(path: Path) -> None:
    """Read the AOI as compare will (any CRS, non-empty, valid polygons), so that a bad AOI fails now."""
    from rasterio.crs import CRS

    from ..change.compare import read_aoi

    read_aoi(str(path), None, "EPSG:4326", CRS.from_epsg(4326))


def _common_bands(aois: list[AOI]) -> tuple[str, ...]:
    """The Sentinel-2 bands every readable scene of the job holds (unreadable ones are reported per step)."""
    from ..bands import S2_BANDS
    from ..read import open_scene

    common = set(S2_BANDS)
    for a in aois:
        for scene in a.scenes.values():
            try:
                common &= set(open_scene(scene, ()).available)
            except AtlasError:
                pass
    return tuple(b for b in S2_BANDS if b in common)


def _line_of(text: str, key: str) -> int | None:
    """Line number of `key` ('stride', 'aoi[1].file', 'aoi[0].scenes.2023-06-01') in the TOML text."""
    lines = text.splitlines()
    m = re.match(r"aoi\[(\d+)\]\.?(.*)", key)
    start, stop, leaf = 0, len(lines), key
    heads = [i for i, line in enumerate(lines) if re.match(r"\s*\[\[\s*aoi\s*\]\]", line)]
    if m:
        n, leaf = int(m.group(1)), m.group(2)
        if n >= len(heads):
            return None
        start, stop = heads[n], heads[n + 1] if n + 1 < len(heads) else len(lines)
        if not leaf:
            return start + 1
    elif heads:
        stop = heads[0]
    leaf = re.sub(r"\[\d+\]$", "", leaf.split(".", 1)[-1] if leaf.startswith("scenes.") else leaf)
    for i in range(start, stop):
        if re.search(rf"(^|[\s{{,]){re.escape(leaf)}\"?\s*=", lines[i]):
            return i + 1
    return None
