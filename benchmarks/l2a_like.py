"""EuroSAT test made L2A-like: how much a model's labels move when the same patches are given with
L2A radiometry. No labelled L2A set exists here, so the 5,200 EuroSAT test JPEGs and the 54 MS test
patches (L1C) are mapped to L2A by a transform measured on real products:

- `ssl4eo-fit`: L2A = a * L1C + b per band, least squares on the real L1C and L2A product of one
  acquisition (SSL4EO-S12 T43RCP, `augment.L2A_FIT`; more contrast, darker, least blue);
- `ssl4eo-fit x0.5`: half of that change (a thinner atmosphere than that arid June day);
- `haze-removed`: minus the median L1C - L2A difference of B04 / B03 / B02 seen between EuroSAT L1C
  and BigEarthNet L2A patches (~150 / 270 / 600 DN, `augment.HAZE_RGB`).

For each model: accuracy on each version, and the share of patches whose label is the one it gave the
L1C patch. The JPEGs saturate at 255 (2,750 DN), so bright patches map approximately; the MS patches
are mapped in DN. One pair of real products gave the fit: it is the size and direction of the L1C ->
L2A change of one place, not of every scene. A model trained with `--augment l2a` saw this family of
transforms in training, so its gain here is partly by construction; the real scenes
(`real_scenes.py`) are the independent check.

    python benchmarks/l2a_like.py --shared ../shared --model spectrumnet-rgb [--model PATH ...]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from atlas_change.bands import EUROSAT_ORDER  # noqa: E402
from atlas_change.model.infer import DEFAULT_VIEWS, get_predictor  # noqa: E402
from atlas_change.model.registry import load_card  # noqa: E402
from atlas_change.model.augment import HAZE_RGB, JPEG_PER_DN, L2A_FIT, l2a_fit_rgb, to_l2a  # noqa: E402
from atlas_change.model.train import RGB_BANDS, band_indices, load_split  # noqa: E402


def jpeg_versions(X: np.ndarray) -> dict[str, np.ndarray]:
    """The JPEG patches (R, G, B grey levels) as L1C and as three L2A-like versions."""
    a, b = l2a_fit_rgb()
    x = X.astype(np.float32)
    return {"L1C (as is)": x, "ssl4eo-fit": np.clip(to_l2a(x, 1.0, a, b), 0, 255),
            "ssl4eo-fit x0.5": np.clip(to_l2a(x, 0.5, a, b), 0, 255),
            "haze-removed": np.clip(x - np.array(HAZE_RGB, np.float32), 0, 255)}


def ms_versions(X: np.ndarray) -> dict[str, np.ndarray]:
    """The 13-band MS patches (L1C DN) with B04 / B03 / B02 made L2A-like the same ways, in DN."""
    out = {}
    for name in ("L1C (as is)", "ssl4eo-fit", "ssl4eo-fit x0.5", "haze-removed"):
        x = X.astype(np.float32).copy()
        for i, band in enumerate(RGB_BANDS):
            k = EUROSAT_ORDER.index(band)
            if name.startswith("ssl4eo-fit"):
                x[..., k] = to_l2a(x[..., k], 0.5 if name.endswith("x0.5") else 1.0, *L2A_FIT[band])
            elif name == "haze-removed":
                x[..., k] -= HAZE_RGB[i] / JPEG_PER_DN
        out[name] = np.clip(x, 1, None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default="../shared", help="the shared data folder (default ../shared)")
    ap.add_argument("--model", action="append", required=True, help="model name or folder (repeatable)")
    ap.add_argument("--tta", type=int, default=DEFAULT_VIEWS, help=f"views (default {DEFAULT_VIEWS}, as classify)")
    a = ap.parse_args()
    eurosat = Path(a.shared) / "eurosat"
    Xj, yj, _ = load_split(eurosat / "EuroSAT_RGB", "test", quiet=True)
    Xm, ym, _ = load_split(eurosat / "EuroSAT_MS_subset", "test", eurosat / "splits", quiet=True, kind="tif")
    print("| model (weights) | data | version | accuracy | same label as L1C |\n|---|---|---|---|---|")
    for m in a.model:
        card = load_card(m)
        predict = get_predictor(card)
        for data, versions, y, jpeg in (("5,200 EuroSAT test JPEGs", jpeg_versions(Xj), yj, True),
                                        ("54 EuroSAT MS test patches", ms_versions(Xm), ym, False)):
            idx = band_indices(card.bands, RGB_BANDS if jpeg else EUROSAT_ORDER)
            ref = None
            for name, X in versions.items():
                pred = predict(X[..., idx], prescaled=jpeg, views=a.tta).argmax(axis=1)
                ref = pred if ref is None else ref
                right = int((pred == y).sum())
                print(f"| {card.name} ({card.weights_sha256[:8]}) | {data} | {name} | {right / len(y):.4f} "
                      f"({right}/{len(y)}) | {(pred == ref).mean():.4f} |", flush=True)


if __name__ == "__main__":
    main()
