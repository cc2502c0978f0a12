"""`train`, `evaluate`, `calibrate`, `quantize`: the models (atlas_change.model)."""
from __future__ import annotations

import argparse
import json
import os

from ..change.joint import DEFAULT_STAY
from ..model.augment import AUGMENTATIONS, MIXES
from ..model.infer import DEFAULT_RUNTIME, DEFAULT_VIEWS, RUNTIMES, VIEWS
from ..model.registry import ARCHITECTURES, PRECISIONS
from ..bands import parse_bands
from ..errors import AtlasError


def _eurosat_args(p: argparse.ArgumentParser, what: str) -> None:
    """--data and --splits, as train, evaluate and calibrate read EuroSAT (train.find_split_file)."""
    p.add_argument("--data", default=os.environ.get("ATLAS_EUROSAT"), help=f"{what} (default $ATLAS_EUROSAT)")
    p.add_argument("--splits", help="folder of eurosat-*.txt (default: beside or above --data, or ../splits)")


def _add_train(sub) -> None:
    """The arguments of `train`."""
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
    r.add_argument("--average-last", type=int, default=0, metavar="K",
                   help="also average the weights of the last K epochs (stochastic weight averaging, batch norm "
                   "recomputed) and write the average where it scores at least the best epoch on val (default 0: "
                   "off; give it when the run starts: the mean is kept as the epochs go)")
    d = t.add_argument_group("distillation", "learn from trained models as well as from the labels")
    d.add_argument("--teacher", action="append", default=[], metavar="MODEL",
                   help="a trained model (name or folder; repeat for an ensemble) whose mean class probabilities on "
                   "each training patch make up --distill of its target (computed once before the first epoch)")
    d.add_argument("--distill", type=float, default=0.5,
                   help="share of the target the teachers give, the one-hot label the rest (default 0.5)")
    d.add_argument("--teacher-views", type=int, choices=(1, 2, 4, 8), default=8,
                   help="test-time views the teachers' probabilities are averaged over (default 8)")
    t.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    t.add_argument("--init", help="start from this trained model (same --arch, or resnet50 for "
                   "resnet50-nomaxpool: the same weights; bands a subset of --bands): e.g. spectrumnet-rgb for a "
                   "13-band model fine-tuned on EuroSAT MS")
    t.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="training arithmetic: float32, or mixed_bfloat16 (bfloat16 compute, float32 weights: about 2x "
                   "faster on CPUs with AVX512-BF16 or AMX; emulated and slower elsewhere, where a warning says so); the "
                   "saved model is float32 either way")
    t.add_argument("--augment", choices=AUGMENTATIONS, default="standard",
                   help="radiometric augmentation of RGB JPEGs: standard (flips, rotations, contrast, gain, haze; the "
                   "default) or l2a (also the L1C -> L2A transform fitted on a real L1C/L2A pair, and seasonal "
                   "colour; refused for MS GeoTIFFs)")
    t.add_argument("--out", required=True, help="model folder to write, e.g. models/spectrumnet-rgb")
    t.add_argument("--quiet", action="store_true", help="no progress output")


def _add_evaluate(sub) -> None:
    """The arguments of `evaluate`."""
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


