"""Hostile input and damaged outputs: each case one clear line (exit 2), nothing half-written, and
what real clients (GDAL, Chromium) see in the files."""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.crs
from affine import Affine
from rasterio.control import GroundControlPoint

import atlas_change
from atlas_change.__main__ import main
from atlas_change.change.compare import compare
from atlas_change.errors import AtlasError
from atlas_change.read import open_scene
from atlas_change.synth import make_scene
from conftest import run_classify
from test_compare import X0, Y0, _need_chromium, aoi_file, make_output

ORIGIN = (600000.0, 5000040.0)


def _one_line(capsys, *words):
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("atlas-change: error:"), err
    for w in words:
        assert w in err[0], (w, err[0])
    return err[0]


def _dom(page: Path, tmp_path: Path) -> str:
    r = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--no-first-run", f"--user-data-dir={tmp_path / 'prof'}", "--virtual-time-budget=3000",
                        "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert "leaflet-container" in r.stdout, r.stderr[-2000:]
    return r.stdout


# --- 1. script injection into the change map --------------------------------------------------------

def test_scene_path_and_dates_cannot_inject_html(tmp_path):
    _need_chromium()
    evil = 'x"><img src=x id=pwned onerror=document.title=1>_2023.tif'
    folders = []
    for name, date in (("d1", "2023-06-01"), ("d2", "2024-06-01")):
        f = make_output(tmp_path / name, np.full((10, 10), 1 if name == "d1" else 8), np.full((10, 10), 0.9), date=date)
        run = json.loads((f / "run.json").read_text())
        run["input"]["path"] = str(tmp_path / evil)  # the scene moved away: the page says "no image for ..."
        run["input"]["date"] = "<b id=pwned2>2023</b>"  # a GeoTIFF DATE tag holding HTML
        (f / "run.json").write_text(json.dumps(run))
        folders.append(f)
    aoi = aoi_file(tmp_path / "aoi.geojson", 2, 5, 3, 7)
    with pytest.raises(AtlasError, match=r"--before-date '<img.*not a date \(expected YYYY-MM-DD\)"):
        compare(*folders, aoi=str(aoi), out=tmp_path / "bad", before_date="<img src=x id=pwned3>")
    with pytest.raises(AtlasError, match="d1: no acquisition date"):  # HTML is no date: refused as undated
        compare(*folders, aoi=str(aoi), out=tmp_path / "cmp")
    summary = compare(*folders, aoi=str(aoi), out=tmp_path / "cmp", before_date="2023-06-01", after_date="2024-06-01")
    assert summary["before"]["date"] == "2023-06-01"  # never the raw HTML in summary.json
    with pytest.warns(atlas_change.errors.AtlasWarning, match="no image for"):
        page = atlas_change.change_map(tmp_path / "cmp", side_by_side=True)
    for p in (page, page.with_name("change_map_side_by_side.html")):
        dom = _dom(p, tmp_path)
        assert 'id="pwned"' not in dom and 'id="pwned2"' not in dom and "<img src=\"x\"" not in dom
    assert "&lt;img src=x id=pwned" in _dom(page, tmp_path)  # shown as text, not run


def test_metadata_dates_are_dates_or_nothing(tmp_path):
    good = make_scene(tmp_path / "a.tif", 64, 64, tags={"TIFFTAG_DATETIME": "2023:06:01 10:30:00"})
    bad = make_scene(tmp_path / "b.tif", 64, 64, tags={"DATE": "<script>alert(1)</script>"})
    assert open_scene(good).date == "2023-06-01" and open_scene(bad).date is None


# --- 2. NaN pixels are nodata ------------------------------------------------------------------------

