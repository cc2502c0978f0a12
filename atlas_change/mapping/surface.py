"""Surface stage: what the bands the RGB model never sees say about each patch: open water and snow.

- Water, per pixel: NDWI = (B03 - B08) / (B03 + B08) > 0 (McFeeters 1996, Int. J. Remote Sensing 17:
  1425), and where the input has B11 also MNDWI = (B03 - B11) / (B03 + B11) > 0 (Xu 2006, Int. J.
  Remote Sensing 27: 3025), which keeps built-up land out; or dark water, which both indices miss
  (humic boreal lakes are darker in green than in NIR): B08 and B11 below DARK_WATER reflectance,
  a threshold measured here, not taken from the literature (the lake of BigEarthNet L2A patch 69_24:
  B08 0.014, B11 0.011, NDWI -0.18; its conifer forest: 0.20, 0.10). The water classes River and
  SeaLake are given only to patches with at least MIN_WATER of water pixels, and a patch more than
  MOSTLY_WATER water gets one of them, never a land class.
- Snow and ice, per pixel: the L2A scene classification's class 11 where the product has an SCL,
  else NDSI = (B03 - B11) / (B03 + B11) > 0.4 with B08 > 0.11 and B03 > 0.10 reflectance (Hall,
  Riggs & Salomonson 1995, Remote Sens. Environ. 54: 127: the MODIS SNOMAP tests, which Sen2Cor's
  snow detection also starts from). A patch with more than --max-cloud snow is not labelled (snow
  is no EuroSAT class), like a cloudy one: nodata in the maps, 3 in cloud.tif, snow hectares in
  run.json and compare, never change.
Reflectance = (DN + offset) / 10000, on L1C (top of atmosphere) and L2A (surface) alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from ..classes import CLASSES
from ..read import Scene

NDWI_MIN, MNDWI_MIN = 0.0, 0.0
DARK_WATER = 0.04  # B08 and B11 reflectance below it: open water (see above)
NDSI_MIN, SNOW_NIR_MIN, SNOW_GREEN_MIN = 0.4, 0.11, 0.10
SCL_SNOW = 11
MIN_WATER = 0.01  # share of a patch's pixels: below it, no River / SeaLake
MOSTLY_WATER = 0.5  # above it, only River / SeaLake
WATER_CLASSES = tuple(CLASSES.index(c) for c in ("River", "SeaLake"))
#: the bands the tests read besides the model's own
BANDS = ("B03", "B08", "B11")


@dataclass(frozen=True)
class SurfacePlan:
    """Which tests one scene gets: `water` and `snow` each 'off' or how ('ndwi+mndwi', 'scl', ...),
    and the scene's BANDS that they read (on the scene's grid)."""

    water: str
    snow: str
    scene: Scene | None = None

    def record(self) -> dict:
        """For run.json: the tests and their thresholds, with their sources."""
        water = {"ndwi": f"NDWI (B03, B08) > {NDWI_MIN} (McFeeters 1996), or B08 < {DARK_WATER} (dark water)",
                 "ndwi+mndwi": f"NDWI (B03, B08) > {NDWI_MIN} (McFeeters 1996) and MNDWI (B03, B11) > {MNDWI_MIN} "
                               f"(Xu 2006), or B08 and B11 < {DARK_WATER} (dark water)", "off": "not tested"}[self.water]
        snow = {"scl": f"SCL class {SCL_SNOW} (snow or ice)",
                "ndsi": f"NDSI (B03, B11) > {NDSI_MIN}, B08 > {SNOW_NIR_MIN}, B03 > {SNOW_GREEN_MIN} reflectance "
                        "(Hall et al. 1995)", "off": "not tested"}[self.snow]
        if self.water == self.snow == "off":
            return {"water": "not tested", "snow": "not tested", "water_rule": "none", "snow_rule": "none"}
        return {"water": water, "water_rule": f"River/SeaLake only where >= {MIN_WATER:.0%} of a patch is water; "
                f"a patch > {MOSTLY_WATER:.0%} water is River or SeaLake" if self.water != "off" else "none",
                "snow": snow, "snow_rule": "a patch with more than max_cloud snow is not labelled"
                if self.snow != "off" else "none"}


OFF = SurfacePlan("off", "off")


def plan(scene: Scene) -> SurfacePlan:
    """The tests the input's bands allow (`scene` as opened for its model: its bands are selected
    from it, with its offset and crop, so that the tests read the same digital numbers)."""
    have = set(scene.available)
    water = "off" if not {"B03", "B08"} <= have else "ndwi+mndwi" if "B11" in have else "ndwi"
    snow = "scl" if scene.mask is not None else "ndsi" if {"B03", "B08", "B11"} <= have else "off"
    need = tuple(b for b in BANDS if b in have)
    if water == "off" and snow != "ndsi":
        need = ()
    return SurfacePlan(water, snow, scene.select(need) if need else None)


def chunk_flags(p: SurfacePlan, main: Scene, window: Window, block: np.ndarray | None = None,
                scl: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(water, snow) per pixel of `window` of the scene; None when neither test runs. `block`: the
    window's raw digital numbers of `main`'s bands where the caller has read them already (the
    tests take the bands it holds from it and read only the others); `scl`: likewise the SCL."""
    if p.water == "off" and p.snow == "off":
        return None
    refl = {}
    if p.scene is not None:
        held = {b: i for i, b in enumerate(main.bands)} if block is not None else {}
        refl = {b: reflectance(block[held[b]], main.offset) for b in p.scene.bands if b in held}
        rest = tuple(b for b in p.scene.bands if b not in held)
        if rest:
            dn, _ = p.scene.select(rest).read(window, scl=False)  # offset applied
            refl |= {b: dn[i] / np.float32(10000) for i, b in enumerate(rest)}
    if p.snow == "scl" and scl is None:
        scl = main.read_scl(window)
    return pixel_flags(p, refl, scl if p.snow == "scl" else None)


