"""Scenes found in a real STAC API (rustac serve on 127.0.0.1), their COGs served by nginx with byte
ranges: ranked by their SCL over the AOI (not the tile's cloud cover), a period of the clearest
dates composited, --dry-run, clear errors naming the URL."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.warp import transform_geom

from atlas_change.bands import L2A_ORDER
from atlas_change.change.compare import compare, read_aoi
from atlas_change.errors import AtlasError, AtlasWarning
from atlas_change.batch.search import choose, search
from atlas_change.synth import make_scene
from conftest import (MAJOR_TOM, TWO_ZONE_AOI, band_cogs, free_port, item, major_tom_split, run_classify, stac_api,
                      two_zone_scenes)
from test_jobs import aoi_table, job_text

ORIGIN = (600000.0, 5000040.0)
FAST = 'runtime = "graph"\ntta = 1'  # job keys: the untrained test network in TensorFlow, one view
SIZE = 512  # 5.12 km scene; the AOI: pixels 200..330 of both axes (1.3 km square)
AOI_PX = (200, 330)
#: date -> (eo:cloud_cover of the whole tile, is the AOI under cloud by the SCL)
DATES = {"2023-06-05": (30.0, False), "2023-06-20": (5.0, True), "2023-07-10": (60.0, False),
         "2023-07-25": (95.0, False), "2024-06-12": (20.0, False), "2024-07-01": (10.0, False)}


def es_item(hrefs: dict[str, str], id_: str, day: str, footprint: dict, tile_cloud: float) -> dict:
    """An Earth Search Item of `day` with its footprint (EPSG:4326) and tile cloud cover."""
    it = item(hrefs, "earth-search", **{"s2:processing_baseline": "05.09", "eo:cloud_cover": tile_cloud})
    it.update(id=id_, geometry=footprint, bbox=list(shapely.geometry.shape(footprint).bounds))
    it["properties"]["datetime"] = f"{day}T10:15:59Z"
    return it


@pytest.fixture(scope="module")
def catalogue(server, tmp_path_factory):
    """Six dates of one synthetic L2A tile as Earth Search Items: (API url, AOI file, nginx log)."""
    url, root, log = server
    d = tmp_path_factory.mktemp("search")
    scene = make_scene(d / "tile.tif", SIZE, SIZE, bands=L2A_ORDER, origin=ORIGIN, seed=11)
    with rasterio.open(scene) as src:
        footprint = transform_geom(src.crs, "EPSG:4326", shapely.box(*src.bounds).__geo_interface__)
    items = []
    for day, (tile_cloud, aoi_cloud) in DATES.items():
        folder = root / "tiles" / day
        over_aoi = slice(AOI_PX[0] - 20, AOI_PX[1] + 20)
        names = band_cogs(scene, folder, cloud=(over_aoi, over_aoi) if aoi_cloud else None)
        items.append(es_item({b: f"{url}/tiles/{day}/{n}" for b, n in names.items()},
                             f"S2B_32TQM_{day.replace('-', '')}_0_L2A", day, footprint, tile_cloud))
    x0, y0 = ORIGIN
    box = shapely.box(x0 + AOI_PX[0] * 10, y0 - AOI_PX[1] * 10, x0 + AOI_PX[1] * 10, y0 - AOI_PX[0] * 10)
    aoi = d / "aoi.geojson"
    gpd.GeoDataFrame({"name": ["farm"]}, geometry=[box], crs="EPSG:32632").to_file(aoi, driver="GeoJSON")
    with stac_api(items, d / "api") as api:
        yield api, aoi, log


def test_items_are_ranked_by_their_scl_over_the_aoi(catalogue):
    api, aoi, _ = catalogue
    geom = read_aoi(str(aoi), None, "EPSG:4326", rasterio.crs.CRS.from_epsg(4326))
    found = search(api, "sentinel-2-l2a", geom, "2023-06-01/2023-08-31")
    # the 95 % cloudy tile is not considered; the one whose tile is clearest (5 %) is cloud over the AOI
    assert {f.date for f in found} == {"2023-06-05", "2023-06-20", "2023-07-10"}
    by_date = {f.date: f for f in found}
    assert by_date["2023-06-20"].aoi_clear == 0.0 and by_date["2023-06-05"].aoi_clear == 1.0
    assert found[-1].date == "2023-06-20" and all(f.covers == pytest.approx(1.0) for f in found)
    chosen = choose(found, 3)
    assert [f.date for f in chosen] == ["2023-06-05", "2023-07-10"]  # the cloudy one never, even when asked for 3
    assert chosen[0].url == f"{api}/collections/sentinel-2-l2a/items/S2B_32TQM_20230605_0_L2A"
    assert search(api, "sentinel-2-l2a", geom, "2022-01-01/2022-12-31") == []


def test_dry_run_lists_and_reads_nothing_but_scl(catalogue, tmp_path):
    api, aoi, _ = catalogue
    cli = [sys.executable, "-m", "atlas_change", "compare", "--stac-api", api, "--before-range", "2023-06-01/2023-08-31",
           "--after-range", "2024-06-01/2024-08-31", "--aoi", str(aoi), "--out", str(tmp_path / "out"),
           "--scenes-per-period", "2", "--dry-run"]
    r = subprocess.run(cli, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "--before-range 2023-06-01/2023-08-31: 3 item(s), 2 date(s) chosen"
    chosen = [ln for ln in lines if ln.startswith("  * ")]
    assert [ln.split()[1] for ln in chosen] == ["2023-06-05", "2023-07-10", "2024-06-12", "2024-07-01"]
    assert any("2023-06-20    0.0 % of the AOI clear  tile cloud 5.0 %" in ln for ln in lines)
    assert not (tmp_path / "out").exists()


def test_compare_of_two_searched_periods(catalogue, model12, tmp_path):
    """Each side the two clearest dates: classified only over the AOI's 64 px blocks, read from the
    COGs by range requests; the same land on every date gives no change."""
    api, aoi, log = catalogue
    geom = read_aoi(str(aoi), None, "EPSG:4326", rasterio.crs.CRS.from_epsg(4326))
    sides = [choose(search(api, "sentinel-2-l2a", geom, p), 2) for p in ("2023-06-01/2023-08-31", "2024-06-01/2024-08-31")]
    s = compare([f.url for f in sides[0]], [f.url for f in sides[1]], aoi=str(aoi), out=tmp_path / "farm",
                before_date=[f.date for f in sides[0]], after_date=[f.date for f in sides[1]], model=model12.path,
                allow_untrained=True, scheduler="sync", runtime="graph", tta=1)
    assert s["before"]["dates"] == ["2023-06-05", "2023-07-10"] and s["after"]["dates"] == ["2024-06-12", "2024-07-01"]
    assert s["changed_ha"] == 0 and s["cloud_ha"] == 0 and s["valid_ha"] > 0
    runs = sorted(tmp_path.glob("S2B_32TQM_*_aoi_*/run.json"))
    assert len(runs) == 4
    run = json.loads(runs[0].read_text())
    assert run["input"]["path"] == sides[0][0].url and run["input"]["kind"] == "stac-item"
    c, r, w, h = run["parameters"]["window"]  # whole 64 px blocks around pixels 200..330
    assert (c, r, w, h) == (192, 192, 192, 192) and run["input"]["width"] == 192
    with rasterio.open(tmp_path / "farm" / "before_observations.tif") as src:
        obs = src.read(1)
    assert obs.max() == 2
    assert " 206 " in log.read_text()  # range requests


def test_search_failures_are_one_line_naming_the_url(catalogue, tmp_path):
    api, aoi, _ = catalogue
    base = [sys.executable, "-m", "atlas_change", "compare", "--aoi", str(aoi), "--out", str(tmp_path / "o"),
            "--before-range", "2023-06-01/2023-08-31"]
    down = f"http://127.0.0.1:{free_port()}"
    for args, message in (
            (["--stac-api", down, "--after-range", "2024-06-01/2024-08-31"], f"{down}: cannot search the STAC API"),
            (["--stac-api", api, "--after-range", "2025-06-01/2025-08-31"],
             f"{api}: no sentinel-2-l2a item of 2025-06-01/2025-08-31 covers the AOI"),
            (["--stac-api", api, "--after-range", "2024-08-31/2024-06-01"], "--after-range '2024-08-31/2024-06-01': the "
                                                                              "start is after the end"),
            (["--stac-api", api], "compare --stac-api: give --before-range"),
            (["--stac-api", api, "--after-range", "2024-06-01/2024-08-31", "--out", ""], "--out FOLDER is required")):
        r = subprocess.run(base + args, capture_output=True, text=True)
        assert r.returncode == 2, r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("atlas-change: error: ") and message in last, last
    assert not (tmp_path / "o").exists()
    with pytest.raises(AtlasError, match="cannot search the STAC API"):
        search(down, "sentinel-2-l2a", shapely.box(10, 45, 10.01, 45.01), "2023-06-01/2023-08-31")


@pytest.fixture(scope="module")
def two_zones(server, tmp_path_factory):
    """One date of two overlapping tiles either side of the UTM zone boundary at 12 deg E (32N and 33N),
    the western one under cloud (SCL 9) where they overlap: (API url, AOI across both, nginx log)."""
    url, root, log = server
    d = tmp_path_factory.mktemp("zones")
    items = []
    for zone, origin, seed in ((32, (732420.0, 4989410.0), 21), (33, (262850.0, 4989580.0), 22)):
        scene = make_scene(d / f"t{zone}.tif", 640, 448, bands=L2A_ORDER, crs=f"EPSG:326{zone}", origin=origin, seed=seed)
        folder = root / "zones" / str(zone)
        # the 32N tile under cloud over its eastern part, which the 33N tile also covers
        names = band_cogs(scene, folder, cloud=(slice(None), slice(400, None)) if zone == 32 else None)
        with rasterio.open(scene) as src:
            footprint = transform_geom(src.crs, "EPSG:4326", shapely.box(*src.bounds).__geo_interface__)
        items.append(es_item({b: f"{url}/zones/{zone}/{n}" for b, n in names.items()},
                             f"S2B_{zone}TXX_20230605_0_L2A", "2023-06-05", footprint, 10.0))
    aoi = d / "aoi.geojson"
    gpd.GeoDataFrame(geometry=[shapely.box(11.96, 44.995, 12.05, 45.01)], crs="EPSG:4326").to_file(aoi, driver="GeoJSON")
    with stac_api(items, d / "api") as api:
        yield api, aoi, log


def test_aoi_across_two_utm_zones_is_mosaicked_clearest_pixel_first(two_zones, model12, tmp_path):
    from atlas_change.read.mosaic import write_mosaic

    api, aoi, _ = two_zones
    geom = read_aoi(str(aoi), None, "EPSG:4326", rasterio.crs.CRS.from_epsg(4326))
    found = search(api, "sentinel-2-l2a", geom, "2023-06-01/2023-06-30")
    assert len(found) == 2 and all(0.2 < f.covers < 0.999 for f in found)  # neither covers the AOI alone
    (pick,) = choose(found, 3, aoi=geom)
    assert pick.url is None and len(pick.items) == 2 and pick.date == "2023-06-05"
    # the cloudy 32N tile first: its clouds must still give way to the 33N tile's clear pixels
    urls = sorted((f.url for f in pick.items), key=lambda u: "32TXX" not in u)
    mosaic = write_mosaic(tmp_path / "m" / "2023-06-05.mosaic.json", pick.date, urls, geom)
    ds = run_classify(mosaic, model12, out=tmp_path / "out", tta=1)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["output"]["crs"] == "EPSG:32633"  # the AOI's centre (12.005 E) lies in zone 33
    t = run["output"]["transform"]
    assert t[2] % 640 == 0 and t[5] % 640 == 0 and run["input"]["kind"] == "mosaic"
    assert run["input"]["date"] == "2023-06-05" and run["clouds"]["method"] == "scl"
    # the 32N tile's cloud lies where the 33N tile is clear: the mosaic takes those pixels, so no cell is cloud;
    # cells outside both tiles (the grid is widened to 640 m) are nodata, all the rest labelled
    assert run["counts"]["cloud_cells"] == 0 and (ds["lulc"].values > 0).sum() >= 0.8 * ds["lulc"].size
    r = subprocess.run([sys.executable, "-m", "atlas_change", "compare", "--stac-api", api, "--aoi", str(aoi),
                        "--before-range", "2023-06-01/2023-06-30", "--after-range", "2023-06-01/2023-06-30",
                        "--dry-run"], capture_output=True, text=True)  # no --out needed to look
    assert r.returncode == 0 and r.stdout.count("(mosaic)") == 4, r.stdout + r.stderr


def test_a_compare_that_fails_after_its_search_leaves_no_mosaics(two_zones, tmp_path):
    """The search writes the dates' mosaics beside --out; when the compare then fails (here: no such
    model), the mosaics it wrote go too, and the folder it made for them."""
    api, aoi, _ = two_zones
    r = subprocess.run([sys.executable, "-m", "atlas_change", "compare", "--stac-api", api, "--aoi", str(aoi),
                        "--before-range", "2023-06-01/2023-06-30", "--after-range", "2023-06-01/2023-06-30",
                        "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no-model" in r.stderr.strip().splitlines()[-1], r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.data
def test_real_l2a_found_in_the_api_equals_the_local_band_folder(server, tmp_path):
    """The real Major TOM L2A cell (baseline N9999, no offset in its pixels; no SCL) as a Planetary
    Computer Item whose COGs nginx serves, found by a search and classified over a 2 km^2 AOI: the
    same labels as the local band folder over the same AOI, with the shipped model."""
    from atlas_change.mapping.pipeline import classify

    folders = sorted(MAJOR_TOM.glob("S2*")) if MAJOR_TOM.is_dir() else []
    if not folders:
        pytest.skip("../shared/scenes/major-tom-l2a not here")
    local = folders[0]
    url, root, log = server
    served = root / "majortom"
    served.mkdir(exist_ok=True)
    hrefs = {}
    for f in sorted(local.glob("B*.tif")):
        (served / f.name).unlink(missing_ok=True)
        (served / f.name).symlink_to(f)
        hrefs[f.stem] = f"{url}/majortom/{f.name}"
    with rasterio.open(local / "B02.tif") as src:
        footprint = transform_geom(src.crs, "EPSG:4326", shapely.box(*src.bounds).__geo_interface__)
        cx, cy = (src.bounds.left + src.bounds.right) / 2, (src.bounds.bottom + src.bounds.top) / 2
        crs = src.crs.to_string()
    it = item(hrefs, "pc", **{"s2:processing_baseline": "99.99", "eo:cloud_cover": 1.0})
    it.update(id="S2B_MSIL2A_20200223T032739_N9999_R018_T48QUE", geometry=footprint,
              bbox=list(shapely.geometry.shape(footprint).bounds))
    it["properties"]["datetime"] = "2020-02-23T03:27:39Z"
    box = shapely.box(cx - 707, cy - 707, cx + 707, cy + 707)  # 2 km^2
    aoi = shapely.geometry.shape(transform_geom(crs, "EPSG:4326", box.__geo_interface__))
    with stac_api([it], tmp_path / "api") as api:
        found = search(api, "sentinel-2-l2a", aoi, "2020-02-01/2020-02-29")
        (pick,) = choose(found, 3, aoi=aoi)
        assert found[0].aoi_clear is None and pick.url.endswith("/items/S2B_MSIL2A_20200223T032739_N9999_R018_T48QUE")
        kw = {"bbox": box.bounds, "bbox_crs": crs, "scheduler": "sync", "tta": 1}
        remote = classify(pick.url, out=tmp_path / "remote", **kw)
    ref = classify(str(local), **kw)
    np.testing.assert_array_equal(remote["lulc"].values, ref["lulc"].values)
    assert (remote["lulc"].values > 0).all() and remote.attrs["dn_offset_applied"] == 0
    run = json.loads((tmp_path / "remote" / "run.json").read_text())
    assert run["clouds"]["method"] == "spectral" and "no offset applied" in run["input"]["dn_offset_how"]


def test_job_file_naming_a_search_runs_once_and_resumes(catalogue, model12, tmp_path):
    """A job's AOI names a search instead of scenes: `status` says it is still to be searched, `run`
    searches once (the Items kept as files under the job's state), classifies the AOI's part of
    each chosen date and compares the periods; a second run is up to date without a new choice."""
    from atlas_change.batch.jobs import job_status, load_job, run_job

    api, aoi, _ = catalogue
    job_file = tmp_path / "job.toml"
    job_file.write_text(job_text(model12.path, f'[[aoi]]\nname = "farm"\nfile = "{aoi}"\nsearch = {{ api = "{api}", '
                                 'scenes_per_period = 2, periods = { s2023 = "2023-06-01/2023-08-31", '
                                 's2024 = "2024-06-01/2024-08-31" } }\n', extra=FAST + '\nproduce = ["classify", "compare"]'))
    job = load_job(job_file)
    assert [(r.id, r.status) for r in job_status(job)] == [("fetch/farm", "pending")]
    lines = []
    results = run_job(job, scheduler="sync", quiet=True, echo=lines.append)
    assert [r.status for r in results] == ["done"] * 5, results  # 4 classify + 1 compare
    assert lines[0].startswith("s2023 2023-06-01/2023-08-31: 3 item(s), 2 date(s) chosen")
    kept = json.loads((tmp_path / "out" / ".atlas-job" / "search" / "farm" / "search.json").read_text())
    assert kept["periods"] == {"s2023": ["2023-06-05", "2023-07-10"], "s2024": ["2024-06-12", "2024-07-01"]}
    s = json.loads((tmp_path / "out" / "farm" / "s2023_s2024" / "summary.json").read_text())
    assert s["changed_ha"] == 0 and s["before"]["dates"] == ["2023-06-05", "2023-07-10"]
    run = json.loads(next((tmp_path / "out" / "scenes").glob("*/run.json")).read_text())
    assert run["parameters"]["window"] == [192, 192, 192, 192] and run["input"]["kind"] == "stac-item"
    again = []
    assert [r.status for r in run_job(job, scheduler="sync", quiet=True, echo=again.append)] == ["up to date"] * 5
    assert not any("chosen" in ln for ln in again)  # not searched again
    assert all(r.status == "done" for r in job_status(job))


def test_job_scene_and_aoi_may_be_urls(catalogue, server, model12, tmp_path):
    """A job's scenes given as STAC Items' URLs and its AOI as a URL: each kept as a local copy, the
    scenes classified over the AOI only; an AOI URL that is missing or no AOI fails the run in one
    line naming the URL, before any step, and keeps nothing."""
    from atlas_change.batch.jobs import job_status, load_job, run_job

    api, aoi, _ = catalogue
    url, root, _ = server
    shutil.copy(aoi, root / "farm.geojson")
    (root / "farm.txt").write_text("no AOI here")
    items = f"{api}/collections/sentinel-2-l2a/items"
    scenes = {"2023-06-05": f"{items}/S2B_32TQM_20230605_0_L2A", "2024-06-12": f"{items}/S2B_32TQM_20240612_0_L2A"}
    job_file = tmp_path / "job.toml"
    for bad, why in ((f"{url}/none.geojson", "cannot fetch the AOI (HTTP 404"), (f"{url}/farm.txt", "not a readable vector file")):
        job_file.write_text(job_text(model12.path, aoi_table("farm", bad, scenes), extra=FAST))
        with pytest.raises(AtlasError, match=f"^{re.escape(bad)}: {re.escape(why)}"):
            run_job(load_job(job_file), scheduler="sync", quiet=True, echo=lambda line: None)
        assert not list((tmp_path / "out" / ".atlas-job").glob("aoi/*")) and not (tmp_path / "out" / "scenes").exists()
    job_file.write_text(job_text(model12.path, aoi_table("farm", f"{url}/farm.geojson", scenes),
                                 extra=FAST + '\nproduce = ["classify", "compare"]'))
    job = load_job(job_file)
    assert [(r.id, r.status) for r in job_status(job)] == [("fetch/farm", "pending")]
    results = run_job(job, scheduler="sync", quiet=True, echo=lambda line: None)
    assert [r.status for r in results] == ["done"] * 3, results
    kept = sorted((tmp_path / "out" / ".atlas-job" / "items" / "farm").glob("*.json"))
    assert [p.name[:10] for p in kept] == ["2023-06-05", "2024-06-12"]
    assert json.loads(kept[0].read_text())["assets"]["red"]["href"].startswith("http://127.0.0.1:")
    [kept_aoi] = (tmp_path / "out" / ".atlas-job" / "aoi").iterdir()
    assert kept_aoi.suffix == ".geojson" and kept_aoi.read_bytes() == aoi.read_bytes()
    runs = [json.loads(p.read_text()) for p in sorted((tmp_path / "out" / "scenes").glob("*/run.json"))]
    assert [r["parameters"]["window"] for r in runs] == [[192, 192, 192, 192]] * 2
    summary = json.loads((tmp_path / "out" / "farm" / "2023-06-05_2024-06-12" / "summary.json").read_text())
    assert summary["aoi_ha"] == pytest.approx(130 * 130 * 100 / 1e4)  # the AOI: 130 x 130 pixels of 10 m
    assert all(r.status == "done" for r in job_status(job))
    (root / "farm.geojson").unlink()  # the server's copy gone: the run reads the kept one
    assert [r.status for r in run_job(job, scheduler="sync", quiet=True, echo=lambda line: None)] == ["up to date"] * 3


@pytest.mark.data
def test_real_l2a_split_across_two_utm_zones_mosaics_back(server, tmp_path):
    """The real Major TOM cell (UTM 48N) cut into two overlapping Items, the western one warped into
    UTM 47N as a neighbouring tile of the other zone would be: an AOI across both is found as a
    mosaic of the two, on the AOI's own grid, and its labels (default model) agree with those of the
    unsplit cell on that same grid: what the split, the second warp and the fusing change."""
    from rasterio.windows import Window

    from atlas_change.mapping.pipeline import classify
    from atlas_change.read.mosaic import write_mosaic

    url, root, _ = server
    items, local = major_tom_split(root, url)
    with rasterio.open(local / "B02.tif") as src:  # the AOI: rows 300..700, cols 300..800 of the cell
        box = shapely.box(*rasterio.windows.bounds(Window(300, 300, 500, 400), src.transform))
        crs = src.crs.to_string()
    aoi = shapely.geometry.shape(transform_geom(crs, "EPSG:4326", box.__geo_interface__))
    whole = item({f.stem: f"{url}/split/whole/{f.name}" for f in local.glob("B*.tif")}, "pc",
                 **{"s2:processing_baseline": "99.99"})
    (root / "split" / "whole").mkdir(exist_ok=True)
    for f in local.glob("B*.tif"):
        (root / "split" / "whole" / f.name).unlink(missing_ok=True)
        (root / "split" / "whole" / f.name).symlink_to(f)
    (root / "split" / "whole.json").write_text(json.dumps(whole))
    with stac_api(items, tmp_path / "api") as api:
        found = search(api, "sentinel-2-l2a", aoi, "2020-02-01/2020-02-29")
        (pick,) = choose(found, 3, aoi=aoi)
        assert pick.url is None and {f.id for f in pick.items} == {"MT_west", "MT_east"}
        mosaic = write_mosaic(tmp_path / "m" / "2020-02-23.mosaic.json", pick.date, [f.url for f in pick.items], aoi)
        ours = classify(str(mosaic), out=tmp_path / "mosaic", scheduler="sync", tta=1)
    # the unsplit cell on the same AOI grid (a "mosaic" of one Item): what the split and the warp alone change
    one = write_mosaic(tmp_path / "m" / "one.mosaic.json", pick.date, [f"{url}/split/whole.json"], aoi)
    same_grid = classify(str(one), scheduler="sync", tta=1)
    assert ours.rio.crs.to_epsg() == 32648 and ours.rio.transform() == same_grid.rio.transform()
    both = (ours["lulc"].values > 0) & (same_grid["lulc"].values > 0)
    agree = (ours["lulc"].values == same_grid["lulc"].values)[both].mean()
    print(f"mosaic of the split vs the unsplit cell on one grid: {agree:.1%} of {both.sum()} cells agree")
    assert both.sum() >= 30 and agree >= 0.85  # measured 97.2 % (70 of 72) cubic; Lanczos 94.4, bilinear 91.7 %


def two_zone_items(server, folder: Path) -> list[str]:
    """conftest.two_zone_scenes (L2A bands) as two STAC Items whose COGs and Item JSONs nginx serves
    (no MGRS tile in them: their tile is told by their footprints): their URLs, 32N first."""
    url, root, _ = server
    urls = []
    for scene in two_zone_scenes(folder, L2A_ORDER):
        zone = scene.parent.name
        sub = f"{folder.name}/{zone}"
        names = band_cogs(scene, root / sub)
        with rasterio.open(scene) as src:
            footprint = transform_geom(src.crs, "EPSG:4326", shapely.box(*src.bounds).__geo_interface__)
        doc = es_item({b: f"{url}/{sub}/{n}" for b, n in names.items()}, f"S2B_{zone}_L2A", "2023-06-05", footprint, 5.0)
        (root / sub / "item.json").write_text(json.dumps(doc))
        urls.append(f"{url}/{sub}/item.json")
    return urls


def test_compare_reads_items_of_two_utm_zones_given_by_url_on_the_aois_grid(server, model12, tmp_path):
    """Two STAC Items named by URL (not found by a search) whose tiles lie in two UTM zones: compare
    reads each as a mosaic of it alone on the AOI's grid, as it does local scenes, rather than
    refusing maps that would not align; the same land in both gives the same labels."""
    urls = two_zone_items(server, tmp_path)
    with pytest.warns(AtlasWarning, match=r"grids differ \(EPSG:32632, EPSG:32633\): each is read on the AOI's grid"):
        s = compare(*urls, aoi_bbox=",".join(map(str, TWO_ZONE_AOI)), after_date="2024-06-05", model=model12.path,
                    allow_untrained=True, scheduler="sync", runtime="graph", tta=1, out=tmp_path / "out" / "ab")
    runs = [json.loads((Path(s[k]["source"]) / "run.json").read_text()) for k in ("before", "after")]
    assert [r["input"]["kind"] for r in runs] == ["mosaic", "mosaic"]
    assert [json.loads(Path(r["input"]["path"]).read_text())["items"] for r in runs] == [[u] for u in urls]
    assert {r["output"]["crs"] for r in runs} == {"EPSG:32633"} and runs[0]["output"]["transform"] == runs[1]["output"]["transform"]
    with rasterio.open(tmp_path / "out" / "ab" / "before.tif") as x, rasterio.open(tmp_path / "out" / "ab" / "after.tif") as y:
        before, after = x.read(1), y.read(1)
    assert (before > 0).sum() == (after > 0).sum() >= 5 and (before == after)[before > 0].mean() >= 0.8


def test_a_job_of_items_of_two_utm_zones_reads_them_on_the_aois_grid(server, model12, tmp_path):
    """A job whose AOI's two dates are STAC Items (by URL) of tiles in two UTM zones: `run` keeps the
    Items, tells their tiles apart from the Items themselves (as a search does, so `status` reads
    nothing from the web), reads each on the AOI's grid (one-scene mosaics under the job's state)
    and compares them; status is done and a rerun up to date."""
    from atlas_change.batch.jobs import job_status, load_job, run_job

    urls = two_zone_items(server, tmp_path)
    aoi = tmp_path / "aoi.geojson"
    gpd.GeoDataFrame(geometry=[shapely.box(*TWO_ZONE_AOI)], crs="EPSG:4326").to_file(aoi, driver="GeoJSON")
    f = tmp_path / "job.toml"
    f.write_text(job_text(model12.path, aoi_table("edge", aoi, {"2023-06-05": urls[0], "2024-06-05": urls[1]}),
                          extra=FAST + '\nproduce = ["classify", "compare"]'))
    lines = []
    assert [r.status for r in run_job(load_job(f), scheduler="sync", quiet=True, echo=lines.append)] == ["done"] * 3
    assert any(ln.startswith("edge: its STAC Items lie on 2 tiles") for ln in lines), lines
    mosaics = sorted((tmp_path / "out" / ".atlas-job" / "mosaics" / "edge").glob("*.mosaic.json"))
    kept = sorted((tmp_path / "out" / ".atlas-job" / "items" / "edge").glob("*.json"))
    assert sorted(json.loads(m.read_text())["items"][0] for m in mosaics) == [str(k) for k in kept] and len(kept) == 2
    runs = [json.loads(p.read_text()) for p in sorted((tmp_path / "out" / "scenes").glob("*/run.json"))]
    assert {r["output"]["crs"] for r in runs} == {"EPSG:32633"} and {r["input"]["kind"] for r in runs} == {"mosaic"}
    s = json.loads((tmp_path / "out" / "edge" / "2023-06-05_2024-06-05" / "summary.json").read_text())
    assert s["valid_ha"] == s["aoi_cells_ha"] >= 5 * 40.96
    assert {r.status for r in job_status(load_job(f))} == {"done"}
    assert [r.status for r in run_job(load_job(f), scheduler="sync", quiet=True, echo=lines.append)] == ["up to date"] * 3


def test_a_job_of_a_local_scene_and_an_item_of_another_utm_zone_reads_them_on_the_aois_grid(server, model12, tmp_path):
    """A job whose AOI has a local scene of UTM 32N on one date and a STAC Item (by URL) of 33N on the
    other: told apart by CRS (the scene's header, the Item's proj:code), both are read on the AOI's grid
    and compared, as compare does, where they used to fail the compare step on grids that differ."""
    from atlas_change.batch.jobs import job_status, load_job, run_job

    urls = two_zone_items(server, tmp_path)
    served = server[1] / tmp_path.name / "t33" / "item.json"
    doc = json.loads(served.read_text())
    doc["properties"]["proj:code"] = "EPSG:32633"
    served.write_text(json.dumps(doc))
    aoi = tmp_path / "aoi.geojson"
    gpd.GeoDataFrame(geometry=[shapely.box(*TWO_ZONE_AOI)], crs="EPSG:4326").to_file(aoi, driver="GeoJSON")
    f = tmp_path / "job.toml"
    scenes = {"2023-06-05": str(tmp_path / "t32" / "scene.tif"), "2024-06-05": urls[1]}
    f.write_text(job_text(model12.path, aoi_table("edge", aoi, scenes), extra=FAST + '\nproduce = ["classify", "compare"]'))
    lines = []
    assert [r.status for r in run_job(load_job(f), scheduler="sync", quiet=True, echo=lines.append)] == ["done"] * 3
    assert any(ln.startswith("edge: its scenes and STAC Items lie in 2 CRSs (EPSG:32632, EPSG:32633)") for ln in lines), lines
    runs = [json.loads(p.read_text()) for p in sorted((tmp_path / "out" / "scenes").glob("*/run.json"))]
    assert {r["output"]["crs"] for r in runs} == {"EPSG:32633"} and [r["input"]["kind"] for r in runs] == ["mosaic"] * 2
    with rasterio.open(tmp_path / "out" / "edge" / "2023-06-05_2024-06-05" / "before.tif") as x, \
            rasterio.open(tmp_path / "out" / "edge" / "2023-06-05_2024-06-05" / "after.tif") as y:
        before, after = x.read(1), y.read(1)
    assert (before > 0).sum() == (after > 0).sum() >= 5 and (before == after)[before > 0].mean() >= 0.8
    assert {r.status for r in job_status(load_job(f))} == {"done"}
    assert [r.status for r in run_job(load_job(f), scheduler="sync", quiet=True, echo=lines.append)] == ["up to date"] * 3


def test_dates_share_one_grid_or_all_become_mosaics(tmp_path):
    """One tile on every date: the Items' own URLs (their tile grid). A mosaic on any date, or Items of
    two tiles: every date a mosaic on the AOI's grid, since compare refuses maps that do not align."""
    from atlas_change.read.mosaic import aoi_grid
    from atlas_change.batch.search import Found, Pick, scene_files

    def pick(day, *tiles):
        return Pick(day, tuple(Found(f"http://x/{t}_{day}", f"{t}_{day}", day, 1.0, 1.0, 1.0,
                                     item={"properties": {"s2:mgrs_tile": t}}) for t in tiles), 1.0)

    aoi = shapely.box(11.96, 44.995, 12.05, 45.01)
    same = [[pick("2023-06-05", "32TQM")], [pick("2024-06-12", "32TQM")]]
    assert scene_files(same, tmp_path, aoi) == [["http://x/32TQM_2023-06-05"], ["http://x/32TQM_2024-06-12"]]
    for sides in ([[pick("2023-06-05", "32TQM", "33TUG")], [pick("2024-06-12", "33TUG")]],
                  [[pick("2023-06-05", "32TQM")], [pick("2024-06-12", "33TUG")]]):
        files = [f for side in scene_files(sides, tmp_path, aoi) for f in side]
        docs = [json.loads(Path(f).read_text()) for f in files]
        assert all(str(f).endswith(".mosaic.json") for f in files)
        assert len({(d["crs"], tuple(d["transform"])) for d in docs}) == 1 and docs[0]["crs"] == aoi_grid(aoi)[0].to_string()
        assert [d["items"] for d in docs][1] == ["http://x/33TUG_2024-06-12"]


