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
- Inputs without SCL nor B10 but with B02, B03, B04, B08, B11, B12 (L2A band folders such as Major
  TOM's, STAC Items without an SCL asset): Fmask's potential-cloud-pixel tests without the thermal
  band (Zhu & Woodcock 2012, Remote Sensing of Environment 118: 83-94, eqs. 1-3 and the NIR/SWIR1
  ratio): B12 > 0.03, NDSI < 0.8, NDVI < 0.8, whiteness < 0.7, HOT = B02 - 0.5 B04 - 0.08 > 0,
  B08 / B11 > 0.75, on the same 160 m block means, snow (surface.py's NDSI test) excluded, dilated
  by DILATION; shadows as above. It errs towards cloud over bright roofs (an unlabelled cell, never
  a false label).
- Anything else (e.g. a 3- or 4-band GeoTIFF): no masking, and the caller says so.
s2cloudless and the spectral test decide at 160 m, so they run once per scene (or AOI window), before
the patch work: one pass over the 160 m block means of the whole scene, read by GDAL in strips on
every core (from overviews where the file has them), so that clouds anywhere cast their shadow and
smoothing on the whole scene; each chunk's Dask task then takes its part of those flags. The SCL is
read per chunk at 10 m.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from rasterio.windows import Window

from ..read import SCL_CLOUD, SCL_NODATA, Scene
from .surface import reflectance

#: the bands s2cloudless needs, in its order
CLOUD_BANDS = ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12")
#: the bands of the spectral (Fmask, no thermal) test, in this order
SPECTRAL_BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")
FMASK_SWIR2, FMASK_NDSI, FMASK_NDVI, FMASK_WHITENESS, FMASK_HOT, FMASK_NIR_SWIR = 0.03, 0.8, 0.8, 0.7, 0.08, 0.75
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
    scene: Scene | None = None  # the bands of the method (CLOUD_BANDS or SPECTRAL_BANDS) on the scene's grid
    flags: np.ndarray | None = None  # the scene's cloud-or-shadow flags at 160 m, once `scene_flags` ran

    def with_scene_flags(self, threads: int | None = None) -> "CloudMasker":
        """This masker with the whole scene's 160 m flags computed (s2cloudless, spectral; others as they are)."""
        if self.method not in ("s2cloudless", "spectral") or self.flags is not None:
            return self
        return dataclasses.replace(self, flags=scene_flags(self, threads))

    def record(self, max_cloud: float) -> dict:
        """For run.json."""
        detail = {"s2cloudless": f"s2cloudless {_version()} at {10 * FACTOR} m, threshold {THRESHOLD}, "
                                 f"average_over {AVERAGE_OVER}, dilation_size {DILATION}; shadows: B08 < "
                                 f"{SHADOW_NIR} and B08 > B02 within {SHADOW_REACH_M:g} m of a cloud",
                  "spectral": f"Fmask potential cloud pixels without thermal (Zhu & Woodcock 2012) at "
                              f"{10 * FACTOR} m: B12 > {FMASK_SWIR2}, NDSI < {FMASK_NDSI}, NDVI < {FMASK_NDVI}, "
                              f"whiteness < {FMASK_WHITENESS}, B02 - 0.5 B04 - {FMASK_HOT} > 0, B08/B11 > "
                              f"{FMASK_NIR_SWIR}, not snow, dilation_size {DILATION}; shadows: B08 < {SHADOW_NIR} "
                              f"and B08 > B02 within {SHADOW_REACH_M:g} m of a cloud",
                  "scl": f"SCL classes {', '.join(map(str, SCL_CLOUD))} (cloud shadow, clouds, cirrus)",
                  "none": "not masked"}[self.method]
        return {"masked": self.method != "none", "method": self.method, "detail": detail, "why": self.why,
                "max_cloud": max_cloud}


def plan(scene: Scene, enabled: bool = True) -> CloudMasker:
    """Pick the cloud method for `scene` (opened for its model): SCL where the product has one,
    else s2cloudless where the input holds its ten bands, else the spectral test where it holds
    SPECTRAL_BANDS (selected from the scene as opened: its offset, its crop), else none (with
    the reason)."""
    if not enabled:
        return CloudMasker("none", "cloud masking turned off (--no-cloud-mask)")
    if scene.mask is not None:
        return CloudMasker("scl", f"{scene.level or 'the'} product's scene classification layer")
    missing = [b for b in CLOUD_BANDS if b not in scene.available]
    if not missing:
        return CloudMasker("s2cloudless", f"{scene.level or 'L1C-like'} input with the ten bands s2cloudless needs",
                           scene.select(CLOUD_BANDS))
    lacking = [b for b in SPECTRAL_BANDS if b not in scene.available]
    if not lacking:
        return CloudMasker("spectral", f"{scene.level or 'the'} input has no SCL and lacks {', '.join(missing)} "
                                       "that s2cloudless needs: Fmask's spectral tests instead",
                           scene.select(SPECTRAL_BANDS))
    return CloudMasker("none", f"the input lacks {', '.join(missing)} that s2cloudless needs, has no SCL, and "
                               f"lacks {', '.join(lacking)} of the spectral test; clouds and their shadows "
                               "will be labelled as land cover")


@functools.cache
def _version() -> str:
    from importlib.metadata import version

    return version("s2cloudless")


@functools.cache
def _detector():
    """One s2cloudless detector per process (its LightGBM model loads on first use)."""
    from s2cloudless import S2PixelCloudDetector

    return S2PixelCloudDetector(threshold=THRESHOLD, average_over=AVERAGE_OVER, dilation_size=DILATION)


def s2cloudless_mask(dn: np.ndarray, offset: float, valid: np.ndarray, threads: int = 1) -> np.ndarray:
    """(10, h, w) digital numbers of CLOUD_BANDS (at 10 m x FACTOR) -> bool (h, w): cloud or shadow."""
    refl = reflectance(dn, offset)
    # the classifier sees only pixels with data (nodata borders can be half a tile), as a 1 x n image
    prob = np.zeros((1,) + valid.shape, np.float32)
    if valid.any():
        pixels = np.ascontiguousarray(refl[:, valid].T)[None, None]
        prob[0][valid] = _detector().get_cloud_probability_maps(pixels, num_threads=threads)[0, 0]
    cloud = _detector().get_mask_from_prob(prob)[0].astype(bool) & valid
    return cloud | _shadow(cloud, valid, refl[CLOUD_BANDS.index("B02")], refl[CLOUD_BANDS.index("B08")])


def spectral_mask(dn: np.ndarray, offset: float, valid: np.ndarray, threads: int = 1) -> np.ndarray:
    """(6, h, w) digital numbers of SPECTRAL_BANDS -> bool (h, w): cloud (Fmask's potential cloud
    pixels without thermal, not snow, dilated) or shadow."""
    from scipy import ndimage

    from .surface import ndsi_snow, normalized_difference

    b02, b03, b04, b08, b11, b12 = reflectance(dn, offset)
    mean = (b02 + b03 + b04) / 3
    with np.errstate(divide="ignore", invalid="ignore"):
        whiteness = (abs(b02 - mean) + abs(b03 - mean) + abs(b04 - mean)) / mean
    cloud = ((b12 > FMASK_SWIR2) & (normalized_difference(b03, b11) < FMASK_NDSI)
             & (normalized_difference(b08, b04) < FMASK_NDVI) & (whiteness < FMASK_WHITENESS)
             & (b02 - 0.5 * b04 - FMASK_HOT > 0) & (b08 > FMASK_NIR_SWIR * b11))
    cloud &= valid & ~ndsi_snow(b03, b08, b11)
    if cloud.any() and DILATION:
        yy, xx = np.mgrid[-DILATION:DILATION + 1, -DILATION:DILATION + 1]
        cloud = ndimage.binary_dilation(cloud, structure=(yy ** 2 + xx ** 2) <= DILATION ** 2) & valid
    return cloud | _shadow(cloud, valid, b02, b08)


def _shadow(cloud: np.ndarray, valid: np.ndarray, b02: np.ndarray, b08: np.ndarray) -> np.ndarray:
    """Cloud shadow: pixels within SHADOW_REACH_M of a cloud, dark in NIR yet brighter there than
    in blue (so not water); reflectances on the FACTOR grid."""
    from scipy import ndimage

    if not cloud.any():
        return cloud
    reach = int(round(SHADOW_REACH_M / (10 * FACTOR)))
    yy, xx = np.mgrid[-reach:reach + 1, -reach:reach + 1]
    near = ndimage.binary_dilation(cloud, structure=(yy ** 2 + xx ** 2) <= reach ** 2)
    return near & valid & (b08 < SHADOW_NIR) & (b08 > b02)


#: rows of 10 m pixels per strip of the scene-wide read (a multiple of FACTOR)
STRIP_PX = 1024


def scene_flags(masker: CloudMasker, threads: int | None = None) -> np.ndarray:
    """Cloud-or-shadow flags of the masker's whole scene at 160 m (rows, cols = its size // FACTOR):
    the block means of its bands read in strips on `threads` threads (default: every core), then the
    method over the whole, so that flags near a chunk's edge see all their context."""
    s = masker.scene
    h, w = s.height // FACTOR * FACTOR, s.width // FACTOR * FACTOR
    if h == 0 or w == 0:
        return np.zeros((s.height // FACTOR, s.width // FACTOR), bool)
    threads = threads or os.cpu_count() or 1
    strips = [Window(0, r, w, min(STRIP_PX, h - r)) for r in range(0, h, STRIP_PX)]
    with ThreadPoolExecutor(threads) as pool:
        parts = list(pool.map(lambda win: s.read(win, raw=True, factor=FACTOR), strips))
    dn = np.concatenate([p[0] for p in parts], axis=1)
    has_data = np.concatenate([p[1] for p in parts], axis=0)
    return (s2cloudless_mask if masker.method == "s2cloudless" else spectral_mask)(dn, s.offset, has_data, threads)


def window_flags(flags: np.ndarray, window: Window) -> np.ndarray:
    """The scene's 160 m flags on `window`'s own FACTOR grid (windows of the edge patches need not
    start on a multiple of FACTOR): each of the window's flag pixels takes the scene flag under its
    centre; False past the scene's last whole flag."""
    def index(off, n, size):
        i = (int(off) + FACTOR * np.arange(-(-int(n) // FACTOR)) + FACTOR // 2) // FACTOR
        return np.minimum(i, max(size - 1, 0)), i < size

    (rows, r_ok), (cols, c_ok) = index(window.row_off, window.height, flags.shape[0]), index(
        window.col_off, window.width, flags.shape[1])
    if not flags.size:
        return np.zeros((len(rows), len(cols)), bool)
    return flags[np.ix_(rows, cols)] & r_ok[:, None] & c_ok[None, :]


def chunk_cloud(masker: CloudMasker, main: Scene, window: Window, valid: np.ndarray,
                scl: np.ndarray | None = None) -> tuple[np.ndarray, int] | None:
    """Cloud-or-shadow flags for `window` of the scene: (bool array, 10 m pixels per flag side:
    FACTOR for s2cloudless and the spectral test, 1 for SCL); None when the scene is not masked. With SCL, also marks
    its no-data and saturated pixels invalid in `valid` (the data mask of the window, in place);
    `scl`: the window's SCL where the caller has read it already."""
    if masker.method == "scl":
        scl = main.read_scl(window) if scl is None else scl
        valid &= ~np.isin(scl, SCL_NODATA)
        return np.isin(scl, SCL_CLOUD), 1
    if masker.method not in ("s2cloudless", "spectral"):
        return None
    if masker.flags is not None:  # the scene's flags, computed once: this window's part of them
        return window_flags(masker.flags, window), FACTOR
    s = masker.scene
    m = MARGIN_PX
    c0, r0 = max(0, int(window.col_off) - m), max(0, int(window.row_off) - m)
    c1 = min(s.width // FACTOR * FACTOR, int(window.col_off + window.width) + m)
    r1 = min(s.height // FACTOR * FACTOR, int(window.row_off + window.height) + m)
    dn, has_data = s.read(Window(c0, r0, c1 - c0, r1 - r0), raw=True, factor=FACTOR)
    flags = (s2cloudless_mask if masker.method == "s2cloudless" else spectral_mask)(dn, s.offset, has_data)
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
