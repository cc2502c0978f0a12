"""Jobs stage: a job file (jobfile.py) -> steps (classify each scene, compare date pairs per AOI,
GeoPackage, HTML map) run on one Dask cluster, resumably: a step is skipped when its outputs exist
and are sound and its fingerprint (input checksums, model hash, parameters) matches the one recorded
when it last succeeded. One failing step does not stop the others; steps that need its output are
blocked. `status` reports what `run` would redo, without running.
"""
from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import AtlasError
from ..outputs import folder_lock
from ..model.infer import DEFAULT_RUNTIME, DEFAULT_VIEWS
from .jobfile import AOI_KEYS, PRODUCTS, STATE_DIR, TOP_KEYS, Job, load_job, parse_job  # noqa: F401  (the API)

#: what a compare step leaves in its folder (a sequence's: in its span folder)
COMPARE_FILES = ("before.tif", "after.tif", "before_confidence.tif", "after_confidence.tif", "before_probabilities.tif",
                 "after_probabilities.tif", "change.tif", "p_change.tif", "transitions.csv", "transitions_groups.csv",
                 "aoi.geojson", "summary.json")

# ---------------------------------------------------------------------------------------------- search

def resolve_remote(job: Job, *, stored_only: bool = False, force: bool = False,
                   echo: Callable[[str], None] = print) -> tuple[Job, list[str]]:
    """The job with every input from the web as a local file: an AOI's URL and a STAC Item's URL
    kept as copies (<output>/.atlas-job/aoi/, items/<aoi>/), an AOI's search done once and kept
    (search.kept_periods), so that reruns read the same AOI and scenes whatever the server answers
    later (`force`: fetch and search again). With `stored_only` nothing is fetched. -> (job, names of
    the AOIs not resolved yet)."""
    import hashlib
    from dataclasses import replace

    from ..read.stac import load_item, save_item
    from .search import kept_periods

    aois, missing = [], []
    for aoi in job.aois:
        if isinstance(aoi.file, str):
            kept_aoi = keep_aoi(aoi.file, job.output / STATE_DIR / "aoi", stored_only=stored_only, force=force)
            if kept_aoi is None:
                missing.append(aoi.name)
                continue
            aoi = replace(aoi, file=kept_aoi)
        if aoi.search is not None:
            got = kept_periods(aoi.search, aoi.file, job.output / STATE_DIR / "search" / aoi.name,
                               stored_only=stored_only, force=force, echo=echo)
            if got is None:
                missing.append(aoi.name)
            else:
                aois.append(replace(aoi, scenes=got[0], periods=got[1], remote=tuple(got[0].values())))
            continue
        kept = {}
        for d, url in ((d, s) for d, s in aoi.scenes.items() if isinstance(s, str)):
            path = job.output / STATE_DIR / "items" / aoi.name / f"{d}_{hashlib.sha256(url.encode()).hexdigest()[:12]}.json"
            if force or not path.is_file():
                if stored_only:
                    break
                save_item(load_item(url), url, path)
            kept[d] = path
        if len(kept) < sum(isinstance(s, str) for s in aoi.scenes.values()):
            missing.append(aoi.name)
            continue
        aoi = replace(aoi, scenes={**aoi.scenes, **kept}, remote=tuple(kept.values())) if kept else aoi
        aois.append(on_one_grid(job, aoi, write=not stored_only, echo=echo))
    return replace(job, aois=tuple(aois)), missing


def on_one_grid(job: Job, aoi, *, write: bool = True, echo: Callable[[str], None] = print):
    """`aoi` with its scenes as one-scene mosaics on the AOI's grid (in <output>/.atlas-job/mosaics/<aoi>/,
    classified over the AOI only) where their maps would not share a grid (tiles of two UTM zones):
    local scenes by their grids (compare.scenes_on_one_grid); STAC Items (their kept copies) by their
    tiles, read from the Items themselves as a search decides (search.tile_of), so that `status`
    stays offline; Items beside local scenes by their CRSs (the Items' proj:code or proj:epsg, the
    scenes' headers). Else, or where a scene cannot be read (its classify step says why), as it is."""
    from dataclasses import replace

    from rasterio.crs import CRS

    from ..change.compare import is_output_folder, mosaic_of_one, read_aoi, regrid_note, scenes_on_one_grid
    from ..read import open_scene
    from ..read.mosaic import is_mosaic
    from ..read.stac import load_item
    from .search import item_crs, tile_of

    if "compare" not in job.produce or len(aoi.scenes) < 2:
        return aoi
    dates, folder = list(aoi.scenes), job.output / STATE_DIR / "mosaics" / aoi.name
    try:
        geom = read_aoi(str(aoi.file), None, "EPSG:4326", CRS.from_epsg(4326))
        if aoi.remote:  # (some or all of them Items)
            items = [load_item(str(p)) for p in aoi.remote]
            local = [str(p) for p in aoi.scenes.values() if p not in aoi.remote]
            if not local:
                keys = sorted({tile_of(it) for it in items})
                what = f"its STAC Items lie on {len(keys)} tiles ({', '.join(keys)})"
            else:  # Items beside local scenes: by CRS (an Item naming none, a mosaic or a map: as they are)
                crss = {item_crs(it) for it in items} | {
                    None if is_mosaic(s) or is_output_folder(Path(s)) else open_scene(s, None).crs.to_string() for s in local}
                keys = [] if None in crss else sorted(crss)
                what = f"its scenes and STAC Items lie in {len(keys)} CRSs ({', '.join(keys)})"
            if len(keys) < 2:
                return aoi
            got = [mosaic_of_one(str(aoi.scenes[d]), d, geom, folder, write) for d in dates]
            why = f"{what}: {regrid_note(geom, folder)}"
        else:
            got, why = scenes_on_one_grid([str(aoi.scenes[d]) for d in dates], geom, folder, job.stride, write=write)
    except AtlasError:
        return aoi
    if why is None:
        return aoi
    if write:
        echo(f"{aoi.name}: {why}")
    scenes = {d: Path(g) for d, g in zip(dates, got)}
    return replace(aoi, scenes=scenes, remote=tuple(scenes.values()))


