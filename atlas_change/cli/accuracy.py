"""`sample` and `assess`: stratified sample and error-adjusted areas (atlas_change.accuracy)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .helptext import EPILOG_ASSESS


def add_parsers(sub) -> None:
    """The arguments of `sample`, `assess`."""
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


def _cmd_sample(a) -> None:
    from ..accuracy.sample import sample

    r = sample(a.folder, a.out, seed=a.seed, level=a.strata, n=a.size, target_se=a.target_se,
               minimum=a.min_per_stratum, images=not a.no_images)
    print(f"{a.out}: {r['sample_size']} cells in {len(r['expected_users_accuracy'])} strata (seed {r['seed']}); "
          f"label the reference column of {Path(a.out) / 'sample.csv'} (see sample.html), then "
          f"`python -m atlas_change assess {a.out}`")


def _cmd_assess(a) -> None:
    from ..accuracy.assess import assess

    r = assess(a.folder, a.out)
    print(f"{a.out or a.folder}: overall accuracy {r['overall_accuracy']:.3f} +- {r['overall_accuracy_ci95']:.3f} "
          f"({r['sample_size']} cells)")
    for c, v in r["classes"].items():
        print(f"  {c}: {v['estimated_ha']:.2f} +- {v['estimated_ha_ci95']:.2f} ha (map {v['map_ha']:.2f} ha)")


COMMANDS = {"sample": _cmd_sample, "assess": _cmd_assess}
