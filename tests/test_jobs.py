"""Batch jobs: validation, resumable runs, failure isolation, locking, crash and worker faults."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlas_change.__main__ import main
from atlas_change.errors import AtlasError
from atlas_change.batch.jobs import job_lock, job_status, load_job, parse_job, plan, run_job
from atlas_change.synth import DEMO_DATES, demo_inputs, make_scene
from conftest import TWO_ZONE_AOI, two_zone_scenes

ROOT = Path(__file__).resolve().parents[1]


def write_aoi(path: Path, box=(600700, 4992000, 604500, 4999300), crs="EPSG:32632") -> Path:
    """An AOI polygon given in UTM 32N, written in EPSG:4326 (as a user's GeoJSON would be)."""
    gpd.GeoDataFrame(geometry=[shapely.box(*box)], crs=crs).to_crs(4326).to_file(path)
    return path


def job_text(model, aois: str, output="out", extra="") -> str:
    return (f'name = "t"\nmodel = "{model}"\nallow_untrained = true\noutput = "{output}"\nchunk = 256\n'
            f'{extra}\n{aois}')


def aoi_table(name, file, scenes: dict, extra="") -> str:
    sc = ", ".join(f'{d} = "{p}"' for d, p in scenes.items())
    return f'[[aoi]]\nname = "{name}"\nfile = "{file}"\nscenes = {{ {sc} }}\n{extra}\n'


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """jobs/example.toml and aoi/example.geojson in a copy of the project layout, with the demo's inputs."""
    root = tmp_path_factory.mktemp("proj")
    for rel in ("jobs/example.toml", "aoi/example.geojson"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, root / rel)
    demo_inputs(root / "outputs" / "demo", size=512)
    return root


def test_example_job_runs_then_is_up_to_date(example):
    job = load_job(example / "jobs" / "example.toml")
    assert [s.id for s in plan(job)] == ["classify/scene_2023-06-01", "classify/scene_2024-06-01",
                                         "compare/example/2023-06-01_2024-06-01",
                                         "gpkg/example/2023-06-01_2024-06-01", "html/example/2023-06-01_2024-06-01"]
    first = run_job(job, scheduler="sync", quiet=True, echo=lambda s: None)
    assert [r.status for r in first] == ["done"] * 5, first
    pair = example / "outputs" / "example" / "example" / "2023-06-01_2024-06-01"
    summary = json.loads((pair / "summary.json").read_text())
    assert (summary["before"]["date"], summary["after"]["date"]) == DEMO_DATES
    assert set(gpd.list_layers(pair / "cells.gpkg")["name"]) == {"cells_before", "cells_after", "changes", "aoi",
                                                                 "layer_styles"}
    assert (pair / "change_map.html").stat().st_size > 1000
    with rasterio.open(example / "outputs" / "example" / "scenes" / "scene_2023-06-01" / "lulc.tif") as src:
        assert src.crs.to_epsg() == 32632 and src.res == (640.0, 640.0)

    again = run_job(job, scheduler="sync", quiet=True, echo=lambda s: None)
    assert [r.status for r in again] == ["up to date"] * 5
    assert [r.status for r in job_status(job)] == ["done"] * 5

    # a changed input makes its classify stale; run redoes it and what depends on it, not the other date
    make_scene(example / "outputs" / "demo" / "scene_2024-06-01.tif", 512, 512, nodata_border=100, seed=7,
               tags={"DATE": "2024-06-01"})
    assert [r.status for r in job_status(job)][:2] == ["done", "stale"]
    third = run_job(job, scheduler="sync", quiet=True, echo=lambda s: None)
    assert [r.status for r in third] == ["up to date", "done", "done", "done", "done"]


def test_validation_reports_every_problem_with_lines(tmp_path, model13):
    make_scene(tmp_path / "a.tif", 128, 128)
    write_aoi(tmp_path / "aoi.geojson")
    text = job_text(model13.path, aoi_table("x", "aoi.geojson", {"2023-01-01": "a.tif", "2023-13-01": "a.tif"})
                    + aoi_table("x", "missing.geojson", {"2023-01-01": "a.tif", "2024-01-01": "nothing*.tif"},
                                'pairs = [["2024-01-01", "2023-01-01"]]'),
                    extra="stride = 48\ncolour = 'red'\nmax_cloud = 1.5")
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(AtlasError) as e:
        load_job(f)
    msg = str(e.value)
    assert msg.startswith(f"{f}: 8 problems:\n  line ") and msg.count("\n") == 8  # one problem a line
    for part in ("line 6: stride: 48: must be 64, 32 or 16", "line 7: colour: unknown key",
                 "line 8: max_cloud: 1.5: must be in [0, 1]", "line 12: aoi[0].scenes.2023-13-01: '2023-13-01' is not a date", "aoi[1].name: 'x' is used by two AOIs",
                 "aoi[1].file: ", "missing.geojson: no such file", "aoi[1].scenes.2024-01-01: 'nothing*.tif' matches 0",
                 "aoi[1].pairs[0]"):
        assert part in msg, part
    assert "line 16: aoi[1].file" in msg  # the second [[aoi]] table's file = line


def test_cli_run_bad_job_exit_2_and_nothing_written(tmp_path, model13, capsys):
    f = tmp_path / "job.toml"
    f.write_text(job_text(model13.path, "", extra="stride = 64\nstride_typo = 1"))
    assert main(["run", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"atlas-change: error: {f}: 2 problems:" and len(err) == 3
    assert "stride_typo: unknown key" in err[1] and "aoi: missing" in err[2]
    assert not (tmp_path / "out").exists()
    f.write_text('name = "t"\noutput = = 1\n')
    assert main(["status", str(f)]) == 2
    err = capsys.readouterr().err
    assert "not valid TOML" in err and "line 2" in err


@pytest.mark.parametrize("content,problem", [
    ("{not json", "not a readable vector file"),
    ('{"type": "FeatureCollection", "features": []}', "the AOI is empty"),
    ('{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": '
     '{"type": "Point", "coordinates": [10.3, 45.1]}}]}', "the AOI is empty"),
])
def test_bad_aoi_files_refused_up_front(tmp_path, model13, content, problem):
    make_scene(tmp_path / "a.tif", 128, 128)
    (tmp_path / "aoi.geojson").write_text(content)
    f = tmp_path / "job.toml"
    f.write_text(job_text(model13.path, aoi_table("x", "aoi.geojson", {"2023-01-01": "a.tif", "2024-01-01": "a.tif"})))
    with pytest.raises(AtlasError, match=rf"aoi\[0\]\.file: .*aoi.geojson: {problem}"):
        load_job(f)


job_values = st.recursive(st.none() | st.booleans() | st.integers(-100, 100) | st.floats(allow_nan=False)
                          | st.text(max_size=12) | st.dates(),
                          lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=10), c, max_size=3),
                          max_leaves=12)
job_keys = st.sampled_from(["name", "model", "output", "stride", "chunk", "max_nodata", "max_cloud", "min_confidence", "stay",
                            "produce", "allow_untrained", "aoi", "file", "scenes", "pairs", "zzz"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.dictionaries(job_keys, job_values | st.lists(st.dictionaries(job_keys, job_values, max_size=5),
                                                            max_size=2), max_size=10))
def test_job_parser_fuzz_only_raises_atlas_error(data, tmp_path):
    try:
        parse_job(data, tmp_path / "fuzz.toml", "")
    except AtlasError as e:
        assert str(e).startswith(str(tmp_path / "fuzz.toml"))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_job_text_fuzz_only_raises_atlas_error(text, tmp_path):
    f = tmp_path / "fuzz.toml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(AtlasError):
        load_job(f)  # never valid: no scenes exist here


def test_one_failing_step_does_not_stop_the_others(tmp_path, model13, capsys):
    for d in ("a1", "a2"):
        make_scene(tmp_path / f"{d}.tif", 256, 256, seed=len(d))
    (tmp_path / "broken.tif").write_text("this is not a GeoTIFF")
    write_aoi(tmp_path / "aoi.geojson")
    f = tmp_path / "job.toml"
    f.write_text(job_text(model13.path, aoi_table("good", "aoi.geojson", {"2023-01-01": "a1.tif", "2024-01-01": "a2.tif"})
                          + aoi_table("bad", "aoi.geojson", {"2023-01-01": "a1.tif", "2024-01-01": "broken.tif"}),
                          extra='produce = ["classify", "compare"]'))
    assert main(["run", str(f), "--scheduler", "sync", "--quiet"]) == 1
    cap = capsys.readouterr()  # --quiet: nothing but the errors
    assert cap.out == "" and "classify/broken: failed" in cap.err and "compare/bad/2023-01-01_2024-01-01: blocked" in cap.err
    assert "compare/good" not in cap.err
    status = {r.id: r for r in job_status(load_job(f))}
    assert status["classify/broken"].status == "failed" and "broken.tif" in status["classify/broken"].detail
    assert status["compare/good/2023-01-01_2024-01-01"].status == "done"
    assert status["compare/bad/2023-01-01_2024-01-01"].status == "blocked"
    assert (tmp_path / "out" / "good" / "2023-01-01_2024-01-01" / "transitions.csv").exists()
    assert not (tmp_path / "out" / "scenes" / "broken").exists()
    assert main(["status", str(f)]) == 1
    assert "failed" in capsys.readouterr().out


def test_second_run_of_a_job_is_refused_while_one_holds_the_lock(tmp_path, model13, capsys):
    make_scene(tmp_path / "a.tif", 128, 128)
    write_aoi(tmp_path / "aoi.geojson")
    f = tmp_path / "job.toml"
    f.write_text(job_text(model13.path, aoi_table("x", "aoi.geojson", {"2023-01-01": "a.tif"}),
                          extra='produce = ["classify"]'))
    with job_lock(load_job(f)):
        assert main(["run", str(f), "--scheduler", "sync"]) == 2
        assert "another run of this job is in progress" in capsys.readouterr().err
        assert not (tmp_path / "out" / "scenes").exists()
    assert main(["run", str(f), "--scheduler", "sync", "--quiet"]) == 0  # released: runs


def test_killed_run_resumes_to_a_byte_identical_map(tmp_path, model13):
    # 16 chunks of 128 px, one batch of the model each (tta 1): a few seconds a run
    make_scene(tmp_path / "big.tif", 512, 512, block=128, seed=3)
    write_aoi(tmp_path / "aoi.geojson")
    f = tmp_path / "job.toml"
    f.write_text(job_text(model13.path, aoi_table("x", "aoi.geojson", {"2023-01-01": "big.tif"}),
                          extra='produce = ["classify"]\ncloud_mask = false\ntta = 1').replace("chunk = 256",
                                                                                          "chunk = 128"))
    cmd = [sys.executable, "-m", "atlas_change", "run", str(f), "--scheduler", "sync", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    chunks = tmp_path / "out" / "scenes" / ".big.chunks"
    deadline = time.time() + 240
    while len(list(chunks.glob("*.npz"))) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(chunks.glob("*.npz")))
    assert 3 <= done < 16 and not (tmp_path / "out" / "scenes" / "big" / "lulc.tif").exists()

    assert subprocess.run(cmd, cwd=ROOT, capture_output=True).returncode == 0
    result = tmp_path / "out" / "scenes" / "big"
    run = json.loads((result / "run.json").read_text())
    assert run["counts"]["chunks"] == 16 and run["counts"]["chunks_resumed"] >= done
    assert not chunks.exists()

    ref_job = tmp_path / "ref.toml"  # the same job, uninterrupted, into another folder
    ref_job.write_text(f.read_text().replace('output = "out"', 'output = "ref"'))
    assert subprocess.run(cmd[:4] + [str(ref_job)] + cmd[5:], cwd=ROOT, capture_output=True).returncode == 0
    ref = tmp_path / "ref" / "scenes" / "big"
    assert json.loads((ref / "run.json").read_text())["counts"]["chunks_resumed"] == 0
    assert (result / "lulc.tif").read_bytes() == (ref / "lulc.tif").read_bytes()
    assert (result / "confidence.tif").read_bytes() == (ref / "confidence.tif").read_bytes()


def test_dask_worker_killed_mid_classify_job_still_completes(tmp_path, model13):
    from distributed import Client, LocalCluster

    from atlas_change.mapping.pipeline import classify

    make_scene(tmp_path / "s.tif", 512, 512, block=128, seed=4)
    # faults, not clouds: 16 chunks of one model batch each (tta 1)
    kw = dict(model=model13.path, chunk=128, allow_untrained=True, cloud_mask=False, tta=1)
    killed = []
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as client:
        ref = classify(tmp_path / "s.tif", client=client, **kw)

        def kill_one():  # SIGKILL a worker while it is running a chunk
            time.sleep(0.05)
            while True:
                busy = [w for w, tasks in client.processing().items() if tasks]
                if busy:
                    pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
                time.sleep(0.01)

        t = threading.Thread(target=kill_one, daemon=True)
        t.start()
        ds = classify(tmp_path / "s.tif", client=client, out=tmp_path / "out", **kw)
        t.join(5)
    assert killed
    assert json.loads((tmp_path / "out" / "run.json").read_text())["counts"]["classified"] == 64
    np.testing.assert_array_equal(ds["lulc"].values, ref["lulc"].values)
    np.testing.assert_array_equal(ds["confidence"].values, ref["confidence"].values)


@pytest.mark.parametrize("where", ["chunk store", "raster write"])
def test_disk_full_while_writing_leaves_nothing(tmp_path, model13, monkeypatch, capsys, where):
    import atlas_change.outputs as assemble
    import atlas_change.mapping.pipeline as pipeline

    make_scene(tmp_path / "a.tif", 256, 256)

    def full(*args, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if where == "chunk store":
        monkeypatch.setattr(pipeline.np, "savez", full)
    else:
        monkeypatch.setattr(assemble.rasterio.io.DatasetWriter, "write", full)  # under CogWriter, GDAL's write
    out = tmp_path / "res" / "a"
    assert main(["classify", str(tmp_path / "a.tif"), "--model", model13.path, "--out", str(out),
                 "--allow-untrained", "--scheduler", "sync", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path / "res") in err and "No space left on device" in err
    assert list((tmp_path / "res").iterdir()) == []  # no output, staging folder or chunk store left


def _pretend_bfloat16() -> None:
    import atlas_change.model.infer

    atlas_change.model.infer.runtime_precision = lambda runtime, card=None: f"{runtime} bfloat16 (worker)"


def test_run_json_records_the_arithmetic_of_the_workers_not_of_the_client(tmp_path, model13):
    """On a cluster the chunks run on the workers' CPUs: run.json's inference_precision is what the
    workers report (here a worker patched to say so), not what this process would use."""
    from distributed import Client, LocalCluster

    from atlas_change.model.infer import runtime_precision
    from atlas_change.mapping.pipeline import classify

    make_scene(tmp_path / "s.tif", 256, 256, seed=4)
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as client:
        client.run(_pretend_bfloat16)
        classify(tmp_path / "s.tif", client=client, out=tmp_path / "out", model=model13.path, runtime="graph",
                 allow_untrained=True)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["parameters"]["inference_precision"] == "graph bfloat16 (worker)" != runtime_precision("graph")


def _two_date_job(tmp_path, model, extra=""):
    for name, date, seed in (("a_2023", "2023-06-01", 1), ("b_2024", "2024-06-01", 2)):
        make_scene(tmp_path / f"{name}.tif", 256, 256, seed=seed, tags={"DATE": date})
    write_aoi(tmp_path / "aoi.geojson", box=(600000, 4997480, 602560, 5000040))
    f = tmp_path / "job.toml"
    f.write_text(job_text(model, aoi_table("lake", "aoi.geojson", {"2023-06-01": "a_2023.tif", "2024-06-01": "b_2024.tif"}),
                          extra=extra))
    return f


def test_status_says_what_run_redoes_and_run_ends_with_each_result(tmp_path, model13, capsys):
    f = _two_date_job(tmp_path, model13.path, 'tta = 1\nruntime = "graph"')
    assert main(["run", str(f), "--scheduler", "sync"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-2]  # then "outputs in ..."
    pair = tmp_path / "out" / "lake" / "2023-06-01_2024-06-01"
    s = json.loads((pair / "summary.json").read_text())
    assert last == (f"lake/2023-06-01_2024-06-01: {s['changed_ha']:.2f} ha changed, {s['uncertain_ha']:.2f} ha "
                    f"uncertain, {s['cloud_ha']:.2f} ha cloud; {pair / 'change_map.html'}, {pair / 'cells.gpkg'}")
    run = json.loads((tmp_path / "out" / "scenes" / "a_2023" / "run.json").read_text())
    assert run["parameters"]["tta_views"] == 1 and run["parameters"]["runtime"] == "graph"  # the job's keys

    def statuses():
        return {r.id.split("/")[0] + ("/a" if "a_2023" in r.id else ""): r.status for r in job_status(load_job(f))}

    # a compare parameter: the compare and everything made of it are stale, and exactly those are redone
    f.write_text(f.read_text().replace('tta = 1', 'tta = 1\nmin_confidence = 0.5'))
    assert statuses() == {"classify/a": "done", "classify": "done", "compare": "stale", "gpkg": "stale", "html": "stale"}
    redone = [r.status for r in run_job(load_job(f), scheduler="sync", quiet=True, echo=lambda s: None)]
    assert redone == ["up to date", "up to date", "done", "done", "done"]
    # damaged outputs of a classify step: stale, not "up to date"; a plain rerun repairs them
    (tmp_path / "out" / "scenes" / "a_2023" / "run.json").write_text("{}")
    st_ = {r.id: r for r in job_status(load_job(f))}
    assert st_["classify/a_2023"].status == "stale" and "run.json: incomplete" in st_["classify/a_2023"].detail
    assert statuses()["compare"] == "stale"
    assert [r.status for r in run_job(load_job(f), scheduler="sync", quiet=True, echo=lambda s: None)][0] == "done"
    assert set(statuses().values()) == {"done"}


def test_reserved_names_and_job_keys_are_checked(tmp_path, model13):
    f = _two_date_job(tmp_path, model13.path, "tta = 3\nruntime = 'gpu'")
    f.write_text(f.read_text().replace('name = "lake"', 'name = "scenes"'))
    with pytest.raises(AtlasError) as e:
        load_job(f)
    for part in ("tta: 3: must be one of 1, 2, 4, 8", "runtime: 'gpu': must be one of",
                 "aoi[0].name: 'scenes' is reserved"):
        assert part in str(e.value), part
    for i in range(7):
        make_scene(tmp_path / f"many_{i}.tif", 64, 64)
    f.write_text(job_text(model13.path, aoi_table("x", "aoi.geojson", {"2023-06-01": "many_*.tif", "2024-06-01": "a_2023.tif"})))
    with pytest.raises(AtlasError, match=r"matches 7 files: .*many_0.tif, .*many_4.tif and 2 more; it must name"):
        load_job(f)


def test_periods_in_a_job_file_plan_one_compare_of_all_their_dates(tmp_path, model13):
    """`periods` name several dates of an AOI; pairs of periods (the default: consecutive periods)
    become one compare step that needs every date's classify step; bad periods are reported."""
    write_aoi(tmp_path / "aoi.geojson")
    dates = ["2023-06-01", "2023-07-01", "2024-06-05", "2024-07-05"]
    for d in dates:
        make_scene(tmp_path / f"s_{d}.tif", 64, 64)
    periods = 'periods = { summer-2023 = ["2023-07-01", "2023-06-01"], summer-2024 = ["2024-06-05", "2024-07-05"] }'
    f = tmp_path / "p.toml"
    f.write_text(job_text(model13.path, aoi_table("lake", "aoi.geojson", {d: f"s_{d}.tif" for d in dates}, periods)))
    job = load_job(f)
    assert job.aois[0].periods["summer-2023"] == ("2023-06-01", "2023-07-01")
    steps = {s.id: s for s in plan(job)}
    cmp = steps["compare/lake/summer-2023_summer-2024"]
    assert len(cmp.deps) == 4 and cmp.args["sides"] == [("2023-06-01", "2023-07-01"), ("2024-06-05", "2024-07-05")]
    assert [s for s in steps if s.startswith("compare/")] == ["compare/lake/summer-2023_summer-2024"]
    bad = periods.replace('"2023-07-01", "2023-06-01"', '"2023-07-01", "2022-01-01"') + '\npairs = [["summer-2024", "summer-2023"]]'
    f.write_text(job_text(model13.path, aoi_table("lake", "aoi.geojson", {d: f"s_{d}.tif" for d in dates}, bad)))
    with pytest.raises(AtlasError) as e:
        load_job(f)
    assert "aoi[0].periods.summer-2023" in str(e.value) and "aoi[0].pairs[0]" in str(e.value)


def test_a_job_names_a_sequence_of_three_dates(tmp_path, model13):
    """pairs = [[d1, d2, d3]]: one compare step over the whole sequence (its step folders, span,
    sequence.tif), the map and GeoPackage of its span; a rerun does nothing; a sequence out of order
    is refused with its line."""
    scenes = {}
    for date, seed in (("2021-06-01", 1), ("2022-06-01", 2), ("2023-06-01", 3)):
        make_scene(tmp_path / f"s{date[:4]}.tif", 256, 256, seed=seed, tags={"DATE": date})
        scenes[date] = f"s{date[:4]}.tif"
    write_aoi(tmp_path / "aoi.geojson", box=(600000, 4997480, 602560, 5000040))
    f = tmp_path / "job.toml"
    seq = 'pairs = [["2021-06-01", "2022-06-01", "2023-06-01"]]'
    f.write_text(job_text(model13.path, aoi_table("lake", "aoi.geojson", scenes, extra=seq), extra="tta = 1"))
    job = load_job(f)
    name = "2021-06-01_2022-06-01_2023-06-01"
    assert [s.id for s in plan(job)][3:] == [f"compare/lake/{name}", f"gpkg/lake/{name}", f"html/lake/{name}"]
    results = run_job(job, scheduler="sync", quiet=True, echo=lambda line: None)
    assert [r.status for r in results] == ["done"] * 6, results
    folder = tmp_path / "out" / "lake" / name
    s = json.loads((folder / "summary.json").read_text())
    assert [st["folder"] for st in s["steps"]] == ["2021-06-01_2022-06-01", "2022-06-01_2023-06-01"]
    assert (folder / "sequence.tif").is_file() and (folder / "span_2021-06-01_2023-06-01" / "cells.gpkg").is_file()
    assert [r.status for r in run_job(load_job(f), scheduler="sync", quiet=True, echo=lambda line: None)] == ["up to date"] * 6
    f.write_text(f.read_text().replace(seq, 'pairs = [["2022-06-01", "2021-06-01", "2023-06-01"]]'))
    with pytest.raises(AtlasError, match=r"pairs\[0\].*each ending before the next begins"):
        load_job(f)


def test_a_job_reads_local_scenes_of_two_utm_zones_on_the_aois_grid(tmp_path, model13):
    """A job whose AOI's two dates are tiles of two UTM zones: `run` says so, reads each on the AOI's
    grid (one-scene mosaics under the job's state, classified over the AOI only) and compares them;
    a rerun is up to date, and a changed scene is classified again (its pixels are hashed, not only
    the mosaic file that names it)."""
    a, b = two_zone_scenes(tmp_path)
    aoi = tmp_path / "aoi.geojson"
    gpd.GeoDataFrame(geometry=[shapely.box(*TWO_ZONE_AOI)], crs="EPSG:4326").to_file(aoi, driver="GeoJSON")
    f = tmp_path / "job.toml"
    f.write_text(job_text(model13.path, aoi_table("edge", aoi, {"2023-06-01": a, "2024-06-01": b}),
                          extra='tta = 1\nruntime = "graph"\ncloud_mask = false\nproduce = ["classify", "compare"]'))
    assert [r.status for r in job_status(load_job(f))] == ["pending"] * 3
    lines = []
    assert [r.status for r in run_job(load_job(f), scheduler="sync", quiet=True, echo=lines.append)] == ["done"] * 3
    assert any(ln.startswith("edge: the scenes' grids differ (EPSG:32632, EPSG:32633)") for ln in lines), lines
    mosaics = sorted((tmp_path / "out" / ".atlas-job" / "mosaics" / "edge").glob("*.mosaic.json"))
    assert sorted(json.loads(m.read_text())["items"][0] for m in mosaics) == sorted([str(a), str(b)])
    runs = [json.loads(p.read_text()) for p in sorted((tmp_path / "out" / "scenes").glob("*/run.json"))]
    assert {r["output"]["crs"] for r in runs} == {"EPSG:32633"} and {r["input"]["kind"] for r in runs} == {"mosaic"}
    s = json.loads((tmp_path / "out" / "edge" / "2023-06-01_2024-06-01" / "summary.json").read_text())
    assert s["valid_ha"] == s["aoi_cells_ha"] >= 5 * 40.96
    assert {r.status for r in job_status(load_job(f))} == {"done"}
    with rasterio.open(b, "r+") as dst:  # the 33N scene changes: its classify and the compare are redone
        dst.write(dst.read(1, window=((0, 1), (0, 1))) + 1, 1, window=((0, 1), (0, 1)))
    st = sorted(r.status for r in job_status(load_job(f)))
    assert st == ["done", "stale", "stale"], st
