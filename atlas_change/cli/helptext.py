"""Help texts of the command line that are longer than a line (epilogs of --help)."""
from __future__ import annotations

EPILOG_CLASSIFY = """\
inputs:
  a multi-band GeoTIFF/COG (band identity from band descriptions such as B02/B8A, else --bands,
  else by count: 13 = EuroSAT/L1C order with B8A last, 12 = L2A order without B10; unnamed bands
  whose pixels show B8A right after B08 are refused with the --bands that names them), or a
  Sentinel-2 SAFE product as a folder or .zip (L1C or L2A; 20/60 m bands are resampled onto the
  10 m grid by GDAL, the baseline >= 04.00 offset of -1000 is removed), a folder of one GeoTIFF per
  band (B02.tif, B2.tif, *_B02.tif), or a STAC Item (a .json file or an http(s) URL; Earth Search or
  Planetary Computer asset keys; remote COGs read by HTTP range requests), or a *.mosaic.json of
  several Items of one date (written by compare --stac-api where no single Item covers the AOI).
  --aoi / --aoi-bbox: only the scene's 64 px blocks that cover the AOI are read and classified.
  The pixels must be Sentinel-2 digital numbers (reflectance x 10000, 16-bit) on a grid of about 10 m
  in a projected CRS in metres that keeps areas (UTM, national grids, equal-area): 8-bit renderings,
  reflectance in 0-1, other pixel sizes, CRSs in feet and Web Mercator, rotated grids and ground
  control points alone are refused, each with the GDAL command that converts it.

clouds: a patch with more than --max-cloud of its pixels cloud or cloud shadow is not labelled
  (nodata in lulc/confidence/cells, 2 in cloud.tif, counted in run.json). L2A: the product's SCL;
  L1C (any input with B01 B02 B04 B05 B08 B8A B09 B10 B11 B12): s2cloudless at 160 m plus dark
  pixels near clouds as shadow; L2A without SCL (no B10, but B02 B03 B04 B08 B11 B12): Fmask's
  spectral cloud tests at 160 m (they also mask some bright roofs); other inputs (3/4-band
  GeoTIFFs) are not masked, with a warning, and run.json says so.

water and snow (the bands the RGB model never sees; run.json "surface"): River / SeaLake only where
  at least 1 % of a patch is water by NDWI (B03, B08) > 0 (McFeeters 1996) and, with B11, MNDWI > 0
  (Xu 2006); a patch over half water is River or SeaLake. Snow (L2A SCL class 11, else NDSI > 0.4
  with B08 > 0.11 and B03 > 0.10 reflectance, Hall et al. 1995) is handled like cloud: a patch with
  more than --max-cloud snow is not labelled (3 in cloud.tif, snow hectares in run.json). Inputs
  without B08 (or B11 and SCL for snow) get a warning.

outputs (in --out, default outputs/<scene name>/):
  lulc.tif        COG, uint8 class ids 1..10 (EuroSAT order, 0 = nodata), colour table inside the file;
                  class names and attribute table in lulc.tif.aux.xml, QGIS style in lulc.qml
  confidence.tif  COG, float32 top-1 probability (NaN = nodata)
  cloud.tif       COG, uint8 0 = nodata (outside the scene), 1 = clear (labelled), 2 = not labelled:
                  cloud or shadow, 3 = not labelled: snow or ice
  cells.parquet   GeoParquet, one row per labelled map cell (no overlap): row, col, polygon, class,
                  group, confidence, hectares, probabilities

the whole scene: cells are --stride pixels; where the scene is not 64 + a multiple of the stride
  pixels, the last row / column of cells is labelled by patches shifted back to end at its edge
  (those cells reach up to stride - 1 pixels past it).
  run.json        input checksum, band mapping, model + weights SHA-256, parameters, timings, counts

examples:
  python -m atlas_change classify scene.tif
  python -m atlas_change classify S2B_MSIL2A_20230612T101559_N0509_R065_T32TQM.SAFE.zip
  python -m atlas_change classify scene.tif --stride 32 --out outputs/my-aoi
  python -m atlas_change classify https://earth-search.aws.element84.com/v1/collections/sentinel-2-l2a/items/S2B_32TQM_20230612_0_L2A
  # on an existing Dask cluster (start one with `dask scheduler` and `dask worker tcp://HOST:8786`
  # on each machine, one worker process per machine; every worker must see the scene and models paths):
  python -m atlas_change classify scene.tif --scheduler tcp://HOST:8786
"""


WORKERS_HELP = ("Dask worker processes of the local cluster (default 1: this process, with a thread per core; "
                "more processes split the cores and are slower on one machine: benchmarks/RESULTS.md)")

