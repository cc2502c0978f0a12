"""Two ways to mosaic the STAC Items of one date across a UTM zone boundary onto the AOI's grid,
measured on the same Items in one run: atlas-change's own (read/mosaic.py: a rasterio WarpedVRT per
Item and band, read window by window, clearest pixel first by the SCL; also with every band
bilinear, as before 2026-12-06, and with any `--kernels`, to time its rule) and odc-stac's `load` (`pip install odc-stac`;
left out where it is not installed; groupby solar day, first valid pixel wins). Two synthetic L2A tiles of
`--size` px either side of 12 deg E (UTM 32N and 33N, overlapping by ~2.5 km), one COG per band
served by nginx on 127.0.0.1; the AOI straddles the boundary. Each reader runs in a fresh process
(GDAL's HTTP cache would otherwise serve the second from the first's reads): wall time, bytes
sent by nginx, and where both have data, how far their values differ.

    python benchmarks/mosaic_readers.py [--size 2048] [--work /tmp/atlas-mosaic] [--repeat 3]

Appends a Markdown section to benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib.util import find_spec
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
import shapely  # noqa: E402
from rasterio.warp import transform_geom  # noqa: E402

from bytes_read import bytes_since, start_nginx  # noqa: E402
from bench_classify import append_results, cpu_name  # noqa: E402
from atlas_change.synth import make_scene  # noqa: E402

BANDS = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08"}
TILES = ((32, (732420.0, 4989410.0), 21), (33, (262850.0, 4989580.0), 22))  # origins near 11.95 / 11.99 E, 45.02 N
AOI = (11.975, 44.99, 12.03, 45.01)  # lon/lat, across 12 E


def make_items(size: int, root: Path, url: str) -> list[dict]:
    items = []
    for zone, origin, seed in TILES:
        folder = root / f"z{zone}"
        folder.mkdir(parents=True, exist_ok=True)
        tif = folder / "tile.tif"
        if not tif.exists():
            make_scene(tif, size, size, bands=tuple(BANDS.values()), crs=f"EPSG:326{zone}", origin=origin, seed=seed)
        with rasterio.open(tif) as src:
            profile = {"driver": "COG", "dtype": "uint16", "count": 1, "width": size, "height": size, "crs": src.crs,
                       "transform": src.transform, "nodata": 0, "compress": "deflate", "blocksize": 512}
            for i, band in enumerate(BANDS.values(), 1):
                if not (folder / f"{band}.tif").exists():
                    with rasterio.open(folder / f"{band}.tif", "w", **profile) as dst:
                        dst.write(src.read(i), 1)
            if not (folder / "SCL.tif").exists():
                with rasterio.open(folder / "SCL.tif", "w", **{**profile, "dtype": "uint8"}) as dst:
                    dst.write(np.full((size, size), 4, np.uint8), 1)
            footprint = transform_geom(src.crs, "EPSG:4326", shapely.box(*src.bounds).__geo_interface__)
            epsg = src.crs.to_epsg()
            shape, transform = [size, size], list(src.transform)[:6]
        assets = {k: {"href": f"{url}/z{zone}/{b}.tif", "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                      "roles": ["data"], "proj:epsg": epsg, "proj:shape": shape, "proj:transform": transform}
                  for k, b in {**BANDS, "scl": "SCL"}.items()}
        items.append({"type": "Feature", "stac_version": "1.0.0", "id": f"S2B_{zone}TXX_20230605_0_L2A",
                      "collection": "sentinel-2-l2a", "geometry": footprint,
                      "bbox": list(shapely.geometry.shape(footprint).bounds),
                      "properties": {"datetime": "2023-06-05T10:15:59Z", "s2:processing_baseline": "05.09",
                                     "proj:epsg": epsg},
                      "stac_extensions": ["https://stac-extensions.github.io/projection/v1.1.0/schema.json"],
                      "assets": assets, "links": []})
    return items


OURS = """
import json, sys, time, numpy as np
from dataclasses import replace
from rasterio.windows import Window
from atlas_change.read import mosaic, open_scene
if sys.argv[4] != "rule":  # every band warped with that kernel instead of read.mosaic.regridded's
    mosaic.regridded = lambda src: replace(src, warp=True, resampling=sys.argv[4])
t, c = time.perf_counter(), time.process_time()
s = open_scene(sys.argv[1], ("B04", "B03", "B02"))
data, valid = s.read(Window(0, 0, s.width, s.height))
np.save(sys.argv[2], np.where(valid, data, 0).astype(np.uint16))
print(json.dumps({"secs": time.perf_counter() - t, "cpu": time.process_time() - c}))
"""

ODC = """
import json, sys, time, numpy as np, pystac
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.stac import load
doc = json.load(open(sys.argv[1]))
items = [pystac.Item.from_dict(d) for d in json.load(open(sys.argv[3]))]
t, c = time.perf_counter(), time.process_time()
box = GeoBox((doc["height"], doc["width"]), Affine(*doc["transform"]), doc["crs"])
ds = load(items, bands=["red", "green", "blue"], geobox=box, groupby="solar_day", resampling="bilinear",
          chunks={}, nodata=0, dtype="uint16").compute()
