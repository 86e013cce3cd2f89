# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Sub-commands of ``python -m monai_aegis``. Each command module defines ``add_parser(subparsers)`` (registering
its arguments and ``set_defaults(func=run)``) and ``run(args) -> int`` (the exit status)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "build_parser", "main"]

#: command name -> module under ``monai_aegis.cli``
COMMANDS: dict[str, str] = {"demo": "demo", "evaluate": "evaluate", "screen": "screen", "compare": "compare"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m monai_aegis", description="Medical Aegis for MONAI.")
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{module}":
                raise
            continue  # command not available in this build
        mod.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:  # bad input (our clear messages): one line, no traceback
        print(f"{parser.prog} {args.command}: error: {e}", file=sys.stderr)
        return 2
