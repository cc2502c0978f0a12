"""sample / assess: Olofsson et al. (2014) estimators on the paper's own worked example, and a
sample drawn from a compare output, labelled, and assessed end to end."""
import csv
import json
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pytest

from atlas_change.accuracy.assess import allocate, assess, estimate, sample_size
from atlas_change.change.compare import compare
from atlas_change.errors import AtlasError
from atlas_change.accuracy.sample import sample
from test_compare import aoi_file, make_output

PAPER = ["deforestation", "forest gain", "stable forest", "stable non-forest"]
PAPER_PIXELS = np.array([200_000, 150_000, 3_200_000, 6_450_000])  # 30 m pixels = 0.09 ha
PAPER_COUNTS = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])


def test_paper_worked_example():
    """Olofsson et al. 2014, section 5: deforestation 21,158 +- 6,158 ha, forest gain 11,686 +-
    3,756 ha, overall accuracy 0.95; user's / producer's accuracies of their table 7."""
    e = estimate(PAPER, PAPER_PIXELS * 0.09, PAPER, PAPER_COUNTS)
    assert round(e.area[0]) == 21_158 and round(1.96 * e.area_se[0]) == 6_158
    assert round(e.area[1]) == 11_686 and round(1.96 * e.area_se[1]) == 3_756
    assert round(e.overall[0], 2) == 0.95 and round(1.96 * e.overall[1], 2) == 0.02
    assert round(e.users["deforestation"][0], 2) == 0.88 and round(1.96 * e.users["deforestation"][1], 2) == 0.07
    assert round(e.producers["deforestation"][0], 2) == 0.75 and round(1.96 * e.producers["deforestation"][1], 2) == 0.21
    assert round(e.producers["forest gain"][0], 2) == 0.85 and round(1.96 * e.producers["forest gain"][1], 2) == 0.25
    assert e.area.sum() == pytest.approx(PAPER_PIXELS.sum() * 0.09)  # the areas add up to the map's
    # the paper's sample design: n = 641 for S(O) = 0.01 with U = 0.7, 0.6, 0.9, 0.95; 75 per change stratum
    assert sample_size(PAPER_PIXELS / PAPER_PIXELS.sum(), [0.7, 0.6, 0.9, 0.95], 0.01) == 641
    alloc = allocate(PAPER_PIXELS, 641, 75)
    assert list(alloc[:2]) == [75, 75] and alloc.sum() == 641 and alloc[3] > alloc[2]


def test_assess_reads_the_paper_example_from_files(tmp_path):
    (tmp_path / "strata.csv").write_text(
        "stratum,map_cells,map_ha,cell_ha,map_share,sample_cells,reference_class,other_reference\n"
        + "".join(f"{s},{n},{n * 0.09},0.09,0,{row.sum()},yes,\n" for s, n, row in zip(PAPER, PAPER_PIXELS, PAPER_COUNTS)))
    with open(tmp_path / "sample.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample_id", "stratum", "reference"])
        k = 0
        for s, row in zip(PAPER, PAPER_COUNTS):
            for ref, n in zip(PAPER, row):
                for _ in range(n):
                    k += 1
                    w.writerow([k, s, ref])
    r = assess(tmp_path)
    assert r["classes"]["deforestation"]["estimated_ha"] == pytest.approx(21_158, abs=1)
    assert r["classes"]["deforestation"]["estimated_ha_ci95"] == pytest.approx(6_158, abs=1)
    assert r["overall_accuracy"] == pytest.approx(0.9465, abs=1e-4)
    rows = (tmp_path / "error_matrix.csv").read_text().splitlines()
    assert rows[1].startswith("deforestation,0.017600,") and len(rows) == 6  # p_11 = 0.02 * 66 / 75 (table 4)
    lines = (tmp_path / "sample.csv").read_text().splitlines()
    (tmp_path / "sample.csv").write_text("\n".join([lines[0], lines[1].rsplit(",", 1)[0] + ",", *lines[2:]]) + "\n")
    with pytest.raises(AtlasError, match=r"sample.csv: 1 of 640 sample cells have no reference label yet"):
        assess(tmp_path)
    (tmp_path / "sample.csv").write_text("\n".join([lines[0], lines[1].rsplit(",", 1)[0] + ",lake", *lines[2:]]) + "\n")
    with pytest.raises(AtlasError, match=r"line 2: reference 'lake' is not a class of the legend"):
        assess(tmp_path)


