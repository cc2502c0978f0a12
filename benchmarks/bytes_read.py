"""Bytes a remote STAC Item costs: a full Sentinel-2 tile (10,980 px at 10 m) as one COG per band
(Earth Search layout: 10 m blue, green, red, nir; 20 m swir16, swir22 and scl), served over HTTP
by nginx on 127.0.0.1 (Debian's, as in the tests), classified through `classify --aoi` for AOIs of
2, 10 and 50 km^2 and the whole tile read nowhere; bytes counted from nginx's access log
($bytes_sent of every request, headers included), against the size of the files. Also the bytes
`compare --stac-api`'s ranking costs (the SCL over the AOI only).

    python benchmarks/bytes_read.py [--size 10980] [--work /tmp/atlas-bytes]

Appends a Markdown section to benchmarks/RESULTS.md. The tile is synthetic (synth.make_scene's land
blobs, deflate COGs): a real tile's COGs are of the same layout (512 px blocks, overviews), so the
share of blocks read is what carries over; their compressed size differs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
import shapely  # noqa: E402
from rasterio.enums import Resampling  # noqa: E402
from rasterio.warp import transform_geom  # noqa: E402

from atlas_change.synth import make_scene  # noqa: E402

ORIGIN = (600000.0, 5000040.0)
BANDS = {"blue": ("B02", 10), "green": ("B03", 10), "red": ("B04", 10), "nir": ("B08", 10),
         "swir16": ("B11", 20), "swir22": ("B12", 20)}


def make_cogs(size: int, folder: Path) -> dict[str, int]:
    """One deflate COG per band (and an all-clear SCL at 20 m) of a synthetic tile -> name -> bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    src_tif = folder / "tile.tif"
    if not src_tif.exists():
        make_scene(src_tif, size, size, bands=tuple(b for b, _ in BANDS.values()), origin=ORIGIN, seed=3, block=1024)
    with rasterio.open(src_tif) as src:
        for i, (key, (band, res)) in enumerate(BANDS.items(), 1):
            out = folder / f"{band}.tif"
            if out.exists():
                continue
            n = size * 10 // res
            data = src.read(i, out_shape=(n, n), resampling=Resampling.average)
            profile = {"driver": "COG", "dtype": "uint16", "count": 1, "width": n, "height": n, "crs": src.crs,
                       "transform": src.transform * src.transform.scale(size / n), "nodata": 0,
                       "compress": "deflate", "blocksize": 512}
            with rasterio.open(out, "w", **profile) as dst:
                dst.write(data, 1)
        scl = folder / "SCL.tif"
        if not scl.exists():
            n = size // 2
            profile = {"driver": "COG", "dtype": "uint8", "count": 1, "width": n, "height": n, "crs": src.crs,
                       "transform": src.transform * src.transform.scale(2), "nodata": 0, "compress": "deflate",
                       "blocksize": 512}
            with rasterio.open(scl, "w", **profile) as dst:
                dst.write(np.full((n, n), 4, np.uint8), 1)
        footprint = transform_geom(src.crs, "EPSG:4326", shapely.box(*src.bounds).__geo_interface__)
    src_tif.unlink()
    (folder / "footprint.json").write_text(json.dumps(footprint))
    return {p.name: p.stat().st_size for p in folder.glob("*.tif")}


def start_nginx(root: Path, prefix: Path) -> tuple[subprocess.Popen, str, Path]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prefix.mkdir(parents=True, exist_ok=True)
    log = prefix / "access.log"
    (prefix / "nginx.conf").write_text(f"""user root; daemon off; worker_processes 1; pid {prefix}/nginx.pid;
error_log {prefix}/error.log; events {{ worker_connections 64; }}
http {{ log_format bytes '$request_uri $status $bytes_sent'; access_log {log} bytes;
  client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy; fastcgi_temp_path {prefix}/fcgi;
  uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi; default_type application/octet-stream;
  server {{ listen 127.0.0.1:{port}; root {root}; location / {{ }} }} }}
""")
    proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}", log


