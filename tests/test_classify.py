"""classify end to end on synthetic rasters: grid, nodata, bands, strides, files, errors, workers."""
import json
import os
from pathlib import Path
import subprocess
import warnings
import sys

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

from atlas_change.bands import EUROSAT_ORDER
from atlas_change.classes import CLASSES, COLOURS
from atlas_change.errors import AtlasError, AtlasWarning
from atlas_change.synth import make_scene
from conftest import TWO_ZONE_AOI, run_classify, two_zone_scenes

ORIGIN = (600000.0, 5000040.0)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_scene(tmp_path_factory.mktemp("s") / "scene.tif", 704, 640, origin=ORIGIN, seed=1)


def test_georeferencing_and_files(scene, model13, tmp_path):
    out = tmp_path / "out"
    ds = run_classify(scene, model13, out=out)
    assert ds["lulc"].shape == (10, 11)
    assert ds.rio.transform() == Affine(640, 0, ORIGIN[0], 0, -640, ORIGIN[1])
    assert sorted(p.name for p in out.iterdir()) == ["cells.parquet", "cloud.qml", "cloud.tif", "cloud.tif.aux.xml", "confidence.tif",
                                                     "lulc.qml", "lulc.tif", "lulc.tif.aux.xml", "run.json"]
    with rasterio.open(out / "lulc.tif") as src, rasterio.open(scene) as inp:
        assert src.crs == inp.crs and src.transform == Affine(640, 0, ORIGIN[0], 0, -640, ORIGIN[1])
        assert src.dtypes[0] == "uint8" and src.nodata == 0 and (src.width, src.height) == (11, 10)
        lulc = src.read(1)
        assert lulc.min() >= 1 and lulc.max() <= 10
        cid = int(lulc[0, 0])  # the palette: each class present in its EuroSAT colour
        assert src.colormap(1)[cid] == (*COLOURS[cid - 1], 255)
        tags = src.tags()
        assert tags["CLASS_1"] == "AnnualCrop" and tags["CLASS_10"] == "SeaLake"
        assert tags["WEIGHTS_SHA256"] == model13.weights_sha256 and tags["MODEL"] == "sn13"
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    np.testing.assert_array_equal(lulc, ds["lulc"].values)
    with rasterio.open(out / "confidence.tif") as src:
        conf = src.read(1)
        assert src.transform == Affine(640, 0, ORIGIN[0], 0, -640, ORIGIN[1])
        assert ((conf >= 0.1) & (conf <= 1)).all()
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["weights_sha256"] == model13.weights_sha256
    assert run["input"]["band_mapping"]["B8A"] == "band 13 (band description)"
    assert run["counts"]["classified"] == 110 and run["output"]["cell_area_ha"] == pytest.approx(40.96)
    assert run["parameters"]["tta_views"] == 2 and run["parameters"]["runtime"] == "graph"  # the default TTA
    cells = gpd.read_parquet(out / "cells.parquet")  # one polygon per map cell, as lulc.tif
    assert len(cells) == 110 and set(cells["class_id"]) <= set(range(1, 11))
    first = cells[(cells.row == 0) & (cells.col == 0)].iloc[0]
    assert first.geometry.bounds == (ORIGIN[0], ORIGIN[1] - 640, ORIGIN[0] + 640, ORIGIN[1])
    assert first.class_id == lulc[0, 0] and cells.hectares.sum() == pytest.approx(110 * 40.96)
    np.testing.assert_allclose(cells[[f"p_{c}" for c in CLASSES]].sum(axis=1), 1, atol=1e-5)


def test_nodata_border_stays_nodata(tmp_path, model13):
    scene = make_scene(tmp_path / "b.tif", 512, 512, nodata_border=70)
    ds = run_classify(scene, model13)
    lulc = ds["lulc"].values
    assert lulc.shape == (8, 8)
    # the outer two rings of 64 px patches touch the 70 px nodata border
    assert (lulc[:2] == 0).all() and (lulc[-2:] == 0).all() and (lulc[:, :2] == 0).all() and (lulc[:, -2:] == 0).all()
    assert (lulc[2:-2, 2:-2] > 0).all()
    assert np.isnan(ds["confidence"].values[0, 0])


