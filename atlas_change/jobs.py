"""Jobs stage: a TOML job file -> steps (classify each scene, compare date pairs per AOI, GeoPackage,
HTML map) run on one Dask cluster, resumably: a step is skipped when its outputs exist and its
fingerprint (input checksums, model hash, parameters) matches the one recorded when it last
succeeded. One failing step does not stop the others; steps that need its output are blocked.

Job file (paths are relative to the job file's folder; dates are YYYY-MM-DD):

    name = "example"
    model = "spectrumnet-rgb"           # optional: name under models/ or a model folder (default: the
                                        # default model that every scene of the job has the bands for)
    output = "../outputs/example"
    stride = 64                         # optional: 64, 32 or 16
    produce = ["classify", "compare", "gpkg", "html"]
    [[aoi]]
    name = "lake"
    file = "../aoi/lake.geojson"
    scenes = { 2023-06-01 = "../scenes/T32TQM_2023*.tif", 2024-06-01 = "../scenes/T32TQM_2024*.tif" }
    pairs = [["2023-06-01", "2024-06-01"]]   # optional: default consecutive dates
"""
from __future__ import annotations

import fcntl
import glob
import json
import os
import re
import time
import tomllib
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

from .cloud import MAX_CLOUD
from .errors import AtlasError
from .infer import DEFAULT_RUNTIME, DEFAULT_VIEWS, RUNTIMES, VIEWS

PRODUCTS = ("classify", "compare", "gpkg", "html")
TOP_KEYS = {"name": str, "model": str, "output": str, "stride": int, "chunk": int, "max_nodata": float,
            "max_cloud": float, "min_confidence": float, "tta": int, "runtime": str, "produce": list,
            "allow_untrained": bool, "allow_model_mismatch": bool, "aoi": list}
AOI_KEYS = {"name": str, "file": str, "scenes": dict, "pairs": list}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
STATE_DIR = ".atlas-job"
#: folder names under the job's output that the job itself uses: no AOI may take them
RESERVED = ("scenes",)


@dataclass(frozen=True)
class AOI:
    name: str
    file: Path
    scenes: dict[str, Path]  # date -> scene file or SAFE product, sorted by date
    pairs: tuple[tuple[str, str], ...]


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
    min_confidence: float = 0.6
    max_cloud: float = MAX_CLOUD
    tta: int = DEFAULT_VIEWS
    runtime: str = DEFAULT_RUNTIME
    allow_untrained: bool = False
    allow_model_mismatch: bool = False
    model_why: str = "named in the job file"


# ----------------------------------------------------------------------------------------------- parse

