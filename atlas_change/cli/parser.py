"""Command line arguments: the parser of every subcommand, with the help that teaches them
(long epilogs in helptext.py); __main__.py runs what they ask for."""
from __future__ import annotations

import argparse
import os

from .. import __version__
from . import atlas
from ..model.augment import AUGMENTATIONS, MIXES
from ..mapping.cloud import MAX_CLOUD
from ..change.composite import EVIDENCE
from .helptext import EPILOG_ASSESS, EPILOG_CLASSIFY, JOB_EPILOG, WORKERS_HELP
from ..model.infer import DEFAULT_RUNTIME, DEFAULT_VIEWS, RUNTIMES, VIEWS
from ..change.joint import DEFAULT_STAY, DEFAULT_THRESHOLD
from ..model.registry import ARCHITECTURES, DEFAULT_MODELS, PRECISIONS
from ..batch.search import MAX_TILE_CLOUD, MIN_AOI_CLEAR


def _eurosat_args(p: argparse.ArgumentParser, what: str) -> None:
    """--data and --splits, as train, evaluate and calibrate read EuroSAT (train.find_split_file)."""
    p.add_argument("--data", default=os.environ.get("ATLAS_EUROSAT"), help=f"{what} (default $ATLAS_EUROSAT)")
    p.add_argument("--splits", help="folder of eurosat-*.txt (default: beside or above --data, or ../splits)")


