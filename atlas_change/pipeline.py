"""classify: a Sentinel-2 scene -> georeferenced EuroSAT land-cover map, with Dask.

Each Dask task reads one chunk of the scene (a window a multiple of 64 pixels wide), cuts it into
patches, and labels them with the model, loaded once per worker. The small per-patch results come
back to the client, which averages overlapping patches onto the output cells and writes the map."""
from __future__ import annotations

import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import xarray as xr
from rasterio.errors import RasterioIOError
from tqdm import tqdm

from . import __version__
from .assemble import build_dataset, tiles_frame, write_outputs
from .classes import CLASSES
from .errors import AtlasError
from .infer import get_predictor
from .read import Scene, aligned_chunk, open_scene
from .registry import DEFAULT_MODEL, ModelCard, load_card
from .tile import PatchGrid, average_to_cells, cut_patches


def classify_chunk(scene: Scene, card: ModelCard, grid: PatchGrid, rng: tuple[int, int, int, int],
                   max_nodata: float = 0.0, runtime: str = "xla", threads: int | None = None):
    """One Dask task: read the chunk's window, cut patches, predict.
    -> (rng, probs, usable, seconds spent in each stage)."""
    window = grid.window(*rng)
    t0 = time.perf_counter()
    try:
        block, valid = scene.read(window, raw=True)  # the offset is applied inside the predictor
    except RasterioIOError as e:
        raise AtlasError(f"{scene.path}: cannot read pixels at rows {window.row_off}..{window.row_off + window.height}, "
                         f"cols {window.col_off}..{window.col_off + window.width} ({str(e).splitlines()[0]})") from None
    t1 = time.perf_counter()
    patches, usable = cut_patches(block, valid, grid.stride, grid.patch, max_nodata)
    del block
    t2 = time.perf_counter()
    probs = np.zeros(usable.shape + (len(card.classes),), np.float32)
    if len(patches):
        probs[usable] = get_predictor(card, runtime, threads)(patches, scene.offset)
    return rng, probs, usable, {"read": t1 - t0, "cut": t2 - t1, "infer": time.perf_counter() - t2}


