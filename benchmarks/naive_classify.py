"""The straightforward script a user would write to classify a scene: the baseline of bench_classify.py.

    python benchmarks/naive_classify.py SCENE.tif MODEL_FOLDER OUT.tif

rasterio windowed reads of each 64 x 64 patch, one Keras `model.predict` per row of patches,
argmax, write the class map with rasterio. Same model, same normalisation as atlas-change.
"""
import json
import sys

import keras
import numpy as np
import rasterio
from rasterio.windows import Window


def main(scene: str, model_dir: str, out: str) -> None:
    card = json.load(open(f"{model_dir}/card.json"))
    model = keras.models.load_model(f"{model_dir}/model.keras", compile=False)
    mean, std = np.array(card["mean"], np.float32), np.array(card["std"], np.float32)
    with rasterio.open(scene) as src:
        rows, cols = src.height // 64, src.width // 64
        lulc = np.zeros((rows, cols), np.uint8)
        for r in range(rows):
            batch = np.stack([src.read(window=Window(c * 64, r * 64, 64, 64)).transpose(1, 2, 0)
                              for c in range(cols)]).astype(np.float32)
            probs = model.predict((batch - mean) / std, verbose=0)
            lulc[r] = probs.argmax(axis=1) + 1
        profile = dict(driver="GTiff", width=cols, height=rows, count=1, dtype="uint8", crs=src.crs,
                       transform=src.transform * src.transform.scale(64, 64), nodata=0)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(lulc, 1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
