"""Sample stage: a seeded stratified random sample of a compare output's map cells for accuracy
assessment and error-adjusted areas (Olofsson et al. 2014; the estimators are in assess.py).

Strata are the change map's classes: `stable <class or group>` (decided, and no change at
that level), each `<from> -> <to>` present, and `uncertain` (labelled on both dates, neither P(change)
nor P(no change) reaching --min-confidence: the map abstains there, so its real change is estimated too). Cloud, snow
and nodata cells are not mapped and not sampled. Writes strata.csv, sample.csv (an empty `reference`
column for the interpreter), sample.gpkg and sample.html (each sampled cell on both dates' imagery)."""
from __future__ import annotations

import os
from html import escape
from pathlib import Path

import numpy as np

from ..outputs import cell_boxes, csv_text, hectares, read_json, staged_output, strict_json, write_file
from ..publish.export import write_gpkg
from .assess import allocate, sample_size
from ..classes import CLASSES, GROUP_NAMES, group_of
from ..errors import AtlasError, AtlasWarning

LEVELS = ("groups", "classes")
#: user's accuracies assumed when sizing the sample (eq. 13): the paper's example used 0.6-0.7 for
#: change and 0.9-0.95 for stable classes; the uncertain stratum is, by definition, a coin toss
EXPECTED_USERS = {"stable": 0.9, "change": 0.7, "uncertain": 0.5}


def strata_raster(folder: Path, level: str) -> tuple[np.ndarray, list[str], list[str], dict]:
    """(stratum ids per cell (0 = not sampled), stratum names (id - 1), the reference legend, and
    compare.read_decided's dict: both dates' classes, grid, summary)."""
    from ..change.compare import read_decided

    if level not in LEVELS:
        raise AtlasError(f"--strata {level}: must be one of {', '.join(LEVELS)}")
    info = read_decided(folder)
    la, lb, valid, confident = info["before"], info["after"], info["valid"], info["confident"]
    names = GROUP_NAMES if level == "groups" else CLASSES
    ka, kb = (group_of(la), group_of(lb)) if level == "groups" else (la.astype(int), lb.astype(int))
    code = np.zeros(la.shape, np.int32)
    labels = []
    for key, mask in ([(f"stable {n}", confident & (ka == i) & (kb == i)) for i, n in enumerate(names, 1)]
                      + [(f"{names[f - 1]} -> {names[g - 1]}", confident & (ka == f) & (kb == g))
                         for f in range(1, len(names) + 1) for g in range(1, len(names) + 1) if f != g]
                      + [("uncertain", valid & ~confident)]):
        if mask.any():
            labels.append(key)
            code[mask] = len(labels)
    legend = [f"stable {n}" for n in names] + [x for x in labels if "->" in x]
    return code, labels, legend, info


def sample(folder: str | os.PathLike, out: str | os.PathLike, *, seed: int = 0, level: str = "groups",
           n: int | None = None, target_se: float = 0.01, minimum: int = 50, images: bool = True) -> dict:
    """Draw the sample and write strata.csv, sample.csv, sample.gpkg and sample.html into `out`.
    `n`: total size (default: Olofsson et al. eq. 13 for a standard error `target_se` of overall
    accuracy with EXPECTED_USERS), allocated by assess.allocate with `minimum` per stratum."""
    import warnings

    d = Path(folder)
    code, labels, legend, info = strata_raster(d, level)
    if not labels:
        raise AtlasError(f"{d}: no mapped cell to sample (all cloud, snow or nodata in the AOI)")
    t, crs, summary = info["transform"], info["crs"], info["summary"]
    cell_ha = abs(t.a * t.e) / 1e4
    cells = np.bincount(code.ravel(), minlength=len(labels) + 1)[1:]
    w = cells / cells.sum()
    expected = [EXPECTED_USERS["uncertain" if x == "uncertain" else "change" if "->" in x else "stable"] for x in labels]
    size = n or sample_size(w, expected, target_se)
    alloc = allocate(cells, size, minimum)
    if alloc.sum() < size:
        warnings.warn(f"{d}: only {alloc.sum()} cells to sample of the {size} asked (small strata taken whole)",
                      AtlasWarning, stacklevel=2)
    rng = np.random.default_rng(seed)
    rows, cols, strata = [], [], []
    for i, k in enumerate(alloc, 1):
        r, c = np.nonzero(code == i)
        pick = rng.choice(len(r), size=int(k), replace=False)
        rows += r[pick].tolist()
        cols += c[pick].tolist()
        strata += [labels[i - 1]] * int(k)
    order = rng.permutation(len(rows))  # the interpreter sees strata mixed, not grouped (no anchoring)
    rows, cols, strata = (np.asarray(v)[order] for v in (rows, cols, strata))
    frame = _frame(rows, cols, strata, info["before"], info["after"], t, crs)
    table = frame.drop(columns="geometry")
    strata_rows = [["stratum", "map_cells", "map_ha", "cell_ha", "map_share", "sample_cells", "reference_class",
                    "other_reference"]]
    others = ";".join(x for x in legend if x not in labels)
    for i, x in enumerate(labels):
        strata_rows.append([x, str(int(cells[i])), f"{hectares(cells[i] * cell_ha):.2f}", f"{cell_ha:g}",
                            f"{w[i]:.6f}", str(int(alloc[i])), "no" if x == "uncertain" else "yes",
                            others if i == 0 else ""])
    record = {"source": str(d.resolve()), "seed": seed, "strata_level": level, "sample_size": int(alloc.sum()),
              "asked": int(size), "target_se": target_se if n is None else None, "minimum_per_stratum": minimum,
              "expected_users_accuracy": dict(zip(labels, expected)), "legend": legend,
              "method": "stratified random sample, Olofsson et al. 2014 (eq. 13 for n, section 5.1.2 allocation)"}
    with staged_output(out) as stage:
        write_file(stage / "strata.csv", lambda p: p.write_text(csv_text(strata_rows)))
        write_file(stage / "sample.csv", lambda p: p.write_text(csv_text(
            [list(table.columns), *table.itertuples(index=False)])))
        write_file(stage / "sample.gpkg", lambda p: write_gpkg({"sample": frame}, p))
        write_file(stage / "sample.json", lambda p: p.write_text(strict_json(record)))
        write_file(stage / "sample.html", lambda p: p.write_text(
            _page(frame, summary, legend, record, info, d if images else None)))
    return record


