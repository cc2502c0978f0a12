"""Command line: python -m atlas_change {classify,compare,export,view,sample,assess,run,status,train,evaluate,
calibrate,demo} ...
(see --help of each)."""
from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .bands import parse_bands  # noqa: E402
from .cli.parser import parser  # noqa: E402
from .errors import AtlasError, AtlasWarning  # noqa: E402


def _cmd_classify(a) -> None:
    from .mapping.pipeline import classify, scene_stem

    out = a.out or str(Path("outputs") / scene_stem(a.scene))
    bbox = None
    if a.aoi or a.aoi_bbox:
        from .change.compare import read_aoi_frame, wgs84_bounds

        bbox = wgs84_bounds(read_aoi_frame(a.aoi, a.aoi_bbox, a.aoi_crs, None))
    ds = classify(a.scene, model=a.model, bands=a.bands, stride=a.stride, max_nodata=a.max_nodata,
                  max_cloud=a.max_cloud, cloud_mask=not a.no_cloud_mask, surface_tests=not a.no_surface_tests,
                  runtime=a.runtime, tta=a.tta, out=out,
                  workers=a.workers, scheduler=a.scheduler, chunk=a.chunk, offset=a.offset,
                  allow_untrained=a.allow_untrained, quiet=a.quiet, bbox=bbox, max_pixels=a.max_pixels)
    if a.quiet:
        return
    n, nc, ns = int((ds["lulc"].values > 0).sum()), int(ds["cloud"].values.sum()), int(ds["snow"].values.sum())
    print(f"{out}: lulc.tif {ds.sizes['y']} x {ds.sizes['x']} cells ({n} labelled, {nc} cloud, {ns} snow), "
          f"model {ds.attrs['model']} "
          f"{ds.attrs['weights_sha256'][:12]}{'' if ds.attrs['trained'] else ' (UNTRAINED)'}")


def _cmd_demo(a) -> int:
    from .synth import demo_inputs

    root = Path(__file__).resolve().parents[1]
    job_file = root / "jobs" / "example.toml"
    if not job_file.exists():
        raise AtlasError(f"{job_file}: the example job is missing (demo runs from a source checkout)")
    demo_inputs(root / "outputs" / "demo", a.size)
    print("note: the demo scenes are synthetic (made-up surfaces on a real UTM grid): the labels show the "
          "pipeline at work, not the model's accuracy (see models/README.md for that)", file=sys.stderr)
    return _run_job(job_file, workers=a.workers)


def _run_job(path, **kw) -> int:
    from .batch.jobs import load_job, outcomes, run_job, table

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
    from .atlas.job import load_atlas_job

    if (spec := load_atlas_job(a.job)) is not None:  # a job file with an [atlas] table
        from .cli.atlas import run_spec

        return run_spec(spec, a.scheduler, a.workers, a.quiet)
    return _run_job(a.job, scheduler=a.scheduler, workers=a.workers, force=a.force, quiet=a.quiet)


def _cmd_status(a) -> int:
    from .atlas.job import load_atlas_job
    from .batch.jobs import job_status, load_job, table

    if (spec := load_atlas_job(a.job)) is not None:
        from .cli.atlas import status

        return status(spec)

    results = job_status(load_job(a.job))
    print(table(results))
    return 0 if all(r.status == "done" for r in results) else 1


def _cmd_train(a) -> None:
    from .model.train import Recipe, train

    recipe = Recipe(label_smoothing=a.label_smoothing, mix=a.mix, mix_p=a.mix_p, translate=a.translate,
                    weight_decay=a.weight_decay, warmup_epochs=a.warmup_epochs)
    card = train(a.data, a.arch, a.out, parse_bands(a.bands) if a.bands else None, epochs=a.epochs, batch=a.batch, lr=a.lr,
                 seed=a.seed, splits=a.splits, quiet=a.quiet, init=a.init, precision=a.precision,
                 augment=a.augment, recipe=recipe)
    acc = card.metrics.get("accuracy")
    print(f"{a.out}: {card.architecture} on {', '.join(card.bands)}; test accuracy "
          f"{acc:.4f}" if acc is not None else f"{a.out}: trained (no test split found)")


def _cmd_evaluate(a) -> None:
    from .model.train import evaluate

    r = evaluate(a.data, a.model, a.split, a.splits, quiet=a.quiet or a.json, runtime=a.runtime, views=a.tta)
    if a.json:
        print(json.dumps(r))
        return
    print(f"{r['model']} on {r['split']} (n={r['n']}): accuracy {r['accuracy']:.4f}")
    for c, v in r["per_class"].items():
        print(f"  {c:22s} {v:.4f}")


