# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""``python -m monai_aegis compare``: defences side by side, from the ``results.json`` of several
``evaluate --worst-case`` runs on the same images -- one table per split, one row per defence (robust accuracy at
every eps, clean accuracy and acceptance, checks passed), in Markdown.

The runs must have evaluated the same images (same data, ``--splits``, ``--max-eval`` and ``--seed``); the command
refuses runs whose image sets differ. ``--undefended LABEL`` adds the bare classifier of that run as a row.

Example::

    python -m monai_aegis compare --run "paper's Aegis=runs/wc_features" --run "input Shield=runs/wc_default" \\
        --undefended "input Shield" --output runs/side_by_side.md

Exit status: 0 on success, 2 on bad input (missing or unreadable results, different image sets).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="defences side by side from several worst-case evaluations (Markdown table)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, metavar="LABEL=PATH",
                   help="a row: its label and an evaluation's output folder or results.json; repeatable, in order")
    p.add_argument("--undefended", action="append", default=[], metavar="LABEL",
                   help="also a row for this run's bare classifier (its undefended curve); repeatable")
    p.add_argument("--output", help="Markdown file to write (atomically); default: print")
    p.set_defaults(func=run)


def _load(item: str) -> tuple[str, dict]:
    label, sep, path = item.rpartition("=")
    if not sep or not label or not path:
        raise ValueError(f"--run expects LABEL=PATH, got {item!r}.")
    file = Path(path)
    file = file / "results.json" if file.is_dir() else file
    if not file.is_file():
        raise ValueError(f"--run {label!r}: no results file at {file}.")
    try:
        return label, json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"--run {label!r}: {file} is not valid JSON ({e}).") from e


def run(args: argparse.Namespace) -> int:
    from ..evaluation.report import worst_case_comparison_lines
    from ..utils import atomic_write_text

    try:
        runs = dict(_load(item) for item in args.run)
        if len(runs) != len(args.run):
            raise ValueError("--run labels must be distinct.")
        text = "\n".join(worst_case_comparison_lines(runs, undefended=args.undefended))
    except ValueError as e:
        print(f"python -m monai_aegis compare: error: {e}", file=sys.stderr)
        return 2
    if args.output:
        atomic_write_text(args.output, text)
        print(f"wrote {args.output}")
    else:
        print(text)
    return 0