def _frame(rows, cols, strata, la, lb, t, crs):
    import geopandas as gpd
    import shapely

    x0, y0 = t.c + cols * t.a, t.f + rows * t.e
    geom = cell_boxes(t, rows, cols)
    centre = gpd.GeoSeries(shapely.centroid(geom), crs=crs).to_crs("EPSG:4326")
    names = np.asarray(("",) + CLASSES, dtype=object)
    return gpd.GeoDataFrame({
        "sample_id": np.arange(1, len(rows) + 1), "stratum": strata, "row": rows, "col": cols,
        "x": x0 + t.a / 2, "y": y0 + t.e / 2, "lon": centre.x.round(6), "lat": centre.y.round(6),
        "map_before": names[la[rows, cols]], "map_after": names[lb[rows, cols]], "reference": ""},
        geometry=geom, crs=crs)


def _page(frame, summary, legend, record, info, folder: Path | None) -> str:
    """The interpreter's page: per sampled cell, both dates' true-colour chips (3 x 3 cells, the cell
    outlined) and the legend to label it with, not the map's classes (blind interpretation).
    Self-contained, text escaped."""
    chips = {p: _chips(frame, summary, p, info) if folder else ({}, "images not asked for")
             for p in ("before", "after")}
    head = (f"<h1>atlas-change accuracy sample</h1><p>{len(frame)} cells, seed {record['seed']}, strata: "
            f"{escape(record['strata_level'])}. Label each row of <code>sample.csv</code>'s <code>reference</code> "
            "column (or of <code>sample.gpkg</code>'s, in QGIS) with what is on the ground (the imagery, not the "
            "map), one of the names below. The map's "
            "classes are left off this page on purpose: a reference labelled without seeing them is not biased "
            "towards the map (blind interpretation; sample.csv holds them, sort them out of view).</p><ul>"
            + "".join(f"<li><code>{escape(x)}</code></li>" for x in legend) + "</ul>"
            + "".join(f"<p>no {p} image: {escape(why)}</p>" for p, (_, why) in chips.items() if why))
    rows = []
    for r in frame.itertuples():
        imgs = "".join(f'<td>{escape(summary[p].get("period") or summary[p]["date"] or p)}<br>'
                       + (f'<img src="{chips[p][0][r.sample_id]}" width="150" height="150">' if r.sample_id in chips[p][0]
                          else "no image") + "</td>" for p in ("before", "after"))
        rows.append(f"<tr><td>{r.sample_id}</td><td>{r.lat:.5f}, {r.lon:.5f}</td>{imgs}</tr>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>atlas-change sample</title><style>"
            "body{font:13px sans-serif}td{vertical-align:top;padding:4px;border-bottom:1px solid #ccc}</style></head>"
            f"<body>{head}<table><tr><th>id</th><th>lat, lon</th>"
            "<th>before</th><th>after</th></tr>" + "".join(rows) + "</table></body></html>\n")


def _chips(frame, summary, part, info) -> tuple[dict[int, str], str | None]:
    """sample_id -> data URL of a 3 x 3-cell true-colour chip of one date, the cell outlined in lime;
    or ({}, why) where the scene cannot be read."""
    from ..publish.view import data_url, true_colour

    t = info["transform"]
    try:
        run = read_json(Path(summary[part]["source"]) / "run.json", ("input.path",))
        bounds = (t.c - t.a, t.f + (frame.row.max() + 2) * t.e, t.c + (frame.col.max() + 2) * t.a, t.f - t.e)
        rgba, it, crs = true_colour(run["input"]["path"], bounds)
    except (AtlasError, OSError) as e:
        return {}, str(e)
    if crs != info["crs"]:
        return {}, f"the scene's CRS {crs} is not the map's"
    out = {}
    inv = ~it
    for r in frame.itertuples():
        x0, y0 = r.x - 1.5 * t.a, r.y - 1.5 * t.e
        c0, r0 = (int(round(v)) for v in inv * (x0, y0))
        c1, r1 = (int(round(v)) for v in inv * (x0 + 3 * t.a, y0 + 3 * t.e))
        if c0 < 0 or r0 < 0 or c1 > rgba.shape[2] or r1 > rgba.shape[1] or c1 - c0 < 3:
            continue
        chip = rgba[:, r0:r1, c0:c1].copy()
        h, w = chip.shape[1:]
        y_a, y_b, x_a, x_b = h // 3, 2 * h // 3, w // 3, 2 * w // 3
        lime = np.array([0, 255, 0, 255], np.uint8)[:, None]
        for y, x in ((slice(y_a, y_b + 1), x_a), (slice(y_a, y_b + 1), x_b), (y_a, slice(x_a, x_b + 1)),
                     (y_b, slice(x_a, x_b + 1))):
            chip[:, y, x] = lime
        out[r.sample_id] = data_url(chip, "WEBP", QUALITY=85)
    return out, None

