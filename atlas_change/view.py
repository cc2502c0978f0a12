"""View stage: the change map as one self-contained HTML file (Leaflet via folium, with its JS and
CSS embedded by offlinefolium, so that it opens without internet; only the basemap tiles need it)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .assemble import atomic_write
from .classes import CLASSES, hex_colour
from .export import layers


def _legend() -> str:
    rows = "".join(f'<div><span style="display:inline-block;width:12px;height:12px;background:{hex_colour(i + 1)};'
                   f'margin-right:6px"></span>{i + 1} {c}</div>' for i, c in enumerate(CLASSES))
    return ('<div id="atlas-legend" style="position:fixed;bottom:24px;left:24px;z-index:9999;background:white;'
            'padding:8px;font:12px sans-serif;border:1px solid #999"><b>EuroSAT classes</b>' + rows + "</div>")


def _banner(text: str, left: str = "60px") -> str:
    return (f'<div style="position:fixed;top:8px;left:{left};z-index:9999;background:white;padding:4px;'
            f'font:13px sans-serif">{text}</div>')


def _class_layer(folium, gdf, name: str, show: bool = True):
    gdf = gdf[["class_id", "class_name", "confidence", "date", "geometry"]]
    return folium.GeoJson(gdf, name=name, show=show,
                          style_function=lambda f: {"fillColor": hex_colour(int(f["properties"]["class_id"])),
                                                    "color": "none", "fillOpacity": 0.6},
                          tooltip=folium.GeoJsonTooltip(["class_name", "confidence", "date"]))


def _aoi_layer(folium, gdf):
    return folium.GeoJson(gdf[["geometry"]], name="AOI",
                          style_function=lambda f: {"color": "black", "weight": 2, "fillOpacity": 0})


def _save(m, out: Path) -> Path:
    atomic_write(out, lambda f: m.save(f, close_file=False))
    return out


def change_map(folder: str | os.PathLike, out_html: str | os.PathLike | None = None,
               side_by_side: bool = False) -> Path:
    """Write change_map.html: before/after class layers, change layer with popups, AOI, legend,
    layer control, fitted to the AOI. With `side_by_side` (a compare folder), also write
    change_map_side_by_side.html: before and after on two synchronised maps."""
    import offlinefolium as folium

    d = Path(folder)
    frames = {k: v.to_crs("EPSG:4326") for k, v in layers(d).items()}
    minx, miny, maxx, maxy = frames.get("aoi", next(iter(frames.values()))).total_bounds
    summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else None
    m = folium.Map(tiles="OpenStreetMap", control_scale=True)
    for name in ("tiles_before", "tiles_after", "tiles"):
        if name in frames:
            _class_layer(folium, frames[name], name.replace("_", " "), show=name != "tiles_after").add_to(m)
    if "changes" in frames and len(frames["changes"]):
        ch = frames["changes"][["from_class", "to_class", "confidence_before", "confidence_after", "hectares",
                                "geometry"]]
        folium.GeoJson(ch, name="changes", style_function=lambda f: {"color": "#ff00ff", "weight": 2, "fillOpacity": 0},
                       popup=folium.GeoJsonPopup(list(ch.columns[:-1]))).add_to(m)
    if "aoi" in frames:
        _aoi_layer(folium, frames["aoi"]).add_to(m)
    if summary:
        b, a = summary["before"], summary["after"]
        m.get_root().html.add_child(folium.Element(_banner(
            f"{b['date']} ({b['model']}) to {a['date']} ({a['model']}): {summary['changed_ha']:.1f} ha changed"
            + (" - MODEL MISMATCH" if summary["model_mismatch"] else ""))))
    m.get_root().html.add_child(folium.Element(_legend()))
    folium.LayerControl(collapsed=False).add_to(m)
    m.fit_bounds([[miny, minx], [maxy, maxx]])
    out = _save(m, Path(out_html) if out_html else d / "change_map.html")
    if side_by_side and summary:
        from offlinefolium.plugins import DualMap

        dm = DualMap(tiles="OpenStreetMap", control_scale=True)
        for part, sub in (("before", dm.m1), ("after", dm.m2)):
            _class_layer(folium, frames[f"tiles_{part}"], f"{part} {summary[part]['date']}").add_to(sub)
            if "aoi" in frames:
                _aoi_layer(folium, frames["aoi"]).add_to(sub)
        dm.m1.get_root().html.add_child(folium.Element(_banner(f"before: {summary['before']['date']}")))
        dm.m1.get_root().html.add_child(folium.Element(_banner(f"after: {summary['after']['date']}", "calc(50% + 60px)")))
        dm.m1.get_root().html.add_child(folium.Element(_legend()))
        dm.fit_bounds([[miny, minx], [maxy, maxx]])
        _save(dm, out.with_name(out.stem + "_side_by_side.html"))
    return out
