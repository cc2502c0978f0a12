"""The plain thing a user would otherwise write: the baseline of bench_classify.py.

    python benchmarks/naive_classify.py SCENE.tif OUT.tif [MODEL_FOLDER]

keras ResNet50 (the shipped resnet50-rgb when MODEL_FOLDER is given, else keras.applications.ResNet50
with random weights: the time does not depend on them) on B04, B03, B02: a rasterio windowed read
of each 64 x 64 patch, one `model.predict` per row of patches, argmax, the class map written with
rasterio. No nodata or cloud handling.
"""
import sys

import keras
import numpy as np
import rasterio
from rasterio.windows import Window


def main(scene: str, out: str, model_dir: str | None = None) -> None:
    if model_dir:
        model = keras.models.load_model(f"{model_dir}/model.keras", compile=False)
    else:
        model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    with rasterio.open(scene) as src:
        rgb = [src.descriptions.index(b) + 1 for b in ("B04", "B03", "B02")]
        rows, cols = src.height // 64, src.width // 64
        lulc = np.zeros((rows, cols), np.uint8)
        for r in range(rows):
            batch = np.stack([src.read(rgb, window=Window(c * 64, r * 64, 64, 64)).transpose(1, 2, 0)
                              for c in range(cols)]).astype(np.float32)
            probs = model.predict(np.minimum(batch * 255 / 2750, 255) / 127.5 - 1, verbose=0)
            lulc[r] = probs.argmax(axis=1) + 1
        profile = dict(driver="GTiff", width=cols, height=rows, count=1, dtype="uint8", crs=src.crs,
                       transform=src.transform * src.transform.scale(64, 64), nodata=0)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(lulc, 1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
