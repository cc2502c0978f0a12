"""The ten EuroSAT classes, their ids in every output (1..10, 0 = nodata) and colours."""
from __future__ import annotations

CLASSES: tuple[str, ...] = (
    "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
    "Pasture", "PermanentCrop", "Residential", "River", "SeaLake",
)
NODATA_ID = 0
#: RGB colour per class (index = class id - 1)
COLOURS: tuple[tuple[int, int, int], ...] = (
    (230, 200, 90),   # AnnualCrop
    (20, 110, 40),    # Forest
    (140, 200, 90),   # HerbaceousVegetation
    (120, 120, 120),  # Highway
    (200, 60, 200),   # Industrial
    (190, 230, 130),  # Pasture
    (230, 140, 40),   # PermanentCrop
    (220, 40, 40),    # Residential
    (40, 120, 230),   # River
    (20, 40, 150),    # SeaLake
)


def class_id(name: str) -> int:
    """1-based class id of a EuroSAT class name."""
    return CLASSES.index(name) + 1


def hex_colour(cid: int) -> str:
    """'#rrggbb' for a class id (1..10)."""
    return "#%02x%02x%02x" % COLOURS[cid - 1]
