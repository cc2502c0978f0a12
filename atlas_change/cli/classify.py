"""`classify`: a scene to a land-cover map (atlas_change.mapping.pipeline)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..mapping.cloud import MAX_CLOUD
from .helptext import EPILOG_CLASSIFY, WORKERS_HELP
from ..model.infer import DEFAULT_RUNTIME, DEFAULT_VIEWS, RUNTIMES, VIEWS
from ..model.registry import DEFAULT_MODELS


def add_parsers(sub) -> None:
    """The arguments of `classify`."""
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
                    "GeoPackage, any CRS; a file or its http(s) URL), in whole 64 px blocks of the scene's grid: a "
                    "remote COG is read only there")
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
                   "here: the model's int8 network where its card makes that the default, else bfloat16 or "
                   "float32), openvino-float (never int8), openvino-int8, xla (TensorFlow "
                   "XLA), graph (tf.function) or keras (model.predict); labels agree to the tolerance in "
                   f"benchmarks/RESULTS.md, which compares their speed (default {DEFAULT_RUNTIME})")
    c.add_argument("--tta", type=int, choices=VIEWS, default=DEFAULT_VIEWS,
                   help="test-time augmentation: average the class probabilities over N views of each patch "
                   "(1 = none; 2 = also turned by 90 degrees; 4 = the four quarter turns; 8 = those and their "
                   f"mirror images). Model time grows N-fold; each model's accuracy per N: its models/NAME/README.md "
                   f"(default {DEFAULT_VIEWS})")
    c.add_argument("--allow-untrained", action="store_true", help="run an untrained model (pipeline tests only)")
    c.add_argument("--quiet", action="store_true", help="print nothing but errors")


def options(a, bbox=None):
    """The ClassifyOptions the arguments ask for."""
    from ..mapping.pipeline import ClassifyOptions

    return ClassifyOptions(model=a.model, bands=a.bands, stride=a.stride, max_nodata=a.max_nodata,
                           max_cloud=a.max_cloud, cloud_mask=not a.no_cloud_mask, surface_tests=not a.no_surface_tests,
                           tta=a.tta, runtime=a.runtime, chunk=a.chunk, offset=a.offset,
                           allow_untrained=a.allow_untrained, max_pixels=a.max_pixels, bbox=bbox)


def _cmd_classify(a) -> None:
    from ..mapping.pipeline import classify, scene_stem

    out = a.out or str(Path("outputs") / scene_stem(a.scene))
    bbox = None
    if a.aoi or a.aoi_bbox:
        from ..change.compare import read_aoi_frame, wgs84_bounds

        bbox = wgs84_bounds(read_aoi_frame(a.aoi, a.aoi_bbox, a.aoi_crs, None))
    ds = classify(a.scene, options(a, bbox), out=out, workers=a.workers, scheduler=a.scheduler, quiet=a.quiet)
    if a.quiet:
        return
    n, nc, ns = int((ds["lulc"].values > 0).sum()), int(ds["cloud"].values.sum()), int(ds["snow"].values.sum())
    print(f"{out}: lulc.tif {ds.sizes['y']} x {ds.sizes['x']} cells ({n} labelled, {nc} cloud, {ns} snow), "
          f"model {ds.attrs['model']} "
          f"{ds.attrs['weights_sha256'][:12]}{'' if ds.attrs['trained'] else ' (UNTRAINED)'}")


COMMANDS = {"classify": _cmd_classify}