def keep_aoi(url: str, folder: Path, *, stored_only: bool = False, force: bool = False) -> Path | None:
    """The AOI at `url` as a local copy in `folder` (named by the URL's hash, with its suffix),
    fetched once and checked as compare reads it (AtlasError naming the URL, nothing kept where it
    is no AOI); None where no copy is kept yet and `stored_only`."""
    import hashlib
    import urllib.parse

    from ..outputs import atomic_write
    from ..read.stac import fetch
    from .jobfile import check_aoi

    suffix = Path(urllib.parse.urlparse(url).path).suffix.lower()
    path = folder / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}{suffix if suffix.isascii() and len(suffix) <= 9 else ''}"
    if path.is_file() and not force:
        return path
    if stored_only:
        return None
    body = fetch(url, what="the AOI")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: fh.write(body))
    try:
        check_aoi(path)
    except AtlasError as e:
        path.unlink()
        raise AtlasError(str(e).replace(str(path), url)) from None
    return path


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
    from ..mapping.pipeline import scene_stem

    for aoi in job.aois:
        bbox = None
        if aoi.remote:  # from a catalogue: read and classify only the AOI's part of those
            from ..change.compare import read_aoi_frame, wgs84_bounds

            bbox = list(wgs84_bounds(read_aoi_frame(str(aoi.file), None, "EPSG:4326", None)))
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
                                                                      "cells.parquet", "run.json")],
                              args={"scene": scene, "folder": folder, "bbox": bbox if scene in aoi.remote else None})
            scene_step[scene.resolve()] = sid
    products = []
    if "compare" in job.produce:
        for aoi in job.aois:
            for seq in aoi.pairs if aoi.scenes else ():  # (a search not run yet: no scenes)
                name = "_".join(seq)
                sid, folder = f"compare/{aoi.name}/{name}", job.output / aoi.name / name
                sides = [aoi.dates_of(x) for x in seq]
                deps = [scene_step[aoi.scenes[d].resolve()] for side in sides for d in side]
                # a sequence of three or more: its span (first against last) is what the map and GeoPackage show
                result = folder if len(seq) == 2 else folder / f"span_{sides[0][0]}_{sides[-1][0]}"
                files = [result / f for f in COMPARE_FILES]
                if len(seq) > 2:
                    files += [folder / "summary.json", folder / "sequence.tif"]
                steps[sid] = Step(sid, "compare", files, deps,
                                  {"aoi": aoi.file, "folder": folder, "result": result, "dates": tuple(seq),
                                   "sides": sides, "maps": [steps[d].args["folder"] for d in deps]})
                products.append((sid, result, f"{aoi.name}/{name}"))
    else:
        products = [(sid, steps[sid].args["folder"], sid.split("/", 1)[1]) for sid in scene_step.values()]
    for sid, folder, name in products:
        maps = steps[sid].args.get("maps", [folder])  # the classify folders whose tiles go in
        made_of = list(dict.fromkeys([*(m / f for m in maps for f in ("cells.parquet", "run.json")),
                                      *steps[sid].outputs]))
        if "gpkg" in job.produce:
            steps[f"gpkg/{name}"] = Step(f"gpkg/{name}", "gpkg", [folder / "cells.gpkg"], [sid],
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
        from ..mapping.pipeline import input_checksum

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
            from ..model.registry import load_card
            from ..read.mosaic import is_mosaic, local_scenes

            parts = local_scenes(a["scene"]) if is_mosaic(str(a["scene"])) else []
            return {"scene": str(a["scene"].resolve()), "scene_sha256": sha(a["scene"]),
                    **({"scenes_sha256": [sha(p) for p in parts]} if parts else {}),
                    "weights_sha256": load_card(job.model).weights_sha256, "stride": job.stride,
                    "chunk": job.chunk, "max_nodata": job.max_nodata, "max_cloud": job.max_cloud,
                    **({"tta": job.tta} if job.tta != DEFAULT_VIEWS else {}),
                    **({"cloud_mask": False} if not job.cloud_mask else {}),
                    **({"runtime": job.runtime} if job.runtime != DEFAULT_RUNTIME else {}),
                    **({"bbox": a["bbox"]} if a.get("bbox") else {})}
        if step.kind == "compare":
            return {"aoi_sha256": sha(a["aoi"]), "dates": [list(x) for x in a["sides"]],
                    "inputs": [sha(m / f) for m in a["maps"]
                               for f in ("lulc.tif", "confidence.tif", "cloud.tif", "run.json")],
                    "min_confidence": job.min_confidence, "stay": job.stay, "decision": "joint",
                    "allow_model_mismatch": job.allow_model_mismatch}
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
    from ..outputs import atomic_write

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1, default=str) + "\n").encode()))
    except OSError as e:
        raise AtlasError(f"{path}: cannot record the job's state ({e.strerror or e})") from None