def load_job(path: str | os.PathLike) -> Job:
    """Read and fully validate a job file; every problem is reported at once, with its line and key."""
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise AtlasError(f"{p}: cannot read the job file ({getattr(e, 'strerror', None) or e})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise AtlasError(f"{p}: not valid TOML: {e}") from None
    return parse_job(data, p, text)


def parse_job(data: dict, path: Path, text: str = "") -> Job:
    """Validate parsed TOML `data` of the job file `path` (relative paths resolve from its folder)."""
    problems: list[tuple[str, str]] = []

    def bad(key: str, msg: str) -> None:
        problems.append((key, msg))

    def get(d: dict, key: str, types: dict, where: str, default=None, required=False):
        if key not in d:
            if required:
                bad(f"{where}{key}", "missing")
            return default
        v, want = d[key], types[key]
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, want) or (want is int and isinstance(v, bool)):
            bad(f"{where}{key}", f"must be {want.__name__}, not {type(v).__name__} {v!r}"[:200])
            return default
        return v

    base = path.parent
    for k in data:
        if k not in TOP_KEYS:
            bad(k, f"unknown key (allowed: {', '.join(TOP_KEYS)})")
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
    min_conf = get(data, "min_confidence", TOP_KEYS, "", default=0.6)
    if not 0.0 <= min_conf <= 1.0:
        bad("min_confidence", f"{min_conf!r}: must be in [0, 1]")
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

    aois: list[AOI] = []
    raw_aois = get(data, "aoi", TOP_KEYS, "", default=[], required=True)
    if "aoi" in data and not raw_aois:
        bad("aoi", "no [[aoi]] tables: name at least one AOI with its scenes")
    seen: set[str] = set()
    for i, a in enumerate(raw_aois):
        where = f"aoi[{i}]."
        if not isinstance(a, dict):
            bad(f"aoi[{i}]", "must be a table ([[aoi]])")
            continue
        for k in a:
            if k not in AOI_KEYS:
                bad(f"{where}{k}", f"unknown key (allowed: {', '.join(AOI_KEYS)})")
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
        if isinstance(afile, str):
            afile = base / afile
            if not afile.is_file():
                bad(f"{where}file", f"{afile}: no such file")
            else:
                try:
                    _check_aoi(afile)
                except AtlasError as e:
                    bad(f"{where}file", str(e))
        scenes: dict[str, Path] = {}
        given = get(a, "scenes", AOI_KEYS, where, default={}, required=True) or {}
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
            hits = sorted(glob.glob(str(base / pattern)))
            if len(hits) != 1:
                shown = ", ".join(hits[:5]) + (f" and {len(hits) - 5} more" if len(hits) > 5 else "")
                bad(key, f"{pattern!r} matches {len(hits)} files{': ' + shown if hits else ''}; "
                    "it must name exactly one scene")
                continue
            scenes[d] = Path(hits[0])
        scenes = dict(sorted(scenes.items()))
        dates = list(scenes)
        pairs = []
        for j, pair in enumerate(get(a, "pairs", AOI_KEYS, where, default=None) or []):
            ds = [v.isoformat() if isinstance(v, date) else v for v in pair] if isinstance(pair, list) else []
            if len(ds) != 2 or not all(isinstance(v, str) and v in scenes for v in ds) or ds[0] >= ds[1]:
                bad(f"{where}pairs[{j}]", f"{pair!r}: must be [earlier date, later date] of this AOI's scenes")
            else:
                pairs.append(tuple(ds))
        if "pairs" not in a:
            pairs = list(zip(dates, dates[1:]))
        if "compare" in produce and len(given) < 2 and "scenes" in a:
            bad(f"{where}scenes", "compare needs at least two dates")
        if isinstance(aname, str) and isinstance(afile, Path):
            aois.append(AOI(aname, afile, scenes, tuple(pairs)))
    from .registry import choose_model, load_card

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
    if problems:
        where = [f"line {ln}: {k}" if (ln := _line_of(text, k)) else k for k, _ in problems]
        raise AtlasError(f"{path}: {len(problems)} problem{'s' if len(problems) > 1 else ''}:"
                         + "".join(f"\n  {w}: {m}" for w, (_, m) in zip(where, problems)))
    return Job(path, name, model, Path(os.path.normpath(base / output)), tuple(aois), tuple(produce), stride, chunk,
               max_nodata, min_conf, max_cloud, tta, runtime, flags["allow_untrained"], flags["allow_model_mismatch"],
               why)


def _check_aoi(path: Path) -> None:
    """Read the AOI as compare will (any CRS, non-empty, valid polygons), so that a bad AOI fails now."""
    from rasterio.crs import CRS

    from .compare import read_aoi

    read_aoi(str(path), None, "EPSG:4326", CRS.from_epsg(4326))


def _common_bands(aois: list[AOI]) -> tuple[str, ...]:
    """The Sentinel-2 bands every readable scene of the job holds (unreadable ones are reported per step)."""
    from .bands import S2_BANDS
    from .read import open_scene

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


# ------------------------------------------------------------------------------------------------ plan

@dataclass
class Step:
    id: str
    kind: str  # classify | compare | gpkg | html
    outputs: list[Path]
    deps: list[str] = field(default_factory=list)
    args: dict = field(default_factory=dict)


