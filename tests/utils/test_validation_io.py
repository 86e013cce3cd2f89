import json
import os

import pytest
import torch

from monai_aegis.utils import (
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    check_image_batch,
    check_labels,
    check_positive,
    safe_torch_load,
)


class TestCheckImageBatch:
    def test_accepts_2d_and_3d(self):
        check_image_batch(torch.rand(2, 1, 8, 8))
        check_image_batch(torch.rand(2, 3, 4, 8, 8))

    @pytest.mark.parametrize(
        "x, match",
        [
            (torch.rand(1, 8, 8), "shape"),
            (torch.rand(0, 1, 8, 8), "empty"),
            (torch.full((1, 1, 4, 4), float("nan")), "NaN"),
            (torch.rand(1, 1, 4, 4) * 255, r"\[0, 1\]"),
            (torch.zeros(1, 1, 4, 4, dtype=torch.uint8), "floating point"),
        ],
    )
    def test_rejects(self, x, match):
        with pytest.raises(ValueError, match=match):
            check_image_batch(x)

    def test_type_error(self):
        with pytest.raises(TypeError, match="torch.Tensor"):
            check_image_batch([[0.0]])

    def test_channels(self):
        with pytest.raises(ValueError, match="3 channel"):
            check_image_batch(torch.rand(1, 1, 4, 4), channels=3)


class TestCheckLabels:
    def test_squeezes_and_casts(self):
        y = check_labels(torch.tensor([[1], [0]]), 2, 2)
        assert y.dtype == torch.long and y.tolist() == [1, 0]

    def test_wrong_shape(self):
        with pytest.raises(ValueError, match=r"shape \(3,\)"):
            check_labels(torch.tensor([0, 1]), 3)

    def test_out_of_range(self):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            check_labels(torch.tensor([0, 2]), 2, 2)

    def test_non_integer(self):
        with pytest.raises(ValueError, match="integer"):
            check_labels(torch.tensor([0.5, 1.0]), 2)


@pytest.mark.parametrize("v", [0, -1, float("nan"), float("inf")])
def test_check_positive_rejects(v):
    with pytest.raises(ValueError, match="eps"):
        check_positive(v, "eps")


def test_check_positive_allow_zero():
    assert check_positive(0, "k", allow_zero=True) == 0.0


def test_atomic_writes_roundtrip(tmp_path):
    atomic_write_text(tmp_path / "a" / "r.md", "hello")
    assert (tmp_path / "a" / "r.md").read_text() == "hello"
    atomic_write_json(tmp_path / "r.json", {"x": 1})
    assert json.loads((tmp_path / "r.json").read_text()) == {"x": 1}
    atomic_torch_save({"w": torch.arange(3)}, tmp_path / "c.pt")
    assert torch.equal(safe_torch_load(tmp_path / "c.pt")["w"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    p = tmp_path / "r.json"
    atomic_write_json(p, {"ok": True})
    with pytest.raises(ValueError):
        atomic_write_json(p, {"bad": float("nan")})
    assert json.loads(p.read_text()) == {"ok": True}
    assert sorted(os.listdir(tmp_path)) == ["r.json"]


def test_safe_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        safe_torch_load(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        safe_torch_load(tmp_path / "bad.pt")


def test_json_safe_replaces_non_finite_recursively(tmp_path):
    import json
    import math

    from monai_aegis.utils import atomic_write_json, json_safe

    obj = {"a": float("nan"), 1: [1.5, float("inf"), (float("-inf"), 2)], "t": torch.tensor([0.5, float("nan")])}
    out = json_safe(obj)
    assert out == {"a": None, "1": [1.5, None, [None, 2]], "t": [0.5, None]}
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "bad.json", obj)  # still refused raw
    atomic_write_json(tmp_path / "ok.json", out)
    assert json.loads((tmp_path / "ok.json").read_text()) == out and not math.isnan(out["1"][0])


def test_atomic_writes_use_the_usual_permissions(tmp_path):
    import os

    from monai_aegis.utils import atomic_write_text

    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "report.md", "x")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644


def test_error_line_is_the_first_meaningful_line():
    from monai_aegis.utils import error_line

    e = RuntimeError("\n  first problem  \nsecond line")
    assert error_line(e) == "RuntimeError: first problem"
    advice = ValueError("Weights only load failed. Re-running with weights_only=False will likely succeed\nbad global")
    assert error_line(advice, ("weights_only=False",)) == "ValueError: bad global"
    assert error_line(KeyError()) == "KeyError" and error_line(ValueError("x"), ("x",)) == "ValueError"
