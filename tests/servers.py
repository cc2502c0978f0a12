"""Real servers on 127.0.0.1 for the tests and the benchmarks: nginx serving a folder (byte ranges,
HEAD: what GDAL's /vsicurl/ needs), a STAC API (rustac serve, its in-memory backend), and one COG
per band of a synthetic scene to serve. Failures to start raise RuntimeError with the server's stderr."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rasterio

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
RUSTAC = shutil.which("rustac") or next((str(p) for p in [Path(sys.executable).parent / "rustac"] if p.exists()), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, proc: subprocess.Popen, what: str) -> None:
    """Return once `port` answers; RuntimeError (and `proc` killed) if `proc` exits or 10 s pass."""
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} did not start: {proc.stderr.read().decode()[:300] if proc.stderr else ''}")


@contextmanager
def nginx(root: Path, prefix: Path, workers: int = 1, log: bool = True) -> Iterator[str]:
    """nginx serving `root` (its config, pid and logs in `prefix`, access.log when `log`); yields its URL."""
    if NGINX is None:
        raise RuntimeError("nginx is not installed (Debian package nginx; .ci/run installs it)")
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(f"""user root; daemon off; worker_processes {workers}; pid {prefix}/nginx.pid; error_log {prefix}/error.log;
events {{ worker_connections 256; }}
http {{ access_log {f'{prefix}/access.log' if log else 'off'}; client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy; fastcgi_temp_path {prefix}/fcgi; uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi; default_type application/octet-stream;
  server {{ listen 127.0.0.1:{port}; root {root}; location / {{ }} }} }}
""")
    proc = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        wait_for(port, proc, "nginx")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def stac_api(items: list[dict], folder: Path) -> Iterator[str]:
    """A real STAC API on 127.0.0.1 (rustac serve, its in-memory backend: search by collection,
    intersects, datetime, as the catalogues answer) holding `items`; yields its URL."""
    if RUSTAC is None:
        raise RuntimeError("rustac is not installed (pip install rustac; the dev extra has it)")
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / "items.json"
    f.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    port = free_port()
    proc = subprocess.Popen([RUSTAC, "serve", "--addr", f"127.0.0.1:{port}", "--create-collections", str(f)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(port, proc, "rustac serve")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def band_cogs(scene: Path, folder: Path, add: int = 0, scl: int | None = 4, cloud=None) -> dict[str, str]:
    """One COG per band of a multi-band GeoTIFF (DN + `add`, as baseline >= 04.00 products), and an
    SCL of class `scl` everywhere but cloud (9) in `cloud` ((rows, cols) slices); -> band -> file name."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    with rasterio.open(scene) as src:
        profile = {**src.profile, "count": 1, "driver": "COG", "compress": "deflate"}
        for k in ("tiled", "blockxsize", "blockysize", "interleave"):
            profile.pop(k, None)
        for i, band in enumerate(src.descriptions, 1):
            data = src.read(i)
            data = np.where(data > 0, data + add, 0).astype(np.uint16)
            with rasterio.open(folder / f"{band}.tif", "w", **profile) as dst:
                dst.write(data, 1)
            names[band] = f"{band}.tif"
        if scl is not None:
            with rasterio.open(folder / "SCL.tif", "w", **{**profile, "dtype": "uint8"}) as dst:
                classes = np.full((src.height, src.width), scl, np.uint8)
                if cloud is not None:
                    classes[cloud] = 9
                dst.write(classes, 1)
            names["SCL"] = "SCL.tif"
    return names
