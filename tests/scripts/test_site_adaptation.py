"""scripts/site_adaptation.py end to end on a tiny Kermany-layout folder built from the embedded sample: a bundle run
with a hold-out split, then the three deployments (shipped, recalibrated, adapted) judged on the same images."""

from __future__ import annotations

import json
import shutil

import pytest
from bundle_helpers import TINY, bundle_files, run_workflow
from toys import load_script


def _kermany_folder(root):
    from monai_aegis.data import load_sample_datalist

    names = ("NORMAL", "PNEUMONIA")
    for split, per_class in (("train", 48), ("test", 24)):
        items = load_sample_datalist(split)
        chosen = [it for c in (0, 1) for it in [i for i in items if int(i["label"]) == c][:per_class]]
        for i, it in enumerate(chosen):
            dst = root / split / names[int(it["label"])] / f"IM-{i:04d}-0001.png"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(it["image"], dst)
    return root


def test_three_deployments_on_the_same_images(tmp_path):
    data = _kermany_folder(tmp_path / "chest_xray")
    run = tmp_path / "run"
    run_workflow(bundle_files("aegis_cxr", "train.json"), "train", bundle_root=str(run), dataset_dir=str(data),
                 holdout_fraction=0.2, **TINY)
    out = tmp_path / "site.json"
    res = load_script("site_adaptation").main([
        "--run", str(run), "--root", str(data), "--out", str(out), "--epochs", "1", "--epoch-length", "2",
        "--max-images", "6", "--network", '{"width": 8, "convs_per_block": 1}',
        "--set", json.dumps({"eps": [8 / 256], "steps": 2, "pgd_steps": 2, "lams": [1.0], "proxies": ["identity"]})])
    assert json.loads(out.read_text())["n"] == res["n"]
    assert res["n"]["site"] + res["n"]["eval"] == 48 and abs(res["n"]["site"] - res["n"]["eval"]) <= 2
    assert set(res["deployments"]) == {"shipped", "recalibrated", "adapted"}
    assert res["adaptation"]["iterations"] == 2 and res["adaptation"]["n_site"] == res["n"]["site"]
    assert res["recalibration"]["n"] == res["n"]["site"]
    for rec in res["deployments"].values():
        assert rec["worst_case_eval"]["n"] == 6 and [r["eps"] for r in rec["worst_case_eval"]["curve"]] == [8 / 256]
        assert set(rec["clean"]) == {"val", "holdout", "site", "eval"}
    # the recalibrated thresholds accept ~90 % of the site half they were set on
    assert res["deployments"]["recalibrated"]["clean"]["site"]["accepted"] == pytest.approx(0.9, abs=0.1)
    assert (run / "models" / "aegis_site_adapted_half.pt").is_file()
    for rec in res["deployments"].values():  # SR@q at thresholds set on the site half, for all three alike
        assert set(rec["worst_case_eval"]["curve"][0]["sr"]) == {"5", "10"}
    # --max-images 0: the clean figures alone, for a quick sweep of the adaptation settings
    quick = load_script("site_adaptation").main([
        "--run", str(run), "--root", str(data), "--out", str(tmp_path / "quick.json"), "--epochs", "1",
        "--epoch-length", "1", "--site-fraction", "0.8", "--max-images", "0",
        "--network", '{"width": 8, "convs_per_block": 1}'])
    assert quick["adaptation"]["iterations"] == 1 and quick["settings"]["site_fraction"] == 0.8
    for name, rec in quick["deployments"].items():
        assert set(rec) == {"thresholds", "clean"}
        assert rec["clean"]["eval"] == res["deployments"][name]["clean"]["eval"] or name == "adapted"
    # the halves swapped (cross-fitting) with the same-pipeline control, two deployments only
    swap = load_script("site_adaptation").main([
        "--run", str(run), "--root", str(data), "--out", str(tmp_path / "swap.json"), "--epochs", "1",
        "--epoch-length", "1", "--max-images", "0", "--site-half", "1", "--control", "--benign-shift", '{"prob": 1.0}',
        "--deployments", "shipped,adapted", "--network", '{"width": 8, "convs_per_block": 1}'])
    assert set(swap["deployments"]) == {"shipped", "adapted"} and "recalibration" not in swap
    assert swap["adaptation_images"] == "train (control)"
    assert (swap["n"]["site"], swap["n"]["eval"]) == (res["n"]["eval"], res["n"]["site"])
    assert swap["deployments"]["shipped"]["clean"]["eval"] == res["deployments"]["shipped"]["clean"]["site"]
    assert swap["adaptation"]["n_site"] == swap["n"]["site"]
    assert (run / "models" / "aegis_site_adapted_half1_control_shift.pt").is_file()
    assert swap["settings"]["benign_shift"] == '{"prob": 1.0}'


@pytest.mark.parametrize("bad", [["--max-images", "-1"], ["--deployments", "shipped,tuned"], ["--site-half", "2"]])
def test_bad_options_are_refused(tmp_path, capsys, bad):
    with pytest.raises(SystemExit):
        load_script("site_adaptation").main(["--run", str(tmp_path), "--root", str(tmp_path), "--out",
                                             str(tmp_path / "x.json"), *bad])
    assert bad[0] in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