def _add_calibrate(sub) -> None:
    """The arguments of `calibrate`."""
    ca = sub.add_parser("calibrate", help="fit a model's probability calibration (temperatures) and change prior on EuroSAT val",
                        description="Temperature scaling (Guo et al. 2017): fit one temperature T on the EuroSAT "
                        "RGB validation split so that the class probabilities mean what they say (patches given 0.9 "
                        "right about 90 % of the time), then write it with the expected calibration error on the "
                        "test split, before and after, into the model's card.json. Then one more temperature per "
                        "stride for map cells (a stride-64 cell is one 640 m patch, surer than it should be where it "
                        "straddles two land covers), fitted on mosaics of val patches in fields of 1-4 patches with the "
                        "grid at a random offset, kept where it lowers the calibration error on mosaics of test "
                        "patches. Last, the change decision's transition prior (the probability that a cell keeps its class "
                        "from one date to the next, which compare, job files and atlas specs use for this model's "
                        "maps unless --stay says otherwise): the strongest prior among those that find the most change "
                        "on pairs of val patches (the second moved L2A-like) while 3 in 4 of the cells called changed "
                        "would be real where 1 % of the cells change; reported on test pairs (docs/change.md). "
                        "Minutes: about 6 for spectrumnet-rgb, 50 for resnet50-rgb on 2 cores. Labels do not "
                        "change (the top class is the same); confidence.tif and --min-confidence use the calibrated "
                        "probabilities.",
                        epilog="example:\n  python -m atlas_change calibrate --data ../shared/eurosat/EuroSAT_RGB "
                        "--model spectrumnet-rgb", formatter_class=argparse.RawDescriptionHelpFormatter)
    _eurosat_args(ca, "EuroSAT RGB folder")
    ca.add_argument("--model", required=True, help="model name under models/ or a model folder")
    ca.add_argument("--tta", type=int, choices=VIEWS,
                    help=f"test-time views to fit with (default {DEFAULT_VIEWS}, classify's default)")
    ca.add_argument("--runtime", choices=RUNTIMES, help=f"inference runtime (default {DEFAULT_RUNTIME})")
    ca.add_argument("--no-strides", action="store_true",
                    help="fit the patch temperature only (the card then has no per-stride cell temperatures: "
                    "cells as averaged)")
    ca.add_argument("--no-change-prior", action="store_true",
                    help="do not fit the change prior (compare then falls back to the project's default stay, "
                    f"{DEFAULT_STAY:g}, for this model's maps)")
    ca.add_argument("--change-prior-only", action="store_true",
                    help="refit only the change prior, through the temperatures the card already has (half a "
                    "minute for spectrumnet-rgb, four for resnet50-rgb, on 2 cores)")
    ca.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_quantize(sub) -> None:
    """The arguments of `quantize`."""
    qz = sub.add_parser("quantize", help="the model's OpenVINO network in int8, scored against the float one",
                        description="Post-training int8 quantisation (NNCF) of a model's OpenVINO network, "
                        "calibrated on EuroSAT train JPEGs (every second one made L2A-like), scored against the "
                        "float network on the test split at --tta 1 and the default, and written as "
                        "models/NAME/openvino-int8/ with its record in "
                        "card.json. classify's default runtime (openvino) runs it only with --make-default and where it "
                        "kept the float labels (at least 99.5 % of the test labels, accuracy within 0.2 points); "
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


def add_parsers(sub) -> None:
    """The arguments of `train`, `evaluate`, `calibrate`, `quantize`."""
    _add_train(sub)
    _add_evaluate(sub)
    _add_calibrate(sub)
    _add_quantize(sub)



def _cmd_train(a) -> None:
    from ..model.train import Recipe, train

    recipe = Recipe(label_smoothing=a.label_smoothing, mix=a.mix, mix_p=a.mix_p, translate=a.translate,
                    weight_decay=a.weight_decay, warmup_epochs=a.warmup_epochs)
    card = train(a.data, a.arch, a.out, parse_bands(a.bands) if a.bands else None, epochs=a.epochs, batch=a.batch, lr=a.lr,
                 seed=a.seed, splits=a.splits, quiet=a.quiet, init=a.init, precision=a.precision,
                 augment=a.augment, recipe=recipe, average_last=a.average_last, teachers=tuple(a.teacher),
                 distill=a.distill, teacher_views=a.teacher_views)
    acc = card.metrics.get("accuracy")
    print(f"{a.out}: {card.architecture} on {', '.join(card.bands)}; test accuracy "
          f"{acc:.4f}" if acc is not None else f"{a.out}: trained (no test split found)")


def _cmd_evaluate(a) -> None:
    from ..model.train import evaluate

    r = evaluate(a.data, a.model, a.split, a.splits, quiet=a.quiet or a.json, runtime=a.runtime, views=a.tta)
    if a.json:
        print(json.dumps(r))
        return
    print(f"{r['model']} on {r['split']} (n={r['n']}): accuracy {r['accuracy']:.4f}")
    for c, v in r["per_class"].items():
        print(f"  {c:22s} {v:.4f}")


def _cmd_calibrate(a) -> None:
    """The temperatures (model.calibrate), then the change prior through them (change.prior)."""
    from ..change.prior import fit_card
    from ..model.calibrate import calibrate

    if a.change_prior_only and (a.no_change_prior or a.no_strides or a.tta or a.runtime):
        raise AtlasError("calibrate: --change-prior-only refits the prior alone, through the card's temperatures, "
                         "views and runtime; drop --no-change-prior / --no-strides / --tta / --runtime")
    if not a.change_prior_only:
        _print_temperatures(a.model, calibrate(a.data, a.model, a.splits, a.tta, a.runtime, a.quiet, not a.no_strides))
    if not a.no_change_prior:
        cp = fit_card(a.data, a.model, a.splits, a.quiet)
        v, t = cp["val"], cp["test"]
        print(f"{a.model}: change prior stay {cp['stay']:g} (written to its card.json); on EuroSAT pairs, val / test: "
              f"false change {100 * v['false']:.2f} / {100 * t['false']:.2f} %, change found {100 * v['found']:.1f} / "
              f"{100 * t['found']:.1f} %, changed cells real where {100 * cp['rate']:g} % change "
              f"{100 * v['precision_at_rate']:.0f} / {100 * t['precision_at_rate']:.0f} %")


def _print_temperatures(model: str, r: dict) -> None:
    """calibrate's temperatures and what they do to the calibration error."""
    print(f"{model}: temperature {r['temperature']:.3f}; expected calibration error on test "
          f"{r['ece_test_before']:.4f} -> {r['ece_test_after']:.4f} (written to its card.json)")
    for s, v in r.get("stride_temperature", {}).items():
        if isinstance(v, dict):
            print(f"  stride {s} cells: temperature {v['temperature']:.3f} (fitted {v['fitted']:.3f}"
                  f"{'' if v['kept'] else ', not kept: no better on test mosaics'}); expected calibration error "
                  f"on test mosaics {v['ece_test_before']:.4f} -> {v['ece_test_after']:.4f}")


def _cmd_quantize(a) -> None:
    from ..model.quantize import quantize

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


COMMANDS = {"train": _cmd_train, "evaluate": _cmd_evaluate, "calibrate": _cmd_calibrate, "quantize": _cmd_quantize}
