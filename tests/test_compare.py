"""compare / export / view on classify outputs made in the test with known classes and confidences."""
import json
import warnings
import os
import shutil
import subprocess
import sys
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

from atlas_change.outputs import build_dataset, write_outputs
from atlas_change.classes import CLASSES, COLOURS, GROUP_NAMES
from atlas_change.__main__ import main
from atlas_change.change.compare import compare
from atlas_change.errors import AtlasError, AtlasWarning
from atlas_change.publish.export import export_gpkg
from atlas_change.publish.view import change_map

X0, Y0, CELL = 600000.0, 5000000.0, 640.0
UTM = CRS.from_epsg(32632)


def make_output(folder, classes, conf, sha="a" * 64, date="2023-06-01", crs=UTM, origin=(X0, Y0), cloud=None,
                scene_px=None, stay=None):
    """A classify output folder whose cells have the given class ids and top-1 probabilities (and
    cloud where `cloud`, a cell mask, says so: unlabelled there); `scene_px`: the classified scene's
    width = height in 10 m pixels, as run.json records it (the last cells may reach past it); `stay`: the
    change prior its model's card carried."""
    rows, cols = classes.shape
    probs = np.repeat(((1 - conf) / 9)[..., None], 10, axis=2).astype(np.float32)
    r, c = np.indices(classes.shape)
    probs[r, c, classes - 1] = conf
    has = np.ones(classes.shape, bool) if cloud is None else ~cloud
    t = Affine(CELL, 0, origin[0], 0, -CELL, origin[1])
    ds = build_dataset(probs, has, t, crs, {"model": "m", "weights_sha256": sha}, cloud)
    run = {"input": {"path": f"/data/S2A_{date}.tif", "date": date}, "model": {"model": "m", "weights_sha256": sha}}
    if stay is not None:
        run["model"]["change_prior_stay"] = stay
    if scene_px:
        run["input"].update(width=scene_px, height=scene_px)
        run["parameters"] = {"stride": 64}
    write_outputs(ds, run, folder)
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
    # the changed cell's 4 sides, each with a band half a cell wide: how far the figure moves with the grid
    assert s["grid_tolerance"]["changed_ha"] == pytest.approx(4 * 40.96 / 2)
    assert s["grid_tolerance"]["uncertain_ha"] == pytest.approx(4 * 40.96 / 2)  # the one uncertain cell likewise
    assert s["before"]["date"] == "2023-06-01" and s["after"]["weights_sha256"] == "a" * 64
    with rasterio.open(out / "change.tif") as src:
        code = src.read(1)
        assert code[1, 1] == 108 and (code != 0).sum() == 1  # row 3, col 4 of the map; [3, 5] is uncertain
        assert "from_id * 100 + to_id" in src.tags()["CHANGE_CODE"]


@pytest.mark.parametrize("scene_px, cells", [(64 * 3 + 20, 3), (64 * 3 + 37, 4)])
def test_cells_count_where_their_centre_lies_in_the_scene(tmp_path, scene_px, cells):
    """A map's last row and column of cells reach past the scene's edge: compare counts them only
    where their centre lies inside it (one area definition, unbiased for any scene size)."""
    before, after = np.full((4, 4), 1), np.full((4, 4), 1)
    after[3, 3] = after[0, 0] = 8
    a, b = (make_output(tmp_path / n, c, np.full((4, 4), 0.9), date=d, scene_px=scene_px)
            for n, c, d in (("d1", before, "2023-06-01"), ("d2", after, "2024-06-01")))
    bbox = f"{X0},{Y0 - 4 * CELL},{X0 + 4 * CELL},{Y0}"
    s = compare(a, b, aoi_bbox=bbox, aoi_crs="EPSG:32632", out=tmp_path / "cmp")
    assert s["valid_ha"] == pytest.approx(cells * cells * 40.96)
    assert s["nodata_ha"] == pytest.approx((16 - cells * cells) * 40.96)
    assert s["changed_ha"] == pytest.approx(40.96 * (1 + (cells == 4)))  # (3, 3) only when inside
    with rasterio.open(tmp_path / "cmp" / "before.tif") as src:
        assert (src.read(1) > 0).sum() == cells * cells


def _table(path):
    import pandas as pd

    return pd.read_csv(path, index_col=0)


