"""View stage: the change map as one self-contained HTML file (Leaflet via folium, with its JS and
CSS embedded by offlinefolium, so that it opens without internet; only the basemap tiles need it).

Layers, bottom to top: each date's true-colour image (B04, B03, B02 of the scene itself, 2-98 %
stretch, warped to the map's Web Mercator, at most MAX_IMAGE_PX on a side), the class maps (one
GeoJSON polygon per map cell up to MAX_FEATURES cells, else a paletted image of the class raster),
cloud-masked cells, the uncertain cells hatched (neither P(change) nor P(no change) reaches
--min-confidence: no change is counted there), the changed cells outlined in CHANGE_COLOUR (solid: a
conversion between land-cover groups, dashed: a change within one) with a popup (both classes, both
posteriors, P(change), both dates' top-3 probabilities), the AOI. The header gives every hectare figure of summary.json; the legend (above
Leaflet's scale bar) has a slider for the class layers' opacity and a chart of class areas per date."""
from __future__ import annotations

import base64
import json
import os
import warnings
from html import escape
from pathlib import Path

import numpy as np

from ..outputs import (SKY_CATEGORIES, SKY_CLOUD, SKY_SNOW, SUMMARY_KEYS, atomic_write, cloud_code, read_json,
                       read_raster)
from ..classes import CLASSES, COLOURS, hex_colour
from ..dates import metadata_date
from ..errors import AtlasWarning
from .export import layers

MAX_IMAGE_PX = 2048  # long side of a date's true-colour image (a full 10980 px tile: ~54 m pixels)
MAX_FEATURES = 4000  # class cells as GeoJSON polygons up to this many per layer, else as an image
WEB = "EPSG:3857"
#: change outlines: lime, the colour furthest (RGB distance >= 150) from every class, cloud, snow and AOI colour
CHANGE_COLOUR = "#00ff00"
UNCERTAIN_RGBA = ((60, 60, 60, 230), (255, 255, 255, 70))  # hatching: stripes, background


def _legend(chart: str = "") -> str:
    rows = "".join(f'<div><span style="display:inline-block;width:12px;height:12px;background:{hex_colour(i + 1)};'
                   f'margin-right:6px"></span>{i + 1} {c}</div>' for i, c in enumerate(CLASSES))
    sky = "".join('<div><span style="display:inline-block;width:12px;height:12px;background:#%02x%02x%02x;'
                  'border:1px solid #999;margin-right:6px"></span>%s (not labelled)</div>' % (*rgb, name)
                  for name, rgb in (("cloud / shadow", CLOUD_RGB), ("snow / ice", SNOW_RGB)))
    marks = "" if not chart else (
        '<div><span style="display:inline-block;width:12px;height:12px;margin-right:6px;border:1px solid #999;'
        'background:repeating-linear-gradient(45deg,#3c3c3c 0 2px,#fff 2px 6px)"></span>uncertain (no change '
        f'counted)</div><div><span style="display:inline-block;width:12px;height:12px;margin-right:6px;border:2px '
        f'solid {CHANGE_COLOUR}"></span>change between groups</div><div><span style="display:inline-block;'
        f'width:12px;height:12px;margin-right:6px;border:2px dashed {CHANGE_COLOUR}"></span>change within a group</div>')
    # bottom: 56px leaves Leaflet's scale bar (bottom left) in view
    return ('<div id="atlas-legend" style="position:fixed;bottom:56px;left:10px;z-index:9999;background:white;'
            'padding:8px;font:12px sans-serif;border:1px solid #999;max-height:80vh;overflow:auto">'
            '<b>EuroSAT classes</b>' + rows + sky + marks + chart
            + '<div style="margin-top:6px">class layers opacity <input id="atlas-opacity" type="range" min="0" '
              'max="100" value="60" style="width:90px;vertical-align:middle"></div></div>')


