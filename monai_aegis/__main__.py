"""Command line: ``python -m monai_aegis <command> ...`` (``demo``, ``evaluate``, ``screen``)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