@pytest.mark.parametrize("min_conf", [0.5, 0.6])
def test_transitions_sum_to_their_totals_and_the_summary(tmp_path, dates, min_conf):
    """transitions.csv as pandas reads it: every row and column of the confident matrix plus its
    uncertain cells sums to its total, the totals to valid_ha; the same for the groups' table."""
    aoi = aoi_file(tmp_path / "aoi.geojson", 0, 10, 0, 10, crs="EPSG:32632")
    s = compare(*dates, aoi=str(aoi), out=tmp_path / "c", min_confidence=min_conf)
    for name, labels in (("transitions.csv", list(CLASSES)), ("transitions_groups.csv", list(GROUP_NAMES))):
        t = _table(tmp_path / "c" / name)
        assert list(t.columns) == [*labels, "uncertain_ha", "total_before_ha"]
        assert list(t.index) == [*labels, "uncertain_ha", "total_after_ha"]
        m = t.loc[labels, labels]
        np.testing.assert_allclose(m.sum(axis=1) + t.loc[labels, "uncertain_ha"], t.loc[labels, "total_before_ha"])
        np.testing.assert_allclose(m.sum(axis=0) + t.loc["uncertain_ha", labels], t.loc["total_after_ha", labels])
        assert t.loc[labels, "total_before_ha"].sum() == pytest.approx(s["valid_ha"]) == pytest.approx(100 * 40.96)
        assert t.loc["total_after_ha", "total_before_ha"] == pytest.approx(s["valid_ha"])
        assert t.loc["uncertain_ha", "uncertain_ha"] == pytest.approx(s["uncertain_ha"])
        off = m.to_numpy().sum() - np.trace(m.to_numpy())
        assert off == pytest.approx(s["changed_ha"] if name == "transitions.csv" else s["conversion_ha"])
    t = _table(tmp_path / "c" / "transitions.csv")
    assert t.loc["AnnualCrop", "Residential"] == pytest.approx(40.96)  # confident on both dates
    # AnnualCrop 0.9 -> Forest 0.5: P(change) 0.53, decided at 0.5, uncertain at 0.6
    assert t.loc["AnnualCrop", "Forest"] == pytest.approx(0 if min_conf > 0.5 else 40.96)
    assert s["uncertain_ha"] == pytest.approx(40.96 if min_conf > 0.5 else 0)
    assert s["groups"]["artificial"]["net_change_ha"] == pytest.approx(40.96)
    assert s["group_conversions_ha"]["agricultural -> artificial"] == pytest.approx(40.96)
    assert s["within_group_change_ha"] == 0 and s["classes"]["AnnualCrop"]["before_ha"] == pytest.approx(4096)


