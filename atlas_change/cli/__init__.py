"""The command line: one module per command or group of commands, each with its arguments
(`add_parsers`) beside what runs them (`COMMANDS`); `python -m atlas_change` (__main__) parses and
dispatches. Longer help texts: helptext."""
from __future__ import annotations

import argparse

from .. import __version__
from . import accuracy, atlas, classify, compare, jobs, models, publish

#: in the order `--help` lists them
MODULES = (classify, models, compare, publish, accuracy, jobs, atlas)
COMMANDS = {name: run for m in MODULES for name, run in m.COMMANDS.items()}


def parser() -> argparse.ArgumentParser:
    """The `python -m atlas_change` parser with every subcommand."""
    p = argparse.ArgumentParser(prog="python -m atlas_change",
                                description="Sentinel-2 scenes to EuroSAT land-use / land-cover maps, on a CPU.")
    p.add_argument("--version", action="version", version=f"atlas-change {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for m in MODULES:
        m.add_parsers(sub)
    return p
