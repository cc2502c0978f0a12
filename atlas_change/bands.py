"""Sentinel-2 band names, the EuroSAT band order and the band-list parser."""
from __future__ import annotations

import re

from .errors import AtlasError

#: every Sentinel-2 MSI band, in ESA's band_id order (band_id 0..12)
S2_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)
#: band order inside the EuroSAT MS GeoTIFFs (L1C, B8A LAST)
EUROSAT_ORDER: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A",
)
#: the EuroSAT order without B10 (cirrus), which L2A products do not carry
L2A_ORDER: tuple[str, ...] = tuple(b for b in EUROSAT_ORDER if b != "B10")
#: native ground resolution of each band in metres
RESOLUTION_M: dict[str, int] = {
    "B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20,
    "B08": 10, "B8A": 20, "B09": 60, "B10": 60, "B11": 20, "B12": 20,
}

_BAND_RE = re.compile(r"^B?0*(1[0-2]|[1-9])(A?)$")


def normalise_band(name: str) -> str:
    """'b2', 'B02', '2', 'B8a' -> canonical 'B02' / 'B8A'; AtlasError if not a Sentinel-2 band."""
    m = _BAND_RE.match(name.strip().upper())
    if not m:
        raise AtlasError(f"{name!r} is not a Sentinel-2 band name (expected one of {', '.join(S2_BANDS)})")
    num, a = m.groups()
    if a and num != "8":
        raise AtlasError(f"{name!r} is not a Sentinel-2 band name (only B8A has an 'A')")
    return "B8A" if a else f"B{int(num):02d}"


def parse_bands(text: str) -> tuple[str, ...]:
    """Parse a comma-separated band list such as 'B01,B02,...,B8A' into canonical names."""
    parts = [p for p in (s.strip() for s in text.split(",")) if p]
    if not parts:
        raise AtlasError("empty band list")
    bands = tuple(normalise_band(p) for p in parts)
    dupes = sorted({b for b in bands if bands.count(b) > 1})
    if dupes:
        raise AtlasError(f"band list names {', '.join(dupes)} more than once")
    return bands


def default_order(count: int) -> tuple[str, ...] | None:
    """Band identity by count alone: 13 = EuroSAT/L1C order, 12 = L2A order (no B10)."""
    return {13: EUROSAT_ORDER, 12: L2A_ORDER}.get(count)