def test_sample_from_a_compare_output_labelled_and_assessed(tmp_path):
    """A 20 x 20 cell map with a block of conversion and some uncertain cells: the sample covers every
    stratum, is reproducible from its seed, and labelled 'as the map says' assesses to the map's areas."""
    before = np.full((20, 20), 1, np.int64)
    after = before.copy()
    after[2:6, 2:6] = 8  # AnnualCrop -> Residential: 16 cells of conversion
    after[10:12, 10:20] = 6  # AnnualCrop -> Pasture: 20 cells, a change within the agricultural group
    conf = np.full((20, 20), 0.9)
    conf_after = conf.copy()
    after[15:, :] = 2  # AnnualCrop 0.9 -> Forest 0.5: P(change) 0.53, neither decision reached: 100 uncertain cells
    conf_after[15:, :] = 0.5
    a = make_output(tmp_path / "d1", before, conf, date="2023-06-01")
    b = make_output(tmp_path / "d2", after, conf_after, date="2024-06-01")
    compare(a, b, aoi=str(aoi_file(tmp_path / "aoi.geojson", 0, 20, 0, 20, crs="EPSG:32632")), out=tmp_path / "cmp")
    r = sample(tmp_path / "cmp", tmp_path / "s", seed=7, n=60, minimum=10, images=False)
    strata = list(r["expected_users_accuracy"])
    assert strata == ["stable agricultural", "agricultural -> artificial", "uncertain"]
    table = list(csv.DictReader(open(tmp_path / "s" / "strata.csv")))
    assert [int(t["map_cells"]) for t in table] == [284, 16, 100]
    assert sum(float(t["map_ha"]) for t in table) == pytest.approx(400 * 40.96)
    rows = list(csv.DictReader(open(tmp_path / "s" / "sample.csv")))
    assert len(rows) == r["sample_size"] == 60 and {x["reference"] for x in rows} == {""}
    assert {x["stratum"] for x in rows} == set(strata) and sum(x["stratum"] == "agricultural -> artificial" for x in rows) >= 10
    again = sample(tmp_path / "cmp", tmp_path / "s2", seed=7, n=60, minimum=10, images=False)
    assert again == {**r} and (tmp_path / "s2" / "sample.csv").read_text() == (tmp_path / "s" / "sample.csv").read_text()
    pts = gpd.read_file(tmp_path / "s" / "sample.gpkg", layer="sample")
    assert len(pts) == len(rows) and pts.crs.to_epsg() == 32632 and pts.geometry.area.round().eq(640 * 640).all()
    import sqlite3

    with sqlite3.connect(tmp_path / "s" / "sample.gpkg") as db:  # GeoPackage 1.2 as export writes, styled for QGIS
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10200
        assert db.execute("SELECT f_table_name FROM layer_styles").fetchall() == [("sample",)]
    page = (tmp_path / "s" / "sample.html").read_text()
    assert "stable agricultural" in page and "AnnualCrop" not in page  # the legend, not the map's classes (blind)
    with pytest.raises(AtlasError, match="no reference label yet"):
        assess(tmp_path / "s")
    # labelled in sample.gpkg's attribute table (QGIS) instead of sample.csv: read from there
    pts["reference"] = ["stable agricultural" if x == "uncertain" else x for x in pts["stratum"]]
    pts.to_file(tmp_path / "s" / "sample.gpkg", layer="sample", driver="GPKG")
    from_gpkg = assess(tmp_path / "s")
    # label: the map is right where it is confident; the uncertain cells hold no change
    for x in rows:
        x["reference"] = "stable agricultural" if x["stratum"] == "uncertain" else x["stratum"]
    with open(tmp_path / "s" / "sample.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = subprocess.run([sys.executable, "-m", "atlas_change", "assess", str(tmp_path / "s")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    res = assess(tmp_path / "s")
    conv = res["classes"]["agricultural -> artificial"]
    assert conv["estimated_ha"] == pytest.approx(16 * 40.96) and conv["users_accuracy"] == 1.0
    assert res["classes"]["stable agricultural"]["estimated_ha"] == pytest.approx(384 * 40.96)
    assert res["overall_accuracy"] == 1.0 and "uncertain" not in res["classes"]
    assert from_gpkg["classes"] == res["classes"]
    rows[0]["reference"] = "agricultural -> artificial" if rows[0]["reference"] != "agricultural -> artificial" else "stable agricultural"
    with open(tmp_path / "s" / "sample.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(AtlasError, match=rf"sample.gpkg: sample_id {rows[0]['sample_id']} is '.*' here but '.*' in sample.csv"):
        assess(tmp_path / "s")


def _labelled(folder, strata, drawn, refs, map_ha=None):
    """A strata.csv and a labelled sample.csv: `refs` per stratum, the reference of each drawn cell."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "strata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["stratum", "map_cells", "map_ha", "cell_ha", "map_share", "sample_cells", "reference_class",
                    "other_reference"])
        for i, (s, n) in enumerate(zip(strata, drawn)):
            w.writerow([s, 100, (map_ha or [409.6] * len(strata))[i], 4.096, 0.5, n, "yes", ""])
    with open(folder / "sample.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample_id", "stratum", "reference"])
        k = 0
        for s, rs in zip(strata, refs):
            for r in rs:
                k += 1
                w.writerow([k, s, r])
    return folder


def test_assess_files_are_strict_json_and_formula_safe_csv_and_bad_labels_are_refused(tmp_path):
    """A stratum named like a spreadsheet formula is written with an apostrophe in front; a comma stays
    inside its quoted field; assessment.json parses with a strict parser (null, never NaN); a reference
    label that is no class, a duplicate or never-drawn sample_id, a NaN area and a Latin-1 file are one
    clear error each."""
    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))

    ok = _labelled(tmp_path / "ok", ["Forest", "=1+1"], [3, 3], [["Forest"] * 3, ["=1+1", "=1+1", "Forest"]])
    r = assess(ok)
    assert r["classes"]["Forest"]["estimated_ha"] > 0
    strict((ok / "assessment.json").read_text())
    rows = list(csv.reader(open(ok / "areas.csv")))
    assert [x[0] for x in rows[1:]] == ["Forest", "'=1+1"] and all(len(x) == len(rows[0]) for x in rows)
    assert not any(cell.startswith("=") for x in csv.reader(open(ok / "error_matrix.csv")) for cell in x)
    nan_pa = _labelled(tmp_path / "nan_pa", ["Forest", "River"], [2, 2], [["Forest", "Forest"], ["Forest", "Forest"]])
    strict((assess(nan_pa) and nan_pa / "assessment.json").read_text())  # River never in the reference: P is null
    bad = {"=cmd|' /C calc'!A0": "not a class of the legend", "stable =x": "not a class of the legend",
           "Forest, River": "not a class of the legend"}
    for label, msg in bad.items():
        f = _labelled(tmp_path / f"b{len(label)}", ["Forest", "River"], [2, 2], [["Forest", label], ["River"] * 2])
        with pytest.raises(AtlasError, match=msg):
            assess(f)
    other = _labelled(tmp_path / "other", ["Forest", "River"], [2, 2], [["Forest", "Forest -> Residential"], ["River"] * 2])
    assert "Forest -> Residential" in assess(other)["classes"]
    more = _labelled(tmp_path / "more", ["Forest", "River"], [2, 2], [["Forest"] * 3, ["River"] * 2])
    with pytest.raises(AtlasError, match="3 rows of stratum 'Forest' but 2 were drawn"):
        assess(more)
    dup = _labelled(tmp_path / "dup", ["Forest", "River"], [2, 2], [["Forest"] * 2, ["River"] * 2])
    (dup / "sample.csv").write_text((dup / "sample.csv").read_text().replace("\n2,", "\n1,"))
    with pytest.raises(AtlasError, match="sample_id 1 appears more than once"):
        assess(dup)
    nan = _labelled(tmp_path / "nan", ["Forest", "River"], [2, 2], [["Forest"] * 2, ["River"] * 2], map_ha=["nan", 1])
    with pytest.raises(AtlasError, match="finite hectares"):
        assess(nan)
    latin = _labelled(tmp_path / "latin", ["Forest", "River"], [2, 2], [["Forest"] * 2, ["River"] * 2])
    (latin / "sample.csv").write_bytes((latin / "sample.csv").read_bytes() + "3,Forest,Forêt\n".encode("latin-1"))
    with pytest.raises(AtlasError, match="sample.csv: not UTF-8 text"):
        assess(latin)


def test_a_sample_labelled_in_a_spreadsheet_reads_as_written_by_sample(tmp_path):
    """sample.csv saved by a spreadsheet where the decimal mark is a comma (semicolons, a byte-order
    mark) and labels typed in another case or with other spaces give the same assessment as the file
    labelled exactly; before, 'needs the columns stratum and reference' and 'not a class of the legend'."""
    strata = ["stable agricultural", "agricultural -> artificial"]
    refs = [["stable agricultural"] * 3 + ["agricultural -> artificial"], ["agricultural -> artificial"] * 3 + ["stable agricultural"]]
    exact = assess(_labelled(tmp_path / "exact", strata, [4, 4], refs))
    typed = _labelled(tmp_path / "typed", strata, [4, 4], [[r.replace("agricultural ->", "Agricultural->").upper()
                                                          if i % 2 else r for i, r in enumerate(rs)] for rs in refs])
    rows = list(csv.reader(open(typed / "sample.csv", newline="")))
    with open(typed / "sample.csv", "w", newline="", encoding="utf-8-sig") as f:
        csv.writer(f, delimiter=";").writerows(rows)
    assert "AGRICULTURAL-> ARTIFICIAL" in (typed / "sample.csv").read_text(encoding="utf-8-sig")
    assert assess(typed)["classes"] == exact["classes"]