def _cmd_calibrate(a) -> None:
    from .model.calibrate import calibrate

    r = calibrate(a.data, a.model, a.splits, a.tta, a.runtime, a.quiet, not a.no_strides)
    print(f"{a.model}: temperature {r['temperature']:.3f}; expected calibration error on test "
          f"{r['ece_test_before']:.4f} -> {r['ece_test_after']:.4f} (written to its card.json)")
    for s, v in r.get("stride_temperature", {}).items():
        if isinstance(v, dict):
            print(f"  stride {s} cells: temperature {v['temperature']:.3f} (fitted {v['fitted']:.3f}"
                  f"{'' if v['kept'] else ', not kept: no better on test mosaics'}); expected calibration error "
                  f"on test mosaics {v['ece_test_before']:.4f} -> {v['ece_test_after']:.4f}")


def _cmd_quantize(a) -> None:
    from .model.quantize import quantize

    try:
        import nncf  # noqa: F401
    except ImportError:
        raise AtlasError("quantize needs the nncf package: pip install nncf (the dev extra has it)") from None
    r = quantize(a.data, a.model, a.splits, a.samples, quiet=a.quiet, make_default=a.make_default)
    for views, v in r["test"]["by_views"].items():
        print(f"{a.model} int8, --tta {views}: accuracy {v['accuracy_int8']:.4f} (float {v['accuracy_float']:.4f}), "
              f"{100 * v['label_agreement']:.2f} % of the float labels")
    why = ("it kept the EuroSAT labels, but --make-default was not given" if r["keeps_eurosat_labels"]
           else "it did not keep the EuroSAT labels")
    print(f"{a.model}: int8 network in {r['file']}; " + ("the default of --runtime openvino" if r["default"]
          else f"not the default ({why}): --runtime openvino-int8 runs it"))


def _cmd_compare(a) -> None:
    from .change.compare import compare

    kw = {"max_cloud": a.max_cloud, "stride": a.stride, "tta": a.tta, "runtime": a.runtime, "quiet": False,
          "period_evidence": a.period_evidence, **({"model": a.model} if a.model else {})}
    if not a.out and not (a.stac_api and a.dry_run):
        raise AtlasError("compare: --out FOLDER is required")
    if a.stac_api:
        if a.dates or a.before or a.after or not (a.before_range and a.after_range):
            raise AtlasError("compare --stac-api: give --before-range START/END and --after-range START/END "
                             "(and no BEFORE AFTER scenes)")
        found = _search_sides(a)
        if found is None:
            return
        (before, a.before_date), (after, a.after_date) = found
    elif a.period:
        if a.dates or a.before or a.after:
            raise AtlasError("compare: give either --period SCENE... (repeated) or BEFORE AFTER / --before --after")
        return _compare_sequence(a, kw)
    elif bool(a.dates) == bool(a.before or a.after) or (a.dates and len(a.dates) != 2) or (bool(a.before) != bool(a.after)):
        raise AtlasError("compare: give BEFORE AFTER (two dates), --before SCENE... --after SCENE... (two periods), "
                         "--period SCENE... repeated (a sequence of periods), "
                         "or --stac-api URL --before-range START/END --after-range START/END")
    else:
        before, after = (a.dates[0], a.dates[1]) if a.dates else (a.before, a.after)

    s = compare(before, after, aoi=a.aoi, aoi_bbox=a.aoi_bbox, aoi_crs=a.aoi_crs, out=a.out,
                min_confidence=a.min_confidence, stay=a.stay, allow_model_mismatch=a.allow_model_mismatch,
                before_date=_dates(a.before_date, before), after_date=_dates(a.after_date, after), **kw)
    tol = s["grid_tolerance"]
    print(f"{a.out}: {s['changed_ha']:.2f} ha changed (+- {tol['changed_ha']:.2f} ha where the grid falls; "
          f"{s['conversion_ha']:.2f} ha between land-cover groups), "
          f"{s['uncertain_ha']:.2f} ha uncertain of "
          f"{s['valid_ha']:.2f} ha valid in the AOI; {s['cloud_ha']:.2f} ha cloud and {s['snow_ha']:.2f} ha snow on either date, "
          f"{s['nodata_ha']:.2f} ha nodata" + (" (MODEL MISMATCH)" if s["model_mismatch"] else ""))


def _dates(text: str | None, srcs):
    """--before-date / --after-date / one --period-dates: one date (str) for a single scene or a
    whole period, or a list of one date per scene (comma-separated)."""
    if text is None or isinstance(srcs, str):
        return text
    return [d.strip() for d in text.split(",")] if "," in text or len(srcs) == 1 else text


def _compare_sequence(a, kw: dict) -> None:
    """compare --period ... --period ...: a sequence of periods (compare.compare_periods)."""
    from .change.compare import compare_periods

    given = a.period_dates or []
    if given and len(given) != len(a.period):
        raise AtlasError(f"--period-dates: given {len(given)} times for {len(a.period)} --period; give it once per "
                         "period, in the same order, or not at all")
    dates = [_dates(t, p) for t, p in zip(given, a.period)] if given else None
    s = compare_periods(a.period, dates, aoi=a.aoi, aoi_bbox=a.aoi_bbox, aoi_crs=a.aoi_crs, out=a.out,
                        min_confidence=a.min_confidence, stay=a.stay, allow_model_mismatch=a.allow_model_mismatch, **kw)
    if "steps" not in s:  # two periods: one step, as BEFORE AFTER
        s = {"steps": [{"folder": ".", **{k: s[k] for k in ("changed_ha", "conversion_ha", "uncertain_ha", "valid_ha")},
                        "before": s["before"]["period"], "after": s["after"]["period"]}]}
    for step in [*s["steps"], *([s["span"]] if "span" in s else [])]:
        print(f"{Path(a.out) / step['folder']}: {step['before']} -> {step['after']}: {step['changed_ha']:.2f} ha changed "
              f"({step['conversion_ha']:.2f} ha between land-cover groups), {step['uncertain_ha']:.2f} ha uncertain "
              f"of {step['valid_ha']:.2f} ha valid")


