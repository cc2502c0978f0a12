"""SAFE products (folder and .zip, L2A and L1C) with small JP2s written by rasterio."""
import zipfile

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from atlas_change.bands import EUROSAT_ORDER, L2A_ORDER, RESOLUTION_M
from atlas_change.errors import AtlasError
from atlas_change.read import open_scene
from conftest import run_classify

X0, Y0 = 399960.0, 5000040.0
SIZE_10M = 384  # 3.84 km: 64 px at 60 m


def _mtd(level: str, offset: int | None) -> str:
    tag = "BOA_ADD_OFFSET" if level == "L2A" else "RADIO_ADD_OFFSET"
    offs = "".join(f'<{tag} band_id="{i}">{offset}</{tag}>' for i in range(13)) if offset is not None else ""
    return (f'<?xml version="1.0"?><n1:Level-{level[1:]}_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int">'
            f"<General_Info><Product_Info><PROCESSING_BASELINE>{'04.00' if offset else '02.09'}</PROCESSING_BASELINE>"
            f"</Product_Info><Product_Image_Characteristics>{offs}</Product_Image_Characteristics></General_Info>"
            f"</n1:Level-{level[1:]}_User_Product>")


def make_safe(root, level="L2A", offset=-1000, cloud=True):
    """A tiny SAFE: every band holds DN = 1000 * (band position + 1) + 1000 (the offset), at its
    native resolution; SCL marks the top-left 60 x 60 m as cloud (9)."""
    name = f"S2A_MSI{level}_20230612T101559_N0509_R065_T32TQM_20230612T140000.SAFE"
    safe = root / name
    img = safe / "GRANULE" / "L2A_T32TQM_A000000_20230612T101559" / "IMG_DATA"
    safe.mkdir(parents=True)
    (safe / f"MTD_MSI{level}.xml").write_text(_mtd(level, offset))
    bands = L2A_ORDER if level == "L2A" else EUROSAT_ORDER
    layers = [(b, RESOLUTION_M[b]) for b in bands] + ([("SCL", 20)] if level == "L2A" else [])
    for b, res in layers:
        n = SIZE_10M * 10 // res
        if b == "SCL":
            data = np.full((n, n), 4, np.uint16)
            if cloud:
                data[:3, :3] = 9
        else:
            data = np.full((n, n), 1000 * (EUROSAT_ORDER.index(b) + 1) - (offset or 0), np.uint16)
        folder = img / f"R{res}m" if level == "L2A" else img
        folder.mkdir(parents=True, exist_ok=True)
        suffix = f"_{res}m" if level == "L2A" else ""
        dtype = "uint8" if b == "SCL" else "uint16"
        with rasterio.open(folder / f"T32TQM_20230612T101559_{b}{suffix}.jp2", "w", driver="JP2OpenJPEG",
                           width=n, height=n, count=1, dtype=dtype, crs="EPSG:32632",
                           transform=Affine(res, 0, X0, 0, -res, Y0), QUALITY=100, REVERSIBLE="YES") as dst:
            dst.write(data.astype(dtype), 1)
    return safe


def test_safe_l2a_folder(tmp_path):
    safe = make_safe(tmp_path)
    scene = open_scene(safe, L2A_ORDER)
    assert (scene.kind, scene.level, scene.offset) == ("safe", "L2A", -1000)
    assert (scene.width, scene.height) == (SIZE_10M, SIZE_10M) and scene.affine == Affine(10, 0, X0, 0, -10, Y0)
    assert scene.date == "2023-06-12"
    data, valid = scene.read(Window(0, 0, 128, 128))
    assert data.shape == (12, 128, 128)
    for i, b in enumerate(L2A_ORDER):  # offset removed: DN back on the old scale, 20/60 m resampled to 10 m
        np.testing.assert_allclose(data[i][valid], 1000 * (EUROSAT_ORDER.index(b) + 1))
    assert not valid[:6, :6].any() and valid[6:, 6:].all()  # SCL cloud (60 m) -> nodata
    assert "resampled to 10 m" in scene.band_mapping["B05"] and "resampled" not in scene.band_mapping["B02"]


def test_safe_zip_same_as_folder(tmp_path):
    safe = make_safe(tmp_path)
    zpath = tmp_path / (safe.name + ".zip")
    with zipfile.ZipFile(zpath, "w") as z:
        for f in safe.rglob("*"):
            z.write(f, f.relative_to(tmp_path).as_posix())
    a, b = open_scene(safe, L2A_ORDER), open_scene(zpath, L2A_ORDER)
    w = Window(64, 64, 128, 128)
    np.testing.assert_array_equal(a.read(w)[0], b.read(w)[0])
    assert b.sources[0].path.startswith("/vsizip/")


def test_safe_l2a_refused_for_b10_model(tmp_path):
    safe = make_safe(tmp_path)
    with pytest.raises(AtlasError, match="L2A product lacks band\\(s\\) B10.*spectrumnet-rgb"):
        open_scene(safe, EUROSAT_ORDER)


