"""outlier_acceptance: clean and out-of-distribution acceptance of a calibrated wrapper, per kind."""

from __future__ import annotations

import pytest
import torch
from toys import make_data, tiny_net

from monai_aegis.bundle import build_aegis
from monai_aegis.evaluation import outlier_acceptance
from monai_aegis.transforms import OUTLIER_KINDS


def _wrapper(calibrate=True):
    torch.manual_seed(0)
    w = build_aegis(tiny_net(1, 2), (1, 16, 16), 2, cushion=None, shield_width=4, shield_hidden=8,
                    shield_inputs="input", input_depth=1, seed=0)
    if calibrate:
        w.calibrate(make_data(40, 2, 1, 16)[0], tnr=0.9)
    return w


def test_rows_per_kind_and_extra():
    w = _wrapper()
    x = make_data(20, 2, 1, 16, seed=1)[0]
    rows = outlier_acceptance(w, x, extra={"other": torch.rand(7, 1, 16, 16)})
    assert list(rows) == ["clean", *OUTLIER_KINDS, "other"]
    assert rows["other"]["n"] == 7 and all(r["n"] == 20 for k, r in rows.items() if k != "other")
    for r in rows.values():
        assert 0.0 <= r["accepted"] <= 1.0 and sum(r["predicted"]) == pytest.approx(1.0)
    direct = w.screen(x)["accept"].float().mean()
    assert rows["clean"]["accepted"] == pytest.approx(float(direct))
    again = outlier_acceptance(w, x, kinds=["uniform"])
    assert list(again) == ["clean", "uniform"] and again["uniform"] == rows["uniform"]  # seeded


def test_errors():
    with pytest.raises(ValueError, match="calibrated"):
        outlier_acceptance(_wrapper(calibrate=False), torch.rand(4, 1, 16, 16))
    with pytest.raises(ValueError, match="clashes"):
        outlier_acceptance(_wrapper(), torch.rand(4, 1, 16, 16), extra={"uniform": torch.rand(2, 1, 16, 16)})
    with pytest.raises(ValueError):
        outlier_acceptance(_wrapper(), torch.rand(4, 1, 20, 20))  # not the wrapper's input shape
