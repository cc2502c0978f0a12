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
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import xarray as xr
from rasterio.errors import RasterioIOError
from tqdm import tqdm

from .. import __version__
from . import surface
from ..outputs import atomic_write, build_dataset, cells_frame, hectares, write_outputs
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
        ground = surface.chunk_flags(surf, scene, window, scl)
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


def check_run_options(workers: int | None, offset: float | None, chunk: int) -> None:
    """AtlasError for options that would hang or poison a run: --workers below 1, a --offset that is
    not a finite number of DN, a --chunk below one 64 px patch."""
    if workers is not None and workers < 1:
        raise AtlasError(f"--workers {workers}: must be 1 or more (Dask worker processes)")
    if offset is not None and not math.isfinite(offset):
        raise AtlasError(f"--offset {offset}: must be a finite number of digital numbers (e.g. -1000)")
    if chunk < 64:
        raise AtlasError(f"--chunk {chunk}: must be at least 64 pixels (one patch)")


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


def classify(path: str | os.PathLike, *, model: str | os.PathLike | None = None, bands: str | None = None,
             stride: int = 64, max_nodata: float = 0.0, out: str | os.PathLike | None = None,
             workers: int | None = None, scheduler: str | None = None, client=None, chunk: int = 1024,
             runtime: str = DEFAULT_RUNTIME, offset: float | None = None, allow_untrained: bool = False,
             quiet: bool = True, model_why: str | None = None, max_cloud: float = MAX_CLOUD,
             cloud_mask: bool = True, tta: int = DEFAULT_VIEWS, surface_tests: bool = True,
             bbox: tuple[float, float, float, float] | None = None, bbox_crs: str = "EPSG:4326",
             max_pixels: int | None = None) -> xr.Dataset:
    """Classify a Sentinel-2 scene (GeoTIFF/COG, SAFE folder/zip, band folder or STAC Item) into EuroSAT classes.

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
    path = str(path)
    if not 0.0 <= max_nodata < 1.0:
        raise AtlasError(f"--max-nodata {max_nodata}: must be in [0, 1)")
    if not 0.0 <= max_cloud <= 1.0:
        raise AtlasError(f"--max-cloud {max_cloud}: must be in [0, 1]")
    if tta not in VIEWS:
        raise AtlasError(f"--tta {tta}: must be one of {', '.join(map(str, VIEWS))}")
    check_run_options(workers, offset, chunk)
    scene = open_scene(path, None, bands, offset)  # once: every stage selects its bands from it
    card, why = resolve_model(path, model, scene)
    why = model_why or why
    if not card.trained and not allow_untrained:
        raise AtlasError(f"{card.path}: model {card.name} is untrained (random weights, meaningless labels); "
                         "train it first or pass --allow-untrained to test the pipeline")
    scene = scene.select(card.bands)
    window = None
    if bbox is not None:
        scene, window = crop_to(scene, bbox, bbox_crs, path)
    clouds = plan(scene, cloud_mask)
    if clouds.method == "none" and cloud_mask:
        warnings.warn(f"{path}: clouds not masked: {clouds.why}", AtlasWarning, stacklevel=2)
    surf = surface.plan(scene) if surface_tests else surface.OFF
    if surface_tests and surface.missing(surf):
        warnings.warn(f"{path}: {surface.missing(surf)}: the labels rest on the RGB bands alone", AtlasWarning,
                      stacklevel=2)
    limit = int(os.environ.get("ATLAS_MAX_PIXELS", MAX_PIXELS)) if max_pixels is None else max_pixels
    if scene.width * scene.height > limit:
        raise AtlasError(f"{path}: {scene.width} x {scene.height} pixels to classify, more than {limit:,} "
                         "(about eight Sentinel-2 tiles); pass --max-pixels N (or set ATLAS_MAX_PIXELS) if that "
                         "is meant, or --aoi for a part")
    grid = PatchGrid(scene.width, scene.height, stride)
    if not grid.n_rows or not grid.n_cols:
        raise AtlasError(f"{path}: scene is {scene.width} x {scene.height} pixels, smaller than one 64 x 64 patch")
    workers = workers or default_workers()
    threads = max(1, (os.cpu_count() or 1) // workers) if scheduler is None else None
    chunk_px = aligned_chunk(chunk, scene.block)
    params = {"stride": stride, "patch": grid.patch, "edge_patches": "shifted back to end at the scene's edges",
              "max_nodata": max_nodata, "chunk_px": chunk_px,
              "runtime": runtime, "int8_sha256": card.int8.get("sha256") if uses_int8(card, runtime) else None,
              "tta_views": tta, "max_cloud": max_cloud, "clouds": clouds.method,
              "water": surf.water, "snow": surf.snow,
              "window": None if window is None else [int(v) for v in (window.col_off, window.row_off,
                                                                        window.width, window.height)]}
    store = None
    if out is not None:
        st = None if is_url(path) else os.stat(path)  # a STAC Item's URL: its JSON is not a file here
        store = ChunkStore(out, {"input": input_path(path), "size": st.st_size if st else 0,
                                 "mtime_ns": st.st_mtime_ns if st else 0,
                                 "weights_sha256": card.weights_sha256, "bands": list(scene.bands),
                                 "offset": scene.offset, **params})
    reused = store.load() if store else {}
    # the regular patches, then those shifted back to end at the bottom / right edge
    todo = [(g, rng) for g, rng in [*((grid, r) for r in grid.chunks(chunk_px)), *grid.edge_chunks(chunk_px)]
            if (g.y0, g.x0, *rng) not in reused]
    # chunks whose file stores no block (a sparse GeoTIFF) are nodata: no task, no read
    stored = [(g, rng) for g, rng in tqdm(todo, disable=quiet or len(todo) < 1000, unit="chunk", desc="find data",
                                          dynamic_ncols=True) if scene.holds_blocks(g.window(*rng))]
    if not stored and not reused:
        raise AtlasError(f"{path}: all nodata: the file stores no pixel block anywhere in its "
                         f"{scene.width} x {scene.height} pixels (an empty sparse GeoTIFF)")
    t_cloud = time.perf_counter()
    clouds = clouds.with_scene_flags() if stored else clouds  # s2cloudless / spectral: once, for the whole scene
    t_cloud = time.perf_counter() - t_cloud
    tasks = [(classify_chunk, (scene, card, g, rng, max_nodata, runtime, threads, clouds, max_cloud, tta, surf))
             for g, rng in stored]
    try:
        with ThreadPoolExecutor(1) as pool:
            checksum = pool.submit(input_checksum, path) if out is not None else None
            t1 = time.perf_counter()
            with dask_client(workers, scheduler) if client is None else nullcontext(client) as dask:
                results = run_tasks(tasks, dask, quiet, store.save if store else lambda r: None)
                precision = workers_precision(dask, runtime, card)
            t2 = time.perf_counter()
            # per grid (regular, then edges: key y0, x0): its patch range's probs, usable, cloudy, snowy
            spans = {(0, 0): (0, grid.n_rows, 0, grid.n_cols), **{(g.y0, g.x0): r for g, r in grid.edges()}}
            parts = {o: (np.zeros((r1 - r0, c1 - c0, len(card.classes)), np.float32),
                         *(np.zeros((r1 - r0, c1 - c0), bool) for _ in range(3)))
                     for o, (r0, r1, c0, c1) in spans.items()}
            stages = dict.fromkeys(STAGES, 0.0)
            for (y0, x0, r0, r1, c0, c1), *arrays, secs in [*reused.values(), *results]:
                R0, _, C0, _ = spans[(y0, x0)]
                for whole, a in zip(parts[(y0, x0)], arrays):
                    whole[r0 - R0:r1 - R0, c0 - C0:c1 - C0] = a
                for k, v in secs.items():
                    stages[k] += v
            usable, cloudy, snowy = (np.concatenate([p[i].ravel() for p in parts.values()])
                                     for i in (1, 2, 3))  # every patch, for the counts
            if not usable.any() and not cloudy.any() and not snowy.any():
                raise AtlasError(f"{path}: no 64 x 64 patch without nodata; the scene is empty (all nodata)"
                                 " or --max-nodata is too strict")
            cell_probs, has = cells_with_edges(grid, {o: p[:2] for o, p in parts.items()},
                                               lambda p, u: average_to_cells(p, u, grid.k))
            # the stride's own calibration of cells (a 640 m patch alone is surer than it should be on
            # mixed land; calibrate.fit_stride_temperatures); labels unchanged
            cell_t = card.cell_temperature(stride)
            cell_probs = apply_temperature(cell_probs, cell_t)
            cloud_cells, snow_cells = cells_with_edges(
                grid, {o: p[2:] for o, p in parts.items()},
                lambda c, s: (covering_patches(c, grid.k) > 0, covering_patches(s, grid.k) > 0))
            cloud_cells &= ~has  # a cell any clear patch labels is not cloud
            snow_cells &= ~has & ~cloud_cells
            transform = grid.cell_transform(scene.affine)
            stamp = card.stamp()
            attrs = {"source": path, "date": scene.date or "", "product_level": scene.level or "unknown",
                     "stride": stride, "cell_size_m": abs(transform.a), **stamp,
                     "cell_temperature": cell_t,
                     "band_mapping": scene.band_mapping, "dn_offset_applied": scene.offset,
                     "atlas_change_version": __version__, "clouds": clouds.method, "tta_views": tta}
            ds = build_dataset(cell_probs, has, transform, scene.crs, attrs, cloud_cells, snow_cells)
            t3 = time.perf_counter()
            if out is None:
                return ds
            lulc = ds["lulc"].values
            cell_ha = abs(transform.a * transform.e) / 1e4
            run = {
                "input": {"path": input_path(path), "sha256": checksum.result(), "kind": scene.kind,
                          "level": scene.level, "date": scene.date, "width": scene.width, "height": scene.height,
                          "band_mapping": scene.band_mapping, "dn_offset_applied": scene.offset,
                          "dn_offset_how": scene.offset_how, "scl_mask": scene.mask is not None},
                "clouds": clouds.record(max_cloud),
                "surface": surf.record(),
                "model": {**stamp, "cell_temperature": cell_t, "path": card.path,
                          "test_accuracy": card.metrics.get("accuracy"), "why": why},
                "parameters": {**params, "inference_precision": precision,
                               "workers": workers if scheduler is None else None,
                               "scheduler": local_scheduler(workers, scheduler)},
                "output": {"crs": scene.crs.to_string(), "transform": list(transform)[:6],
                           "shape": list(lulc.shape), "cell_area_ha": cell_ha},
                "counts": {"patches": int(usable.size), "classified": int(usable.sum()),
                           "skipped_cloud": int(cloudy.sum()), "skipped_snow": int(snowy.sum()),
                           "skipped_nodata": int(usable.size - usable.sum() - cloudy.sum() - snowy.sum()),
                           "chunks": len(tasks) + len(reused), "chunks_without_data": len(todo) - len(stored),
                           "chunks_resumed": len(reused),
                           "cells_per_class": {c: int((lulc == i + 1).sum()) for i, c in enumerate(CLASSES)},
                           "cloud_cells": int(cloud_cells.sum()), "cloud_ha": hectares(cloud_cells.sum() * cell_ha),
                           "snow_cells": int(snow_cells.sum()), "snow_ha": hectares(snow_cells.sum() * cell_ha),
                           "nodata_cells": int(((lulc == 0) & ~cloud_cells & ~snow_cells).sum())},
                "timings_s": {"open": round(t1 - t0, 3), "scene_cloud_pass": round(t_cloud, 3),
                              "read_and_infer": round(t2 - t1, 3),
                              "assemble": round(t3 - t2, 3),
                              "worker_stage_seconds": {k: round(v, 1) for k, v in stages.items()}},
                "patches_per_s": round(sum(int(r[2].sum()) for r in results) / max(t2 - t1, 1e-9), 1),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "atlas_change_version": __version__,
            }
            run["timings_s"]["total_before_write"] = round(time.perf_counter() - t0, 3)
            write_outputs(ds, cells_frame(ds), run, out)
    except AtlasError:  # a fault of the input or the output place: resuming would not help
        if store:
            store.clear()
        raise
    store.clear()
    return ds