def bytes_since(log: Path, start: int) -> tuple[int, int]:
    """(bytes sent, requests) in the access log after byte `start` of it."""
    with open(log) as f:
        f.seek(start)
        lines = [ln.split() for ln in f if ln.strip()]
    return sum(int(p[2]) for p in lines if len(p) == 3), len(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=10980)
    ap.add_argument("--work", default="/tmp/atlas-bytes")
    ap.add_argument("--model", default="spectrumnet-rgb")
    a = ap.parse_args()
    work = Path(a.work)
    t0 = time.perf_counter()
    sizes = make_cogs(a.size, work / "www" / "tile")
    made = time.perf_counter() - t0
    proc, url, log = start_nginx(work / "www", work / "nginx")
    try:
        footprint = json.loads((work / "www" / "tile" / "footprint.json").read_text())
        item = {"type": "Feature", "stac_version": "1.0.0", "id": "SYNTH_32TQM_20230612_0_L2A",
                "collection": "sentinel-2-l2a", "geometry": footprint, "bbox": list(shapely.geometry.shape(footprint).bounds),
                "properties": {"datetime": "2023-06-12T10:15:59Z", "s2:processing_baseline": "05.09"},
                "assets": {**{k: {"href": f"{url}/tile/{b}.tif", "type": "image/tiff; application=geotiff; "
                                  "profile=cloud-optimized"} for k, (b, _) in BANDS.items()},
                           "scl": {"href": f"{url}/tile/SCL.tif", "type": "image/tiff; application=geotiff"}},
                "links": []}
        (work / "www" / "tile" / "item.json").write_text(json.dumps(item))
        total = sum(sizes.values())
        rows = []
        c = a.size * 10 / 2 + ORIGIN[0], ORIGIN[1] - a.size * 10 / 2  # the tile's centre
        for km2 in (2, 10, 50):
            half = (km2 * 1e6) ** 0.5 / 2
            bbox = (c[0] - half, c[1] - half, c[0] + half, c[1] + half)
            start = log.stat().st_size
            t = time.perf_counter()
            out = work / f"out{km2}"
            shutil.rmtree(out, ignore_errors=True)
            # a fresh process per step: GDAL's /vsicurl/ cache would otherwise hide the second step's reads
            subprocess.run([sys.executable, "-m", "atlas_change", "classify", f"{url}/tile/item.json", "--model", a.model,
                            "--aoi-bbox", ",".join(map(str, bbox)), "--aoi-crs", "EPSG:32632", "--out", str(out),
                            "--quiet"], check=True)
            secs = time.perf_counter() - t
            sent, n = bytes_since(log, start)
            run = json.loads((out / "run.json").read_text())
            w = run["parameters"]["window"]
            rows.append(f"| classify --aoi {km2} km^2 (window {w[2]} x {w[3]} px) | {sent / 1e6:.2f} MB | {n} | "
                        f"{100 * sent / total:.2f} % | {secs:.1f} s |")
            aoi = shapely.geometry.shape(transform_geom("EPSG:32632", "EPSG:4326", shapely.box(*bbox).__geo_interface__))
            start = log.stat().st_size
            subprocess.run([sys.executable, "-c", "import json, sys, shapely.geometry; from atlas_change.batch.search import "
                            "aoi_clear; aoi_clear(json.loads(sys.argv[1]), sys.argv[2], shapely.geometry.shape("
                            "json.loads(sys.argv[3])))", json.dumps(item), f"{url}/tile/item.json",
                            json.dumps(aoi.__geo_interface__)], check=True, cwd=ROOT)
            sent, n = bytes_since(log, start)
            rows.append(f"| search ranking: the SCL over the {km2} km^2 AOI | {sent / 1e6:.3f} MB | {n} | "
                        f"{100 * sent / total:.3f} % | |")
    finally:
        proc.terminate()
        proc.wait(10)
    from bench_classify import cpu_name

    cpu = cpu_name()
    text = "\n".join([
        f"\n## Bytes read from a remote full tile ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"`benchmarks/bytes_read.py`)\n",
        f"Synthetic {a.size} x {a.size} px tile, one deflate COG per band (4 x 10 m, 2 x 20 m, SCL 20 m; "
        f"{total / 1e6:.0f} MB in all, made in {made:.0f} s), served by nginx on 127.0.0.1; model {a.model}; "
        f"{os.cpu_count()} cores, {cpu}. Bytes: nginx's `$bytes_sent` (headers included) of every request "
        "during the step.\n",
        "| step | bytes sent | requests | of the files | wall |", "|---|---|---|---|---|", *rows, ""])
    print(text)
    with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
