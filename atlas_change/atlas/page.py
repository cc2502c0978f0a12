"""atlas.html: the units as a choropleth of their artificial land (share of the unit, last period)
and of its change (first to last period, hectares), each period's class map, and a popup per unit
with its hectares by land-cover group and period. Self-contained (offlinefolium); every text taken
from the files (unit names, periods) is escaped."""
from __future__ import annotations

from html import escape
from pathlib import Path

import numpy as np

from ..classes import GROUP_NAMES
from ..outputs import atomic_write

#: the choropleth's ramp: share of the unit (0..1) -> colour, light to dark red
RAMP = ((0.0, "#fff5f0"), (0.05, "#fcbba1"), (0.1, "#fb6a4a"), (0.2, "#cb181d"), (0.4, "#67000d"))
ROWS = (*GROUP_NAMES, "uncertain", "cloud", "snow", "nodata")


def ramp_colour(share: float) -> str:
    """The RAMP colour of a share (NaN: grey)."""
    if not np.isfinite(share):
        return "#bdbdbd"
    return [c for v, c in RAMP if share >= v][-1]


def unit_table(frame, unit: str, periods: list[str]) -> str:
    """A unit's hectares by group (and uncertain, cloud, snow, nodata) and period, as an HTML table."""
    mine = frame[frame["unit"] == unit]
    head = "".join(f"<th>{escape(p)}</th>" for p in periods)
    rows = []
    for g in ROWS:
        cells = "".join(f"<td style='text-align:right'>{mine[(mine.period == p) & (mine.group == g)].hectares.sum():,.1f}</td>"
                        for p in periods)
        rows.append(f"<tr><td>{escape(g)}</td>{cells}</tr>")
    return (f"<b>{escape(unit)}</b> (hectares)<table style='font-size:11px'><tr><th></th>{head}</tr>"
            + "".join(rows) + "</table>")


def model_line(frame) -> str:
    """The model(s) and weights that made the figures, as a line of the legend (escaped)."""
    models = frame[frame["model"] != ""].drop_duplicates(["model", "weights_sha256"])
    names = ", ".join(f"{escape(m)} ({escape(w[:12])})" for m, w in zip(models["model"], models["weights_sha256"]))
    return f'<div style="margin-top:4px">model: {names or "none"}</div>'


#: the period maps are drawn on the page at most this many cells a side (read from the COG's overviews):
#: a country's grid of thousands of cells a side would make a page no browser opens
MAX_PICTURE_CELLS = 2048


def write_page(out: Path, units, frame, periods: list[str]) -> Path:
    """atlas.html in `out` from the units (GeoDataFrame with `unit`) and stats.csv's rows (`frame`)."""
    import offlinefolium as folium

    from ..publish.view import CLASS_RGBA, _legend, _opacity_script, _raster_picture

    mapped = [p for p in periods if (out / p / "lulc.tif").exists()]
    area = frame[frame.period == periods[0]].groupby("unit")["hectares"].sum()
    artificial = frame[frame.group == "artificial"].pivot_table(index="unit", columns="period", values="hectares",
                                                                 aggfunc="sum")
    gdf = units.to_crs(4326).copy()
    last, first = periods[-1], periods[0]
    gdf["share"] = [float(artificial.at[u, last] / area[u]) if area.get(u, 0) > 0 else float("nan") for u in gdf.unit]
    gdf["change_ha"] = [float(artificial.at[u, last] - artificial.at[u, first]) for u in gdf.unit]
    gdf["table"] = [unit_table(frame, u, periods) for u in gdf.unit]
    gdf["label"] = [f"{escape(u)}: artificial {s:.1%} in {escape(last)}, {c:+,.1f} ha since {escape(first)}"
                    for u, s, c in zip(gdf.unit, gdf.share, gdf.change_ha)]
    minx, miny, maxx, maxy = gdf.total_bounds
    m = folium.Map(tiles="OpenStreetMap", control_scale=True)
    class_layers = []
    for i, p in enumerate(mapped):
        url, bounds = _raster_picture(out / p / "lulc.tif", CLASS_RGBA, MAX_PICTURE_CELLS)
        layer = folium.raster_layers.ImageOverlay(url, bounds, name=f"classes {escape(p)}", show=i == len(mapped) - 1,
                                                  opacity=0.6).add_to(m)
        class_layers.append(layer.get_name())
    folium.GeoJson(gdf[["unit", "share", "label", "table", "geometry"]], name=f"artificial land {escape(last)}",
                   style_function=lambda f: {"fillColor": ramp_colour(f["properties"]["share"]), "fillOpacity": 0.7,
                                             "color": "#333", "weight": 1},
                   tooltip=folium.GeoJsonTooltip(["label"], labels=False),
                   popup=folium.GeoJsonPopup(["table"], labels=False)).add_to(m)
    folium.GeoJson(gdf[["unit", "change_ha", "label", "geometry"]], name=f"artificial change {escape(first)} -> {escape(last)}",
                   show=False, style_function=lambda f: {
                       "fillColor": "#b2182b" if f["properties"]["change_ha"] > 0 else (
                           "#2166ac" if f["properties"]["change_ha"] < 0 else "#f7f7f7"),
                       "fillOpacity": 0.7, "color": "#333", "weight": 1},
                   tooltip=folium.GeoJsonTooltip(["label"], labels=False)).add_to(m)
    ramp = "".join(f'<div><span style="display:inline-block;width:12px;height:12px;background:{c};margin-right:6px">'
                   f'</span>&ge; {v:.0%}</div>' for v, c in RAMP)
    m.get_root().html.add_child(folium.Element(_legend()))
    m.get_root().html.add_child(folium.Element(
        '<div style="position:fixed;bottom:56px;right:10px;z-index:9999;background:white;padding:8px;'
        f'font:12px sans-serif;border:1px solid #999"><b>artificial land, share of the unit ({escape(last)})</b>'
        f'{ramp}<div style="margin-top:4px">change layer: red gain, blue loss</div>{model_line(frame)}</div>'))
    m.get_root().script.add_child(folium.Element(_opacity_script(class_layers)))
    folium.LayerControl(collapsed=False).add_to(m)
    m.fit_bounds([[miny, minx], [maxy, maxx]])
    path = out / "atlas.html"
    atomic_write(path, lambda f: m.save(f, close_file=False))
    return path
