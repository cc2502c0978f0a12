"""Shared fixtures: small synthetic scenes and an explicitly untrained model (tests only check
the pipeline's behaviour: grids, bands, nodata, files, errors; never label quality)."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import rasterio  # noqa: E402

from atlas_change.bands import EUROSAT_ORDER, L2A_ORDER  # noqa: E402
from atlas_change.read.stac import EARTH_SEARCH  # noqa: E402

import servers  # noqa: E402
from servers import NGINX, RUSTAC, band_cogs, free_port  # noqa: E402,F401  (the tests import them from here)

BY_BAND = {v: k for k, v in EARTH_SEARCH.items()}


@pytest.fixture(scope="session", autouse=True)
def _own_cache(tmp_path_factory):
    """Converted models of the tests' throw-away networks go to a temporary cache, not the user's."""
    old = os.environ.get("ATLAS_CACHE")
    os.environ["ATLAS_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("ATLAS_CACHE")
    else:
        os.environ["ATLAS_CACHE"] = old


#: the untrained networks' architecture: the pipeline's tests need a network, not its accuracy; this one
#: takes a 15th of plain SpectrumNet's multiply-accumulates, a quarter of the shipped network's
#: (0.026 G a patch), and most tests classify with it
TEST_ARCH = "spectrumnet-bn-w0.25"


@pytest.fixture(scope="session")
def model13(tmp_path_factory):
    from atlas_change.model.train import init_untrained

    return init_untrained(TEST_ARCH, EUROSAT_ORDER, tmp_path_factory.mktemp("m") / "sn13", "sn13")


@pytest.fixture(scope="session")
def model12(tmp_path_factory):
    from atlas_change.model.train import init_untrained

    return init_untrained(TEST_ARCH, L2A_ORDER, tmp_path_factory.mktemp("m") / "sn12", "sn12")


def run_classify(scene, card, **kw):
    from atlas_change.mapping.pipeline import classify

    kw.setdefault("scheduler", "sync")
    kw.setdefault("runtime", "graph")
    return classify(scene, model=card.path, allow_untrained=True, **kw)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """nginx serving a folder on 127.0.0.1 (ranges, HEAD: what GDAL's /vsicurl/ needs): (url, folder, log)."""
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian package nginx; .ci/run installs it)")
    root, prefix = tmp_path_factory.mktemp("www"), tmp_path_factory.mktemp("nginx")
    try:
        with servers.nginx(root, prefix) as url:
            yield url, root, prefix / "access.log"
    except RuntimeError as e:
        pytest.fail(str(e))


#: an AOI astride 12 E (UTM 32N / 33N), inside both of two_zone_scenes; its centre lies in 33N
TWO_ZONE_AOI = (11.985, 44.965, 12.015, 44.978)


def two_zone_scenes(folder: Path, bands: tuple[str, ...] = EUROSAT_ORDER) -> tuple[Path, Path]:
    """One land twice: a synthetic scene of UTM 32N by 12 E (4.48 km square; `bands`, default the 13 of
    EuroSAT) and that scene warped into 33N (bilinear, at 10 m, band names kept): folder/t32/scene.tif,
    folder/t33/scene.tif."""
    from rasterio.warp import calculate_default_transform, reproject

    from atlas_change.synth import make_scene

    (folder / "t32").mkdir(parents=True), (folder / "t33").mkdir()
    a = make_scene(folder / "t32" / "scene.tif", 448, 448, crs="EPSG:32632", origin=(734400.0, 4986400.0), seed=3,
                   bands=bands)
    b = folder / "t33" / "scene.tif"
    with rasterio.open(a) as src:
        t, w, h = calculate_default_transform(src.crs, "EPSG:32633", src.width, src.height, *src.bounds, resolution=10)
        with rasterio.open(b, "w", **{**src.profile, "crs": "EPSG:32633", "transform": t, "width": w, "height": h}) as dst:
            for i in range(1, src.count + 1):
                reproject(rasterio.band(src, i), rasterio.band(dst, i), resampling=rasterio.enums.Resampling.bilinear)
                dst.set_band_description(i, src.descriptions[i - 1])
    return a, b