def reflectance(dn: np.ndarray, offset: float) -> np.ndarray:
    """Raw digital numbers (any shape) -> reflectance, (DN + offset) / 10000, negative results 0 (as
    Scene.read applies the offset)."""
    return np.maximum(dn.astype(np.float32) + np.float32(offset), 0) / np.float32(10000)


def missing(p: SurfacePlan) -> str | None:
    """What the user is told when a test cannot run (None when both run)."""
    parts = [f"{what} not tested (needs {need})" for what, on, need in
             (("water", p.water, "B03 and B08"), ("snow", p.snow, "B03, B08 and B11, or an L2A SCL")) if on == "off"]
    return "; ".join(parts) or None


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a - b) / (a + b), 0 where both are 0 (NDWI, MNDWI, NDSI, NDVI)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a + b > 0, (a - b) / (a + b), 0.0)


def ndsi_snow(green: np.ndarray, nir: np.ndarray, swir: np.ndarray) -> np.ndarray:
    """Snow by the NDSI test of Hall et al. 1995 (reflectances of B03, B08, B11)."""
    return (normalized_difference(green, swir) > NDSI_MIN) & (nir > SNOW_NIR_MIN) & (green > SNOW_GREEN_MIN)


def pixel_flags(p: SurfacePlan, refl: dict[str, np.ndarray], scl: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Reflectance of BANDS (those present) -> (water, snow) bool arrays, per pixel."""
    shape = next(iter(refl.values())).shape if refl else scl.shape
    water = np.zeros(shape, bool)
    snow = np.zeros(shape, bool)
    if p.snow == "scl":
        snow = scl == SCL_SNOW
    elif p.snow == "ndsi":
        snow = ndsi_snow(refl["B03"], refl["B08"], refl["B11"])
    if p.water != "off":
        water = normalized_difference(refl["B03"], refl["B08"]) > NDWI_MIN
        dark = refl["B08"] < DARK_WATER
        if p.water == "ndwi+mndwi":
            water &= normalized_difference(refl["B03"], refl["B11"]) > MNDWI_MIN
            dark &= refl["B11"] < DARK_WATER
        water = (water | dark) & ~snow
    return water, snow


def water_rule(probs: np.ndarray, water_share: np.ndarray) -> np.ndarray:
    """(n, 10) class probabilities and each patch's share of water pixels -> probabilities with River
    and SeaLake removed where the patch holds (almost) no water, and the land classes removed where
    it is mostly water; renormalised (a patch whose only classes are removed keeps its own)."""
    out = probs.copy()
    land = np.ones(probs.shape[1], bool)
    land[list(WATER_CLASSES)] = False
    dry = water_share < MIN_WATER
    wet = water_share > MOSTLY_WATER
    out[np.ix_(dry, ~land)] = 0
    out[np.ix_(wet, land)] = 0
    total = out.sum(axis=1, keepdims=True)
    return np.where(total > 0, out / np.maximum(total, 1e-12), probs).astype(np.float32)