def area_chart(summary: dict) -> str:
    """An SVG bar chart of each class's hectares on each date (summary.json's `classes`)."""
    per = summary.get("classes") or {}
    top = max([v for c in per.values() for v in (c["before_ha"], c["after_ha"])] + [1e-9])
    b, a = escape(_label(summary, "before")), escape(_label(summary, "after"))
    left, w, rows = 132, 130, []
    for i, name in enumerate(CLASSES):
        c = per.get(name, {"before_ha": 0, "after_ha": 0})
        y = 14 + i * 16
        for j, key in enumerate(("before_ha", "after_ha")):
            rows.append(f'<rect x="{left}" y="{y + j * 6}" width="{c[key] / top * w:.1f}" height="5" '
                        f'fill="{hex_colour(i + 1)}" fill-opacity="{0.55 if j == 0 else 1}" stroke="#333" '
                        f'stroke-width="0.3"><title>{escape(name)} {b if j == 0 else a}: {c[key]:.2f} ha</title></rect>')
        rows.append(f'<text x="{left - 4}" y="{y + 9}" text-anchor="end">{escape(name)}</text>')
    return ('<div style="margin-top:6px"><b>class areas (ha)</b><br><small>upper bar ' + b + ', lower ' + a
            + f'; longest {top:.0f} ha</small><br><svg id="atlas-chart" width="{left + w + 4}" height="{18 + 16 * len(CLASSES)}" '
            'style="font:10px sans-serif">' + "".join(rows) + '</svg></div>')


def _prior_note(summary: dict) -> list[str]:
    """The line saying which change prior decided (and where it came from), for outputs that record it."""
    from ..change.compare import prior_brief

    d = summary.get("change_decision", {})
    if "stay_source" not in d:
        return []
    return [f"change decided from both dates with a transition prior: keep the class with probability "
            f"{prior_brief(d)}, changed or unchanged where the posterior reaches "
            f"{d['threshold']:g}, uncertain otherwise"]


def _banner(lines: list[str], left: str = "60px") -> str:
    """A box at the top of the page; `lines` are plain text (escaped here: paths and dates come from files)."""
    text = "<br>".join(f"<small>{escape(t)}</small>" if i else escape(t) for i, t in enumerate(lines))
    return (f'<div class="atlas-banner" style="position:fixed;top:8px;left:{left};z-index:9999;background:white;'
            f'padding:4px;font:13px sans-serif;max-width:calc(100% - {left} - 200px)">{text}</div>')  # clear of the layer switcher


def _opacity_script(names: list[str]) -> str:
    """JS: the legend's slider sets the opacity of the class layers (GeoJSON fills or images). The
    layers are looked up when the slider moves: this script runs before folium defines them."""
    return ("(function(){var s=document.getElementById('atlas-opacity');if(!s)return;"
            f"var names={json.dumps(names)};"
            "s.addEventListener('input',function(){var v=s.value/100;names.forEach(function(n){var l=window[n];"
            "if(!l)return;if(l.setOpacity){l.setOpacity(v)}else{l.setStyle({fillOpacity:v})}})});})();")


def data_url(rgba: np.ndarray, driver: str = "PNG", **options) -> str:
    """(4, h, w) uint8 RGBA -> a data: URL of the image encoded by GDAL (PNG lossless, WEBP lossy)."""
    import warnings

    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.io import MemoryFile

    with MemoryFile() as mem, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a picture, georeferenced by Leaflet
        with mem.open(driver=driver, width=rgba.shape[2], height=rgba.shape[1], count=4, dtype="uint8",
                      **options) as dst:
            dst.write(rgba)
        raw = mem.read()
    return f"data:image/{driver.lower()};base64,{base64.b64encode(raw).decode()}"


