"""Clouds: masked on L1C with s2cloudless (synthetic thick clouds here; the real cloudy/clear L1C
pair in test_real_data.py), never labelled, never change; inputs without the detector's bands
are classified with one warning."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio

from atlas_change.mapping.cloud import patch_cloud_fraction
from atlas_change.change.compare import compare
from atlas_change.errors import AtlasError, AtlasWarning
from atlas_change.bands import EUROSAT_ORDER
from atlas_change.synth import make_scene

from conftest import run_classify

ORIGIN = (600000.0, 5000040.0)
CLOUD = ((128, 128, 128, 128),)  # a 1.28 km cloud over patches (2..3, 2..3) of a 7 x 7 patch scene
# patches whose share of cloud or shadow (after s2cloudless's smoothing and dilation) passes 0.1:
# the four under the cloud and the eight that share an edge with them, not the diagonal ones
EXPECTED = np.zeros((7, 7), np.uint8)
EXPECTED[1:5, 2:4] = EXPECTED[2:4, 1:5] = 1


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    d = tmp_path_factory.mktemp("cloud")
    clear = make_scene(d / "clear.tif", 448, 448, origin=ORIGIN, seed=3, tags={"DATE": "2024-06-01"})
    cloudy = make_scene(d / "cloudy.tif", 448, 448, origin=ORIGIN, seed=3, clouds=CLOUD, tags={"DATE": "2024-06-11"})
    return clear, cloudy


def test_patch_cloud_fraction():
    flags = np.zeros((16, 24), bool)
    flags[:8, :4] = True  # half of patch (0, 0) at 8 px per flag
    frac = patch_cloud_fraction(flags, 8, 64, 64, (2, 3))
    np.testing.assert_allclose(frac, [[0.5, 0, 0], [0, 0, 0]])
    flags[:] = False
    flags[:8, 2:6] = True  # at stride 32 (4 flags): half of patch (0, 0), a quarter of (0, 1)
    np.testing.assert_allclose(patch_cloud_fraction(flags, 8, 32, 64, (3, 5))[0, :3], [0.5, 0.25, 0])


def test_l1c_clouds_are_not_labelled(scenes, model13, tmp_path):
    clear, cloudy = scenes
    ds = run_classify(cloudy, model13, out=tmp_path / "c")
    np.testing.assert_array_equal(ds["cloud"].values, EXPECTED)
    assert (ds["lulc"].values[EXPECTED == 1] == 0).all() and (ds["lulc"].values[EXPECTED == 0] > 0).all()
    assert np.isnan(ds["confidence"].values[EXPECTED == 1]).all()
    run = json.loads((tmp_path / "c" / "run.json").read_text())
    assert run["clouds"]["method"] == "s2cloudless" and run["clouds"]["masked"] and run["clouds"]["max_cloud"] == 0.1
    assert run["counts"]["skipped_cloud"] == 12 and run["counts"]["classified"] == 37
    assert run["counts"]["cloud_ha"] == pytest.approx(12 * 40.96) and run["counts"]["nodata_cells"] == 0
    with rasterio.open(tmp_path / "c" / "cloud.tif") as src:  # 2 = cloud, 1 = clear, 0 would be nodata
        np.testing.assert_array_equal(src.read(1), np.where(EXPECTED == 1, 2, 1))
        assert src.nodata == 0
    rows = set(zip(*np.nonzero(EXPECTED)))
    cells = __import__("geopandas").read_parquet(tmp_path / "c" / "cells.parquet")
    assert len(cells) == 37 and not rows & set(zip(cells["row"], cells["col"]))
    # the same land without the cloud: nothing masked
    assert not run_classify(clear, model13)["cloud"].values.any()


def test_mask_does_not_depend_on_the_chunking(scenes, model13):
    """Chunks are read with a margin, so a cloud in the next chunk still counts."""
    a = run_classify(scenes[1], model13, chunk=128)["cloud"].values
    np.testing.assert_array_equal(a, EXPECTED)


def test_max_cloud_one_labels_everything(scenes, model13):
    ds = run_classify(scenes[1], model13, max_cloud=1.0)
    assert (ds["lulc"].values > 0).all() and not ds["cloud"].values.any()


def test_compare_reports_cloud_not_change(scenes, model13, tmp_path):
    clear, cloudy = scenes
    run_classify(clear, model13, out=tmp_path / "a")
    run_classify(cloudy, model13, out=tmp_path / "b")
    bbox = f"{ORIGIN[0]},{ORIGIN[1] - 4480},{ORIGIN[0] + 4480},{ORIGIN[1]}"
    s = compare(tmp_path / "a", tmp_path / "b", aoi_bbox=bbox, aoi_crs="EPSG:32632", out=tmp_path / "cmp",
                min_confidence=0.5)
    assert s["cloud_ha"] == pytest.approx(12 * 40.96) and s["cloud_after_ha"] == s["cloud_ha"]
    assert s["cloud_before_ha"] == 0 and s["nodata_ha"] == 0
    assert s["valid_ha"] == pytest.approx(37 * 40.96) and s["changed_ha"] == 0
    assert s["valid_ha"] + s["cloud_ha"] == pytest.approx(s["aoi_cells_ha"])
    with rasterio.open(tmp_path / "cmp" / "change.tif") as src, rasterio.open(tmp_path / "cmp" / "after.tif") as aft:
        assert not src.read(1).any() and (aft.read(1)[EXPECTED == 1] == 0).all()


def test_change_map_shows_each_dates_image_and_clouds(scenes, model13, tmp_path):
    """The HTML map puts each date's true-colour image under its classes, draws the cloud cells,
    and renders in a real browser (headless Chromium) with those image layers on the page."""
    import base64
    import io
    import re

    from PIL import Image

    from atlas_change.publish.view import change_map

    from test_compare import _need_chromium

    clear, cloudy = scenes
    run_classify(clear, model13, out=tmp_path / "a")
    run_classify(cloudy, model13, out=tmp_path / "b")
    bbox = f"{ORIGIN[0]},{ORIGIN[1] - 4480},{ORIGIN[0] + 4480},{ORIGIN[1]}"
    compare(tmp_path / "a", tmp_path / "b", aoi_bbox=bbox, aoi_crs="EPSG:32632", out=tmp_path / "cmp")
    html = change_map(tmp_path / "cmp", side_by_side=True)
    text = html.read_text()
    for layer in ("image 2024-06-01", "image 2024-06-11", "classes 2024-06-01", "cloud 2024-06-11"):
        assert f'"{layer}"' in text or f"\\u0022{layer}" in text or layer in text, layer
    images = re.findall(r"data:image/webp;base64,([A-Za-z0-9+/=]+)", text)
    assert len(images) == 2  # one true-colour image per date
    after = np.asarray(Image.open(io.BytesIO(base64.b64decode(images[1]))).convert("RGBA"))
    h, w = after.shape[:2]
    # the cloud (centre of the scene) is bright in the after image, the land around it is not
    assert after[h // 2 - 5:h // 2 + 5, w // 2 - 5:w // 2 + 5, :3].mean() > 200
    assert after[5:15, 5:15, :3].mean() < 200 and (after[h // 4:-h // 4, w // 4:-w // 4, 3] == 255).all()
    _need_chromium()
    side = tmp_path / "cmp" / "change_map_side_by_side.html"
    for page, n_images in ((html, 1), (side, 3)):  # shown at load: image before | image after + cloud after
        r = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            f"--user-data-dir={tmp_path / 'prof'}", "--enable-logging=stderr", "--v=0",
                            "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
                           capture_output=True, text=True, timeout=120)
        assert r.stdout.count("leaflet-image-layer") >= n_images, page
        assert "atlas-opacity" in r.stdout and "Uncaught" not in r.stderr, r.stderr[-2000:]
    # the legend's slider sets the class layer's opacity (here GeoJSON tiles: their fill-opacity)
    probe = tmp_path / "cmp" / "probe.html"
    probe.write_text(text + "<script>setTimeout(function(){var s=document.getElementById('atlas-opacity');"
                     "s.value=15;s.dispatchEvent(new Event('input'));},300);</script>")
    r = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        f"--user-data-dir={tmp_path / 'prof'}", "--virtual-time-budget=3000", "--dump-dom",
                        probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert 'fill-opacity="0.15"' in r.stdout and 'fill-opacity="0.6"' not in r.stdout


def test_input_without_scl_nor_b10_gets_the_spectral_test(tmp_path):
    """L2A as Major TOM or a STAC Item without SCL ships it (B01..B12 and B8A, no B10): Fmask's spectral
    tests find the same thick cloud as s2cloudless, at 160 m, and leave the clear scene alone."""
    from atlas_change.model.train import init_untrained

    rgb = init_untrained("spectrumnet-bn-w0.5", ("B04", "B03", "B02"), tmp_path / "rgb", "rgb")
    l2a = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B11", "B12", "B8A")
    clear = make_scene(tmp_path / "clear.tif", 448, 448, bands=l2a, origin=ORIGIN, seed=3)
    cloudy = make_scene(tmp_path / "cloudy.tif", 448, 448, bands=l2a, origin=ORIGIN, seed=3, clouds=CLOUD)
    ds = run_classify(cloudy, rgb, out=tmp_path / "c")
    np.testing.assert_array_equal(ds["cloud"].values, EXPECTED)
    assert (ds["lulc"].values[EXPECTED == 1] == 0).all() and (ds["lulc"].values[EXPECTED == 0] > 0).all()
    run = json.loads((tmp_path / "c" / "run.json").read_text())
    assert run["clouds"]["method"] == "spectral" and run["clouds"]["masked"] and "lacks B10" in run["clouds"]["why"]
    assert "B02 - 0.5 B04 - 0.08 > 0" in run["clouds"]["detail"] and run["counts"]["skipped_cloud"] == 12
    ds = run_classify(clear, rgb)
    assert not ds["cloud"].values.any() and (ds["lulc"].values > 0).all()


def test_input_without_the_detector_bands_warns(tmp_path):
    from atlas_change.model.train import init_untrained

    card = init_untrained("spectrumnet-bn-w0.5", ("B04", "B03", "B02"), tmp_path / "rgb", "rgb")
    scene = make_scene(tmp_path / "rgb.tif", 128, 128, bands=("B02", "B03", "B04", "B08"), origin=ORIGIN)
    with pytest.warns(AtlasWarning, match=r"rgb\.tif: clouds not masked: the input lacks B01, B05, B8A, B09, B10"):
        ds = run_classify(scene, card, out=tmp_path / "o")
    assert (ds["lulc"].values > 0).all()
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["clouds"]["masked"] is False and "lacks B01" in run["clouds"]["why"]
    cli = [sys.executable, "-m", "atlas_change", "classify", str(scene), "--model", card.path, "--allow-untrained",
           "--out", str(tmp_path / "cli"), "--scheduler", "sync"]
    r = subprocess.run(cli, capture_output=True, text=True)
    lines = [ln for ln in r.stderr.splitlines() if "warning" in ln]
    assert r.returncode == 0 and len(lines) == 2 and all(ln.startswith("atlas-change: warning: ") for ln in lines)
    assert "clouds not masked" in lines[0] and "snow not tested (needs B03, B08 and B11, or an L2A SCL)" in lines[1]
    assert "water" not in lines[1]  # B03 and B08 are there: water is tested
    assert run["surface"]["water"].startswith("NDWI (B03, B08) > 0.0") and run["surface"]["snow"] == "not tested"
    r = subprocess.run(cli + ["--quiet"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == ""
    r = subprocess.run(cli + ["--no-cloud-mask", "--quiet"], capture_output=True, text=True)
    assert json.loads((tmp_path / "cli" / "run.json").read_text())["clouds"]["why"].startswith("cloud masking turned off")


EOLEARN = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "scenes" / "eolearn-l1c13"


@pytest.mark.data
def test_real_cloudy_l1c_is_masked_and_shows_no_change(tmp_path):
    """eo-learn's real L1C pair of one Slovenian forest: the cloudy date comes out all cloud (no
    label), the clear one with no cloud, and their comparison shows no change, only cloud."""
    if not (EOLEARN / "cloudy.tif").exists():
        pytest.skip("../shared/scenes not here")
    import atlas_change

    cloudy = atlas_change.classify(EOLEARN / "cloudy.tif", stride=16, scheduler="sync", out=tmp_path / "cloudy")
    clear = atlas_change.classify(EOLEARN / "clear.tif", stride=16, scheduler="sync", out=tmp_path / "clear")
    assert cloudy["cloud"].values.mean() >= 0.95 and (cloudy["lulc"].values == 0).mean() >= 0.95
    assert not clear["cloud"].values.any() and (clear["lulc"].values > 0).all()
    with rasterio.open(EOLEARN / "clear.tif") as src:
        b = src.bounds
    kw = dict(aoi_bbox=f"{b.left},{b.bottom},{b.right},{b.top}", aoi_crs="EPSG:32633", out=tmp_path / "cmp")
    # the files carry no acquisition date: refused until the dates are given, never compared as "None"
    with pytest.raises(AtlasError, match="clear: no acquisition date .* --before-date"):
        compare(tmp_path / "clear", tmp_path / "cloudy", **kw)
    s = compare(tmp_path / "clear", tmp_path / "cloudy", before_date="2017-06-01", after_date="2017-06-21", **kw)
    assert s["changed_ha"] == 0 and s["cloud_ha"] >= 0.95 * s["aoi_cells_ha"] and s["cloud_before_ha"] == 0
    import re

    from atlas_change.publish.view import change_map

    change_map(tmp_path / "cmp", side_by_side=True)
    for page in ("change_map.html", "change_map_side_by_side.html"):
        text = (tmp_path / "cmp" / page).read_text()
        assert not re.search(r"None \(|: None\b|top-3 None", text), page
        assert (f"2017-06-01 ({s['before']['model']}) to 2017-06-21 ({s['after']['model']})"
                if page == "change_map.html" else ">before: 2017-06-01</div>") in text, page


def test_l1c_safe_feeds_s2cloudless_its_bands_and_offset(tmp_path, model13):
    """An L1C SAFE (baseline >= 04.00: DN offset -1000; 20 and 60 m JP2s): s2cloudless gets its ten
    bands in its order, as 160 m block means of the 10 m grid, with the product's offset."""
    from rasterio.windows import Window

    from atlas_change.bands import EUROSAT_ORDER
    from atlas_change.mapping.cloud import CLOUD_BANDS, FACTOR, plan
    from atlas_change.read import open_scene

    from test_safe import make_safe

    safe = make_safe(tmp_path, level="L1C", offset=-1000)
    masker = plan(open_scene(safe, EUROSAT_ORDER))
    assert masker.method == "s2cloudless" and masker.scene.offset == -1000
    dn, valid = masker.scene.read(Window(0, 0, 128, 128), raw=True, factor=FACTOR)
    assert dn.shape == (10, 128 // FACTOR, 128 // FACTOR) and valid.all()
    for i, b in enumerate(CLOUD_BANDS):  # make_safe: DN = 1000 * (EuroSAT position + 1) + 1000
        assert (dn[i] == 1000 * (EUROSAT_ORDER.index(b) + 1) + 1000).all(), b
    run_classify(safe, model13, out=tmp_path / "o")
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["clouds"]["method"] == "s2cloudless"
    c = run["counts"]
    assert c["classified"] + c["skipped_cloud"] + c["skipped_nodata"] == c["patches"] == 36  # 384 px


def test_s2cloudless_sees_only_pixels_with_data():
    """The detector's probabilities are s2cloudless's own (its masks on a scene without nodata), and
    the classifier is given only the pixels with data: a nodata border holds no cloud and changes
    nothing elsewhere."""
    from atlas_change.mapping.cloud import _detector, s2cloudless_mask

    clear = np.array([1200, 900, 600, 1100, 3000, 3200, 1000, 20, 1800, 900], np.float32)  # vegetation
    dn = np.broadcast_to(clear[:, None, None], (10, 40, 40)).copy()
    dn[:, 12:24, 12:24] = np.array([5200, 5000, 5100, 5300, 5600, 5700, 3000, 900, 4200, 3100])[:, None, None]
    dn += np.random.default_rng(0).normal(0, 20, dn.shape).astype(np.float32)
    valid = np.ones((40, 40), bool)
    full = s2cloudless_mask(dn, 0.0, valid)
    library = _detector().get_cloud_masks((dn / 10000).transpose(1, 2, 0)[None])[0].astype(bool)
    assert full[16:20, 16:20].all() and not full[:, 32:].any()
    np.testing.assert_array_equal(full, library)  # no shadow-like pixels here: clouds only
    valid[:, 30:] = False  # an east border of nodata
    border = dn.copy()
    border[:, ~valid] = 0
    part = s2cloudless_mask(border, 0.0, valid)
    assert not part[~valid].any()
    np.testing.assert_array_equal(part[:, :26], full[:, :26])  # beyond the smoothing's reach: as before


def _per_chunk_and_scene_flags(path, chunk: int, bands=None):
    """Every chunk's cloud flags both ways: read per chunk with a 1 km margin (the method before
    2026-12-04) and cut from the scene's flags computed once."""
    from rasterio.windows import Window

    from atlas_change.mapping.cloud import chunk_cloud, plan
    from atlas_change.read import open_scene

    scene = open_scene(str(path), bands)
    masker = plan(scene)
    whole = masker.with_scene_flags()
    assert whole.flags is not None
    out = []
    for r in range(0, scene.height, chunk):
        for c in range(0, scene.width, chunk):
            win = Window(c, r, min(chunk, scene.width - c), min(chunk, scene.height - r))
            valid = np.ones((int(win.height), int(win.width)), bool)
            out.append((win, chunk_cloud(masker, scene, win, valid.copy())[0],
                        chunk_cloud(whole, scene, win, valid.copy())[0]))
    return masker.method, out


@pytest.mark.parametrize("bands", [None, ("B02", "B03", "B04", "B08", "B11", "B12")])
def test_scene_wide_clouds_are_the_per_chunk_clouds(tmp_path, bands):
    """Clouds across chunk borders (s2cloudless, and the spectral test of L2A-like bands): the flags cut
    from the one scene-wide pass equal those each chunk found with its 1 km margin, flag for flag, away
    from the scene's edge; and an edge window not on the 160 m grid takes the flags under its pixels."""
    from rasterio.windows import Window

    from atlas_change.mapping.cloud import FACTOR, window_flags

    clouds = ((448, 448, 200, 200), (900, 100, 300, 120), (80, 960, 150, 300))  # each over a chunk border
    scene = make_scene(tmp_path / "s.tif", 1280, 1280, origin=ORIGIN, seed=4, clouds=clouds,
                       bands=bands or EUROSAT_ORDER)
    method, chunks = _per_chunk_and_scene_flags(scene, 512)
    assert method == ("spectral" if bands else "s2cloudless")
    assert sum(int(new.sum()) for _, _, new in chunks) > 100
    for win, old, new in chunks:
        np.testing.assert_array_equal(old, new, err_msg=str(win))
    flags = np.zeros((5, 5), bool)
    flags[2, 3] = True
    got = window_flags(flags, Window(40, 24, 32, 32))  # rows 24..55, cols 40..71 of 10 m pixels
    assert got.shape == (2, 2) and got.tolist() == [[True, False], [False, False]]  # centres at rows 32, 48; cols 48, 64
    assert not window_flags(flags, Window(5 * FACTOR - 8, 0, 32, 16)).any()  # past the last whole flag


@pytest.mark.data
def test_scene_wide_clouds_are_the_per_chunk_clouds_on_real_scenes():
    """The real eo-learn cloudy L1C (s2cloudless) and the real Major TOM L2A band folder (spectral test,
    10.68 km: 11 x 11 chunks of 96 px) give the same flags both ways, flag for flag."""
    tom = sorted((EOLEARN.parents[0] / "major-tom-l2a" / "199U").glob("*/*"))
    if not (EOLEARN / "cloudy.tif").exists() or not tom:
        pytest.skip("../shared/scenes not here")
    for path, chunk in ((EOLEARN / "cloudy.tif", 64), (tom[0], 96 * 10)):
        method, chunks = _per_chunk_and_scene_flags(path, chunk)
        assert method in ("s2cloudless", "spectral")
        for win, old, new in chunks:
            np.testing.assert_array_equal(old, new, err_msg=f"{path} {win}")


@pytest.mark.data
def test_real_natural_order_bands_without_names_are_refused_where_they_read_clouds_as_snow(tmp_path, capsys):
    """eo-learn's cloudy L1C date with its band names stripped (natural order, B8A after B08): read in
    EuroSAT's order, its B10 (cirrus) stands in for B11 and the clouds come out as snow; the pixels now
    refuse that reading (one line), and named, the clouds are clouds."""
    if not (EOLEARN / "cloudy.tif").exists():
        pytest.skip("../shared/scenes not here")
    from atlas_change.__main__ import main

    bare = tmp_path / "cloudy.tif"
    with rasterio.open(EOLEARN / "cloudy.tif") as src:
        natural, data, profile = src.descriptions, src.read(), src.profile
    with rasterio.open(bare, "w", **profile) as dst:
        dst.write(data)
    assert main(["classify", str(bare), "--out", str(tmp_path / "o"), "--stride", "16", "--quiet"]) == 2
    assert "band 9 is B8A" in capsys.readouterr().err and not (tmp_path / "o").exists()
    codes = {}
    for name, order in (("natural", natural), ("eurosat", (*natural[:8], *natural[9:], natural[8]))):
        assert main(["classify", str(bare), "--out", str(tmp_path / name), "--stride", "16", "--quiet",
                     "--bands", ",".join(order)]) == 0
        with rasterio.open(tmp_path / name / "cloud.tif") as src:
            codes[name] = set(np.unique(src.read(1)).tolist())
    assert codes == {"natural": {2}, "eurosat": {3}}  # 2 cloud, 3 snow or ice (cloud.tif's legend)
