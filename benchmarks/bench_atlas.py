"""Benchmark: `atlas` over a simulated catalogue, and what an atlas of the EU-27 would cost.

    python benchmarks/bench_atlas.py [--size 1024] [--strides 64,16] [--at-once 1,2] [--workers 2]

Serves a real STAC API (`rustac serve`, in memory) and the Items' band COGs (nginx, byte ranges) on
127.0.0.1: 16 synthetic L2A tiles (reduced to --size px a side, overlapping by a tenth as MGRS tiles
do), 8 on UTM zone 32 and 8 on zone 33 either side of 12 deg E, for two periods. Runs the `atlas`
command (default model, runtime and Dask cluster: one in-process worker, a thread per core) over
regions of 1, 4 and 16 tiles, each from scratch (the 16 also with --tiles-at-once 1 and on a
LocalCluster of two worker processes), and reports wall time, tile-periods per hour per core, the
peak RSS of the process tree and of its largest process (per worker where they are processes), and
how time grows with the tiles; then, from the 16-tile
run, what a full-size tile costs (scaled by pixels: the reduced tiles are classified over the same
kind of land) and an atlas of the EU-27 (its area over the area a tile adds, 100 km x 100 km, as
MGRS tiles overlap by 10 km) per period, at each stride. Appends a section to benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import geopandas as gpd  # noqa: E402
import numpy as np  # noqa: E402
import rasterio  # noqa: E402
import shapely  # noqa: E402
from rasterio.warp import transform_geom  # noqa: E402

from atlas_change.bands import L2A_ORDER  # noqa: E402
from atlas_change.synth import make_scene  # noqa: E402
from bench_classify import append_results, cpu_name, run_timed  # noqa: E402
from servers import band_cogs, nginx, stac_api  # noqa: E402

FULL_TILE_PX = 10980 * 10980
EU27_KM2 = 4_233_000  # Eurostat, EU-27 land and inland water area (2020)
TILE_ADDS_KM2 = 100 * 100  # an MGRS tile is 109.8 km a side; neighbours overlap by about 10 km
PERIODS = {"p2023": ("2023-06-01/2023-08-31", "2023-06-05"), "p2024": ("2024-06-01/2024-08-31", "2024-06-07")}
#: the tiles: zone 32 to the west of 12 deg E, zone 33 to the east, 4 columns x 2 rows each
ZONES = {32: (730750.0, 4992130.0, -1), 33: (260200.0, 4992460.0, +1)}


def catalogue(root: Path, size: int) -> tuple[list[dict], dict[str, object]]:
    """The 16 tiles x 2 periods as Earth Search-like Items (hrefs with {URL}) and each tile's footprint."""
    step = size * 10 * 0.9
    items, footprints = [], {}
    (root / "src").mkdir(parents=True, exist_ok=True)
    for zone, (x0, y0, direction) in ZONES.items():
        for col in range(4):
            for row in range(2):
                tile = f"{zone}T{'ABCD'[col]}{'QR'[row]}"
                origin = (x0 + direction * col * step, y0 - row * step)
                for k, (name, (_, day)) in enumerate(PERIODS.items()):
                    scene = root / "src" / f"{tile}_{day}.tif"
                    if not scene.exists():
                        make_scene(scene, size, size, bands=L2A_ORDER, crs=f"EPSG:326{zone}", origin=origin,
                                   seed=zone * 100 + col * 10 + row + k)
                    names = band_cogs(scene, root / "www" / day / tile, add=1000)
                    with rasterio.open(scene) as src:
                        fp = transform_geom(src.crs, "EPSG:4326", shapely.box(*src.bounds).__geo_interface__)
                    footprints[tile] = shapely.geometry.shape(fp)
                    assets = {b: {"href": f"{{URL}}/{day}/{tile}/{n}", "type": "image/tiff; profile=cloud-optimized",
                                  "roles": ["data"]} for b, n in names.items()}
                    items.append({"type": "Feature", "stac_version": "1.0.0", "id": f"S2B_{tile}_{day.replace('-', '')}_0_L2A",
                                  "collection": "sentinel-2-l2a", "geometry": fp, "bbox": list(shapely.geometry.shape(fp).bounds),
                                  "properties": {"datetime": f"{day}T10:15:59Z", "eo:cloud_cover": 5.0,
                                                 "s2:mgrs_tile": tile, "s2:processing_baseline": "05.09"},
                                  "assets": assets, "links": []})
    return items, footprints


