"""classify: a Sentinel-2 scene -> georeferenced EuroSAT land-cover map, with Dask.

Each Dask task reads one chunk of the scene (a window a multiple of 64 pixels wide), cuts it into
patches, and labels them with the model, loaded once per worker. The small per-patch results come
back to the client, which averages overlapping patches onto the output cells and writes the map."""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import xarray as xr
from rasterio.errors import RasterioIOError
from tqdm import tqdm

from .. import __version__
from . import surface
from ..outputs import atomic_write, build_dataset, hectares, write_outputs
from ..classes import CLASSES
from .cloud import MAX_CLOUD, CloudMasker, chunk_cloud, patch_cloud_fraction, plan
from .cluster import dask_client, default_workers, local_scheduler, run_tasks, workers_precision
from ..errors import AtlasError, AtlasWarning
from ..model.infer import DEFAULT_RUNTIME, DEFAULT_VIEWS, VIEWS, apply_temperature, get_predictor, uses_int8
from ..names import safe_name
from ..read import Scene, aligned_chunk, crop_to, input_path, is_url, open_scene
from ..model.registry import ModelCard, choose_model, load_card
from .surface import SurfacePlan
from ..tile import PatchGrid, average_to_cells, cells_with_edges, covering_patches, cut_patches, usable_patches


STAGES = ("read", "cloud", "cut", "infer")
NO_CLOUDS = CloudMasker("none", "not asked")


def classify_chunk(scene: Scene, card: ModelCard, grid: PatchGrid, rng: tuple[int, int, int, int],
                   max_nodata: float = 0.0, runtime: str = DEFAULT_RUNTIME, threads: int | None = None,
                   clouds: CloudMasker = NO_CLOUDS, max_cloud: float = MAX_CLOUD, views: int = 1,
                   surf: SurfacePlan = surface.OFF):
    """One Dask task: read the chunk's window, find its clouds, water and snow, cut the patches that
    hold data and at most `max_cloud` cloud or shadow (then at most that much snow), predict those
    (no model work for the others), and give River / SeaLake only where the patch holds water.
    -> ((grid.y0, grid.x0, *rng), probs, usable, cloudy, snowy, seconds spent in each stage)."""
    window = grid.window(*rng)
    t0 = time.perf_counter()
    try:
        block, valid = scene.read(window, raw=True, scl=False)  # the offset is applied inside the predictor
        t1 = time.perf_counter()
        scl = scene.read_scl(window) if "scl" in (clouds.method, surf.snow) else None  # once, for both
        flags = chunk_cloud(clouds, scene, window, valid, scl)
        ground = surface.chunk_flags(surf, scene, window, block, scl)
    except RasterioIOError as e:
        raise AtlasError(f"{scene.path}: cannot read pixels at rows {window.row_off}..{window.row_off + window.height}, "
                         f"cols {window.col_off}..{window.col_off + window.width} ({str(e).splitlines()[0]})") from None
    usable = usable_patches(valid, grid.stride, grid.patch, max_nodata)
    cloudy = np.zeros_like(usable)
    if flags is not None:
        cloudy = usable & (patch_cloud_fraction(*flags, grid.stride, grid.patch, usable.shape) > max_cloud)
        usable &= ~cloudy
    snowy = np.zeros_like(usable)
    water_share = None
    if ground is not None:
        snowy = usable & (patch_cloud_fraction(ground[1], 1, grid.stride, grid.patch, usable.shape) > max_cloud)
        usable &= ~snowy
        if surf.water != "off":
            water_share = patch_cloud_fraction(ground[0] & valid, 1, grid.stride, grid.patch, usable.shape)
    t2 = time.perf_counter()
    patches, usable = cut_patches(block, valid, grid.stride, grid.patch, usable=usable)
    del block
    t3 = time.perf_counter()
    probs = np.zeros(usable.shape + (len(card.classes),), np.float32)
    if len(patches):
        p = get_predictor(card, runtime, threads)(patches, scene.offset, views=views)
        probs[usable] = p if water_share is None else surface.water_rule(p, water_share[usable])
    return ((grid.y0, grid.x0, *rng), probs, usable, cloudy, snowy,
            dict(zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3))))