def test_dates_undated_refused_seasons_warned(tmp_path, dates):
    """A map without an acquisition date is refused unless the date is given; dates more than 45
    days of the year apart are compared with a warning naming both."""
    run_json = dates[1] / "run.json"
    run = json.loads(run_json.read_text())
    run_json.write_text(json.dumps({**run, "input": {**run["input"], "date": None}}))
    aoi = aoi_file(tmp_path / "aoi.geojson", 0, 5, 0, 5)
    with pytest.raises(AtlasError, match="d2: no acquisition date .* --after-date"):
        compare(*dates, aoi=str(aoi), out=tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.warns(AtlasWarning, match="2024-09-01 is 93 days of the year from 2023-06-01"):
        s = compare(*dates, aoi=str(aoi), after_date="2024-09-01")
    assert s["days_of_year_apart"] == 93  # 2024 is a leap year
    import warnings as w

    with w.catch_warnings():
        w.simplefilter("error", AtlasWarning)  # same season (Dec -> Jan wraps round the year): no warning
        compare(*dates, aoi=str(aoi), before_date="2023-12-20", after_date="2024-01-20")


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


def test_dates_classified_with_different_tta_are_flagged(tmp_path, dates):
    """Two dates made with different --tta: compare says so (a warning naming both) and records each."""
    run_json = dates[1] / "run.json"
    run = json.loads(run_json.read_text())
    run_json.write_text(json.dumps({**run, "parameters": {"tta_views": 4}}))
    aoi = aoi_file(tmp_path / "aoi.geojson", 0, 5, 0, 5)
    with pytest.warns(AtlasWarning, match="--tta 4 but .* with --tta 1"):
        s = compare(*dates, aoi=str(aoi), out=tmp_path / "x")
    assert (s["before"]["tta_views"], s["after"]["tta_views"]) == (1, 4)
    run_json.write_text(json.dumps(run))


def test_dates_with_different_cell_calibration_are_flagged(tmp_path, dates):
    """A date made before its model's per-stride cell temperature existed (or after a recalibration):
    compare names both temperatures and records each side's; a period mixing them is refused."""
    run_json = dates[1] / "run.json"
    run = json.loads(run_json.read_text())
    run_json.write_text(json.dumps({**run, "model": {**run["model"], "temperature": 0.92, "cell_temperature": 2.04}}))
    aoi = aoi_file(tmp_path / "aoi.geojson", 0, 5, 0, 5)
    with pytest.warns(AtlasWarning, match=r"temperatures 0.92 \(patches\) and 2.04 \(cells\) but .* with 1 and 1"):
        s = compare(*dates, aoi=str(aoi), out=tmp_path / "x")
    assert (s["before"]["temperatures"], s["after"]["temperatures"]) == ({"patch": 1.0, "cell": 1.0},
                                                                          {"patch": 0.92, "cell": 2.04})
    with pytest.raises(AtlasError, match="temperatures 0.92 / 2.04"):
        compare([dates[0], dates[1]], dates[1], aoi=str(aoi), before_date=["2023-06-01", "2023-07-01"],
                after_date=["2024-06-01"])
    run_json.write_text(json.dumps(run))


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
    s = compare(*dates, aoi=str(aoi), out=tmp_path / "cmp")
    gpkg = export_gpkg(tmp_path / "cmp", tmp_path / "change.gpkg")
    names = [n for n, g in pyogrio.list_layers(gpkg) if g]
    assert sorted(names) == ["aoi", "cells_after", "cells_before", "changes"]
    styles = pyogrio.read_dataframe(gpkg, layer="layer_styles")  # what QGIS reads as each layer's default style
    assert sorted(styles.f_table_name) == sorted(names) and styles.useAsDefault.all()
    qml = ET.fromstring(styles.set_index("f_table_name").styleQML["cells_before"])
    cats = qml.findall("./renderer-v2/categories/category")
    assert qml.find("renderer-v2").get("attr") == "class_id" and [c.get("value") for c in cats] == [
        str(i) for i in range(1, 11)] and cats[1].get("label") == "2 Forest"
    colours = [s.find("./layer/Option/Option[@name='color']").get("value") for s in qml.findall(".//symbol")]
    assert colours == [f"{r},{g},{b},255" for r, g, b in COLOURS]
    before = gpd.read_file(gpkg, layer="cells_before")
    assert before.crs == UTM and len(before) == 12  # the map cells whose centre lies in the AOI
    assert not before.geometry.union_all().area < before.geometry.area.sum() - 1  # no overlap
    assert before.hectares.sum() == pytest.approx(s["valid_ha"])
    ch = gpd.read_file(gpkg, layer="changes")
    assert len(ch) == 1 and (ch.from_class[0], ch.to_class[0]) == ("AnnualCrop", "Residential")
    assert ch.hectares[0] == pytest.approx(40.96) and ch.confidence_before[0] == pytest.approx(0.81, abs=0.01)
    assert ch.p_change[0] == pytest.approx(0.776, abs=0.01) and ch.p_conversion[0] <= ch.p_change[0]
    assert ch.change_prior_stay[0] == pytest.approx(s["change_decision"]["stay"])  # the prior that decided
    assert {d.date().isoformat() for d in before.date} == {"2023-06-01"} and set(before.group) == {"agricultural"}
    assert (ch.from_group[0], ch.to_group[0], ch.kind[0]) == ("agricultural", "artificial", "conversion")
    assert gpd.read_file(gpkg, layer="aoi")["name"].tolist() == ["aoi"]  # the AOI's own attributes travel
    if shutil.which("ogrinfo"):  # a date field, not text
        info = subprocess.run(["ogrinfo", "-so", str(gpkg), "cells_before"], capture_output=True, text=True).stdout
        assert "date: Date" in info
    single = export_gpkg(dates[0], tmp_path / "one.gpkg")
    assert [n for n, g in pyogrio.list_layers(single) if g] == ["cells"]
    if shutil.which("ogrinfo"):
        assert subprocess.run(["ogrinfo", "-so", "-al", str(gpkg)], capture_output=True).returncode == 0


def _gpkg_schema(gpkg):
    import sqlite3

    with sqlite3.connect(gpkg) as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        app = db.execute("PRAGMA application_id").fetchone()[0]
        geom_cols = dict(db.execute("SELECT table_name, column_name FROM gpkg_geometry_columns"))
        style_cols = dict(db.execute("SELECT f_table_name, f_geometry_column FROM layer_styles"))
        last = [r[0] for r in db.execute("SELECT last_change FROM gpkg_contents")]
        types = {t: {r[1]: r[2] for r in db.execute(f"PRAGMA table_info({t})")} for t in geom_cols}
    return version, app, geom_cols, style_cols, last, types


@pytest.mark.parametrize("changed", [True, False])
def test_geopackage_is_1_2_styles_name_the_geometry_column_types_fixed(tmp_path, dates, changed):
    """What QGIS needs to apply the styles (the style row names the layer's real geometry column),
    GeoPackage 1.2, and column types that do not depend on the data (no change -> still INTEGER/TEXT)."""
    import re

    before, after = dates if changed else (dates[0], dates[0])
    aoi = aoi_file(tmp_path / "aoi.geojson", 2, 5, 3, 7)
    compare(before, after, aoi=str(aoi), out=tmp_path / "cmp")
    version, app, geom_cols, style_cols, last, types = _gpkg_schema(export_gpkg(tmp_path / "cmp", tmp_path / "c.gpkg"))
    assert app == 0x47504B47 and version == 10200  # 'GPKG', version 1.2.0
    assert style_cols == geom_cols and set(geom_cols.values()) == {"geom"}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z", t) for t in last), last
    ints = ("INTEGER", "MEDIUMINT", "SMALLINT", "TINYINT")
    ch = types["changes"]
    assert ch["from_id"] in ints and ch["to_id"] in ints and (ch["from_class"], ch["to_class"]) == ("TEXT", "TEXT")
    assert ch["hectares"] == "REAL" and types["cells_before"]["class_id"] in ints


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
    for layer in ("classes 2023-06-01", "classes 2024-06-01", "changes", "AOI"):
        assert layer in text
    assert all(c in text for c in CLASSES) and "atlas-legend" in html.read_text()
    assert "Residential" in text and "40.96" in text
    # the popup of the one confident change: both dates' top-3 probabilities
    assert "top-3 2023-06-01" in text and "AnnualCrop 0.90" in text and "Residential 0.90" in text
    # the scenes of make_output do not exist: the page says so instead of showing their images
    assert "no image for 2023-06-01: /data/S2A_2023-06-01.tif: no such file or folder" in text
    # the header gives every hectare figure; the uncertain cell (confidence 0.5) is drawn, hatched
    assert "40.96 ha changed (40.96 ha between land-cover groups), 40.96 ha uncertain" in text
    assert "keep the class with probability 0.6 (the project's default)" in text  # the prior that decided
    assert '"uncertain"' in html.read_text() and "uncertain (no change counted)" in text
    page = html.read_text()
    assert "#00ff00" in page and "#ff00ff" not in page  # change outlines in lime, no class's colour
    assert 'id="atlas-chart"' in page and "Residential 2024-06-01: 40.96 ha" in text  # area chart, per date
    assert "bottom:56px" in page  # the legend sits above Leaflet's scale bar (bottom left)


def _need_chromium():
    """Skip without Chromium, except under CI=true, where .ci/run installs it: there it must run."""
    if not shutil.which("chromium"):
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed; .ci/run must install Debian's chromium package")
        pytest.skip("chromium not installed (apt-get install chromium)")


def test_change_map_renders_in_chromium(tmp_path, dates):
    _need_chromium()
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


def test_categorical_rasters_carry_their_legend_and_mode_overviews(tmp_path):
    """change.tif (uint16 codes) and lulc.tif (uint8 ids): overviews hold only full-resolution values,
    a .qml with one labelled entry per value present, a RAT in the .aux.xml, nodata 0."""
    from atlas_change.outputs import change_categories, class_categories, write_cog

    rng = np.random.default_rng(0)
    codes = np.array([0, 108, 207, 301, 1002])
    t = Affine(10, 0, X0, 0, -10, Y0)
    for name, arr, cats in (("change", codes[rng.integers(0, 5, (1100, 1100))].astype(np.uint16), change_categories()),
                            ("lulc", rng.choice([0, 1, 2, 8], (1100, 1100)).astype(np.uint8), class_categories())):
        path = tmp_path / f"{name}.tif"
        write_cog(path, arr, t, UTM, 0, {}, "x", cats)
        values = set(np.unique(arr).tolist())
        with rasterio.open(path) as src:
            assert src.nodata == 0 and src.overviews(1)
            cmap = src.colormap(1)  # the palette stops at the largest value present; 0 and absent values transparent
            assert len(cmap) == max(values) + 1 and cmap[0][3] == 0
            assert {v for v, c in cmap.items() if c[3] == 255} == values - {0}
            for f in src.overviews(1):
                ov = src.read(1, out_shape=(src.height // f, src.width // f))
                assert set(np.unique(ov).tolist()) <= values, (name, f)
        qml = ET.parse(path.with_suffix(".qml")).getroot()
        entries = qml.findall(".//rasterrenderer[@type='paletted']/colorPalette/paletteEntry")
        assert sorted(int(e.get("value")) for e in entries) == sorted(values - {0})
        rat = ET.parse(f"{path}.aux.xml").getroot().find(".//GDALRasterAttributeTable")
        rows = {int(r[0].text): r[1].text for r in rat.findall("Row")}
        assert set(rows) == values - {0}
    assert rows[8] == "Residential" and rows[2] == "Forest"
    if shutil.which("gdalinfo"):
        info = subprocess.run(["gdalinfo", str(tmp_path / "change.tif")], capture_output=True, text=True).stdout
        assert "AnnualCrop to Residential" in info and "NoData Value=0" in info


def test_periods_composite_mean_probabilities_and_observations(tmp_path):
    """Two periods of two dates: per cell the class probabilities averaged over the dates on which it
    is labelled; a cell clouded on one date takes the other's label (1 observation); one date's odd
    label is outvoted, so it is no change; the observation counts are written as rasters."""
    base = np.full((10, 10), 1, np.int64)
    odd = base.copy()
    odd[0, 0] = 2  # one date of the first period calls one cell Forest, weakly
    conf, weak = np.full((10, 10), 0.9), np.full((10, 10), 0.9)
    weak[0, 0] = 0.55
    cloud = np.zeros((10, 10), bool)
    cloud[2, 2] = True  # a2's cell (2, 2) under cloud: unlabelled there
    p1 = [make_output(tmp_path / "a1", base, conf, date="2023-06-01"),
          make_output(tmp_path / "a2", odd, weak, date="2023-07-01", cloud=cloud)]
    after = base.copy()
    after[5, 5] = 8  # a real change, seen on both dates of the second period
    p2 = [make_output(tmp_path / "b1", after, conf, date="2024-06-05"),
          make_output(tmp_path / "b2", after, conf, date="2024-07-05")]
    aoi = aoi_file(tmp_path / "aoi.geojson", 0, 10, 0, 10, crs="EPSG:32632")
    product = compare(p1, p2, aoi=str(aoi), out=tmp_path / "prod")  # the default: each date is evidence
    with rasterio.open(tmp_path / "prod" / "before_probabilities.tif") as src:
        both = 0.9 * 0.45 / 9, 0.1 / 9 * 0.55, 8 * 0.1 / 9 * 0.45 / 9  # AnnualCrop, Forest, the rest: multiplied
        assert src.read(1)[0, 0] == pytest.approx(both[0] / sum(both), abs=1e-5)
    style = (tmp_path / "prod" / "before_probabilities.qml").read_text()  # QGIS: one class's probability, 0..1
    assert 'type="singlebandgray" grayBand="1"' in style and "<maxValue>1</maxValue>" in style
    assert product["period_evidence"] == "product" and product["changed_ha"] == pytest.approx(40.96)
    s = compare(p1, p2, aoi=str(aoi), out=tmp_path / "cmp", period_evidence="mean")
    with rasterio.open(tmp_path / "cmp" / "before.tif") as src:
        assert src.read(1)[0, 0] == 1  # mean of 0.9 AnnualCrop and (1 - 0.55) / 9 -> AnnualCrop
    with rasterio.open(tmp_path / "cmp" / "before_observations.tif") as src:
        obs = src.read(1)
        assert obs[2, 2] == 1 and obs[0, 0] == 2 and (obs > 0).all()
    with rasterio.open(tmp_path / "cmp" / "before_probabilities.tif") as src:  # the period's own evidence
        assert src.count == 10 and src.descriptions[0] == "AnnualCrop"
        assert src.read(1)[0, 0] == pytest.approx((0.9 + 0.45 / 9) / 2, abs=1e-5)
    with rasterio.open(tmp_path / "cmp" / "before_confidence.tif") as src:  # its class's posterior given both sides
        assert src.read(1)[0, 0] > (0.9 + 0.45 / 9) / 2
    assert s["changed_ha"] == pytest.approx(40.96) and s["cloud_ha"] == 0  # (2, 2) is clear on a1
    assert s["before"]["dates"] == ["2023-06-01", "2023-07-01"] and s["before"]["period"] == \
        "2023-06-01 to 2023-07-01 (2 dates)"
    assert s["before"]["observations"]["min"] == 1 and s["days_of_year_apart"] <= 45
    # the same period's dates from one model only
    other = make_output(tmp_path / "x", base, conf, sha="b" * 64, date="2023-08-01")
    with pytest.raises(AtlasError, match="of the same period"):
        compare([*p1, other], p2, aoi=str(aoi))
    page = change_map(tmp_path / "cmp")
    assert "2023-06-01 to 2023-07-01 (2 dates)" in page.read_text()
    # the period's sky is its composite's: (2, 2), cloudy on a2 only, is clear; so the map draws no cloud layer
    with rasterio.open(tmp_path / "cmp" / "before_cloud.tif") as src:
        assert (src.read(1) == 1).all() and src.crs == UTM
    assert "cloud 2023" not in page.read_text()


def _probs(**by_class):
    """A probability vector with the given classes' probabilities and the rest spread evenly."""
    p = np.full(len(CLASSES), (1 - sum(by_class.values())) / (len(CLASSES) - len(by_class)))
    for c, v in by_class.items():
        p[CLASSES.index(c)] = v
    return p


def test_joint_decision_keeps_what_both_dates_say_and_finds_what_both_dates_show():
    """The rule decides from both dates together: a cell Forest 0.55 / HerbaceousVegetation 0.45 on both
    dates is unchanged Forest (the per-date rule called it uncertain); Forest 0.9 -> AnnualCrop 0.9 is
    changed; a three-date history with one odd middle date is one class throughout, not two changes."""
    from atlas_change.change.joint import decide_pair, forward_backward, p_same_throughout, viterbi

    mixed = _probs(Forest=0.55, HerbaceousVegetation=0.45)
    d = decide_pair(mixed, mixed)
    assert d["unchanged"] and not d["changed"] and d["before"] == d["after"] == CLASSES.index("Forest") + 1
    d = decide_pair(_probs(Forest=0.9), _probs(AnnualCrop=0.9))
    assert d["changed"] and (d["before"], d["after"]) == (CLASSES.index("Forest") + 1, CLASSES.index("AnnualCrop") + 1)
    assert d["p_conversion"] == pytest.approx(d["p_change"], abs=0.05)  # forest -> agricultural: between groups
    forest, crop = _probs(Forest=0.9), _probs(AnnualCrop=0.9)
    assert (viterbi([forest, crop, forest], 0.6) == CLASSES.index("Forest") + 1).all()
    marg, pairs = forward_backward([forest, crop, forest], 0.6)
    assert all(1 - np.trace(p) < 0.5 for p in pairs)  # neither step is more likely a change than not
    assert p_same_throughout([forest, crop, forest], 0.6) > 0.5
    assert p_same_throughout([forest, forest], 0.6) == pytest.approx(1 - decide_pair(forest, forest)["p_change"])
    unseen = np.full(len(CLASSES), np.nan)  # a date with no clear view adds nothing and breaks nothing
    np.testing.assert_allclose(viterbi([forest, unseen, forest], 0.6), CLASSES.index("Forest") + 1)
    marg = forward_backward([forest, unseen, crop], 0.6)[0]
    assert [m.argmax() for m in (marg[0], marg[2])] == [CLASSES.index("Forest"), CLASSES.index("AnnualCrop")]
    assert np.isfinite(marg[1]).all() and marg[1].sum() == pytest.approx(1)


@pytest.mark.parametrize("dates", [2, 4])
def test_the_chain_decided_in_bands_of_rows_is_the_whole_maps_decision(dates):
    """decide_chain (bounded memory: the n x n pair posteriors a band of rows at a time) gives, to
    the bit, what the whole map's forward-backward and decide_step give, for every step and the span."""
    from atlas_change.change.joint import decide_chain, decide_step, forward_backward, span_pair

    rng = np.random.default_rng(dates)
    probs = [rng.dirichlet(np.full(10, 0.4), size=(37, 23)) for _ in range(dates)]
    for p in probs:
        p[rng.random((37, 23)) < 0.1] = np.nan  # unseen cells
    marg, pairs = forward_backward(probs, 0.6)
    want = [decide_step(pairs[k], marg[k], marg[k + 1], 0.6) for k in range(dates - 1)]
    want_span = decide_step(span_pair(probs, 0.6), marg[0], marg[-1], 0.6)
    steps, span = decide_chain(probs, 0.6, 0.6, span=dates > 2, per_block=50)  # 2 rows a band
    assert (span is None) == (dates == 2) and len(steps) == dates - 1
    for a, b in zip([*want, want_span], [*steps, span] if span else steps):
        assert a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def test_compare_decides_jointly_and_writes_the_change_posterior(tmp_path):
    """Through compare: a cell Forest 0.55 on both dates is unchanged (not uncertain), a confident
    AnnualCrop -> Residential is changed, p_change.tif holds each cell's P(change) and the maps' labels
    follow the decision; view / sample read the same decision back."""
    from atlas_change.change.compare import read_decided

    before = np.full((4, 4), 2, np.int64)  # Forest
    after = before.copy()
    after[1, 1] = 8  # Forest -> Residential
    conf = np.full((4, 4), 0.55)
    conf_a = conf.copy()
    conf_a[1, 1] = 0.95
    conf_b = conf.copy()
    conf_b[1, 1] = 0.95
    a = make_output(tmp_path / "d1", before, conf_a, date="2023-06-01")
    b = make_output(tmp_path / "d2", after, conf_b, date="2024-06-01")
    aoi = aoi_file(tmp_path / "aoi.geojson", 0, 4, 0, 4, crs="EPSG:32632")
    s = compare(a, b, aoi=str(aoi), out=tmp_path / "c")
    assert s["changed_ha"] == pytest.approx(40.96) and s["uncertain_ha"] == 0
    assert s["change_decision"]["stay"] == 0.6 and "prior" in s["change_decision"]
    assert "no fitted change prior" in s["change_decision"]["stay_source"]
    with rasterio.open(tmp_path / "c" / "p_change.tif") as src:
        pc = src.read(1)
        assert src.dtypes[0] == "float32" and src.crs == UTM
    assert pc[1, 1] > 0.6 and (np.delete(pc.ravel(), 5) < 0.4).all()
    with rasterio.open(tmp_path / "c" / "change.tif") as src:
        code = src.read(1)
    assert code[1, 1] == 2 * 100 + 8 and (np.delete(code.ravel(), 5) == 0).all()
    back = read_decided(tmp_path / "c")
    assert back["confident"].all() and (back["before"] != back["after"]).sum() == 1
    assert s["net_change_ha"]["Residential"] == pytest.approx(40.96) == -s["net_change_ha"]["Forest"]


def test_compare_decides_with_the_prior_fitted_to_the_maps_model_unless_told(tmp_path):
    """Maps whose model card carried a fitted change prior are decided with it: Forest -> Residential
    seen at 0.8 on both dates is change under a weak prior (stay 0.6: P(change) 0.64) and not under a
    strong one (0.99: 0.03); summary.json says which prior decided and where it came from; --stay
    overrides the card; maps of two models with two priors are decided with the stronger, and warned of."""
    before = np.full((3, 3), 2, np.int64)  # Forest
    after = before.copy()
    after[1, 1] = 8  # Residential
    conf = np.full((3, 3), 0.8)
    aoi = str(aoi_file(tmp_path / "aoi.geojson", 0, 3, 0, 3, crs="EPSG:32632"))
    weak = [make_output(tmp_path / f"w{k}", m, conf, date=d, stay=0.6)
            for k, (m, d) in enumerate(((before, "2023-06-01"), (after, "2024-06-01")))]
    strong = [make_output(tmp_path / f"s{k}", m, conf, date=d, stay=0.99)
              for k, (m, d) in enumerate(((before, "2023-06-01"), (after, "2024-06-01")))]
    s = compare(*weak, aoi=aoi)
    assert s["changed_ha"] == pytest.approx(40.96) and s["change_decision"]["stay"] == 0.6
    s = compare(*strong, aoi=aoi, out=tmp_path / "c")
    assert s["changed_ha"] == 0 and s["change_decision"]["stay"] == 0.99
    assert "fitted to m" in s["change_decision"]["stay_source"]
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["change_decision"]["stay"] == 0.99
    s = compare(*strong, aoi=aoi, stay=0.6)
    assert s["changed_ha"] == pytest.approx(40.96) and s["change_decision"]["stay_source"] == "given (--stay)"
    with pytest.raises(AtlasError, match="--stay 1.5"):
        compare(*strong, aoi=aoi, stay=1.5)
    other = make_output(tmp_path / "o", after, conf, sha="b" * 64, date="2024-06-01", stay=0.9)
    with pytest.warns(AtlasWarning, match=r"different change priors \(0.6, 0.9: made by different models\); "
                      r"deciding with the strongest, 0.9"):
        s = compare(weak[0], other, aoi=aoi, allow_model_mismatch=True)
    assert s["change_decision"]["stay"] == 0.9 and s["model_mismatch"]


def test_a_sequence_of_periods_is_decided_from_all_of_them(tmp_path):
    """Three periods: a cell whose middle period alone says AnnualCrop is not two changes; a cell that
    turns Residential in the second period and stays is one change (step 1 and the span); a cell under
    cloud in the middle period keeps its history (0 in sequence.tif there, no change); the step folders,
    the span, sequence.tif and the summary are written, and the CLI prints one line per step."""
    from atlas_change.change.compare import compare_periods

    base = np.full((4, 4), 2, np.int64)  # Forest
    mid, late = base.copy(), base.copy()
    mid[0, 0] = 1  # one odd period: AnnualCrop
    mid[1, 1] = late[1, 1] = 8  # Forest -> Residential, kept
    conf = np.full((4, 4), 0.9)
    cloud = np.zeros((4, 4), bool)
    cloud[2, 2] = True
    folders = [make_output(tmp_path / "p1", base, conf, date="2021-06-01"),
               make_output(tmp_path / "p2", mid, conf, date="2022-06-01", cloud=cloud),
               make_output(tmp_path / "p3", late, conf, date="2023-06-01")]
    aoi = aoi_file(tmp_path / "aoi.geojson", 0, 4, 0, 4, crs="EPSG:32632")
    s = compare_periods(folders, aoi=str(aoi), out=tmp_path / "seq")
    names = [st["folder"] for st in s["steps"]]
    assert names == ["2021-06-01_2022-06-01", "2022-06-01_2023-06-01"] and s["span"]["folder"] == "span_2021-06-01_2023-06-01"
    assert [st["changed_ha"] for st in s["steps"]] == [pytest.approx(40.96), 0] and s["span"]["changed_ha"] == pytest.approx(40.96)
    for name in [*names, s["span"]["folder"]]:
        with rasterio.open(tmp_path / "seq" / name / "change.tif") as src:
            code = src.read(1)
        assert code[0, 0] == 0 and code[2, 2] == 0
    with rasterio.open(tmp_path / "seq" / s["span"]["folder"] / "change.tif") as src:
        assert src.read(1)[1, 1] == 2 * 100 + 8
    with rasterio.open(tmp_path / "seq" / "sequence.tif") as src:
        hist = src.read()
        assert src.count == 3 and src.crs == UTM
    assert list(hist[:, 0, 0]) == [2, 2, 2] and list(hist[:, 1, 1]) == [2, 8, 8] and list(hist[:, 2, 2]) == [2, 0, 2]
    # the legend holds every period's classes (Residential only in the later bands), for every band
    assert 'label="Residential"' in (tmp_path / "seq" / "sequence.qml").read_text()
    assert (tmp_path / "seq" / "sequence.tif.aux.xml").read_text().count("<Category>Residential</Category>") == 3
    assert json.loads((tmp_path / "seq" / "summary.json").read_text())["steps"][0]["folder"] == names[0]
    out = subprocess.run([sys.executable, "-m", "atlas_change", "compare", *sum((["--period", str(f)] for f in folders), []),
                          "--aoi", str(aoi), "--out", str(tmp_path / "cli")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 4 and "40.96 ha changed" in lines[0] and "span_" in lines[2]
    assert lines[3] == "decided with change prior stay 0.6 (the project's default)"
    quiet = subprocess.run([sys.executable, "-m", "atlas_change", "compare", *sum((["--period", str(f)] for f in folders), []),
                            "--aoi", str(aoi), "--out", str(tmp_path / "quiet"), "--quiet"], capture_output=True, text=True)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    assert (tmp_path / "quiet" / "sequence.tif").exists() and (tmp_path / "quiet" / "summary.json").exists()


def test_two_tiles_of_one_day_keep_their_dates_and_one_map_given_twice_counts_once(tmp_path, dates):
    """--before-date 2023-06-12,2023-06-12 (two scenes of one day) is two dates, not 'one date'; the same
    classify output twice in a period is one observation, with a warning."""
    aoi = aoi_file(tmp_path / "aoi.geojson", 0, 5, 0, 5, crs="EPSG:32632")
    twin = tmp_path / "twin"
    shutil.copytree(dates[0], twin)
    s = compare([dates[0], twin], dates[1], aoi=str(aoi), before_date=["2023-06-12", "2023-06-12"])
    assert s["before"]["dates"] == ["2023-06-12", "2023-06-12"]
    with pytest.warns(AtlasWarning, match="given twice"):
        s = compare([dates[0], dates[0]], dates[1], aoi=str(aoi))
    assert s["before"]["observations"]["min"] == 1 and len(s["before"]["sources"]) == 1


def test_an_aoi_partly_outside_the_scenes_says_how_much_was_never_looked_at(tmp_path, dates):
    """Half the AOI past the maps: a warning naming the hectares, and summary.json outside_scene_ha."""
    aoi = aoi_file(tmp_path / "aoi.geojson", 5, 15, 0, 10, crs="EPSG:32632")  # rows 10..14 lie past the maps
    with pytest.warns(AtlasWarning, match=r"2048.00 of the AOI's 4096.00 ha lie outside the scenes"):
        s = compare(*dates, aoi=str(aoi))
    assert s["outside_scene_ha"] == pytest.approx(2048) and s["aoi_cells_ha"] == pytest.approx(2048)
    inside = aoi_file(tmp_path / "in.geojson", 0, 10, 0, 10, crs="EPSG:32632")
    assert compare(*dates, aoi=str(inside))["outside_scene_ha"] == 0


def test_a_period_map_draws_the_periods_own_sky_not_its_first_scenes(tmp_path):
    """A period whose first date is cloudy on a cell that its second date sees: no cloud there in
    before_cloud.tif, and the HTML map draws no cloud layer for it (it drew the first scene's)."""
    base = np.full((4, 4), 1, np.int64)
    conf = np.full((4, 4), 0.9)
    cloud = np.zeros((4, 4), bool)
    cloud[1, 1] = True
    p1 = [make_output(tmp_path / "a1", base, conf, date="2023-06-01", cloud=cloud),
          make_output(tmp_path / "a2", base, conf, date="2023-07-01")]
    p2 = [make_output(tmp_path / "b1", base, conf, date="2024-06-01")]
    aoi = aoi_file(tmp_path / "aoi.geojson", 0, 4, 0, 4, crs="EPSG:32632")
    s = compare(p1, p2, aoi=str(aoi), out=tmp_path / "cmp")
    assert s["cloud_before_ha"] == 0
    with rasterio.open(tmp_path / "cmp" / "before_cloud.tif") as src:
        assert (src.read(1) == 1).all()
    with pytest.warns(AtlasWarning, match="no image"):
        page = change_map(tmp_path / "cmp").read_text()
    assert "cloud 2023" not in page and "classes 2023-06-01 to 2023-07-01 (2 dates)" in page


def test_maps_of_the_int8_and_the_float_network_are_not_compared_silently(tmp_path, dates):
    """One date made by the int8 network and the other by the float one: compare warns and records each
    side's arithmetic; a period mixing them is refused."""
    run_json = dates[1] / "run.json"
    run = json.loads(run_json.read_text())
    run_json.write_text(json.dumps({**run, "parameters": {**run.get("parameters", {}), "inference_precision": "int8"}}))
    aoi = aoi_file(tmp_path / "aoi.geojson", 0, 5, 0, 5, crs="EPSG:32632")
    with pytest.warns(AtlasWarning, match="int8 network and the other by its float one"):
        s = compare(*dates, aoi=str(aoi))
    assert s["after"]["inference_precision"] == "int8" and s["before"]["inference_precision"] is None
    other = tmp_path / "d1b"
    shutil.copytree(dates[0], other)
    with pytest.raises(AtlasError, match="of the same period"):
        compare([other, dates[1]], dates[0], aoi=str(aoi), before_date=["2023-05-01", "2024-06-01"],
                after_date="2024-07-01")


def test_an_aoi_over_http_is_the_local_aoi_and_a_bad_one_is_one_line(tmp_path, dates, server, capsys):
    """--aoi URL (a real HTTP server): the same hectares as the same file read locally; it is fetched
    with the Items' bounds in bytes and time (geopandas alone would read any body, with no timeout), and
    a missing one is one line naming the URL."""
    url, root, _ = server
    aoi = aoi_file(root / "aoi-compare.geojson", 0, 5, 0, 5, crs="EPSG:32632")
    local, remote = (compare(dates[0], dates[1], aoi=a) for a in (str(aoi), f"{url}/aoi-compare.geojson"))
    assert remote["changed_ha"] == local["changed_ha"] > 0 and remote["valid_ha"] == local["valid_ha"]
    assert main(["compare", str(dates[0]), str(dates[1]), "--aoi", f"{url}/no-such.geojson", "--out",
                 str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"atlas-change: error: {url}/no-such.geojson: cannot fetch the AOI (HTTP 404")
    assert not (tmp_path / "c").exists()


def test_one_map_on_both_sides_or_one_day_on_both_is_said(tmp_path, dates):
    """The same classify output as BEFORE and AFTER (or one day on both sides) shows no change by
    construction: a warning naming it, where there was none (0 ha changed, silently)."""
    aoi = aoi_file(tmp_path / "aoi.geojson", 0, 5, 0, 5, crs="EPSG:32632")
    with pytest.warns(AtlasWarning, match=r"d1: the same map is on both sides \(1 of them\)"):
        s = compare(dates[0], dates[0], aoi=str(aoi))
    assert s["changed_ha"] == 0
    day = make_output(tmp_path / "d3", np.full((10, 10), 2, np.int64), np.full((10, 10), 0.9), date="2023-06-01")
    with pytest.warns(AtlasWarning, match="d3: the 'after' date 2023-06-01 is the 'before' date"):
        compare(dates[0], day, aoi=str(aoi))
    with warnings.catch_warnings():
        warnings.simplefilter("error", AtlasWarning)
        compare(*dates, aoi=str(aoi))  # a year apart, one season: nothing to say


def test_maps_in_two_utm_zones_are_refused_with_the_warp_that_aligns_them(tmp_path, dates, capsys):
    """Two dates from tiles of neighbouring UTM zones: refused (resampling a class map is not done)
    before any hectare figure (the AOI was said to lie outside the scenes before), naming the gdalwarp
    of the scene onto the other date's grid, -te the first map's cells."""
    other = make_output(tmp_path / "z33", np.full((10, 10), 2, np.int64), np.full((10, 10), 0.9), date="2024-06-01",
                        crs=rasterio.crs.CRS.from_epsg(32633), origin=(200_000.0, Y0))
    aoi = aoi_file(tmp_path / "aoi.geojson", 0, 5, 0, 5)
    assert main(["compare", str(dates[0]), str(other), "--aoi", str(aoi), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    te = f"{X0:.0f} {Y0 - 10 * CELL:.0f} {X0 + 10 * CELL:.0f} {Y0:.0f}"
    assert len(err) == 1 and "differs from" in err[0] and f"gdalwarp -t_srs EPSG:32632 -tr 10 10 -te {te}" in err[0]
