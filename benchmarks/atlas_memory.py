"""Benchmark: the memory an atlas's period maps, change and unit statistics take, per atlas cell.

    python benchmarks/atlas_memory.py [--cells 2e5,1e6]

Writes the classify outputs of synthetic tiles of a real tile's size at stride 64 (172 x 172 cells
of 640 m on UTM 32N, overlapping by 16 cells, random class probabilities, as many as cover the
region) for two periods, eight units
over the region, and then runs each step of the atlas after classify in a fresh process: each
period's map on the EEA grid (`atlas.period.write_period`), the change through the periods
(`change_through`), the statistics per unit (`write_stats`). Reports each step's peak RSS above the
process's RSS after its imports (so what the step itself holds), how it grows per atlas cell, and
its wall time.
Appends a section to benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_classify import append_results  # noqa: E402

PERIODS = {"p2023": "2023-06-01/2023-08-31", "p2024": "2024-06-01/2024-08-31"}
CELL = 640.0
CENTRE = (500_000.0, 5_000_000.0)  # UTM 32N, about 9 E 45 N
SHA = "b" * 64
TILE_CELLS, OVERLAP_CELLS = 172, 16  # a Sentinel-2 tile at stride 64 (10,980 px / 64), tiles overlap ~10 km


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def make_inputs(work: Path, cells: int) -> None:
    """The tiles' classify outputs of both periods and the units file."""
    import geopandas as gpd
    import numpy as np
    import shapely
    from affine import Affine
    from rasterio.crs import CRS

    from atlas_change.outputs import build_dataset, write_outputs

    side = math.sqrt(cells) * CELL
    x0, y0 = CENTRE[0] - side / 2, CENTRE[1] + side / 2
    step = (TILE_CELLS - OVERLAP_CELLS) * CELL  # tiles of a real tile's size at stride 64, overlapping
    count = max(1, math.ceil((side - OVERLAP_CELLS * CELL) / step))
    for k, (name, rng) in enumerate(PERIODS.items()):
        gen = np.random.default_rng(k)
        for i in range(count):
            for j in range(count):
                folder = work / name / "tiles" / f"T{i:02d}{j:02d}"
                if (folder / "run.json").exists():
                    continue
                n = TILE_CELLS
                probs = gen.dirichlet(np.full(10, 0.3), size=(n, n)).astype(np.float32)
                ds = build_dataset(probs, np.ones((n, n), bool), Affine(CELL, 0, x0 + j * step, 0, -CELL, y0 - i * step),
                                   CRS.from_epsg(32632), {"model": "m", "weights_sha256": SHA},
                                   np.zeros((n, n), bool), np.zeros((n, n), bool))
                run = {"input": {"path": f"/data/T{i}{j}_{name}.tif", "date": rng[:10]},
                       "model": {"model": "m", "weights_sha256": SHA, "cell_temperature": 1.0},
                       "parameters": {"stride": 64, "tta_views": 1}}
                write_outputs(ds, run, folder)
    units = work / "units.gpkg"
    if not units.exists():
        xs = np.linspace(x0 + 2000, x0 + side - 2000, 5)
        ys = np.linspace(y0 - side + 2000, y0 - 2000, 3)
        boxes = [shapely.box(xs[a], ys[b], xs[a + 1], ys[b + 1]) for a in range(4) for b in range(2)]
        gpd.GeoDataFrame({"UNIT": [f"U{i}" for i in range(8)]}, geometry=boxes, crs=32632).to_file(units)


def run_step(work: Path, step: str) -> dict:
    """One step, in this process: -> its peak RSS above the RSS after imports, and its time."""
    from atlas_change.atlas.grid import EEA_CRS, grid_crs, region_grid
    from atlas_change.atlas.period import change_through, write_period
    from atlas_change.atlas.run import AtlasSpec
    from atlas_change.atlas.stats import read_units, write_stats
    import atlas_change.change.compare  # noqa: F401  (imported before the baseline, as the atlas has it)

    spec = AtlasSpec(work / "units.gpkg", "UNIT", "http://unused", dict(PERIODS), work)
    units = read_units(spec.region, spec.unit_field)
    crs = grid_crs(EEA_CRS)
    grid = region_grid(tuple(units.to_crs(crs).total_bounds), crs, CELL, max_cells=10**9)
    base = rss_mib()
    t0 = time.perf_counter()
    if step in PERIODS:
        write_period(spec, step, grid, sorted((work / step / "tiles").iterdir()), [])
    elif step == "change":
        change_through(spec, grid)
    else:
        write_stats(spec, units, grid)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step": step, "cells": grid.width * grid.height, "extra_mib": peak - base, "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default="2e5,1e6",
                    help="atlas cells of the regions, two or more sizes (default 2e5,1e6): the growth per cell is the "
                    "slope between them")
    ap.add_argument("--inputs", type=Path, default=ROOT / "benchmarks" / "data" / "atlas_memory",
                    help="where the tiles' outputs are made once and kept (copied for each run)")
    ap.add_argument("--step", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.step:
        print(json.dumps(run_step(a.work, a.step)))
        return
    sizes = [int(float(v)) for v in a.cells.split(",")]
    rows = {}
    for size in sizes:
        inputs = a.inputs / str(size)
        make_inputs(inputs, size)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp) / "atlas"
            shutil.copytree(inputs, work)
            for step in (*PERIODS, "change", "stats"):
                r = subprocess.run([sys.executable, __file__, "--step", step, "--work", str(work)], capture_output=True,
                                   text=True, check=True)
                rows[size, step] = json.loads(r.stdout.strip().splitlines()[-1])
                print(rows[size, step], flush=True)
    write(rows, sizes)


def write(rows: dict, sizes: list[int]) -> None:
    """The Markdown section, appended to RESULTS.md."""
    lo, hi = sizes[0], sizes[-1]
    lines = [f"\n## Atlas memory after classify ({datetime.now():%Y-%m-%d %H:%M}, "
             f"`python benchmarks/atlas_memory.py --cells {','.join(f'{v:.0e}' for v in sizes)}`)\n",
             "Synthetic tiles' classify outputs (a real tile's size at stride 64: 172 x 172 cells of 640 m, UTM 32N, "
             "overlapping, random probabilities) merged onto the EEA grid; each step in a fresh process, its peak RSS above the RSS after its imports; the growth per "
             "cell is the slope between the smallest and the largest region.\n",
             "| step | " + " | ".join(f"MiB at {rows[v, 'stats']['cells']:,} cells" for v in sizes)
             + " | bytes per further cell | s at the largest |",
             "|---|" + "---|" * len(sizes) + "---|---|"]
    for step in (*PERIODS, "change", "stats"):
        a, b = rows[lo, step], rows[hi, step]
        slope = (b["extra_mib"] - a["extra_mib"]) * 2**20 / max(b["cells"] - a["cells"], 1)
        lines.append(f"| {step} | " + " | ".join(f"{rows[v, step]['extra_mib']:.0f}" for v in sizes)
                     + f" | {slope:.0f} | {b['seconds']:.1f} |")
    text = "\n".join(lines) + "\n"
    append_results(text)


if __name__ == "__main__":
    main()
