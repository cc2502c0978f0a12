"""Keras architectures: SpectrumNet (Senecal et al. 2019) and ResNet50 (keras.applications)."""
from __future__ import annotations

import os
import re

from .. import quiet_tensorflow

quiet_tensorflow()
import keras  # noqa: E402
from keras import layers  # noqa: E402

from ..classes import CLASSES
from .registry import ARCHITECTURES

#: (in, squeeze, expand1x1, expand3x3) of SpectrumNet's eight spectral modules; "pool" = maxpool 2
SPECTRUMNET_MODULES = (
    (96, 32, 64, 64), (128, 32, 64, 64), (128, 64, 128, 128), "pool",
    (256, 64, 128, 128), (256, 96, 192, 192), (384, 96, 192, 192), (384, 128, 256, 256), "pool",
    (512, 128, 256, 256),
)
_SPECTRUMNET_RE = re.compile(r"^spectrumnet(-bn)?(?:-w(0\.\d+|1(?:\.0)?))?$")


def _spectral_module(x, squeeze: int, e1: int, e3: int, name: str, bn: bool):
    def conv(t, f, k, n):
        t = layers.Conv2D(f, k, padding="same", use_bias=not bn, name=f"{name}_{n}")(t)
        if bn:
            t = layers.BatchNormalization(name=f"{name}_{n}_bn")(t)
        return layers.ReLU(name=f"{name}_{n}_relu")(t)

    s = conv(x, squeeze, 1, "squeeze")
    return layers.Concatenate(name=f"{name}_concat")([conv(s, e1, 1, "expand1x1"), conv(s, e3, 3, "expand3x3")])


def spectrumnet(n_bands: int, n_classes: int = len(CLASSES), size: int = 64, bn: bool = False,
                width: float = 1.0) -> keras.Model:
    """SpectrumNet as published: 2x2/2 stem to 96 channels, eight spectral (fire) modules with two
    2x2 max-pools, dropout 0.5, 1x1 conv to the classes, global average pool, softmax.
    `bn=True` gives the 'spectrumnet-bn' variant with batch norm after every conv; `width` scales
    every layer's channels (0.5: a quarter of the multiply-accumulates, 'spectrumnet-bn-w0.5')."""
    def w(c: int) -> int:
        return max(8, int(round(c * width)))

    inp = keras.Input((size, size, n_bands), name="patch")
    x = layers.Conv2D(w(96), 2, strides=2, use_bias=not bn, name="stem")(inp)
    if bn:
        x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    i = 0
    for spec in SPECTRUMNET_MODULES:
        if spec == "pool":
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
            continue
        i += 1
        _, sq, e1, e3 = spec
        x = _spectral_module(x, w(sq), w(e1), w(e3), f"module{i}", bn)
    x = layers.Dropout(0.5, name="dropout")(x)
    x = layers.Conv2D(n_classes, 1, name="classifier")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Softmax(name="probs", dtype="float32")(x)  # float32 under a mixed policy too
    name = "spectrumnet-bn" if bn else "spectrumnet"
    return keras.Model(inp, out, name=name if width == 1.0 else f"{name}-w{width:g}")


def resnet50(n_bands: int, n_classes: int = len(CLASSES), size: int = 64, stem_pool: bool = True) -> keras.Model:
    """ResNet50 backbone + global pool + softmax. ImageNet weights are used for 3-band input only
    when they are already in the local Keras cache (nothing is downloaded); other band counts get
    a first conv sized for the bands (random init). `stem_pool=False` ('resnet50-nomaxpool') drops the
    stem's 3x3/2 max-pool: the same layers and weights, a 4x4 instead of 2x2 last feature map on a
    64x64 patch, about 4 times the multiply-accumulates."""
    home = os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras"))
    cached = os.path.join(home, "models", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    weights = cached if n_bands == 3 and os.path.exists(cached) else None
    base = keras.applications.ResNet50(include_top=False, weights=weights, input_shape=(size, size, n_bands),
                                       pooling="avg")
    if not stem_pool:  # same layer names, so weights move between the two by name
        def clone(layer):
            if layer.name in ("pool1_pad", "pool1_pool"):
                return layers.Identity(name=layer.name)
            return layer.__class__.from_config(layer.get_config())
        weights_in = base.get_weights()
        base = keras.models.clone_model(base, clone_function=clone)
        base.set_weights(weights_in)
    inp = keras.Input((size, size, n_bands), name="patch")
    out = layers.Dense(n_classes, activation="softmax", name="probs", dtype="float32")(base(inp))
    return keras.Model(inp, out, name="resnet50" if stem_pool else "resnet50-nomaxpool")


def build(arch: str, n_bands: int) -> keras.Model:
    """Build an architecture by name: 'spectrumnet', 'spectrumnet-bn', 'spectrumnet-bn-w0.5' (any
    width 'spectrumnet[-bn]-wW' with 0 < W <= 1), 'resnet50' or 'resnet50-nomaxpool'."""
    if arch in ("resnet50", "resnet50-nomaxpool"):
        return resnet50(n_bands, stem_pool=arch == "resnet50")
    m = _SPECTRUMNET_RE.match(arch)
    if m and float(m.group(2) or 1) > 0:
        return spectrumnet(n_bands, bn=bool(m.group(1)), width=float(m.group(2) or 1))
    raise ValueError(f"unknown architecture {arch!r} (choose {', '.join(ARCHITECTURES)})")


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass of one patch (convolutions and dense layers)."""
    total = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, layers.DepthwiseConv2D):
            kh, kw, cin, _ = layer.kernel.shape
            total += layer.output.shape[1] * layer.output.shape[2] * kh * kw * cin
        elif isinstance(layer, layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            total += layer.output.shape[1] * layer.output.shape[2] * kh * kw * cin * cout
        elif isinstance(layer, layers.Dense):
            total += layer.kernel.shape[0] * layer.kernel.shape[1]
    return int(total)