def test_nan_pixels_are_nodata(tmp_path, model13):
    src = make_scene(tmp_path / "u.tif", 128, 128, origin=ORIGIN)
    with rasterio.open(src) as s:
        data, profile, names = s.read().astype(np.float32), s.profile, s.descriptions
    data[5, 10:20, 70:80] = np.nan  # one band's NaN in the top-right patch
    profile.update(dtype="float32", nodata=None)
    with rasterio.open(tmp_path / "f.tif", "w", **profile) as d:
        d.write(data)
        d.descriptions = names
    ds = run_classify(tmp_path / "f.tif", model13, out=tmp_path / "out")
    assert ds["lulc"].values.tolist() == [[ds["lulc"].values[0, 0], 0], ds["lulc"].values[1].tolist()]
    assert (ds["lulc"].values > 0).sum() == 3 and np.isfinite(ds["confidence"].values).sum() == 3
    assert json.loads((tmp_path / "out" / "run.json").read_text())["counts"]["skipped_nodata"] == 1


def _not_dn_10m(tmp_path: Path, case: str) -> Path:
    """A scene that opens as a raster but is not Sentinel-2 digital numbers on a 10 m metric grid."""
    if case == "20 m":
        return make_scene(tmp_path / "res20.tif", 128, 128, origin=ORIGIN, res=20.0)
    if case == "feet":  # NY State Plane, US survey feet: 32.8 ft = 10 m pixels
        return make_scene(tmp_path / "feet.tif", 128, 128, crs="EPSG:2263", origin=(1e6, 2e5), res=32.8084)
    if case == "web mercator":  # at 45 degrees north, where its metres are 0.71 m on the ground
        return make_scene(tmp_path / "merc.tif", 128, 128, crs="EPSG:3857", origin=(1e6, 5621521.0))
    src = make_scene(tmp_path / "dn.tif", 128, 128, origin=ORIGIN)
    with rasterio.open(src) as s:
        data, profile, names = s.read(), s.profile, s.descriptions
    if case == "rotated":  # a scanned or rotated export: 10 m pixels, 20 degrees off north
        profile.update(transform=profile["transform"] * Affine.rotation(20))
    elif case == "gcps":  # georeferenced by ground control points only, as un-warped products are
        gcps = [GroundControlPoint(r, c, ORIGIN[0] + 10 * c, ORIGIN[1] - 10 * r) for r in (0, 128) for c in (0, 128)]
        del profile["crs"], profile["transform"]
    if case in ("rotated", "gcps"):
        with rasterio.open(tmp_path / f"{case}.tif", "w", **profile) as d:
            d.write(data)
            d.descriptions = names
            if case == "gcps":
                d.gcps = (gcps, rasterio.crs.CRS.from_epsg(32633))
        return tmp_path / f"{case}.tif"
    if case == "8-bit":  # the EuroSAT JPEG mapping of B04, B03, B02, as a rendered image holds it
        data, names = np.clip(data[[3, 2, 1]] * 255 / 2750, 1, 255).astype(np.uint8), ("B04", "B03", "B02")
    else:  # reflectance 0-1, as Earth Engine exports scaled by 1 / 10000 hold it
        data = (data / 10000).astype(np.float32)
    profile.update(dtype=data.dtype.name, count=len(data), nodata=None)
    with rasterio.open(tmp_path / f"{case}.tif", "w", **profile) as d:
        d.write(data)
        d.descriptions = names
    return tmp_path / f"{case}.tif"


@pytest.mark.parametrize("case, words", [("20 m", ("20 x 20 m pixels", "gdalwarp -tr 10 10")),
                                         ("feet", ("US survey foot, not metres",)),
                                         ("web mercator", ("EPSG:3857", "stretches areas 2x", "7.07 m on the ground")),
                                         ("8-bit", ("8-bit pixels", "not Sentinel-2 digital numbers")),
                                         ("reflectance", ("pixels are reflectance", "A*10000")),
                                         ("rotated", ("rotated", "gdalwarp -t_srs EPSG:")),
                                         ("gcps", ("4 ground control points only", "gdalwarp"))])