def test_job_search_across_two_zones_keeps_a_mosaic(two_zones, model12, tmp_path):
    """A job's search whose date needs two Items: the Items kept as files, the mosaic naming them by
    relative path beside them, and the date classified from that mosaic on the AOI's grid."""
    from atlas_change.batch.jobs import load_job, run_job

    api, aoi, _ = two_zones
    job_file = tmp_path / "job.toml"
    job_file.write_text(job_text(model12.path, f'[[aoi]]\nname = "edge"\nfile = "{aoi}"\nsearch = {{ api = "{api}", '
                                 'periods = { june = "2023-06-01/2023-06-30" } }\n', extra=FAST + '\nproduce = ["classify"]'))
    results = run_job(load_job(job_file), scheduler="sync", quiet=True, echo=lambda line: None)
    assert [r.status for r in results] == ["done"], results
    kept = tmp_path / "out" / ".atlas-job" / "search" / "edge"
    (mosaic,) = kept.glob("*.mosaic.json")
    doc = json.loads(mosaic.read_text())
    assert [n.rsplit("_", 1)[0] for n in sorted(doc["items"])] == ["S2B_32TXX_20230605_0_L2A", "S2B_33TXX_20230605_0_L2A"]
    assert all((kept / name).is_file() for name in doc["items"]) and doc["crs"] == "EPSG:32633"
    run = json.loads(next((tmp_path / "out" / "scenes").glob("*/run.json")).read_text())
    assert run["input"]["kind"] == "mosaic" and run["output"]["crs"] == "EPSG:32633"
    assert run["counts"]["cloud_cells"] == 0