def to_web(rgba: np.ndarray, transform, crs, nearest: bool) -> tuple[np.ndarray, list[list[float]]]:
    """Warp (4, h, w) RGBA from `crs` to Web Mercator (Leaflet stretches an image overlay linearly in
    the map's projection) -> (RGBA, [[south, west], [north, east]])."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject, transform_bounds

    h, w = rgba.shape[1:]
    bounds = (transform.c, transform.f + h * transform.e, transform.c + w * transform.a, transform.f)
    dst_t, dw, dh = calculate_default_transform(crs, WEB, w, h, *bounds)
    out = np.zeros((4, dh, dw), np.uint8)
    for i in range(4):
        reproject(rgba[i], out[i], src_transform=transform, src_crs=crs, dst_transform=dst_t, dst_crs=WEB,
                  resampling=Resampling.nearest if nearest or i == 3 else Resampling.bilinear)
    west, south, east, north = transform_bounds(WEB, "EPSG:4326", dst_t.c, dst_t.f + dh * dst_t.e,
                                                dst_t.c + dw * dst_t.a, dst_t.f)
    return out, [[south, west], [north, east]]


def true_colour(scene_paths: str | list[str], bounds: tuple[float, float, float, float] | None = None,
                max_px: int = MAX_IMAGE_PX):
    """The scene's B04, B03, B02 over `bounds` (its CRS; default the whole scene) as (RGBA (4, h, w)
    uint8, transform, crs): block means read by GDAL to at most `max_px` a side, each band stretched
    from its 2nd to 98th percentile of valid pixels, nodata transparent. Several scenes (a period, on
    one grid): the per-pixel median of their valid pixels, stretched likewise."""
    paths = [scene_paths] if isinstance(scene_paths, str) else list(scene_paths)
    reads = [_read_rgb(p, bounds, max_px) for p in paths]
    dn, valid, transform, crs = reads[0]
    if len(reads) > 1:  # scenes that do not cover the first one's window alike are left out
        same = [r for r in reads if r[0].shape == dn.shape and r[2] == transform and r[3] == crs]
        stack = np.stack([np.where(r[1], r[0], np.nan) for r in same])
        valid = np.any([r[1] for r in same], axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: nodata on every date
            dn = np.nan_to_num(np.nanmedian(stack, axis=0))
    rgba = np.zeros((4,) + valid.shape, np.uint8)
    if valid.any():
        lo, hi = np.percentile(dn[:, valid], [2, 98], axis=1)
        rgba[:3] = np.clip((dn - lo[:, None, None]) / np.maximum(hi - lo, 1)[:, None, None] * 255, 0, 255)
    rgba[3] = np.where(valid, 255, 0)
    return rgba, transform, crs


def _read_rgb(scene_path: str, bounds, max_px: int):
    """B04, B03, B02 DN of a scene over `bounds`, decimated to at most `max_px` a side -> (dn (3, h, w)
    float, valid, transform, crs)."""
    from affine import Affine
    from rasterio.windows import Window, from_bounds

    from ..read import open_scene

    scene = open_scene(scene_path, ("B04", "B03", "B02"))
    win = Window(0, 0, scene.width, scene.height)
    if bounds is not None:
        win = from_bounds(*bounds, transform=scene.affine).round_offsets().round_lengths().intersection(win)
    f = max(1, -(-max(int(win.width), int(win.height)) // max_px))
    win = Window(win.col_off, win.row_off, int(win.width) // f * f, int(win.height) // f * f)
    dn, valid = scene.read(win, factor=f)  # offset applied
    t = scene.affine
    transform = Affine(t.a * f, 0, t.c + win.col_off * t.a, 0, t.e * f, t.f + win.row_off * t.e)
    return dn.astype(np.float32), valid, transform, scene.crs


def _palette_rgba(ids: np.ndarray, colours: dict[int, tuple[int, int, int, int]]) -> np.ndarray:
    lut = np.zeros((256, 4), np.uint8)
    for v, c in colours.items():
        lut[v] = c
    return lut[ids].transpose(2, 0, 1)


def _raster_picture(tif: Path, colours: dict, max_side: int | None = None) -> tuple[str, list]:
    """A categorical raster (class ids, cloud flags) as a paletted PNG in Web Mercator: (data URL, bounds);
    with `max_side`, read at most that many cells a side (nearest, from the COG's overviews)."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(tif) as src:
        t, crs, (h, w) = src.transform, src.crs, src.shape
        if max_side and max(h, w) > max_side:
            f = max(h, w) / max_side
            shape = (max(1, round(h / f)), max(1, round(w / f)))
            ids = src.read(1, out_shape=shape, resampling=Resampling.nearest)
            t = t * t.scale(w / shape[1], h / shape[0])
        else:
            ids = src.read(1)
    rgba, bounds = to_web(_palette_rgba(ids, colours), t, crs, nearest=True)
    return data_url(rgba), bounds


def _imagery_picture(scene: str | list[str], bounds=None) -> tuple[tuple[str, list] | None, str | None]:
    """A scene's (a period's: its scenes' median) true-colour image in Web Mercator, (data URL, bounds);
    or None and why it cannot be read."""
    from ..errors import AtlasError

    try:
        rgba, t, crs = true_colour(scene, bounds)
    except (AtlasError, OSError) as e:
        return None, str(e)
    img, bnds = to_web(rgba, t, crs, nearest=False)
    return (data_url(img, "WEBP", QUALITY=80), bnds), None


CLASS_RGBA = {i + 1: (*rgb, 255) for i, rgb in enumerate(COLOURS)}
CLOUD_RGB = SKY_CATEGORIES[SKY_CLOUD][1]  # colours no class uses, visible over white cloud and snow in the imagery
SNOW_RGB = SKY_CATEGORIES[SKY_SNOW][1]


class DatePictures:
    """What one date's layers show, computed once for every page that draws them: the true-colour
    image (or why there is none), the class raster as a picture where its cells are too many or none
    (e.g. all cloud), and the cloud cells' picture where there are any."""

    def __init__(self, sources: list[Path], tif: Path, cells, date: str, crop=None, cloud: Path | None = None):
        scenes = [read_json(f / "run.json").get("input", {}).get("path", "") for f in sources]
        self.date, self.cells = escape(date), cells
        self.image, self.why = _imagery_picture(scenes, crop)
        as_image = not len(cells) or len(cells) > MAX_FEATURES
        self.classes = _raster_picture(tif, CLASS_RGBA) if as_image else None
        if cloud is None or not cloud.exists():  # a classify output, or a compare made before <side>_cloud.tif
            cloud = sources[0] / "cloud.tif"
        code = cloud_code(cloud)
        colours = {code: (*CLOUD_RGB, 255), **({SKY_SNOW: (*SNOW_RGB, 255)} if code == SKY_CLOUD else {})}
        self.cloud = _raster_picture(cloud, colours) if _any(cloud, tuple(colours)) else None

    @staticmethod
    def _overlay(folium, target, picture, name: str, show: bool, **kw):
        return folium.raster_layers.ImageOverlay(picture[0], picture[1], name=name, show=show,
                                                 interactive=False, **kw).add_to(target)

    def add_image(self, folium, target, show: bool = True) -> None:
        """Add the true-colour image (where there is one) to a map."""
        if self.image:
            self._overlay(folium, target, self.image, f"image {self.date}".strip(), show)

    def add_layers(self, folium, target, show: bool = True) -> str:
        """Add the class and cloud layers to a map; -> the class layer's JavaScript name (for the
        opacity slider)."""
        if self.classes:
            layer = self._overlay(folium, target, self.classes, f"classes {self.date}".strip(), show, opacity=0.6)
        else:
            gdf = self.cells[["class_id", "class_name", "confidence", "geometry"]].assign(date=self.date)
            layer = folium.GeoJson(gdf, name=f"classes {self.date}".strip(), show=show,
                                   style_function=lambda f: {"fillColor": hex_colour(int(f["properties"]["class_id"])),
                                                             "color": "none", "fillOpacity": 0.6},
                                   tooltip=folium.GeoJsonTooltip(["class_name", "confidence", "date"])).add_to(target)
        if self.cloud:
            self._overlay(folium, target, self.cloud, f"cloud {self.date}".strip(), show, opacity=0.7)
        return layer.get_name()


def _aoi_layer(folium, gdf):
    return folium.GeoJson(gdf[["geometry"]], name="AOI",
                          style_function=lambda f: {"color": "black", "weight": 2, "fillOpacity": 0})


def top3(changes, probs: np.ndarray) -> list[str]:
    """For each changed cell (row, col of the compare grid), the top-3 class probabilities the
    compare took its label from (`<date>_probabilities.tif`: a period's composite): 'Forest 0.81, ...'."""
    out = []
    for r, c in zip(changes["row"], changes["col"]):
        p = probs[:, r, c]
        out.append("" if np.isnan(p).all() else ", ".join(f"{CLASSES[k]} {p[k]:.2f}" for k in np.argsort(-p)[:3]))
    return out


def _save(m, out: Path) -> Path:
    atomic_write(out, lambda f: m.save(f, close_file=False))
    return out


def change_map(folder: str | os.PathLike, out_html: str | os.PathLike | None = None,
               side_by_side: bool = False) -> Path:
    """Write change_map.html (a compare or a classify output folder): true-colour imagery, class
    layers, clouds, changes with popups, AOI, legend with an opacity slider, layer control, fitted
    to the AOI. With `side_by_side` (a compare folder), also write change_map_side_by_side.html:
    before and after, each over its own image, on two synchronised maps."""
    import offlinefolium as folium

    d = Path(folder)
    layers_native = layers(d)
    frames = {k: v.to_crs("EPSG:4326") for k, v in layers_native.items()}
    if "aoi" in frames:
        minx, miny, maxx, maxy = frames["aoi"].total_bounds
    else:  # the class raster's footprint (there may be no tile at all: e.g. all cloud)
        minx, miny, maxx, maxy = _bounds(d / "lulc.tif", "EPSG:4326")
    summary = read_json(d / "summary.json", SUMMARY_KEYS) if (d / "summary.json").exists() else None
    if summary:  # part -> (classify folders, class raster, cells layer, date, the side's sky)
        parts = {p: ([Path(f) for f in summary[p].get("sources", [summary[p]["source"]])], d / f"{p}.tif",
                     f"cells_{p}", _label(summary, p), d / f"{p}_cloud.tif") for p in ("before", "after")}
        crop = _union(_bounds(d / "before.tif"), tuple(layers_native["aoi"].total_bounds))
    else:
        parts = {"map": ([d], d / "lulc.tif", "cells",
                         metadata_date(read_json(d / "run.json", ("input",))["input"].get("date")) or "", None)}
        crop = None
    pictures = {p: DatePictures(src, tif, frames[cells], date, crop, sky)
                for p, (src, tif, cells, date, sky) in parts.items()}
    m = folium.Map(tiles="OpenStreetMap", control_scale=True)
    notes = [f"no image for {p.date or 'the scene'}: {p.why}" for p in pictures.values() if p.why]
    notes += [f"{p.date or 'the scene'}: no labelled cell in the AOI (all cloud, snow or nodata): its class layer "
              "and chart bars are empty" for p in pictures.values() if not len(p.cells)]
    for n in notes:  # the terminal hears it too, not only the page
        warnings.warn(n, AtlasWarning, stacklevel=2)
    for i, p in enumerate(pictures.values()):  # both images first, under every class layer
        p.add_image(folium, m, show=i == 0)
    class_layers = [p.add_layers(folium, m, show=i == 0) for i, p in enumerate(pictures.values())]
    if summary and (hatch := _uncertain_picture(d)):
        folium.raster_layers.ImageOverlay(hatch[0], hatch[1], name="uncertain", interactive=False).add_to(m)
    if "changes" in frames and len(frames["changes"]):
        _changes_layer(folium, d, frames, summary, notes).add_to(m)
    if "aoi" in frames:
        _aoi_layer(folium, frames["aoi"]).add_to(m)
    if summary:
        b, a = summary["before"], summary["after"]
        m.get_root().html.add_child(folium.Element(_banner([
            f"{_label(summary, 'before')} ({b['model']}) to {_label(summary, 'after')} ({a['model']}): "
            f"{summary['changed_ha']:.2f} ha changed ({summary.get('conversion_ha', 0):.2f} ha between land-cover "
            f"groups), {summary.get('uncertain_ha', 0):.2f} ha uncertain, {summary.get('cloud_ha', 0):.2f} ha cloud, "
            f"{summary.get('snow_ha', 0):.2f} ha snow, {summary.get('nodata_ha', 0):.2f} ha nodata, of "
            f"{summary.get('aoi_cells_ha', 0):.2f} ha of map cells in the AOI"
            + (f"; {summary['outside_scene_ha']:.2f} ha of the AOI outside the scenes, not looked at"
               if summary.get("outside_scene_ha") else "")
            + (" - MODEL MISMATCH" if summary["model_mismatch"] else ""),
            *_prior_note(summary), *notes])))
    elif notes:
        m.get_root().html.add_child(folium.Element(_banner(notes)))
    m.get_root().html.add_child(folium.Element(_legend(area_chart(summary) if summary else "")))
    m.get_root().script.add_child(folium.Element(_opacity_script(class_layers)))
    folium.LayerControl(collapsed=False).add_to(m)
    m.fit_bounds([[miny, minx], [maxy, maxx]])
    out = _save(m, Path(out_html) if out_html else d / "change_map.html")
    if side_by_side and summary:
        _side_by_side(folium, frames, pictures, summary, out.with_name(out.stem + "_side_by_side.html"),
                      [[miny, minx], [maxy, maxx]])
    return out


def _any(tif: Path, values: tuple[int, ...]) -> bool:
    """Whether `tif` exists and holds one of `values` somewhere (a cloud.tif worth drawing)."""
    import rasterio

    if not tif.exists():
        return False
    with rasterio.open(tif) as src:
        return bool(np.isin(src.read(1), values).any())


def _bounds(tif: Path, crs: str | None = None) -> tuple[float, float, float, float]:
    """Bounds of a raster, in its CRS or `crs` (a damaged raster: AtlasError naming it)."""
    from rasterio.transform import array_bounds
    from rasterio.warp import transform_bounds

    arr, t, src_crs, _ = read_raster(tif)
    b = array_bounds(*arr.shape, t)  # west, south, east, north
    return tuple(transform_bounds(src_crs, crs, *b)) if crs else b


def _label(summary: dict, part: str) -> str:
    """A date's name on the page: its acquisition date, a period's '<first> to <last> (n dates)', or
    'before' / 'after' (plain text: escaped where it reaches HTML)."""
    s = summary[part]
    dates = [d for d in map(metadata_date, s.get("dates") or [s["date"]]) if d]
    if len(dates) > 1:
        return f"{dates[0]} to {dates[-1]} ({len(dates)} dates)"
    return dates[0] if dates else part


def _union(a: tuple, b: tuple) -> tuple[float, float, float, float]:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _changes_layer(folium, folder: Path, frames, summary, notes):
    """Changed cells outlined, popups with both classes, confidences and top-3 probabilities (the
    MAX_FEATURES most confident where there are more: the banner says so)."""
    ch = frames["changes"]
    if len(ch) > MAX_FEATURES:
        notes.append(f"popups on the {MAX_FEATURES} most confident of {len(ch)} changed cells")
        ch = ch.assign(_c=np.minimum(ch["confidence_before"], ch["confidence_after"])).nlargest(MAX_FEATURES, "_c")
    ch = ch.reset_index(drop=True)
    probs = {p: read_raster(folder / f"{p}_probabilities.tif", every_band=True)[0] for p in ("before", "after")}
    ch = ch.assign(top3_before=top3(ch, probs["before"]), top3_after=top3(ch, probs["after"]),
                   confidence_before=ch["confidence_before"].round(3), confidence_after=ch["confidence_after"].round(3))
    cols = ["from_class", "to_class", "kind", "confidence_before", "confidence_after", "top3_before", "top3_after",
            "hectares"]
    b, a = _label(summary, "before"), _label(summary, "after")
    aliases = ["from", "to", "change", f"confidence {b}", f"confidence {a}", f"top-3 {b}", f"top-3 {a}", "hectares"]
    if "p_change" in ch and ch["p_change"].notna().any():  # compare outputs of the joint decision
        ch = ch.assign(p_change=ch["p_change"].round(3))
        cols.insert(3, "p_change"), aliases.insert(3, "P(change)")
    return folium.GeoJson(ch[cols + ["geometry"]], name="changes",
                          style_function=lambda f: {"color": CHANGE_COLOUR, "weight": 3, "fillOpacity": 0,
                                                    "dashArray": None if f["properties"]["kind"] == "conversion"
                                                    else "5 4"},
                          popup=folium.GeoJsonPopup(cols, aliases=aliases))


def _uncertain_picture(d: Path) -> tuple[str, list] | None:
    """The cells labelled on both dates where change is undecided (compare.read_decided), hatched (each cell drawn up to
    8 pixels wide, the picture at most MAX_IMAGE_PX), as (data URL, bounds); None where there are none."""
    from affine import Affine

    from ..change.compare import read_decided

    cells = read_decided(d)
    t, crs = cells["transform"], cells["crs"]
    unsure = cells["valid"] & ~cells["confident"]
    if not unsure.any():
        return None
    px = max(1, min(8, MAX_IMAGE_PX // max(unsure.shape)))
    big = np.kron(unsure, np.ones((px, px), bool))
    yy, xx = np.indices(big.shape)
    stripe = (yy + xx) % px < 2 if px >= 4 else np.ones(big.shape, bool)  # too small to hatch: filled
    rgba = np.zeros((4,) + big.shape, np.uint8)
    for i in range(4):
        rgba[i] = np.where(big, np.where(stripe, UNCERTAIN_RGBA[0][i], UNCERTAIN_RGBA[1][i]), 0)
    fine = Affine(t.a / px, 0, t.c, 0, t.e / px, t.f)
    img, bounds = to_web(rgba, fine, crs, nearest=True)
    return data_url(img), bounds


def _side_by_side(folium, frames, pictures: dict[str, DatePictures], summary, out: Path, fit) -> Path:
    from offlinefolium.plugins import DualMap

    dm = DualMap(tiles="OpenStreetMap", control_scale=True)
    names = []
    for part, sub in (("before", dm.m1), ("after", dm.m2)):
        pictures[part].add_image(folium, sub)
        names.append(pictures[part].add_layers(folium, sub))
        if "aoi" in frames:
            _aoi_layer(folium, frames["aoi"]).add_to(sub)
        folium.LayerControl(collapsed=True).add_to(sub)
    for part, left in (("before", "60px"), ("after", "calc(50% + 60px)")):
        dm.m1.get_root().html.add_child(folium.Element(_banner([f"{part}: {_label(summary, part)}"], left)))
    dm.m1.get_root().html.add_child(folium.Element(_legend()))
    dm.m1.get_root().script.add_child(folium.Element(_opacity_script(names)))
    dm.fit_bounds(fit)
    return _save(dm, out)
