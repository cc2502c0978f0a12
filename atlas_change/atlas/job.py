"""An atlas as a job file: the `atlas` command's options as an `[atlas]` table, run by
`python -m atlas_change run JOB` (paths relative to the job file):

    name = "province"
    output = "../outputs/province-atlas"
    stride = 64                          # optional: model, tta, runtime, min_confidence, stay
    [atlas]
    region = "../aoi/nuts3.gpkg"
    unit_field = "NUTS_ID"
    stac_api = "https://earth-search.aws.element84.com/v1"
    periods = { 2023 = "2023-06-01/2023-08-31", 2024 = "2024-06-01/2024-08-31" }
    # optional: collection, grid_crs, cell, origin = [x, y], max_tile_cloud, retries
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import AtlasError
from .run import AtlasSpec

TOP = {"name": str, "output": str, "model": str, "stride": int, "tta": int, "runtime": str, "min_confidence": float,
       "stay": float, "allow_untrained": bool, "atlas": dict}
TABLE = {"region": str, "unit_field": str, "stac_api": str, "periods": dict, "collection": str, "grid_crs": str,
         "cell": float, "origin": list, "max_tile_cloud": float, "retries": int}
REQUIRED_TOP, REQUIRED_TABLE = ("name", "output", "atlas"), ("region", "unit_field", "stac_api", "periods")


def load_atlas_job(path: str | os.PathLike) -> AtlasSpec | None:
    """The AtlasSpec of a job file with an `[atlas]` table; None for other job files."""
    import tomllib

    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise AtlasError(f"{p}: cannot read the job file ({getattr(e, 'strerror', None) or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise AtlasError(f"{p}: not valid TOML: {e}") from None
    return atlas_spec(data, p) if "atlas" in data else None


def _checked(d: dict, allowed: dict, required: tuple, where: str, problems: list[str]) -> dict:
    for k in required:
        if k not in d:
            problems.append(f"{where}{k}: missing")
    for k, v in d.items():
        want = allowed.get(k)
        if want is None:
            problems.append(f"{where}{k}: unknown key (allowed: {', '.join(allowed)})")
        elif not (isinstance(v, want) or (want is float and isinstance(v, int) and not isinstance(v, bool))):
            problems.append(f"{where}{k}: must be {want.__name__}, not {type(v).__name__}")
    return d


def atlas_spec(data: dict, path: Path) -> AtlasSpec:
    """The AtlasSpec of a job file's TOML (`data`) holding an `[atlas]` table; AtlasError listing
    every problem at once."""
    problems: list[str] = []
    if "aoi" in data:
        problems.append("aoi: a job file makes either AOIs ([[aoi]]) or an atlas ([atlas]), not both")
    top = _checked({k: v for k, v in data.items() if k != "aoi"}, TOP, REQUIRED_TOP, "", problems)
    table = _checked(top.get("atlas") if isinstance(top.get("atlas"), dict) else {}, TABLE, REQUIRED_TABLE,
                     "atlas.", problems)
    periods = table.get("periods", {})
    if isinstance(periods, dict) and not all(isinstance(v, str) for v in periods.values()):
        problems.append("atlas.periods: each period is NAME = \"START/END\"")
    origin = table.get("origin", [0.0, 0.0])
    if not (isinstance(origin, list) and len(origin) == 2 and all(isinstance(v, (int, float)) for v in origin)):
        problems.append("atlas.origin: expected [x, y] in metres")
    if problems:
        raise AtlasError(f"{path}: {len(problems)} problem{'s' if len(problems) > 1 else ''}:"
                         + "".join(f"\n  {p}" for p in problems))
    base = path.parent

    def here(p: str) -> str:
        return p if "://" in p else os.path.normpath(base / p)

    model = top.get("model")
    if model and (base / model / "card.json").is_file():
        model = str(base / model)
    spec = {k: table[k] for k in ("collection", "grid_crs", "cell", "max_tile_cloud", "retries") if k in table}
    spec.update({k: top[k] for k in ("stride", "min_confidence", "stay") if k in top})
    return AtlasSpec(Path(here(table["region"])), table["unit_field"], table["stac_api"],
                     {str(k): v for k, v in periods.items()}, Path(here(top["output"])), model=model,
                     origin=(float(origin[0]), float(origin[1])),
                     classify_kw={k: top[k] for k in ("tta", "runtime", "allow_untrained") if k in top}, **spec)
