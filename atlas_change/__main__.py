"""Command line: python -m atlas_change {classify,compare,export,view,sample,assess,run,status,train,evaluate,
calibrate,demo} ...
(see --help of each)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from . import __version__  # noqa: E402
from .bands import parse_bands  # noqa: E402
from .cloud import MAX_CLOUD  # noqa: E402
from .errors import AtlasError, AtlasWarning  # noqa: E402
from .infer import DEFAULT_RUNTIME, DEFAULT_VIEWS, RUNTIMES, VIEWS  # noqa: E402
from .helptext import EPILOG_ASSESS, EPILOG_CLASSIFY, JOB_EPILOG, WORKERS_HELP  # noqa: E402
from .registry import ARCHITECTURES, DEFAULT_MODELS, PRECISIONS  # noqa: E402
from .search import MAX_TILE_CLOUD, MIN_AOI_CLEAR  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m atlas_change",
                                description="Sentinel-2 scenes to EuroSAT land-use / land-cover maps, on a CPU.")
    p.add_argument("--version", action="version", version=f"atlas-change {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("classify", help="label a whole scene in 64 x 64 patches -> georeferenced LULC raster",
                       description="Label a Sentinel-2 scene with the 10 EuroSAT classes, patch by patch, on Dask.",
                       epilog=EPILOG_CLASSIFY, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("scene", help="GeoTIFF/COG, SAFE product folder / .zip, band folder, or STAC Item (.json or URL)")
    c.add_argument("--model", help="model name under models/ or a model folder (default: the first of "
                   f"{', '.join(DEFAULT_MODELS)} that is shipped, trained and whose bands the input has)")
    c.add_argument("--out", help="output folder (default outputs/<scene name>)")
    c.add_argument("--bands", help="band names of a GeoTIFF without band descriptions, in file order, "
                   "e.g. B02,B03,B04,B08")
    c.add_argument("--stride", type=int, default=64, choices=(64, 32, 16),
                   help="pixels between patch origins; 32 or 16 average overlapping patches (default 64)")
    c.add_argument("--max-nodata", type=float, default=0.0,
                   help="largest nodata fraction a patch may hold and still be labelled (default 0)")
    c.add_argument("--max-cloud", type=float, default=MAX_CLOUD,
                   help=f"largest share of a patch's pixels that may be cloud or cloud shadow and still be labelled "
                   f"(default {MAX_CLOUD}); clouds come from the L2A SCL, else s2cloudless on L1C (needs B01, B02, "
                   "B04, B05, B08, B8A, B09, B10, B11, B12), else Fmask's spectral tests (B02, B03, B04, B08, B11, B12); "
                   "other inputs are not masked (a warning says so)")
    c.add_argument("--no-cloud-mask", action="store_true", help="do not look for clouds (e.g. for a cloud-free composite)")
    ca = c.add_mutually_exclusive_group()
    ca.add_argument("--aoi", help="classify only the part of the scene that covers this AOI's bounds (GeoJSON or "
                    "GeoPackage, any CRS), in whole 64 px blocks of the scene's grid: a remote COG is read only there")
    ca.add_argument("--aoi-bbox", help="the same for minx,miny,maxx,maxy in --aoi-crs")
    c.add_argument("--aoi-crs", default="EPSG:4326", help="CRS of --aoi-bbox (default EPSG:4326)")
    c.add_argument("--no-surface-tests", action="store_true",
                   help="do not use the NIR / SWIR water and snow tests (see 'water and snow' below): the labels of "
                   "the RGB model alone, snow labelled as land cover")
    c.add_argument("--workers", type=int, help=WORKERS_HELP)
    c.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://host:8786), or 'sync' "
                   "to run in this process")
    c.add_argument("--chunk", type=int, default=1024, help="pixels per Dask task side (multiple of 64; default 1024)")
    c.add_argument("--offset", type=float, help="override the digital-number offset (e.g. -1000)")
    c.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME,
                   help="inference runtime: openvino (the network compiled by OpenVINO for this CPU, fastest "
                   "here), xla (TensorFlow XLA), graph (tf.function) or keras (model.predict); labels agree to "
                   f"the tolerance in benchmarks/RESULTS.md, which compares their speed (default {DEFAULT_RUNTIME})")
    c.add_argument("--tta", type=int, choices=VIEWS, default=DEFAULT_VIEWS,
                   help="test-time augmentation: average the class probabilities over N views of each patch "
                   "(1 = none; 2 = also turned by 90 degrees; 4 = the four quarter turns; 8 = those and their "
                   f"mirror images). Model time grows N-fold; spectrumnet-rgb on the EuroSAT test split: 96.1 %% "
                   f"(1), 96.6 %% (2), 96.8 %% (4) (default {DEFAULT_VIEWS})")
    c.add_argument("--allow-untrained", action="store_true", help="run an untrained model (pipeline tests only)")
    c.add_argument("--quiet", action="store_true", help="print nothing but errors")

    t = sub.add_parser("train", help="train a model on EuroSAT (RGB JPEGs or MS GeoTIFFs) and write it with its card",
                       description="Train a network from scratch on EuroSAT RGB (DATA/<Class>/<Class>_<n>.jpg, "
                       "with or without an EuroSAT_RGB/ level) or EuroSAT MS (DATA/<Class>/<Class>_<n>.tif, 13 bands, "
                       "B8A last) with the split files eurosat-{train,val,test}.txt. The weights of the best "
                       "validation epoch are kept, scored on the test split and written with the model card. "
                       "An interrupted run started again with the same arguments resumes from its last epoch.",
                       epilog="examples:\n"
                       "  python -m atlas_change train --data ../shared/eurosat/EuroSAT_RGB --arch spectrumnet-bn-w0.5 "
                       "--epochs 12 --out models/spectrumnet-rgb\n"
                       "  python -m atlas_change train --data ../shared/eurosat/EuroSAT_RGB --arch resnet50 "
                       "--epochs 20 --lr 0.001 --out models/resnet50-rgb\n"
                       "  python -m atlas_change train --data ../shared/eurosat/EuroSAT_RGB --arch resnet50-nomaxpool "
                       "--init models/resnet50-rgb --epochs 8 --lr 0.0005 --out models/resnet50-rgb-nomaxpool",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--data", default=os.environ.get("ATLAS_EUROSAT"),
                   help="EuroSAT RGB or MS folder (default $ATLAS_EUROSAT)")
    t.add_argument("--splits", help="folder of eurosat-*.txt (default: beside or above --data, or ../splits)")
    t.add_argument("--arch", default="spectrumnet-bn-w0.5", choices=ARCHITECTURES,
                   help="network (default spectrumnet-bn-w0.5: SpectrumNet with batch norm at half width)")
    t.add_argument("--bands", help="input bands in order (default: all the data hold: B04,B03,B02 for RGB JPEGs, "
                   "the 13 EuroSAT bands for MS)")
    t.add_argument("--epochs", type=int, default=30, help="epochs (default 30)")
    t.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    t.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 0.002)")
    t.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    t.add_argument("--init", help="start from this trained model (same --arch, or resnet50 for "
                   "resnet50-nomaxpool: the same weights; bands a subset of --bands): e.g. spectrumnet-rgb for a "
                   "13-band model fine-tuned on EuroSAT MS")
    t.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="training arithmetic: float32, or mixed_bfloat16 (bfloat16 compute, float32 weights: about 2x "
                   "faster on CPUs with AVX512-BF16 or AMX, slower elsewhere); the saved model is float32 either way")
    t.add_argument("--out", required=True, help="model folder to write, e.g. models/spectrumnet-rgb")
    t.add_argument("--quiet", action="store_true", help="no progress output")

    e = sub.add_parser("evaluate", help="accuracy, per-class accuracy and confusion matrix on a split",
                       description="Score a model on a split of EuroSAT RGB (JPEGs, RGB models only) or EuroSAT MS "
                       "(GeoTIFF DN, through the model's radiometry: the test that real L1C input reaches the model "
                       "as the JPEGs did). A folder holding part of the split (the MS subset) is scored on that part.")
    e.add_argument("--data", default=os.environ.get("ATLAS_EUROSAT"),
                   help="EuroSAT RGB or MS folder (default $ATLAS_EUROSAT)")
    e.add_argument("--splits", help="folder of eurosat-*.txt (default: beside or above --data)")
    e.add_argument("--model", required=True, help="model name under models/ or a model folder")
    e.add_argument("--split", default="test", choices=("train", "val", "test"), help="split (default test)")
    e.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME,
                   help=f"inference runtime, as for classify (default {DEFAULT_RUNTIME}; model cards score 'graph', "
                   "the float32 network)")
    e.add_argument("--tta", type=int, choices=VIEWS, default=1,
                   help="test-time augmentation views, as for classify (default 1: the network alone, as model cards score it)")
    e.add_argument("--json", action="store_true", help="print one JSON object (accuracy, per_class, confusion)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")

    ca = sub.add_parser("calibrate", help="fit a model's probability calibration (temperature) on EuroSAT val",
                        description="Temperature scaling (Guo et al. 2017): fit one temperature T on the EuroSAT "
                        "RGB validation split so that the class probabilities mean what they say (patches given 0.9 "
                        "right about 90 %% of the time), then write it with the expected calibration error on the "
                        "test split, before and after, into the model's card.json. Labels do not change (the top "
                        "class is the same); confidence.tif and --min-confidence use the calibrated probabilities.",
                        epilog="example:\n  python -m atlas_change calibrate --data ../shared/eurosat/EuroSAT_RGB "
                        "--model spectrumnet-rgb", formatter_class=argparse.RawDescriptionHelpFormatter)
    ca.add_argument("--data", default=os.environ.get("ATLAS_EUROSAT"),
                    help="EuroSAT RGB folder (default $ATLAS_EUROSAT)")
    ca.add_argument("--splits", help="folder of eurosat-*.txt (default: beside or above --data)")
    ca.add_argument("--model", required=True, help="model name under models/ or a model folder")
    ca.add_argument("--tta", type=int, choices=VIEWS, default=DEFAULT_VIEWS,
                    help=f"test-time views to fit with (default {DEFAULT_VIEWS}, classify's default)")
    ca.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME, help=f"inference runtime (default {DEFAULT_RUNTIME})")
    ca.add_argument("--quiet", action="store_true", help="no progress bar")

    cp = sub.add_parser("compare", help="two dates (or periods) of an AOI -> change raster, hectares, summary",
                        description="Compare two classified dates, or two periods of several dates, over an AOI on "
                        "one common grid. BEFORE/AFTER are classify output folders, or scenes (classified on the fly "
                        "into the output's parent folder, reusing an earlier result of the same input and model). "
                        "A period (--before A B C --after D E F) is the mean-probability composite of its dates: per "
                        "cell the class probabilities averaged over the dates on which it is clear; far less false "
                        "change than one date a side (README: Periods).",
                        epilog="outputs: before.tif, after.tif (+ _confidence.tif, _probabilities.tif, "
                        "_observations.tif: clear dates per cell), change.tif (code = from_id*100 + to_id, 0 = "
                        "unchanged/nodata/cloud/uncertain), transitions.csv and transitions_groups.csv (hectares), "
                        "summary.json, aoi.geojson\nexamples:\n  python -m atlas_change compare outputs/2023 "
                        "outputs/2024 --aoi aoi/farm.geojson --out outputs/farm\n  python -m atlas_change compare "
                        "--before jun23.tif jul23.tif aug23.tif --after jun24.tif jul24.tif --aoi aoi/farm.geojson "
                        "--out outputs/farm-summers\n  python -m atlas_change compare --stac-api https://earth-search.aws.element84.com/v1 "
                        "--before-range 2023-06-01/2023-08-31 --after-range 2024-06-01/2024-08-31 --aoi aoi/farm.geojson "
                        "--out outputs/farm-summers --dry-run", formatter_class=argparse.RawDescriptionHelpFormatter)
    cp.add_argument("dates", nargs="*", metavar="BEFORE AFTER",
                    help="earlier and later date: classify output folders or scenes")
    cp.add_argument("--before", nargs="+", metavar="SCENE", help="the earlier period's scenes (or classify outputs)")
    cp.add_argument("--after", nargs="+", metavar="SCENE", help="the later period's scenes (or classify outputs)")
    g = cp.add_mutually_exclusive_group(required=True)
    g.add_argument("--aoi", help="AOI file (GeoJSON or GeoPackage, any CRS)")
    g.add_argument("--aoi-bbox", help="minx,miny,maxx,maxy in --aoi-crs")
    cp.add_argument("--aoi-crs", default="EPSG:4326", help="CRS of --aoi-bbox (default EPSG:4326)")
    cp.add_argument("--out", required=True, help="output folder")
    cp.add_argument("--min-confidence", type=float, default=0.6,
                    help="both dates must reach this top-1 probability for a cell to count as changed/unchanged "
                    "(default 0.6); the rest is reported as uncertain")
    cp.add_argument("--allow-model-mismatch", action="store_true",
                    help="compare maps made with different model weights (stamped in summary.json)")
    st = cp.add_argument_group("scenes from a STAC API (instead of BEFORE AFTER / --before --after)")
    st.add_argument("--stac-api", metavar="URL", help="search this STAC API, e.g. https://earth-search.aws.element84.com/v1")
    st.add_argument("--collection", default="sentinel-2-l2a", help="the API's collection (default sentinel-2-l2a)")
    st.add_argument("--before-range", metavar="START/END", help="the earlier period, e.g. 2023-06-01/2023-08-31")
    st.add_argument("--after-range", metavar="START/END", help="the later period, e.g. 2024-06-01/2024-08-31")
    st.add_argument("--scenes-per-period", type=int, default=3, help="how many of each period's clearest dates "
                    "over the AOI to composite (default 3)")
    st.add_argument("--max-tile-cloud", type=float, default=MAX_TILE_CLOUD, help="skip items whose whole tile is "
                    f"more cloudy than this, eo:cloud_cover in %% (default {MAX_TILE_CLOUD:g})")
    st.add_argument("--min-aoi-clear", type=float, default=MIN_AOI_CLEAR, help="use an item only where at least "
                    f"this share of the AOI is clear by its SCL (default {MIN_AOI_CLEAR:g})")
    st.add_argument("--dry-run", action="store_true", help="list the items found and those that would be read, "
                    "best first, and stop")
    cp.add_argument("--before-date", help="date of BEFORE, YYYY-MM-DD, or one per scene of --before, comma-separated "
                    "(default: from each one's run.json or scene)")
    cp.add_argument("--after-date", help="date of AFTER, YYYY-MM-DD, or one per scene of --after (default: from "
                    "the metadata)")
    cp.add_argument("--model", default=None, help="model for scenes classified on the fly (default: the "
                    "default model for their bands)")
    cp.add_argument("--max-cloud", type=float, default=MAX_CLOUD, help="for scenes classified on the fly: largest "
                    f"cloud or shadow share of a labelled patch (default {MAX_CLOUD}; see classify --help)")
    cp.add_argument("--stride", type=int, default=64, choices=(64, 32, 16),
                    help="for scenes classified on the fly: pixels between patch origins (default 64; see classify --help)")
    cp.add_argument("--tta", type=int, choices=VIEWS, default=DEFAULT_VIEWS,
                    help=f"for scenes classified on the fly: test-time augmentation views (default {DEFAULT_VIEWS}; "
                    "4 gives steadier labels for change on small AOIs; see classify --help)")
    cp.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME,
                    help=f"for scenes classified on the fly: inference runtime (default {DEFAULT_RUNTIME})")

    ex = sub.add_parser("export", help="GeoPackage of the labelled map cells (and changes) of a compare/classify output",
                        description="Write a GeoPackage (1.2, with QGIS styles in layer_styles) from a compare output "
                        "folder (layers cells_before, cells_after: one polygon per map cell inside the AOI, never "
                        "overlapping, with class, land-cover group, confidence and hectares: areas summed from them "
                        "are summary.json's; changes: one polygon per changed cell with both classes and groups, "
                        "'conversion' or 'within group', confidences and hectares; aoi: the AOI's features and "
                        "attributes) or from a classify output folder (layer cells).",
                        epilog="example:\n  python -m atlas_change export outputs/example/lake/2023-06-01_2024-06-01 "
                        "--gpkg lake.gpkg", formatter_class=argparse.RawDescriptionHelpFormatter)
    ex.add_argument("folder", help="a compare output folder (summary.json) or a classify output folder")
    ex.add_argument("--gpkg", required=True, help="GeoPackage to write")

    vw = sub.add_parser("view", help="change_map.html (folium) from a compare or classify output",
                        description="Write change_map.html into the folder: one self-contained page (Leaflet inside; "
                        "only the OpenStreetMap basemap needs the internet) with each date's true-colour image read "
                        "from its scene, the class layers, cloud and snow cells, the uncertain cells hatched, the changed "
                        "cells outlined in lime with popups (both classes, conversion or within a group, confidences, "
                        "top-3 probabilities), the AOI, a header with every hectare figure, and a legend with an "
                        "opacity slider and a chart of class areas per date. A "
                        "scene that has moved since is named in a warning and on the page; the rest is still drawn.",
                        epilog="example:\n  python -m atlas_change view outputs/example/lake/2023-06-01_2024-06-01 "
                        "--side-by-side --open", formatter_class=argparse.RawDescriptionHelpFormatter)
    vw.add_argument("folder", help="a compare output folder (summary.json) or a classify output folder")
    vw.add_argument("--open", action="store_true", help="open it in the web browser")
    vw.add_argument("--side-by-side", action="store_true",
                    help="also write change_map_side_by_side.html: before and after on two synchronised maps")

    sm = sub.add_parser("sample", help="stratified random sample of a compare output's cells, to label for `assess`",
                        description="Draw a seeded stratified random sample of the map cells of a compare output "
                        "(Olofsson et al. 2014): strata are the change map's classes (stable <group or class>, each "
                        "<from> -> <to> present, uncertain); the size by their eq. 13 for --target-se of overall "
                        "accuracy, at least --min-per-stratum cells per stratum, the rest in proportion to area. "
                        "Writes strata.csv, sample.csv (label its empty reference column), sample.gpkg and "
                        "sample.html (each cell on both dates' imagery, for the person who labels it).",
                        epilog=EPILOG_ASSESS, formatter_class=argparse.RawDescriptionHelpFormatter)
    sm.add_argument("folder", help="a compare output folder (summary.json)")
    sm.add_argument("--out", required=True, help="folder for the sample")
    sm.add_argument("--strata", choices=("groups", "classes"), default="groups",
                    help="land-cover groups (default; CORINE level 1) or the ten EuroSAT classes")
    sm.add_argument("--seed", type=int, default=0, help="random seed (default 0): the same seed draws the same cells")
    sm.add_argument("--size", type=int, help="total sample size (default: from --target-se)")
    sm.add_argument("--target-se", type=float, default=0.01,
                    help="standard error of overall accuracy to size the sample for (default 0.01)")
    sm.add_argument("--min-per-stratum", type=int, default=50, help="cells per stratum at least (default 50)")
    sm.add_argument("--no-images", action="store_true", help="leave the imagery out of sample.html")

    asx = sub.add_parser("assess", help="accuracy and error-adjusted areas (95 %% CI) from a labelled sample",
                         description="Read a sample folder whose sample.csv has every reference label filled in and "
                         "write error_matrix.csv (area proportions), areas.csv and assessment.json: user's, "
                         "producer's and overall accuracy and the error-adjusted area of every class, each with a "
                         "95 % confidence interval (Olofsson et al. 2014, eqs. 1-10).",
                         epilog=EPILOG_ASSESS, formatter_class=argparse.RawDescriptionHelpFormatter)
    asx.add_argument("folder", help="a folder made by `sample`, its sample.csv labelled")
    asx.add_argument("--out", help="folder for the results (default: the sample folder)")

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
    return p


def _cmd_classify(a) -> None:
    from .pipeline import classify, scene_stem

    out = a.out or str(Path("outputs") / scene_stem(a.scene))
    bbox = None
    if a.aoi or a.aoi_bbox:
        from rasterio.crs import CRS

        from .compare import read_aoi_frame

        bbox = tuple(float(v) for v in read_aoi_frame(a.aoi, a.aoi_bbox, a.aoi_crs, CRS.from_epsg(4326)).total_bounds)
    ds = classify(a.scene, model=a.model, bands=a.bands, stride=a.stride, max_nodata=a.max_nodata,
                  max_cloud=a.max_cloud, cloud_mask=not a.no_cloud_mask, surface_tests=not a.no_surface_tests,
                  runtime=a.runtime, tta=a.tta, out=out,
                  workers=a.workers, scheduler=a.scheduler, chunk=a.chunk, offset=a.offset,
                  allow_untrained=a.allow_untrained, quiet=a.quiet, bbox=bbox)
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
    from .jobs import load_job, outcomes, run_job, table

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
    return _run_job(a.job, scheduler=a.scheduler, workers=a.workers, force=a.force, quiet=a.quiet)


def _cmd_status(a) -> int:
    from .jobs import job_status, load_job, table

    results = job_status(load_job(a.job))
    print(table(results))
    return 0 if all(r.status == "done" for r in results) else 1


def _cmd_train(a) -> None:
    from .train import train

    card = train(a.data, a.arch, a.out, parse_bands(a.bands) if a.bands else None, epochs=a.epochs, batch=a.batch, lr=a.lr,
                 seed=a.seed, splits=a.splits, quiet=a.quiet, init=a.init, precision=a.precision)
    acc = card.metrics.get("accuracy")
    print(f"{a.out}: {card.architecture} on {', '.join(card.bands)}; test accuracy "
          f"{acc:.4f}" if acc is not None else f"{a.out}: trained (no test split found)")


def _cmd_evaluate(a) -> None:
    from .train import evaluate

    r = evaluate(a.data, a.model, a.split, a.splits, quiet=a.quiet or a.json, runtime=a.runtime, views=a.tta)
    if a.json:
        print(json.dumps(r))
        return
    print(f"{r['model']} on {r['split']} (n={r['n']}): accuracy {r['accuracy']:.4f}")
    for c, v in r["per_class"].items():
        print(f"  {c:22s} {v:.4f}")


def _cmd_calibrate(a) -> None:
    from .calibrate import calibrate

    r = calibrate(a.data, a.model, a.splits, a.tta, a.runtime, a.quiet)
    print(f"{a.model}: temperature {r['temperature']:.3f}; expected calibration error on test "
          f"{r['ece_test_before']:.4f} -> {r['ece_test_after']:.4f} (written to its card.json)")


def _cmd_compare(a) -> None:
    from .compare import compare

    kw = {"max_cloud": a.max_cloud, "stride": a.stride, "tta": a.tta, "runtime": a.runtime,
          **({"model": a.model} if a.model else {})}
    if a.stac_api:
        if a.dates or a.before or a.after or not (a.before_range and a.after_range):
            raise AtlasError("compare --stac-api: give --before-range START/END and --after-range START/END "
                             "(and no BEFORE AFTER scenes)")
        found = _search_sides(a)
        if found is None:
            return
        (before, a.before_date), (after, a.after_date) = found
    elif bool(a.dates) == bool(a.before or a.after) or (a.dates and len(a.dates) != 2) or (bool(a.before) != bool(a.after)):
        raise AtlasError("compare: give BEFORE AFTER (two dates), --before SCENE... --after SCENE... (two periods), "
                         "or --stac-api URL --before-range START/END --after-range START/END")
    else:
        before, after = (a.dates[0], a.dates[1]) if a.dates else (a.before, a.after)

    def dates(text, srcs):
        if text is None or isinstance(srcs, str):
            return text
        return [d.strip() for d in text.split(",")] if "," in text or len(srcs) == 1 else text

    s = compare(before, after, aoi=a.aoi, aoi_bbox=a.aoi_bbox, aoi_crs=a.aoi_crs, out=a.out,
                min_confidence=a.min_confidence, allow_model_mismatch=a.allow_model_mismatch,
                before_date=dates(a.before_date, before), after_date=dates(a.after_date, after), **kw)
    tol = s["grid_tolerance"]
    print(f"{a.out}: {s['changed_ha']:.2f} ha changed (+- {tol['changed_ha']:.2f} ha where the grid falls; "
          f"{s['conversion_ha']:.2f} ha between land-cover groups), "
          f"{s['uncertain_ha']:.2f} ha uncertain of "
          f"{s['valid_ha']:.2f} ha valid in the AOI; {s['cloud_ha']:.2f} ha cloud and {s['snow_ha']:.2f} ha snow on either date, "
          f"{s['nodata_ha']:.2f} ha nodata" + (" (MODEL MISMATCH)" if s["model_mismatch"] else ""))


def _search_sides(a):
    """--stac-api: each side's chosen items -> ((urls, 'date,date'), (urls, dates)); None after --dry-run."""
    from rasterio.crs import CRS

    from .compare import read_aoi
    from .search import choose, listing, scene_files, search

    aoi = read_aoi(a.aoi, a.aoi_bbox, a.aoi_crs, CRS.from_epsg(4326))
    sides, text = [], []
    for flag, period in (("--before-range", a.before_range), ("--after-range", a.after_range)):
        found = search(a.stac_api, a.collection, aoi, period, max_tile_cloud=a.max_tile_cloud, flag=flag)
        chosen = choose(found, a.scenes_per_period, a.min_aoi_clear, aoi)
        text.append(listing(found, chosen, f"{flag} {period}"))
        if not chosen and not a.dry_run:
            raise AtlasError(f"{a.stac_api}: no {a.collection} item of {period} covers the AOI (alone or with the "
                             f"other items of its date) and is at least {100 * a.min_aoi_clear:g} % clear over it "
                             f"({len(found)} found; --dry-run lists them)")
        sides.append(chosen)
    if a.dry_run:
        print("\n".join(text))
        return None
    print("\n".join(text), file=sys.stderr)
    files = scene_files(sides, Path(a.out).parent / "mosaics", aoi)
    return [([str(f) for f in fs], ",".join(p.date for p in chosen)) for fs, chosen in zip(files, sides)]


