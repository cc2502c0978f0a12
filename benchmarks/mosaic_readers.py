"""Two ways to mosaic the STAC Items of one date across a UTM zone boundary onto the AOI's grid,
measured on the same Items in one run: atlas-change's own (read/mosaic.py: a rasterio WarpedVRT per
Item and band, read window by window, clearest pixel first by the SCL) and odc-stac's `load`
(`pip install odc-stac`; groupby solar day, first valid pixel wins). Two synthetic L2A tiles of
`--size` px either side of 12 deg E (UTM 32N and 33N, overlapping by ~2.5 km), one COG per band
served by nginx on 127.0.0.1; the AOI straddles the boundary. Each reader runs in a fresh process
(GDAL's HTTP cache would otherwise serve the second from the first's reads): wall time, bytes
sent by nginx, and where both have data, how far their values differ.

    python benchmarks/mosaic_readers.py [--size 2048] [--work /tmp/atlas-mosaic]

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
from rasterio.windows import Window
from atlas_change.read import open_scene
t = time.perf_counter()
s = open_scene(sys.argv[1], ("B04", "B03", "B02"))
data, valid = s.read(Window(0, 0, s.width, s.height))
np.save(sys.argv[2], np.where(valid, data, 0).astype(np.uint16))
print(json.dumps({"secs": time.perf_counter() - t, "crs": s.crs.to_string(), "shape": [s.height, s.width],
                  "transform": list(s.transform)}))
"""

ODC = """
import json, sys, time, numpy as np, pystac
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.stac import load
doc = json.load(open(sys.argv[1]))
items = [pystac.Item.from_dict(d) for d in json.load(open(sys.argv[3]))]
t = time.perf_counter()
box = GeoBox((doc["height"], doc["width"]), Affine(*doc["transform"]), doc["crs"])
ds = load(items, bands=["red", "green", "blue"], geobox=box, groupby="solar_day", resampling="bilinear",
          chunks={}, nodata=0, dtype="uint16").compute()
np.save(sys.argv[2], np.stack([ds[b].values[0] for b in ("red", "green", "blue")]))
print(json.dumps({"secs": time.perf_counter() - t}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--work", default="/tmp/atlas-mosaic")
    a = ap.parse_args()
    from atlas_change.read.mosaic import write_mosaic

    work = Path(a.work)
    proc, url, log = start_nginx(work / "www", work / "nginx")
    try:
        items = make_items(a.size, work / "www", url)
        for it in items:
            (work / "www" / f"{it['id']}.json").write_text(json.dumps(it))
        (work / "items.json").write_text(json.dumps(items))
        aoi = shapely.box(*AOI)
        mosaic = write_mosaic(work / "m.mosaic.json", "2023-06-05", [f"{url}/{it['id']}.json" for it in items], aoi)
        doc = json.loads(mosaic.read_text())
        rows, arrays = [], {}
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for name, code, args in (("atlas-change (WarpedVRT per Item)", OURS, [str(mosaic)]),
                                 ("odc-stac 0.5 `load`", ODC, [str(mosaic)])):
            out = work / f"{name.split()[0]}.npy"
            start = log.stat().st_size
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", code, *args, str(out), str(work / "items.json")],
                               capture_output=True, text=True, env=env)
            if r.returncode:
                raise SystemExit(f"{name} failed: {r.stderr[-800:]}")
            wall = time.perf_counter() - t
            sent, n = bytes_since(log, start)
            info = json.loads(r.stdout.strip().splitlines()[-1])
            arrays[name] = np.load(out)
            rows.append([name, info["secs"], wall, sent, n])
    finally:
        proc.terminate()
        proc.wait(10)
    ours, theirs = arrays.values()
    both = (ours > 0).all(0) & (theirs > 0).all(0)
    equal = (ours == theirs).all(0) & both
    diff = np.abs(ours.astype(float) - theirs.astype(float))[:, both]
    cpu = cpu_name()
    text = "\n".join([
        f"\n## Mosaic across a UTM zone boundary: atlas-change's reader against odc-stac "
        f"({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, `benchmarks/mosaic_readers.py`)\n",
        f"Two synthetic {a.size} px L2A tiles (UTM 32N and 33N) as COGs over nginx on 127.0.0.1; the AOI "
        f"{AOI} onto the mosaic grid {doc['crs']}, {doc['width']} x {doc['height']} px at 10 m; bands B04, B03, "
        f"B02; each reader in a fresh process; {os.cpu_count()} cores, {cpu}.\n",
        "| reader | read (s, in process) | wall incl. start (s) | bytes sent | requests |", "|---|---|---|---|---|",
        *[f"| {n} | {s:.2f} | {w:.2f} | {b / 1e6:.2f} MB | {k} |" for n, s, w, b, k in rows],
        "",
        f"Pixels where both have data: {both.mean():.1%} of the grid; equal in all three bands: "
        f"{equal.sum() / max(both.sum(), 1):.1%}; mean |difference| {diff.mean():.2f} DN, max {diff.max():.0f} DN "
        "(both warp with GDAL, bilinear; where the tiles overlap each takes its own Item order).", ""])
    append_results(text)


if __name__ == "__main__":
    main()