def parser() -> argparse.ArgumentParser:
    """The `python -m atlas_change` parser with every subcommand."""
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
    c.add_argument("--max-pixels", type=int, default=None,
                   help="the largest scene (or --aoi window) to take, in pixels (default 1,000,000,000: about eight "
                   "Sentinel-2 tiles; a larger declared size is refused as most likely a broken header)")
    c.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME,
                   help="inference runtime: openvino (the network compiled by OpenVINO for this CPU, fastest "
                   "here), xla (TensorFlow XLA), graph (tf.function) or keras (model.predict); labels agree to "
                   f"the tolerance in benchmarks/RESULTS.md, which compares their speed (default {DEFAULT_RUNTIME})")
    c.add_argument("--tta", type=int, choices=VIEWS, default=DEFAULT_VIEWS,
                   help="test-time augmentation: average the class probabilities over N views of each patch "
                   "(1 = none; 2 = also turned by 90 degrees; 4 = the four quarter turns; 8 = those and their "
                   f"mirror images). Model time grows N-fold; each model's accuracy per N: its models/NAME/README.md "
                   f"(default {DEFAULT_VIEWS})")
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
                       "--augment l2a --precision mixed_bfloat16 --out models/spectrumnet-rgb\n"
                       "  python -m atlas_change train --data ../shared/eurosat/EuroSAT_RGB --arch resnet50 "
                       "--epochs 20 --lr 0.001 --out models/resnet50-rgb\n"
                       "  python -m atlas_change train --data ../shared/eurosat/EuroSAT_RGB --arch resnet50-nomaxpool "
                       "--init models/resnet50-rgb --epochs 8 --lr 0.0005 --out models/resnet50-rgb-nomaxpool",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _eurosat_args(t, "EuroSAT RGB or MS folder")
    t.add_argument("--arch", default="spectrumnet-bn-w0.5", choices=ARCHITECTURES,
                   help="network (default spectrumnet-bn-w0.5: SpectrumNet with batch norm at half width)")
    t.add_argument("--bands", help="input bands in order (default: all the data hold: B04,B03,B02 for RGB JPEGs, "
                   "the 13 EuroSAT bands for MS)")
    t.add_argument("--epochs", type=int, default=200, help="epochs (default 200: about 6 hours on 2 CPU cores; "
                   "resumable)")
    t.add_argument("--batch", type=int, default=256, help="batch size (default 256)")
    t.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default 0.003)")
    r = t.add_argument_group("recipe", "how the network is fitted (the defaults: models/README.md)")
    r.add_argument("--warmup-epochs", type=float, default=3.0,
                   help="linear warm-up to the peak learning rate over this many epochs, then a cosine to 0 over the "
                   "rest of the run (default 3)")
    r.add_argument("--weight-decay", type=float, default=0.05, help="AdamW's decoupled weight decay (default 0.05)")
    r.add_argument("--label-smoothing", type=float, default=0.1,
                   help="share of each label spread over the other classes (default 0.1)")
    r.add_argument("--mix", choices=MIXES, default="cutmix",
                   help="mix pairs of patches within a batch: cutmix (a box of one pasted into the other, labels by "
                   "area), mixup (a blend, labels by weight) or none (default cutmix)")
    r.add_argument("--mix-p", type=float, default=0.5, help="share of batches mixed (default 0.5)")
    r.add_argument("--translate", type=int, default=4,
                   help="random shifts of up to this many pixels, the edge reflected into the gap (default 4)")
    t.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    t.add_argument("--init", help="start from this trained model (same --arch, or resnet50 for "
                   "resnet50-nomaxpool: the same weights; bands a subset of --bands): e.g. spectrumnet-rgb for a "
                   "13-band model fine-tuned on EuroSAT MS")
    t.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="training arithmetic: float32, or mixed_bfloat16 (bfloat16 compute, float32 weights: about 2x "
                   "faster on CPUs with AVX512-BF16 or AMX, slower elsewhere); the saved model is float32 either way")
    t.add_argument("--augment", choices=AUGMENTATIONS, default="standard",
                   help="radiometric augmentation of RGB JPEGs: standard (flips, rotations, contrast, gain, haze; the "
                   "default) or l2a (also the L1C -> L2A transform fitted on a real L1C/L2A pair, and seasonal "
                   "colour; refused for MS GeoTIFFs)")
    t.add_argument("--out", required=True, help="model folder to write, e.g. models/spectrumnet-rgb")
    t.add_argument("--quiet", action="store_true", help="no progress output")

    e = sub.add_parser("evaluate", help="accuracy, per-class accuracy and confusion matrix on a split",
                       description="Score a model on a split of EuroSAT RGB (JPEGs, RGB models only) or EuroSAT MS "
                       "(GeoTIFF DN, through the model's radiometry: the test that real L1C input reaches the model "
                       "as the JPEGs did). A folder holding part of the split (the MS subset) is scored on that part.")
    _eurosat_args(e, "EuroSAT RGB or MS folder")
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
                        "right about 90 % of the time), then write it with the expected calibration error on the "
                        "test split, before and after, into the model's card.json. Then one more temperature per "
                        "stride for map cells (a stride-64 cell is one 640 m patch, surer than it should be where it "
                        "straddles two land covers), fitted on mosaics of val patches in fields of 1-4 patches with the "
                        "grid at a random offset, kept where it lowers the calibration error on mosaics of test "
                        "patches (minutes: about 5 for spectrumnet-rgb, 45 for resnet50-rgb on 2 cores). Labels do not "
                        "change (the top class is the same); confidence.tif and --min-confidence use the calibrated "
                        "probabilities.",
                        epilog="example:\n  python -m atlas_change calibrate --data ../shared/eurosat/EuroSAT_RGB "
                        "--model spectrumnet-rgb", formatter_class=argparse.RawDescriptionHelpFormatter)
    _eurosat_args(ca, "EuroSAT RGB folder")
    ca.add_argument("--model", required=True, help="model name under models/ or a model folder")
    ca.add_argument("--tta", type=int, choices=VIEWS, default=DEFAULT_VIEWS,
                    help=f"test-time views to fit with (default {DEFAULT_VIEWS}, classify's default)")
    ca.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME, help=f"inference runtime (default {DEFAULT_RUNTIME})")
    ca.add_argument("--no-strides", action="store_true",
                    help="fit the patch temperature only (the card then has no per-stride cell temperatures: "
                    "cells as averaged)")
    ca.add_argument("--quiet", action="store_true", help="no progress bar")

    qz = sub.add_parser("quantize", help="the model's OpenVINO network in int8, scored against the float one",
                        description="Post-training int8 quantisation (NNCF) of a model's OpenVINO network, "
                        "calibrated on EuroSAT train JPEGs, scored against the float network on the test split at "
                        "--tta 1 and the default, and written as models/NAME/openvino-int8/ with its record in "
                        "card.json. classify's default runtime (openvino) runs it only with --make-default and where it "
                        "kept the float labels (at least 99.5 %% of the test labels, accuracy within 0.2 points); "
                        "--runtime openvino-int8 runs it anyway, openvino-float never. Needs the nncf package "
                        "(pip install nncf; the dev extra has it).",
                        epilog="example:\n  python -m atlas_change quantize --data ../shared/eurosat/EuroSAT_RGB "
                        "--model spectrumnet-rgb", formatter_class=argparse.RawDescriptionHelpFormatter)
    _eurosat_args(qz, "EuroSAT RGB folder")
    qz.add_argument("--model", required=True, help="model name under models/ or a model folder")
    qz.add_argument("--samples", type=int, default=1280, help="calibration patches from the train split (default 1280)")
    qz.add_argument("--make-default", action="store_true",
                    help="make it the default of --runtime openvino where it kept the EuroSAT test labels; only "
                    "after benchmarks/real_scenes.py --setting default --setting float showed the real scenes' "
                    "labels unchanged within a cell or two (EuroSAT alone does not show it)")
    qz.add_argument("--quiet", action="store_true", help="no progress bar")

    cp = sub.add_parser("compare", help="two dates (or periods) of an AOI -> change raster, hectares, summary",
                        description="Compare two classified dates, or two periods of several dates, over an AOI on "
                        "one common grid. BEFORE/AFTER are classify output folders, or scenes (classified on the fly "
                        "into the output's parent folder, reusing an earlier result of the same input and model). "
                        "A period (--before A B C --after D E F) combines its dates: per cell each clear date is "
                        "evidence for the period's class (--period-evidence); far less false change than one date a "
                        "side (docs/change.md: Periods). Change is decided from all sides together: "
                        "each cell's posterior over its class history, from every side's calibrated probabilities "
                        "and a transition prior (--stay; docs/change.md).",
                        epilog="outputs: before.tif, after.tif (+ _confidence.tif, _probabilities.tif, "
                        "_observations.tif: clear dates per cell), change.tif (code = from_id*100 + to_id, 0 = "
                        "unchanged/nodata/cloud/uncertain), p_change.tif and p_conversion.tif (each cell's posterior "
                        "probability of any change and of a change between land-cover groups), transitions.csv and transitions_groups.csv (hectares), "
                        "summary.json, aoi.geojson\nexamples:\n  python -m atlas_change compare outputs/2023 "
                        "outputs/2024 --aoi aoi/farm.geojson --out outputs/farm\n  python -m atlas_change compare "
                        "--before jun23.tif jul23.tif aug23.tif --after jun24.tif jul24.tif --aoi aoi/farm.geojson "
                        "--out outputs/farm-summers\n  python -m atlas_change compare --period s2019/*.tif --period s2020/*.tif "
                        "--period s2021/*.tif --aoi aoi/farm.geojson --out outputs/farm-2019-2021\n"
                        "  python -m atlas_change compare --stac-api https://earth-search.aws.element84.com/v1 "
                        "--before-range 2023-06-01/2023-08-31 --after-range 2024-06-01/2024-08-31 --aoi aoi/farm.geojson "
                        "--out outputs/farm-summers --dry-run", formatter_class=argparse.RawDescriptionHelpFormatter)
    cp.add_argument("dates", nargs="*", metavar="BEFORE AFTER",
                    help="earlier and later date: classify output folders or scenes")
    cp.add_argument("--before", nargs="+", metavar="SCENE", help="the earlier period's scenes (or classify outputs)")
    cp.add_argument("--after", nargs="+", metavar="SCENE", help="the later period's scenes (or classify outputs)")
    cp.add_argument("--period", nargs="+", action="append", metavar="SCENE",
                    help="one period's scenes (or classify outputs); repeat it, in time order, for a sequence of "
                    "two or more periods (e.g. the summers of 2019 to 2024): every cell's class history is decided "
                    "from all of them together; OUT then holds one compare folder per step, the span from the first "
                    "to the last period, sequence.tif and summary.json")
    cp.add_argument("--period-dates", action="append", metavar="DATES",
                    help="the dates of one --period (YYYY-MM-DD, one, or one per scene, comma-separated), repeated "
                    "in the order of the periods (default: from the metadata)")
    g = cp.add_mutually_exclusive_group(required=True)
    g.add_argument("--aoi", help="AOI file (GeoJSON or GeoPackage, any CRS)")
    g.add_argument("--aoi-bbox", help="minx,miny,maxx,maxy in --aoi-crs")
    cp.add_argument("--aoi-crs", default="EPSG:4326", help="CRS of --aoi-bbox (default EPSG:4326)")
    cp.add_argument("--out", help="output folder (required, except with --dry-run)")
    cp.add_argument("--min-confidence", type=float, default=DEFAULT_THRESHOLD,
                    help="change is decided from both sides together (each cell's posterior over its before and "
                    "after class): a cell is changed where P(change) reaches this, unchanged where P(no change) "
                    f"does, uncertain otherwise (0.5 to 1: 0.5 decides every cell; default {DEFAULT_THRESHOLD:g}; p_change.tif)")
    cp.add_argument("--stay", type=float, default=DEFAULT_STAY,
                    help="the transition prior: probability that a cell keeps its class between the sides, each "
                    f"other class getting an equal share of the rest (default {DEFAULT_STAY:g}, fitted on EuroSAT "
                    "val pairs with known change; higher: less change found, less false change; docs/change.md)")
    cp.add_argument("--period-evidence", choices=EVIDENCE, default=EVIDENCE[0],
                    help="how the dates of a period combine: product (each date evidence for the period's one "
                    "class; the default) or mean (their probabilities averaged; docs/change.md: Periods)")
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
                        epilog="example:\n  python -m atlas_change export outputs/example/example/2023-06-01_2024-06-01 "
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
                        epilog="example:\n  python -m atlas_change view outputs/example/example/2023-06-01_2024-06-01 "
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
    atlas.add_parser(sub)
    return p