JOB_EPILOG = """\
job file (TOML; paths relative to the job file's folder; every problem is reported before any work):
  name = "parma-2023-2024"
  model = "spectrumnet-rgb"            # optional: name under models/ or a model folder (default: the
                                       # first shipped model of spectrumnet-l1c13, spectrumnet-rgb,
                                       # resnet50-rgb whose bands every scene has)
  output = "../outputs/parma"          # results: scenes/<scene>/ and <aoi>/<before>_<after>/
  stride = 64                          # optional: 64 (default), 32 or 16
  chunk = 1024                         # optional: pixels per Dask task side
  min_confidence = 0.6                 # optional, for compare: the posterior a change decision needs
  stay = 0.6                           # optional, for compare: prior probability a cell keeps its class
                                       # (default: the one fitted to the maps' model, in its card)
  max_nodata = 0.0                     # optional: largest nodata share of a labelled patch, [0, 1)
  max_cloud = 0.1                      # optional: largest cloud/shadow share of a labelled patch
  cloud_mask = true                    # optional: false = do not look for clouds (a cloud-free composite)
  tta = 2                              # optional: test-time augmentation views, 1, 2, 4 or 8
                                       # (4 for change on small AOIs: see classify --help)
  runtime = "openvino"                 # optional: openvino, xla, graph or keras
  produce = ["classify", "compare", "gpkg", "html"]   # optional (default all)
  allow_untrained = false              # optional; allow_model_mismatch = false too
  [[aoi]]
  name = "parma"                       # not "scenes": <output>/scenes/ holds the per-scene results
  file = "../aoi/parma.geojson"        # GeoJSON or GeoPackage, any CRS
  scenes = { 2023-06-12 = "../scenes/S2B_MSIL1C_20230612*.SAFE.zip", 2024-06-06 = "../scenes/x_2024.tif" }
  pairs = [["2023-06-12", "2024-06-06"]]   # optional (default: consecutive dates, or periods)
  # optional: periods of several dates, composited (per cell the mean class probabilities over its
  # clear dates); pairs then name periods, e.g. pairs = [["summer-2023", "summer-2024"]]
  periods = { summer-2023 = ["2023-06-12", "2023-07-17"], summer-2024 = ["2024-06-06", "2024-07-21"] }
  [[aoi]]                              # or: each period's clearest dates found in a STAC API (searched
  name = "farm"                        # once; the Items kept under <output>/.atlas-job/search/farm/;
                                       # a scene may also be a STAC Item URL, kept under .atlas-job/items/)
  file = "../aoi/farm.geojson"
  search = { api = "https://earth-search.aws.element84.com/v1", scenes_per_period = 3,
             periods = { s2023 = "2023-06-01/2023-08-31", s2024 = "2024-06-01/2024-08-31" } }

state: <output>/.atlas-job/ holds one record per step (status, error, fingerprint) and a lock that
refuses a second run of the same job at the same time. exit code: 0 when every step succeeded,
1 when some failed (the others still ran), 2 when the job file is invalid or locked. The last lines
give each compared AOI's result: changed, uncertain and cloud hectares, the map and the GeoPackage.

examples:
  python -m atlas_change run jobs/example.toml
  python -m atlas_change run jobs/parma.toml --scheduler tcp://HOST:8786
  python -m atlas_change status jobs/parma.toml
"""

EPILOG_ASSESS = """\
why: counting changed cells is not an area estimate: map errors bias it, and change is rare, so
  even an accurate map can be far off. Agencies (FAO, GFOI, IPCC guidance) report error-adjusted
  areas with confidence intervals from a stratified sample labelled by a person on the imagery
  (Olofsson et al. 2014, Remote Sensing of Environment 148: 42-57).

reference labels: one of the legend's names (sample.html lists them), e.g. `stable agricultural`,
  `agricultural -> artificial`; a change the map never shows may be written as `A -> B` too.
  Case and spaces do not matter, and sample.csv may be saved by a spreadsheet (UTF-8, fields
  separated by commas, semicolons or tabs). Labels typed into sample.gpkg's attribute table (in
  QGIS) are read too, where sample.csv has none for the cell; the two files may not disagree.
  The `uncertain` stratum (cells the map abstains on) is sampled so its real change is estimated,
  but is no reference class.

examples:
  python -m atlas_change sample outputs/example/example/2023-06-01_2024-06-01 --out outputs/lake-sample
  # ... fill in the reference column of outputs/lake-sample/sample.csv, then:
  python -m atlas_change assess outputs/lake-sample
"""