def test_rasters_that_are_not_10_m_digital_numbers_are_one_line(tmp_path, capsys, model13, case, words):
    """Each was labelled before without a word (by the shipped model: the 8-bit and reflectance scenes
    all SeaLake; the 20 m one at twice EuroSAT's scale; the feet one with 10.8 times its hectares, the
    Web Mercator one with twice its hectares); the rotated and GCP ones were refused, without the gdalwarp
    that helps."""
    scene = _not_dn_10m(tmp_path, case)
    assert main(["classify", str(scene), "--model", model13.path, "--out", str(tmp_path / "o"), "--allow-untrained",
                 "--quiet"]) == 2
    _one_line(capsys, scene.name, *words)
    assert not (tmp_path / "o").exists()


# --- 3. the model stamp is cross-checked -------------------------------------------------------------

def test_run_json_edited_to_pass_for_another_model_is_refused(tmp_path):
    folders = [make_output(tmp_path / n, np.full((10, 10), 1), np.full((10, 10), 0.9)) for n in ("d1", "d2")]
    for f in folders:
        run = json.loads((f / "run.json").read_text())
        run["model"].update(model="other", weights_sha256="b" * 64)
        (f / "run.json").write_text(json.dumps(run))
    with pytest.raises(AtlasError, match=r"d1/run\.json: names model other \(bbbbbbbbbbbb\) but lulc\.tif is stamped m"):
        compare(*folders, aoi=str(aoi_file(tmp_path / "aoi.geojson", 2, 5, 3, 7)), out=tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()


# --- 4. two threads classifying at once ---------------------------------------------------------------

def test_two_threads_classify_at_once(tmp_path, model13):
    scene = make_scene(tmp_path / "s.tif", 128, 128)
    errors, labels = [], []

    def work():
        try:
            labels.append(atlas_change.classify(scene, model=model13.path, allow_untrained=True, runtime="graph",
                                                tta=1)["lulc"].values)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    import dask

    before = dask.config.get("scheduler", None)
    for _ in range(6):  # each round starts two in-process Dask clusters at the same moment
        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert not errors and len(labels) == 12 and all((lab == labels[0]).all() for lab in labels)
    # the process's own dask code still runs: no closed client left as its default scheduler
    assert dask.config.get("scheduler", None) == before
    assert int(dask.array.ones(4, chunks=2).sum().compute()) == 4


# --- 5. damaged zips ----------------------------------------------------------------------------------

def test_damaged_zips_are_one_line(tmp_path, capsys):
    from test_safe import make_safe

    safe = make_safe(tmp_path / "f")
    good = Path(shutil.make_archive(str(tmp_path / "p"), "zip", safe.parent, safe.name))
    raw = good.read_bytes()
    with zipfile.ZipFile(good) as z:
        mtd = next(i for i in z.infolist() if i.filename.endswith("MTD_MSIL2A.xml"))
        start = mtd.header_offset + 30 + len(mtd.filename) + len(mtd.extra)
    cases = {"directory.zip": raw[:-30],  # end of the central directory cut off
             "mtd.zip": raw[:start + 5] + bytes(b ^ 0x5A for b in raw[start + 5:start + 40]) + raw[start + 40:]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert main(["classify", str(tmp_path / name), "--out", str(tmp_path / "o"), "--quiet"]) == 2
        _one_line(capsys, name, "zip")
    assert not (tmp_path / "o").exists()


# --- 6. damaged classify outputs -----------------------------------------------------------------------

@pytest.mark.parametrize("damage,words", [
    ("run.json empty object", ("run.json", "incomplete", "'input.path'")),
    ("run.json garbage", ("run.json", "unreadable")),
    ("lulc.tif truncated", ("lulc.tif", "damaged")),
    ("lulc.tif missing", ("lulc.tif", "missing")),
])
def test_damaged_classify_outputs_are_named(tmp_path, capsys, damage, words):
    folders = [make_output(tmp_path / n, np.full((10, 10), 1), np.full((10, 10), 0.9)) for n in ("d1", "d2")]
    target = folders[1] / damage.split()[0]
    if damage == "run.json empty object":
        target.write_text("{}")
    elif damage == "run.json garbage":
        target.write_bytes(b"\x00\xff{not json")
    elif damage == "lulc.tif truncated":
        target.write_bytes(target.read_bytes()[:300])
    else:
        target.unlink()
    aoi = aoi_file(tmp_path / "aoi.geojson", 2, 5, 3, 7)
    assert main(["compare", str(folders[0]), str(folders[1]), "--aoi", str(aoi), "--out", str(tmp_path / "c")]) == 2
    line = _one_line(capsys, *words)
    assert "SAFE" not in line and not (tmp_path / "c").exists()
    if damage != "lulc.tif missing":
        assert main(["view", str(folders[1])]) == 2
        _one_line(capsys, *words)


# --- 7. a full disk: the file being written is named, GDAL's own lines stay out --------------------------

def _fsize_limited(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_names_the_file_and_prints_nothing_raw(tmp_path, model13):
    scene = make_scene(tmp_path / "s.tif", 512, 512, origin=ORIGIN, block=128)
    assert main(["classify", str(scene), "--model", model13.path, "--out", str(tmp_path / "ok"), "--allow-untrained",
                 "--scheduler", "sync", "--quiet", "--runtime", "graph"]) == 0
    # small chunks (their files fit under the limit): the first output file to pass it is the one named
    outputs = [tmp_path / "full" / f for f in ("lulc.tif", "confidence.tif", "cloud.tif", "cells.parquet")]
    cases = [(["classify", str(scene), "--model", model13.path, "--out", str(tmp_path / "full"), "--allow-untrained",
               "--scheduler", "sync", "--quiet", "--runtime", "graph", "--tta", "1", "--chunk", "128"], 3000, outputs),
             (["view", str(tmp_path / "ok")], 20000, [tmp_path / "ok" / "change_map.html"])]
    for args, limit, files in cases:
        r = subprocess.run([sys.executable, "-m", "atlas_change", *args], capture_output=True, text=True,
                           preexec_fn=_fsize_limited(limit), env={**os.environ, "ATLAS_CACHE": str(tmp_path / "c")})
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
        assert any(f"{f}: " in lines[0] for f in files) and "File too large" in lines[0] and "TIFF" not in lines[0], \
            lines[0]
    assert not (tmp_path / "full").exists() and not (tmp_path / "ok" / "change_map.html").exists()
    assert not [p for p in tmp_path.rglob("*tmp*")]


# --- 9. an enormous, empty sparse GeoTIFF ----------------------------------------------------------------

def test_sparse_geotiff_blocks_are_checked_before_work(tmp_path, model13, capsys):
    from rasterio.windows import Window

    profile = dict(driver="GTiff", width=40000, height=40000, count=13, dtype="uint16", crs="EPSG:32632",
                   transform=Affine(10, 0, X0, 0, -10, Y0), nodata=0, tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate", sparse_ok=True, BIGTIFF="YES")
    with rasterio.open(tmp_path / "empty.tif", "w", **profile) as d:
        d.descriptions = open_scene(make_scene(tmp_path / "ref.tif", 64, 64)).bands
    assert main(["classify", str(tmp_path / "empty.tif"), "--model", model13.path, "--out", str(tmp_path / "o"),
                 "--allow-untrained", "--quiet", "--max-pixels", "2000000000"]) == 2
    _one_line(capsys, "empty.tif", "all nodata", "stores no pixel block")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.tif", "ref.tif"]  # no output, chunk store, staging

    profile.update(width=4096, height=4096)  # one block of data in a sparse file: only its part is mapped
    with rasterio.open(make_scene(tmp_path / "ref2.tif", 256, 256, origin=(X0, Y0), block=256)) as ref:
        block, descriptions = ref.read(), ref.descriptions
    with rasterio.open(tmp_path / "one.tif", "w", **profile) as d:
        d.descriptions = descriptions
        d.write(block, window=Window(1024, 2048, 256, 256))
    ds = run_classify(tmp_path / "one.tif", model13, out=tmp_path / "one", tta=1)
    run = json.loads((tmp_path / "one" / "run.json").read_text())
    assert run["parameters"]["stored_window"] == [1024, 2048, 256, 256] and run["counts"]["chunks"] == 1
    assert run["counts"]["classified"] == 16 and (ds["lulc"].values > 0).all() and ds["lulc"].shape == (4, 4)
    with rasterio.open(tmp_path / "one" / "lulc.tif") as src:  # georeferenced where the block lies
        assert src.transform.c == X0 + 1024 * 10 and src.transform.f == Y0 - 2048 * 10

    # a striped sparse file (one strip a pixel row, as GDAL writes untiled files): each strip is asked
    # once (it spans every chunk of its row), and only the rows of stored strips are mapped and read
    profile.update(tiled=False, interleave="band", width=8192)  # wider than 4096: chunks of 1024 x 1024
    profile.pop("blockxsize"), profile.pop("blockysize")
    with rasterio.open(tmp_path / "strips.tif", "w", **profile) as d:
        d.descriptions = descriptions
        d.write(np.tile(block, (1, 1, 32)), window=Window(0, 2048, 8192, 256))
    with rasterio.open(tmp_path / "strips.tif") as src:
        assert src.block_shapes[0] == (1, 8192)
    ds = run_classify(tmp_path / "strips.tif", model13, out=tmp_path / "strips", tta=1)
    run = json.loads((tmp_path / "strips" / "run.json").read_text())
    assert run["parameters"]["stored_window"] == [0, 2048, 8192, 256] and run["counts"]["chunks"] == 8
    assert ds["lulc"].shape == (4, 128) and (ds["lulc"].values > 0).all()


# --- 10, 11. what a GIS client reads in the rasters alone ------------------------------------------------

def test_rasters_alone_carry_their_palette_and_cloud_codes(tmp_path, model13):
    scene = make_scene(tmp_path / "s.tif", 256, 192, origin=ORIGIN, nodata_border=0)
    run_classify(scene, model13, out=tmp_path / "o", tta=1)
    alone = tmp_path / "alone"
    alone.mkdir()
    for name in ("lulc.tif", "cloud.tif"):  # copied or served without the sidecars
        shutil.copy(tmp_path / "o" / name, alone / name)
    with rasterio.open(alone / "lulc.tif") as src:
        assert src.colormap(1)[2][:3] == (20, 110, 40) and src.colormap(1)[8][:3] == (220, 40, 40)
    with rasterio.open(alone / "cloud.tif") as src:
        assert src.nodata == 0 and set(np.unique(src.read(1)).tolist()) == {1}  # clear date: all "clear"
        assert "CLOUD_CODES" in src.tags()
    if shutil.which("gdalinfo"):
        info = subprocess.run(["gdalinfo", "-stats", str(alone / "cloud.tif")], capture_output=True, text=True)
        assert "no valid pixels" not in (info.stdout + info.stderr).lower() and "STATISTICS_MEAN=1" in info.stdout
        lulc = subprocess.run(["gdalinfo", str(alone / "lulc.tif")], capture_output=True, text=True).stdout
        assert "Color Table" in lulc and "2: 20,110,40" in lulc


ITEM = {"type": "Feature", "stac_version": "1.0.0", "id": "x", "bbox": [9, 45, 9.1, 45.1],
        "geometry": {"type": "Polygon", "coordinates": [[[9, 45], [9.1, 45], [9.1, 45.1], [9, 45.1], [9, 45]]]},
        "properties": {"datetime": "2023-06-01T10:00:00Z", "eo:cloud_cover": 5},
        "assets": {"red": {"href": "B04.tif", "eo:bands": [{"name": "B04"}]}}}


@pytest.mark.parametrize("damage,words", [
    (lambda d: d["assets"].__setitem__("red", "http://x"), "asset 'red' is not an object"),
    (lambda d: d["assets"].__setitem__("red", None), "asset 'red' is not an object"),
    (lambda d: d["assets"]["red"].__setitem__("eo:bands", ["B04"]), "eo:bands is not a list of objects"),
    (lambda d: d["assets"]["red"].__setitem__("raster:bands", "x"), "raster:bands is not a list of objects"),
    (lambda d: d["assets"]["red"].__setitem__("href", 5), "href is not a string"),
    (lambda d: d.__setitem__("properties", [1, 2]), "properties is not an object"),
    (lambda d: d["properties"].__setitem__("eo:cloud_cover", "cloudy"), "eo:cloud_cover is not a number"),
    (lambda d: d["properties"].__setitem__("datetime", 5), "datetime is not a date-time string"),
    (lambda d: d.__setitem__("nested", json.loads("[" * 900 + "]" * 900)), None),
])
def test_malformed_items_are_one_line_each(tmp_path, damage, words, capsys):
    """Each malformed Item: exit 2 and one line naming the file and what is wrong with it."""
    import copy

    from atlas_change.__main__ import main

    doc = copy.deepcopy(ITEM)
    damage(doc)
    f = tmp_path / "item.json"
    text = json.dumps(doc) if words else json.dumps(doc)[:-1] + ', "deep": ' + "[" * 200_000 + "]" * 200_000 + "}"
    f.write_text(text)
    assert main(["classify", str(f), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"atlas-change: error: {f}: "), err
    assert (words or "not a readable STAC Item") in err[0] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("items,words", [
    (["self.mosaic.json"], "its item {d}/self.mosaic.json is a mosaic file; name that mosaic's items instead"),
    ([], "not a mosaic file"),
    ("x", "not a mosaic file"),
    (["none.tif"], "{d}/none.tif: no such file or folder"),
])
def test_malformed_mosaic_files_are_one_line_each(tmp_path, capsys, items, words):
    """A mosaic file naming itself, no items, or a missing scene: exit 2, one line, nothing written."""
    from atlas_change.__main__ import main

    f = tmp_path / "self.mosaic.json"
    f.write_text(json.dumps({"type": "atlas-change-mosaic", "date": None, "items": items, "crs": "EPSG:32632",
                             "transform": [10, 0, 600000, 0, -10, 5000000], "width": 64, "height": 64}))
    assert main(["classify", str(f), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words.format(d=tmp_path) in err[0] and not (tmp_path / "out").exists(), err


def test_an_aoi_with_a_nan_coordinate_is_one_line(tmp_path, capsys):
    from atlas_change.__main__ import main

    aoi = tmp_path / "aoi.geojson"
    aoi.write_text('{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},"geometry":{"type":'
                   '"Polygon","coordinates":[[[9,45],[9.1,NaN],[9.1,45.1],[9,45.1],[9,45]]]}}]}')
    assert main(["compare", "a", "b", "--aoi", str(aoi), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"atlas-change: error: {aoi}: the AOI has a coordinate that is not a number (NaN or infinite)"]


def test_an_aoi_in_metres_read_as_degrees_is_one_line(tmp_path, capsys):
    """A GeoJSON without a CRS is WGS 84 (RFC 7946): UTM coordinates in one crashed classify with a
    traceback; a bbox in metres without --aoi-crs likewise."""
    aoi = tmp_path / "utm.geojson"
    aoi.write_text('{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},"geometry":{"type":'
                   '"Polygon","coordinates":[[[600100,4999000],[601000,4999000],[601000,4999900],[600100,4999000]]]}}]}')
    scene = make_scene(tmp_path / "s.tif", 128, 128, origin=ORIGIN)
    for where in (["--aoi", str(aoi)], ["--aoi-bbox", "600100,4999000,601000,4999900"]):
        assert main(["classify", str(scene), *where, "--out", str(tmp_path / "o"), "--quiet"]) == 2
        line = _one_line(capsys, ", 4999000) is not a longitude / latitude in EPSG:4326")
        assert ("RFC 7946" in line) if where[0] == "--aoi" else ("--aoi-crs" in line)
    assert main(["compare", "a", "b", "--aoi", str(aoi), "--out", str(tmp_path / "c")]) == 2
    _one_line(capsys, "utm.geojson", "RFC 7946")
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()


def test_a_feature_collection_given_as_a_scene_is_one_line(tmp_path, capsys):
    """A saved STAC search (or an AOI) passed where one Item is taken: it was tried as a raster."""
    fc = tmp_path / "search.json"
    fc.write_text('{"type":"FeatureCollection","features":[{"type":"Feature","stac_version":"1.0.0","id":"a",'
                  '"assets":{"red":{"href":"red.tif"}}},{"type":"Feature","id":"b","assets":{}}]}')
    assert main(["classify", str(fc), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    _one_line(capsys, "search.json: a FeatureCollection of 2 feature(s)", "pass one Item's JSON or URL")
    assert not (tmp_path / "o").exists()


def test_an_aoi_of_millions_of_vertices_is_kept_readable_for_the_map(tmp_path):
    """aoi.geojson of an AOI beyond MAX_AOI_VERTICES is simplified to a tenth of a cell, so GDAL, the
    GeoPackage and the map read it; the areas come from the full AOI."""
    import geopandas as gpd
    import shapely

    from atlas_change.change.compare import display_aoi

    a = np.linspace(0, 2 * np.pi, 250_000, endpoint=False)
    ring = shapely.Polygon(np.c_[600000 + 5000 * np.cos(a), 5000000 + 5000 * np.sin(a)])  # 250,000 vertices
    gdf = gpd.GeoDataFrame({"name": ["big"]}, geometry=[ring], crs="EPSG:32632")
    small = display_aoi(gdf, 640.0)
    assert len(shapely.get_coordinates(small.geometry.values)) < 10_000 and small["name"].tolist() == ["big"]
    assert abs(small.area.sum() - gdf.area.sum()) < 0.01 * gdf.area.sum()  # a drawing of it, within 1 %
    assert display_aoi(gdf.iloc[:0], 640.0).empty


NATURAL13 = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")


@pytest.mark.parametrize("order", [NATURAL13, tuple(b for b in NATURAL13 if b != "B10")], ids=["13 bands", "12 bands"])
def test_unnamed_bands_in_the_natural_order_are_refused_not_misread(tmp_path, capsys, order):
    """A file of 13 (12) unnamed bands is read in EuroSAT's order (B8A last); one stacked in the
    natural order (B8A after B08) was read with B10 as B11 before, so clouds came out as snow (the real
    eo-learn scene: tests/test_cloud.py). Its pixels tell (B8A follows B08 closely): one line naming
    --bands; named, it is read; EuroSAT's own order is read as before."""
    scene = make_scene(tmp_path / "natural.tif", 768, 768, origin=ORIGIN, bands=order, descriptions=False)
    assert main(["classify", str(scene), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    _one_line(capsys, "natural.tif", "band 9 is B8A", "--bands " + ",".join(order))
    assert not (tmp_path / "o").exists()
    assert open_scene(str(scene), ("B04", "B03", "B02"), bands=",".join(order)).bands == ("B04", "B03", "B02")
    eurosat = tuple(b for b in order if b != "B8A") + ("B8A",)
    plain = make_scene(tmp_path / "eurosat.tif", 768, 768, origin=ORIGIN, bands=eurosat, descriptions=False)
    assert open_scene(str(plain), ("B04", "B03", "B02")).bands == ("B04", "B03", "B02")
