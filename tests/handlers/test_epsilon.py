"""EpsilonScheduler: the attack budget of each epoch, a function of the epoch (so a resumed run continues it)."""

import pytest
from ignite.engine import Engine, Events

from monai_aegis.attacks import DEFAULT_EPS_LINF
from monai_aegis.handlers import EpsilonScheduler


def _seen(scheduler, epochs):
    engine, seen = Engine(lambda e, b: None), []
    scheduler.attach(engine)
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: seen.append(e.state.eps))
    engine.run([0], max_epochs=epochs)
    return seen


def test_linear_ramp_then_hold():
    seen = _seen(EpsilonScheduler(1 / 256, 16 / 256, ramp_epochs=4), 6)
    assert seen == pytest.approx([1 / 256, 6 / 256, 11 / 256, 16 / 256, 16 / 256, 16 / 256])
    assert _seen(EpsilonScheduler(), 1) == pytest.approx([1 / 256])
    assert _seen(EpsilonScheduler(ramp_epochs=1), 2) == pytest.approx([DEFAULT_EPS_LINF] * 2)
    assert _seen(EpsilonScheduler(end=8 / 256, ramp_epochs=1), 3) == pytest.approx([8 / 256] * 3)


def test_explicit_milestones_and_errors():
    seen = _seen(EpsilonScheduler(milestones_values=[(1, 2 / 256), (3, 2 / 256), (5, 10 / 256)]), 6)
    assert seen == pytest.approx([2 / 256, 2 / 256, 2 / 256, 6 / 256, 10 / 256, 10 / 256])
    with pytest.raises(ValueError, match="ramp_epochs"):
        EpsilonScheduler(ramp_epochs=0)
    with pytest.raises(ValueError, match="> 0"):
        EpsilonScheduler(start=0.0)
