"""Infer stage: a per-process cached predictor that maps raw patches to class probabilities.

The DN offset, the card's radiometry and normalisation ((v - mean) / std) are folded into one
compiled function with the network, run on batches of 64 (OpenVINO: exactly 64, one stream per
core, shared by the threads of a process; TensorFlow: a power of two up to 64, so that few shapes
are compiled). Runtimes: `openvino` (default: that function converted by OpenVINO and compiled
for this CPU; the converted model is kept under the cache folder, so later runs need no TensorFlow
at all), `xla` (TensorFlow XLA), `graph` (tf.function), `keras` (model.predict). benchmarks/RESULTS.md
compares their speed and how often their labels agree."""
from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .. import __version__, quiet_tensorflow
from ..errors import AtlasError
from .registry import WEIGHTS_FILE, ModelCard, cache_dir

#: 'openvino': OpenVINO, the model's int8 network where its card ships one that kept the float labels
#: (quantize.py), else bfloat16 / float32; 'openvino-float' never int8; 'openvino-int8' always (it must exist)
RUNTIMES = ("openvino", "openvino-float", "openvino-int8", "xla", "graph", "keras")
DEFAULT_RUNTIME = "openvino"
#: test-time augmentation: how many views of each patch the model sees, averaged (the first N of
#: identity, rotations by 90, 180, 270 degrees, then the same transposed); 2 is the default
VIEWS = (1, 2, 4, 8)
DEFAULT_VIEWS = 2


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), row by row (T = 1: unchanged)."""
    if temperature == 1.0:
        return probs
    z = np.log(np.maximum(probs, 1e-12)) / np.float32(temperature)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def view(patches: np.ndarray, i: int) -> np.ndarray:
    """View `i` (0..7) of (n, h, w, bands) patches: rotated by i % 4 quarter turns, transposed for i >= 4."""
    x = patches.transpose(0, 2, 1, 3) if i >= 4 else patches
    return np.ascontiguousarray(np.rot90(x, i % 4, axes=(1, 2)))


def configure_threads(threads: int | None) -> None:
    """Pin TensorFlow's thread pools (one Dask worker should not take every core)."""
    if not threads:
        return
    quiet_tensorflow()
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TF already initialised in this process: keep its setting
        pass


def uses_int8(card: ModelCard | None, runtime: str) -> bool:
    """Whether `runtime` runs `card`'s int8 network."""
    return runtime == "openvino-int8" or (runtime == "openvino" and card is not None and card.int8_default)


def runtime_precision(runtime: str, card: ModelCard | None = None) -> str:
    """The arithmetic `runtime` runs the network in on this machine: int8 where it runs the card's
    quantized network; else OpenVINO computes in bfloat16 where the CPU has it (AVX512-BF16, AMX: its
    default there; its labels agree with Keras on 99.9 % of the EuroSAT test patches,
    benchmarks/RESULTS.md), float32 elsewhere; TensorFlow in float32."""
    if uses_int8(card, runtime):
        return "int8"
    if not runtime.startswith("openvino"):
        return "float32"
    import openvino as ov

    return "bfloat16" if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "float32"


def model_scale(patches: np.ndarray, offset: float, radiometry: dict) -> np.ndarray:
    """What the network sees before normalisation: max(DN + offset, 0), then the card's radiometry
    (RGB models: min(v * 255 / 2750, 255), the EuroSAT JPEG mapping). NumPy twin of the compiled path."""
    v = np.maximum(patches.astype(np.float32) + np.float32(offset), 0)
    return np.minimum(v * np.float32(radiometry.get("scale", 1.0)), np.float32(radiometry.get("max", np.inf)))


def _load_keras(card: ModelCard):
    quiet_tensorflow()
    import keras

    return keras.models.load_model(os.path.join(card.path, WEIGHTS_FILE), compile=False)


def _network_fn(card: ModelCard, model):
    """The TensorFlow function (patches, offset, scale) -> probabilities: offset, clip at 0, radiometry
    (v * scale, capped at the card's max), normalisation, network."""
    import tensorflow as tf

    mean = tf.constant(np.asarray(card.mean, np.float32))
    inv_std = tf.constant(1.0 / np.asarray(card.std, np.float32))
    cap = tf.constant(np.float32(card.radiometry.get("max", np.inf)))

    @tf.autograph.experimental.do_not_convert  # no Python control flow to convert (and no warning about it)
    def fn(x, offset, scale):
        return model((tf.minimum(tf.maximum(x + offset, 0.0) * scale, cap) - mean) * inv_std, training=False)

    return fn


def openvino_model_dir(card: ModelCard) -> Path:
    """Where the card's converted OpenVINO model is kept: keyed by the weights, the normalisation and
    the versions of OpenVINO and of this package (the function it holds)."""
    import openvino as ov

    key = json.dumps([card.weights_sha256, card.bands, card.mean, card.std, card.radiometry, ov.__version__,
                      __version__], default=str)
    return cache_dir() / "openvino" / f"{card.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


