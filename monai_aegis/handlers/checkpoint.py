# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Save a training run at every epoch and resume it after a crash, reproducing the uninterrupted run."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from monai.utils import min_version, optional_import

from ..utils import atomic_torch_save, error_line, safe_torch_load
from ..utils.state import RandomStates

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
Checkpoint, _ = optional_import("ignite.handlers", "0.4.11", min_version, "Checkpoint")
BaseSaveHandler, _ = optional_import("ignite.handlers.checkpoint", "0.4.11", min_version, "BaseSaveHandler",
                                     as_type="base")
idist, _ = optional_import("ignite", "0.4.11", min_version, "distributed")

__all__ = ["TrainingCheckpoint"]

logger = logging.getLogger(__name__)


class _AtomicDiskSaver(BaseSaveHandler):
    """Ignite save handler writing through :func:`~monai_aegis.utils.atomic_torch_save` (complete files only, the
    usual umask permissions)."""

    def __init__(self, dirname: str | os.PathLike) -> None:
        self.dirname = Path(dirname)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        atomic_torch_save(checkpoint, self.dirname / filename)

    def remove(self, filename: str) -> None:
        (self.dirname / filename).unlink(missing_ok=True)


class _RunSettings:
    """The settings a run was started with, stored in its checkpoints so that a resume can check it continues the
    same run."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = dict(settings)

    def state_dict(self) -> dict[str, Any]:
        return {"settings": self.settings}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:  # checked before loading, nothing to restore
        pass


class TrainingCheckpoint:
    """Checkpoint a training engine every ``save_interval`` epochs and, on the next run, resume from the newest
    complete checkpoint -- so a run killed at any point (``kill -9``, a lost node) continues where it stopped and
    ends, seeded, with the same result as one that was never interrupted.

    Each checkpoint holds the objects of ``save_dict`` (model, optimiser, ...), the engine's own state (epoch,
    iteration), every random number generator the run draws from (:class:`~monai_aegis.utils.state.RandomStates`:
    torch / NumPy / Python and the training loader's shuffling generator), whatever the engine lists in its
    ``checkpoint_objects()`` (e.g. :class:`~monai_aegis.engines.ShieldTrainer`'s target draw, augmentation and
    running threshold), and ``settings``. Files are written atomically (a crash never leaves a partial
    checkpoint) by rank 0 only; every rank resumes from them.

    At ``Events.STARTED``:

    - ``resume=True``: load the newest checkpoint in ``save_dir`` whose ``settings`` and ``max_epochs`` equal this
      run's. Checkpoints of other settings are not this run: they are removed with a warning that names the
      differences, and training starts afresh. A run that had finished resumes at its end (nothing is retrained).
    - ``resume=False``: remove earlier checkpoints of this prefix and start afresh.

    Args:
        save_dir: folder of the checkpoints (created).
        save_dict: objects with ``state_dict`` / ``load_state_dict`` to save, e.g.
            ``{"shield": ..., "optimizer": ...}``.
        settings: JSON-like description of the run (data, budget, seed, a fingerprint of frozen weights...).
        resume: resume from an earlier checkpoint (``False``: start afresh).
        save_interval: save every this many epochs (the last epoch is always saved).
        n_saved: checkpoints kept.
        filename_prefix: file names are ``{prefix}_epoch={n}.pt``.

    Raises:
        ValueError: ``save_dict`` uses a reserved key, or a bad ``save_interval`` / ``n_saved``.
    """

    RESERVED = ("trainer", "random", "run")

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        settings: Mapping[str, Any] | None = None,
        resume: bool = True,
        save_interval: int = 1,
        n_saved: int = 1,
        filename_prefix: str = "checkpoint",
    ) -> None:
        clash = [k for k in save_dict if k in self.RESERVED]
        if clash:
            raise ValueError(f"TrainingCheckpoint: save_dict keys {clash} are reserved (the handler adds them).")
        if int(save_interval) < 1 or int(n_saved) < 1:
            raise ValueError(f"save_interval and n_saved must be >= 1, got {save_interval} and {n_saved}.")
        self.save_dir = Path(save_dir)
        self.save_dict = dict(save_dict)
        try:  # plain JSON values: comparable after a save / load round trip, loadable with weights_only=True
            self.settings = json.loads(json.dumps(dict(settings or {})))
        except (TypeError, ValueError) as e:
            raise ValueError(f"TrainingCheckpoint: settings must be JSON-like values: {error_line(e)}") from None
        self.resume = bool(resume)
        self.save_interval = int(save_interval)
        self.n_saved = int(n_saved)
        self.filename_prefix = str(filename_prefix)
        self.objects: dict[str, Any] = {}
        self.resumed_from: Path | None = None

    def attach(self, engine: Any) -> None:
        loader = getattr(engine, "data_loader", None)
        generator = getattr(loader, "generator", None)
        self.objects = {
            **self.save_dict,
            **(engine.checkpoint_objects() if hasattr(engine, "checkpoint_objects") else {}),
            "trainer": engine,
            "random": RandomStates({"data_loader": generator} if isinstance(generator, torch.Generator) else {}),
        }
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.EPOCH_COMPLETED, _finish_data_iterator)
        if idist.get_rank() == 0:
            saver = Checkpoint(
                {**self.objects, "run": _RunSettings(self.settings)},
                _AtomicDiskSaver(self.save_dir),
                filename_prefix=self.filename_prefix,
                filename_pattern="{filename_prefix}_epoch={global_step}.{ext}",
                n_saved=self.n_saved,
                global_step_transform=lambda e, _: e.state.epoch,
            )
            every = self.save_interval

            def _save(e: Any) -> None:
                if e.state.epoch % every == 0 or e.state.epoch == e.state.max_epochs:
                    saver(e)
                    for old in self.checkpoints()[: -self.n_saved]:  # also those an earlier (resumed) run left
                        old.unlink(missing_ok=True)

            engine.add_event_handler(Events.EPOCH_COMPLETED, _save)

    def checkpoints(self) -> list[Path]:
        """This handler's checkpoint files in ``save_dir`` (any run), oldest epoch first."""
        if not self.save_dir.is_dir():
            return []
        found = []
        for p in self.save_dir.glob(f"{self.filename_prefix}_epoch=*.pt"):
            epoch = p.name[len(self.filename_prefix) + len("_epoch="): -len(".pt")]
            if epoch.isdigit():
                found.append((int(epoch), p))
        return [p for _, p in sorted(found)]

    def _start(self, engine: Any) -> None:
        if engine.state.epoch > 0 or engine.state.iteration > 0:
            return  # already restored by other means
        choice = self._choose(engine) if idist.get_rank() == 0 else ""
        if idist.get_world_size() > 1:  # rank 0 decides; every rank loads the same file
            choice = str(idist.broadcast(choice, src=0, safe_mode=True))
        if not choice:
            return
        path = Path(choice)
        ckpt = safe_torch_load(path, map_location="cpu")
        max_epochs = engine.state.max_epochs
        Checkpoint.load_objects(to_load=self.objects, checkpoint=ckpt)
        engine.state.max_epochs = max_epochs
        self.resumed_from = path
        done = " (training had finished: nothing left to train)" if engine.state.epoch >= max_epochs else ""
        logger.info(f"resumed from '{path}' at epoch {engine.state.epoch}/{max_epochs}{done}")

    def _choose(self, engine: Any) -> str:
        """Rank 0: the checkpoint to resume from (``""``: none), after removing those that are not this run's."""
        self.save_dir.mkdir(parents=True, exist_ok=True)
        found = self.checkpoints()
        if not self.resume:
            if found:
                logger.info(f"resume disabled: removing {len(found)} earlier checkpoint(s) in '{self.save_dir}'")
            for p in found:
                p.unlink(missing_ok=True)
            return ""
        best, best_epoch = "", -1
        for p in found:
            try:
                ckpt = safe_torch_load(p, map_location="cpu")
            except (ValueError, FileNotFoundError) as e:
                logger.warning(f"removing unreadable checkpoint '{p}': {error_line(e)}")
                p.unlink(missing_ok=True)
                continue
            diff = self._differences(ckpt, engine)
            if diff:
                logger.warning(f"checkpoint '{p}' is from a run with other settings ({'; '.join(diff)}): it is "
                               "removed and training starts afresh")
                p.unlink(missing_ok=True)
                continue
            epoch = _saved_epoch(ckpt["trainer"])
            if epoch > best_epoch:
                best, best_epoch = str(p), epoch
        return best

    def _differences(self, ckpt: Mapping[str, Any], engine: Any) -> list[str]:
        missing = [k for k in self.objects if k not in ckpt]
        if missing:
            return [f"it has no {missing}"]
        saved = dict(ckpt.get("run", {}).get("settings", {}))
        diff = [f"{k}: {saved.get(k, '<unset>')!r} -> {self.settings.get(k, '<unset>')!r}"
                for k in sorted(set(saved) | set(self.settings)) if saved.get(k) != self.settings.get(k)]
        saved_max, now_max = ckpt["trainer"].get("max_epochs"), engine.state.max_epochs
        if saved_max is not None and now_max is not None and int(saved_max) != int(now_max):
            diff.append(f"max_epochs: {saved_max} -> {now_max}")
        return diff


def _finish_data_iterator(engine: Any) -> None:
    """Run an epoch's exhausted data iterator to its end now, before the checkpoint is written.

    Ignite stops an epoch after ``epoch_length`` batches and only reaches the iterator's ``StopIteration`` at the
    start of the next epoch -- and a shuffling ``RandomSampler`` draws one more permutation from the loader's
    generator on the way out. An uninterrupted run makes that draw after the checkpoint, a resumed run (with a fresh
    iterator) never does, so their shuffles would differ. Only done when the epoch covers the whole loader (an
    iterator that continues into the next epoch is left alone)."""
    loader, it = engine.state.dataloader, getattr(engine, "_dataloader_iter", None)
    if it is None or isinstance(getattr(loader, "dataset", None), torch.utils.data.IterableDataset):
        return
    try:
        whole = engine.state.epoch_length == len(loader)
    except TypeError:  # a loader without a length
        return
    if whole and engine.state.iteration % engine.state.epoch_length == 0:
        next(it, None)


def _saved_epoch(trainer_state: Mapping[str, Any]) -> int:
    """The completed epoch of an Ignite engine ``state_dict`` (which stores the iteration and epoch length)."""
    if "epoch" in trainer_state:
        return int(trainer_state["epoch"])
    length = trainer_state.get("epoch_length")
    return int(trainer_state.get("iteration", 0)) // int(length) if length else 0
