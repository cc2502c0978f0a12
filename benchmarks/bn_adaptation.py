"""Per-scene batch-norm statistics (AdaBN, Li et al. 2016) for the RGB model on the real scenes of
`../shared/`: every batch-norm layer's moving mean and variance replaced, layer by layer, by those of
its input over the scene's own 64 x 64 patches, against the shipped statistics (EuroSAT's), with the
network alone (no TTA, no water / snow tests) on non-overlapping patches. What it measures:

- the 54 EuroSAT MS test patches (L1C), adapted on all 54 together: right / 54;
- the clear eo-learn L1C forest (a scene of one class, the case AdaBN can break): Forest share;
- the SSL4EO-S12 L1C and L2A products of one acquisition, each adapted on itself: same label;
- the Major TOM L2A cell 199U (river, ponds, fields, villages): labels, and River / SeaLake patches
  without water (< 1 % NDWI > 0 pixels).

    python benchmarks/bn_adaptation.py --shared ../shared [--model spectrumnet-rgb]

Prints a Markdown table. Few scenes: it shows whether the idea helps or harms here, not by how much
on L2A in general.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from atlas_change.classes import CLASSES  # noqa: E402
from atlas_change.read import open_scene  # noqa: E402
from atlas_change.model.registry import load_card  # noqa: E402

RGB = ("B04", "B03", "B02")


def network_input(dn: np.ndarray, card, offset: float = 0.0) -> np.ndarray:
    """(n, 64, 64, 3) digital numbers -> the network's normalised input (JPEG mapping, mean / std)."""
    r = card.radiometry
    v = np.minimum(np.maximum(dn + offset, 0) * r.get("scale", 1.0), r.get("max", np.inf))
    return ((v - np.asarray(card.mean, np.float32)) / np.asarray(card.std, np.float32)).astype(np.float32)


def scene_patches(path: str, step: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The 64 px patches every `step` px of a scene with no nodata: (RGB DN with the offset applied,
    share of water pixels per patch, water per pixel)."""
    s = open_scene(path, RGB)
    full, valid = s.read(Window(0, 0, s.width, s.height))
    water = None
    if {"B03", "B08"} <= set(s.available):
        g, nir = s.select(("B03", "B08")).read(Window(0, 0, s.width, s.height))[0]
        water = (g - nir) / np.maximum(g + nir, 1) > 0
    out, wet = [], []
    for r in range(0, s.height - 63, step):
        for c in range(0, s.width - 63, step):
            if valid[r:r + 64, c:c + 64].all():
                out.append(full[:, r:r + 64, c:c + 64].transpose(1, 2, 0))
                wet.append(water[r:r + 64, c:c + 64].mean() if water is not None else np.nan)
    return np.stack(out), np.asarray(wet), water


def adapted(model, x: np.ndarray):
    """A copy of `model` whose batch-norm statistics are those of `x`, set layer by layer."""
    import keras

    m = keras.models.clone_model(model)
    m.set_weights(model.get_weights())
    for layer in m.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            a = keras.Model(m.input, layer.input).predict(x, batch_size=256, verbose=0)
            gamma, beta, _, _ = layer.get_weights()
            layer.set_weights([gamma, beta, a.mean(axis=(0, 1, 2)), a.var(axis=(0, 1, 2))])
    return m


def labels(model, x: np.ndarray) -> np.ndarray:
    return model.predict(x, batch_size=256, verbose=0).argmax(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.environ.get("ATLAS_SHARED", "../shared"))
    ap.add_argument("--model", default="spectrumnet-rgb")
    a = ap.parse_args()
    import keras

    from real_scenes import to_utm

    warnings.simplefilter("ignore")
    shared = Path(a.shared)
    card = load_card(ROOT / "models" / a.model)
    base = keras.models.load_model(Path(card.path) / "model.keras", compile=False)
    rows = []

    # 1. the 54 MS test patches
    files = sorted(glob.glob(str(shared / "eurosat" / "EuroSAT_MS_subset" / "test" / "*" / "*.tif")))
    dn = np.stack([rasterio.open(f).read([4, 3, 2]).transpose(1, 2, 0).astype(np.float32) for f in files])
    truth = np.array([CLASSES.index(Path(f).parent.name) for f in files])
    x = network_input(dn, card)
    rows.append(("54 EuroSAT MS test patches (L1C): right", f"{(labels(base, x) == truth).sum()}/54",
                 f"{(labels(adapted(base, x), x) == truth).sum()}/54"))

    # 2. the clear forest: one class
    x = network_input(scene_patches(str(shared / "scenes" / "eolearn-l1c13" / "clear.tif"), 16)[0], card)
    forest = CLASSES.index("Forest")
    rows.append((f"eo-learn L1C clear forest ({len(x)} patches): Forest", f"{(labels(base, x) == forest).mean():.0%}",
                 f"{(labels(adapted(base, x), x) == forest).mean():.0%}"))

    # 3. the L1C and L2A products of one acquisition
    tmp = Path(tempfile.mkdtemp(prefix="atlas-bn-"))
    pair = sorted((shared / "scenes" / "ssl4eo-s12-l1c-l2a-pair").glob("*/*/*"))
    l1c, l2a = (to_utm(p, tmp / p.parts[-3]) for p in sorted(pair, key=lambda p: p.parts[-3] != "s2c"))
    xs = [network_input(scene_patches(str(p), 16)[0], card) for p in (l1c, l2a)]
    same = [(labels(m1, xs[0]) == labels(m2, xs[1])).mean() for m1, m2 in
            ((base, base), (adapted(base, xs[0]), adapted(base, xs[1])))]
    rows.append((f"SSL4EO-S12 L1C vs L2A ({len(xs[0])} patches): same label", f"{same[0]:.0%}", f"{same[1]:.0%}"))

    # 4. one real L2A cell with water
    cell = next((shared / "scenes" / "major-tom-l2a" / "199U").glob("*/*"))
    dn, wet, _ = scene_patches(str(cell))
    x = network_input(dn, card)
    water_ids = [CLASSES.index("River"), CLASSES.index("SeaLake")]
    tops, wets = [], []
    for m in (base, adapted(base, x)):
        lab = labels(m, x)
        tops.append(", ".join(f"{CLASSES[k]} {v}" for k, v in Counter(lab).most_common(4)))
        wets.append(f"{int((np.isin(lab, water_ids) & (wet < 0.01)).sum())} of {int(np.isin(lab, water_ids).sum())}")
    rows.append((f"Major TOM 199U L2A ({len(x)} patches): most frequent labels", *tops))
    rows.append(("Major TOM 199U: River / SeaLake patches without water (< 1 % NDWI > 0)", *wets))
    print(f"| check ({a.model}, network alone, 64 px patches) | shipped BN statistics | per-scene (AdaBN) |")
    print("|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
