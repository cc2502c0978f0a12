"""train / evaluate on EuroSAT: RGB JPEGs or 13-band MS GeoTIFFs -> a model folder with its card.

Data: DATA/<Class>/<Class>_<n>.jpg (EuroSAT RGB, with or without an EuroSAT_RGB/ level) or
DATA/<Class>/<Class>_<n>.tif (EuroSAT MS: 13 bands, B8A LAST; also DATA/<split>/<Class>/...), and
the split files eurosat-{train,val,test}.txt (they list .jpg names; the file of the same stem is read).
The patches are read once into an array cached on disk; every epoch streams from it. Training keeps
a resumable state (weights, optimiser, epoch, best validation weights) under the cache folder: a
killed `train` started again with the same arguments goes on from its last finished epoch."""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import numpy as np
import rasterio
from tqdm import tqdm

from .. import quiet_tensorflow
from .augment import AUGMENTATIONS, JPEG_PER_DN, MIXES, mix_batch
from .augment import augment as _augment
from ..bands import EUROSAT_ORDER
from ..classes import CLASSES
from ..errors import AtlasError, AtlasWarning
from .infer import DEFAULT_RUNTIME, VIEWS
from .registry import PRECISIONS, ModelCard, cache_dir, load_card, save

SPLITS = ("train", "val", "test")
#: bands of the EuroSAT JPEGs, in their channel order (R, G, B)
RGB_BANDS: tuple[str, ...] = ("B04", "B03", "B02")
#: the EuroSAT JPEGs are v = min(DN * 255 / 2750, 255) of the L1C DN of B04, B03, B02: measured on the
#: 270 MS/JPEG pairs of the subset (rmse 2.9 / 1.6 / 2.8 grey levels, JPEG error; saturation at ~2750 DN)
JPEG_RADIOMETRY = {"kind": "eurosat-jpeg", "scale": JPEG_PER_DN, "max": 255.0,
                   "formula": "v = min(max(DN + offset, 0) * 255 / 2750, 255), DN = L1C digital numbers",
                   "measured": "270 EuroSAT MS/JPEG twins: rmse 2.9 (B04), 1.6 (B03), 2.8 (B02) grey levels"}


def find_split_file(data: Path, split: str, splits: Path | None = None) -> Path:
    """eurosat-<split>.txt in --splits, DATA, DATA/.., DATA/../splits or DATA/../../splits."""
    name = f"eurosat-{split}.txt"
    dirs = ([splits] if splits else []) + [data, data.parent, data.parent / "splits", data.parent.parent / "splits"]
    for d in dirs:
        if (d / name).exists():
            return d / name
    raise AtlasError(f"{data}: split file {name} not found (looked in {', '.join(map(str, dirs))}); "
                     "pass --splits DIR")


def _roots(data: Path, split: str) -> list[Path]:
    return [data, data / "EuroSAT_RGB", data / "EuroSAT_MS", data / split]


def data_kind(data: str | os.PathLike, split: str = "train", splits: str | os.PathLike | None = None) -> str:
    """'jpg' (EuroSAT RGB) or 'tif' (EuroSAT MS): the kind of the first listed patch found under DATA."""
    data = Path(data)
    if not data.is_dir():
        raise AtlasError(f"{data}: no such folder (expected EuroSAT RGB or MS: <Class>/<Class>_<n>.jpg or .tif)")
    f = find_split_file(data, split, Path(splits) if splits else None)
    for line in f.read_text().split()[:2000]:
        stem = Path(line).stem
        for root in _roots(data, split):
            for ext in ("tif", "jpg"):
                if (root / stem.rsplit("_", 1)[0] / f"{stem}.{ext}").exists():
                    return ext
    raise AtlasError(f"{data}: none of the patches listed in {f} found as <Class>/<name>.jpg or .tif")


def split_items(data: Path, split: str, splits: Path | None = None, kind: str = "tif"
                ) -> tuple[list[tuple[Path, int]], int]:
    """((path, class index 0..9) of the listed patches found under DATA, number listed). A folder
    holding part of a split (the EuroSAT MS subset) gives the part; none found is an error."""
    f = find_split_file(data, split, splits)
    items, listed = [], 0
    for line in f.read_text().split():
        stem = Path(line).stem  # AnnualCrop_1.jpg -> AnnualCrop_1
        cls = stem.rsplit("_", 1)[0]
        if cls not in CLASSES:
            raise AtlasError(f"{f}: entry {line!r} names no EuroSAT class")
        listed += 1
        for root in _roots(data, split):
            if (p := root / cls / f"{stem}.{kind}").exists():
                items.append((p, CLASSES.index(cls)))
                break
    if not items:
        raise AtlasError(f"{data}: none of the {listed} patches of {f.name} found as <Class>/<name>.{kind}")
    return items, listed


