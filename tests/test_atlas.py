"""The atlas of a region over two periods: tiles on two UTM zones found in a real STAC API (rustac
serve) and read over HTTP from nginx, merged onto the EEA grid without a seam, hectares per unit
that add up to the units' areas, a tile that cannot be read listed, a rerun that does nothing."""
from __future__ import annotations

import json
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from rasterio.warp import transform_geom

from atlas_change.bands import L2A_ORDER
from atlas_change.synth import make_scene
from conftest import band_cogs, item, stac_api

#: two tiles either side of the UTM zone boundary at 12 deg E that overlap there (as test_search's)
TILES = {"32TXX": ("EPSG:32632", (730750.0, 4992130.0)), "33TXX": ("EPSG:32633", (260200.0, 4992460.0))}
SIZE = (1024, 768)  # 10.24 x 7.68 km: 32TXX spans 11.93-12.06 E, 33TXX 11.96-12.09 E
PERIODS = {"y2023": ("2023-06-01/2023-08-31", "2023-06-05"), "y2024": ("2024-06-01/2024-08-31", "2024-06-07")}
#: three units: west of the boundary, across it, east of it (lon / lat)
UNITS = {"W": (11.935, 44.985, 11.99, 45.035), "M": (11.99, 44.985, 12.02, 45.035),
         "E": (12.02, 44.985, 12.08, 45.035)}


def _item(hrefs: dict, tile: str, day: str, footprint: dict) -> dict:
    it = item(hrefs, "earth-search", **{"s2:processing_baseline": "05.09", "eo:cloud_cover": 10.0,
                                        "mgrs:utm_zone": int(tile[:2]), "mgrs:latitude_band": tile[2],
                                        "mgrs:grid_square": tile[3:]})
    it.update(id=f"S2B_{tile}_{day.replace('-', '')}_0_L2A", geometry=footprint,
              bbox=list(shapely.geometry.shape(footprint).bounds))
    it["properties"]["datetime"] = f"{day}T10:15:59Z"
    return it


@pytest.fixture(scope="module")
def region(server, tmp_path_factory):
    """(STAC API url, units file, folder, nginx root): two periods of the two tiles, and in 2024 a third
    Item (another tile) whose band files are not on the server."""
    url, root, _ = server
    d = tmp_path_factory.mktemp("atlas")
    items = []
    for k, (name, (_, day)) in enumerate(PERIODS.items()):
        for tile, (crs, origin) in TILES.items():
            scene = make_scene(d / f"{tile}_{day}.tif", *SIZE, bands=L2A_ORDER, crs=crs, origin=origin,
                               seed=31 + k * 2 + (tile == "33TXX"))
            folder = root / "atlas" / day / tile
            names = band_cogs(scene, folder)
            with rasterio.open(scene) as src:
                footprint = transform_geom(src.crs, "EPSG:4326", shapely.box(*src.bounds).__geo_interface__)
            items.append(_item({b: f"{url}/atlas/{day}/{tile}/{n}" for b, n in names.items()}, tile, day, footprint))
    lost = _item({b: f"{url}/atlas/missing/{b}.tif" for b in (*L2A_ORDER, "SCL")}, "32TYY", "2024-06-07",
                 shapely.box(11.95, 44.99, 11.97, 45.0).__geo_interface__)
    items.append(lost)
    units = d / "units.gpkg"
    gpd.GeoDataFrame({"NUTS_ID": list(UNITS), "name": ["west", "middle", "east"]},
                     geometry=[shapely.box(*b) for b in UNITS.values()], crs="EPSG:4326").to_file(units)
    with stac_api(items, d / "api") as api:
        yield api, units, d


def _atlas(api, units, out, *extra, args_only: bool = False):
    """Run the atlas command (or with `args_only`, return its arguments)."""
    args = [sys.executable, "-m", "atlas_change", "atlas", "--region", str(units), "--unit-field", "NUTS_ID",
            "--stac-api", api, "--out", str(out), "--runtime", "graph", "--tta", "1", "--allow-untrained",
            "--scheduler", "sync", *extra]
    for name, (rng, _) in PERIODS.items():
        args += ["--period", f"{name}={rng}"]
    return args if args_only else subprocess.run(args, capture_output=True, text=True)


