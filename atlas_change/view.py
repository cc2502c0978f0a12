"""View stage: the change map as one HTML file (folium / Leaflet)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .classes import CLASSES, hex_colour
from .export import layers


def _legend() -> str:
    rows = "".join(f'<div><span style="display:inline-block;width:12px;height:12px;background:{hex_colour(i + 1)};'
                   f'margin-right:6px"></span>{i + 1} {c}</div>' for i, c in enumerate(CLASSES))
    return ('<div id="atlas-legend" style="position:fixed;bottom:24px;left:24px;z-index:9999;background:white;'
            'padding:8px;font:12px sans-serif;border:1px solid #999"><b>EuroSAT classes</b>' + rows + "</div>")


def change_map(folder: str | os.PathLike, out_html: str | os.PathLike | None = None) -> Path:
    """Write change_map.html: before/after class layers, change layer with popups, AOI, legend."""
    import folium

    d = Path(folder)
    frames = {k: v.to_crs("EPSG:4326") for k, v in layers(d).items()}
    extent = frames.get("aoi", next(iter(frames.values())))
    minx, miny, maxx, maxy = extent.total_bounds
    m = folium.Map(tiles="OpenStreetMap", control_scale=True)
    for name in ("tiles_before", "tiles_after", "tiles"):
        if name in frames:
            gdf = frames[name][["class_id", "class_name", "confidence", "date", "geometry"]]
            folium.GeoJson(gdf, name=name.replace("_", " "), show=name != "tiles_after",
                           style_function=lambda f: {"fillColor": hex_colour(int(f["properties"]["class_id"])),
                                                     "color": "none", "fillOpacity": 0.6},
                           tooltip=folium.GeoJsonTooltip(["class_name", "confidence", "date"])).add_to(m)
    if "changes" in frames and len(frames["changes"]):
        ch = frames["changes"][["from_class", "to_class", "confidence_before", "confidence_after", "hectares",
                                "geometry"]]
        folium.GeoJson(ch, name="changes", style_function=lambda f: {"color": "#ff00ff", "weight": 2, "fillOpacity": 0},
                       popup=folium.GeoJsonPopup(list(ch.columns[:-1]))).add_to(m)
    if "aoi" in frames:
        folium.GeoJson(frames["aoi"][["geometry"]], name="AOI",
                       style_function=lambda f: {"color": "black", "weight": 2, "fillOpacity": 0}).add_to(m)
    if (d / "summary.json").exists():
        s = json.loads((d / "summary.json").read_text())
        title = (f"{s['before']['date']} ({s['before']['model']}) to {s['after']['date']} ({s['after']['model']}): "
                 f"{s['changed_ha']:.1f} ha changed" + (" - MODEL MISMATCH" if s["model_mismatch"] else ""))
        m.get_root().html.add_child(folium.Element(f'<div style="position:fixed;top:8px;left:60px;z-index:9999;'
                                                   f'background:white;padding:4px;font:13px sans-serif">{title}</div>'))
    m.get_root().html.add_child(folium.Element(_legend()))
    folium.LayerControl(collapsed=False).add_to(m)
    m.fit_bounds([[miny, minx], [maxy, maxx]])
    out = Path(out_html) if out_html else d / "change_map.html"
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    m.save(str(tmp))
    os.replace(tmp, out)
    return out