def plan(job: Job) -> list[Step]:
    """The job's steps in dependency order: each scene classified once (shared between AOIs), then
    per AOI and date pair a compare, and the GeoPackage / HTML of each compare (or of each
    classify output when the job does not compare)."""
    steps: dict[str, Step] = {}
    scene_step: dict[Path, str] = {}
    from .pipeline import scene_stem

    for aoi in job.aois:
        for scene in aoi.scenes.values():
            if scene.resolve() in scene_step:
                continue
            stem = scene_stem(scene)
            sid = f"classify/{stem}"
            n = 2
            while sid in steps:
                sid, n = f"classify/{stem}-{n}", n + 1
            folder = job.output / "scenes" / sid.split("/", 1)[1]
            steps[sid] = Step(sid, "classify", [folder / f for f in ("lulc.tif", "confidence.tif", "cloud.tif",
                                                                      "tiles.parquet", "run.json")],
                              args={"scene": scene, "folder": folder})
            scene_step[scene.resolve()] = sid
    products = []
    if "compare" in job.produce:
        for aoi in job.aois:
            for before, after in aoi.pairs:
                sid = f"compare/{aoi.name}/{before}_{after}"
                folder = job.output / aoi.name / f"{before}_{after}"
                deps = [scene_step[aoi.scenes[before].resolve()], scene_step[aoi.scenes[after].resolve()]]
                files = ("before.tif", "after.tif", "before_confidence.tif", "after_confidence.tif", "change.tif",
                         "transitions.csv", "aoi.geojson", "summary.json")
                steps[sid] = Step(sid, "compare", [folder / f for f in files], deps,
                                  {"aoi": aoi.file, "folder": folder, "dates": (before, after),
                                   "maps": [steps[d].args["folder"] for d in deps]})
                products.append((sid, folder, f"{aoi.name}/{before}_{after}"))
    else:
        products = [(sid, steps[sid].args["folder"], sid.split("/", 1)[1]) for sid in scene_step.values()]
    for sid, folder, name in products:
        maps = steps[sid].args.get("maps", [folder])  # the classify folders whose tiles go in
        made_of = list(dict.fromkeys([*(m / f for m in maps for f in ("tiles.parquet", "run.json")),
                                      *steps[sid].outputs]))
        if "gpkg" in job.produce:
            steps[f"gpkg/{name}"] = Step(f"gpkg/{name}", "gpkg", [folder / "tiles.gpkg"], [sid],
                                         {"folder": folder, "made_of": made_of})
        if "html" in job.produce:
            pages = ["change_map.html"] + (["change_map_side_by_side.html"] if "maps" in steps[sid].args else [])
            steps[f"html/{name}"] = Step(f"html/{name}", "html", [folder / p for p in pages], [sid],
                                         {"folder": folder, "made_of": made_of})
    return list(steps.values())


# ----------------------------------------------------------------------------------------- fingerprint

class Hashes:
    """SHA-256 of input files, remembered by (path, size, mtime) in the job's state folder."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.known = json.loads(path.read_text())
        except (OSError, ValueError):
            self.known = {}

    def __call__(self, p: Path) -> str:
        from .pipeline import input_checksum

        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        stats = [(st.st_size, st.st_mtime_ns) for st in map(os.stat, files)]
        stamp = [len(files), sum(s for s, _ in stats), max((m for _, m in stats), default=0)]
        key = str(p.resolve())
        if key in self.known and self.known[key][0] == stamp:
            return self.known[key][1]
        digest = input_checksum(str(p))
        self.known[key] = [stamp, digest]
        return digest

    def save(self) -> None:
        _write_json(self.path, self.known)


def fingerprint(job: Job, step: Step, sha: Callable[[Path], str]) -> dict | None:
    """What a step's outputs depend on; None while an input does not exist yet."""
    a = step.args
    try:
        if step.kind == "classify":
            from .registry import load_card

            return {"scene": str(a["scene"].resolve()), "scene_sha256": sha(a["scene"]),
                    "weights_sha256": load_card(job.model).weights_sha256, "stride": job.stride,
                    "chunk": job.chunk, "max_nodata": job.max_nodata, "max_cloud": job.max_cloud,
                    **({"tta": job.tta} if job.tta != DEFAULT_VIEWS else {}),
                    **({"runtime": job.runtime} if job.runtime != DEFAULT_RUNTIME else {})}
        if step.kind == "compare":
            return {"aoi_sha256": sha(a["aoi"]), "dates": list(a["dates"]),
                    "inputs": [sha(m / f) for m in a["maps"]
                               for f in ("lulc.tif", "confidence.tif", "cloud.tif", "run.json")],
                    "min_confidence": job.min_confidence, "allow_model_mismatch": job.allow_model_mismatch}
        return {"inputs": [sha(f) for f in a["made_of"]]}
    except FileNotFoundError:
        return None


# ------------------------------------------------------------------------------------------------- run

@dataclass
class Result:
    id: str
    status: str  # done | up to date | failed | blocked | pending
    seconds: float = 0.0
    detail: str = ""


