"""File names made from data (scene names, STAC Item ids): never a path, never outside their folder."""
from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def digest(*parts: object, n: int = 10) -> str:
    """A short hex SHA-256 of `parts` (their text joined), to tell apart names that would be equal."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:n]


def safe_name(text: str, fallback: str = "item", max_len: int = 80) -> str:
    """`text` as one file name: letters, digits, '.', '_' and '-' only, not starting with a dot, at
    most `max_len` characters; where anything had to change, a digest of the original is appended
    so that two different texts never give one name."""
    name = _UNSAFE.sub("_", str(text)).lstrip("._-")[:max_len] or fallback
    return name if name == text else f"{name}_{digest(text, n=8)}"
