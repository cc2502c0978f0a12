"""STAC Items as inputs, their COGs served by a real HTTP server with byte ranges (nginx from
Debian, started here on 127.0.0.1; .ci/run installs it): the same labels as the same bands in one
local GeoTIFF, the offset decided from the pixels whatever the Item's flags say, clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from atlas_change.bands import L2A_ORDER
from atlas_change.errors import AtlasError
from atlas_change.synth import make_scene
from conftest import band_cogs, free_port, item, run_classify


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    d = tmp_path_factory.mktemp("scene")
    return make_scene(d / "l2a.tif", 256, 256, bands=L2A_ORDER, seed=5)


def test_earth_search_item_over_http_equals_the_local_file(server, local, model12, tmp_path):
    """Earth Search keys, COGs over HTTP with DN + 1000 while the Item claims the offset was already
    taken off (earthsearch:boa_offset_applied true, as for some real items): the pixels decide, and the
    labels equal those of the same bands in one local GeoTIFF; only parts of the files are read."""
    url, root, log = server
    names = band_cogs(local, root / "es", add=1000)
    it = item({b: f"{url}/es/{n}" for b, n in names.items()}, "earth-search",
              **{"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": True})
    (root / "es" / "item.json").write_text(json.dumps(it))
    ref = run_classify(local, model12, out=tmp_path / "ref", tta=1)
    ds = run_classify(f"{url}/es/item.json", model12, out=tmp_path / "out", tta=1)
    np.testing.assert_array_equal(ds["lulc"].values, ref["lulc"].values)
    np.testing.assert_allclose(ds["confidence"].values, ref["confidence"].values, atol=1e-6)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["input"]["path"] == f"{url}/es/item.json" and run["input"]["kind"] == "stac-item"
    assert run["input"]["dn_offset_applied"] == -1000 and "earthsearch:boa_offset_applied true" in run["input"]["dn_offset_how"]
    assert run["input"]["date"] == "2023-06-12" and run["input"]["level"] == "L2A" and run["input"]["scl_mask"]
    assert "asset blue" in run["input"]["band_mapping"]["B02"]
    assert " 206 " in log.read_text()  # partial content: GDAL read byte ranges


def test_planetary_computer_item_file_with_relative_hrefs(local, model12, tmp_path):
    """Planetary Computer keys (B02, B8A, SCL), a local Item file whose hrefs are relative paths,
    baseline 03.01 (no offset): same labels as the local GeoTIFF."""
    names = band_cogs(local, tmp_path / "pc")
    f = tmp_path / "pc" / "item.json"
    f.write_text(json.dumps(item(names, "pc", **{"s2:processing_baseline": "03.01"})))
    ref = run_classify(local, model12, tta=1)
    ds = run_classify(f, model12, tta=1)
    np.testing.assert_array_equal(ds["lulc"].values, ref["lulc"].values)
    assert ds.attrs["dn_offset_applied"] == 0


def test_item_failures_are_one_line_naming_the_url(server, local, model12, tmp_path):
    url, root, _ = server
    with pytest.raises(AtlasError, match=rf"^{url}/nothing.json: cannot fetch the STAC Item \(HTTP 404"):
        run_classify(f"{url}/nothing.json", model12, out=tmp_path / "x")
    names = band_cogs(local, root / "gone", scl=None)
    it = item({b: f"{url}/gone/{n}" for b, n in names.items()}, "earth-search")
    it["assets"]["red"]["href"] = f"{url}/gone/missing_B04.tif"
    (root / "gone" / "item.json").write_text(json.dumps(it))
    with pytest.raises(AtlasError, match=rf"{url}/gone/missing_B04.tif: cannot read the B04 asset"):
        run_classify(f"{url}/gone/item.json", model12, out=tmp_path / "y")
    it["assets"]["red"]["href"] = f"{url}/gone/{names['B04']}"
    del it["assets"]["nir"]
    (root / "gone" / "item.json").write_text(json.dumps(it))
    with pytest.raises(AtlasError, match=r"item.json: the STAC Item has no GeoTIFF asset for band\(s\) B08"):
        run_classify(f"{url}/gone/item.json", model12, out=tmp_path / "z")
    down = f"http://127.0.0.1:{free_port()}/item.json"  # nothing listens there
    with pytest.raises(AtlasError, match=rf"^{down}: cannot fetch the STAC Item"):
        run_classify(down, model12)
    assert not any((tmp_path / n).exists() for n in ("x", "y", "z"))


def test_truncated_cog_over_http_is_one_line_and_nothing_written(server, local, model12, tmp_path):
    """A COG cut short on the server (an interrupted upload): its header opens, its blocks do not;
    one line naming the Item, no output folder."""
    url, root, _ = server
    names = band_cogs(local, root / "cut")
    data = (root / "cut" / names["B04"]).read_bytes()
    (root / "cut" / names["B04"]).write_bytes(data[:len(data) // 3])
    (root / "cut" / "item.json").write_text(json.dumps(item({b: f"{url}/cut/{n}" for b, n in names.items()},
                                                            "earth-search")))
    with pytest.raises(AtlasError, match=rf"^{url}/cut/item.json: cannot read pixels at rows 0\.\.256"):
        run_classify(f"{url}/cut/item.json", model12, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_a_server_that_never_answers_times_out_with_retries(tmp_path):
    """A server that accepts the connection and then says nothing: with ATLAS_HTTP_TIMEOUT=1 the Item
    is asked for three times (1 s, 2 s backoff) and the run ends in one line naming the URL."""
    import socket
    import subprocess
    import sys
    import threading
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held = []
    threading.Thread(target=lambda: [held.append(listener.accept()) for _ in range(8)], daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/item.json"
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "atlas_change", "classify", url, "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, env={**__import__("os").environ, "ATLAS_HTTP_TIMEOUT": "1"})
    secs = time.perf_counter() - t
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and lines[-1].startswith(f"atlas-change: error: {url}: cannot fetch the STAC Item (")
    assert "timed out" in lines[-1] and len(held) == 3 and secs < 60
    assert not (tmp_path / "o").exists()
    listener.close()


def test_unsigned_planetary_computer_assets_are_refused_with_what_to_do(tmp_path, model12):
    """The Planetary Computer serves its COGs only with a SAS token: an unsigned Item is refused before
    any read, with the way out; a signed one (sig= in the hrefs) passes that check."""
    blob = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/32/T/QM/2023/06/12/S2B_MSIL2A_X.SAFE/GRANULE/L2A/IMG_DATA"
    it = item({b: f"{blob}/R10m/T32TQM_{b}_10m.tif" for b in ("B02", "B03", "B04", "B08")}, "pc")
    (tmp_path / "item.json").write_text(json.dumps(it))
    with pytest.raises(AtlasError, match=r"item.json: its assets are on the Planetary Computer's storage .*"
                                         r"planetary_computer.sign\(item\)"):
        run_classify(tmp_path / "item.json", model12, out=tmp_path / "o")
    from atlas_change.read.stac import _needs_signing

    assert _needs_signing(f"{blob}/a.tif") and not _needs_signing(f"{blob}/a.tif?st=2026&se=2026&sig=abc%3D")
    assert not _needs_signing("https://sentinel-cogs.s3.us-west-2.amazonaws.com/a.tif")


@pytest.fixture()
def hostile_http():
    """A real HTTP server on 127.0.0.1 whose answers misbehave: an endless body, a body that trickles,
    a body shorter than its Content-Length."""
    import http.server
    import threading
    import time as _time

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200)
            if self.path == "/endless":
                self.end_headers()
                try:
                    for _ in range(100_000):  # bounded: 6.4 GB at most, the client stops long before
                        self.wfile.write(b"{" * 65536)
                except OSError:
                    pass
            elif self.path == "/trickle":
                self.end_headers()
                try:
                    for _ in range(200):  # one byte each 0.05 s: 10 s at most
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        _time.sleep(0.05)
                except OSError:
                    pass
            elif self.path == "/short":
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b'{"type": "Feature"')

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_item_reads_over_http_are_bounded_in_bytes_and_time(hostile_http, monkeypatch):
    """An endless body stops at the byte cap, a trickling one at the total time, a short one and a URL
    with a space are one clear error each; none of them hangs or fills the memory."""
    import time

    import atlas_change.read.stac as stac

    monkeypatch.setattr(stac, "RETRIES", 1)
    t0 = time.monotonic()
    with pytest.raises(AtlasError, match="longer than the 1048576 bytes"):
        stac.fetch(f"{hostile_http}/endless", max_bytes=1 << 20)
    with pytest.raises(AtlasError, match="took more than 1 s in all"):
        stac.fetch(f"{hostile_http}/trickle", total_s=1)
    with pytest.raises(AtlasError, match="ended after 18 bytes, before its announced length"):
        stac.fetch(f"{hostile_http}/short")
    with pytest.raises(AtlasError, match="not a valid URL"):
        stac.fetch(f"{hostile_http}/an item")
    assert time.monotonic() - t0 < 15


def test_a_stac_api_that_answers_without_end_is_one_line(hostile_http, monkeypatch):
    """A STAC API whose answer never ends (or trickles) stops at the Items' bounds (here 1 MiB, 2 s),
    one line naming the API, instead of being read whole into memory for as long as it comes."""
    import time

    import shapely

    import atlas_change.read.stac as stac
    from atlas_change.batch.search import search

    monkeypatch.setattr(stac, "MAX_ITEM_BYTES", 1 << 20)
    monkeypatch.setattr(stac, "TOTAL_S", 2.0)
    t0 = time.monotonic()
    for path, words in (("endless", "longer than the 1048576 bytes allowed for a STAC API's answer"),
                        ("trickle", "took more than 2 s in all")):
        with pytest.raises(AtlasError, match=rf"^{hostile_http}/{path}: cannot search the STAC API \(.*{words}"):
            search(f"{hostile_http}/{path}", "sentinel-2-l2a", shapely.box(10, 45, 10.1, 45.1), "2023-06-01/2023-06-30")
    assert time.monotonic() - t0 < 20


def test_band_assets_that_are_no_sentinel2_band_are_named(tmp_path):
    """A band asset without a CRS or at 1 km is refused in one line naming it; one of 3 bands is read
    with a warning saying which band it takes."""
    import rasterio
    from affine import Affine

    from atlas_change.errors import AtlasWarning
    from atlas_change.read import open_scene

    scene = make_scene(tmp_path / "s.tif", 128, 128, bands=L2A_ORDER, seed=1)
    hrefs = band_cogs(scene, tmp_path / "cogs")
    f = tmp_path / "cogs" / "item.json"

    def write(band, **kw):
        with rasterio.open(scene) as src:
            i = list(src.descriptions).index(band) + 1
            data, profile = src.read(i), {**src.profile, "count": 1}
        profile.update(kw)
        arr = np.stack([data] * profile["count"]) if profile["count"] > 1 else data[None]
        if "transform" in kw:
            arr = arr[:, :2, :2]
            profile.update(width=2, height=2)
        with rasterio.open(tmp_path / "cogs" / f"{band}.tif", "w", **profile) as dst:
            dst.write(arr)

    f.write_text(json.dumps(item(hrefs, "earth-search")))
    write("B05", crs=None)
    with pytest.raises(AtlasError, match=r"B05.tif: the B05 asset of .* has no CRS"):
        open_scene(str(f), None)
    hrefs = band_cogs(scene, tmp_path / "cogs")
    write("B05", transform=Affine(1000, 0, 600000, 0, -1000, 5000040))
    with pytest.raises(AtlasError, match=r"the B05 asset of .* is at 1000 m, coarser than any Sentinel-2 band"):
        open_scene(str(f), None)
    hrefs = band_cogs(scene, tmp_path / "cogs")
    write("B05", count=3)
    with pytest.warns(AtlasWarning, match="holds 3 bands; its first is read as B05"):
        open_scene(str(f), None)
