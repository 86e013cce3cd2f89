# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""``python -m monai_aegis screen``: classify and screen image files with a bundle's saved Aegis.

Runs the bundle's ``inference.json`` (``monai.bundle.ConfigWorkflow``, workflow type ``inference``) on DICOM,
NIfTI, PNG or JPEG files and folders and writes one row per file -- prediction, class probability, Shield score,
ACCEPT/REJECT, or the reason the file could not be read -- to ``<output>/predictions.csv`` and ``.json``.

Exit status: 0 when every file was screened, 1 when some files failed (they are listed in the output), 2 on bad
input (missing bundle, checkpoint or files).

Example::

    python -m monai_aegis screen --bundle bundles/aegis_cxr scans/ extra/image.dcm --output runs/screening
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "build_overrides", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("screen", help="classify files with a bundle's Aegis and flag suspected adversarial inputs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", help="files or folders to screen (default: the config's dataset_dir)")
    p.add_argument("--bundle", required=True, help="bundle folder holding inference.json, e.g. bundles/aegis_cxr")
    p.add_argument("--config", default="inference.json", help="config file name inside the bundle")
    p.add_argument("--output", help="output folder (default: <bundle>/screening)")
    p.add_argument("--ckpt", help="Aegis checkpoint (default: <bundle>/models/aegis.pt)")
    p.add_argument("--device", help="device, e.g. cpu or cuda:0 (default: cuda when available)")
    p.add_argument("--batch-size", type=int, help="images per batch")
    p.add_argument("--num-workers", type=int, help="data loader workers")
    p.add_argument("--threads", type=int,
                   help="CPU threads of this job (torch and the Cushion's JPEG workers; default: every core, or "
                        "$AEGIS_NUM_THREADS): give each of several jobs sharing a machine its share")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config entry (JSON value), e.g. network_def#width=16; repeatable")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (there is none either when stderr is not a terminal, e.g. in a log file)")
    p.set_defaults(func=run)


def build_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``ConfigWorkflow`` overrides given by the command line arguments."""
    from .evaluate import parse_settings

    bundle = Path(args.bundle)
    over: dict[str, Any] = {"bundle_root": str(bundle)}
    if args.inputs:
        over["files"] = [str(p) for p in args.inputs]
    if args.output:
        over["output_dir"] = str(args.output)
    if args.ckpt:
        over["ckpt_path"] = str(args.ckpt)
    if args.device:
        over["device"] = f"$torch.device({str(args.device)!r})"
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}.")
        over["batch_size"] = args.batch_size
    if args.num_workers is not None:
        over["num_workers"] = args.num_workers
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}.")
        over["num_threads"] = args.threads
    over.update(parse_settings(args.set))
    return over


def _clear_cause(exc: BaseException) -> BaseException | None:
    """The outermost of our own clear errors (ValueError, FileNotFoundError) in an exception's cause chain."""
    seen = exc
    while seen is not None:
        if isinstance(seen, (ValueError, FileNotFoundError)):
            return seen
        seen = seen.__cause__
    return None


def _check_device(device: str | None) -> None:
    """Refuse a device torch does not know, or one this machine does not have, before anything runs."""
    if not device:
        return
    import torch

    from ..utils import error_line

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"--device {device!r} is not a device torch knows (e.g. cpu, cuda, cuda:0): "
                         f"{error_line(e)}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r}: CUDA is not available on this machine (use --device cpu).")


def _check_output_dir(out: Path) -> None:
    """Make sure the results can be written *before* screening: an existing file, or a folder that cannot be
    created or written, is refused with one line."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output '{out}' is an existing file; give a folder for predictions.csv / .json.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"--output '{out}' cannot be written ({e.strerror or e}); choose a writable folder.") from None


def run(args: argparse.Namespace) -> int:
    from monai.bundle import ConfigWorkflow

    bundle = Path(args.bundle)
    config_file = bundle / args.config
    if not config_file.is_file():
        raise FileNotFoundError(f"bundle config '{config_file}' not found (--bundle must be a bundle folder such as "
                                "bundles/aegis_cxr).")
    for p in args.inputs:
        if not Path(p).exists():
            raise FileNotFoundError(f"file or folder to screen not found: '{p}'.")
    _check_device(args.device)
    if args.output:
        _check_output_dir(Path(args.output))
    meta = bundle / "metadata.json"
    try:
        wf = ConfigWorkflow(config_file=str(config_file), meta_file=str(meta) if meta.is_file() else None,
                            workflow_type="inference", **build_overrides(args))
    except KeyError as e:  # an override of an entry the config does not have
        raise ValueError(f"--set: the bundle config '{config_file}' has no such entry ({e.args[0]}).") from None
    try:
        wf.initialize()
        evaluator = wf.evaluator
    except Exception as e:  # config instantiation wraps our clear errors; surface them as one line
        clear = _clear_cause(e)
        if clear is not None:
            raise clear from None
        raise
    if not args.no_progress and sys.stderr.isatty():  # a bar redrawn with \r is garbage in a log file or pipe
        from ignite.handlers import ProgressBar

        ProgressBar(persist=True, desc="screening").attach(evaluator)
    wf.run()
    writer = wf.parser.get_parsed_content("writer")
    s = writer.summary()
    invalid = f" ({s['invalid']} of them no usable image content)" if s.get("invalid") else ""
    print(f"screened {s['total']} file(s): {s['accepted']} accepted, {s['rejected']} rejected{invalid}, "
          f"{s['failed']} failed")
    for row in [r for r in writer.rows if r["status"] == "invalid"][:10]:
        print(f"  REJECT {row['file']}: {row['error']}")
    for row in writer.failed[:10]:
        print(f"  ERROR {row['file']}: {row['error']}")
    if s["failed"] > 10:
        print(f"  ... and {s['failed'] - 10} more")
    print(f"predictions: {s['csv']} (and {Path(s['json']).name})")
    try:
        wf.finalize()
    except SystemExit as e:  # the bundle's finalize exits 1 when files failed
        return int(e.code) if isinstance(e.code, int) else 1
    return 0
