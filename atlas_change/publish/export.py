"""Export stage: a GeoPackage of labelled map cells (and changes) from a compare or classify output:
one polygon per map cell, never overlapping, so that areas computed from it match every hectare figure."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..outputs import RUN_KEYS, SUMMARY_KEYS, cell_polygons, class_columns, read_json, read_raster
from ..classes import CLASSES, COLOURS, GROUP_NAMES, group_of
from ..dates import metadata_date
from ..errors import AtlasError

#: geometry column of every layer; `layer_styles` must name the same column or QGIS ignores the style
GEOMETRY_COLUMN = "geom"
#: GeoPackage 1.2: what GDAL 3.x and the QGIS LTS releases in wide use read without warnings
GPKG_VERSION = "1.2"

_FILL = ('<symbol type="fill" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0"><layer class="SimpleFill" '
         'enabled="1" locked="0" pass="0"><Option type="Map">{options}</Option>{props}</layer></symbol>')


def _symbol(name: str, **opts: str) -> str:
    """A QGIS fill symbol, written both as Option map (QGIS >= 3.26) and as props (older)."""
    options = "".join(f'<Option type="QString" name="{k}" value="{v}"/>' for k, v in opts.items())
    props = "".join(f'<prop k="{k}" v="{v}"/>' for k, v in opts.items())
    return _FILL.format(name=name, options=options, props=props)


def qml_style(layer: str) -> str:
    """QGIS style (QML) of an exported layer: class cells by EuroSAT colour, changes and AOI as outlines."""
    if layer in ("cells", "cells_before", "cells_after"):
        cats = "".join(f'<category symbol="{i}" value="{i + 1}" label="{i + 1} {c}" render="true"/>'
                       for i, c in enumerate(CLASSES))
        syms = "".join(_symbol(str(i), color=f"{r},{g},{b},255", style="solid", outline_style="no")
                       for i, (r, g, b) in enumerate(COLOURS))
        renderer = (f'<renderer-v2 type="categorizedSymbol" attr="class_id" symbollevels="0" forceraster="0" '
                    f'enableorderby="0"><categories>{cats}</categories><symbols>{syms}</symbols></renderer-v2>')
    else:
        colour = "0,255,0,255" if layer == "changes" else "0,0,0,255"  # view.CHANGE_COLOUR: no class uses it
        renderer = ('<renderer-v2 type="singleSymbol" symbollevels="0" forceraster="0" enableorderby="0"><symbols>'
                    + _symbol("0", color="0,0,0,0", style="no", outline_color=colour, outline_width="0.6",
                              outline_style="solid") + "</symbols></renderer-v2>")
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"
            f'<qgis version="3.28.0" styleCategories="Symbology">{renderer}</qgis>')


def _styles_frame(names: list[str]):
    """The `layer_styles` table QGIS reads from a GeoPackage (default style per layer)."""
    import pandas as pd

    return pd.DataFrame({"f_table_catalog": "", "f_table_schema": "", "f_table_name": names,
                         "f_geometry_column": GEOMETRY_COLUMN, "styleName": [f"atlas-change {n}" for n in names],
                         "styleQML": [qml_style(n) for n in names], "styleSLD": "", "useAsDefault": True,
                         "description": "EuroSAT class colours (atlas-change)", "owner": "", "ui": "",
                         "update_time": pd.Timestamp.now(tz="UTC").floor("s")})


def _stamp(gdf, run: dict, date: str | None):
    """Date (a GeoPackage DATE field, not text: Arrow's date32, through pyogrio's Arrow path), scene and
    model columns on a cell layer."""
    import datetime as dt

    import pandas as pd
    import pyarrow as pa

    day = metadata_date(date) or metadata_date(run["input"].get("date"))
    gdf["date"] = pd.array([dt.date.fromisoformat(day) if day else None] * len(gdf), dtype=pd.ArrowDtype(pa.date32()))
    gdf["scene_id"] = Path(run["input"]["path"]).name
    gdf["model"] = run["model"]["model"]
    gdf["weights_sha256"] = run["model"]["weights_sha256"]
    return gdf


def classify_cells(folder: Path, date: str | None = None):
    """A classify output's cells.parquet (one polygon per map cell), stamped; only the cells whose
    centre lies in the scene (the last row and column of cells reach past its edge), so that their
    hectares are those `compare` counts for the same scene: one area definition."""
    import geopandas as gpd

    from ..change.compare import footprint

    run = read_json(folder / "run.json", RUN_KEYS)
    try:
        gdf = gpd.read_parquet(folder / "cells.parquet")
    except (OSError, ValueError) as e:
        raise AtlasError(f"{folder / 'cells.parquet'}: unreadable ({str(e).splitlines()[0][:120]}); "
                         "classify the scene again") from None
    bounds = footprint(run, read_raster(folder / "lulc.tif")[1]) if len(gdf) else None
    if bounds is not None:
        x, y = gdf.geometry.centroid.x, gdf.geometry.centroid.y
        gdf = gdf[(x > bounds[0]) & (x < bounds[2]) & (y > bounds[1]) & (y < bounds[3])].reset_index(drop=True)
    return _stamp(gdf, run, date)


def compare_cells(folder: Path, part: str, summary: dict):
    """One polygon per map cell of a compare output's before.tif / after.tif (the AOI's cells, the
    ones its hectares count), with class, group and confidence, stamped with that date's run."""
    lulc, t, crs, _ = read_raster(folder / f"{part}.tif")
    conf = read_raster(folder / f"{part}_confidence.tif")[0]
    r, c = np.nonzero(lulc)
    gdf = cell_polygons(t, crs, r, c, {**class_columns(lulc[r, c].astype(np.int32)),
                                       "confidence": conf[r, c].astype(np.float32)})
    run = read_json(Path(summary[part]["source"]) / "run.json", RUN_KEYS)  # a period's: its first date's
    gdf = _stamp(gdf, run, summary[part]["date"])
    gdf["period"] = summary[part].get("period") or summary[part]["date"] or ""  # '<first> to <last> (n dates)'
    sources = summary[part].get("sources") or [summary[part]["source"]]
    if len(sources) > 1:  # a period's labels come from all its dates: every scene and date named
        scenes = [Path(read_json(Path(f) / "run.json", RUN_KEYS)["input"]["path"]).name for f in sources]
        gdf["scene_id"] = "; ".join(scenes)
        gdf["dates"] = "; ".join(summary[part].get("dates") or [])
    return gdf


