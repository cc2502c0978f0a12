"""train / evaluate: EuroSAT MS (official layout + torchgeo split files) -> a model folder.

Data layout: DATA/<Class>/<Class>_<n>.tif, 13 bands in EuroSAT order (B8A LAST), and the split
files eurosat-{train,val,test}.txt (they list .jpg names; the .tif of the same stem is read).
The patches are read once into a uint16 array cached on disk; every epoch streams from it."""
from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import date
from pathlib import Path

import numpy as np
import rasterio
from tqdm import tqdm

from .bands import EUROSAT_ORDER
from .classes import CLASSES
from .errors import AtlasError
from .registry import ModelCard, load_card, save

SPLITS = ("train", "val", "test")


def find_split_file(data: Path, split: str, splits: Path | None = None) -> Path:
    """eurosat-<split>.txt in --splits, DATA, DATA/.. or DATA/../splits."""
    name = f"eurosat-{split}.txt"
    for d in ([splits] if splits else []) + [data, data.parent, data.parent / "splits"]:
        if (d / name).exists():
            return d / name
    raise AtlasError(f"{data}: split file {name} not found (looked in {data}, {data.parent}, "
                     f"{data.parent / 'splits'}); pass --splits DIR")


def split_items(data: Path, split: str, splits: Path | None = None) -> list[tuple[Path, int]]:
    """(tif path, class index 0..9) for every entry of a split file."""
    f = find_split_file(data, split, splits)
    items = []
    for line in f.read_text().split():
        stem = Path(line).stem  # AnnualCrop_1.jpg -> AnnualCrop_1
        cls = stem.rsplit("_", 1)[0]
        if cls not in CLASSES:
            raise AtlasError(f"{f}: entry {line!r} names no EuroSAT class")
        items.append((data / cls / f"{stem}.tif", CLASSES.index(cls)))
    if not items:
        raise AtlasError(f"{f}: empty split file")
    return items


def _cache_dir() -> Path:
    return Path(os.environ.get("ATLAS_CACHE", Path.home() / ".cache" / "atlas_change"))


