"""Read stage, GeoTIFF: a multi-band GeoTIFF / COG as a `Scene`, its bands named by --bands, by
the band descriptions, or by the count (13 = EuroSAT / L1C order, 12 = L2A order)."""
from __future__ import annotations

import warnings

import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from ..bands import default_order, normalise_band, parse_bands
from ..dates import metadata_date
from ..errors import AtlasError
from .scene import OFFSET_BANDS, BandSource, Scene, check_grid, check_offset, date_from_name


def open_geotiff(p: str, bands: str | tuple[str, ...] | None = None) -> Scene:
    """A multi-band GeoTIFF / COG; `bands` names its bands in order when its descriptions do not."""
    try:
        with warnings.catch_warnings():  # a missing CRS/transform is reported below as an error
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(p)
    except RasterioIOError as e:
        raise AtlasError(f"{p}: not a readable raster ({str(e).splitlines()[0]})") from None
    with ds:
        check_grid(p, ds)
        names, how = _file_band_names(p, ds, bands)
        tags = ds.tags()
        key = next((k for k in ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET") if k in tags), None)
        off, off_how = check_offset(float(tags[key]) if key else 0.0,
                                     f"the {key} tag" if key else "no BOA_ADD_OFFSET / RADIO_ADD_OFFSET tag",
                                     [(p, names.index(b) + 1) for b in OFFSET_BANDS if b in names])
        level = tags.get("PROCESSING_LEVEL") or ("L2A" if len(names) == 12 and "B10" not in names else None)
        date = metadata_date(tags.get("DATE")) or metadata_date(tags.get("TIFFTAG_DATETIME")) or date_from_name(p)
        try:  # a truncated or corrupt file often opens but fails on the first read of a block
            ds.read(1, window=Window(0, 0, min(ds.width, 1), min(ds.height, 1)))
        except RasterioIOError as e:
            raise AtlasError(f"{p}: cannot read pixels ({str(e).splitlines()[0]})") from None
        catalog = tuple((b, BandSource(p, i + 1), f"band {i + 1} ({how})") for i, b in enumerate(names))
        return Scene(
            path=p, kind="geotiff", level=level, bands=names, sources=tuple(c[1] for c in catalog),
            crs_wkt=ds.crs.to_wkt(), transform=tuple(ds.transform)[:6], width=ds.width, height=ds.height,
            block=ds.block_shapes[0][1], offset=off, offset_how=off_how,
            nodata=float(ds.nodata if ds.nodata is not None else 0),
            date=date, band_mapping={b: m for b, _, m in catalog}, available=names, catalog=catalog,
        )


def _file_band_names(p: str, ds, bands) -> tuple[tuple[str, ...], str]:
    """Band identity: user's --bands, else band descriptions, else the band count."""
    if bands:
        names = parse_bands(bands) if isinstance(bands, str) else tuple(normalise_band(b) for b in bands)
        if len(names) != ds.count:
            raise AtlasError(f"{p}: --bands names {len(names)} bands but the file has {ds.count}")
        return names, "--bands"
    desc = ds.descriptions
    if all(desc):
        try:
            names = tuple(normalise_band(d) for d in desc)
            if len(set(names)) == len(names):
                return names, "band description"
        except AtlasError:
            pass
    names = default_order(ds.count)
    if names is None:
        raise AtlasError(f"{p}: {ds.count} bands without Sentinel-2 band descriptions; "
                         "name them with --bands B02,B03,... (13 = EuroSAT/L1C order, 12 = L2A order)")
    return names, f"{ds.count}-band default order"
