"""Acquisition dates: one form (YYYY-MM-DD) everywhere they are stored or shown."""
from __future__ import annotations

import re
from datetime import date

from .errors import AtlasError

_DATE = re.compile(r"^(\d{4})[-:]?(\d{2})[-:]?(\d{2})(?:[T ]\d{2}:?\d{2}(?::?\d{2}(?:\.\d+)?)?Z?)?$")


def metadata_date(text: str | None) -> str | None:
    """A date from file metadata ('2023-06-01', '20230601', TIFF's '2023:06:01 10:30:00', an ISO time)
    -> 'YYYY-MM-DD'; None for anything else, so that no stray text ever stands for a date."""
    m = _DATE.match((text or "").strip())
    if not m:
        return None
    try:
        return date(*map(int, m.groups())).isoformat()
    except ValueError:
        return None


def user_date(text: str | None, what: str) -> str | None:
    """A date the user gave (`what` names the option): exactly YYYY-MM-DD, else AtlasError."""
    if text is None:
        return None
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    raise AtlasError(f"{what} {text[:40]!r}: not a date (expected YYYY-MM-DD)")
