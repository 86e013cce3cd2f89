"""TrainingCheckpoint: a Shield training run stopped after an epoch and resumed ends exactly as an uninterrupted one."""

from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Events
from torch.utils.data import DataLoader, TensorDataset
from toys import make_data, tiny_net, train

from monai_aegis.bundle import build_aegis
from monai_aegis.engines import ShieldAdversary, ShieldTrainer
from monai_aegis.handlers import EpsilonScheduler, TrainingCheckpoint
from monai_aegis.transforms import RandBenignShift
from monai_aegis.utils import tensor_loader

EPOCHS = 3


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    x, y = make_data(48, num_classes=2, channels=1, size=16)
    return train(tiny_net(1, 2), x, y, steps=60), x, y


def _run(toy, save_dir, stop_after=None, settings=None, resume=True, epochs=EPOCHS, persistent=False):
    """A seeded ShieldTrainer (random starts, shuffling, augmentation) with a TrainingCheckpoint; returns
    (trainer, handler, eps seen per epoch). ``persistent``: persistent starts over a loader with per-image ids."""
    clf, x, y = toy
    wrapper = build_aegis(clf, (1, 16, 16), 2, cushion="bit_depth4", shield_width=4, shield_hidden=8,
                          shield_inputs="input", input_depth=1, seed=0)
    torch.manual_seed(123)  # what ran before training must not matter: a fresh run seeds itself
    if persistent:
        loader = tensor_loader(x, y, 16, shuffle=True, seed=0)
    else:
        loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True,
                            generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(wrapper.shield.parameters(), 1e-3)
    handler = TrainingCheckpoint(save_dir, {"shield": wrapper.shield, "optimizer": opt},
                                 settings=settings or {"lr": 1e-3}, resume=resume)
    trainer = ShieldTrainer("cpu", epochs, loader, wrapper, opt, seed=0,
                            adversary=ShieldAdversary(wrapper, attacks="pgd", steps=2, random_start=True),
                            augment=RandBenignShift(prob=1.0).set_random_state(0),
                            train_handlers=[EpsilonScheduler(1 / 256, 16 / 256, EPOCHS), handler],
                            persistent_starts=persistent)
    eps = {}
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: eps.__setitem__(e.state.epoch, e.state.eps))
    if stop_after is not None:
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=stop_after), lambda e: e.terminate())
    trainer.run()
    return trainer, handler, eps


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.wrapper.shield.state_dict().items()}


@pytest.fixture(scope="module")
def uninterrupted(toy, tmp_path_factory):
    trainer, handler, eps = _run(toy, tmp_path_factory.mktemp("full"))
    return _weights(trainer), eps, trainer.state.output["loss"].item()


def test_resumed_run_equals_uninterrupted(toy, uninterrupted, tmp_path, caplog):
    weights, eps, loss = uninterrupted
    first, handler, _ = _run(toy, tmp_path, stop_after=1)  # "crash" after the first epoch
    assert first.state.epoch == 1 and handler.resumed_from is None
    assert [p.name for p in handler.checkpoints()] == ["checkpoint_epoch=1.pt"]
    with caplog.at_level(logging.INFO, logger="monai_aegis.handlers.checkpoint"):
        second, handler, eps2 = _run(toy, tmp_path)
    assert handler.resumed_from == tmp_path / "checkpoint_epoch=1.pt"
    assert "resumed from" in caplog.text and "at epoch 1/3" in caplog.text
    assert sorted(eps2) == [2, 3] and all(eps2[e] == pytest.approx(eps[e]) for e in eps2)  # same eps schedule
    assert second.state.epoch == EPOCHS
    assert second.state.output["loss"].item() == pytest.approx(loss, rel=1e-6)
    assert all(torch.allclose(v, weights[k], atol=1e-6) for k, v in _weights(second).items())
    assert [p.name for p in handler.checkpoints()] == [f"checkpoint_epoch={EPOCHS}.pt"]  # n_saved=1