def _cmd_sample(a) -> None:
    from .sample import sample

    r = sample(a.folder, a.out, seed=a.seed, level=a.strata, n=a.size, target_se=a.target_se,
               minimum=a.min_per_stratum, images=not a.no_images)
    print(f"{a.out}: {r['sample_size']} cells in {len(r['expected_users_accuracy'])} strata (seed {r['seed']}); "
          f"label the reference column of {Path(a.out) / 'sample.csv'} (see sample.html), then "
          f"`python -m atlas_change assess {a.out}`")


def _cmd_assess(a) -> None:
    from .assess import assess

    r = assess(a.folder, a.out)
    print(f"{a.out or a.folder}: overall accuracy {r['overall_accuracy']:.3f} +- {r['overall_accuracy_ci95']:.3f} "
          f"({r['sample_size']} cells)")
    for c, v in r["classes"].items():
        print(f"  {c}: {v['estimated_ha']:.2f} +- {v['estimated_ha_ci95']:.2f} ha (map {v['map_ha']:.2f} ha)")


def _cmd_export(a) -> None:
    from .export import export_gpkg

    print(export_gpkg(a.folder, a.gpkg))


def _cmd_view(a) -> None:
    from .view import change_map

    path = change_map(a.folder, side_by_side=a.side_by_side)
    print(path)
    side = path.with_name(path.stem + "_side_by_side.html")
    if a.side_by_side and side.exists():
        print(side)
    if a.open:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


_showwarning = warnings.showwarning


def _show_warning(message, category, *args, **kw) -> None:
    if issubclass(category, AtlasWarning):
        print(f"atlas-change: warning: {message}", file=sys.stderr)
    else:
        _showwarning(message, category, *args, **kw)


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    for name in ("rasterio", "pyogrio"):  # GDAL's own messages (e.g. libtiff's on a full disk): the error says it
        logging.getLogger(name).addHandler(logging.NullHandler())
    if a.command in ("train", "evaluate", "calibrate") and not a.data:
        print("atlas-change: error: --data EuroSAT RGB or MS folder is required (or set ATLAS_EUROSAT)", file=sys.stderr)
        return 2
    try:
        commands = {"classify": _cmd_classify, "train": _cmd_train, "evaluate": _cmd_evaluate, "demo": _cmd_demo,
                    "compare": _cmd_compare, "export": _cmd_export, "view": _cmd_view, "run": _cmd_run,
                    "status": _cmd_status, "calibrate": _cmd_calibrate, "sample": _cmd_sample,
                    "assess": _cmd_assess}
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
