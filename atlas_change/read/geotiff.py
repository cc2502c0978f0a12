"""Read stage, GeoTIFF: a multi-band GeoTIFF / COG as a `Scene`, its bands named by --bands, by
the band descriptions, or by the count (13 = EuroSAT / L1C order, 12 = L2A order)."""
from __future__ import annotations

import warnings

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from ..bands import default_order, normalise_band, parse_bands
from ..dates import metadata_date
from ..errors import AtlasError
from .scene import OFFSET_BANDS, BandSource, Scene, check_grid, check_offset, date_from_name, sample_band


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
        if how.endswith("default order"):
            check_natural_order(p, ds, names)
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


#: how much more closely band 9 must follow B08 than the band in B8A's slot does (Pearson r), with
#: r > 0.8, before a file of unnamed bands is taken to be in the natural order. The 270 real EuroSAT MS
#: patches in ../shared (B8A last): band 9 at most 0.024 closer (over water, r 0.10), where r > 0.8 at
#: most 0.034 less close; eo-learn's two real natural-order L1C dates: 0.21 and 0.25 closer (r 0.91, 0.88)
NATURAL_ORDER_MARGIN = 0.1


def check_natural_order(p: str, ds, names: tuple[str, ...]) -> None:
    """AtlasError where a file of unnamed bands, read in the count's default order (EuroSAT's: B8A
    last), holds them by its pixels in the natural order (B8A right after B08, as SNAP, Earth Engine or
    a stack of a SAFE's bands in wavelength order have them): B8A is B08's near-infrared twin, so the
    band in B8A's slot must follow B08 more closely than band 9 (B09 in EuroSAT's order) does. Read the
    wrong way, B11 would be another band and the water and snow tests (and a 13-band model) wrong."""
    i08, i8a = names.index("B08") + 1, names.index("B8A") + 1
    b08, nine, twin = (sample_band(ds, i).astype(np.float64) for i in (i08, 9, i8a))
    if not b08.size == nine.size == twin.size:  # a band without the others' overviews: nothing to compare
        return
    ok = (b08 != 0) & (nine != 0) & (twin != 0) & np.isfinite(b08 + nine + twin)
    if np.count_nonzero(ok) < 1000:
        return
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant band: r is NaN, and nothing is said
        r_nine, r_twin = (float(np.corrcoef(b08[ok], x[ok])[0, 1]) for x in (nine, twin))
    if r_nine > 0.8 and r_nine > r_twin + NATURAL_ORDER_MARGIN:
        natural = ",".join(sorted(names, key=lambda b: (int(b[1:3]) if b != "B8A" else 8.5)))
        raise AtlasError(f"{p}: its {ds.count} bands have no names, and a file of {ds.count} is read in EuroSAT's "
                         f"order (B8A last), but by its pixels band 9 is B8A (it follows B08 with r = {r_nine:.2f}, "
                         f"band {i8a} only with r = {r_twin:.2f}): name them, e.g. --bands "
                         f"{natural} for the natural order")