def _state_file(job: Job, step_id: str) -> Path:
    return job.output / STATE_DIR / "steps" / (step_id.replace("/", "__") + ".json")


def _read_state(job: Job, step_id: str) -> dict:
    try:
        return json.loads(_state_file(job, step_id).read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, obj) -> None:
    from .assemble import atomic_write

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1, default=str) + "\n").encode()))
    except OSError as e:
        raise AtlasError(f"{path}: cannot record the job's state ({e.strerror or e})") from None


@contextmanager
def job_lock(job: Job) -> Iterator[None]:
    """Hold <output>/.atlas-job/lock for the run; a second run of the same job is refused. The
    operating system drops the lock when the process dies, so a killed run never blocks the next."""
    path = job.output / STATE_DIR / "lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+")
    except OSError as e:
        raise AtlasError(f"{job.output}: cannot write the job's output folder ({e.strerror})") from None
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise AtlasError(f"{job.path}: another run of this job is in progress ({path} is held by "
                             f"pid {f.read().strip() or '?'}); wait for it or stop it") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        f.close()


def _execute(job: Job, step: Step, client, workers: int | None, scheduler: str | None, quiet: bool) -> None:
    a = step.args
    if step.kind == "classify":
        from .pipeline import classify

        classify(a["scene"], model=job.model, stride=job.stride, chunk=job.chunk, max_nodata=job.max_nodata,
                 max_cloud=job.max_cloud, tta=job.tta, runtime=job.runtime, out=a["folder"], client=client, workers=workers, scheduler=scheduler,
                 allow_untrained=job.allow_untrained, quiet=quiet, model_why=job.model_why)
    elif step.kind == "compare":
        from .compare import compare

        compare(*a["maps"], aoi=str(a["aoi"]), out=a["folder"], min_confidence=job.min_confidence,
                allow_model_mismatch=job.allow_model_mismatch, before_date=a["dates"][0], after_date=a["dates"][1])
    elif step.kind == "gpkg":
        from .export import export_gpkg

        export_gpkg(a["folder"], step.outputs[0])
    else:
        from .view import change_map

        change_map(a["folder"], step.outputs[0], side_by_side=len(step.outputs) > 1)