def load_split(data: str | os.PathLike, split: str, splits: str | os.PathLike | None = None,
               quiet: bool = False, kind: str | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """-> (X, y int64, number listed in the split file). X is uint16 (n, 64, 64, 13) in EuroSAT band
    order for MS GeoTIFFs, uint8 (n, 64, 64, 3) = B04, B03, B02 JPEG values for RGB. Cached as .npz."""
    data = Path(data)
    kind = kind or data_kind(data, split, splits)
    items, listed = split_items(data, split, Path(splits) if splits else None, kind)
    key = hashlib.sha256(json.dumps([str(p.resolve()) for p, _ in items]).encode()).hexdigest()[:16]
    cache = cache_dir() / f"eurosat-{kind}-{split}-{key}.npz"
    if cache.exists():
        with np.load(cache) as z:
            return z["X"], z["y"], listed
    n_bands, dtype = (len(EUROSAT_ORDER), np.uint16) if kind == "tif" else (3, np.uint8)
    X = np.empty((len(items), 64, 64, n_bands), dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        for i, (p, _) in enumerate(tqdm(items, desc=f"read {split}", unit="patch", disable=quiet)):
            try:
                with rasterio.open(p) as ds:
                    if ds.count != n_bands or ds.shape != (64, 64):
                        raise AtlasError(f"{p}: expected {n_bands} bands of 64 x 64 (EuroSAT "
                                         f"{'MS' if kind == 'tif' else 'RGB'}), found {ds.count} of {ds.shape}")
                    X[i] = ds.read().transpose(1, 2, 0)
            except rasterio.errors.RasterioIOError as e:
                raise AtlasError(f"{p}: cannot read ({str(e).splitlines()[0]})") from None
    y = np.array([c for _, c in items], np.int64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.npz")
    np.savez(tmp, X=X, y=y)
    os.replace(tmp, cache)
    return X, y, listed


def band_indices(bands: tuple[str, ...], source: tuple[str, ...] = EUROSAT_ORDER) -> list[int]:
    """Positions of `bands` inside the data's channels (MS files: B01..B12 then B8A last)."""
    missing = [b for b in bands if b not in source]
    if missing:
        raise AtlasError(f"the data hold {', '.join(source)}; the model needs {', '.join(missing)} too")
    return [source.index(b) for b in bands]


def evaluate_arrays(card: ModelCard, X: np.ndarray, y: np.ndarray, runtime: str = DEFAULT_RUNTIME,
                    views: int = 1) -> dict:
    """Accuracy, per-class accuracy and confusion matrix of a model on EuroSAT patches: MS (13 bands,
    DN, through the card's radiometry) or RGB JPEG values (3 bands, taken as already mapped)."""
    from .infer import get_predictor

    jpeg = X.shape[-1] == len(RGB_BANDS)
    source = RGB_BANDS if jpeg else EUROSAT_ORDER
    if jpeg and card.radiometry.get("kind") != "eurosat-jpeg":
        raise AtlasError(f"model {card.name} takes DN, not EuroSAT JPEG values: evaluate it on EuroSAT MS")
    pred = get_predictor(card, runtime)(X[..., band_indices(card.bands, source)], prescaled=jpeg,
                                        views=views).argmax(axis=1)
    n = len(CLASSES)
    conf = np.bincount(y * n + pred, minlength=n * n).reshape(n, n)
    per = conf.diagonal() / np.maximum(conf.sum(axis=1), 1)
    return {"model": card.name, "weights_sha256": card.weights_sha256, "runtime": runtime, "tta_views": views,
            "n": int(len(y)),
            "data": "EuroSAT RGB JPEG" if jpeg else "EuroSAT MS GeoTIFF (DN)",
            "accuracy": float((pred == y).mean()), "per_class": dict(zip(CLASSES, per.round(4).tolist())),
            "confusion": conf.tolist()}


def evaluate(data: str | os.PathLike, model: str, split: str = "test", splits: str | None = None,
             quiet: bool = False, runtime: str = DEFAULT_RUNTIME, views: int = 1) -> dict:
    """Evaluate a model on a split of EuroSAT RGB or MS; `n_listed` says how many the split names."""
    card = load_card(model)
    X, y, listed = load_split(data, split, splits, quiet)
    return {**evaluate_arrays(card, X, y, runtime, views), "split": split, "n_listed": listed}


def _run_dir(out: Path, config: dict) -> Path:
    key = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return cache_dir() / "runs" / f"{out.name}-{key}"


@dataclass(frozen=True)
class Recipe:
    """How the network is fitted besides its data and epochs (docs/models.md): AdamW with
    `weight_decay`, a linear warm-up over `warmup_epochs` to the peak learning rate then a cosine to
    0 over the rest of the run, cross-entropy with `label_smoothing`, batches mixed by `mix` with
    probability `mix_p` (augment.mix_batch), and shifts of up to `translate` px (reflect padding)
    before the flips and rotations. The defaults are the recipe that took the default network
    from 96 to 98 % on EuroSAT test (models/README.md)."""

    label_smoothing: float = 0.1
    mix: str = "cutmix"
    mix_p: float = 0.5
    translate: int = 4
    weight_decay: float = 0.05
    warmup_epochs: float = 3.0

    def check(self) -> "Recipe":
        """The recipe, or AtlasError naming the first value out of range."""
        if self.mix not in MIXES:
            raise AtlasError(f"--mix {self.mix!r}: choose one of {', '.join(MIXES)}")
        for flag, v, lo, hi in (("--label-smoothing", self.label_smoothing, 0, 0.5), ("--mix-p", self.mix_p, 0, 1),
                                ("--translate", self.translate, 0, 16), ("--weight-decay", self.weight_decay, 0, 1),
                                ("--warmup-epochs", self.warmup_epochs, 0, 1e6)):
            if not (lo <= v <= hi):  # also refuses NaN
                raise AtlasError(f"{flag} {v}: expected a value from {lo:g} to {hi:g}")
        return self

    def describe(self) -> str:
        """The recipe in words, for the card."""
        mix = "no mixing" if self.mix == "none" or not self.mix_p else f"{self.mix} with p={self.mix_p:g}"
        return (f"AdamW (weight decay {self.weight_decay:g}), linear warm-up over {self.warmup_epochs:g} epochs then "
                f"cosine to 0; label smoothing {self.label_smoothing:g}; {mix}; translations of up to "
                f"+-{self.translate} px (reflect padding)")


def train(data: str | os.PathLike, arch: str, out: str | os.PathLike, bands: tuple[str, ...] | None = None,
          epochs: int = 200, batch: int = 256, lr: float = 3e-3, seed: int = 42, splits: str | None = None,
          name: str | None = None, quiet: bool = False, patience: int | None = None,
          init: str | None = None, precision: str = "float32", augment: str = "standard",
          recipe: Recipe = Recipe(), average_last: int = 0, teachers: tuple[str, ...] = (),
          distill: float = 0.5, teacher_views: int = 8) -> ModelCard:
    """Train `arch` on the train split with `recipe`, keep the weights of the best
    validation epoch (the last one where the data have no validation split), evaluate them on test,
    save with the card. Resumes an interrupted run. `init`: start from a trained model of the same
    architecture on a subset of `bands` (e.g. spectrumnet-rgb for a 13-band model): its weights are
    copied, the first layer's filters go to its bands and zeros to the others, and its normalisation
    is carried over for its bands, so that the new model starts out computing exactly the old one.
    `precision` 'mixed_bfloat16' trains with bfloat16 arithmetic (float32 weights); the saved model
    is float32 with the same weights, so inference is as for any other model. `augment` 'l2a' adds the
    L1C -> L2A transform of a real product pair and seasonal colour to the JPEG augmentation.
    `average_last` K: also keep the running mean of the weights of the last K epochs (stochastic weight
    averaging, Izmailov et al. 2018), its batch-norm statistics recomputed, and write it instead of the
    best epoch where its validation accuracy is at least as high (it does not change the epochs, so it is
    not part of the run's identity: a run resumed with it averages from then on). `teachers`: trained
    models whose mean probabilities on each training patch (over `teacher_views` views) make up
    `distill` of its target, the one-hot label the rest (knowledge distillation, Hinton et al. 2015,
    with the teachers' outputs computed once: teacher_targets)."""
    if augment not in AUGMENTATIONS:
        raise AtlasError(f"augment {augment!r}: choose one of {', '.join(AUGMENTATIONS)}")
    recipe = recipe.check()
    if epochs < 1 or batch < 1 or not lr > 0:
        raise AtlasError(f"--epochs {epochs}, --batch {batch}, --lr {lr}: each must be above 0")
    if not 0 <= average_last <= epochs:
        raise AtlasError(f"--average-last {average_last}: expected 0 to --epochs ({epochs})")
    if teachers and not 0 < distill <= 1:  # also refuses NaN
        raise AtlasError(f"--distill {distill}: expected a share above 0 and at most 1")
    if teachers and teacher_views not in VIEWS:
        raise AtlasError(f"--teacher-views {teacher_views}: choose one of {', '.join(map(str, VIEWS))}")
    quiet_tensorflow()
    import keras
    import tensorflow as tf

    from .nets import build

    data, out = Path(data), Path(out)
    kind = data_kind(data, "train", splits)
    if augment != "standard" and kind != "jpg":
        raise AtlasError(f"{data}: --augment {augment} changes the colours of EuroSAT RGB JPEGs; these are MS "
                         "GeoTIFFs (digital numbers of 13 bands): train them with --augment standard")
    source = RGB_BANDS if kind == "jpg" else EUROSAT_ORDER
    bands = tuple(bands or source)
    idx = band_indices(bands, source)
    keras.utils.set_random_seed(seed)
    Xtr, ytr, _ = load_split(data, "train", splits, quiet, kind)
    try:
        Xva, yva, _ = load_split(data, "val", splits, quiet, kind)
    except AtlasError:  # e.g. the EuroSAT MS subset: train and test only
        Xva, yva = None, None
    jpeg = kind == "jpg"
    src = load_card(init) if init else None
    mean, std = _normalisation(Xtr, idx, bands, src, jpeg, init)
    teach = [_teacher_card(t, source, jpeg) for t in teachers]
    config = dict(data=str(data.resolve()), arch=arch, bands=bands, epochs=epochs, batch=batch, lr=lr, seed=seed,
                  n_train=len(ytr), augmentation=AUGMENTATIONS[augment] if jpeg else "flips + 90 degree rotations",
                  recipe=asdict(recipe))
    if src:
        config["init"] = src.weights_sha256
    if teach:
        config["distillation"] = {"teachers": [c.weights_sha256 for c in teach], "weight": distill,
                                  "views": teacher_views}
    if precision != "float32":
        if precision not in PRECISIONS:
            raise AtlasError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
        config["precision"] = precision
        if cpu_bfloat16() is False and not tf.config.list_physical_devices("GPU"):
            warnings.warn(f"--precision {precision}: this CPU has no bfloat16 instructions (AVX512-BF16, AMX), so "
                          "bfloat16 is emulated and trains slower than float32; --precision float32 is faster "
                          "here", AtlasWarning, stacklevel=2)
    run = _run_dir(out, config)
    run.mkdir(parents=True, exist_ok=True)
    targets = None
    if teach:
        soft = teacher_targets(teach, Xtr, source, jpeg, teacher_views, run, quiet)
        targets = (1 - distill) * np.eye(len(CLASSES), dtype=np.float32)[ytr] + np.float32(distill) * soft
    ds_tr, ds_va = _pipelines(tf, (Xtr, ytr if targets is None else targets), (Xva, yva), idx, mean, std, jpeg,
                              augment, recipe, batch, seed)
    try:  # the policy applies to the layers built under it; float32 again for everything after
        keras.mixed_precision.set_global_policy(precision)
        model = build(arch, len(idx))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    if src:
        _transplant(src, model, bands)
    _compile(keras, model, recipe, lr, epochs, -(-len(ytr) // batch))
    best = _best_keeper(run)
    callbacks = [keras.callbacks.BackupAndRestore(str(run / "backup"), delete_checkpoint=False), best]
    if patience:
        callbacks.append(keras.callbacks.EarlyStopping("val_accuracy", patience=patience))
    if average_last:
        callbacks.append(_averager(run, epochs, average_last))
    if not quiet:
        print(f"training {arch} on {', '.join(bands)} ({len(ytr)} train / {0 if yva is None else len(yva)} val "
              f"patches, {epochs} epoch{'s' if epochs != 1 else ''}{f', from {src.name}' if src else ''}); "
              f"resumable state in {run}", flush=True)
    if not best.state.get("finished"):  # a finished run started again only re-does the steps below
        model.fit(ds_tr, validation_data=ds_va, epochs=epochs, verbose=0 if quiet else 2, callbacks=callbacks,
                  shuffle=False)  # ds_tr shuffles itself
    n_val = 0 if yva is None else int(len(yva))
    model.load_weights(run / "best.weights.h5")
    if precision != "float32":  # the same (float32) weights in a float32 network: what is saved and run
        weights, model = model.get_weights(), build(arch, len(idx))
        model.set_weights(weights)
    precise_bn = _precise_bn(model, ds_tr, ds_va, run / "best.weights.h5") if ds_va is not None else None
    average = _use_average(model, run, ds_tr, ds_va) if average_last else None
    if average_last and average is None:
        print(f"train: no weight average in {run}: the run ended before its last {average_last} epochs were kept "
              "(it finished before --average-last was given, or stopped early); the best epoch's weights are "
              "written", file=sys.stderr)
    fields = _card_fields(model, out, name, bands, mean, std, jpeg, data, config, recipe, best.state, precise_bn,
                          (len(ytr), n_val), src, precision, tf.__version__, average,
                          tuple(c.name for c in teach))
    card = save(model, out, **fields)
    try:
        Xte, yte, listed = load_split(data, "test", splits, quiet, kind)
    except AtlasError:
        return card
    # the card's score is the float32 network's (TensorFlow graph); benchmarks/RESULTS.md has each runtime's
    metrics = {**evaluate_arrays(card, Xte, yte, "graph"), "split": "test", "n_listed": listed}
    metrics.pop("model"), metrics.pop("weights_sha256")
    return save(model, out, **fields, metrics=metrics)


def _teacher_card(model: str, source: tuple[str, ...], jpeg: bool) -> ModelCard:
    """A teacher's card, or AtlasError where it cannot label the data (other classes, bands they lack)."""
    card = load_card(model)
    if tuple(card.classes) != tuple(CLASSES):
        raise AtlasError(f"--teacher {model}: its classes are not the 10 EuroSAT classes")
    if jpeg and card.radiometry.get("kind") != "eurosat-jpeg":
        raise AtlasError(f"--teacher {model}: it takes digital numbers, not the EuroSAT JPEG values of these data")
    if not set(card.bands) <= set(source):
        raise AtlasError(f"--teacher {model}: it reads {', '.join(card.bands)}; the data hold {', '.join(source)}")
    return card


def teacher_targets(cards: list[ModelCard], X: np.ndarray, source: tuple[str, ...], jpeg: bool, views: int,
                    run: Path, quiet: bool = False) -> np.ndarray:
    """(n, classes): the teachers' mean class probabilities on each training patch, averaged over `views`
    test-time views, as their networks give them (the card's temperature is not applied: a teacher
    trained with label smoothing is softer, and so tells the student more about the other classes).
    Computed once, before the first epoch, on the patches as they are (the augmentations keep the
    class), and kept in the run folder so that a resumed run reads them back."""
    from .infer import get_predictor

    path = run / "teacher_targets.npy"
    if path.exists():
        return np.load(path)
    if not quiet:
        print(f"teacher targets: {', '.join(c.name for c in cards)} on {len(X)} patches x {views} views", flush=True)
    soft = np.mean([get_predictor(c, "openvino-float")(X[..., band_indices(c.bands, source)], prescaled=jpeg,
                                                        views=views, calibrated=False) for c in cards], axis=0)
    tmp = path.with_suffix(".part.npy")
    np.save(tmp, soft.astype(np.float32))
    os.replace(tmp, path)
    return soft.astype(np.float32)


def _normalisation(Xtr, idx, bands: tuple[str, ...], src, jpeg: bool, init) -> tuple[np.ndarray, np.ndarray]:
    """Per band mean and std of the training patches (float64); where `src` (--init) is given, its own
    for its bands, so that the new model starts out computing exactly the old one."""
    flat = Xtr[..., idx].reshape(-1, len(idx))
    mean, std = flat.mean(axis=0, dtype=np.float64), flat.std(axis=0, dtype=np.float64) + 1e-6
    if src:
        if not set(src.bands) <= set(bands) or (jpeg and tuple(src.bands) != bands):
            raise AtlasError(f"--init {init}: its bands {', '.join(src.bands)} must be a subset of the MS bands "
                             f"trained, or the same bands for JPEG data")
        scale = 1.0 if jpeg else src.radiometry.get("scale", 1.0)  # its (v - m) / s on v = DN * scale
        for b, m, sd in zip(src.bands, src.mean, src.std):
            mean[bands.index(b)], std[bands.index(b)] = m / scale, sd / scale
    return mean, std


def _pipelines(tf, train_xy, val_xy, idx, mean, std, jpeg: bool, augment: str, recipe: Recipe, batch: int, seed: int):
    """tf.data pipelines: train (shuffled, augmented, normalised, batched, mixed) and val (normalised;
    None without a val split). Train labels are class ids, or (n, classes) targets already."""
    (Xtr, ytr), (Xva, yva) = train_xy, val_xy
    n_cls = len(CLASSES)
    ids = ytr.ndim == 1

    def norm_val(x, y):  # the model's bands, normalised; one-hot labels
        x = (tf.cast(tf.gather(x, idx, axis=-1), tf.float32) - mean.astype(np.float32)) / std.astype(np.float32)
        return x, tf.one_hot(y, n_cls)

    def norm(x, y):  # the same after augmenting (on the data's own scale, before normalising)
        x, y = _augment(tf, tf.cast(tf.gather(x, idx, axis=-1), tf.float32), y, jpeg, augment, recipe.translate)
        return (x - mean.astype(np.float32)) / std.astype(np.float32), tf.one_hot(y, n_cls) if ids else y

    ds_tr = (tf.data.Dataset.from_tensor_slices((Xtr, ytr)).shuffle(len(ytr), seed=seed, reshuffle_each_iteration=True)
             .map(norm, num_parallel_calls=tf.data.AUTOTUNE).batch(batch)
             .map(lambda x, y: mix_batch(tf, x, y, recipe.mix, recipe.mix_p), num_parallel_calls=tf.data.AUTOTUNE)
             .prefetch(tf.data.AUTOTUNE))
    ds_va = None if yva is None else (tf.data.Dataset.from_tensor_slices((Xva, yva)).map(norm_val).batch(256)
                                      .prefetch(tf.data.AUTOTUNE))
    return ds_tr, ds_va


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The instruction-set flags `cpuinfo` lists (x86 'flags', Arm 'Features'); empty where it lists
    none or cannot be read (another OS)."""
    try:
        lines = Path(cpuinfo).read_text().splitlines()
    except OSError:
        return set()
    return {flag for line in lines if line.split(":")[0].strip() in ("flags", "Features")
            for flag in line.split(":", 1)[1].split()}


def cpu_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether the CPU computes bfloat16 in hardware (x86 AVX512-BF16 or AMX, Arm BF16); None where
    `cpuinfo` lists no flags."""
    flags = cpu_flags(cpuinfo)
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"}) if flags else None


def warmup_cosine(peak: float, warmup_steps: int, total_steps: int):
    """Learning rate by optimiser step: linear from 0 to `peak` over `warmup_steps`, then a cosine
    to 0 at `total_steps` (and 0 after). The values of keras' CosineDecay(0, total_steps -
    warmup_steps, warmup_target=peak, warmup_steps=warmup_steps), computed without its conditional:
    AdamW evaluates the schedule again for each variable's weight decay, and each conditional is a
    pair of sub-graphs to trace (about 10 s of a 2-core CPU for SpectrumNet)."""
    quiet_tensorflow()
    import keras
    from keras import ops

    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warm-up of {warmup_steps} steps in a run of {total_steps}")

    class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            s = ops.minimum(ops.cast(step, "float32"), float(total_steps))
            rising = peak * (s / max(warmup_steps, 1))
            falling = peak * (0.5 * (1.0 + ops.cos(math.pi * ((s - warmup_steps) / (total_steps - warmup_steps)))))
            return ops.where(s < warmup_steps, rising, falling)

        def get_config(self):
            return {"peak": peak, "warmup_steps": warmup_steps, "total_steps": total_steps}

    return WarmupCosine()


def _compile(keras, model, recipe: Recipe, lr: float, epochs: int, per_epoch: int) -> None:
    """AdamW with decoupled weight decay, a linear warm-up to `lr` then a cosine to 0 over the whole
    run, cross-entropy with the recipe's label smoothing. The optimiser's variables are made here, so
    that the training step is traced once (a first trace that makes variables is traced again)."""
    steps = max(1, epochs * per_epoch)
    warm = min(int(round(recipe.warmup_epochs * per_epoch)), steps - 1)
    model.compile(optimizer=keras.optimizers.AdamW(warmup_cosine(lr, warm, steps), weight_decay=recipe.weight_decay),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    model.optimizer.build(model.trainable_variables)


def _card_fields(model, out: Path, name, bands, mean, std, jpeg: bool, data: Path, config: dict, recipe: Recipe,
                 state: dict, precise_bn, sizes: tuple[int, int], src, precision: str, tf_version: str,
                 average: dict | None = None, teachers: tuple[str, ...] = ()) -> dict:
    """The model card's fields for the trained weights: bands, normalisation, how it was trained."""
    from .nets import count_macs

    n_train, n_val = sizes
    epochs, batch, lr, seed = config["epochs"], config["batch"], config["lr"], config["seed"]
    return dict(
        name=name or out.name, architecture=model.name, bands=bands, mean=tuple(mean.tolist()),
        std=tuple(std.tolist()), date=date.today().isoformat(),
        radiometry=JPEG_RADIOMETRY if jpeg else {},
        normalisation=("v = min(max(DN + offset, 0) * 255 / 2750, 255) (the EuroSAT JPEG mapping), then "
                       "(v - mean) / std per band" if jpeg else ModelCard.normalisation),
        training={"data": f"EuroSAT {'RGB JPEG' if jpeg else 'MS GeoTIFF'} ({data.resolve()})",
                  "split": "eurosat-train/val/test.txt (train to fit, val to pick the epoch)",
                  "n_train": int(n_train), "n_val": n_val, "epochs": epochs,
                  "best_epoch": state["best_epoch"],
                  "best_val_accuracy": round(state["best"], 4) if n_val else None,
                  **({"precise_bn": precise_bn} if precise_bn else {}),
                  **({"weight_average": average} if average else {}),
                  "batch": batch, "optimizer": f"peak lr {lr:g}; {recipe.describe()}", "recipe": asdict(recipe),
                  "precision": precision,
                  "augmentation": config["augmentation"], "seed": seed, "from_scratch": src is None,
                  **({"initialised_from": f"{src.name} (weights SHA-256 {src.weights_sha256})"} if src else {}),
                  **({"distillation": {**config["distillation"], "teacher_names": list(teachers)}}
                     if "distillation" in config else {}),
                  "parameters": int(model.count_params()), "macs_per_patch": count_macs(model),
                  "seconds": round(state["seconds"], 1),
                  "machine": f"{os.cpu_count()} CPU cores, TensorFlow {tf_version}"},
    )


def _val_accuracy(model, ds_va) -> float:
    """Top-1 accuracy of `model` (inference mode) on the batches of `ds_va`."""
    right = n = 0
    for x, y in ds_va:
        right += int((model(x, training=False).numpy().argmax(axis=1) == y.numpy().argmax(axis=1)).sum())
        n += len(y)
    return right / n


def _bn_layers(model) -> list:
    """Every batch-norm layer of `model`, those of models inside it included (ResNet50 is one layer of
    the model train builds)."""
    import keras

    out = []
    for layer in getattr(model, "layers", []):
        out += [layer] if isinstance(layer, keras.layers.BatchNormalization) else _bn_layers(layer)
    return out


def _recompute_bn(model, ds_tr, batches: int = 200) -> bool:
    """Batch-norm moving statistics recomputed as the plain mean of the batch statistics of forward
    passes in training mode over up to `batches` training batches (no weight update: at pass t the
    momentum is (t - 1) / t, so nothing of the old statistics is left). -> whether the model has
    batch-norm layers."""
    bns = _bn_layers(model)
    momentum = [layer.momentum for layer in bns]
    if bns:
        for t, (x, _) in enumerate(ds_tr.take(batches), 1):
            for layer in bns:
                layer.momentum = (t - 1) / t
            model(x, training=True)  # updates the moving statistics only
    for layer, m in zip(bns, momentum):
        layer.momentum = m
    return bool(bns)


def _precise_bn(model, ds_tr, ds_va, weights: Path, batches: int = 200) -> dict | None:
    """Recompute the batch-norm statistics of the final weights ("precise BN"): the moving averages
    collected during training lag behind weights that were still changing. Kept only where validation
    accuracy does not drop. -> what was done, for the card; None without batch-norm layers."""
    quiet_tensorflow()
    if not _bn_layers(model):
        return None
    before = _val_accuracy(model, ds_va)
    _recompute_bn(model, ds_tr, batches)
    after = _val_accuracy(model, ds_va)
    if after < before:
        model.load_weights(weights)
    return {"batches": batches, "val_accuracy_before": round(before, 4), "val_accuracy_after": round(after, 4),
            "kept": after >= before}


def _averager(run: Path, epochs: int, k: int):
    """A Keras callback that keeps the running mean of the weights of the last `k` of `epochs` epochs in
    run/average.npz (float arrays averaged, others the latest; an epoch re-run after a resume is not
    counted twice)."""
    quiet_tensorflow()
    import keras

    class Averager(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            f, done = run / "average.npz", epoch + 1
            if done <= epochs - k:
                return
            old = dict(np.load(f)) if f.exists() else {"n": 0, "first": done, "last": 0}
            if done <= int(old["last"]):
                return
            n, w = int(old["n"]), self.model.get_weights()
            mean = [a + (x - a) / (n + 1) if n and np.issubdtype(x.dtype, np.floating) else x
                    for a, x in zip((old.get(f"w{i}") for i in range(len(w))), w)]
            with open(run / ".average.npz", "wb") as out:
                np.savez(out, n=n + 1, first=int(old["first"]), last=done, **{f"w{i}": a for i, a in enumerate(mean)})
            os.replace(run / ".average.npz", f)

    return Averager()


def _use_average(model, run: Path, ds_tr, ds_va) -> dict | None:
    """Put the averaged weights of run/average.npz (_averager) into `model`, batch-norm statistics
    recomputed, where their validation accuracy is at least that of the weights it holds (the best
    epoch's); without a validation split, always. -> what was done, for the card; None without the file."""
    f = run / "average.npz"
    if not f.exists():
        return None
    z, keep = np.load(f), model.get_weights()
    best = _val_accuracy(model, ds_va) if ds_va is not None else None
    model.set_weights([z[f"w{i}"].astype(w.dtype) for i, w in enumerate(keep)])
    _recompute_bn(model, ds_tr)
    record = {"method": "stochastic weight averaging (Izmailov et al. 2018): the mean of the weights at the end of "
                        "each epoch, batch-norm statistics recomputed",
              "epochs": [int(z["first"]), int(z["last"])], "n": int(z["n"])}
    if best is None:
        return {**record, "kept": True}
    acc = _val_accuracy(model, ds_va)
    if acc < best:
        model.set_weights(keep)
    return {**record, "val_accuracy": round(acc, 4), "val_accuracy_best_epoch": round(best, 4), "kept": acc >= best}


def _transplant(src: ModelCard, model, bands: tuple[str, ...]) -> None:
    """Copy the weights of `src` into `model` (same weights by layer name: the same architecture, or
    resnet50 into resnet50-nomaxpool); the first layer's input filters of the bands `src` had go to
    their places in `bands`, the other bands' filters are zero."""
    quiet_tensorflow()
    import keras

    old = keras.models.load_model(os.path.join(src.path, "model.keras"), compile=False)
    first = next(layer for layer in model.layers if layer.get_weights())
    for layer in model.layers:
        w = old.get_layer(layer.name).get_weights() if layer.get_weights() else []
        if layer is first:
            kernel = np.zeros(layer.get_weights()[0].shape, np.float32)
            for i, b in enumerate(src.bands):
                kernel[:, :, bands.index(b), :] = w[0][:, :, i, :]
            w = [kernel, *w[1:]]
        if w:
            layer.set_weights(w)


def _best_keeper(run: Path):
    """A Keras callback that keeps the best validation weights and the training seconds in `run`."""
    quiet_tensorflow()
    import keras

    class BestKeeper(keras.callbacks.Callback):
        """Keeps the best validation weights and the training seconds in the run folder, across resumes."""

        def __init__(self, run: Path):
            super().__init__()
            self.run, self.t0 = run, time.time()
            f = run / "best.json"
            self.state = json.loads(f.read_text()) if f.exists() else {"best": -1.0, "best_epoch": 0, "seconds": 0.0}

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.time()

        def on_train_end(self, logs=None):
            self.state["finished"] = True
            (self.run / "best.json").write_text(json.dumps(self.state))

        def on_epoch_end(self, epoch, logs=None):
            self.state["seconds"] += time.time() - self.t0
            acc = float((logs or {}).get("val_accuracy", 0.0))  # no validation data: the last epoch wins
            if acc >= self.state["best"]:
                self.model.save_weights(self.run / ".best.weights.h5")
                os.replace(self.run / ".best.weights.h5", self.run / "best.weights.h5")
                self.state.update(best=acc, best_epoch=epoch + 1)
            (self.run / "best.json").write_text(json.dumps(self.state))

    return BestKeeper(run)


def init_untrained(arch: str, bands: tuple[str, ...], out: str | os.PathLike, name: str, seed: int = 0) -> ModelCard:
    """A seed-initialised, explicitly UNTRAINED model (card says trained: false), for exercising
    the pipeline where no trained weights exist. Its labels mean nothing and outputs say so."""
    quiet_tensorflow()
    import keras

    from .nets import build

    keras.utils.set_random_seed(seed)
    model = build(arch, len(bands))
    n = len(bands)
    return save(model, out, name=name, architecture=model.name, bands=tuple(bands), mean=(1000.0,) * n,
                std=(1000.0,) * n, trained=False, date=date.today().isoformat(),
                training={"data": "none: untrained, seed-initialised weights", "seed": seed})
