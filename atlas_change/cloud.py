"""Cloud stage: which pixels of a chunk are cloud or cloud shadow, and which patches that makes
too cloudy to label.

- L2A products with a scene classification layer (SCL): its cloud shadow, cloud and cirrus
  classes (3, 8, 9, 10), at 10 m.
- Inputs with the ten bands of Sentinel Hub's `s2cloudless` (B01, B02, B04, B05, B08, B8A, B09,
  B10, B11, B12: every L1C product): its LightGBM pixel classifier on top-of-atmosphere
  reflectance (DN + offset) / 10000, run at 160 m (16 x 16 means of the 10 m grid, read by GDAL;
  Sentinel Hub's own CLM cloud masks are made at 160 m), probability threshold 0.4, averaged over a
  disk of 4 pixels and dilated by 2 (the settings of the library's README example: 640 m and 320 m
  here). s2cloudless has no shadow class; shadows are the pixels within 1 km of a cloud that are
  dark in the near infrared (B08 < 0.15) yet brighter there than in blue (so not water).
- Anything else (e.g. a 3- or 4-band GeoTIFF, L2A without SCL): no masking, and the caller says so.
A chunk is read with a margin of 1 km so that clouds just outside it still cast their shadow
and smoothing in; everything runs inside the chunk's Dask task, on the same window.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from rasterio.windows import Window

from .read import SCL_CLOUD, SCL_NODATA, Scene, open_scene

#: the bands s2cloudless needs, in its order
CLOUD_BANDS = ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12")
FACTOR = 16  # 10 m pixels per side of a cloud-mask pixel (160 m, as Sentinel Hub runs it)
THRESHOLD, AVERAGE_OVER, DILATION = 0.4, 4, 2
SHADOW_NIR, SHADOW_REACH_M = 0.15, 1000.0
MARGIN_PX = 128  # 10 m pixels of context read around a chunk (a multiple of FACTOR, >= the shadow reach)
#: default largest share of a patch's pixels that may be cloud or shadow before it is left unlabelled
MAX_CLOUD = 0.1


@dataclass(frozen=True)
class CloudMasker:
    """How one scene's clouds are found: `method` 's2cloudless', 'scl' or 'none', with `why`."""

    method: str
    why: str
    scene: Scene | None = None  # the ten s2cloudless bands on the scene's grid

    def record(self, max_cloud: float) -> dict:
        """For run.json."""
        detail = {"s2cloudless": f"s2cloudless {_version()} at {10 * FACTOR} m, threshold {THRESHOLD}, "
                                 f"average_over {AVERAGE_OVER}, dilation_size {DILATION}; shadows: B08 < "
                                 f"{SHADOW_NIR} and B08 > B02 within {SHADOW_REACH_M:g} m of a cloud",
                  "scl": f"SCL classes {', '.join(map(str, SCL_CLOUD))} (cloud shadow, clouds, cirrus)",
                  "none": "not masked"}[self.method]
        return {"masked": self.method != "none", "method": self.method, "detail": detail, "why": self.why,
                "max_cloud": max_cloud}


def plan(scene: Scene, bands: str | None = None, enabled: bool = True) -> CloudMasker:
    """Pick the cloud method for `scene` (opened for its model): SCL where the product has one,
    else s2cloudless where the input holds its ten bands (read with the scene's own offset, not
    decided again), else none (with the reason)."""
    if not enabled:
        return CloudMasker("none", "cloud masking turned off (--no-cloud-mask)")
    if scene.mask is not None:
        return CloudMasker("scl", f"{scene.level or 'the'} product's scene classification layer")
    missing = [b for b in CLOUD_BANDS if b not in scene.available]
    if missing:
        return CloudMasker("none", f"the input lacks {', '.join(missing)} that s2cloudless needs; "
                                   "clouds and their shadows will be labelled as land cover")
    return CloudMasker("s2cloudless", f"{scene.level or 'L1C-like'} input with the ten bands s2cloudless needs",
                       open_scene(scene.path, CLOUD_BANDS, bands, scene.offset))


@functools.cache
def _version() -> str:
    from importlib.metadata import version

    return version("s2cloudless")


