"""Infer stage: a per-process cached predictor that maps raw patches to class probabilities.

Normalisation ((DN - mean) / std, from the model card) is folded into one compiled TensorFlow
function with the network, run on batches of a power of two (at most 64) so that XLA compiles a few shapes only."""
from __future__ import annotations

import os
import threading

import numpy as np

from .registry import WEIGHTS_FILE, ModelCard

RUNTIMES = ("xla", "graph", "keras")


def configure_threads(threads: int | None) -> None:
    """Pin TensorFlow's thread pools (one Dask worker should not take every core)."""
    if not threads:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TF already initialised in this process: keep its setting
        pass


def model_scale(patches: np.ndarray, offset: float, radiometry: dict) -> np.ndarray:
    """What the network sees before normalisation: max(DN + offset, 0), then the card's radiometry
    (RGB models: min(v * 255 / 2750, 255), the EuroSAT JPEG mapping). NumPy twin of the compiled path."""
    v = np.maximum(patches.astype(np.float32) + np.float32(offset), 0)
    return np.minimum(v * np.float32(radiometry.get("scale", 1.0)), np.float32(radiometry.get("max", np.inf)))


class Predictor:
    """`predictor(patches, offset)` -> (n, classes) float32. `patches` are (n, 64, 64, bands)
    digital numbers of any numeric dtype; `offset` (e.g. -1000 for processing baseline >= 04.00)
    is added and negative results clip to 0; then the card's radiometry (for RGB models the EuroSAT
    JPEG mapping min(DN * 255 / 2750, 255)) and the normalisation, all inside the compiled function.
    `prescaled=True` takes patches already on the radiometry's scale (the EuroSAT JPEG values)."""

    def __init__(self, card: ModelCard, runtime: str = "xla", batch: int = 64):
        import keras
        import tensorflow as tf

        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}")
        self.card, self.runtime, self.batch = card, runtime, batch
        self.model = keras.models.load_model(os.path.join(card.path, WEIGHTS_FILE), compile=False)
        self._scale = np.float32(card.radiometry.get("scale", 1.0))
        self._cap = np.float32(card.radiometry.get("max", np.inf))
        self._mean, self._inv_std = np.asarray(card.mean, np.float32), 1.0 / np.asarray(card.std, np.float32)
        mean, inv_std, cap = tf.constant(self._mean), tf.constant(self._inv_std), tf.constant(self._cap)
        model = self.model

        def fn(x, offset, scale):
            return model((tf.minimum(tf.maximum(x + offset, 0.0) * scale, cap) - mean) * inv_std, training=False)

        self._fn = tf.function(fn, jit_compile=(runtime == "xla")) if runtime != "keras" else None

    def __call__(self, patches: np.ndarray, offset: float = 0.0, prescaled: bool = False) -> np.ndarray:
        n = len(patches)
        out = np.empty((n, len(self.card.classes)), np.float32)
        if n == 0:
            return out
        scale = np.float32(1.0) if prescaled else self._scale
        if self._fn is None:
            x = model_scale(patches, offset, {"scale": scale, "max": self._cap})
            return self.model.predict((x - self._mean) * self._inv_std, batch_size=self.batch,
                                      verbose=0).astype(np.float32)
        # arrays, so a new offset or scale does not retrace
        off, scale = np.asarray(offset, np.float32), np.asarray(scale, np.float32)
        for i in range(0, n, self.batch):
            m = min(self.batch, n - i)
            # batches of a power of two up to `batch`: at most 7 compiled shapes, little padding
            buf = np.zeros((min(self.batch, 1 << (m - 1).bit_length()),) + patches.shape[1:], np.float32)
            buf[:m] = patches[i:i + m]
            out[i:i + m] = self._fn(buf, off, scale).numpy()[:m]
        return out


_PREDICTORS: dict[tuple, Predictor] = {}
_LOCK = threading.Lock()


def get_predictor(card: ModelCard, runtime: str = "xla", threads: int | None = None) -> Predictor:
    """The process's predictor for a card: loaded once per process (once per Dask worker, shared by
    its threads)."""
    key = (card.path, card.weights_sha256, runtime)
    with _LOCK:
        if key not in _PREDICTORS:
            configure_threads(threads)
            _PREDICTORS[key] = Predictor(card, runtime)
    return _PREDICTORS[key]
