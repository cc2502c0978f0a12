"""quantize: the model's OpenVINO network in int8 (NNCF post-training quantisation), calibrated on
EuroSAT train patches, scored against the float network on the test patches, and written beside the
weights with its record in the card. It becomes the default of runtime 'openvino' only when asked
(`make_default`, after benchmarks/real_scenes.py showed the real scenes' labels unchanged within a cell
or two: EuroSAT test alone does not show it) and where it kept the float labels of EuroSAT test: at
least MIN_AGREEMENT of them at the default --tta, and an accuracy within MAX_ACCURACY_DROP of the float
network's; '--runtime openvino-int8' runs it anyway, 'openvino-float' never.

Settings (measured on spectrumnet-rgb, benchmarks/RESULTS.md): NNCF's MIXED preset (symmetric
weights, asymmetric activations), full bias correction, 1280 calibration patches, every second one
moved along the fitted L1C -> L2A change (l2a_like: calibrated on L1C alone, the activation ranges
missed L2A's contrast and the int8 network kept only 90 % of the float labels on EuroSAT val made
L2A-like, 99.65 % with it); the element-wise operations before the first convolution (offset, clip,
the JPEG mapping, normalisation) stay in float, since they see digital numbers in use and JPEG values
in calibration.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import AtlasError
from .infer import DEFAULT_VIEWS, Predictor, openvino_model_dir
from .registry import load_card, set_card_entry, sha256_file

INT8_DIR = "openvino-int8"
MIN_AGREEMENT, MAX_ACCURACY_DROP = 0.995, 0.002
BATCH = 64


def quantize(data: str | os.PathLike, model: str, splits: str | None = None, samples: int = 1280,
             seed: int = 0, quiet: bool = False, make_default: bool = False) -> dict:
    """Quantize `model` (an RGB model of EuroSAT JPEGs) -> its card's new `int8` record."""
    import nncf
    import openvino as ov

    from .train import load_split

    card = load_card(model)
    if card.radiometry.get("kind") != "eurosat-jpeg":
        raise AtlasError(f"{model}: quantize calibrates on EuroSAT RGB JPEGs; {card.name} takes other input")
    Xtr, _, _ = load_split(data, "train", splits, quiet)
    Xte, yte, _ = load_split(data, "test", splits, quiet)
    float_pred = Predictor(card, "openvino-float")  # converts the network once if not yet done
    core = ov.Core()
    batch = max(1, min(BATCH, samples, len(Xtr)))
    net = core.read_model(openvino_model_dir(card) / "model.xml")
    net.reshape({net.inputs[0]: [batch, 64, 64, len(card.bands)]})
    pick = np.random.default_rng(seed).choice(len(Xtr), min(samples, len(Xtr)) // batch * batch, replace=False)
    calib = [Xtr[pick[i:i + batch]].astype(np.float32) for i in range(0, len(pick), batch)]
    calib = l2a_like(calib, np.random.default_rng(seed + 1))
    q = nncf.quantize(net, nncf.Dataset(calib, lambda x: [x, np.float32(0.0), np.float32(1.0)]),
                      subset_size=len(calib), preset=nncf.QuantizationPreset.MIXED, fast_bias_correction=False,
                      ignored_scope=nncf.IgnoredScope(types=["Add", "Multiply", "Maximum", "Minimum", "Subtract"],
                                                      validate=False))
    folder = Path(card.path) / INT8_DIR
    tmp = Path(tempfile.mkdtemp(prefix=f".{INT8_DIR}.", dir=card.path))
    try:
        ov.save_model(q, tmp / "model.xml", compress_to_fp16=False)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.chmod(0o755)  # mkdtemp's folder is private; the model's files are not
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record = {"file": f"{INT8_DIR}/model.xml", "sha256": sha256_file(folder / "model.bin"),
              "openvino": ov.__version__, "nncf": nncf.__version__,
              "calibration": f"{len(pick)} EuroSAT train JPEGs (seed {seed}), every second one made L2A-like "
                             "(augment.to_l2a, strength 0-1.2); NNCF MIXED preset, full bias correction; element-wise "
                             "input operations left in float"}
    set_card_entry(card.path, ("int8",), {**record, "default": False})
    int8_pred = Predictor(load_card(card.path), "openvino-int8")
    scores = {}
    for views in sorted({1, DEFAULT_VIEWS}):
        pf, pq = (p(Xte, prescaled=True, views=views).argmax(1) for p in (float_pred, int8_pred))
        scores[str(views)] = {"accuracy_float": round(float((pf == yte).mean()), 4),
                              "accuracy_int8": round(float((pq == yte).mean()), 4),
                              "label_agreement": round(float((pf == pq).mean()), 4)}
    d = scores[str(DEFAULT_VIEWS)]
    keeps = d["label_agreement"] >= MIN_AGREEMENT and d["accuracy_int8"] >= d["accuracy_float"] - MAX_ACCURACY_DROP
    int8 = {**record, "test": {"n": int(len(yte)), "by_views": scores}, "keeps_eurosat_labels": bool(keeps),
            "default": bool(keeps and make_default),
            "rule": f"default only when asked (after benchmarks/real_scenes.py) and where, at --tta "
                    f"{DEFAULT_VIEWS}, at least {MIN_AGREEMENT:.1%} of the EuroSAT test labels equal the float "
                    f"network's and the accuracy is within {100 * MAX_ACCURACY_DROP:g} points of it"}
    set_card_entry(card.path, ("int8",), int8)
    return int8


def l2a_like(batches: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Every second patch of each batch moved along the fitted L1C -> L2A change at a random
    strength in [0, 1.2] (augment.to_l2a), clipped to the JPEG range."""
    from .augment import l2a_fit_rgb, to_l2a

    a, b = l2a_fit_rgb()
    out = []
    for x in batches:
        x = x.copy()
        k = np.arange(1, len(x), 2)
        strength = rng.uniform(0.0, 1.2, (len(k), 1, 1, 1)).astype(np.float32)
        x[k] = np.clip(to_l2a(x[k], strength, a, b), 0, 255)
        out.append(x)
    return out