def run_job(job: Job, *, scheduler: str | None = None, workers: int | None = None, force: bool = False,
            quiet: bool = False, echo: Callable[[str], None] = print) -> list[Result]:
    """Run every step of `job` that is not up to date, on one Dask cluster (scheduler: None = a
    LocalCluster of `workers` processes, an address, or 'sync'); -> one Result per step."""
    from .pipeline import dask_client

    steps = plan(job)
    results: dict[str, Result] = {}
    with job_lock(job):
        hashes = Hashes(job.output / STATE_DIR / "hashes.json")
        client = None
        with ExitStack() as stack:
            for n, step in enumerate(steps, 1):
                failed_deps = [d for d in step.deps if results[d].status not in ("done", "up to date")]
                if failed_deps:
                    results[step.id] = Result(step.id, "blocked", detail=f"needs {', '.join(failed_deps)}")
                    echo(f"[{n}/{len(steps)}] {step.id}: blocked (needs {', '.join(failed_deps)})")
                    continue
                t = time.perf_counter()
                try:
                    fp = fingerprint(job, step, hashes)
                    state = _read_state(job, step.id)
                    if (not force and fp is not None and state.get("status") == "done"
                            and state.get("fingerprint") == fp and damage(step) is None):
                        results[step.id] = Result(step.id, "up to date")
                        echo(f"[{n}/{len(steps)}] {step.id}: up to date")
                        continue
                    echo(f"[{n}/{len(steps)}] {step.id} ...")
                    if step.kind == "classify" and client is None and scheduler != "sync":
                        client = stack.enter_context(dask_client(workers, scheduler))  # once, when needed
                    _execute(job, step, client, workers, scheduler, quiet)
                    fp = fingerprint(job, step, hashes)
                    status, detail = "done", ""
                except AtlasError as e:
                    status, detail = "failed", str(e)
                except Exception as e:  # noqa: BLE001  (one step's bug must not stop the others)
                    status, detail = "failed", f"{type(e).__name__}: {e}"
                    if not quiet:
                        traceback.print_exc()
                secs = time.perf_counter() - t
                results[step.id] = Result(step.id, status, secs, detail)
                _write_json(_state_file(job, step.id), {
                    "id": step.id, "status": status, "error": detail, "fingerprint": fp if status == "done" else None,
                    "seconds": round(secs, 2), "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "outputs": [str(p) for p in step.outputs]})
                echo(f"[{n}/{len(steps)}] {step.id}: {status} in {secs:.1f} s" + (f": {detail}" if detail else ""))
            hashes.save()
    return list(results.values())


def damage(step: Step) -> str | None:
    """What is wrong with a finished step's outputs (missing, unreadable, a classify folder whose
    run.json and raster stamp disagree), or None when they are sound; such a step is done again."""
    missing = [p.name for p in step.outputs if not p.exists()]
    if missing:
        return f"missing {', '.join(missing)}"
    try:
        if step.kind == "classify":
            from .assemble import read_raster
            from .compare import load_map

            load_map(step.args["folder"])
            for name in ("confidence.tif", "cloud.tif"):
                read_raster(step.args["folder"] / name)
        elif step.kind == "compare":
            from .assemble import read_json, read_raster

            read_json(step.args["folder"] / "summary.json", ("before.source", "after.source", "changed_ha"))
            read_raster(step.args["folder"] / "change.tif")
    except AtlasError as e:
        return str(e)
    return None


def job_status(job: Job) -> list[Result]:
    """Each step as `run` would find it, without running: done, stale (inputs, parameters or outputs
    changed since, or a step it needs will be redone), failed, blocked or pending."""
    hashes = Hashes(job.output / STATE_DIR / "hashes.json")
    out: dict[str, Result] = {}
    for step in plan(job):
        state = _read_state(job, step.id)
        stuck = [d for d in step.deps if out[d].status in ("failed", "blocked")]
        redone = [d for d in step.deps if out[d].status in ("stale", "pending")]
        if state.get("status") == "failed":
            out[step.id] = Result(step.id, "failed", state.get("seconds", 0.0), state.get("error", ""))
        elif stuck:
            out[step.id] = Result(step.id, "blocked", detail=f"needs {', '.join(stuck)}")
        elif state.get("status") == "done":
            why = damage(step)
            if why is None and fingerprint(job, step, hashes) != state.get("fingerprint"):
                why = "inputs or parameters changed since"
            if why is None and redone:
                why = f"waits for {', '.join(redone)}"
            out[step.id] = Result(step.id, "stale" if why else "done", state.get("seconds", 0.0),
                                  f"{why}; `run` redoes it" if why else "")
        else:
            out[step.id] = Result(step.id, "pending")
    return list(out.values())


def outcomes(job: Job, results: list[Result]) -> list[str]:
    """One line per compared AOI and date pair that has a result: changed, uncertain and cloud
    hectares and where the map and the GeoPackage are."""
    ok = {r.id for r in results if r.status in ("done", "up to date")}
    steps = {s.id: s for s in plan(job)}
    lines = []
    for step in steps.values():
        if step.kind != "compare" or step.id not in ok:
            continue
        from .assemble import read_json

        try:
            s = read_json(step.args["folder"] / "summary.json", ("changed_ha", "uncertain_ha", "cloud_ha"))
        except AtlasError:
            continue
        name = step.id.split("/", 1)[1]
        files = [str(p) for sid in (f"html/{name}", f"gpkg/{name}") if sid in ok for p in steps[sid].outputs[:1]]
        lines.append(f"{name}: {s['changed_ha']:.2f} ha changed, {s['uncertain_ha']:.2f} ha uncertain, "
                     f"{s['cloud_ha']:.2f} ha cloud" + (f"; {', '.join(files)}" if files else f"; {step.args['folder']}"))
    return lines


def table(results: list[Result]) -> str:
    """A plain-text summary table of step results."""
    w = max([len(r.id) for r in results] + [4])
    rows = [f"{'step':{w}}  {'status':10}  {'seconds':>8}  detail", "-" * (w + 32)]
    rows += [f"{r.id:{w}}  {r.status:10}  {r.seconds:8.1f}  {r.detail}" for r in results]
    counts = {s: sum(r.status == s for r in results) for s in dict.fromkeys(r.status for r in results)}
    rows.append(", ".join(f"{v} {k}" for k, v in counts.items()))
    return "\n".join(rows)