def test_item_ids_never_leave_the_folder_and_two_items_never_share_a_file(tmp_path):
    """A catalogue's Item id is data: '../' ids, absolute ids and one id used by two Items of two
    dates each give their own file inside the folder."""
    from atlas_change.batch.search import Found, save_item

    folder = tmp_path / "out" / "items"
    ids = ["../../../../escaped_0", "/tmp/escaped_1", "same", "same", "with space?"]
    found = [Found(f"http://127.0.0.1:1/items/{i}", i, d, None, None, 1.0,
                   item={"type": "Feature", "id": i, "properties": {"datetime": f"{d}T10:00:00Z"}, "assets": {}})
             for i, d in zip(ids, ["2023-06-05", "2023-06-06", "2023-06-07", "2024-06-07", "2023-06-08"])]
    paths = [save_item(f, folder) for f in found]
    assert len(set(paths)) == len(paths)
    for p, f in zip(paths, found):
        assert p.parent == folder and p.is_file() and json.loads(p.read_text())["properties"] == f.item["properties"]
    assert sorted(q.name for q in tmp_path.rglob("*") if q.is_file()) == sorted(p.name for p in paths)
    assert not Path("/tmp/escaped_1.json").exists()


def test_an_aoi_across_the_antimeridian_gets_its_own_utm_zone():
    """An AOI written with longitudes 179.95 and -179.95 is 10 km wide at the antimeridian (UTM zone 1 or
    60), not the whole world round through Greenwich (zone 31)."""
    import shapely

    from atlas_change.read.mosaic import aoi_grid

    fiji = shapely.Polygon([(179.95, -17.0), (-179.95, -17.0), (-179.95, -16.9), (179.95, -16.9)])
    crs, _, w, h = aoi_grid(fiji)
    assert crs.to_epsg() in (32701, 32760) and w * 10 < 15_000 and h * 10 < 15_000
    assert aoi_grid(shapely.box(9.0, 45.0, 9.1, 45.1))[0].to_epsg() == 32632  # elsewhere as before
