"""How far an int8 network (`quantize`) is from the float one, on L1C and on L2A.

1. `--calibrations`: the model is copied twice (temporary folders) and quantized with the int8
   calibration patches as `quantize` takes them (L1C JPEGs, every second one made L2A-like) and with
   the L1C JPEGs alone (its previous recipe); each int8 network's labels are compared with the float
   network's at `--tta 2` on EuroSAT val (where the recipe is chosen) and test (where it is reported),
   each as is (L1C) and made L2A-like as benchmarks/l2a_like.py does it (the fitted L1C -> L2A change,
   half of it, the BigEarthNet haze removed).
2. Always: cell by cell, the labels `classify` gives the real scenes of benchmarks/real_scenes.py
   with two runtimes of the model (default: openvino-float against openvino-int8; and the float32
   TensorFlow graph against openvino-float, the arithmetic noise the default path already has).

    python benchmarks/int8_agreement.py --shared ../shared --model spectrumnet-rgb [--calibrations]

The real scenes are few (546 labelled cells): they show how many labels move, not rates to quote.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_scenes as rs  # noqa: E402
from bench_classify import append_results, cpu_name  # noqa: E402
from l2a_like import jpeg_versions  # noqa: E402


def eurosat_versions(data: str) -> dict:
    """{split: ({version: JPEG values}, labels)} for val and test, in l2a_like.py's versions."""
    from atlas_change.model.train import load_split

    out = {}
    for split in ("val", "test"):
        X, y, _ = load_split(data, split, None, True)
        out[split] = (jpeg_versions(X), y)
    return out


def calibrations(model: str, data: str) -> str:
    """Section 1: both calibration recipes on EuroSAT val / test versions (Markdown rows)."""
    from atlas_change.model import quantize as qz
    from atlas_change.model.infer import Predictor
    from atlas_change.model.registry import load_card

    versions = eurosat_versions(data)
    rows, tmp = [], Path(tempfile.mkdtemp(prefix="atlas-int8-"))
    recipes = {"L1C + L2A-like (quantize)": qz.l2a_like, "L1C alone (before)": lambda batches, rng: batches}
    float_pred = None
    for i, (name, mix) in enumerate(recipes.items()):
        folder = tmp / f"recipe{i}"
        shutil.copytree(load_card(model).path, folder, ignore=shutil.ignore_patterns("openvino-int8"))
        qz.l2a_like, keep = mix, qz.l2a_like
        try:
            qz.quantize(data, str(folder), quiet=True)
        finally:
            qz.l2a_like = keep
        card = load_card(str(folder))
        float_pred = float_pred or Predictor(card, "openvino-float")
        int8 = Predictor(card, "openvino-int8")
        for split, (xs, y) in versions.items():
            for version, X in xs.items():
                pf, pq = (p(X, prescaled=True, views=2).argmax(1) for p in (float_pred, int8))
                rows.append(f"| {name} | {split} | {version} | {(pf == pq).mean():.4f} | {(pf == y).mean():.4f} | "
                            f"{(pq == y).mean():.4f} |")
    shutil.rmtree(tmp, ignore_errors=True)
    return ("| int8 calibration | split | version | int8 labels = float labels | float accuracy | int8 accuracy |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def agreement(model: str, scenes: list, first: str, second: str) -> str:
    """Section 2: cell-by-cell labels of two runtimes (one Markdown row per scene, and the total)."""
    from atlas_change.classes import CLASSES

    rows, same_all, n_all = [], 0, 0
    for name, path, stride in scenes:
        a, b = (rs.labels(path, model, stride, {"runtime": r})["ids"] for r in (first, second))
        both = (a > 0) & (b > 0)
        moved = both & (a != b)
        moves: dict[str, int] = {}
        for x, y in zip(a[moved], b[moved]):
            k = f"{CLASSES[x - 1]} -> {CLASSES[y - 1]}"
            moves[k] = moves.get(k, 0) + 1
        same, n = int(both.sum() - moved.sum()), int(both.sum())
        same_all, n_all = same_all + same, n_all + n
        rows.append(f"| {first} / {second} | {name} | {same}/{n} | {', '.join(f'{k} {v}' for k, v in moves.items())} |")
    rows.append(f"| {first} / {second} | **all** | **{same_all}/{n_all}** | |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.environ.get("ATLAS_SHARED", "../shared"), help="the shared data folder")
    ap.add_argument("--model", default="spectrumnet-rgb", help="model name or folder (it must ship an int8 network)")
    ap.add_argument("--calibrations", action="store_true", help="also quantize copies both ways (section 1)")
    ap.add_argument("--pair", action="append", help="runtimes compared, 'A,B' (repeatable; default "
                    "openvino-float,openvino-int8 and graph,openvino-float)")
    a = ap.parse_args()
    import warnings

    warnings.simplefilter("ignore")
    shared = Path(a.shared)
    text = (f"\n## {time.strftime('%Y-%m-%d %H:%M')} - int8 against float: `python benchmarks/int8_agreement.py "
            f"--model {a.model}{' --calibrations' if a.calibrations else ''}` ({cpu_name()}, {os.cpu_count()} cores)\n\n")
    if a.calibrations:
        text += calibrations(a.model, str(shared / "eurosat" / "EuroSAT_RGB")) + "\n"
    scenes = [(n, p, s) for n, _, p, s in rs.scenes(shared, Path(tempfile.mkdtemp(prefix="atlas-int8-scenes-")))]
    pairs = [p.split(",") for p in (a.pair or ["openvino-float,openvino-int8", "graph,openvino-float"])]
    text += ("| runtimes | real scene | same label, cells | moves |\n|---|---|---|---|\n"
             + "\n".join(agreement(a.model, scenes, x, y) for x, y in pairs) + "\n")
    append_results(text)


if __name__ == "__main__":
    main()
