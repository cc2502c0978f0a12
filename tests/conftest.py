"""Shared fixtures: small synthetic scenes and an explicitly untrained model (tests only check
the pipeline's behaviour: grids, bands, nodata, files, errors; never label quality)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import rasterio  # noqa: E402

from atlas_change.bands import EUROSAT_ORDER, L2A_ORDER  # noqa: E402
from atlas_change.read.stac import EARTH_SEARCH  # noqa: E402

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
BY_BAND = {v: k for k, v in EARTH_SEARCH.items()}
RUSTAC = shutil.which("rustac") or next((str(p) for p in [Path(sys.executable).parent / "rustac"] if p.exists()), None)


@pytest.fixture(scope="session", autouse=True)
def _own_cache(tmp_path_factory):
    """Converted models of the tests' throw-away networks go to a temporary cache, not the user's."""
    old = os.environ.get("ATLAS_CACHE")
    os.environ["ATLAS_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("ATLAS_CACHE")
    else:
        os.environ["ATLAS_CACHE"] = old


@pytest.fixture(scope="session")
def model13(tmp_path_factory):
    from atlas_change.model.train import init_untrained

    return init_untrained("spectrumnet", EUROSAT_ORDER, tmp_path_factory.mktemp("m") / "sn13", "sn13")


@pytest.fixture(scope="session")
def model12(tmp_path_factory):
    from atlas_change.model.train import init_untrained

    return init_untrained("spectrumnet", L2A_ORDER, tmp_path_factory.mktemp("m") / "sn12", "sn12")


def run_classify(scene, card, **kw):
    from atlas_change.mapping.pipeline import classify

    kw.setdefault("scheduler", "sync")
    kw.setdefault("runtime", "graph")
    return classify(scene, model=card.path, allow_untrained=True, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """nginx serving a folder on 127.0.0.1 (ranges, HEAD: what GDAL's /vsicurl/ needs): (url, folder, log)."""
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian package nginx; .ci/run installs it)")
    root = tmp_path_factory.mktemp("www")
    prefix = tmp_path_factory.mktemp("nginx")
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(f"""user root; daemon off; worker_processes 1; pid {prefix}/nginx.pid; error_log {prefix}/error.log;
events {{ worker_connections 64; }}
http {{ access_log {prefix}/access.log; client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fcgi; uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;
  default_type application/octet-stream;
  server {{ listen 127.0.0.1:{port}; root {root}; location / {{ }} }} }}
""")
    proc = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(conf)], stderr=subprocess.PIPE)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail(f"nginx did not start: {proc.stderr.read().decode()[:300]}")
    yield f"http://127.0.0.1:{port}", root, prefix / "access.log"
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


def item(hrefs: dict[str, str], keys: str, **props) -> dict:
    """A STAC Item with one COG asset per band, keyed as Earth Search ('earth-search') or the
    Planetary Computer ('pc') do."""
    assets = {(BY_BAND[b] if keys == "earth-search" else b): {
        "href": h, "type": "image/tiff; application=geotiff; profile=cloud-optimized", "roles": ["data"]}
        for b, h in hrefs.items()}
    assets["thumbnail"] = {"href": "thumb.jpg", "type": "image/jpeg"}
    return {"type": "Feature", "stac_version": "1.0.0", "id": "S2B_32TQM_20230612_0_L2A", "collection": "sentinel-2-l2a",
            "geometry": None, "properties": {"datetime": "2023-06-12T10:15:59Z", **props}, "assets": assets,
            "links": []}


def _wait_for(port: int, proc: subprocess.Popen, what: str) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    pytest.fail(f"{what} did not start: {proc.stderr.read().decode()[:300]}")


@contextmanager
def stac_api(items: list[dict], folder: Path):
    """A real STAC API on 127.0.0.1 (rustac serve, its in-memory backend: search by collection,
    intersects, datetime, as the catalogues answer) holding `items`; yields its URL."""
    if RUSTAC is None:
        pytest.skip("rustac is not installed (pip install rustac; the dev extra has it)")
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / "items.json"
    f.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    port = free_port()
    proc = subprocess.Popen([RUSTAC, "serve", "--addr", f"127.0.0.1:{port}", "--create-collections", str(f)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for(port, proc, "rustac serve")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
