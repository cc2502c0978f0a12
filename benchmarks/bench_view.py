"""Benchmark: how big the HTML change map of a full Sentinel-2 tile is, and what it is made of.

    python benchmarks/bench_view.py [--size 10980] [--model NAME]

Generates two synthetic dates of one tile (4 bands B02, B03, B04, B08, different land cover, so
that much of the tile changes; kept in benchmarks/data/, git-ignored), classifies both at stride 64
with the model (default: the default model for the bands), compares them over the whole tile and
writes change_map.html and change_map_side_by_side.html. Reports each page's size and its parts
(embedded true-colour images, class/cloud images, GeoJSON and script), the time `view` took, and
appends a Markdown section to benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BANDS = ("B02", "B03", "B04", "B08")


def parts(html: str) -> dict[str, int]:
    """Bytes of the page by kind: WEBP images (true colour), PNG images (classes, clouds), the rest."""
    webp = sum(len(m) for m in re.findall(r"data:image/webp;base64,[A-Za-z0-9+/=]+", html))
    png = sum(len(m) for m in re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]+", html))
    return {"true-colour images": webp, "class and cloud images": png, "GeoJSON, Leaflet, script": len(html) - webp - png}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=10980, help="tile side in pixels (default 10980)")
    ap.add_argument("--model", help="model name (default: the default model for 4-band B02 B03 B04 B08 input)")
    a = ap.parse_args()
    from atlas_change.synth import make_scene

    data = ROOT / "benchmarks" / "data"
    data.mkdir(parents=True, exist_ok=True)
    out = data / f"view_{a.size}"
    dates = ("2024-06-01", "2024-08-01")
    folders = []
    for seed, day in enumerate(dates):
        scene = data / f"view_{a.size}_{day}.tif"
        if not scene.exists():
            make_scene(scene, a.size, a.size, bands=BANDS, seed=seed + 10, nodata_border=200, tags={"DATE": day})
        folder = out / day
        if not (folder / "run.json").exists():
            cmd = [sys.executable, "-m", "atlas_change", "classify", str(scene), "--out", str(folder), "--quiet"]
            subprocess.run(cmd + (["--model", a.model] if a.model else []), check=True, cwd=ROOT)
        folders.append(folder)
    run = json.loads((folders[0] / "run.json").read_text())
    x0, y0 = run["output"]["transform"][2], run["output"]["transform"][5]
    side = a.size * 10
    subprocess.run([sys.executable, "-m", "atlas_change", "compare", *map(str, folders), "--out", str(out / "cmp"),
                    "--aoi-bbox", f"{x0},{y0 - side},{x0 + side},{y0}", "--aoi-crs", run["output"]["crs"]],
                   check=True, cwd=ROOT)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "atlas_change", "view", str(out / "cmp"), "--side-by-side"], check=True,
                   cwd=ROOT)
    secs = time.perf_counter() - t
    summary = json.loads((out / "cmp" / "summary.json").read_text())
    n_changed = round(summary["changed_ha"] / summary["cell_area_ha"])
    md = [f"\n## {datetime.now():%Y-%m-%d %H:%M} - HTML change map of a {a.size} x {a.size} tile "
          f"(`benchmarks/bench_view.py`)\n",
          f"Two synthetic dates, {len(BANDS)} bands, model {run['model']['model']}, stride 64: "
          f"{run['output']['shape'][0]} x {run['output']['shape'][1]} cells, {n_changed} changed cells. "
          f"`view --side-by-side` took {secs:.0f} s (both pages).\n",
          "| page | size MB | true-colour images MB | class and cloud images MB | GeoJSON, Leaflet, script MB |",
          "|---|---|---|---|---|"]
    for page in ("change_map.html", "change_map_side_by_side.html"):
        html = (out / "cmp" / page).read_text()
        p = parts(html)
        md.append(f"| {page} | {len(html) / 1e6:.1f} | " + " | ".join(f"{v / 1e6:.1f}" for v in p.values()) + " |")
        print(page, f"{len(html) / 1e6:.1f} MB", {k: f"{v / 1e6:.2f} MB" for k, v in p.items()}, flush=True)
    with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
        f.write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
