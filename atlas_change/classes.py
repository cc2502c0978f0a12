"""The ten EuroSAT classes, their ids in every output (1..10, 0 = nodata) and colours; and the four
land-cover groups they fall in (CORINE Land Cover level 1, with wetlands absent from EuroSAT)."""
from __future__ import annotations

import numpy as np

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


#: land-cover groups, ids 1..4 (CORINE level 1: 1 artificial surfaces, 2 agricultural areas, 3 forest and
#: semi-natural areas, 5 water bodies; EuroSAT has no wetland class, CORINE's 4)
GROUP_NAMES: tuple[str, ...] = ("artificial", "agricultural", "forest and semi-natural", "water")
GROUPS: dict[str, str] = {
    "Highway": "artificial", "Industrial": "artificial", "Residential": "artificial",
    "AnnualCrop": "agricultural", "PermanentCrop": "agricultural", "Pasture": "agricultural",
    "Forest": "forest and semi-natural", "HerbaceousVegetation": "forest and semi-natural",
    "River": "water", "SeaLake": "water",
}
#: group id (1..4) per class id (index = class id; 0 -> 0 = nodata)
GROUP_OF_CLASS = np.array([0] + [GROUP_NAMES.index(GROUPS[c]) + 1 for c in CLASSES], np.uint8)
GROUP_COLOURS: tuple[tuple[int, int, int], ...] = ((220, 40, 40), (230, 200, 90), (20, 110, 40), (40, 120, 230))


def group_of(class_ids) -> np.ndarray:
    """Group ids (1..4, 0 = nodata) of class ids (0..10)."""
    return GROUP_OF_CLASS[np.asarray(class_ids, dtype=np.intp)]