_FIRST_CALL = threading.Lock()


class _RequestPool:
    """Infer requests of a model compiled for throughput (one stream per core, one core each): the
    Dask threads of a worker each run on a stream of their own, so the read and cloud stages of one
    chunk never compete with a batch of another for cores, and one caller with many batches (evaluate)
    keeps every stream busy."""

    def __init__(self, compiled, n: int):
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(n):
            self._free.put(compiled.create_infer_request())
        # one batch on every request, one pool at a time, before any other thread can use it: the
        # bindings' first call initialises static state, and two threads making it at once
        # deadlocked (one holding the GIL, the other the initialiser; seen here in a Dask worker)
        zeros = [np.zeros(tuple(i.shape), i.element_type.to_dtype()) for i in compiled.inputs]
        with _FIRST_CALL:
            self.run([zeros] * n)

    def run(self, batches: Iterable[list]) -> list[np.ndarray]:
        """First outputs of each batch's inputs, in order."""
        out: list = []
        pending: deque = deque()  # (index, request) started, oldest first

        def finish():
            i, req = pending.popleft()
            req.wait()
            out[i] = req.get_output_tensor(0).data.copy()
            return req

        try:
            for inputs in batches:
                try:
                    req = self._free.get_nowait()
                except queue.Empty:  # every request busy: reuse this caller's oldest, or wait for one
                    req = finish() if pending else self._free.get()
                out.append(None)
                try:
                    req.start_async(inputs)
                except BaseException:  # e.g. inputs of the wrong shape: the request stays in the pool
                    self._free.put(req)
                    raise
                pending.append((len(out) - 1, req))
            while pending:
                self._free.put(finish())
        finally:
            for _, req in pending:
                req.wait()
                self._free.put(req)
        return out


def convert_openvino(card: ModelCard, xml: Path) -> None:
    """Convert the card's network function to OpenVINO and save it as `xml` (float32)."""
    import openvino as ov
    import tensorflow as tf

    fn = _network_fn(card, _load_keras(card))
    spec = [tf.TensorSpec((None, 64, 64, len(card.bands)), tf.float32), tf.TensorSpec((), tf.float32),
            tf.TensorSpec((), tf.float32)]
    ov.save_model(ov.convert_model(tf.function(fn, input_signature=spec)), xml, compress_to_fp16=False)


def _convert_aside(card: ModelCard, folder: Path, core):
    """Convert in a fresh Python process (a process that has already run the same Keras model through
    TensorFlow converted ResNet50 into a network that scored 11 % on EuroSAT test: measured with
    OpenVINO 2026.4 / Keras 3.15), into a folder beside the cache, renamed into place when complete;
    a cache that cannot be written (read-only, full) only costs the conversion next time."""
    import subprocess
    import sys

    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    except OSError:
        tmp = Path(tempfile.mkdtemp(prefix="atlas-openvino-"))
    try:
        r = subprocess.run([sys.executable, "-c", "import sys; from atlas_change.model.infer import convert_openvino; "
                            "from atlas_change.model.registry import load_card; "
                            "convert_openvino(load_card(sys.argv[1], verify=False), __import__('pathlib').Path(sys.argv[2]))",
                            card.path, str(tmp / "model.xml")], capture_output=True, text=True,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        if r.returncode != 0:
            tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"{card.path}: converting the model for OpenVINO failed ({tail})")
        model = core.read_model(tmp / "model.xml")
        try:
            os.rename(tmp, folder)
        except OSError:  # another process was first, or the cache is elsewhere
            pass
        return model
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def int8_model(card: ModelCard, core):
    """The card's int8 OpenVINO network (quantize.py), its weights checked against the card's SHA-256."""
    from .registry import sha256_file

    xml = Path(card.path) / str(card.int8.get("file", ""))
    if not card.int8.get("file") or not xml.exists() or not xml.with_suffix(".bin").exists():
        raise AtlasError(f"{card.path}: model {card.name} has no int8 network (make it with "
                         "`python -m atlas_change quantize`), so --runtime openvino-int8 cannot run it")
    if sha256_file(xml.with_suffix(".bin")) != card.int8.get("sha256"):
        raise AtlasError(f"{xml.with_suffix('.bin')}: SHA-256 does not match the card's int8 record; quantize again")
    return core.read_model(xml)


