"""The bundles' inference.json: properties, per-file errors, outputs and exit status."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_aegis.bundle.screening import (
    SCREENING_COLUMNS,
    ScreeningWriter,
    exit_on_failures,
    screening_datalist,
)
from monai_aegis.transforms import TolerantTransformd, classification_transforms

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLES = {"aegis_cxr": 1, "aegis_fundus": 3}


def _make_aegis(path: Path, channels: int = 1) -> Path:
    from monai_aegis.bundle import build_aegis
    from monai_aegis.networks.nets import small_vgg

    torch.manual_seed(0)
    clf = small_vgg(in_channels=channels, num_classes=2, width=8)
    w = build_aegis(clf, (channels, 64, 64), 2, layer_names=None, cushion="jpeg80", shield_width=4, shield_hidden=8)
    w.calibrate(torch.rand(40, channels, 64, 64), tnr=0.9)
    w.save(path)
    return path


@pytest.fixture
def aegis_root(tmp_path) -> Path:
    """A bundle_root with models/aegis.pt (a tiny untrained Aegis, width 8, 1 channel)."""
    _make_aegis(tmp_path / "models" / "aegis.pt")
    return tmp_path


def _workflow(bundle: str, root: Path, **override):
    from monai.bundle import ConfigWorkflow

    meta = REPO_ROOT / "bundles" / bundle / "metadata.json"
    over = {"bundle_root": str(root), "network_def#width": 8, "network_def#convs_per_block": 1, "num_workers": 0,
            "device": "$torch.device('cpu')", **override}
    return ConfigWorkflow(config_file=str(REPO_ROOT / "bundles" / bundle / "inference.json"),
                          meta_file=str(meta) if meta.is_file() else None, logging_file=False,
                          workflow_type="inference", **over)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_inference_properties_and_end_to_end(bundle, tmp_path, write_png):
    channels = BUNDLES[bundle]
    _make_aegis(tmp_path / "models" / "aegis.pt", channels)
    rgb = np.random.default_rng(0).integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
    write_png(tmp_path / "sample_inputs" / "a.png", rgb if channels == 3 else None)
    wf = _workflow(bundle, tmp_path)
    wf.initialize()
    assert wf.check_properties() == []
    assert str(wf.bundle_root) == str(tmp_path) and wf.dataset_dir == str(tmp_path) + "/sample_inputs"
    assert [d["file"] for d in wf.dataset.data] == [str((tmp_path / "sample_inputs" / "a.png").resolve())]
    wf.run()
    wf.finalize()  # every file screened: no SystemExit
    rows = _read_csv(tmp_path / "screening" / "predictions.csv")
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["decision"] in ("ACCEPT", "REJECT")


def test_inference_corrupt_dicom_and_valid_png(aegis_root, tmp_path, write_png):
    data = tmp_path / "inputs"
    data.mkdir()
    (data / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"not a dicom" * 8)
    write_png(data / "good.png", size=(80, 70))
    out = tmp_path / "out"
    wf = _workflow("aegis_cxr", aegis_root, dataset_dir=str(data), output_dir=str(out))
    wf.initialize()
    wf.run()
    with pytest.raises(SystemExit) as exc:
        wf.finalize()
    assert exc.value.code == 1
    rows = _read_csv(out / "predictions.csv")
    assert list(rows[0]) == list(SCREENING_COLUMNS)
    by_name = {Path(r["file"]).name: r for r in rows}
    assert set(by_name) == {"broken.dcm", "good.png"}
    bad, good = by_name["broken.dcm"], by_name["good.png"]
    assert bad["status"] == "error" and bad["decision"] == "ERROR" and bad["error"] and bad["prediction"] == ""
    assert good["status"] == "ok" and good["decision"] in ("ACCEPT", "REJECT") and good["error"] == ""
    assert good["class_name"] in ("NORMAL", "PNEUMONIA") and int(good["prediction"]) in (0, 1)
    assert 0.5 <= float(good["probability"]) <= 1.0
    assert (float(good["shield_score"]) >= float(good["threshold"])) == (good["decision"] == "ACCEPT")
    js = json.loads((out / "predictions.json").read_text())
    assert js["summary"]["total"] == 2 and js["summary"]["failed"] == 1 and js["summary"]["ok"] == 1
    assert [r["file"] for r in js["rows"]] == [r["file"] for r in rows]
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_inference_matches_wrapper(aegis_root, tmp_path, write_png):
    """The pipeline gives the wrapper's own screening of the preprocessed image (Cushion applied once, inside)."""
    from monai_aegis.bundle import load_aegis
    from monai_aegis.networks.nets import small_vgg

    png = write_png(tmp_path / "in" / "x.png", size=(64, 64), seed=3)
    wf = _workflow("aegis_cxr", aegis_root, files=[str(png)], output_dir=str(tmp_path / "o"))
    wf.initialize()
    wf.run()
    wf.finalize()  # no failure: no SystemExit
    row = _read_csv(tmp_path / "o" / "predictions.csv")[0]
    w = load_aegis(small_vgg(1, 2, width=8), aegis_root / "models" / "aegis.pt")
    x = classification_transforms(64, 1)({"image": str(png)})["image"][None]
    with torch.no_grad():
        res = w.screen(x)
    assert int(row["prediction"]) == int(res["pred"][0])
    assert float(row["shield_score"]) == pytest.approx(float(res["shield_logit"][0]), rel=1e-4, abs=1e-5)


