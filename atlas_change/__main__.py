"""Command line: python -m atlas_change {classify,train,evaluate,calibrate,quantize,compare,export,view,sample,
assess,run,status,demo,atlas} ... (see --help of each; the commands live in atlas_change.cli)."""
from __future__ import annotations

import logging
import sys
import warnings

from .cli import COMMANDS, parser
from .errors import AtlasError, AtlasWarning

_showwarning = warnings.showwarning


def _show_warning(message, category, *args, **kw) -> None:
    if issubclass(category, AtlasWarning):
        print(f"atlas-change: warning: {message}", file=sys.stderr)
    else:
        _showwarning(message, category, *args, **kw)


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    for name in ("rasterio", "pyogrio"):  # GDAL's own messages (e.g. libtiff's on a full disk): the error says it
        logging.getLogger(name).addHandler(logging.NullHandler())
    if a.command in ("train", "evaluate", "calibrate", "quantize") and not a.data:
        print("atlas-change: error: --data EuroSAT RGB or MS folder is required (or set ATLAS_EUROSAT)", file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():  # AtlasWarnings as one line each (none with --quiet)
            warnings.showwarning = _show_warning
            if getattr(a, "quiet", False):
                warnings.simplefilter("ignore", AtlasWarning)
            return COMMANDS[a.command](a) or 0
    except AtlasError as e:
        print(f"atlas-change: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("atlas-change: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