def test_persistent_starts_survive_a_resume(toy, tmp_path):
    """With persistent starts, the per-image perturbations are saved with the checkpoint and a resumed run ends
    exactly as an uninterrupted one."""
    full, _, _ = _run(toy, tmp_path / "full", persistent=True)
    starts = full._shield_update.starts
    assert sorted(starts, key=int) == [str(i) for i in range(48)]  # one per training image, keyed by its id
    first, handler, _ = _run(toy, tmp_path / "cut", stop_after=1, persistent=True)
    saved = torch.load(handler.checkpoints()[-1], weights_only=True)
    update_state = next(v for v in saved.values() if isinstance(v, dict) and "starts" in v)
    assert len(update_state["starts"]) == 48
    second, handler, _ = _run(toy, tmp_path / "cut", persistent=True)
    assert handler.resumed_from is not None
    assert second.state.output["loss"].item() == pytest.approx(full.state.output["loss"].item(), rel=1e-6)
    assert all(torch.equal(v, starts[k]) for k, v in second._shield_update.starts.items())


def test_finished_run_resumes_at_its_end(toy, tmp_path, caplog):
    _run(toy, tmp_path, epochs=1)
    with caplog.at_level(logging.INFO, logger="monai_aegis.handlers.checkpoint"):
        trainer, handler, eps = _run(toy, tmp_path, epochs=1)
    assert handler.resumed_from is not None and eps == {} and "nothing left to train" in caplog.text


def test_other_settings_start_afresh(toy, tmp_path, caplog):
    _run(toy, tmp_path, stop_after=1)
    with caplog.at_level(logging.WARNING, logger="monai_aegis.handlers.checkpoint"):
        trainer, handler, eps = _run(toy, tmp_path, stop_after=1, settings={"lr": 2e-3})
    assert handler.resumed_from is None and sorted(eps) == [1]
    assert "other settings (lr: 0.001 -> 0.002)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monai_aegis.handlers.checkpoint"):  # another epoch count
        trainer, handler, eps = _run(toy, tmp_path, stop_after=1, settings={"lr": 2e-3}, epochs=2)
    assert handler.resumed_from is None and "max_epochs: 3 -> 2" in caplog.text


def test_resume_false_and_unreadable_checkpoints(toy, tmp_path, caplog):
    _run(toy, tmp_path, stop_after=1)
    trainer, handler, eps = _run(toy, tmp_path, stop_after=1, resume=False)
    assert handler.resumed_from is None and sorted(eps) == [1]
    (tmp_path / "checkpoint_epoch=1.pt").write_bytes(b"")  # a torn file from a crash of some other writer
    (tmp_path / "checkpoint_epoch=2.pt").write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING, logger="monai_aegis.handlers.checkpoint"):
        trainer, handler, eps = _run(toy, tmp_path, stop_after=1)
    assert handler.resumed_from is None and caplog.text.count("removing unreadable checkpoint") == 2
    assert [p.name for p in handler.checkpoints()] == ["checkpoint_epoch=1.pt"]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        TrainingCheckpoint(tmp_path, {"trainer": torch.nn.Linear(1, 1)})
    with pytest.raises(ValueError, match="save_interval"):
        TrainingCheckpoint(tmp_path, {}, save_interval=0)
    with pytest.raises(ValueError, match="JSON-like"):
        TrainingCheckpoint(tmp_path, {}, settings={"f": object()})


def test_epsilon_scheduler_is_a_function_of_the_epoch():
    from ignite.engine import Engine

    sched = EpsilonScheduler(1 / 256, 16 / 256, 4)
    engine = Engine(lambda e, b: None)
    sched.attach(engine)
    seen = []
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: seen.append(e.state.eps))
    engine.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "epoch", 2))  # as a resume sets it
    engine.run([0], max_epochs=4)
    assert seen == pytest.approx([11 / 256, 16 / 256])