def test_wrong_shape_nifti_is_error_row(aegis_root, tmp_path, write_png):
    nib = pytest.importorskip("nibabel")
    data = tmp_path / "inputs"
    data.mkdir()
    nib.save(nib.Nifti1Image(np.random.rand(16, 16, 6).astype(np.float32), np.eye(4)), str(data / "vol.nii.gz"))
    nib.save(nib.Nifti1Image(np.random.rand(16, 16).astype(np.float32), np.eye(4)), str(data / "slice.nii"))
    wf = _workflow("aegis_cxr", aegis_root, dataset_dir=str(data), output_dir=str(tmp_path / "o"))
    wf.initialize()
    wf.run()
    with pytest.raises(SystemExit):
        wf.finalize()
    rows = {Path(r["file"]).name: r for r in _read_csv(tmp_path / "o" / "predictions.csv")}
    assert rows["vol.nii.gz"]["status"] == "error" and "2-D" in rows["vol.nii.gz"]["error"]
    assert rows["slice.nii"]["status"] == "ok"


def test_missing_checkpoint_is_clear(tmp_path, write_png):
    write_png(tmp_path / "sample_inputs" / "a.png")
    wf = _workflow("aegis_cxr", tmp_path)
    wf.initialize()
    with pytest.raises(RuntimeError) as exc:
        wf.run()
    cause = exc.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, FileNotFoundError)
    assert "aegis.pt' not found" in str(cause) and "train.json" in str(cause)


def test_tolerant_transform(tmp_path, write_png):
    t = TolerantTransformd("image", classification_transforms(32, 1), image_shape=(1, 32, 32))
    ok = t({"image": str(write_png(tmp_path / "a.png"))})
    assert ok["error"] == "" and ok["image"].shape == (1, 32, 32) and ok["file"].endswith("a.png")
    bad = t({"image": str(tmp_path / "missing.png")})
    assert bad["error"] and torch.equal(bad["image"], torch.zeros(1, 32, 32)) and bad["file"].endswith("missing.png")
    shape = TolerantTransformd("image", lambda d: {**d, "image": torch.zeros(2, 32, 32)}, image_shape=(1, 32, 32))
    assert "expected (1, 32, 32)" in shape({"image": "x"})["error"]
    with pytest.raises(ValueError, match="callable"):
        TolerantTransformd("image", "not callable")