def units_file(path: Path, region, n: int = 4) -> Path:
    """`region` cut into n x 2 units along lon / lat lines, each named U<i>."""
    minx, miny, maxx, maxy = region.bounds
    xs, ys = np.linspace(minx, maxx, n + 1), np.linspace(miny, maxy, 3)
    boxes = [shapely.intersection(region, shapely.box(xs[i], ys[j], xs[i + 1], ys[j + 1]))
             for i in range(n) for j in range(2)]
    gpd.GeoDataFrame({"UNIT": [f"U{i}" for i in range(len(boxes))]}, geometry=boxes, crs="EPSG:4326").to_file(path)
    return path


def regions(footprints: dict) -> dict[int, object]:
    """Regions that need 1, 4 and 16 tiles: the inner part of one tile, of a 2 x 2 block, of all."""
    one = footprints["32TDQ"]
    inner = one.buffer(-0.2 * (one.bounds[2] - one.bounds[0]))
    block = shapely.union_all([footprints[t] for t in ("32TBQ", "32TBR", "32TCQ", "32TCR")])
    everything = shapely.union_all(list(footprints.values()))
    return {1: inner, 4: block.buffer(-0.12 * (one.bounds[2] - one.bounds[0])),
            16: everything.buffer(-0.05 * (one.bounds[2] - one.bounds[0]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1024, help="tile side in pixels (default 1024)")
    ap.add_argument("--strides", default="64,16", help="strides to run the 16-tile region at (default 64,16)")
    ap.add_argument("--data", type=Path, default=ROOT / "benchmarks" / "data" / "atlas")
    ap.add_argument("--at-once", default="1,2",
                    help="--tiles-at-once values to run the 16-tile region at, stride 64 (default 1,2; others at 2)")
    ap.add_argument("--workers", default="2",
                    help="also run the 16-tile region at stride 64 on a LocalCluster of this many worker processes "
                    "(--workers; default 2; '' for none), for the memory of each process")
    a = ap.parse_args()
    at_once_list = [int(v) for v in a.at_once.split(",")]
    workers_list = [int(v) for v in a.workers.split(",") if v]
    data = a.data / f"{a.size}px"  # the tiles of one size, kept for the next run
    items, footprints = catalogue(data, a.size)
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp, nginx(data / "www", Path(tmp) / "nginx", workers=2, log=False) as url:
        for it in items:
            for asset in it["assets"].values():
                asset["href"] = asset["href"].replace("{URL}", url)
        with stac_api(items, Path(tmp) / "api") as api:
            for stride in (int(s) for s in a.strides.split(",")):
                for n, region in regions(footprints).items():
                    if stride != 64 and n != 16:
                        continue
                    runs = [(a, 1) for a in (at_once_list if n == 16 and stride == 64 else [2])]
                    runs += [(2, w) for w in (workers_list if n == 16 and stride == 64 else [])]
                    for at_once, workers in runs:
                        units = units_file(Path(tmp) / f"units{n}.gpkg", region)
                        out = Path(tmp) / f"atlas_{n}_{stride}_{at_once}_{workers}"
                        cmd = [sys.executable, "-m", "atlas_change", "atlas", "--region", str(units), "--unit-field",
                               "UNIT", "--stac-api", api, "--out", str(out), "--stride", str(stride), "--quiet",
                               "--tiles-at-once", str(at_once), *(["--workers", str(workers)] if workers > 1 else [])]
                        for name, (rng, _) in PERIODS.items():
                            cmd += ["--period", f"{name}={rng}"]
                        each: dict = {}
                        wall, peak = run_timed(cmd, per_process=each)
                        record = json.loads((out / "atlas.json").read_text())
                        done = sum(t["status"] == "done" for p in record["periods"].values() for t in p["tiles"].values())
                        again, _ = run_timed(cmd)
                        rows.append({"tiles": n, "stride": stride, "at_once": at_once, "workers": workers,
                                     "tile_periods": done, "wall_s": wall, "rerun_s": again, "peak_gib": peak,
                                     "largest_gib": max(each.values(), default=0.0),
                                     "per_hour_core": done / (wall / 3600) / cores})
                        print(rows[-1], flush=True)
    write(rows, a.size, cores)


def write(rows: list[dict], size: int, cores: int) -> None:
    """The Markdown section, appended to RESULTS.md."""
    base = {r["tiles"]: r for r in rows if r["stride"] == 64 and r["at_once"] == 2 and r["workers"] == 1}
    lines = [f"\n## Atlas of a region: tiles per hour and the EU-27 ({datetime.now():%Y-%m-%d %H:%M})\n",
             f"`python benchmarks/bench_atlas.py --size {size}`. Machine: {cores} cores ({cpu_name()}). A simulated "
             f"catalogue (rustac serve + nginx on 127.0.0.1) of 16 synthetic L2A tiles of {size} x {size} px, 8 on UTM "
             "zone 32 and 8 on zone 33, two periods; `atlas` with the default model and runtime, `--tiles-at-once` and Dask cluster as in the table (default: 2 tiles at once, one in-process worker with a thread per core), "
             "from scratch, then again (the rerun: nothing to do). Time includes the search, the SCL ranking over "
             "HTTP, classify, the merge onto the EEA grid, the change and the statistics.\n",
             "| tiles | stride | tiles at once | Dask workers | tile-periods | wall s | per tile-period s | tile-periods / h / core | "
             "peak RSS GiB, all processes | largest process GiB | rerun s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['tiles']} | {r['stride']} | {r['at_once']} | "
                     f"{'1 in-process' if r['workers'] == 1 else str(r['workers']) + ' processes'} | {r['tile_periods']} | {r['wall_s']:.1f} | "
                     f"{r['wall_s'] / max(r['tile_periods'], 1):.1f} | {r['per_hour_core']:.0f} | {r['peak_gib']:.2f} | {r['largest_gib']:.2f} | "
                     f"{r['rerun_s']:.1f} |")
    if 1 in base and 16 in base:
        growth = (base[16]["wall_s"] - base[1]["wall_s"]) / max(base[16]["tile_periods"] - base[1]["tile_periods"], 1)
        lines.append(f"\nGrowth: from 1 to 16 tiles each further tile-period adds {growth:.1f} s (fixed cost of a run: "
                     f"{base[1]['wall_s'] - growth * base[1]['tile_periods']:.1f} s: start, search, Dask, model).")
    n_tiles = EU27_KM2 / TILE_ADDS_KM2
    lines.append(f"\nEU-27 ({EU27_KM2:,} km², about {n_tiles:.0f} tiles' worth of area at {TILE_ADDS_KM2:,} km² a tile; "
                 "tiles partly outside add reading but the atlas classifies only the region's part), one period "
                 "(one Item per tile), from the 16-tile run's time per tile-period with the run's fixed cost "
                 f"taken out, scaled to full tiles by pixels ({FULL_TILE_PX / size ** 2:.0f}x):\n")
    lines += ["| stride | core-hours per full tile | core-hours for the EU-27, one period | on 2 cores, days |",
              "|---|---|---|---|"]
    fixed = 0.0
    if 1 in base and 16 in base:
        fixed = base[1]["wall_s"] - (base[16]["wall_s"] - base[1]["wall_s"]) / max(
            base[16]["tile_periods"] - base[1]["tile_periods"], 1) * base[1]["tile_periods"]
    for r in rows:
        if r["tiles"] != 16 or r["at_once"] != 2 or r["workers"] != 1:
            continue
        per = max(r["wall_s"] - fixed, 1e-9) / max(r["tile_periods"], 1)
        full_core_h = per * cores * FULL_TILE_PX / size ** 2 / 3600
        lines.append(f"| {r['stride']} | {full_core_h:.2f} | {full_core_h * n_tiles:,.0f} | "
                     f"{full_core_h * n_tiles / cores / 24:.1f} |")
    lines.append("\nScaling by pixels assumes a full tile costs what its pixels cost here; "
                 "benchmarks/bench_classify.py measures a real-size tile end to end, which checks the scale. "
                 "Synthetic land: speed, not labels.")
    text = "\n".join(lines) + "\n"
    append_results(text)


if __name__ == "__main__":
    main()