def input_checksum(path: str) -> str:
    """SHA-256 of the input file, of every file of a SAFE folder (sorted by name), or of a STAC Item."""
    h = hashlib.sha256()
    if is_url(path):  # a STAC Item's URL: its JSON (the assets it names are COGs that do not change)
        from ..read.stac import fetch

        return hashlib.sha256(fetch(path)).hexdigest()
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(f.relative_to(p).as_posix().encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()


#: pixels `classify` takes without --max-pixels: about eight 10,980 px tiles (a declared size beyond it is
#: most often a broken or hostile header, and the map's arrays grow with it)
MAX_PIXELS = 1_000_000_000


@dataclass(frozen=True)
class ClassifyOptions:
    """What a classify run makes of a scene (not where it runs or writes): the model (None: the
    default for the input's bands), the input's band names and DN offset where the file does not say,
    the patch stride, the patches' allowed nodata and cloud, the cloud and surface tests, test-time
    views, the runtime, Dask's chunk side, the pixel cap (None: MAX_PIXELS or $ATLAS_MAX_PIXELS), an
    AOI's bounds. Checked once, when made: AtlasError naming the option."""

    model: str | os.PathLike | None = None
    bands: str | None = None
    stride: int = 64
    max_nodata: float = 0.0
    max_cloud: float = MAX_CLOUD
    cloud_mask: bool = True
    surface_tests: bool = True
    tta: int = DEFAULT_VIEWS
    runtime: str = DEFAULT_RUNTIME
    chunk: int = 1024
    offset: float | None = None
    allow_untrained: bool = False
    max_pixels: int | None = None
    bbox: tuple[float, float, float, float] | None = None
    bbox_crs: str = "EPSG:4326"

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_nodata < 1.0:
            raise AtlasError(f"--max-nodata {self.max_nodata}: must be in [0, 1)")
        if not 0.0 <= self.max_cloud <= 1.0:
            raise AtlasError(f"--max-cloud {self.max_cloud}: must be in [0, 1]")
        if self.tta not in VIEWS:
            raise AtlasError(f"--tta {self.tta}: must be one of {', '.join(map(str, VIEWS))}")
        if self.offset is not None and not math.isfinite(self.offset):
            raise AtlasError(f"--offset {self.offset}: must be a finite number of digital numbers (e.g. -1000)")
        if self.chunk < 64:
            raise AtlasError(f"--chunk {self.chunk}: must be at least 64 pixels (one patch)")

    @property
    def pixel_cap(self) -> int:
        return int(os.environ.get("ATLAS_MAX_PIXELS", MAX_PIXELS)) if self.max_pixels is None else self.max_pixels


def check_workers(workers: int | None) -> None:
    """AtlasError for --workers below 1 (a run that would hang)."""
    if workers is not None and workers < 1:
        raise AtlasError(f"--workers {workers}: must be 1 or more (Dask worker processes)")


def scene_stem(path: str | os.PathLike) -> str:
    """Folder name for a scene's results: 'S2A_...SAFE.zip' -> 'S2A_...', 'scene.tif' -> 'scene';
    a name that is not a plain file name (a URL's '..', spaces, ...) made safe (names.safe_name)."""
    return safe_name(Path(str(path).rstrip("/")).name.split(".")[0], fallback="scene")


class ChunkStore:
    """Finished chunks of one classify run, kept beside its output folder (.<name>.chunks/) so that a
    killed run resumes where it stopped. `key` names the input file (path, size, mtime), the
    model hash and the parameters; chunks saved under another key are discarded."""

    def __init__(self, out: str | os.PathLike, key: dict):
        out = Path(out)
        self.dir, self.key = out.parent / f".{out.name}.chunks", key

    def load(self) -> dict[tuple, tuple]:
        try:
            if json.loads((self.dir / "key.json").read_text()) == self.key:
                found = {}
                for f in self.dir.glob("*.npz"):
                    with np.load(f) as z:
                        rng = tuple(int(v) for v in z["rng"])
                        found[rng] = (rng, z["probs"], z["usable"], z["cloudy"], z["snowy"],
                                      dict(zip(STAGES, z["secs"].tolist())))
                return found
        except (OSError, ValueError, KeyError):  # absent, or left unreadable by a crash: start over
            pass
        self.clear()
        return {}

    def save(self, result: tuple) -> None:
        rng, probs, usable, cloudy, snowy, secs = result
        try:
            if not (self.dir / "key.json").exists():
                self.dir.mkdir(parents=True, exist_ok=True)
                atomic_write(self.dir / "key.json", lambda f: f.write(json.dumps(self.key).encode()))
            name = self.dir / ("_".join(map(str, rng)) + ".npz")
            atomic_write(name, lambda f: np.savez(f, rng=np.asarray(rng), probs=probs, usable=usable, cloudy=cloudy,
                                                   snowy=snowy, secs=np.asarray([secs[k] for k in STAGES])))
        except OSError as e:
            raise AtlasError(f"{self.dir}: cannot keep a finished chunk ({e.strerror or e})") from None

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def resolve_model(path: str, model: str | os.PathLike | None, scene: Scene) -> tuple[ModelCard, str]:
    """(card, why): the named model, or the default chosen from the bands the input holds (`scene`,
    the input as opened: so it was checked first, exists, readable, projected CRS, band names)."""
    if model is None:
        return choose_model(scene.available, path)
    return load_card(model), "named by the user"


@dataclass(frozen=True)
class RunPlan:
    """A classify run once its input and options are checked: the scene (its bands selected, cropped
    to the AOI), the model and why it was chosen, the AOI's window, the cloud and surface tests,
    the patch grid, Dask's chunk side and the parameters every output records."""

    path: str
    scene: Scene
    card: ModelCard
    why: str
    window: object
    clouds: CloudMasker
    surf: SurfacePlan
    grid: PatchGrid
    chunk_px: int
    params: dict


def plan_run(path: str, o: ClassifyOptions, model_why: str | None) -> RunPlan:
    """Open and check the input, choose the model, crop to the AOI, plan clouds, water and snow and
    the patch grid; AtlasError (one line naming the input) for what would fail later."""
    scene = open_scene(path, None, o.bands, o.offset)  # once: every stage selects its bands from it
    card, why = resolve_model(path, o.model, scene)
    if not card.trained and not o.allow_untrained:
        raise AtlasError(f"{card.path}: model {card.name} is untrained (random weights, meaningless labels); "
                         "train it first or pass --allow-untrained to test the pipeline")
    scene = scene.select(card.bands)
    window = None
    if o.bbox is not None:
        scene, window = crop_to(scene, o.bbox, o.bbox_crs, path)
    stored = scene.stored_window()  # a sparse GeoTIFF: only where it stores blocks (memory, chunks, the cap)
    if stored is None:
        raise AtlasError(f"{path}: all nodata: the file stores no pixel block anywhere in its "
                         f"{scene.width} x {scene.height} pixels (an empty sparse GeoTIFF)")
    if (stored.width, stored.height) == (scene.width, scene.height):
        stored = None
    else:
        scene = scene.cropped(stored)
    clouds = plan(scene, o.cloud_mask)
    if clouds.method == "none" and o.cloud_mask:
        warnings.warn(f"{path}: clouds not masked: {clouds.why}", AtlasWarning, stacklevel=3)
    surf = surface.plan(scene) if o.surface_tests else surface.OFF
    if o.surface_tests and surface.missing(surf):
        warnings.warn(f"{path}: {surface.missing(surf)}: the labels rest on the RGB bands alone", AtlasWarning,
                      stacklevel=3)
    if scene.width * scene.height > o.pixel_cap:
        raise AtlasError(f"{path}: {scene.width} x {scene.height} pixels to classify, more than {o.pixel_cap:,} "
                         "(about eight Sentinel-2 tiles); pass --max-pixels N (or set ATLAS_MAX_PIXELS) if that "
                         "is meant, or --aoi for a part")
    grid = PatchGrid(scene.width, scene.height, o.stride)
    if not grid.n_rows or not grid.n_cols:
        raise AtlasError(f"{path}: scene is {scene.width} x {scene.height} pixels, smaller than one 64 x 64 patch")
    chunk_px = aligned_chunk(o.chunk, scene.block)
    params = {"stride": o.stride, "patch": grid.patch, "edge_patches": "shifted back to end at the scene's edges",
              "max_nodata": o.max_nodata, "chunk_px": chunk_px,
              "runtime": o.runtime, "int8_sha256": card.int8.get("sha256") if uses_int8(card, o.runtime) else None,
              "tta_views": o.tta, "max_cloud": o.max_cloud, "clouds": clouds.method,
              "water": surf.water, "snow": surf.snow,
              "window": None if window is None else [int(v) for v in (window.col_off, window.row_off,
                                                                        window.width, window.height)],
              "stored_window": None if stored is None else [int(v) for v in (stored.col_off, stored.row_off,
                                                                             stored.width, stored.height)]}
    return RunPlan(path, scene, card, model_why or why, window, clouds, surf, grid, chunk_px, params)


def chunk_store(p: RunPlan, out) -> ChunkStore | None:
    """Where the run keeps its finished chunks (None without `out`), keyed by the input file, the
    model's weights and every parameter."""
    if out is None:
        return None
    st = None if is_url(p.path) else os.stat(p.path)  # a STAC Item's URL: its JSON is not a file here
    return ChunkStore(out, {"input": input_path(p.path), "size": st.st_size if st else 0,
                            "mtime_ns": st.st_mtime_ns if st else 0, "weights_sha256": p.card.weights_sha256,
                            "bands": list(p.scene.bands), "offset": p.scene.offset, **p.params})


def gather(p: RunPlan, chunks: list) -> tuple[dict, dict]:
    """The chunks' results (resumed and new) placed per grid (regular, then the edges' shifted ones,
    keyed by their origin): (origin -> (probs, usable, cloudy, snowy) arrays, seconds per stage)."""
    grid = p.grid
    spans = {(0, 0): (0, grid.n_rows, 0, grid.n_cols), **{(g.y0, g.x0): r for g, r in grid.edges()}}
    parts = {o: (np.zeros((r1 - r0, c1 - c0, len(p.card.classes)), np.float32),
                 *(np.zeros((r1 - r0, c1 - c0), bool) for _ in range(3)))
             for o, (r0, r1, c0, c1) in spans.items()}
    stages = dict.fromkeys(STAGES, 0.0)
    for (y0, x0, r0, r1, c0, c1), *arrays, secs in chunks:
        R0, _, C0, _ = spans[(y0, x0)]
        for whole, a in zip(parts[(y0, x0)], arrays):
            whole[r0 - R0:r1 - R0, c0 - C0:c1 - C0] = a
        for k, v in secs.items():
            stages[k] += v
    return parts, stages


def map_cells(p: RunPlan, parts: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Patches to map cells: (probabilities calibrated at the stride, labelled, cloud, snow, the
    cells' temperature)."""
    grid = p.grid
    cell_probs, has = cells_with_edges(grid, {o: q[:2] for o, q in parts.items()},
                                       lambda q, u: average_to_cells(q, u, grid.k))
    # the stride's own calibration of cells (a 640 m patch alone is surer than it should be on
    # mixed land; calibrate.fit_stride_temperatures); labels unchanged
    cell_t = p.card.cell_temperature(grid.stride)
    cell_probs = apply_temperature(cell_probs, cell_t)
    cloud_cells, snow_cells = cells_with_edges(
        grid, {o: q[2:] for o, q in parts.items()},
        lambda c, s: (covering_patches(c, grid.k) > 0, covering_patches(s, grid.k) > 0))
    cloud_cells &= ~has  # a cell any clear patch labels is not cloud
    snow_cells &= ~has & ~cloud_cells
    return cell_probs, has, cloud_cells, snow_cells, cell_t


def map_attrs(p: RunPlan, o: ClassifyOptions, transform, cell_t: float) -> dict:
    """What the map's Dataset and every raster carry: the source, the model's stamp, the settings."""
    scene = p.scene
    return {"source": p.path, "date": scene.date or "", "product_level": scene.level or "unknown",
            "stride": o.stride, "cell_size_m": abs(transform.a), **p.card.stamp(), "cell_temperature": cell_t,
            "band_mapping": scene.band_mapping, "dn_offset_applied": scene.offset,
            "atlas_change_version": __version__, "clouds": p.clouds.method, "tta_views": o.tta}


def run_record(p: RunPlan, o: ClassifyOptions, ds: xr.Dataset, flags: tuple, counts: dict, timing: dict,
               extra: dict) -> dict:
    """run.json: the input, clouds, surface tests, model, parameters, output grid, counts, timings.
    `flags`: every patch's (usable, cloudy, snowy); `counts`: chunk counts; `extra`: sha256,
    inference_precision, workers, scheduler, patches_per_s."""
    scene, lulc = p.scene, ds["lulc"].values
    transform = ds.rio.transform()
    cell_ha = abs(transform.a * transform.e) / 1e4
    usable, cloudy, snowy = flags
    cloud_cells, snow_cells = ds["cloud"].values.astype(bool), ds["snow"].values.astype(bool)
    return {
        "input": {"path": input_path(p.path), "sha256": extra["sha256"], "kind": scene.kind,
                  "level": scene.level, "date": scene.date, "width": scene.width, "height": scene.height,
                  "band_mapping": scene.band_mapping, "dn_offset_applied": scene.offset,
                  "dn_offset_how": scene.offset_how, "scl_mask": scene.mask is not None},
        "clouds": p.clouds.record(o.max_cloud),
        "surface": p.surf.record(),
        "model": {**p.card.stamp(), "cell_temperature": ds.attrs["cell_temperature"], "path": p.card.path,
                  "test_accuracy": p.card.metrics.get("accuracy"), "why": p.why},
        "parameters": {**p.params, "inference_precision": extra["precision"], "workers": extra["workers"],
                       "scheduler": extra["scheduler"]},
        "output": {"crs": scene.crs.to_string(), "transform": list(transform)[:6],
                   "shape": list(lulc.shape), "cell_area_ha": cell_ha},
        "counts": {"patches": int(usable.size), "classified": int(usable.sum()),
                   "skipped_cloud": int(cloudy.sum()), "skipped_snow": int(snowy.sum()),
                   "skipped_nodata": int(usable.size - usable.sum() - cloudy.sum() - snowy.sum()),
                   **counts,
                   "cells_per_class": {c: int((lulc == i + 1).sum()) for i, c in enumerate(CLASSES)},
                   "cloud_cells": int(cloud_cells.sum()), "cloud_ha": hectares(cloud_cells.sum() * cell_ha),
                   "snow_cells": int(snow_cells.sum()), "snow_ha": hectares(snow_cells.sum() * cell_ha),
                   "nodata_cells": int(((lulc == 0) & ~cloud_cells & ~snow_cells).sum())},
        "timings_s": timing,
        "patches_per_s": extra["patches_per_s"],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "atlas_change_version": __version__,
    }


def classify(path: str | os.PathLike, options: ClassifyOptions | None = None, *,
             out: str | os.PathLike | None = None, workers: int | None = None, scheduler: str | None = None,
             client=None, quiet: bool = True, model_why: str | None = None, **option_kw) -> xr.Dataset:
    """Classify a Sentinel-2 scene (GeoTIFF/COG, SAFE folder/zip, band folder or STAC Item) into EuroSAT classes.

    `options` (ClassifyOptions), or its fields as keywords (they replace those of `options`):
    `model`: a model name or folder; None picks the default, the first shipped trained model of
    registry.DEFAULT_MODELS whose bands the input holds (run.json says which and why; `model_why`
    overrides that reason where the caller chose the model, e.g. a job's default).
    Returns an xarray.Dataset with `lulc` (uint8 class ids 1..10, 0 = nodata), `confidence` and
    `probabilities` on the output grid (one cell per `stride` pixels, the scene's CRS and origin).
    With `out`, also writes lulc.tif, confidence.tif, cloud.tif, cells.parquet and run.json there, keeping
    finished chunks in .<out>.chunks/ until then so that a killed run resumes from them.
    `scheduler`: None = LocalCluster of `workers` processes, 'threads' = an in-process worker with a
    thread per core (the Python API's default: safe in a plain script), 'sync' = in this process, or the
    address of a running Dask scheduler; or pass a distributed `client` to reuse (then `scheduler`
    only says how it was made: None for a LocalCluster of `workers`, an address, for the record).
    `tta`: test-time augmentation, the class probabilities averaged over that many views of each patch
    (1, 2, 4 or 8: identity, quarter turns, then transposed; default 2, benchmarks/RESULTS.md).
    Clouds and their shadows (cloud.py: the L2A SCL, else s2cloudless where the input has its ten
    bands, else Fmask's spectral tests where it has theirs, else not masked, with an AtlasWarning) leave a patch unlabelled when more than
    `max_cloud` of its pixels are cloud or shadow: nodata in every output, 1 in `cloud`.
    `surface_tests`: water and snow from the NIR / SWIR bands (surface.py): River / SeaLake only where
    a patch holds water, snow left unlabelled like cloud (1 in `snow`); False: the RGB model alone.
    `bbox`: (minx, miny, maxx, maxy) in `bbox_crs`: classify only the 64 px blocks of the scene that
    cover it (a remote COG is then read only there); the map keeps the scene's grid. `max_pixels`:
    the largest scene (or AOI window) taken (default MAX_PIXELS, or $ATLAS_MAX_PIXELS).
    """
    t0 = time.perf_counter()
    o = ClassifyOptions(**option_kw) if options is None else replace(options, **option_kw)
    check_workers(workers)
    p = plan_run(str(path), o, model_why)
    store = chunk_store(p, out)
    reused = store.load() if store else {}
    grid = p.grid
    # the regular patches, then those shifted back to end at the bottom / right edge
    todo = [(g, rng) for g, rng in [*((grid, r) for r in grid.chunks(p.chunk_px)), *grid.edge_chunks(p.chunk_px)]
            if (g.y0, g.x0, *rng) not in reused]
    # chunks whose file stores no block (a sparse GeoTIFF) are nodata: no task, no read
    stored = [(g, rng) for g, rng in tqdm(todo, disable=quiet or len(todo) < 1000, unit="chunk", desc="find data",
                                          dynamic_ncols=True) if p.scene.holds_blocks(g.window(*rng))]
    if not stored and not reused:
        raise AtlasError(f"{p.path}: all nodata: the file stores no pixel block anywhere in its "
                         f"{p.scene.width} x {p.scene.height} pixels (an empty sparse GeoTIFF)")
    t_cloud = time.perf_counter()
    clouds = p.clouds.with_scene_flags() if stored else p.clouds  # s2cloudless / spectral: once, for the whole scene
    t_cloud = time.perf_counter() - t_cloud
    workers = workers or default_workers()
    threads = max(1, (os.cpu_count() or 1) // workers) if scheduler is None else None
    tasks = [(classify_chunk, (p.scene, p.card, g, rng, o.max_nodata, o.runtime, threads, clouds, o.max_cloud, o.tta,
                               p.surf)) for g, rng in stored]
    try:
        with ThreadPoolExecutor(1) as pool:
            checksum = pool.submit(input_checksum, p.path) if out is not None else None
            t1 = time.perf_counter()
            with dask_client(workers, scheduler) if client is None else nullcontext(client) as dask:
                results = run_tasks(tasks, dask, quiet, store.save if store else lambda r: None)
                precision = workers_precision(dask, o.runtime, p.card)
            t2 = time.perf_counter()
            parts, stages = gather(p, [*reused.values(), *results])
            flags = tuple(np.concatenate([q[i].ravel() for q in parts.values()]) for i in (1, 2, 3))  # every patch
            if not any(f.any() for f in flags):
                raise AtlasError(f"{p.path}: no 64 x 64 patch without nodata; the scene is empty (all nodata)"
                                 " or --max-nodata is too strict")
            cell_probs, has, cloud_cells, snow_cells, cell_t = map_cells(p, parts)
            transform = grid.cell_transform(p.scene.affine)
            ds = build_dataset(cell_probs, has, transform, p.scene.crs, map_attrs(p, o, transform, cell_t),
                               cloud_cells, snow_cells)
            t3 = time.perf_counter()
            if out is None:
                return ds
            timing = {"open": round(t1 - t0, 3), "scene_cloud_pass": round(t_cloud, 3),
                      "read_and_infer": round(t2 - t1, 3), "assemble": round(t3 - t2, 3),
                      "worker_stage_seconds": {k: round(v, 1) for k, v in stages.items()}}
            extra = {"sha256": checksum.result(), "precision": precision,
                     "workers": workers if scheduler is None else None,
                     "scheduler": local_scheduler(workers, scheduler),
                     "patches_per_s": round(sum(int(r[2].sum()) for r in results) / max(t2 - t1, 1e-9), 1)}
            counts = {"chunks": len(tasks) + len(reused), "chunks_without_data": len(todo) - len(stored),
                      "chunks_resumed": len(reused)}
            run = run_record(p, o, ds, flags, counts, timing, extra)
            run["timings_s"]["total_before_write"] = round(time.perf_counter() - t0, 3)
            write_outputs(ds, run, out)
    except AtlasError:  # a fault of the input or the output place: resuming would not help
        if store:
            store.clear()
        raise
    if store:
        store.clear()
    return ds