def load_split(data: str | os.PathLike, split: str, splits: str | os.PathLike | None = None,
               quiet: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """-> (X uint16 (n, 64, 64, 13) in EuroSAT band order, y int64). Cached as .npy after the first read."""
    data = Path(data)
    items = split_items(data, split, Path(splits) if splits else None)
    key = hashlib.sha256(json.dumps([str(p.resolve()) for p, _ in items]).encode()).hexdigest()[:16]
    cache = _cache_dir() / f"eurosat-{split}-{key}.npz"
    if cache.exists():
        with np.load(cache) as z:
            return z["X"], z["y"]
    X = np.empty((len(items), 64, 64, len(EUROSAT_ORDER)), np.uint16)
    for i, (p, _) in enumerate(tqdm(items, desc=f"read {split}", unit="patch", disable=quiet)):
        try:
            with rasterio.open(p) as ds:
                if ds.count != len(EUROSAT_ORDER) or ds.shape != (64, 64):
                    raise AtlasError(f"{p}: expected 13 bands of 64 x 64 (EuroSAT MS), found {ds.count} of {ds.shape}")
                X[i] = ds.read().transpose(1, 2, 0)
        except rasterio.errors.RasterioIOError as e:
            raise AtlasError(f"{p}: cannot read ({str(e).splitlines()[0]})") from None
    y = np.array([c for _, c in items], np.int64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.npz")
    np.savez(tmp, X=X, y=y)
    os.replace(tmp, cache)
    return X, y


def band_indices(bands: tuple[str, ...]) -> list[int]:
    """Positions of `bands` inside the EuroSAT files (B01..B12 then B8A last)."""
    return [EUROSAT_ORDER.index(b) for b in bands]


def evaluate_arrays(card: ModelCard, X: np.ndarray, y: np.ndarray, runtime: str = "graph") -> dict:
    """Accuracy, per-class accuracy and confusion matrix of a model on EuroSAT-order patches."""
    from .infer import get_predictor

    pred = get_predictor(card, runtime)(X[..., band_indices(card.bands)]).argmax(axis=1)
    n = len(CLASSES)
    conf = np.bincount(y * n + pred, minlength=n * n).reshape(n, n)
    per = conf.diagonal() / np.maximum(conf.sum(axis=1), 1)
    return {"model": card.name, "weights_sha256": card.weights_sha256, "n": int(len(y)),
            "accuracy": float((pred == y).mean()), "per_class": dict(zip(CLASSES, per.round(4).tolist())),
            "confusion": conf.tolist()}


def evaluate(data: str | os.PathLike, model: str, split: str = "test", splits: str | None = None,
             quiet: bool = False) -> dict:
    card = load_card(model)
    X, y = load_split(data, split, splits, quiet)
    return {**evaluate_arrays(card, X, y), "split": split}


def _augment(tf, x, y):
    x = tf.image.random_flip_left_right(x)
    x = tf.image.random_flip_up_down(x)
    k = tf.random.uniform((), 0, 4, dtype=tf.int32)
    return tf.image.rot90(x, k), y


def train(data: str | os.PathLike, arch: str, out: str | os.PathLike, bands: tuple[str, ...] = EUROSAT_ORDER,
          epochs: int = 30, batch: int = 64, lr: float = 1e-3, patience: int = 6, seed: int = 42,
          splits: str | None = None, name: str | None = None, quiet: bool = False) -> ModelCard:
    """Train `arch` on the train split, early-stop on val, evaluate on test, save with its card."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from .nets import build

    keras.utils.set_random_seed(seed)
    idx = band_indices(bands)
    Xtr, ytr = load_split(data, "train", splits, quiet)
    Xva, yva = load_split(data, "val", splits, quiet)
    mean = Xtr[..., idx].reshape(-1, len(idx)).mean(axis=0, dtype=np.float64)
    std = Xtr[..., idx].reshape(-1, len(idx)).std(axis=0, dtype=np.float64) + 1e-6

    def norm(x, y):
        return (tf.cast(tf.gather(x, idx, axis=-1), tf.float32) - mean.astype(np.float32)) / std.astype(np.float32), y

    ds_tr = (tf.data.Dataset.from_tensor_slices((Xtr, ytr)).shuffle(len(ytr), seed=seed, reshuffle_each_iteration=True)
             .map(norm, num_parallel_calls=tf.data.AUTOTUNE).map(lambda x, y: _augment(tf, x, y))
             .batch(batch).prefetch(tf.data.AUTOTUNE))
    ds_va = tf.data.Dataset.from_tensor_slices((Xva, yva)).map(norm).batch(256).prefetch(tf.data.AUTOTUNE)
    model = build(arch, len(idx))
    steps = max(1, epochs * -(-len(ytr) // batch))
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(lr, steps)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    t0 = time.time()
    hist = model.fit(ds_tr, validation_data=ds_va, epochs=epochs, verbose=0 if quiet else 2,
                     callbacks=[keras.callbacks.EarlyStopping("val_accuracy", patience=patience,
                                                              restore_best_weights=True)])
    seconds = time.time() - t0
    out = Path(out)
    fields = dict(
        name=name or out.name, architecture=model.name, bands=tuple(bands), mean=tuple(mean.tolist()),
        std=tuple(std.tolist()), date=date.today().isoformat(),
        training={"data": f"EuroSAT MS ({Path(data).resolve()})", "split": "torchgeo eurosat-train/val/test",
                  "n_train": int(len(ytr)), "n_val": int(len(yva)), "epochs_run": len(hist.history["loss"]),
                  "best_val_accuracy": round(float(max(hist.history["val_accuracy"])), 4),
                  "batch": batch, "lr": lr, "augmentation": "flips + 90 degree rotations", "seed": seed,
                  "seconds": round(seconds, 1), "machine": f"{os.cpu_count()} CPU cores"},
    )
    card = save(model, out, **fields)
    try:
        Xte, yte = load_split(data, "test", splits, quiet)
    except AtlasError:
        return card
    metrics = {**evaluate_arrays(card, Xte, yte), "split": "test"}
    metrics.pop("model"), metrics.pop("weights_sha256")
    return save(model, out, **fields, metrics=metrics)


def init_untrained(arch: str, bands: tuple[str, ...], out: str | os.PathLike, name: str, seed: int = 0) -> ModelCard:
    """A seed-initialised, explicitly UNTRAINED model (card says trained: false), for exercising
    the pipeline where no trained weights exist. Its labels mean nothing and outputs say so."""
    import keras

    from .nets import build

    keras.utils.set_random_seed(seed)
    model = build(arch, len(bands))
    n = len(bands)
    return save(model, out, name=name, architecture=model.name, bands=tuple(bands), mean=(1000.0,) * n,
                std=(1000.0,) * n, trained=False, date=date.today().isoformat(),
                training={"data": "none: untrained, seed-initialised weights", "seed": seed})