@contextmanager
def job_lock(job: Job) -> Iterator[None]:
    """Hold <output>/.atlas-job/lock for the run; a second run of the same job is refused. The
    operating system drops the lock when the process dies, so a killed run never blocks the next."""
    with folder_lock(job.output / STATE_DIR / "lock", f"{job.path}: another run of this job is in progress",
                     f"{job.output}: cannot write the job's output folder"):
        yield


def _execute(job: Job, step: Step, client, workers: int | None, scheduler: str | None, quiet: bool) -> None:
    a = step.args
    if step.kind == "classify":
        from ..mapping.pipeline import ClassifyOptions, classify

        options = ClassifyOptions(model=job.model, stride=job.stride, chunk=job.chunk, max_nodata=job.max_nodata,
                                  max_cloud=job.max_cloud, cloud_mask=job.cloud_mask, tta=job.tta, runtime=job.runtime,
                                  allow_untrained=job.allow_untrained, bbox=tuple(a["bbox"]) if a.get("bbox") else None)
        classify(a["scene"], options, out=a["folder"], client=client, workers=workers, scheduler=scheduler,
                 quiet=quiet, model_why=job.model_why)
    elif step.kind == "compare":
        from ..change.compare import compare_periods

        bounds = np.cumsum([0, *(len(side) for side in a["sides"])])  # the maps of each side, in order
        compare_periods([a["maps"][i:j] for i, j in zip(bounds, bounds[1:])], [list(side) for side in a["sides"]],
                        aoi=str(a["aoi"]), out=a["folder"], min_confidence=job.min_confidence, stay=job.stay,
                        allow_model_mismatch=job.allow_model_mismatch)
    elif step.kind == "gpkg":
        from ..publish.export import export_gpkg

        export_gpkg(a["folder"], step.outputs[0])
    else:
        from ..publish.view import change_map

        change_map(a["folder"], step.outputs[0], side_by_side=len(step.outputs) > 1)


def run_job(job: Job, *, scheduler: str | None = None, workers: int | None = None, force: bool = False,
            quiet: bool = False, echo: Callable[[str], None] = print) -> list[Result]:
    """Run every step of `job` that is not up to date, on one Dask cluster (scheduler: None = a
    LocalCluster of `workers` processes, an address, or 'sync'); -> one Result per step."""
    from ..mapping.cluster import dask_client

    results: dict[str, Result] = {}
    with job_lock(job):
        job, _ = resolve_remote(job, force=force, echo=echo)
        steps = plan(job)
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
            from ..outputs import read_raster
            from ..change.compare import load_map

            load_map(step.args["folder"])
            for name in ("confidence.tif", "cloud.tif"):
                read_raster(step.args["folder"] / name)
        elif step.kind == "compare":
            from ..outputs import SUMMARY_KEYS, read_json, read_raster

            result = step.args.get("result", step.args["folder"])
            read_json(result / "summary.json", (*SUMMARY_KEYS, "changed_ha"))
            read_raster(result / "change.tif")
    except AtlasError as e:
        return str(e)
    return None


def job_status(job: Job) -> list[Result]:
    """Each step as `run` would find it, without running: done, stale (inputs, parameters or outputs
    changed since, or a step it needs will be redone), failed, blocked or pending."""
    hashes = Hashes(job.output / STATE_DIR / "hashes.json")
    out: dict[str, Result] = {}
    job, unsearched = resolve_remote(job, stored_only=True)
    for name in unsearched:
        out[f"fetch/{name}"] = Result(f"fetch/{name}", "pending", detail="`run` fetches its STAC Items / searches first")
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
    steps = {s.id: s for s in plan(resolve_remote(job, stored_only=True)[0])}
    lines = []
    for step in steps.values():
        if step.kind != "compare" or step.id not in ok:
            continue
        from ..outputs import read_json

        try:
            s = read_json(step.args.get("result", step.args["folder"]) / "summary.json",
                          ("changed_ha", "uncertain_ha", "cloud_ha"))
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