def test_band_order_from_descriptions(tmp_path, model13, scene):
    shuffled = tuple(reversed(EUROSAT_ORDER))
    other = make_scene(tmp_path / "rev.tif", 704, 640, bands=shuffled, origin=ORIGIN, seed=1)
    with rasterio.open(other) as src:
        assert src.descriptions[0] == "B8A"
    a = run_classify(scene, model13)
    b = run_classify(other, model13)
    np.testing.assert_array_equal(a["lulc"].values, b["lulc"].values)
    np.testing.assert_allclose(a["probabilities"].values, b["probabilities"].values, atol=1e-6)


def test_bands_option_and_count_default(tmp_path, model13, model12):
    plain = make_scene(tmp_path / "plain.tif", 128, 128, descriptions=False)
    assert run_classify(plain, model13)["lulc"].shape == (2, 2)  # 13 bands by count = EuroSAT order
    with pytest.raises(AtlasError, match="names 4 bands but the file has 13"):
        run_classify(plain, model13, bands="B02,B03,B04,B08")
    l2a = make_scene(tmp_path / "l2a.tif", 128, 128, bands=tuple(b for b in EUROSAT_ORDER if b != "B10"),
                     descriptions=False)
    with pytest.raises(AtlasError, match=r"l2a.tif: lacks band\(s\) B10"):
        run_classify(l2a, model13)
    assert run_classify(l2a, model12)["lulc"].shape == (2, 2)


def test_stride_32_shape_and_grid(scene, model13):
    ds = run_classify(scene, model13, stride=32)
    # (704-64)//32+1 = 21 patch columns -> 22 cells; (640-64)//32+1 = 19 rows -> 20 cells
    assert ds["lulc"].shape == (20, 22)
    assert ds.rio.transform() == Affine(320, 0, ORIGIN[0], 0, -320, ORIGIN[1])
    assert (ds["lulc"].values > 0).all()


def test_whole_scene_classified_edges_by_shifted_patches(tmp_path, model13):
    """A scene 64 k + 37 pixels on a side: every pixel lies in a labelled cell at every stride, and
    the last row of cells gets the probabilities of the patches that end at the bottom edge (the same
    as classifying those 64 rows on their own)."""
    size = 64 * 3 + 37
    scene = make_scene(tmp_path / "odd.tif", size, size, origin=ORIGIN, seed=3)
    for stride in (64, 32, 16):
        ds = run_classify(scene, model13, stride=stride, tta=1)
        n = -(-size // stride)
        assert ds["lulc"].shape == (n, n) and (ds["lulc"].values > 0).all(), stride
    full = run_classify(scene, model13, tta=1)
    with rasterio.open(scene) as src:
        win = rasterio.windows.Window(0, size - 64, size, 64)
        profile = {**src.profile, "height": 64, "transform": src.window_transform(win), "tiled": False}
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
        with rasterio.open(tmp_path / "bottom.tif", "w", **profile) as dst:
            dst.write(src.read(window=win))
            dst.descriptions = src.descriptions
    bottom = run_classify(tmp_path / "bottom.tif", model13, tta=1)
    assert bottom["lulc"].shape == (1, 4)
    np.testing.assert_allclose(full["probabilities"].values[:, -1, :], bottom["probabilities"].values[:, 0, :],
                               atol=1e-5)


def test_aoi_classifies_only_its_blocks_on_the_scene_grid(scene, model13, tmp_path):
    """--aoi / bbox: only the 64 px blocks of the scene's grid that cover it; the cells equal those of the
    whole scene there (same patches), georeferenced where they are; an AOI off the scene is refused."""
    full = run_classify(scene, model13)
    x0, y0 = ORIGIN
    bbox = (x0 + 1000, y0 - 2500, x0 + 2500, y0 - 1000)  # pixels 100..250 of both axes -> blocks 64..256
    part = run_classify(scene, model13, bbox=bbox, bbox_crs="EPSG:32632", out=tmp_path / "aoi")
    np.testing.assert_array_equal(part["lulc"].values, full["lulc"].values[1:4, 1:4])
    np.testing.assert_allclose(part["confidence"].values, full["confidence"].values[1:4, 1:4], atol=1e-6)
    assert part.rio.transform() == Affine(640, 0, x0 + 640, 0, -640, y0 - 640)
    run = json.loads((tmp_path / "aoi" / "run.json").read_text())
    assert run["parameters"]["window"] == [64, 64, 192, 192] and (run["input"]["width"], run["input"]["height"]) == (192, 192)
    assert run["counts"]["patches"] == 9
    r = subprocess.run([sys.executable, "-m", "atlas_change", "classify", str(scene), "--model", model13.path,
                        "--allow-untrained", "--scheduler", "sync", "--out", str(tmp_path / "off"), "--aoi-bbox",
                        "20,40,20.1,40.1"], capture_output=True, text=True)
    assert r.returncode == 2 and "does not overlap the scene by a whole 64 x 64 patch" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "off").exists()