def item(hrefs: dict[str, str], keys: str, **props) -> dict:
    """A STAC Item with one COG asset per band, keyed as Earth Search ('earth-search') or the
    Planetary Computer ('pc') do."""
    assets = {(BY_BAND[b] if keys == "earth-search" else b): {
        "href": h, "type": "image/tiff; application=geotiff; profile=cloud-optimized", "roles": ["data"]}
        for b, h in hrefs.items()}
    assets["thumbnail"] = {"href": "thumb.jpg", "type": "image/jpeg"}
    return {"type": "Feature", "stac_version": "1.0.0", "id": "S2B_32TQM_20230612_0_L2A", "collection": "sentinel-2-l2a",
            "geometry": None, "properties": {"datetime": "2023-06-12T10:15:59Z", **props}, "assets": assets,
            "links": []}


@contextmanager
def stac_api(items: list[dict], folder: Path):
    """servers.stac_api, skipping the test where rustac is not installed."""
    if RUSTAC is None:
        pytest.skip("rustac is not installed (pip install rustac; the dev extra has it)")
    try:
        api = servers.stac_api(items, folder)
        url = api.__enter__()
    except RuntimeError as e:
        pytest.fail(str(e))
    try:
        yield url
    finally:
        api.__exit__(None, None, None)


MAJOR_TOM = Path(__file__).resolve().parents[2] / "shared" / "scenes" / "major-tom-l2a" / "199U" / "199U_1099R"


def major_tom_split(root: Path, url: str) -> tuple[list[dict], Path]:
    """The real Major TOM L2A cell (UTM 48N, baseline N9999: no DN offset; no SCL) cut into two
    overlapping Items served from `root` at `url`, the western one warped into UTM 47N as a
    neighbouring tile of the other zone would be: (Items, the cell's local band folder). Skips
    without ../shared."""
    import shapely
    from rasterio.warp import Resampling, calculate_default_transform, reproject, transform_geom
    from rasterio.windows import Window

    folders = sorted(MAJOR_TOM.glob("S2*")) if MAJOR_TOM.is_dir() else []
    if not folders:
        pytest.skip("../shared/scenes/major-tom-l2a not here")
    local = folders[0]
    items = []
    for name, crs, c0, c1 in (("west", "EPSG:32647", 0, 640), ("east", None, 420, 1068)):
        hrefs, out = {}, root / "split" / name
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted(local.glob("B*.tif")):
            with rasterio.open(f) as src:
                k = 1068 // src.width
                win = Window(c0 // k, 0, (c1 - c0) // k, src.height)
                data, t, dst_crs = src.read(1, window=win), src.window_transform(win), src.crs
                if crs:
                    b = rasterio.windows.bounds(win, src.transform)
                    t2, w2, h2 = calculate_default_transform(src.crs, crs, data.shape[1], data.shape[0], *b, resolution=src.res)
                    warped = np.zeros((h2, w2), data.dtype)
                    reproject(data, warped, src_transform=t, src_crs=src.crs, dst_transform=t2, dst_crs=crs,
                              resampling=Resampling.bilinear, src_nodata=0, dst_nodata=0)
                    data, t, dst_crs = warped, t2, rasterio.crs.CRS.from_string(crs)
                profile = {"driver": "COG", "dtype": data.dtype, "count": 1, "width": data.shape[1],
                           "height": data.shape[0], "crs": dst_crs, "transform": t, "nodata": 0, "compress": "deflate"}
                with rasterio.open(out / f.name, "w", **profile) as dst:
                    dst.write(data, 1)
                hrefs[f.stem] = f"{url}/split/{name}/{f.name}"
        with rasterio.open(out / "B02.tif") as src:
            footprint = transform_geom(src.crs, "EPSG:4326", shapely.box(*src.bounds).__geo_interface__)
        it = item(hrefs, "pc", **{"s2:processing_baseline": "99.99", "eo:cloud_cover": 1.0})
        it.update(id=f"MT_{name}", geometry=footprint, bbox=list(shapely.geometry.shape(footprint).bounds))
        it["properties"]["datetime"] = "2020-02-23T03:27:39Z"
        items.append(it)
    return items, local