def test_screening_datalist(tmp_path, write_png):
    write_png(tmp_path / "d" / "b.png")
    write_png(tmp_path / "d" / "sub" / "a.jpg")
    (tmp_path / "d" / "notes.txt").write_text("x")
    odd = tmp_path / "odd.bmp"
    odd.write_bytes(b"x")
    items = screening_datalist([tmp_path / "d", odd])
    assert [Path(i["image"]).name for i in items] == ["b.png", "a.jpg", "odd.bmp"]
    assert all(i["file"] == i["image"] for i in items)
    with pytest.raises(FileNotFoundError, match="not found"):
        screening_datalist(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        screening_datalist(tmp_path / "empty")
    with pytest.raises(ValueError):
        screening_datalist([])


def test_writer_and_exit(tmp_path):
    w = ScreeningWriter(tmp_path, class_names=["A", "B"])
    res = {"pred": torch.tensor([1, 0]), "probs": torch.tensor([[0.2, 0.8], [0.6, 0.4]]),
           "shield_logit": torch.tensor([1.0, -2.0]), "threshold": torch.tensor([0.5, 0.0]),
           "accept": torch.tensor([True, False])}
    w.rows = w.make_rows(["x.png", "y.png"], ["", ""], res)
    assert [r["decision"] for r in w.rows] == ["ACCEPT", "REJECT"] and w.rows[0]["class_name"] == "B"
    assert w.rows[0]["probability"] == pytest.approx(0.8)
    exit_on_failures(w)  # nothing failed
    w.rows += w.make_rows(["z.dcm"], ["RuntimeError: bad"], {k: v[:1] for k, v in res.items()})
    w.write()
    assert _read_csv(tmp_path / "predictions.csv")[2]["decision"] == "ERROR"
    with pytest.raises(SystemExit):
        exit_on_failures(w)


def test_degenerate_inputs_are_rejected_with_a_reason(aegis_root, tmp_path, write_png):
    """A constant image, a 1x1 image and large pure noise (averaged to flat grey at 64 px) are REJECTed with the
    reason, not accepted; a real radiograph of the embedded sample is screened normally. Not failures: exit 0."""
    from monai_aegis.data import load_sample_datalist

    data = tmp_path / "inputs"
    write_png(data / "grey.png", np.full((300, 300), 128, dtype=np.uint8))
    write_png(data / "dot.png", np.full((1, 1), 200, dtype=np.uint8))
    write_png(data / "noise.png", np.random.default_rng(0).integers(0, 256, size=(3000, 3000), dtype=np.uint8))
    real = load_sample_datalist("test")[0]["image"]
    (data / "xray.png").write_bytes(Path(real).read_bytes())
    out = tmp_path / "out"
    wf = _workflow("aegis_cxr", aegis_root, dataset_dir=str(data), output_dir=str(out))
    wf.initialize()
    wf.run()
    wf.finalize()  # rejections are not failures: no SystemExit
    rows = {Path(r["file"]).name: r for r in _read_csv(out / "predictions.csv")}
    for name in ("grey.png", "dot.png", "noise.png"):
        assert rows[name]["status"] == "invalid" and rows[name]["decision"] == "REJECT", rows[name]
        assert "no image content" in rows[name]["error"] and rows[name]["class_name"] in ("NORMAL", "PNEUMONIA")
    assert rows["xray.png"]["status"] == "ok" and rows["xray.png"]["error"] == ""
    summary = json.loads((out / "predictions.json").read_text())["summary"]
    assert summary["invalid"] == 3 and summary["failed"] == 0 and summary["rejected"] >= 3
    # the check can be switched off
    wf = _workflow("aegis_cxr", aegis_root, dataset_dir=str(data), output_dir=str(tmp_path / "off"),
                   reject_min_std=None)
    wf.initialize()
    wf.run()
    assert all(r["status"] == "ok" for r in _read_csv(tmp_path / "off" / "predictions.csv"))