@functools.cache
def _detector():
    """One s2cloudless detector per process (its LightGBM model loads on first use)."""
    from s2cloudless import S2PixelCloudDetector

    return S2PixelCloudDetector(threshold=THRESHOLD, average_over=AVERAGE_OVER, dilation_size=DILATION)


def s2cloudless_mask(dn: np.ndarray, offset: float, valid: np.ndarray) -> np.ndarray:
    """(10, h, w) digital numbers of CLOUD_BANDS (at 10 m x FACTOR) -> bool (h, w): cloud or shadow."""
    from scipy import ndimage

    refl = np.maximum(dn.astype(np.float32) + np.float32(offset), 0) / np.float32(10000)
    # the classifier sees only pixels with data (nodata borders can be half a tile), as a 1 x n image
    prob = np.zeros((1,) + valid.shape, np.float32)
    if valid.any():
        pixels = np.ascontiguousarray(refl[:, valid].T)[None, None]
        prob[0][valid] = _detector().get_cloud_probability_maps(pixels, num_threads=1)[0, 0]
    cloud = _detector().get_mask_from_prob(prob)[0].astype(bool) & valid
    if not cloud.any():
        return cloud
    b02, b08 = refl[CLOUD_BANDS.index("B02")], refl[CLOUD_BANDS.index("B08")]
    reach = int(round(SHADOW_REACH_M / (10 * FACTOR)))
    yy, xx = np.mgrid[-reach:reach + 1, -reach:reach + 1]
    near = ndimage.binary_dilation(cloud, structure=(yy ** 2 + xx ** 2) <= reach ** 2)
    shadow = near & valid & (b08 < SHADOW_NIR) & (b08 > b02)
    return cloud | shadow


def chunk_cloud(masker: CloudMasker, main: Scene, window: Window, valid: np.ndarray,
                scl: np.ndarray | None = None) -> tuple[np.ndarray, int] | None:
    """Cloud-or-shadow flags for `window` of the scene: (bool array, 10 m pixels per flag side:
    FACTOR for s2cloudless, 1 for SCL); None when the scene is not masked. With SCL, also marks
    its no-data and saturated pixels invalid in `valid` (the data mask of the window, in place);
    `scl`: the window's SCL where the caller has read it already."""
    if masker.method == "scl":
        scl = main.read_scl(window) if scl is None else scl
        valid &= ~np.isin(scl, SCL_NODATA)
        return np.isin(scl, SCL_CLOUD), 1
    if masker.method != "s2cloudless":
        return None
    s = masker.scene
    m = MARGIN_PX
    c0, r0 = max(0, int(window.col_off) - m), max(0, int(window.row_off) - m)
    c1 = min(s.width // FACTOR * FACTOR, int(window.col_off + window.width) + m)
    r1 = min(s.height // FACTOR * FACTOR, int(window.row_off + window.height) + m)
    dn, has_data = s.read(Window(c0, r0, c1 - c0, r1 - r0), raw=True, factor=FACTOR)
    flags = s2cloudless_mask(dn, s.offset, has_data)
    # back onto the chunk's window: rows/cols of flags that cover it (the window starts on a multiple of 64)
    top, left = (int(window.row_off) - r0) // FACTOR, (int(window.col_off) - c0) // FACTOR
    h, w = -(-int(window.height) // FACTOR), -(-int(window.width) // FACTOR)
    out = np.zeros((h, w), bool)
    part = flags[top:top + h, left:left + w]
    out[:part.shape[0], :part.shape[1]] = part
    return out, FACTOR


def patch_cloud_fraction(flags: np.ndarray, px: int, stride: int, patch: int, shape: tuple[int, int]) -> np.ndarray:
    """Share of each patch (rows, cols = `shape`) covered by cloud flags of `px` x `px` pixels."""
    k, s = patch // px, max(1, stride // px)
    win = sliding_window_view(flags, (k, k))[::s, ::s]
    frac = win.mean(axis=(-2, -1))
    out = np.zeros(shape, np.float32)
    out[:min(shape[0], frac.shape[0]), :min(shape[1], frac.shape[1])] = frac[:shape[0], :shape[1]]
    return out