@pytest.fixture(scope="module")
def made(region, model12, tmp_path_factory):
    api, units, _ = region
    out = tmp_path_factory.mktemp("made") / "atlas"
    r = _atlas(api, units, out, "--model", str(model12.path))
    return r, out


def _cell_centres_in(geom, transform, shape) -> np.ndarray:
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    x, y = transform * (cols + 0.5, rows + 0.5)
    return shapely.contains_xy(geom, x, y)


def test_atlas_maps_each_period_on_the_eea_grid_without_a_seam(made, region):
    r, out = made
    assert r.returncode == 1 and (out / "atlas.json").exists(), r.stdout + r.stderr  # the lost tile failed: said by the exit status, the rest is written
    record = json.loads((out / "atlas.json").read_text())
    failed = [t for p in record["periods"].values() for t in p["tiles"].values() if t["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["tile"] == "32TYY" and "missing" in failed[0]["error"]
    for name in PERIODS:
        with rasterio.open(out / name / "lulc.tif") as src:
            assert src.crs.to_epsg() == 3035 and src.res == (640.0, 640.0)
            assert src.transform.c % 640 == 0 and src.transform.f % 640 == 0  # EEA grid: multiples of the cell
            assert src.tags()["MODEL"] == "sn12" and src.overviews(1) is not None
            lulc, t = src.read(1), src.transform
        with rasterio.open(out / name / "probabilities.tif") as src:
            assert src.count == 10 and src.descriptions[0] == "p_AnnualCrop"
            p = src.read()
        assert np.allclose(p[:, lulc > 0].sum(axis=0), 1, atol=1e-4)
        assert (p[:, lulc > 0].argmax(axis=0) + 1 == lulc[lulc > 0]).all()
        # no seam: every cell centred in the region and well inside the tiles' union (1 cell in) is labelled
        tiles = shapely.union_all([shapely.box(*src_bounds(out / name / "tiles" / k)) for k in
                                   (p.name for p in (out / name / "tiles").iterdir())])
        units = gpd.read_file(region[1]).to_crs(3035)
        inner = shapely.intersection(units.union_all(), tiles.buffer(-640))
        assert inner.area > 0.3 * units.union_all().area
        want = _cell_centres_in(inner, t, lulc.shape)
        assert want.sum() > 60 and (lulc[want] > 0).all()


def src_bounds(tile_folder):
    """A tile's classified area in EPSG:3035."""
    with rasterio.open(tile_folder / "lulc.tif") as src:
        return rasterio.warp.transform_bounds(src.crs, "EPSG:3035", *src.bounds)


def test_hectares_per_unit_add_up_to_the_unit(made, region):
    _, out = made
    stats = pd.read_csv(out / "stats.csv")
    assert list(stats.columns) == ["unit", "period", "class", "group", "cells", "hectares", "model", "weights_sha256"]
    run = json.loads((out / "y2023" / "run.json").read_text())["model"]  # every figure names its model
    assert set(stats["model"]) == {"sn12"} and set(stats["weights_sha256"]) == {run["weights_sha256"]}
    assert pd.read_parquet(out / "stats.parquet").equals(stats) or np.allclose(
        pd.read_parquet(out / "stats.parquet")["hectares"], stats["hectares"])
    units = gpd.read_file(region[1]).to_crs(3035)
    with rasterio.open(out / "y2023" / "lulc.tif") as src:
        t, shape = src.transform, (src.height, src.width)
    for _, u in units.iterrows():
        cells = int(_cell_centres_in(u.geometry, t, shape).sum())
        for period in PERIODS:
            mine = stats[(stats.unit == u.NUTS_ID) & (stats.period == period)]
            assert set(mine["class"]) >= {"uncertain", "cloud", "nodata", "Forest"}
            assert mine["cells"].sum() == cells and mine["hectares"].sum() == pytest.approx(cells * 40.96, abs=0.05)
    # the middle unit, across the zone boundary, is seen whole
    middle = stats[(stats.unit == "M") & (stats["class"] == "nodata")]
    assert (middle["cells"] == 0).all()
    changes = pd.read_csv(out / "changes.csv")
    assert set(changes["step"]) == {"y2023->y2024"} and set(changes["weights_sha256"]) == {run["weights_sha256"]}
    per_unit = changes.groupby("unit")["cells"].sum()
    for _, u in units.iterrows():
        assert per_unit[u.NUTS_ID] == int(_cell_centres_in(u.geometry, t, shape).sum())
    gpkg = gpd.read_file(out / "units.gpkg", layer="units")
    assert list(gpkg["unit"]) == list(UNITS) and "y2024_Forest_ha" in gpkg.columns
    assert set(gpkg["model"]) == {"sn12"} and set(gpkg["weights_sha256"]) == {run["weights_sha256"]}
    record = json.loads((out / "atlas.json").read_text())
    assert all(p["weights_sha256"] == run["weights_sha256"] for p in record["periods"].values())
    assert f"model: sn12 ({run['weights_sha256'][:12]})" in (out / "atlas.html").read_text()
    assert (out / "change" / "summary.json").exists() and (out / "change" / "change.tif").exists()


def test_a_rerun_does_nothing_and_keeps_every_file(made, region, model12):
    r, out = made
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.tif")}
    again = _atlas(region[0], region[1], out, "--model", str(model12.path))
    assert again.returncode == 1  # the lost tile is tried again and still fails
    lines = again.stdout.splitlines()
    assert sum("up to date" in ln for ln in lines) == 4 + 2 + 1, again.stdout  # 4 tiles, 2 maps, the change
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.tif")} == before


def test_a_second_run_on_one_output_is_refused(made, region):
    from atlas_change.atlas.run import LOCK_FILE
    from atlas_change.outputs import folder_lock

    r, out = made
    with folder_lock(out / LOCK_FILE, "held by the test", "cannot"):
        second = _atlas(region[0], region[1], out)
    assert second.returncode == 2 and second.stderr.strip().count("\n") == 0
    assert "another atlas run is writing here" in second.stderr and f"pid {__import__('os').getpid()}" in second.stderr


def test_bad_region_is_one_line(region, tmp_path):
    api, units, _ = region
    r = _atlas(api, units, tmp_path / "o", "--unit-field", "NOPE")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "no field 'NOPE'" in r.stderr and "NUTS_ID" in r.stderr and not (tmp_path / "o").exists()
    for flag, value in (("--stay", "1.5"), ("--min-confidence", "0.3")):  # refused before any tile is classified
        r = _atlas(api, units, tmp_path / "o", flag, value)
        assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and f"{flag} {value}" in r.stderr
        assert not (tmp_path / "o").exists()
    import os

    big = subprocess.run(_atlas(api, units, tmp_path / "o", args_only=True), capture_output=True, text=True,
                         env={**os.environ, "ATLAS_MAX_CELLS": "100"})
    assert big.returncode == 2 and big.stderr.strip().count("\n") == 0 and not (tmp_path / "o").exists()
    assert big.stderr.startswith(f"atlas-change: error: {units}: needs ") and "more than 100" in big.stderr


def test_a_region_given_as_a_url_gives_the_atlas_of_the_file(made, region, model12, server, tmp_path):
    """--region https://...: the units come over HTTP (nginx), bounded as Items are, into the cache, and
    give the atlas the local file gave (the tiles of a copy of it reused); atlas.json names the URL."""
    import shutil

    api, units, _ = region
    url, root, _ = server
    (root / "atlas" / "units.gpkg").write_bytes(units.read_bytes())
    out = tmp_path / "atlas"
    shutil.copytree(made[1], out)
    r = _atlas(api, f"{url}/atlas/units.gpkg", out, "--model", str(model12.path))
    assert r.returncode == 1 and "1 tile(s) failed" in r.stdout, r.stdout + r.stderr
    assert (out / "stats.csv").read_text() == (made[1] / "stats.csv").read_text()
    assert json.loads((out / "atlas.json").read_text())["region"] == f"{url}/atlas/units.gpkg"
    missing = _atlas(api, f"{url}/atlas/no-units.gpkg", tmp_path / "o", "--model", str(model12.path))
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0, missing.stderr
    assert f"{url}/atlas/no-units.gpkg: cannot fetch the region's units (HTTP 404" in missing.stderr
    assert not (tmp_path / "o").exists()


def test_a_job_file_atlas_table_gives_the_same_atlas(made, region, model12, tmp_path):
    api, units, _ = region
    periods = ", ".join(f'{name} = "{rng}"' for name, (rng, _) in PERIODS.items())
    job = tmp_path / "atlas.toml"
    job.write_text(f'name = "region"\noutput = "out"\nmodel = "{model12.path}"\nruntime = "graph"\ntta = 1\n'
                   f'allow_untrained = true\n[atlas]\nregion = "{units}"\nunit_field = "NUTS_ID"\nstac_api = "{api}"\n'
                   f"periods = {{ {periods} }}\n")
    r = subprocess.run([sys.executable, "-m", "atlas_change", "run", str(job), "--scheduler", "sync"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "1 tile(s) failed" in r.stdout, r.stdout + r.stderr
    assert (tmp_path / "out" / "stats.csv").read_text() == (made[1] / "stats.csv").read_text()
    st = subprocess.run([sys.executable, "-m", "atlas_change", "status", str(job)], capture_output=True, text=True)
    assert st.returncode == 1 and "y2024 (2024-06-01/2024-08-31): 3 tiles: 2 done, 1 failed" in st.stdout, st.stdout
    job.write_text(job.read_text().replace("[atlas]", "cell = 100\n[atlas]"))
    bad = subprocess.run([sys.executable, "-m", "atlas_change", "run", str(job)], capture_output=True, text=True)
    assert bad.returncode == 2 and "cell: unknown key" in bad.stderr


def test_a_killed_run_resumes_from_its_finished_tiles(region, model12, tmp_path):
    import os
    import signal
    import time

    api, units, _ = region
    out = tmp_path / "atlas"
    args = [sys.executable, "-m", "atlas_change", "atlas", "--region", str(units), "--unit-field", "NUTS_ID",
            "--stac-api", api, "--out", str(out), "--runtime", "graph", "--tta", "1", "--allow-untrained",
            "--scheduler", "sync", "--model", str(model12.path)]
    for name, (rng, _) in PERIODS.items():
        args += ["--period", f"{name}={rng}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while not list(out.glob("y2023/tiles/*/run.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name for p in out.glob("*/tiles/*/run.json")}
    assert finished and not (out / "atlas.json").exists()
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr  # only the lost tile fails
    record = json.loads((out / "atlas.json").read_text())
    status = {k: t["status"] for p in record["periods"].values() for k, t in p["tiles"].items()}
    assert all(status[k] == "up to date" for k in finished) and (out / "stats.csv").exists()


def test_an_atlas_made_band_by_band_is_the_atlas_made_whole(made, region, model12, tmp_path):
    """ATLAS_BAND_CELLS=40 (a few grid rows a band): the period maps merged and written band by band,
    the change decided per band (one compare output each), the statistics counted per band: the same
    maps, the same hectares per unit and the same from-to hectares as the atlas made in one band."""
    import os

    out = tmp_path / "atlas"
    r = subprocess.run(_atlas(region[0], region[1], out, "--model", str(model12.path), args_only=True),
                       capture_output=True, text=True, env={**os.environ, "ATLAS_BAND_CELLS": "40"})
    assert r.returncode == 1, r.stdout + r.stderr  # the lost tile, as in `made`
    bands = json.loads((out / "change" / "summary.json").read_text())["bands"]
    assert len(bands) >= 3 and all((out / "change" / b["folder"] / "change.tif").exists() for b in bands)
    with rasterio.open(out / "change" / "change.tif") as whole, rasterio.open(out / "y2023" / "lulc.tif") as grid:
        assert whole.transform == grid.transform and whole.shape == grid.shape  # the bands mosaicked on the grid
        with rasterio.open(made[1] / "change" / "change.tif") as one:  # compare's grid: the region's cells
            r0, c0 = (round((grid.transform.f - one.transform.f) / 640), round((one.transform.c - grid.transform.c) / 640))
            mine = whole.read(1)[r0:r0 + one.height, c0:c0 + one.width]
            assert (mine == one.read(1)).all()
    for name in PERIODS:
        for f in ("lulc.tif", "probabilities.tif", "cloud.tif", "observations.tif"):
            with rasterio.open(out / name / f) as a, rasterio.open(made[1] / name / f) as b:
                assert a.transform == b.transform and a.shape == b.shape
                np.testing.assert_allclose(a.read(), b.read(), rtol=0, atol=1e-6, err_msg=f)
        cells = gpd.read_parquet(out / name / "cells.parquet")
        assert len(cells) == len(gpd.read_parquet(made[1] / name / "cells.parquet"))
    for f in ("stats.csv", "changes.csv"):
        mine, theirs = pd.read_csv(out / f), pd.read_csv(made[1] / f)
        keys = [c for c in mine.columns if c not in ("cells", "hectares")]
        joined = mine.merge(theirs, on=keys, how="outer", suffixes=("", "_whole")).fillna(0)
        assert (joined["cells"] == joined["cells_whole"]).all(), f


class KillOnce:
    """A Dask worker plugin that kills its worker (SIGKILL, as the kernel's OOM killer would) when
    the first task starts executing anywhere on the cluster (a marker file says it was done)."""

    def __init__(self, marker: str):
        self.marker = marker

    def setup(self, worker):
        pass

    def teardown(self, worker):
        pass

    def transition(self, key, start, finish, **kwargs):
        import os
        import signal

        if finish == "executing" and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_worker_changes_nothing(made, region, model12, tmp_path):
    """The atlas on a running Dask cluster of two worker processes, one of which is killed as it
    starts the first task: the nanny starts it again, the scheduler gives its tasks to a worker,
    and the atlas is the one made in a single process, to the byte in its figures."""
    import cloudpickle
    from distributed import Client, LocalCluster
    from distributed.diagnostics.plugin import WorkerPlugin

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the plugin class travels by value
    marker = tmp_path / "killed"
    plugin = type("KillOncePlugin", (KillOnce, WorkerPlugin), {})(str(marker))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        client.register_plugin(plugin)
        r = _atlas(region[0], region[1], tmp_path / "atlas", "--model", str(model12.path),
                   "--scheduler", cluster.scheduler_address)
        workers = len(client.scheduler_info()["workers"])
    assert marker.exists() and workers == 2  # a worker died, and was started again
    assert r.returncode == 1, r.stdout + r.stderr  # only the lost tile fails, as in `made`
    for f in ("stats.csv", "changes.csv"):
        assert (tmp_path / "atlas" / f).read_text() == (made[1] / f).read_text()
    for name in PERIODS:
        with rasterio.open(tmp_path / "atlas" / name / "lulc.tif") as a, rasterio.open(made[1] / name / "lulc.tif") as b:
            assert (a.read(1) == b.read(1)).all()


@pytest.mark.data
def test_real_l2a_split_across_two_utm_zones_gives_the_atlas_of_the_whole_cell(server, tmp_path):
    """The real Major TOM L2A cell cut into two Items on UTM 47N and 48N (conftest.major_tom_split) and,
    in a second catalogue, the whole cell as one Item: the two atlases (default model, stride 16, an
    equal-area grid of 640 m cells, EPSG:6933) label every cell of the region, and label it alike:
    measured 89.5 % of 143 cells. At stride 64 they agree on 74 %: each tile has its own 640 m patch
    grid (the split Items start 36 px off the cell's, the western one resampled into 47N), and on this
    mixed land a 640 m patch's label depends on where its edges fall; not a seam (every cell labelled)."""
    from conftest import major_tom_split

    url, root, _ = server
    items, local = major_tom_split(root, url)
    whole = item({f.stem: f"{url}/split/whole/{f.name}" for f in local.glob("B*.tif")}, "pc",
                 **{"s2:processing_baseline": "99.99", "eo:cloud_cover": 1.0})
    (root / "split" / "whole").mkdir(exist_ok=True)
    for f in local.glob("B*.tif"):
        (root / "split" / "whole" / f.name).unlink(missing_ok=True)
        (root / "split" / "whole" / f.name).symlink_to(f)
    with rasterio.open(local / "B02.tif") as src:  # two units: the cell's rows 150..900, cols 150..560 / 560..900
        t = src.transform * src.transform.scale(1068 / src.width)
        boxes = [shapely.box(*(t * (c0, 900)), *(t * (c1, 150))) for c0, c1 in ((150, 560), (560, 900))]
        crs = src.crs
    units = tmp_path / "units.gpkg"
    gpd.GeoDataFrame({"ID": ["west", "east"]}, geometry=boxes, crs=crs).to_file(units)
    whole.update(id="MT_whole", geometry=items[0]["geometry"], bbox=None)
    whole["geometry"] = shapely.geometry.mapping(shapely.union_all([shapely.geometry.shape(i["geometry"]) for i in items]))
    whole["bbox"] = list(shapely.geometry.shape(whole["geometry"]).bounds)
    whole["properties"]["datetime"] = "2020-02-23T03:27:39Z"
    maps = {}
    for name, catalogue in (("split", items), ("whole", [whole])):
        with stac_api(catalogue, tmp_path / f"api_{name}") as api:
            r = subprocess.run([sys.executable, "-m", "atlas_change", "atlas", "--region", str(units), "--unit-field", "ID",
                                "--stac-api", api, "--period", "feb=2020-02-01/2020-02-29", "--grid-crs", "EPSG:6933", "--stride", "16", "--cell", "640",
                                "--out", str(tmp_path / name), "--scheduler", "sync"], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        with rasterio.open(tmp_path / name / "feb" / "lulc.tif") as src:
            maps[name], grid_t = src.read(1), src.transform
    region = gpd.read_file(units).to_crs(6933).union_all()
    inside = _cell_centres_in(region, grid_t, maps["split"].shape)
    split_tiles = json.loads((tmp_path / "split" / "atlas.json").read_text())["periods"]["feb"]["tiles"]
    assert sorted(t["item"] for t in split_tiles.values()) == ["MT_east", "MT_west"]
    assert inside.sum() >= 100 and (maps["split"][inside] > 0).all() and (maps["whole"][inside] > 0).all()
    agree = (maps["split"] == maps["whole"])[inside].mean()
    print(f"atlas of the split cell vs the whole cell: {agree:.1%} of {inside.sum()} cells agree")
    assert agree >= 0.85
    stats = pd.read_csv(tmp_path / "split" / "stats.csv")
    assert stats[stats["class"] == "nodata"]["cells"].sum() == 0


def test_overlapping_units_are_said_and_each_cell_is_counted_once(tmp_path):
    """Units that overlap (a sloppy boundary file): the overlap's hectares in the equal-area grid's CRS,
    a warning naming them before any search, and unit_index counting such a cell in the first unit."""
    from rasterio.transform import from_origin

    from atlas_change.atlas.grid import unit_index
    from atlas_change.atlas.stats import overlap_ha

    boxes = [shapely.box(4_000_000, 2_500_000, 4_010_000, 2_510_000), shapely.box(4_008_000, 2_500_000, 4_018_000, 2_510_000)]
    units = gpd.GeoDataFrame({"NUTS_ID": ["A", "B"]}, geometry=boxes, crs="EPSG:3035")
    assert overlap_ha(units, "EPSG:3035") == pytest.approx(2_000 * 10_000 / 1e4)  # 2 km x 10 km = 2,000 ha
    index = unit_index(units.geometry.values, from_origin(4_000_000, 2_510_000, 1_000, 1_000), (10, 18))
    assert (index == 1).sum() == 100 and (index == 2).sum() == 80  # the 20 shared cells in A only
    units.to_crs(4326).to_file(tmp_path / "units.gpkg")
    r = subprocess.run([sys.executable, "-m", "atlas_change", "atlas", "--region", str(tmp_path / "units.gpkg"),
                        "--unit-field", "NUTS_ID", "--stac-api", "http://127.0.0.1:9", "--period",
                        "y=2023-06-01/2023-08-31", "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2 and "units overlap over 2000.0 ha" in r.stderr and "first of them" in r.stderr, r.stderr
