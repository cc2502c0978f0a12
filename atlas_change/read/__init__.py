"""Read stage: one way in. Every source of pixels becomes one `Scene` (scene.py) on one 10 m grid,
opened once per run with every band it holds; stages take the bands they need with
`Scene.select(bands)` and read windows of it. Nothing downstream learns where the pixels came from.

- geotiff.py: a multi-band GeoTIFF / COG
- products.py: a SAFE product (folder or .zip) or a folder of one GeoTIFF per band
- stac.py: a STAC Item (a JSON file or an http(s) URL), its COGs read by HTTP range requests
- mosaic.py: the Items of one date that together cover an AOI, warped onto one grid
"""
from __future__ import annotations

import os
from dataclasses import replace

from ..bands import EUROSAT_ORDER
from ..errors import AtlasError
from .scene import (OFFSET_BANDS, SCL_CLOUD, SCL_INVALID, SCL_NODATA, BandSource, Scene, aligned_chunk,  # noqa: F401
                    crop_to, input_path, is_url)


def open_scene(path: str | os.PathLike, model_bands: tuple[str, ...] | None = EUROSAT_ORDER,
               bands: str | tuple[str, ...] | None = None, offset: float | None = None) -> Scene:
    """Open a GeoTIFF/COG, a SAFE product (folder or .zip), a band folder, a STAC Item (JSON file or
    http(s) URL) or a mosaic file, selected for `model_bands` (None: every band it holds, to
    `select` from later).

    `bands` names the file's bands in order when the file does not say (GeoTIFF only);
    `offset` overrides the digital-number offset read from the metadata.
    Raises AtlasError with a one-line message naming the file and the problem.
    """
    from .mosaic import is_mosaic, open_mosaic
    from .stac import is_item, open_item

    p = str(path)
    if is_mosaic(p):
        scene = open_mosaic(p)
    elif is_item(p):
        scene = open_item(p)
    elif not os.path.exists(p):
        raise AtlasError(f"{p}: no such file or folder")
    elif os.path.isdir(p) or p.lower().endswith(".zip"):
        from .products import open_product

        scene = open_product(p)
    else:
        from .geotiff import open_geotiff

        scene = open_geotiff(p, bands)
    if offset is not None:
        scene = replace(scene, offset=float(offset), offset_how="--offset")
    return scene if model_bands is None else scene.select(tuple(model_bands))
