"""Water and snow from the bands the RGB model never sees (atlas_change.mapping.surface): per-pixel tests,
the water rule on class probabilities, and both through classify on a scene with a lake and snow."""
import json

import numpy as np
import pytest
import rasterio

from atlas_change.mapping import surface
from atlas_change.bands import EUROSAT_ORDER
from atlas_change.classes import CLASSES
from atlas_change.synth import make_scene
from conftest import run_classify

RIVER, SEALAKE = CLASSES.index("River"), CLASSES.index("SeaLake")


def test_pixel_tests_water_dark_water_and_snow():
    # reflectance of: clear water, dark (humic) lake, forest, bright field, fresh snow
    refl = {"B03": np.array([0.06, 0.0105, 0.04, 0.10, 0.80]), "B08": np.array([0.02, 0.0144, 0.25, 0.30, 0.75]),
            "B11": np.array([0.01, 0.0114, 0.12, 0.25, 0.05])}
    water, snow = surface.pixel_flags(surface.SurfacePlan("ndwi+mndwi", "ndsi"), refl, None)
    assert water.tolist() == [True, True, False, False, False]
    assert snow.tolist() == [False, False, False, False, True]
    # an L2A SCL decides snow where there is one
    water, snow = surface.pixel_flags(surface.SurfacePlan("ndwi+mndwi", "scl"), refl, np.array([6, 6, 4, 5, 11]))
    assert snow.tolist() == [False, False, False, False, True] and water.tolist()[:2] == [True, True]


def test_water_rule():
    p = np.full((3, 10), 0.01, np.float32)
    p[:, RIVER] = 0.91  # every patch "River" at 0.91
    out = surface.water_rule(p, np.array([0.0, 0.2, 0.9]))
    np.testing.assert_allclose(out.sum(axis=1), 1, atol=1e-6)
    assert out[0, RIVER] == 0 and out[0, SEALAKE] == 0  # no water: no River
    np.testing.assert_allclose(out[1], p[1] / p[1].sum(), atol=1e-6)  # some water: as the model said
    assert out[2, RIVER] == pytest.approx(0.91 / 0.92) and out[2, :RIVER].sum() == 0  # mostly water: water classes only


def lake_and_snow(tmp_path) -> str:
    """A 256 x 256 scene: left half a lake (B03 > B08, dark NIR / SWIR), top right land, bottom right snow."""
    path = make_scene(tmp_path / "base.tif", 256, 256, seed=3)
    with rasterio.open(path) as src:
        dn, profile, names = src.read(), src.profile, src.descriptions
    i = {b: EUROSAT_ORDER.index(b) for b in EUROSAT_ORDER}
    land = (slice(None), slice(0, 128), slice(128, 256))
    dn[land] = 600  # vegetation: bright in NIR and SWIR
    dn[(i["B08"],) + land[1:]] = 3000
    dn[(i["B11"],) + land[1:]] = 1500
    dn[:, :, :128] = 150  # water: dark everywhere ...
    dn[i["B03"], :, :128] = 500  # ... but brighter in green than in NIR
    snow = (slice(None), slice(128, 256), slice(128, 256))
    dn[snow] = 7000
    dn[(i["B11"],) + snow[1:]] = 900
    dn[(i["B12"],) + snow[1:]] = 700
    with rasterio.open(tmp_path / "s.tif", "w", **profile) as dst:
        dst.write(dn)
        dst.descriptions = names
    return str(tmp_path / "s.tif")


