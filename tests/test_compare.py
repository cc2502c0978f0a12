"""compare / export / view on classify outputs made in the test with known classes and confidences."""
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS

from atlas_change.assemble import build_dataset, tiles_frame, write_outputs
from atlas_change.classes import CLASSES, COLOURS
from atlas_change.compare import compare
from atlas_change.errors import AtlasError
from atlas_change.export import export_gpkg
from atlas_change.view import change_map

X0, Y0, CELL = 600000.0, 5000000.0, 640.0
UTM = CRS.from_epsg(32632)


def make_output(folder, classes, conf, sha="a" * 64, date="2023-06-01", crs=UTM, origin=(X0, Y0)):
    """A classify output folder whose cells have the given class ids and top-1 probabilities."""
    rows, cols = classes.shape
    probs = np.repeat(((1 - conf) / 9)[..., None], 10, axis=2).astype(np.float32)
    r, c = np.indices(classes.shape)
    probs[r, c, classes - 1] = conf
    has = np.ones(classes.shape, bool)
    t = Affine(CELL, 0, origin[0], 0, -CELL, origin[1])
    ds = build_dataset(probs, has, t, crs, {"model": "m", "weights_sha256": sha})
    tiles = tiles_frame(probs, has, 64, 64, Affine(10, 0, origin[0], 0, -10, origin[1]), crs)
    run = {"input": {"path": f"/data/S2A_{date}.tif", "date": date}, "model": {"model": "m", "weights_sha256": sha}}
    write_outputs(ds, tiles, run, folder)
    return folder


def aoi_file(path, row0, row1, col0, col1, crs="EPSG:4326"):
    """An AOI covering cells rows row0..row1-1, cols col0..col1-1 of the UTM grid, saved in `crs`."""
    box = shapely.box(X0 + col0 * CELL, Y0 - row1 * CELL, X0 + col1 * CELL, Y0 - row0 * CELL)
    gpd.GeoDataFrame({"name": ["aoi"]}, geometry=[box], crs=UTM).to_crs(crs).to_file(path, driver="GeoJSON")
    return path


@pytest.fixture()
def dates(tmp_path):
    before = np.full((10, 10), 1, np.int64)  # AnnualCrop everywhere
    after = before.copy()
    after[3, 4] = 8  # AnnualCrop -> Residential
    after[3, 5] = 2  # AnnualCrop -> Forest, but unsure
    conf_b = np.full((10, 10), 0.9)
    conf_a = conf_b.copy()
    conf_a[3, 5] = 0.5
    a = make_output(tmp_path / "d1", before, conf_b, date="2023-06-01")
    b = make_output(tmp_path / "d2", after, conf_a, date="2024-06-01")
    return a, b


def test_aoi_in_4326_clips_utm_cells_and_hectares(tmp_path, dates):
    aoi = aoi_file(tmp_path / "aoi.geojson", 2, 5, 3, 7)  # 3 rows x 4 cols
    out = tmp_path / "cmp"
    s = compare(*dates, aoi=str(aoi), out=out)
    with rasterio.open(out / "before.tif") as src:
        assert src.shape == (3, 4) and src.crs == UTM
        assert src.transform == Affine(CELL, 0, X0 + 3 * CELL, 0, -CELL, Y0 - 2 * CELL)
    assert s["valid_ha"] == pytest.approx(12 * 40.96)  # 12 cells of 64 x 64 at 10 m = 40.96 ha each
    assert s["changed_ha"] == pytest.approx(40.96) and s["uncertain_ha"] == pytest.approx(40.96)
    assert s["net_change_ha"]["Residential"] == pytest.approx(40.96)
    assert s["before"]["date"] == "2023-06-01" and s["after"]["weights_sha256"] == "a" * 64
    with rasterio.open(out / "change.tif") as src:
        code = src.read(1)
        assert code[1, 1] == 108 and (code != 0).sum() == 1  # row 3, col 4 of the map; [3, 5] is uncertain
        assert "from_id * 100 + to_id" in src.tags()["CHANGE_CODE"]


def test_transitions_sum_to_valid_area(tmp_path, dates):
    aoi = aoi_file(tmp_path / "aoi.geojson", 0, 10, 0, 10, crs="EPSG:32632")
    s = compare(*dates, aoi=str(aoi), out=tmp_path / "c", min_confidence=0.0)
    lines = (tmp_path / "c" / "transitions.csv").read_text().strip().splitlines()
    assert lines[0].split(",")[1:-1] == list(CLASSES)
    matrix = np.array([[float(v) for v in ln.split(",")[1:-1]] for ln in lines[1:11]])
    assert matrix.sum() == pytest.approx(s["valid_ha"]) == pytest.approx(100 * 40.96)
    assert matrix[0, 7] == pytest.approx(40.96) and matrix[0, 1] == pytest.approx(40.96)  # both changes counted
    assert s["uncertain_ha"] == 0


def test_low_confidence_excluded_from_matrix(tmp_path, dates):
    s = compare(*dates, aoi_bbox=f"{X0},{Y0 - 6400},{X0 + 6400},{Y0}", aoi_crs="EPSG:32632", out=tmp_path / "c")
    lines = (tmp_path / "c" / "transitions.csv").read_text().strip().splitlines()
    matrix = np.array([[float(v) for v in ln.split(",")[1:-1]] for ln in lines[1:11]])
    assert matrix[0, 1] == 0 and matrix.sum() == pytest.approx(99 * 40.96) and s["uncertain_ha"] == pytest.approx(40.96)