def input_checksum(path: str) -> str:
    """SHA-256 of the input file, or of every file of a SAFE folder (sorted by name)."""
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(f.relative_to(p).as_posix().encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()


def scene_stem(path: str | os.PathLike) -> str:
    """Folder name for a scene's results: 'S2A_...SAFE.zip' -> 'S2A_...', 'scene.tif' -> 'scene'."""
    return Path(path).name.split(".")[0]


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def _compute(tasks, workers: int, scheduler: str | None, quiet: bool) -> list:
    """Run the chunk tasks: in this process (scheduler='sync'), on a LocalCluster of `workers`
    single-threaded processes, or on an existing cluster (scheduler='tcp://host:8786')."""
    bar = dict(total=len(tasks), disable=quiet, unit="chunk", desc="classify", dynamic_ncols=True)
    if scheduler == "sync":
        return [fn(*args) for fn, args in tqdm(tasks, **bar)]
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        # each chunk's blocks are read once, so GDAL's block cache (default 5 % of RAM per process)
        # only costs memory: keep it small in the workers
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR, env={"GDAL_CACHEMAX": os.environ.get("GDAL_CACHEMAX", "64")})
        client = Client(cluster)
    try:
        futures = [client.submit(fn, *args, pure=False, retries=2) for fn, args in tasks]
        return [f.result() for f in tqdm(as_completed(futures), **bar)]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def classify(path: str | os.PathLike, *, model: str = DEFAULT_MODEL, bands: str | None = None,
             stride: int = 64, max_nodata: float = 0.0, out: str | os.PathLike | None = None,
             workers: int | None = None, scheduler: str | None = None, chunk: int = 1024,
             runtime: str = "xla", offset: float | None = None, allow_untrained: bool = False,
             quiet: bool = True) -> xr.Dataset:
    """Classify a Sentinel-2 scene (GeoTIFF/COG or SAFE folder/zip) into EuroSAT classes.

    Returns an xarray.Dataset with `lulc` (uint8 class ids 1..10, 0 = nodata), `confidence` and
    `probabilities` on the output grid (one cell per `stride` pixels, the scene's CRS and origin).
    With `out`, also writes lulc.tif, confidence.tif, tiles.parquet and run.json there.
    `scheduler`: None = LocalCluster of `workers` processes, 'sync' = in this process,
    or the address of a running Dask scheduler.
    """
    t0 = time.perf_counter()
    path = str(path)
    if not 0.0 <= max_nodata < 1.0:
        raise AtlasError(f"--max-nodata {max_nodata}: must be in [0, 1)")
    card = load_card(model)
    if not card.trained and not allow_untrained:
        raise AtlasError(f"{card.path}: model {card.name} is untrained (random weights, meaningless labels); "
                         "train it first or pass --allow-untrained to test the pipeline")
    scene = open_scene(path, card.bands, bands, offset)
    grid = PatchGrid(scene.width, scene.height, stride)
    if not grid.n_rows or not grid.n_cols:
        raise AtlasError(f"{path}: scene is {scene.width} x {scene.height} pixels, smaller than one 64 x 64 patch")
    workers = workers or default_workers()
    threads = max(1, (os.cpu_count() or 1) // workers) if scheduler is None else None
    chunk_px = aligned_chunk(chunk, scene.block)
    tasks = [(classify_chunk, (scene, card, grid, rng, max_nodata, runtime, threads)) for rng in grid.chunks(chunk_px)]
    with ThreadPoolExecutor(1) as pool:
        checksum = pool.submit(input_checksum, path) if out is not None else None
        t1 = time.perf_counter()
        results = _compute(tasks, workers, scheduler, quiet)
        t2 = time.perf_counter()
        probs = np.zeros((grid.n_rows, grid.n_cols, len(card.classes)), np.float32)
        usable = np.zeros((grid.n_rows, grid.n_cols), bool)
        stages = dict.fromkeys(("read", "cut", "infer"), 0.0)
        for (r0, r1, c0, c1), p, u, secs in results:
            probs[r0:r1, c0:c1], usable[r0:r1, c0:c1] = p, u
            for k, v in secs.items():
                stages[k] += v
        if not usable.any():
            raise AtlasError(f"{path}: no 64 x 64 patch without nodata; the scene is empty (all nodata"
                             + (" or clouds)" if scene.mask else ")") + " or --max-nodata is too strict")
        cell_probs, has = average_to_cells(probs, usable, grid.k)
        transform = grid.cell_transform(scene.affine)
        stamp = card.stamp()
        attrs = {"source": path, "date": scene.date or "", "product_level": scene.level or "unknown",
                 "stride": stride, "cell_size_m": abs(transform.a), **stamp,
                 "band_mapping": scene.band_mapping, "dn_offset_applied": scene.offset,
                 "atlas_change_version": __version__}
        ds = build_dataset(cell_probs, has, transform, scene.crs, attrs)
        t3 = time.perf_counter()
        if out is not None:
            lulc = ds["lulc"].values
            run = {
                "input": {"path": os.path.abspath(path), "sha256": checksum.result(), "kind": scene.kind,
                          "level": scene.level, "date": scene.date, "width": scene.width, "height": scene.height,
                          "band_mapping": scene.band_mapping, "dn_offset_applied": scene.offset,
                          "scl_mask": scene.mask is not None},
                "model": {**stamp, "path": card.path, "test_accuracy": card.metrics.get("accuracy")},
                "parameters": {"stride": stride, "patch": grid.patch, "max_nodata": max_nodata, "chunk_px": chunk_px,
                               "runtime": runtime, "workers": workers if scheduler is None else None,
                               "scheduler": scheduler or "LocalCluster"},
                "output": {"crs": scene.crs.to_string(), "transform": list(transform)[:6],
                           "shape": list(lulc.shape), "cell_area_ha": abs(transform.a * transform.e) / 1e4},
                "counts": {"patches": int(usable.size), "classified": int(usable.sum()),
                           "skipped_nodata": int(usable.size - usable.sum()), "chunks": len(tasks),
                           "cells_per_class": {c: int((lulc == i + 1).sum()) for i, c in enumerate(CLASSES)},
                           "nodata_cells": int((lulc == 0).sum())},
                "timings_s": {"open": round(t1 - t0, 3), "read_and_infer": round(t2 - t1, 3),
                              "assemble": round(t3 - t2, 3),
                              "worker_stage_seconds": {k: round(v, 1) for k, v in stages.items()}},
                "patches_per_s": round(float(usable.sum()) / max(t2 - t1, 1e-9), 1),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "atlas_change_version": __version__,
            }
            tiles = tiles_frame(probs, usable, stride, grid.patch, scene.affine, scene.crs)
            run["timings_s"]["total_before_write"] = round(time.perf_counter() - t0, 3)
            write_outputs(ds, tiles, run, out)
    return ds