def test_offset_from_tags_is_applied(tmp_path, model13):
    a = make_scene(tmp_path / "a.tif", 128, 128, seed=3)
    b = make_scene(tmp_path / "b.tif", 128, 128, seed=3, tags={"BOA_ADD_OFFSET": "-1000"})
    with rasterio.open(b, "r+") as dst:  # store DN + 1000 as a baseline >= 04.00 product would
        dst.write(dst.read() + 1000)
    ra, rb = run_classify(a, model13), run_classify(b, model13)
    np.testing.assert_allclose(ra["probabilities"].values, rb["probabilities"].values, atol=1e-5)
    assert rb.attrs["dn_offset_applied"] == -1000


def test_a_lost_offset_flag_is_warned_about(tmp_path, model13):
    """DN + 1000 (processing baseline >= 04.00) in a GeoTIFF without its offset tag: not acted on (a
    bright desert looks the same), but said, with the flag that fixes it."""
    a = make_scene(tmp_path / "a.tif", 128, 128, seed=3)
    b = tmp_path / "b.tif"
    with rasterio.open(a) as src:
        profile, data, names = src.profile, src.read(), src.descriptions
    with rasterio.open(b, "w", **profile) as dst:
        dst.write(data + 1000)
        dst.descriptions = names
    with pytest.warns(AtlasWarning, match=r"b.tif: no offset \(no BOA_ADD_OFFSET / RADIO_ADD_OFFSET tag\), yet the "
                      r"darkest 1 % of its 10 m pixels is at \d+ DN.*pass --offset -1000"):
        ds = run_classify(b, model13)
    assert ds.attrs["dn_offset_applied"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", AtlasWarning)
        run_classify(a, model13)  # the same land without the +1000: no such warning


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "atlas_change", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def _assert_one_line_error(r, *words):
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("atlas-change: error:"), r.stderr
    for w in words:
        assert w in lines[0]


def test_cli_errors_leave_nothing(tmp_path, model13):
    out = tmp_path / "out"
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    r = _cli("classify", text, "--model", model13.path, "--out", out, "--allow-untrained")
    _assert_one_line_error(r, "notes.tif", "not a readable raster")

    nocrs = tmp_path / "nocrs.tif"
    with rasterio.open(nocrs, "w", driver="GTiff", width=128, height=128, count=13, dtype="uint16") as d:
        d.write(np.ones((13, 128, 128), np.uint16))
    _assert_one_line_error(_cli("classify", nocrs, "--model", model13.path, "--out", out, "--allow-untrained"),
                           "nocrs.tif", "no CRS")

    geo = make_scene(tmp_path / "geo.tif", 128, 128, crs="EPSG:4326", origin=(10.0, 45.0), res=0.0001)
    _assert_one_line_error(_cli("classify", geo, "--model", model13.path, "--out", out, "--allow-untrained"),
                           "geo.tif", "geographic CRS")

    four = make_scene(tmp_path / "four.tif", 128, 128, bands=("B02", "B03", "B04", "B08"))
    _assert_one_line_error(_cli("classify", four, "--model", model13.path, "--out", out, "--allow-untrained"),
                           "four.tif", "lacks band(s) B01")

    trunc = tmp_path / "trunc.tif"
    full = make_scene(tmp_path / "full.tif", 256, 256)
    trunc.write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    _assert_one_line_error(_cli("classify", trunc, "--model", model13.path, "--out", out, "--allow-untrained"),
                           "trunc.tif")

    empty = make_scene(tmp_path / "empty.tif", 128, 128, nodata_border=64)
    _assert_one_line_error(_cli("classify", empty, "--model", model13.path, "--out", out, "--allow-untrained",
                                "--scheduler", "sync", "--quiet"), "empty.tif", "no 64 x 64 patch without nodata")
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_untrained_model_refused_without_flag(scene, model13):
    from atlas_change.mapping.pipeline import classify

    with pytest.raises(AtlasError, match="untrained"):
        classify(scene, model=model13.path, scheduler="sync")


def test_one_worker_equals_two_workers(tmp_path, model13):
    scene = make_scene(tmp_path / "w.tif", 512, 384, seed=5, block=256)
    one = run_classify(scene, model13, scheduler=None, workers=1, chunk=256)
    two = run_classify(scene, model13, scheduler=None, workers=2, chunk=256)
    np.testing.assert_array_equal(one["lulc"].values, two["lulc"].values)
    np.testing.assert_allclose(one["confidence"].values, two["confidence"].values, atol=1e-5)


def test_lazy_xarray_view(scene):
    from atlas_change.read import open_scene

    s = open_scene(scene)
    da = s.to_xarray(chunk=300)  # rounded up to the file's 512 px tiles
    assert da.shape == (13, 640, 704) and da.chunks[1][0] == 512 and da.rio.crs == s.crs
    assert list(da.band.values) == list(EUROSAT_ORDER) and float(da.x[0]) == ORIGIN[0] + 5
    with rasterio.open(scene) as src:
        np.testing.assert_array_equal(da.sel(band="B8A")[:64, :64].values, src.read(13, window=((0, 64), (0, 64))))


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A models folder holding two 'trained' models (tiny nets; the choice logic, not their labels,
    is under test): spectrumnet-rgb (B04, B03, B02) and spectrumnet-l1c13 (13 bands)."""
    from atlas_change.model.nets import build
    from atlas_change.model.registry import save
    from atlas_change.model.train import JPEG_RADIOMETRY, RGB_BANDS

    root = tmp_path_factory.mktemp("models")
    for name, bands, radiometry in (("spectrumnet-rgb", RGB_BANDS, JPEG_RADIOMETRY),
                                    ("spectrumnet-l1c13", EUROSAT_ORDER, {})):
        n = len(bands)
        save(build("spectrumnet-bn-w0.125", n), root / name, name=name, architecture="spectrumnet-bn-w0.125",
             bands=bands, mean=(100.0,) * n, std=(50.0,) * n, radiometry=radiometry, trained=True)
    return root


@pytest.mark.parametrize("bands,expected", [(("B04", "B03", "B02"), "spectrumnet-rgb"),
                                            (EUROSAT_ORDER, "spectrumnet-l1c13"),
                                            (tuple(b for b in EUROSAT_ORDER if b != "B10"), "spectrumnet-rgb")])
def test_default_model_is_the_first_shipped_one_the_bands_fit(tmp_path, shipped, monkeypatch, bands, expected):
    from atlas_change.mapping.pipeline import classify

    monkeypatch.setenv("ATLAS_MODELS", str(shipped))
    path = make_scene(tmp_path / "s.tif", 128, 128, bands=bands)
    classify(path, out=tmp_path / "out", scheduler="sync", runtime="graph")
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["model"]["model"] == expected and run["model"]["why"].startswith("default")
    assert run["model"]["bands"] == list(("B04", "B03", "B02") if expected == "spectrumnet-rgb" else EUROSAT_ORDER)
    assert run["model"]["radiometry"].get("kind") == ("eurosat-jpeg" if expected == "spectrumnet-rgb" else None)


def test_input_is_checked_before_the_model(tmp_path, monkeypatch, capsys):
    from atlas_change.__main__ import main

    monkeypatch.setenv("ATLAS_MODELS", str(tmp_path / "no-models"))
    (tmp_path / "pic.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "folder").mkdir()
    for bad, problem in (("missing.tif", "no such file"), ("pic.png", "not a readable raster"),
                         ("folder", "not a Sentinel-2 SAFE product")):
        assert main(["classify", str(tmp_path / bad), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and bad in err and problem in err and "model" not in err
    good = make_scene(tmp_path / "ok.tif", 128, 128)
    assert main(["classify", str(good), "--quiet", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no trained model" in err and "train" in err and "--model" in err and not (tmp_path / "o").exists()
    assert main(["classify", str(good), "--model", "nope", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "nope: no such model" in err and "demo" in err and "train" in err


def test_api_snippet_runs_as_a_plain_script_in_silence(tmp_path, model13):
    """The README's Python snippet pasted into a script without a __main__ guard: no crash (no worker
    process re-imports the script), nothing on stderr (TensorFlow's log lines silenced), nodata set."""
    path = make_scene(tmp_path / "scene.tif", 256, 256)
    script = tmp_path / "my.py"
    script.write_text(
        "import atlas_change\n"
        f"ds = atlas_change.classify({str(path)!r}, model={model13.path!r}, allow_untrained=True, stride=64)\n"
        "print(ds.rio.crs, ds.rio.transform().a, ds['confidence'].rio.nodata, ds['lulc'].rio.nodata)\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["EPSG:32632", "640.0", "nan", "0"] and r.stderr == ""


def test_cli_quiet_prints_nothing_default_prints_no_log_lines(tmp_path, model13):
    path = make_scene(tmp_path / "scene.tif", 256, 256)
    base = [sys.executable, "-m", "atlas_change", "classify", str(path), "--model", model13.path, "--allow-untrained"]
    r = subprocess.run(base + ["--quiet", "--out", str(tmp_path / "q")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stderr[-2000:]
    r = subprocess.run(base + ["--out", str(tmp_path / "v")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "lulc.tif" in r.stdout
    noise = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if ln.strip() and not ln.startswith("classify")]
    assert noise == [], noise  # only the progress bar
    with rasterio.open(tmp_path / "q" / "confidence.tif") as src:
        assert np.isnan(src.nodata)


def test_stride_temperature_softens_map_cells_and_keeps_their_labels(model13, tmp_path):
    """A card's per-stride cell temperature reaches the map at that stride only, and run.json says so."""
    import shutil

    from atlas_change.model.calibrate import apply_temperature
    from atlas_change.model.registry import load_card

    scene = make_scene(tmp_path / "small.tif", 192, 192, origin=ORIGIN, seed=2)

    folder = tmp_path / "calibrated"
    shutil.copytree(model13.path, folder)
    doc = json.loads((folder / "card.json").read_text())
    doc["calibration"] = {"temperature": 1.0, "stride_temperature": {"32": {"temperature": 0.25}}}
    (folder / "card.json").write_text(json.dumps(doc))
    hot = load_card(folder)
    assert hot.cell_temperature(32) == 0.25 and hot.cell_temperature(64) == 1.0
    plain, sharp = (run_classify(scene, c, stride=32, out=tmp_path / c.name) for c in (model13, hot))
    assert (plain["lulc"].values == sharp["lulc"].values).all()
    p = plain["probabilities"].values.transpose(1, 2, 0)
    np.testing.assert_allclose(sharp["probabilities"].values.transpose(1, 2, 0), apply_temperature(p, 0.25), atol=1e-5)
    assert (sharp["confidence"].values > plain["confidence"].values).all()  # T < 1 sharpens an untrained model's doubt
    run = json.loads((tmp_path / hot.name / "run.json").read_text())
    assert run["model"]["cell_temperature"] == 0.25
    with rasterio.open(tmp_path / hot.name / "lulc.tif") as src:
        assert src.tags()["CELL_TEMPERATURE"] == "0.25"
    at64 = run_classify(scene, hot)  # no temperature for 64 on this card: the cells as averaged
    np.testing.assert_allclose(at64["confidence"].values, run_classify(scene, model13)["confidence"].values)


def test_compare_keeps_apart_scenes_of_one_file_name_and_maps_of_two_strides(model13, tmp_path):
    """Two inputs called scene.tif in two folders are classified into two folders (each run.json names
    its own input; before.tif is the first scene's map, after.tif the second's), and a later compare at
    another stride leaves the first compare's sources as they were."""
    from atlas_change.change.compare import compare

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a = make_scene(tmp_path / "a" / "scene.tif", 192, 192, origin=ORIGIN, seed=1)
    b = make_scene(tmp_path / "b" / "scene.tif", 192, 192, origin=ORIGIN, seed=7)
    bbox = f"{ORIGIN[0]},{ORIGIN[1] - 1920},{ORIGIN[0] + 1920},{ORIGIN[1]}"
    kw = dict(aoi_bbox=bbox, aoi_crs="EPSG:32632", model=model13.path, allow_untrained=True, scheduler="sync",
              runtime="graph", tta=1, cloud_mask=False, before_date="2023-06-01", after_date="2024-06-01")
    s = compare(a, b, out=tmp_path / "out" / "ab", **kw)
    src_a, src_b = s["before"]["source"], s["after"]["source"]
    assert src_a != src_b
    for src, scene in ((src_a, a), (src_b, b)):
        assert json.loads((Path(src) / "run.json").read_text())["input"]["path"] == str(scene.resolve())
    with rasterio.open(tmp_path / "out" / "ab" / "before.tif") as x, rasterio.open(tmp_path / "out" / "ab" / "after.tif") as y:
        before, after = x.read(1), y.read(1)
    with rasterio.open(Path(src_a) / "lulc.tif") as x, rasterio.open(Path(src_b) / "lulc.tif") as y:
        np.testing.assert_array_equal(before, x.read(1)), np.testing.assert_array_equal(after, y.read(1))
    assert (before != after).any()  # two different scenes (untrained model: labels differ somewhere)
    kept = {src: (Path(src) / "lulc.tif").read_bytes() for src in (src_a, src_b)}
    s32 = compare(a, b, out=tmp_path / "out" / "ab32", stride=32, **kw)
    assert {s32["before"]["source"], s32["after"]["source"]}.isdisjoint(kept)
    for src, data in kept.items():  # the stride-64 compare's sources are unchanged
        assert (Path(src) / "lulc.tif").read_bytes() == data
        assert json.loads((Path(src) / "run.json").read_text())["parameters"]["stride"] == 64


def test_compare_reads_scenes_of_two_utm_zones_on_the_aois_grid(model13, tmp_path):
    """The same land as a scene of UTM 32N and one warped into 33N (an AOI astride 12 E, where tiles of
    both zones meet): compare, given the scenes, says their grids differ, reads each as a mosaic of it
    alone on the AOI's grid (its centre's zone, 640 m lattice), and both maps share that grid; scenes
    that already share a grid are read as they are."""
    from atlas_change.change.compare import compare, scenes_on_one_grid

    a, b = two_zone_scenes(tmp_path)
    kw = dict(aoi_bbox=",".join(map(str, TWO_ZONE_AOI)), model=model13.path, allow_untrained=True, scheduler="sync",
              runtime="graph", tta=1, cloud_mask=False, before_date="2023-06-01", after_date="2024-06-01")
    with pytest.warns(AtlasWarning, match="grids differ"), pytest.raises(AtlasError, match="no-such-model"):
        compare(a, b, out=tmp_path / "bad" / "ab", **{**kw, "model": str(tmp_path / "no-such-model")})
    assert not (tmp_path / "bad").exists()  # the mosaics it wrote before failing went too, and their folder
    with pytest.warns(AtlasWarning, match=r"grids differ \(EPSG:32632, EPSG:32633\): each is read on the AOI's grid "
                      r"instead \(EPSG:32633, 10 m"):
        s = compare(a, b, out=tmp_path / "out" / "ab", **kw)
    runs = [json.loads((Path(s[k]["source"]) / "run.json").read_text()) for k in ("before", "after")]
    assert [r["input"]["kind"] for r in runs] == ["mosaic", "mosaic"]
    assert [json.loads(Path(r["input"]["path"]).read_text())["items"] for r in runs] == [[str(a)], [str(b)]]
    assert {r["output"]["crs"] for r in runs} == {"EPSG:32633"} and runs[0]["output"]["transform"] == runs[1]["output"]["transform"]
    assert runs[0]["output"]["transform"][2] % 640 == 0 and runs[0]["output"]["transform"][5] % 640 == 0
    with rasterio.open(tmp_path / "out" / "ab" / "before.tif") as x, rasterio.open(tmp_path / "out" / "ab" / "after.tif") as y:
        assert x.crs.to_epsg() == y.crs.to_epsg() == 32633 and x.transform == y.transform
        before, after = x.read(1), y.read(1)
    cells = s["aoi_cells_ha"] / 40.96  # the AOI's cells (about 2.4 x 1.4 km; 6 of the 3 x 5 cells around it)
    assert cells >= 5 and (before > 0).sum() == (after > 0).sum() == cells and s["valid_ha"] == s["aoi_cells_ha"]
    assert (before == after)[before > 0].mean() >= 0.8  # one land, warped once and twice (measured: all agree)
    assert s["outside_scene_ha"] == 0
    same, off = tmp_path / "t32b.tif", tmp_path / "t32c.tif"
    make_scene(same, 448, 448, crs="EPSG:32632", origin=(734400.0 + 640, 4986400.0), seed=4)
    make_scene(off, 448, 448, crs="EPSG:32632", origin=(734400.0 + 320, 4986400.0), seed=4)  # half a cell off
    assert scenes_on_one_grid([str(a), [str(same)]], None, tmp_path / "m", 64) == ([str(a), [str(same)]], None)
    aoi = shapely.box(*TWO_ZONE_AOI)
    got, why = scenes_on_one_grid([str(a), [str(off), str(same)]], aoi, tmp_path / "m", 64)
    assert "(EPSG:32632, origins between cells)" in why and got[1][0].endswith(".mosaic.json") and len(got[1]) == 2
    assert scenes_on_one_grid([str(a), str(off)], aoi, tmp_path / "m", 32)[1] is None  # 320 m: one whole 32 px cell


def test_scene_folder_names_are_file_names_whatever_the_input_is_called():
    """A URL ending in '..', an id with slashes or spaces: one safe name, inside its folder, distinct."""
    from atlas_change.names import safe_name
    from atlas_change.mapping.pipeline import scene_stem

    assert scene_stem("S2A_MSIL2A_20230605.SAFE.zip") == "S2A_MSIL2A_20230605" and scene_stem("a/scene.tif") == "scene"
    for bad in ("http://h/collections/c/items/..", "http://h/items/../", "/", "..", ".hidden"):
        name = scene_stem(bad)
        assert name and "/" not in name and not name.startswith(".")
    names = {safe_name(t) for t in ("../../../../escaped_0", "/abs/escaped_0", "escaped 0", "escaped_0", "a" * 300)}
    assert len(names) == 5 and all("/" not in n and not n.startswith(".") and len(n) <= 90 for n in names)


def test_run_options_that_would_hang_or_poison_a_run_are_one_clear_error(scene, model13, monkeypatch):
    """--workers -1, --offset nan / inf, --chunk 0 and a --scheduler where nothing answers: one line each,
    at once (the scheduler after its connect timeout), never a hang or a traceback."""
    import time

    import atlas_change.mapping.cluster as cluster

    for kw, msg in (({"workers": -1}, "--workers -1"), ({"offset": float("nan")}, "--offset nan"),
                    ({"offset": float("inf")}, "--offset inf"), ({"chunk": 0}, "--chunk 0")):
        with pytest.raises(AtlasError, match=msg):
            run_classify(scene, model13, **kw)
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 2)
    t0 = time.perf_counter()
    with pytest.raises(AtlasError, match="tcp://127.0.0.1:1: no Dask scheduler answers there within 2 s"):
        run_classify(scene, model13, scheduler="tcp://127.0.0.1:1")
    assert time.perf_counter() - t0 < 20


def test_a_run_leaves_nothing_in_the_temporary_folder(scene, model13, tmp_path):
    """Dask's scratch space lives in a folder of the run's own, removed afterwards (in-process workers
    and a local cluster of processes alike)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code = ("import atlas_change\n"
            f"atlas_change.classify({str(scene)!r}, model={model13.path!r}, allow_untrained=True, runtime='graph', tta=1)\n"
            f"atlas_change.classify({str(scene)!r}, model={model13.path!r}, allow_untrained=True, runtime='graph', tta=1, "
            "workers=2)\n")
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TMPDIR": str(tmp)}, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize("workers", [None, 2])
def test_a_read_error_inside_a_chunk_is_one_line_under_every_scheduler(model13, tmp_path, workers):
    """A truncated file fails inside a Dask task: in-process workers (the default) and a local cluster
    of processes both give the one line --scheduler sync gives, exit 2, no output folder."""
    from atlas_change.synth import make_scene as mk

    whole = mk(tmp_path / "whole.tif", 512, 512, seed=1)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    cmd = [sys.executable, "-m", "atlas_change", "classify", str(cut), "--out", str(tmp_path / "out"),
           "--model", model13.path, "--allow-untrained", "--runtime", "graph", "--quiet"]
    r = subprocess.run(cmd + (["--workers", str(workers)] if workers else []), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 2 and r.stderr.splitlines() == [r.stderr.strip()], r.stderr[-3000:]
    assert r.stderr.startswith(f"atlas-change: error: {cut}: cannot read pixels") and not (tmp_path / "out").exists()


def test_a_classify_output_counts_the_same_hectares_as_compare(model13, tmp_path):
    """A 212 px scene at stride 64: the map has 4 x 4 cells, the last ones reaching past the scene; its
    GeoPackage counts the 3 x 3 whose centre lies in the scene, as compare does for the same scene."""
    from atlas_change.change.compare import compare
    from atlas_change.publish.export import export_gpkg

    scene = make_scene(tmp_path / "s.tif", 212, 212, origin=ORIGIN, seed=5, tags={"DATE": "2023-06-01"})
    run_classify(scene, model13, out=tmp_path / "map", tta=1)
    gpkg = gpd.read_file(export_gpkg(tmp_path / "map", tmp_path / "map.gpkg"), layer="cells")
    assert len(gpkg) == 9 and gpkg.hectares.sum() == pytest.approx(9 * 40.96)
    bbox = f"{ORIGIN[0]},{ORIGIN[1] - 2560},{ORIGIN[0] + 2560},{ORIGIN[1]}"
    s = compare(tmp_path / "map", tmp_path / "map", aoi_bbox=bbox, aoi_crs="EPSG:32632", after_date="2024-06-01")
    assert s["valid_ha"] == pytest.approx(gpkg.hectares.sum())