def _search_sides(a):
    """--stac-api: each side's chosen items -> ((urls, 'date,date'), (urls, dates)); None after --dry-run."""
    from rasterio.crs import CRS

    from .change.compare import read_aoi
    from .batch.search import choose_periods, scene_files

    aoi = read_aoi(a.aoi, a.aoi_bbox, a.aoi_crs, CRS.from_epsg(4326))
    chosen, text = choose_periods(a.stac_api, a.collection, aoi,
                                  {"--before-range": a.before_range, "--after-range": a.after_range},
                                  n=a.scenes_per_period, max_tile_cloud=a.max_tile_cloud, min_clear=a.min_aoi_clear,
                                  required=not a.dry_run, hint="; --dry-run lists them")
    if a.dry_run:
        print("\n".join(text))
        return None
    print("\n".join(text), file=sys.stderr)
    sides = list(chosen.values())
    files = scene_files(sides, Path(a.out).parent / "mosaics", aoi)
    return [([str(f) for f in fs], ",".join(p.date for p in side)) for fs, side in zip(files, sides)]


def _cmd_sample(a) -> None:
    from .accuracy.sample import sample

    r = sample(a.folder, a.out, seed=a.seed, level=a.strata, n=a.size, target_se=a.target_se,
               minimum=a.min_per_stratum, images=not a.no_images)
    print(f"{a.out}: {r['sample_size']} cells in {len(r['expected_users_accuracy'])} strata (seed {r['seed']}); "
          f"label the reference column of {Path(a.out) / 'sample.csv'} (see sample.html), then "
          f"`python -m atlas_change assess {a.out}`")


def _cmd_assess(a) -> None:
    from .accuracy.assess import assess

    r = assess(a.folder, a.out)
    print(f"{a.out or a.folder}: overall accuracy {r['overall_accuracy']:.3f} +- {r['overall_accuracy_ci95']:.3f} "
          f"({r['sample_size']} cells)")
    for c, v in r["classes"].items():
        print(f"  {c}: {v['estimated_ha']:.2f} +- {v['estimated_ha_ci95']:.2f} ha (map {v['map_ha']:.2f} ha)")


def _cmd_export(a) -> None:
    from .publish.export import export_gpkg

    print(export_gpkg(a.folder, a.gpkg))


def _cmd_view(a) -> None:
    from .publish.view import change_map

    path = change_map(a.folder, side_by_side=a.side_by_side)
    print(path)
    side = path.with_name(path.stem + "_side_by_side.html")
    if a.side_by_side and side.exists():
        print(side)
    if a.open:
        import webbrowser

        if not webbrowser.open(path.resolve().as_uri()):
            print(f"atlas-change: no web browser found here to open it; open {path} in one", file=sys.stderr)


def _cmd_atlas(a) -> int:
    from .cli.atlas import run

    return run(a)


_showwarning = warnings.showwarning


def _show_warning(message, category, *args, **kw) -> None:
    if issubclass(category, AtlasWarning):
        print(f"atlas-change: warning: {message}", file=sys.stderr)
    else:
        _showwarning(message, category, *args, **kw)


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    for name in ("rasterio", "pyogrio"):  # GDAL's own messages (e.g. libtiff's on a full disk): the error says it
        logging.getLogger(name).addHandler(logging.NullHandler())
    if a.command in ("train", "evaluate", "calibrate", "quantize") and not a.data:
        print("atlas-change: error: --data EuroSAT RGB or MS folder is required (or set ATLAS_EUROSAT)", file=sys.stderr)
        return 2
    try:
        commands = {"classify": _cmd_classify, "train": _cmd_train, "evaluate": _cmd_evaluate, "demo": _cmd_demo,
                    "compare": _cmd_compare, "export": _cmd_export, "view": _cmd_view, "run": _cmd_run,
                    "status": _cmd_status, "calibrate": _cmd_calibrate, "quantize": _cmd_quantize, "sample": _cmd_sample,
                    "assess": _cmd_assess, "atlas": _cmd_atlas}
        with warnings.catch_warnings():  # AtlasWarnings as one line each (none with --quiet)
            warnings.showwarning = _show_warning
            if getattr(a, "quiet", False):
                warnings.simplefilter("ignore", AtlasWarning)
            return commands[a.command](a) or 0
    except AtlasError as e:
        print(f"atlas-change: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("atlas-change: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