def test_safe_l1c_old_baseline_no_offset(tmp_path):
    safe = make_safe(tmp_path, level="L1C", offset=None)
    scene = open_scene(safe, EUROSAT_ORDER)
    assert (scene.level, scene.offset, scene.mask) == ("L1C", 0.0, None)
    data, valid = scene.read(Window(0, 0, 64, 64))
    assert valid.all() and data[EUROSAT_ORDER.index("B10")].mean() == 10000


def test_classify_safe_l2a(tmp_path, model12):
    """SCL clouds cover 36 of the 4096 pixels of the top-left patch: labelled under the default
    --max-cloud (0.1), cloud-masked (nodata, cloud = 1) with max_cloud = 0."""
    safe = make_safe(tmp_path)
    ds = run_classify(safe, model12)
    assert ds["lulc"].shape == (6, 6) and (ds["lulc"].values > 0).all() and not ds["cloud"].values.any()
    assert ds.attrs["product_level"] == "L2A" and ds.attrs["date"] == "2023-06-12" and ds.attrs["clouds"] == "scl"
    strict = run_classify(safe, model12, max_cloud=0.0)
    lulc, cloud = strict["lulc"].values, strict["cloud"].values
    assert lulc[0, 0] == 0 and cloud[0, 0] == 1 and (lulc.ravel()[1:] > 0).all() and cloud.sum() == 1


def test_not_a_safe(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(AtlasError, match="not a Sentinel-2 SAFE product"):
        open_scene(tmp_path / "x", L2A_ORDER)
    bad = tmp_path / "bad.zip"
    bad.write_text("nope")
    with pytest.raises(AtlasError, match="bad.zip: not a zip archive"):
        open_scene(bad, L2A_ORDER)


def test_folder_of_band_geotiffs(tmp_path, model12):
    """The BigEarthNet layout: one GeoTIFF per band at 10/20/60 m, level from the folder name, no metadata."""
    d = tmp_path / "S2A_MSIL2A_20170613T101031_87_48"
    d.mkdir()
    for b in L2A_ORDER:
        res = RESOLUTION_M[b]
        n = 128 * 10 // res
        with rasterio.open(d / f"{d.name}_{b}.tif", "w", driver="GTiff", width=n, height=n, count=1, dtype="uint16",
                           crs="EPSG:32633", transform=Affine(res, 0, 500000, 0, -res, 5000000)) as f:
            f.write(np.full((1, n, n), 100 * (L2A_ORDER.index(b) + 1), np.uint16))
    scene = open_scene(d, L2A_ORDER)
    assert (scene.kind, scene.level, scene.date, scene.width, scene.offset) == ("band-files", "L2A", "2017-06-13", 128, 0)
    assert "B10" not in scene.available and scene.available[:3] == ("B01", "B02", "B03")
    arr, _ = scene.read(Window(0, 0, 64, 64), raw=True)
    assert [int(np.median(a)) for a in arr] == [100 * (i + 1) for i in range(12)]  # 20/60 m resampled onto 10 m
    ds = run_classify(d, model12)
    assert ds["lulc"].shape == (2, 2) and ds.rio.crs.to_epsg() == 32633


def test_a_metadata_file_that_inflates_without_end_is_refused(tmp_path):
    """A 3 MB zip whose MTD_MSIL1C.xml inflates to 64 MB (a zip bomb) is one line, read no further."""
    bomb = tmp_path / "S2A_MSIL1C_20230601T000000_N0509_R000_T32TQM_20230601T000000.SAFE.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("S2A.SAFE/MTD_MSIL1C.xml", b"<a>" + b" " * (64 << 20) + b"</a>")
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(AtlasError, match="MTD_MSIL1C.xml inflates to .* more than"):
        open_scene(str(bomb))


def test_a_declared_size_beyond_the_pixel_cap_is_refused_before_any_work(tmp_path, model13, monkeypatch):
    """A GeoTIFF that declares 40,000 x 40,000 pixels with data at opposite corners (so the part it
    stores spans them all): refused in one line naming --max-pixels; a smaller cap refuses a small
    scene too, and lifting it lets it through. (One block alone would be mapped alone: test_hostile.)"""
    huge = tmp_path / "huge.tif"
    with rasterio.open(huge, "w", driver="GTiff", width=40_000, height=40_000, count=13, dtype="uint16",
                       crs="EPSG:32632", transform=Affine(10, 0, 600000, 0, -10, 5000000), tiled=True,
                       blockxsize=512, blockysize=512, sparse_ok=True) as dst:
        for corner in (0, 40_000 - 512):
            dst.write(np.full((13, 512, 512), 1000, np.uint16), window=Window(corner, corner, 512, 512))
        dst.descriptions = EUROSAT_ORDER
    with pytest.raises(AtlasError, match="40000 x 40000 pixels to classify, more than 1,000,000,000.*--max-pixels"):
        run_classify(huge, model13)
    from atlas_change.synth import make_scene

    small = make_scene(tmp_path / "small.tif", 128, 128, seed=1)
    with pytest.raises(AtlasError, match="more than 10,000"):
        run_classify(small, model13, max_pixels=10_000)
    monkeypatch.setenv("ATLAS_MAX_PIXELS", "10000")
    with pytest.raises(AtlasError, match="more than 10,000"):
        run_classify(small, model13)
    assert (run_classify(small, model13, max_pixels=128 * 128)["lulc"].values > 0).any()
