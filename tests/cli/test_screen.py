"""``python -m monai_aegis screen``: a bundle's inference.json over files and folders."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from monai_aegis.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]
CXR = REPO_ROOT / "bundles" / "aegis_cxr"
TINY = ["--set", "network_def#width=8", "--set", "network_def#convs_per_block=1", "--device", "cpu",
        "--num-workers", "0", "--no-progress"]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def aegis_ckpt(tmp_path) -> Path:
    from monai_aegis.bundle import build_aegis
    from monai_aegis.networks.nets import small_vgg

    clf = small_vgg(in_channels=1, num_classes=2, width=8)
    w = build_aegis(clf, (1, 64, 64), 2, layer_names=None, cushion="jpeg80", shield_width=4, shield_hidden=8)
    w.calibrate(torch.rand(40, 1, 64, 64), tnr=0.9)
    path = tmp_path / "models" / "aegis.pt"
    w.save(path)
    return path


def test_screen_folder(aegis_ckpt, tmp_path, write_png, write_dicom, capsys):
    data = tmp_path / "scans"
    write_png(data / "a.png", size=(40, 50))
    write_dicom(data / "sub" / "b.dcm", (torch.rand(32, 32).numpy() * 4000).astype("uint16"))
    out = tmp_path / "out"
    rc = main(["screen", "--bundle", str(CXR), "--ckpt", str(aegis_ckpt), "--output", str(out), *TINY, str(data)])
    assert rc == 0
    rows = _rows(out / "predictions.csv")
    assert [Path(r["file"]).name for r in rows] == ["a.png", "b.dcm"]
    assert all(r["status"] == "ok" and r["decision"] in ("ACCEPT", "REJECT") for r in rows)
    printed = capsys.readouterr().out
    assert "screened 2 file(s)" in printed and str(out / "predictions.csv") in printed


def test_screen_failed_file_exits_1(aegis_ckpt, tmp_path, write_png, capsys):
    good = write_png(tmp_path / "good.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    rc = main(["screen", "--bundle", str(CXR), "--ckpt", str(aegis_ckpt), "--output", str(out), *TINY,
               str(good), str(bad)])
    assert rc == 1
    rows = _rows(out / "predictions.csv")
    assert [r["status"] for r in rows] == ["ok", "error"]
    assert "1 failed" in capsys.readouterr().out and (out / "predictions.json").is_file()


def test_screen_missing_checkpoint(tmp_path, write_png, capsys):
    png = write_png(tmp_path / "a.png")
    rc = main(["screen", "--bundle", str(CXR), "--ckpt", str(tmp_path / "nope.pt"), "--output", str(tmp_path / "o"),
               *TINY, str(png)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "screen: error:" in err and "nope.pt' not found" in err and "Traceback" not in err


def test_screen_bad_input(aegis_ckpt, tmp_path, capsys):
    common = ["screen", "--ckpt", str(aegis_ckpt), *TINY]
    assert main([*common, "--bundle", str(CXR), str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main([*common, "--bundle", str(tmp_path), str(tmp_path)]) == 2
    assert "inference.json" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([*common, "--bundle", str(CXR), str(tmp_path / "empty")]) == 2
    assert "no image files" in capsys.readouterr().err


class _Evil:  # pickling it would run os.system on load with weights_only=False
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("case, message", [
    ("output_is_file", "is an existing file"),
    ("output_unwritable", "cannot be written"),
    ("zero_byte_ckpt", "is empty (0 bytes)"),
    ("truncated_ckpt", "cannot be read (truncated, corrupt or not a PyTorch checkpoint)"),
    ("code_ckpt", "would execute code"),
    ("wrong_architecture", "does not match the weights saved"),
    ("unknown_device", "is not a device torch knows"),
    ("unknown_set_key", "has no such entry"),
    ("zero_threads", "--threads must be >= 1"),
])
def test_screen_bad_arguments_are_one_line_with_exit_2(case, message, aegis_ckpt, tmp_path, write_png, capsys):
    png = write_png(tmp_path / "a.png")
    out, ckpt, extra = tmp_path / "out", aegis_ckpt, []
    if case == "output_is_file":
        out = png
    elif case == "output_unwritable":
        out = png / "sub"  # below a file: cannot be created, whoever runs the test
    elif case == "zero_byte_ckpt":
        ckpt = tmp_path / "zero.pt"
        ckpt.write_bytes(b"")
    elif case == "truncated_ckpt":
        ckpt = tmp_path / "half.pt"
        ckpt.write_bytes(aegis_ckpt.read_bytes()[: aegis_ckpt.stat().st_size // 2])
    elif case == "code_ckpt":
        ckpt = tmp_path / "evil.pt"
        torch.save({"format": "x", "payload": _Evil()}, ckpt)
    elif case == "wrong_architecture":
        extra = ["--set", "network_def#width=16"]
    elif case == "unknown_device":
        extra = ["--device", "tpu9"]
    elif case == "unknown_set_key":
        extra = ["--set", "nope#x=1"]
    elif case == "zero_threads":
        extra = ["--threads", "0"]
    rc = main(["screen", "--bundle", str(CXR), "--ckpt", str(ckpt), "--output", str(out), *TINY, *extra, str(png)])
    captured = capsys.readouterr()
    assert rc == 2, captured
    assert message in captured.err and "Traceback" not in captured.err
    assert "weights_only=False" not in captured.err and "pwned" not in captured.out
    assert not (tmp_path / "out" / "predictions.csv").exists()  # refused before screening


def test_no_progress_bar_when_stderr_is_not_a_terminal(aegis_ckpt, tmp_path, write_png, capsys):
    """Output going to a log file or a pipe gets no bar (its carriage-return redraws pile up there as garbage)."""
    write_png(tmp_path / "scans" / "a.png", size=(40, 50))
    args = [a for a in TINY if a != "--no-progress"]
    rc = main(["screen", "--bundle", str(CXR), "--ckpt", str(aegis_ckpt), "--output", str(tmp_path / "out"), *args,
               str(tmp_path / "scans")])
    err = capsys.readouterr().err
    assert rc == 0 and "\r" not in err and "screening[" not in err and "screening:" not in err


def test_screen_threads_knob(aegis_ckpt, tmp_path, write_png):
    """--threads sets the job's CPU threads (the bundle's num_threads) before screening."""
    before = torch.get_num_threads()
    try:
        png = write_png(tmp_path / "a.png")
        rc = main(["screen", "--bundle", str(CXR), "--ckpt", str(aegis_ckpt), "--output", str(tmp_path / "out"),
                   *TINY, "--threads", "1", str(png)])
        assert rc == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
