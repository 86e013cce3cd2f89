# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Screening of image files by a saved Aegis (the bundles' ``inference.json`` and ``python -m monai_aegis screen``).

One bad file must not stop a screening run, so the pieces are tolerant per file:

* :func:`screening_datalist` -- ``[{"image": path, "file": path}, ...]`` from folders and files, without decoding.
* :class:`TolerantTransformd` -- runs the preprocessing; a file that cannot be read or has the wrong shape becomes a
  zero image with an ``error`` string instead of an exception.
* :class:`ScreeningInferer` -- ``AegisWrapper.screen`` as a MONAI inferer (prediction, probabilities, Shield score,
  accept/reject), for :class:`monai.engines.SupervisedEvaluator`.
* :class:`ScreeningWriter` -- handler collecting one row per file and writing ``predictions.csv`` and
  ``predictions.json`` atomically when the run completes.
* :func:`exit_on_failures` -- ``SystemExit(1)`` from a workflow's ``finalize`` when any file failed.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import torch
from monai.inferers import Inferer
from monai.utils import min_version, optional_import

from ..data.files import IMAGE_EXTENSIONS, expand_image_paths
from ..transforms.tolerant import (
    TolerantTransformD,
    TolerantTransformd,
    TolerantTransformDict,
)
from ..utils import json_safe

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")
    Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = [
    "SCREENING_COLUMNS",
    "ScreeningInferer",
    "ScreeningWriter",
    "TolerantTransformD",
    "TolerantTransformDict",
    "TolerantTransformd",
    "exit_on_failures",
    "screening_datalist",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Columns of ``predictions.csv`` (and keys of each row of ``predictions.json``), in order.
SCREENING_COLUMNS: tuple[str, ...] = (
    "file",
    "status",
    "prediction",
    "class_name",
    "probability",
    "shield_score",
    "threshold",
    "decision",
    "error",
)


def screening_datalist(
    files: PathLike | Iterable[PathLike], extensions: Sequence[str] = IMAGE_EXTENSIONS, recursive: bool = True
) -> list[dict[str, str]]:
    """Datalist of the files to screen, built from paths only (nothing is decoded here).

    Folders are scanned for ``extensions`` (DICOM, NIfTI, PNG, JPEG by default; see
    :func:`monai_aegis.data.list_image_files`). Explicitly named files are kept whatever their ending, so that a
    file which cannot be read is reported in the output rather than silently skipped.

    Args:
        files: a folder, a file, or an iterable of folders and files (order kept; folder contents sorted).
        extensions: file endings picked up from folders.
        recursive: also scan sub-folders.

    Returns:
        ``[{"image": abs path, "file": abs path}, ...]``.

    Raises:
        FileNotFoundError: a named folder or file does not exist.
        ValueError: nothing to screen (no paths, or no image files in the folders).
    """
    sources = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    if not sources:
        raise ValueError("no files or folders to screen were given.")
    paths = expand_image_paths(sources, extensions, recursive, strict=False, what="file or folder to screen")
    if not paths:
        where = ", ".join(f"'{s}'" for s in sources)
        raise ValueError(f"no image files ({', '.join(extensions)}, any case) found under {where}.")
    return [{"image": f, "file": f} for f in paths]


class ScreeningInferer(Inferer):
    """``network.screen(inputs)`` as a MONAI inferer: the dict of :meth:`AegisWrapper.screen` (``logits``,
    ``probs``, ``pred``, ``shield_logit``, ``score``, ``threshold``, ``accept``) instead of plain logits.

    Args:
        check_input: validate the batch (finite, in [0, 1]) before screening.
    """

    def __init__(self, check_input: bool = True) -> None:
        super().__init__()
        self.check_input = check_input

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        screen = getattr(network, "screen", None)
        if screen is None:
            raise TypeError(f"ScreeningInferer needs an AegisWrapper (with .screen), got {type(network).__name__}.")
        return screen(inputs, check_input=self.check_input)


class ScreeningWriter:
    """Handler collecting one row per screened file and writing ``<output_dir>/<name>.csv`` and ``.json``.

    Rows have the columns :data:`SCREENING_COLUMNS`: ``file``, ``status`` (``ok``/``invalid``/``error``), ``prediction``
    (class index), ``class_name``, ``probability`` (softmax probability of the prediction), ``shield_score``
    (the Shield's clean logit of the predicted class; accepted when ``>= threshold``), ``threshold``,
    ``decision`` (``ACCEPT``/``REJECT``/``ERROR``) and ``error``. Both files are written atomically when the
    engine completes; the JSON holds ``{"summary": {...}, "rows": [...]}``.

    Expects ``engine.state.output["pred"]`` from :class:`ScreeningInferer` and the batch keys ``file_key`` and
    ``error_key`` from :class:`TolerantTransformd` (use ``SupervisedEvaluator(decollate=False)``).

    Args:
        output_dir: output folder (created).
        class_names: names of the classes, by index (``None``: the index as text).
        name: base name of the output files.
        file_key: batch key of the source paths.
        error_key: batch key of the per-file error messages (empty string: no error).
        output_key: key of the screening dict in ``engine.state.output``.
        reject_key: batch key of the input-check rejection reasons of :class:`TolerantTransformd` (``min_std``): a
            non-empty reason makes the row ``status="invalid"``, ``decision="REJECT"``, with the reason in ``error``
            (the prediction is still reported). Invalid inputs are rejections, not failures.
    """

    def __init__(
        self,
        output_dir: PathLike,
        class_names: Sequence[str] | None = None,
        name: str = "predictions",
        file_key: str = "file",
        error_key: str = "error",
        output_key: str = "pred",
        reject_key: str = "reject",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.reject_key = reject_key
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.name = name
        self.file_key = file_key
        self.error_key = error_key
        self.output_key = output_key
        self.rows: list[dict[str, Any]] = []

    @property
    def csv_path(self) -> Path:
        return self.output_dir / f"{self.name}.csv"

    @property
    def json_path(self) -> Path:
        return self.output_dir / f"{self.name}.json"

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The rows of files that could not be screened."""
        return [r for r in self.rows if r["status"] == "error"]

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self._reset, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self._reset)
        if not engine.has_event_handler(self, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        if not engine.has_event_handler(self.write, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self.write)

    def _reset(self, engine: Engine | None = None) -> None:
        self.rows = []

    def __call__(self, engine: Engine) -> None:
        batch, out = engine.state.batch, engine.state.output
        res = out[self.output_key] if isinstance(out, Mapping) else out
        if not isinstance(res, Mapping):
            raise TypeError("ScreeningWriter expects the screening dict of ScreeningInferer in "
                            f"engine.state.output[{self.output_key!r}] (use SupervisedEvaluator(decollate=False)).")
        self.rows.extend(self.make_rows(batch[self.file_key], batch.get(self.error_key), res,
                                        batch.get(self.reject_key)))

    def make_rows(
        self, files: Sequence[str], errors: Sequence[str] | None, res: Mapping[str, torch.Tensor],
        rejects: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """One row per item of a screened batch."""
        n = len(files)
        errors = list(errors) if errors is not None else [""] * n
        rejects = list(rejects) if rejects is not None else [""] * n
        pred = res["pred"].detach().cpu().reshape(-1).tolist()
        prob = res["probs"].detach().float().cpu().max(1).values.tolist() if "probs" in res else [float("nan")] * n
        shield = res.get("shield_logit")
        shield = shield.detach().float().cpu().reshape(-1).tolist() if shield is not None else [None] * n
        thr = res.get("threshold")
        thr = thr.detach().float().cpu().reshape(-1).tolist() if thr is not None else [None] * n
        accept = res["accept"].detach().cpu().reshape(-1).tolist()
        rows = []
        for i in range(n):
            row: dict[str, Any] = dict.fromkeys(SCREENING_COLUMNS)
            row["file"] = str(files[i])
            if errors[i]:
                row.update(status="error", decision="ERROR", error=str(errors[i]))
            else:
                p = int(pred[i])
                names = self.class_names
                row.update(
                    status="ok",
                    prediction=p,
                    class_name=names[p] if names is not None and p < len(names) else str(p),
                    probability=json_safe(float(prob[i])),
                    shield_score=None if shield[i] is None else json_safe(float(shield[i])),
                    threshold=None if thr[i] is None else json_safe(float(thr[i])),
                    decision="ACCEPT" if accept[i] else "REJECT",
                    error="",
                )
                if rejects[i]:
                    row.update(status="invalid", decision="REJECT", error=str(rejects[i]))
            rows.append(row)
        return rows

    def summary(self) -> dict[str, Any]:
        """Counts of the rows: ``total``, ``ok``, ``accepted``, ``rejected`` (``invalid`` of them by the input check),
        ``failed``."""
        dec = [r["decision"] for r in self.rows]
        return {
            "total": len(dec),
            "ok": sum(d != "ERROR" for d in dec),
            "accepted": dec.count("ACCEPT"),
            "rejected": dec.count("REJECT"),
            "invalid": sum(r["status"] == "invalid" for r in self.rows),
            "failed": dec.count("ERROR"),
            "csv": str(self.csv_path),
            "json": str(self.json_path),
        }

    def write(self, engine: Engine | None = None) -> None:
        """Atomically write the CSV and JSON outputs (also callable directly)."""
        from ..utils import atomic_write_json, atomic_write_text

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(SCREENING_COLUMNS), lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: "" if r[k] is None else (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k])
                        for k in SCREENING_COLUMNS})
        atomic_write_text(self.csv_path, buf.getvalue())
        atomic_write_json(self.json_path, {"summary": self.summary(), "rows": self.rows})
        s = self.summary()
        logger.info(f"screened {s['total']} file(s): {s['accepted']} accepted, {s['rejected']} rejected, "
                    f"{s['failed']} failed; wrote {self.csv_path}")


def exit_on_failures(writer: ScreeningWriter) -> None:
    """Raise ``SystemExit(1)`` when ``writer`` holds failed files (call it after the outputs are written, e.g. in
    the workflow's ``finalize``), so that the exit status says whether every file was screened."""
    failed = writer.failed
    if failed:
        logger.error(f"{len(failed)} of {len(writer.rows)} file(s) could not be screened; see {writer.csv_path}")
        raise SystemExit(1)
