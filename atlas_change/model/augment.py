"""Training augmentation of EuroSAT RGB JPEG patches (R, G, B grey levels = B04, B03, B02 of L1C DN
through v = DN * 255 / 2750): geometry, and radiometry towards what real inputs look like (L2A)."""
from __future__ import annotations

import numpy as np

#: grey levels per DN of the EuroSAT JPEGs (train.JPEG_RADIOMETRY["scale"], measured on the 270 twins)
JPEG_PER_DN = 255 / 2750
#: additive haze per JPEG channel (R, G, B) at strength 1: the median L1C - L2A difference of
#: B04/B03/B02 seen between EuroSAT L1C and BigEarthNet L2A patches (~150 / 270 / 600 DN)
HAZE_RGB = (14.0, 25.0, 55.0)
#: L2A = a * L1C + b (DN) per band, R, G, B: least squares over every pixel of the real L1C and L2A
#: product of one acquisition (SSL4EO-S12, T43RCP, 2020-06-04; ../shared/scenes/ssl4eo-s12-l1c-l2a-pair):
#: L2A has more contrast about a bright fixed point, most in blue
L2A_FIT = {"B04": (1.353, -497.9), "B03": (1.559, -876.6), "B02": (1.689, -1345.1)}
STANDARD = ("flips, 90-degree rotations; with p=0.8 radiometric: contrast x U(0.8, 1.2) about the "
            "patch mean, gain x U(0.8, 1.3) (x U(0.95, 1.05) per channel), haze t * (14, 25, 55) grey "
            "levels on R, G, B with t ~ U(-1.2, 0.5) (negative = L2A-like, darker and less blue), clip 0..255")
L2A = (STANDARD + "; before it, with p=0.5, L1C -> L2A: v = v + s * ((a - 1) v + b) per channel "
       "with (a, b) the least-squares L2A = a * L1C + b of the real SSL4EO-S12 L1C/L2A pair ("
       + "; ".join(f"{c} {a}, {b}{' DN' if c == 'R' else ''}" for c, (a, b) in zip("RGB", L2A_FIT.values()))
       + "; b in grey levels = b * 255 / 2750), s ~ U(0, 1.2); "
       "after it, with p=0.5, seasonal colour: saturation x U(0.6, 1.5), hue +- 0.03")
#: `train --augment` choices and what each does, as written into the model card
AUGMENTATIONS = {"standard": STANDARD, "l2a": L2A}


def l2a_fit_rgb() -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of L2A_FIT on the JPEG scale, R, G, B: v_L2A = a * v_L1C + b."""
    a, b = np.array(list(L2A_FIT.values())).T
    return a.astype(np.float32), (b * JPEG_PER_DN).astype(np.float32)


def to_l2a(x, strength, a, b):
    """x moved `strength` of the way (1 = all) along the fitted L1C -> L2A change (numpy or TF)."""
    return x + strength * ((a - 1.0) * x + b)


def augment(tf, x, y, radiometric: bool, kind: str = "standard", translate: int = 0):
    """Flips and 90-degree rotations (after a random shift of up to `translate` px, the patch's edge
    reflected into the gap); for JPEG-scale RGB also contrast, gain and haze (STANDARD), and
    with kind 'l2a' the L1C -> L2A change of a real product pair and seasonal colour (L2A)."""
    if translate:
        t = int(translate)
        x = tf.image.random_crop(tf.pad(x, [[t, t], [t, t], [0, 0]], mode="REFLECT"), tf.shape(x))
    x = tf.image.random_flip_left_right(x)
    x = tf.image.random_flip_up_down(x)
    x = tf.image.rot90(x, tf.random.uniform((), 0, 4, dtype=tf.int32))
    if not radiometric:
        return x, y
    u = tf.random.uniform
    l2a = kind == "l2a"
    if l2a:
        z = to_l2a(x, u((), 0.0, 1.2), *(tf.constant(c) for c in l2a_fit_rgb()))
        x = tf.where(u(()) < 0.5, tf.clip_by_value(z, 0.0, 255.0), x)
    m = tf.reduce_mean(x, axis=(0, 1), keepdims=True)
    z = (x - m) * u((), 0.8, 1.2) + m
    z = z * u((), 0.8, 1.3) * u((1, 1, 3), 0.95, 1.05) + u((), -1.2, 0.5) * tf.constant(HAZE_RGB)
    x = tf.where(u(()) < 0.8, tf.clip_by_value(z, 0.0, 255.0), x)
    if l2a:
        z = tf.image.adjust_hue(tf.image.adjust_saturation(x / 255.0, u((), 0.6, 1.5)), u((), -0.03, 0.03))
        x = tf.where(u(()) < 0.5, tf.clip_by_value(z * 255.0, 0.0, 255.0), x)
    return x, y


#: `train --mix` choices: how pairs of training patches are mixed within a batch
MIXES = ("cutmix", "mixup", "none")


def mix_batch(tf, x, y, kind: str = "cutmix", p: float = 0.5, alpha: float = 0.2):
    """With probability `p`, mix a batch (x: (n, h, w, c), y: one-hot (n, k)) with itself reversed:
    'cutmix' (Yun et al. 2019) pastes a box of area 1 - lam, lam ~ U(0, 1), from the partner patch;
    'mixup' (Zhang et al. 2018) blends the two with lam ~ Beta(alpha, alpha). The labels are mixed
    in the proportions of the pixels (cutmix) or weights (mixup) actually used."""
    if kind == "none" or p <= 0:
        return x, y
    u = tf.random.uniform
    x2, y2 = tf.reverse(x, [0]), tf.reverse(y, [0])
    if kind == "mixup":
        g1, g2 = tf.random.gamma((), alpha), tf.random.gamma((), alpha)
        lam = g1 / (g1 + g2)
        xm, share = lam * x + (1 - lam) * x2, 1 - lam
    else:
        h, w = tf.shape(x)[1], tf.shape(x)[2]
        cut = tf.sqrt(1.0 - u(()))
        ch, cw = tf.cast(cut * tf.cast(h, tf.float32), tf.int32), tf.cast(cut * tf.cast(w, tf.float32), tf.int32)
        cy, cx = u((), 0, h, dtype=tf.int32), u((), 0, w, dtype=tf.int32)
        y0, y1 = tf.maximum(cy - ch // 2, 0), tf.minimum(cy + ch // 2, h)
        x0, x1 = tf.maximum(cx - cw // 2, 0), tf.minimum(cx + cw // 2, w)
        rows, cols = tf.range(h)[:, None], tf.range(w)[None, :]
        box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
        xm = tf.where(box[None, :, :, None], x2, x)
        share = tf.cast((y1 - y0) * (x1 - x0), tf.float32) / tf.cast(h * w, tf.float32)
    ym = (1 - share) * y + share * y2
    use = u(()) < p
    return tf.where(use, xm, x), tf.where(use, ym, y)