def test_model_mismatch_refused_unless_allowed(tmp_path, dates):
    other = make_output(tmp_path / "d3", np.ones((10, 10), np.int64), np.full((10, 10), 0.9), sha="b" * 64)
    aoi = aoi_file(tmp_path / "aoi.geojson", 0, 5, 0, 5)
    with pytest.raises(AtlasError, match="allow-model-mismatch"):
        compare(dates[0], other, aoi=str(aoi), out=tmp_path / "x")
    assert not (tmp_path / "x").exists()
    s = compare(dates[0], other, aoi=str(aoi), out=tmp_path / "y", allow_model_mismatch=True)
    assert s["model_mismatch"] is True
    with rasterio.open(tmp_path / "y" / "change.tif") as src:
        assert src.tags()["MODEL_MISMATCH"] == "true"


def test_crs_and_overlap_errors(tmp_path, dates):
    other = make_output(tmp_path / "d33", np.ones((10, 10), np.int64), np.full((10, 10), 0.9),
                        crs=CRS.from_epsg(32633), origin=(300000.0, Y0))
    aoi = aoi_file(tmp_path / "aoi.geojson", 0, 5, 0, 5)
    with pytest.raises(AtlasError, match="EPSG:32633 differs"):
        compare(dates[0], other, aoi=str(aoi))
    with pytest.raises(AtlasError, match="does not overlap"):
        compare(*dates, aoi_bbox="0,0,1,1")
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(AtlasError, match="bad.geojson: not a readable vector file"):
        compare(*dates, aoi=str(bad))


def test_geopackage_layers(tmp_path, dates):
    aoi = aoi_file(tmp_path / "aoi.geojson", 2, 5, 3, 7)
    compare(*dates, aoi=str(aoi), out=tmp_path / "cmp")
    gpkg = export_gpkg(tmp_path / "cmp", tmp_path / "change.gpkg")
    names = [n for n, g in pyogrio.list_layers(gpkg) if g]
    assert sorted(names) == ["aoi", "changes", "tiles_after", "tiles_before"]
    styles = pyogrio.read_dataframe(gpkg, layer="layer_styles")  # what QGIS reads as each layer's default style
    assert sorted(styles.f_table_name) == sorted(names) and styles.useAsDefault.all()
    qml = ET.fromstring(styles.set_index("f_table_name").styleQML["tiles_before"])
    cats = qml.findall("./renderer-v2/categories/category")
    assert qml.find("renderer-v2").get("attr") == "class_id" and [c.get("value") for c in cats] == [
        str(i) for i in range(1, 11)] and cats[1].get("label") == "2 Forest"
    colours = [s.find("./layer/Option/Option[@name='color']").get("value") for s in qml.findall(".//symbol")]
    assert colours == [f"{r},{g},{b},255" for r, g, b in COLOURS]
    before = gpd.read_file(gpkg, layer="tiles_before")
    assert before.crs == UTM and len(before) == 12  # tiles whose centre lies in the AOI
    ch = gpd.read_file(gpkg, layer="changes")
    assert len(ch) == 1 and (ch.from_class[0], ch.to_class[0]) == ("AnnualCrop", "Residential")
    assert ch.hectares[0] == pytest.approx(40.96) and ch.confidence_before[0] == pytest.approx(0.9)
    assert set(before.date) == {"2023-06-01"} and "p_Forest" in before.columns
    single = export_gpkg(dates[0], tmp_path / "one.gpkg")
    assert [n for n, g in pyogrio.list_layers(single) if g] == ["tiles"]
    if shutil.which("ogrinfo"):
        assert subprocess.run(["ogrinfo", "-so", "-al", str(gpkg)], capture_output=True).returncode == 0


class _Scripts(HTMLParser):
    def __init__(self):
        super().__init__()
        self.text = []

    def handle_data(self, data):
        self.text.append(data)


def test_change_map_html(tmp_path, dates):
    aoi = aoi_file(tmp_path / "aoi.geojson", 2, 5, 3, 7)
    compare(*dates, aoi=str(aoi), out=tmp_path / "cmp")
    html = change_map(tmp_path / "cmp")
    assert html == tmp_path / "cmp" / "change_map.html"
    p = _Scripts()
    p.feed(html.read_text())
    text = "".join(p.text)
    for layer in ("tiles before", "tiles after", "changes", "AOI"):
        assert f'"{layer}"' in text or f"'{layer}'" in text or layer in text
    assert all(c in text for c in CLASSES) and "atlas-legend" in html.read_text()
    assert "Residential" in text and "40.96" in text


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium not installed (apt-get install chromium)")
def test_change_map_renders_in_chromium(tmp_path, dates):
    aoi = aoi_file(tmp_path / "aoi.geojson", 2, 5, 3, 7)
    compare(*dates, aoi=str(aoi), out=tmp_path / "cmp")
    html = change_map(tmp_path / "cmp", side_by_side=True)
    side = tmp_path / "cmp" / "change_map_side_by_side.html"
    for page in (html, side):
        text = page.read_text()
        assert "<script src=" not in text and 'rel="stylesheet" href="http' not in text  # self-contained
        r = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                            "--no-first-run", f"--user-data-dir={tmp_path / 'prof'}", "--enable-logging=stderr",
                            "--v=0", "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
                           capture_output=True, text=True, timeout=120)
        assert "atlas-legend" in r.stdout and "leaflet-container" in r.stdout  # Leaflet built the map
        assert "Uncaught" not in r.stderr, r.stderr[-2000:]