def _openvino(card: ModelCard, threads: int | None, batch: int, int8: bool = False) -> _RequestPool:
    """The card's network function (patches, offset, scale) compiled by OpenVINO for the CPU for
    batches of exactly `batch` patches (one static shape: nothing is re-planned while requests run
    at once), one stream per core (or per `threads`). Converted from Keras once and kept
    (openvino_model_dir); a cache that cannot be written only costs the conversion next time."""
    import openvino as ov

    core, folder = ov.Core(), openvino_model_dir(card)
    xml = folder / "model.xml"
    if int8:
        model = int8_model(card, core)
    elif xml.exists():
        model = core.read_model(xml)
    else:
        model = _convert_aside(card, folder, core)
    model.reshape({model.inputs[0]: [batch, 64, 64, len(card.bands)]})
    n = threads or os.cpu_count() or 1
    compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": n,
                                                 "INFERENCE_NUM_THREADS": n})
    return _RequestPool(compiled, n)


class Predictor:
    """`predictor(patches, offset)` -> (n, classes) float32. `patches` are (n, 64, 64, bands)
    digital numbers of any numeric dtype; `offset` (e.g. -1000 for processing baseline >= 04.00)
    is added and negative results clip to 0; then the card's radiometry (for RGB models the EuroSAT
    JPEG mapping min(DN * 255 / 2750, 255)) and the normalisation, all inside the compiled function.
    `prescaled=True` takes patches already on the radiometry's scale (the EuroSAT JPEG values);
    `views` > 1 averages the probabilities over that many views of each patch (VIEWS), and the
    card's calibration (a temperature) is applied to the average unless `calibrated=False`."""

    def __init__(self, card: ModelCard, runtime: str = DEFAULT_RUNTIME, batch: int = 64, threads: int | None = None):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}")
        self.card, self.runtime, self.batch = card, runtime, batch
        self._scale = np.float32(card.radiometry.get("scale", 1.0))
        self._cap = np.float32(card.radiometry.get("max", np.inf))
        self._mean, self._inv_std = np.asarray(card.mean, np.float32), 1.0 / np.asarray(card.std, np.float32)
        self.model = self._fn = self._pool = None
        if runtime.startswith("openvino"):
            self._pool = _openvino(card, threads, batch, uses_int8(card, runtime))
            return
        configure_threads(threads)
        self.model = _load_keras(card)
        import tensorflow as tf

        if runtime != "keras":
            self._fn = tf.function(_network_fn(card, self.model), jit_compile=(runtime == "xla"))

    def __call__(self, patches: np.ndarray, offset: float = 0.0, prescaled: bool = False,
                 views: int = 1, calibrated: bool = True) -> np.ndarray:
        if views not in VIEWS:
            raise ValueError(f"views must be one of {VIEWS}")
        p = (self._predict(patches, offset, prescaled) if views == 1 else
             np.mean([self._predict(view(patches, i), offset, prescaled) for i in range(views)], axis=0))
        return apply_temperature(p, self.card.temperature) if calibrated else p

    def _predict(self, patches: np.ndarray, offset: float, prescaled: bool) -> np.ndarray:
        """One view of every patch through the network: (n, classes) probabilities."""
        n = len(patches)
        out = np.empty((n, len(self.card.classes)), np.float32)
        if n == 0:
            return out
        scale = np.float32(1.0) if prescaled else self._scale
        if self._fn is None and self._pool is None:
            x = model_scale(patches, offset, {"scale": scale, "max": self._cap})
            return self.model.predict((x - self._mean) * self._inv_std, batch_size=self.batch,
                                      verbose=0).astype(np.float32)
        # arrays, so a new offset or scale does not retrace
        off, scale = np.asarray(offset, np.float32), np.asarray(scale, np.float32)

        def batches():
            for i in range(0, n, self.batch):
                m = min(self.batch, n - i)
                # OpenVINO: always `batch` (one static shape); TensorFlow: a power of two up to
                # `batch` (at most 7 compiled shapes, little padding)
                size = self.batch if self._pool is not None else min(self.batch, 1 << (m - 1).bit_length())
                buf = np.zeros((size,) + patches.shape[1:], np.float32)
                buf[:m] = patches[i:i + m]
                yield [buf, off, scale]

        if self._pool is not None:
            results = self._pool.run(batches())
        else:
            results = (np.asarray(self._fn(*b)) for b in batches())
        for i, r in zip(range(0, n, self.batch), results):
            out[i:i + self.batch] = r[:n - i]  # a padded last batch: its first n - i rows
        return out


_PREDICTORS: dict[tuple, Predictor] = {}
_LOCK = threading.Lock()


def get_predictor(card: ModelCard, runtime: str = DEFAULT_RUNTIME, threads: int | None = None) -> Predictor:
    """The process's predictor for a card: loaded once per process (once per Dask worker, shared by
    its threads)."""
    # the card as it is now: a predictor made before calibrate or quantize rewrote the card would apply
    # the old temperature or run the old network
    key = (card.path, card.weights_sha256, runtime, card.temperature, card.int8_default)
    with _LOCK:
        if key not in _PREDICTORS:
            _PREDICTORS[key] = Predictor(card, runtime, threads=threads)
    return _PREDICTORS[key]
