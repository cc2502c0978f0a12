"""`compare`: change between dates, periods or a sequence of them (atlas_change.change.compare)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..mapping.cloud import MAX_CLOUD
from ..change.composite import EVIDENCE
from ..model.infer import DEFAULT_RUNTIME, DEFAULT_VIEWS, RUNTIMES, VIEWS
from ..change.joint import DEFAULT_STAY, DEFAULT_THRESHOLD
from ..batch.search import MAX_TILE_CLOUD, MIN_AOI_CLEAR
from ..errors import AtlasError


def add_parsers(sub) -> None:
    """The arguments of `compare`."""
    cp = sub.add_parser("compare", help="two dates (or periods) of an AOI -> change raster, hectares, summary",
                        description="Compare two classified dates, or two periods of several dates, over an AOI on "
                        "one common grid. BEFORE/AFTER are classify output folders, or scenes (classified on the fly "
                        "into the output's parent folder, reusing an earlier result of the same input and model). "
                        "Scenes (files, SAFE, Items, Item URLs) whose grids differ, as tiles of two UTM zones do, are "
                        "each read on the AOI's grid instead (docs/change.md: AOIs across tiles). "
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
    g.add_argument("--aoi", help="AOI file (GeoJSON or GeoPackage, any CRS), or its http(s) URL")
    g.add_argument("--aoi-bbox", help="minx,miny,maxx,maxy in --aoi-crs")
    cp.add_argument("--aoi-crs", default="EPSG:4326", help="CRS of --aoi-bbox (default EPSG:4326)")
    cp.add_argument("--out", help="output folder (required, except with --dry-run)")
    cp.add_argument("--min-confidence", type=float, default=DEFAULT_THRESHOLD,
                    help="change is decided from both sides together (each cell's posterior over its before and "
                    "after class): a cell is changed where P(change) reaches this, unchanged where P(no change) "
                    f"does, uncertain otherwise (0.5 to 1: 0.5 decides every cell; default {DEFAULT_THRESHOLD:g}; p_change.tif)")
    cp.add_argument("--stay", type=float,
                    help="the transition prior: probability that a cell keeps its class between the sides, each "
                    "other class getting an equal share of the rest (default: the prior fitted to the maps' model, "
                    "in its card since `calibrate` (spectrumnet-rgb 0.6, resnet50-rgb 0.7), else "
                    f"{DEFAULT_STAY:g}; higher: less change found, less false change; summary.json says which; "
                    "docs/change.md)")
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
    cp.add_argument("--quiet", action="store_true", help="print nothing but errors (no progress of scenes "
                    "classified on the fly, no warnings, no summary lines: they are in summary.json)")


def _cmd_compare(a) -> None:
    from contextlib import nullcontext

    from ..change.compare import compare, prior_brief
    from ..outputs import new_files_undone

    kw = {"max_cloud": a.max_cloud, "stride": a.stride, "tta": a.tta, "runtime": a.runtime, "quiet": a.quiet,
          "period_evidence": a.period_evidence, **({"model": a.model} if a.model else {})}
    if not a.out and not (a.stac_api and a.dry_run):
        raise AtlasError("compare: --out FOLDER is required")
    if a.stac_api:
        if a.dates or a.before or a.after or not (a.before_range and a.after_range):
            raise AtlasError("compare --stac-api: give --before-range START/END and --after-range START/END "
                             "(and no BEFORE AFTER scenes)")
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
    # the mosaics this run's search wrote, for a compare that failed: nothing left half-done (compare
    # itself undoes those it writes)
    with new_files_undone(Path(a.out).parent / "mosaics") if a.stac_api and a.out else nullcontext():
        if a.stac_api:
            found = _search_sides(a)
            if found is None:
                return
            (before, a.before_date), (after, a.after_date) = found
        s = compare(before, after, aoi=a.aoi, aoi_bbox=a.aoi_bbox, aoi_crs=a.aoi_crs, out=a.out,
                    min_confidence=a.min_confidence, stay=a.stay, allow_model_mismatch=a.allow_model_mismatch,
                    before_date=_dates(a.before_date, before), after_date=_dates(a.after_date, after), **kw)
    if a.quiet:
        return
    tol = s["grid_tolerance"]
    print(f"{a.out}: {s['changed_ha']:.2f} ha changed (+- {tol['changed_ha']:.2f} ha where the grid falls; "
          f"{s['conversion_ha']:.2f} ha between land-cover groups), "
          f"{s['uncertain_ha']:.2f} ha uncertain of "
          f"{s['valid_ha']:.2f} ha valid in the AOI; {s['cloud_ha']:.2f} ha cloud and {s['snow_ha']:.2f} ha snow on either date, "
          f"{s['nodata_ha']:.2f} ha nodata; change prior stay {prior_brief(s['change_decision'])}" + (" (MODEL MISMATCH)" if s["model_mismatch"] else ""))


def _dates(text: str | None, srcs):
    """--before-date / --after-date / one --period-dates: one date (str) for a single scene or a
    whole period, or a list of one date per scene (comma-separated)."""
    if text is None or isinstance(srcs, str):
        return text
    return [d.strip() for d in text.split(",")] if "," in text or len(srcs) == 1 else text


def _compare_sequence(a, kw: dict) -> None:
    """compare --period ... --period ...: a sequence of periods (compare.compare_periods)."""
    from ..change.compare import compare_periods, prior_brief

    given = a.period_dates or []
    if given and len(given) != len(a.period):
        raise AtlasError(f"--period-dates: given {len(given)} times for {len(a.period)} --period; give it once per "
                         "period, in the same order, or not at all")
    dates = [_dates(t, p) for t, p in zip(given, a.period)] if given else None
    s = compare_periods(a.period, dates, aoi=a.aoi, aoi_bbox=a.aoi_bbox, aoi_crs=a.aoi_crs, out=a.out,
                        min_confidence=a.min_confidence, stay=a.stay, allow_model_mismatch=a.allow_model_mismatch, **kw)
    if a.quiet:
        return
    if "steps" not in s:  # two periods: one step, as BEFORE AFTER
        s = {"steps": [{"folder": ".", **{k: s[k] for k in ("changed_ha", "conversion_ha", "uncertain_ha", "valid_ha")},
                        "before": s["before"]["period"], "after": s["after"]["period"]}],
             "change_decision": s["change_decision"]}
    for step in [*s["steps"], *([s["span"]] if "span" in s else [])]:
        print(f"{Path(a.out) / step['folder']}: {step['before']} -> {step['after']}: {step['changed_ha']:.2f} ha changed "
              f"({step['conversion_ha']:.2f} ha between land-cover groups), {step['uncertain_ha']:.2f} ha uncertain "
              f"of {step['valid_ha']:.2f} ha valid")
    print(f"decided with change prior stay {prior_brief(s['change_decision'])}")


def _search_sides(a) -> list | None:
    """--stac-api: each side's chosen items -> ((urls, 'date,date'), (urls, dates)); None after
    --dry-run. Where no one Item covers the AOI, their mosaic files, beside --out in mosaics/."""
    from rasterio.crs import CRS

    from ..change.compare import read_aoi
    from ..batch.search import choose_periods, scene_files

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


COMMANDS = {"compare": _cmd_compare}