np.save(sys.argv[2], np.stack([ds[b].values[0] for b in ("red", "green", "blue")]))
print(json.dumps({"secs": time.perf_counter() - t, "cpu": time.process_time() - c}))
"""


def agree(a: np.ndarray, b: np.ndarray, what: str) -> str:
    """Where both of two (3, h, w) reads have data: how alike they are, as one sentence."""
    both = (a > 0).all(0) & (b > 0).all(0)
    equal = (a == b).all(0) & both
    diff = np.abs(a.astype(float) - b.astype(float))[:, both]
    return (f"{what}): both have data on {both.mean():.1%} "
            f"of the grid; equal in all three bands {equal.sum() / max(both.sum(), 1):.1%}; mean |difference| "
            f"{diff.mean():.2f} DN, max {diff.max():.0f} DN.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--work", default="/tmp/atlas-mosaic")
    ap.add_argument("--aoi", default=",".join(map(str, AOI)),
                    help="lon/lat bounds W,S,E,N inside both tiles' reach (default: %(default)s)")
    ap.add_argument("--kernels", default="bilinear",
                    help="GDAL kernels to time atlas-change's reader with too, every band that way (default: "
                         "%(default)s, its kernel before 2026-12-06)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each reader, alternating; medians are given")
    a = ap.parse_args()
    bounds = tuple(float(v) for v in a.aoi.split(","))
    from atlas_change.read.mosaic import write_mosaic

    work = Path(a.work)
    proc, url, log = start_nginx(work / "www", work / "nginx")
    try:
        items = make_items(a.size, work / "www", url)
        for it in items:
            (work / "www" / f"{it['id']}.json").write_text(json.dumps(it))
        (work / "items.json").write_text(json.dumps(items))
        aoi = shapely.box(*bounds)
        mosaic = write_mosaic(work / "m.mosaic.json", "2023-06-05", [f"{url}/{it['id']}.json" for it in items], aoi)
        doc = json.loads(mosaic.read_text())
        arrays: dict[int, np.ndarray] = {}
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        readers = [("atlas-change (WarpedVRT per Item; its rule: cubic for 10 m bands)", OURS, "rule"),
                   *[(f"atlas-change, every band {k}{' (before 2026-12-06)' if k == 'bilinear' else ''}", OURS, k)
                     for k in a.kernels.split(",")],
                   *([("odc-stac `load` (bilinear)", ODC, "bilinear")] if find_spec("odc") else [])]
        runs: dict[str, list] = {name: [] for name, _, _ in readers}
        for rep in range(a.repeat):  # readers alternate, so that a slow spell of the machine hits each alike
            for k, (name, code, kernel) in enumerate(readers):
                out = work / f"{k}.npy"
                start = log.stat().st_size
                t = time.perf_counter()
                r = subprocess.run([sys.executable, "-c", code, str(mosaic), str(out), str(work / "items.json"),
                                    kernel], capture_output=True, text=True, env=env)
                if r.returncode:
                    raise SystemExit(f"{name} failed: {r.stderr[-800:]}")
                wall = time.perf_counter() - t
                sent, n = bytes_since(log, start)
                info = json.loads(r.stdout.strip().splitlines()[-1])
                arrays[k] = np.load(out)
                runs[name].append([info["secs"], info["cpu"], wall, sent, n])
        rows = [[name, *np.median(np.array(v, float), axis=0)] for name, v in runs.items()]
    finally:
        proc.terminate()
        proc.wait(10)
    cpu = cpu_name()
    bil = next(k for k, (_, code, kernel) in enumerate(readers) if code is OURS and kernel in ("bilinear", "rule"))
    text = "\n".join([
        f"\n## Mosaic across a UTM zone boundary: atlas-change's reader against odc-stac "
        f"({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, `benchmarks/mosaic_readers.py`)\n",
        f"Two synthetic {a.size} px L2A tiles (UTM 32N and 33N) as COGs over nginx on 127.0.0.1; the AOI "
        f"{bounds} onto the mosaic grid {doc['crs']}, {doc['width']} x {doc['height']} px at 10 m; bands B04, B03, "
        f"B02; each reader in a fresh process, {a.repeat} runs each (alternating), medians; {os.cpu_count()} cores, "
        f"{cpu}.\n",
        "| reader | read (s, in process) | CPU (s, in process) | wall incl. start (s) | bytes sent | requests |",
        "|---|---|---|---|---|---|",
        *[f"| {n} | {s:.2f} | {c:.2f} | {w:.2f} | {b / 1e6:.2f} MB | {k:.0f} |" for n, s, c, w, b, k in rows],
        "", *[agree(arrays[0], arrays[k], f"atlas-change's rule against {name[len('atlas-change, '):]} (one reader")
              for k, (name, code, _) in enumerate(readers) if k and code is OURS],
        *([agree(arrays[bil], arrays[len(readers) - 1], "atlas-change bilinear against odc-stac (both GDAL, "
                 "bilinear; where the tiles overlap each takes its own Item order")] if readers[-1][1] is ODC else []),
        *([] if find_spec("odc") else ["odc-stac is not installed here: its row is left out."]), ""])
    append_results(text)


if __name__ == "__main__":
    main()