@pytest.mark.parametrize("model_bands", [("B04", "B03", "B02"), EUROSAT_ORDER])
def test_chunk_flags_take_the_bands_the_model_read(tmp_path, model_bands):
    """The tests' bands taken from the block the model's read returned (what classify does: B03, and
    all of them for a 13-band model, are not read twice) give the flags of a read of their own, with
    a baseline offset too."""
    from rasterio.windows import Window

    from atlas_change.read import open_scene

    path = lake_and_snow(tmp_path)
    with rasterio.open(path, "r+") as dst:  # with the offset applied: a strip of land dark water, one of snow not snow
        for b in ("B08", "B11"):
            dst.write(np.full((32, 128), 700, np.uint16), EUROSAT_ORDER.index(b) + 1, window=Window(128, 96, 128, 32))
        dst.write(np.full((32, 128), 1900, np.uint16), EUROSAT_ORDER.index("B03") + 1, window=Window(128, 160, 128, 32))
    scene = open_scene(path, model_bands, offset=-1000.0)
    plan = surface.plan(scene)
    window = Window(64, 64, 192, 128)
    block, _ = scene.read(window, raw=True, scl=False)
    own = surface.chunk_flags(plan, scene, window)
    shared = surface.chunk_flags(plan, scene, window, block)
    either = own[0] | own[1]
    assert own[0][32:64, 64:].all() and own[1][64:96, 64:].all()  # dark water, snow
    assert not either[:32, 64:].any() and not either[96:, 64:].any()  # land, the snow's strip too
    np.testing.assert_array_equal(own[0], shared[0])
    np.testing.assert_array_equal(own[1], shared[1])


def test_lake_and_snow_through_classify(tmp_path, model13):
    """The lake, land and snow scene through classify."""
    lake_and_snow(tmp_path)
    ds = run_classify(tmp_path / "s.tif", model13, out=tmp_path / "o", tta=1, cloud_mask=False)
    lulc = ds["lulc"].values
    assert set(np.unique(lulc[:, :2]).tolist()) <= {RIVER + 1, SEALAKE + 1}  # the lake: water classes only
    assert not np.isin(lulc[:2, 2:], [RIVER + 1, SEALAKE + 1]).any() and (lulc[:2, 2:] > 0).all()  # dry land
    assert (lulc[2:, 2:] == 0).all() and ds["snow"].values[2:, 2:].all()  # snow: not labelled
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["counts"]["skipped_snow"] == 4 and run["counts"]["snow_ha"] == pytest.approx(4 * 40.96)
    assert "McFeeters 1996" in run["surface"]["water"] and "Hall et al. 1995" in run["surface"]["snow"]
    with rasterio.open(tmp_path / "o" / "cloud.tif") as src:
        assert src.read(1).tolist() == [[1, 1, 1, 1]] * 2 + [[1, 1, 3, 3]] * 2


def test_snow_is_never_change_and_is_reported(tmp_path):
    """The same fields on two dates, the second half under snow: compare counts snow hectares, no change."""
    from affine import Affine
    from rasterio.crs import CRS

    from atlas_change.outputs import build_dataset, write_outputs
    from atlas_change.change.compare import compare
    from test_compare import CELL, X0, Y0, aoi_file

    crs, t = CRS.from_epsg(32632), Affine(CELL, 0, X0, 0, -CELL, Y0)
    for name, snowy in (("d1", False), ("d2", True)):
        probs = np.full((10, 10, 10), 0.01, np.float32)
        probs[..., 0] = 0.91  # AnnualCrop
        has = np.ones((10, 10), bool)
        snow = np.zeros((10, 10), bool)
        if snowy:
            has[:, 5:] = False
            snow[:, 5:] = True
        ds = build_dataset(probs, has, t, crs, {"model": "m", "weights_sha256": "a" * 64}, None, snow)
        run = {"input": {"path": f"/data/{name}.tif", "date": "2023-06-01" if name == "d1" else "2024-01-15"},
               "model": {"model": "m", "weights_sha256": "a" * 64}}
        write_outputs(ds, run, tmp_path / name)
    s = compare(tmp_path / "d1", tmp_path / "d2", aoi=str(aoi_file(tmp_path / "aoi.geojson", 0, 10, 0, 10)),
                out=tmp_path / "cmp")
    assert s["changed_ha"] == 0 and s["snow_ha"] == s["snow_after_ha"] == pytest.approx(50 * 40.96)
    assert s["snow_before_ha"] == 0 and s["nodata_ha"] == 0 and s["valid_ha"] == pytest.approx(50 * 40.96)
