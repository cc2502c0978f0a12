"""`export` and `view`: a GeoPackage and an HTML map of an output folder (atlas_change.publish)."""
from __future__ import annotations

import argparse
import sys



def add_parsers(sub) -> None:
    """The arguments of `export`, `view`."""
    ex = sub.add_parser("export", help="GeoPackage of the labelled map cells (and changes) of a compare/classify output",
                        description="Write a GeoPackage (1.2, with QGIS styles in layer_styles) from a compare output "
                        "folder (layers cells_before, cells_after: one polygon per map cell inside the AOI, never "
                        "overlapping, with class, land-cover group, confidence and hectares: areas summed from them "
                        "are summary.json's; changes: one polygon per changed cell with both classes and groups, "
                        "'conversion' or 'within group', confidences and hectares; aoi: the AOI's features and "
                        "attributes) or from a classify output folder (layer cells).",
                        epilog="example:\n  python -m atlas_change export outputs/example/example/2023-06-01_2024-06-01 "
                        "--gpkg lake.gpkg", formatter_class=argparse.RawDescriptionHelpFormatter)
    ex.add_argument("folder", help="a compare output folder (summary.json) or a classify output folder")
    ex.add_argument("--gpkg", required=True, help="GeoPackage to write")

    vw = sub.add_parser("view", help="change_map.html (folium) from a compare or classify output",
                        description="Write change_map.html into the folder: one self-contained page (Leaflet inside; "
                        "only the OpenStreetMap basemap needs the internet) with each date's true-colour image read "
                        "from its scene, the class layers, cloud and snow cells, the uncertain cells hatched, the changed "
                        "cells outlined in lime with popups (both classes, conversion or within a group, confidences, "
                        "top-3 probabilities), the AOI, a header with every hectare figure, and a legend with an "
                        "opacity slider and a chart of class areas per date. A "
                        "scene that has moved since is named in a warning and on the page; the rest is still drawn.",
                        epilog="example:\n  python -m atlas_change view outputs/example/example/2023-06-01_2024-06-01 "
                        "--side-by-side --open", formatter_class=argparse.RawDescriptionHelpFormatter)
    vw.add_argument("folder", help="a compare output folder (summary.json) or a classify output folder")
    vw.add_argument("--open", action="store_true", help="open it in the web browser")
    vw.add_argument("--side-by-side", action="store_true",
                    help="also write change_map_side_by_side.html: before and after on two synchronised maps")


def _cmd_export(a) -> None:
    from ..publish.export import export_gpkg

    print(export_gpkg(a.folder, a.gpkg))


def _cmd_view(a) -> None:
    from ..publish.view import change_map

    path = change_map(a.folder, side_by_side=a.side_by_side)
    print(path)
    side = path.with_name(path.stem + "_side_by_side.html")
    if a.side_by_side and side.exists():
        print(side)
    if a.open:
        import webbrowser

        if not webbrowser.open(path.resolve().as_uri()):
            print(f"atlas-change: no web browser found here to open it; open {path} in one", file=sys.stderr)


COMMANDS = {"export": _cmd_export, "view": _cmd_view}