def change_frame(folder: Path, stay: float | None = None):
    """One polygon per changed cell of change.tif: from/to class and group, whether it is a conversion
    between groups, both dates' posterior probabilities of those classes, P(change) and P(conversion)
    (NaN for outputs made before the joint decision), the transition prior that decided (`stay`, from
    summary.json; NaN where not recorded), hectares."""
    code, t, crs, _ = read_raster(folder / "change.tif")
    ca, cb = (read_raster(folder / f"{p}_confidence.tif")[0] for p in ("before", "after"))
    pc, pv = (read_raster(folder / f"{n}.tif")[0] if (folder / f"{n}.tif").exists() else np.full(code.shape, np.nan)
              for n in ("p_change", "p_conversion"))
    r, c = np.nonzero(code)
    f, to = (code[r, c] // 100).astype(np.int32), (code[r, c] % 100).astype(np.int32)
    names, groups = np.asarray(CLASSES, dtype=object), np.asarray(GROUP_NAMES, dtype=object)
    gf, gt = group_of(f), group_of(to)
    # explicit dtypes: a column's type must not depend on whether anything changed
    return cell_polygons(t, crs, r, c, {
        "from_id": f, "from_class": names[f - 1], "to_id": to, "to_class": names[to - 1],
        "from_group": groups[gf - 1], "to_group": groups[gt - 1],
        "kind": np.where(gf != gt, "conversion", "within group").astype(object),
        "confidence_before": ca[r, c].astype(np.float32), "confidence_after": cb[r, c].astype(np.float32),
        "p_change": pc[r, c].astype(np.float32), "p_conversion": pv[r, c].astype(np.float32),
        "change_prior_stay": np.full(len(r), np.nan if stay is None else stay, np.float32)})


def layers(folder: str | os.PathLike) -> dict:
    """Layer name -> GeoDataFrame for a compare output (cells_before, cells_after, changes, aoi) or a
    classify output (cells): one polygon per map cell, no overlap, so areas summed in QGIS are right."""
    import geopandas as gpd

    d = Path(folder)
    if not d.is_dir():
        raise AtlasError(f"{d}: no such folder (a compare or classify output; `python -m atlas_change demo` makes "
                         "outputs/example/example/2023-06-01_2024-06-01)")
    if (d / "summary.json").exists() and "steps" in read_json(d / "summary.json"):
        raise AtlasError(f"{d}: a sequence of periods; export or view one of its step folders or its span_* folder")
    if (d / "summary.json").exists():
        s = read_json(d / "summary.json", SUMMARY_KEYS)
        return {"cells_before": compare_cells(d, "before", s), "cells_after": compare_cells(d, "after", s),
                "changes": change_frame(d, s.get("change_decision", {}).get("stay")),
                "aoi": gpd.read_file(d / "aoi.geojson")}
    if (d / "cells.parquet").exists():
        return {"cells": classify_cells(d)}
    if (d / "tiles.parquet").exists():
        raise AtlasError(f"{d}: made by an older atlas-change (tiles.parquet of overlapping patches, no "
                         "cells.parquet); classify the scene again")
    raise AtlasError(f"{d}: neither a compare output (summary.json) nor a classify output (cells.parquet)")


def export_gpkg(folder: str | os.PathLike, gpkg: str | os.PathLike) -> Path:
    """Write every layer of a compare or classify output into one GeoPackage (`write_gpkg`)."""
    return write_gpkg(layers(folder), Path(gpkg))


def write_gpkg(frames: dict, out: Path, geometry_type: str = "Polygon") -> Path:
    """Polygon layers (name -> GeoDataFrame) as one GeoPackage 1.2 (via a temporary file, renamed
    when complete), with a `layer_styles` table so that QGIS shows cells in the EuroSAT colours and
    other layers as outlines; `geometry_type` is what every layer declares."""
    import pyogrio

    tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}.gpkg")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for i, (name, gdf) in enumerate(frames.items()):
            # every layer says it holds polygons, even when empty (QGIS and ogrinfo show its type)
            pyogrio.write_dataframe(gdf, tmp, layer=name, driver="GPKG", geometry_type=geometry_type, use_arrow=True,
                                    dataset_options={"VERSION": GPKG_VERSION} if i == 0 else None,
                                    layer_options={"GEOMETRY_NAME": GEOMETRY_COLUMN})
        pyogrio.write_dataframe(_styles_frame(list(frames)), tmp, layer="layer_styles", driver="GPKG",
                                layer_options={"FID": "id"})
        os.replace(tmp, out)
    except (OSError, RuntimeError) as e:  # pyogrio's errors (e.g. a full disk) are RuntimeErrors
        raise AtlasError(f"{out}: cannot write the GeoPackage ({getattr(e, 'strerror', None) or str(e).splitlines()[0]})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
