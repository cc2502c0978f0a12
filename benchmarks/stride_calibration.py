"""Are map cells calibrated at each stride, and would a per-stride temperature make the uncertain
hectares of stride 64 agree with those of 16 (issue 23, item 3)? A measurement, not a setting.

1. Mosaics of real EuroSAT **validation** JPEGs (never trained on; each patch back to L1C DN by the
   JPEG mapping, as a 3-band GeoTIFF) laid out as fields of 1 to `--max-field` patches a side, cut
   with the grid at a random offset so that fields do not line up with it. Each map cell's truth is
   the class of most of its pixels. Per stride: accuracy, the expected calibration error (15 bins)
   of the cells' probabilities as `classify` gives them (EuroSAT temperature applied), and the extra
   temperature T_s that minimises their negative log-likelihood.
2. The real Major TOM L2A cell 199U: uncertain share (top probability < 0.6) at stride 64 and 16,
   as classify gives them and with each stride's T_s.

    python benchmarks/stride_calibration.py --shared ../shared [--model spectrumnet-rgb] [--max-field 3]

Fields of 1-3 patches (64-192 px, 0.6-1.9 km) are one guess at how fragmented land is; run with
another `--max-field` to see how much T_s depends on it.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import rasterio  # noqa: E402
from affine import Affine  # noqa: E402
from PIL import Image  # noqa: E402

import atlas_change  # noqa: E402
from atlas_change.augment import JPEG_PER_DN  # noqa: E402
from atlas_change.calibrate import apply_temperature, ece, fit_temperature  # noqa: E402
from atlas_change.classes import CLASSES  # noqa: E402

STRIDES = (64, 32, 16)
N = 18  # patches a side of the layout before the cut


def layout(shared: Path, rng: np.random.Generator, max_field: int) -> tuple[np.ndarray, np.ndarray]:
    """(DN image 3 x H x W of B04, B03, B02; class id per pixel) of fields of 1..max_field patches."""
    rgb = shared / "eurosat" / "EuroSAT_RGB"
    val = (shared / "eurosat" / "splits" / "eurosat-val.txt").read_text().split()
    by_class = {c: [v for v in val if v.startswith(c + "_")] for c in CLASSES}
    img = np.zeros((3, N * 64, N * 64), np.uint16)
    truth = np.full((N * 64, N * 64), -1, np.int16)
    for r in range(N):
        for c in range(N):
            if truth[r * 64, c * 64] >= 0:
                continue
            k = int(rng.integers(len(CLASSES)))
            h, w = (int(rng.integers(1, max_field + 1)) for _ in range(2))
            for rr in range(r, min(N, r + h)):
                for cc in range(c, min(N, c + w)):
                    if truth[rr * 64, cc * 64] >= 0:
                        continue
                    name = by_class[CLASSES[k]][int(rng.integers(len(by_class[CLASSES[k]])))]
                    v = np.asarray(Image.open(rgb / CLASSES[k] / name), np.float64)
                    img[:, rr * 64:(rr + 1) * 64, cc * 64:(cc + 1) * 64] = np.round(v / JPEG_PER_DN).transpose(2, 0, 1)
                    truth[rr * 64:(rr + 1) * 64, cc * 64:(cc + 1) * 64] = k
    return img, truth


def write(img: np.ndarray, path: Path) -> Path:
    profile = dict(driver="GTiff", width=img.shape[2], height=img.shape[1], count=3, dtype="uint16",
                   crs="EPSG:32632", transform=Affine(10, 0, 500000, 0, -10, 5000000), tiled=True,
                   blockxsize=128, blockysize=128)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(img)
        dst.descriptions = ("B04", "B03", "B02")
    return path


def cells(scene: Path, out: Path, model: str, stride: int) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atlas_change.classify(scene, out=out, stride=stride, scheduler="threads", model=model, quiet=True)
    return pd.read_parquet(out / "cells.parquet")


def probs(df: pd.DataFrame) -> np.ndarray:
    return df[[f"p_{c}" for c in CLASSES]].to_numpy(np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--model", default="spectrumnet-rgb")
    ap.add_argument("--max-field", type=int, default=3)
    ap.add_argument("--scenes", type=int, default=3, help="mosaics (default 3)")
    a = ap.parse_args()
    shared = Path(a.shared)
    rng = np.random.default_rng(7)
    temps = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        got = {s: ([], []) for s in STRIDES}
        for i in range(a.scenes):
            img, truth = layout(shared, rng, a.max_field)
            off = int(rng.integers(1, 64))
            side = (N - 2) * 64
            scene = write(img[:, off:off + side, off:off + side], tmp / f"mosaic{i}.tif")
            t = truth[off:off + side, off:off + side]
            for s in STRIDES:
                df = cells(scene, tmp / f"m{i}_s{s}", a.model, s)
                ys = []
                for r, c in zip(df["row"], df["col"]):
                    block = t[r * s:r * s + s, c * s:c * s + s]
                    ys.append(np.bincount(block.ravel(), minlength=len(CLASSES)).argmax())
                got[s][0].append(probs(df))
                got[s][1].append(np.array(ys))
        print(f"## Stride calibration on mosaics of EuroSAT val patches, fields of 1-{a.max_field} patches, "
              f"{a.scenes} scenes, model {a.model}\n")
        print("| stride | cells | accuracy | ECE as classify gives | extra T_s | ECE with T_s | share < 0.6 as given / with T_s |")
        print("|---|---|---|---|---|---|---|")
        for s in STRIDES:
            p, y = np.concatenate(got[s][0]), np.concatenate(got[s][1])
            t = fit_temperature(p, y)
            temps[s] = t
            q = apply_temperature(p, t)
            print(f"| {s} | {len(y)} | {(p.argmax(1) == y).mean():.3f} | {ece(p, y):.3f} | "
                  f"{t:.2f} | {ece(q, y):.3f} | {(p.max(1) < 0.6).mean():.3f} / "
                  f"{(q.max(1) < 0.6).mean():.3f} |", flush=True)
        mt = next((shared / "scenes" / "major-tom-l2a").glob("*/199U_1099R/*/"))
        print("\n| Major TOM 199U (real L2A), stride | cells | share < 0.6 as given | with that stride's T_s |")
        print("|---|---|---|---|")
        for s in STRIDES:
            p = probs(cells(mt, tmp / f"mt_s{s}", a.model, s))
            print(f"| {s} | {len(p)} | {(p.max(1) < 0.6).mean():.3f} | {(apply_temperature(p, temps[s]).max(1) < 0.6).mean():.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
