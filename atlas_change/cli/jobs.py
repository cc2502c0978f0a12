"""`run`, `status`, `demo`: job files (atlas_change.batch), and `run` / `status` of an atlas job."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .helptext import JOB_EPILOG, WORKERS_HELP
from ..errors import AtlasError


def add_parsers(sub) -> None:
    """The arguments of `run`, `status`, `demo`."""
    r = sub.add_parser("run", help="run a batch job file (classify, compare, gpkg, html per AOI), resumably",
                       description="Run every step of a TOML job file that is not already up to date, on one "
                       "Dask cluster. A step is skipped when its outputs exist and were made from the same input "
                       "checksums, model weights and parameters; a killed classify resumes from its finished "
                       "chunks. One failing step does not stop the others.",
                       epilog=JOB_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("job", help="job file, e.g. jobs/example.toml")
    r.add_argument("--workers", type=int, help=WORKERS_HELP)
    r.add_argument("--scheduler", help="address of a running Dask scheduler, or 'sync' to run in this process")
    r.add_argument("--force", action="store_true", help="redo every step, even those up to date")
    r.add_argument("--quiet", action="store_true", help="print nothing but errors (failed or blocked steps)")

    s = sub.add_parser("status", help="what a job has done, what is pending or stale, what failed and why",
                       description="List every step of a job file as `run` would find it, without running anything: "
                       "done, stale (its inputs, parameters or outputs changed since, or a step it needs will be "
                       "redone: `run` redoes it), pending (never run), failed (with the error) or blocked (a step it "
                       "needs failed).",
                       epilog="exit code: 0 when every step is done, 1 when any is stale, pending, failed or "
                       "blocked (so a script can tell whether `run` has work left), 2 when the job file is invalid.\n"
                       "example:\n  python -m atlas_change status jobs/example.toml",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("job", help="job file, e.g. jobs/example.toml")

    d = sub.add_parser("demo", help="make two synthetic dates in outputs/demo and run jobs/example.toml on them",
                       description="Writes outputs/demo/scene_2023-06-01.tif and scene_2024-06-01.tif (synthetic, "
                       "13 bands, UTM 32N) and runs jobs/example.toml: classify both, compare them over "
                       "aoi/example.geojson, GeoPackage and HTML map in outputs/example/, with the default trained "
                       "model. The scenes are made up, so the labels show the pipeline, not the model's accuracy.")
    d.add_argument("--size", type=int, default=1024, help="scene side in pixels (default 1024)")
    d.add_argument("--workers", type=int, help="Dask worker processes (default 1)")


def _cmd_demo(a) -> int:
    from ..synth import demo_inputs

    root = Path(__file__).resolve().parents[2]
    job_file = root / "jobs" / "example.toml"
    if not job_file.exists():
        raise AtlasError(f"{job_file}: the example job is missing (demo runs from a source checkout)")
    demo_inputs(root / "outputs" / "demo", a.size)
    print("note: the demo scenes are synthetic (made-up surfaces on a real UTM grid): the labels show the "
          "pipeline at work, not the model's accuracy (see models/README.md for that)", file=sys.stderr)
    return _run_job(job_file, workers=a.workers)


def _run_job(path, **kw) -> int:
    from ..batch.jobs import load_job, outcomes, run_job, table

    job = load_job(path)
    quiet = kw.get("quiet", False)
    results = run_job(job, **kw, **({"echo": lambda line: None} if quiet else {}))
    ok = all(r.status in ("done", "up to date") for r in results)
    if not quiet:
        print(table(results))
        for line in outcomes(job, results):
            print(line)
        print(f"outputs in {job.output}" + ("" if ok else "; some steps did not succeed (see above; "
                                                          f"`python -m atlas_change status {path}`)"))
    for r in results:  # --quiet: nothing but the errors
        if quiet and r.status not in ("done", "up to date"):
            print(f"atlas-change: error: {r.id}: {r.status}{f': {r.detail}' if r.detail else ''}", file=sys.stderr)
    return 0 if ok else 1


def _cmd_run(a) -> int:
    from ..atlas.job import load_atlas_job

    if (spec := load_atlas_job(a.job)) is not None:  # a job file with an [atlas] table
        from .atlas import run_spec

        return run_spec(spec, a.scheduler, a.workers, a.quiet)
    return _run_job(a.job, scheduler=a.scheduler, workers=a.workers, force=a.force, quiet=a.quiet)


def _cmd_status(a) -> int:
    from ..atlas.job import load_atlas_job
    from ..batch.jobs import job_status, load_job, table

    if (spec := load_atlas_job(a.job)) is not None:
        from .atlas import status

        return status(spec)

    results = job_status(load_job(a.job))
    print(table(results))
    return 0 if all(r.status == "done" for r in results) else 1


COMMANDS = {"run": _cmd_run, "status": _cmd_status, "demo": _cmd_demo}
