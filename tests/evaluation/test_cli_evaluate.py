import json

import pytest

from monai_aegis.cli import main
from monai_aegis.cli.evaluate import parse_settings
from monai_aegis.evaluation import validate_results
from monai_aegis.evaluation.classifiers import save_classifier


def test_parse_settings():
    assert parse_settings(["a=3", "b=[1, 2]", "c=jpeg80", 'd={"x": 1}']) == {"a": 3, "b": [1, 2], "c": "jpeg80",
                                                                            "d": {"x": 1}}
    with pytest.raises(ValueError, match="key=value"):
        parse_settings(["novalue"])


def test_evaluate_command_end_to_end(tiny_wrapper, tmp_path, capsys):
    wrapper_path, clf_path, out = tmp_path / "aegis.pt", tmp_path / "clf.pt", tmp_path / "eval"
    tiny_wrapper.save(wrapper_path)
    save_classifier(tiny_wrapper.classifier, clf_path, "small_vgg", width=8)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"conventional_steps": 2, "adaptive_steps": 2, "cushion_ablation": ["jpeg80"],
                                  "cushion_ablation_attacks": ["PGD"], "stress_samples": 2, "stress_steps": 1,
                                  "sanity_samples": 4, "sanity_eps": [1.0], "progress": False}))
    rc = main(["evaluate", "--wrapper", str(wrapper_path), "--classifier", str(clf_path), "--data", "sample",
               "--size", "32", "--attacks", "PGD,WB", "--detectors", "shield,kd", "--config", str(config),
               "--set", "sanity_attacks=[\"PGD\"]", "--max-eval", "8", "--n-fit", "32", "--output", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    validate_results(res)
    assert {r["attack"] for r in res["attacks"]} == {"PGD", "WB"}
    assert {r["detector"] for r in res["detection"]} == {"shield", "kd"}
    assert res["data"]["splits"] == {"test": {"n": 8, "class_counts": res["data"]["splits"]["test"]["class_counts"],
                                              "subset_seed": 0}}
    assert res["config"]["conventional_steps"] == 2 and res["system"]["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert (out / "report.md").is_file()
    assert "wrote" in capsys.readouterr().out


def test_evaluate_worst_case_command(tiny_wrapper, tmp_path, capsys):
    wrapper_path, clf_path, out = tmp_path / "aegis.pt", tmp_path / "clf.pt", tmp_path / "wc"
    tiny_wrapper.save(wrapper_path)
    save_classifier(tiny_wrapper.classifier, clf_path, "small_vgg", width=8)
    settings = {"eps": [2 / 256, 8 / 256], "steps": 2, "pgd_steps": 2, "lams": [1.0], "proxies": ["identity"],
                "blackbox_eps": [8 / 256], "blackbox_queries": 5, "convergence_samples": 4}
    rc = main(["evaluate", "--worst-case", "--wrapper", str(wrapper_path), "--classifier", str(clf_path), "--data",
               "sample", "--size", "32", "--max-eval", "8", "--n-fit", "8", "--set", f"worst_case={json.dumps(settings)}",
               "--set", "progress=false", "--output", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    validate_results(res)
    rec = res["worst_case"]["splits"]["test"]
    assert [r["eps"] for r in rec["curve"]] == [2 / 256, 8 / 256] and rec["n"] == 8
    assert res["attacks"] == [] and res["config"]["detectors"] == ["shield"]  # the curve alone
    assert res["worst_case"]["settings"]["steps"] == 2
    assert "worst_case" in res["figures"] and (out / res["figures"]["worst_case"]).is_file()
    report = (out / "report.md").read_text()
    assert report.index("Worst-case robustness") < report.index("Clean performance")
    printed = capsys.readouterr().out
    assert "worst-case robust accuracy" in printed and "eps 8/256: robust accuracy" in printed


def test_a_classifier_alone_from_its_weights(tiny_wrapper, tmp_path, capsys):
    """--classifier-weights: the bare classifier (no Cushion, no Shield) judged by the worst case; its weights are
    the file's, not the architecture's initial ones."""
    import torch

    weights, out = tmp_path / "classifier_at.pt", tmp_path / "wc_bare"
    torch.save(tiny_wrapper.classifier.state_dict(), weights)
    settings = {"eps": [8 / 256], "steps": 2, "pgd_steps": 2, "blackbox_eps": [], "convergence_samples": 0}
    common = ["evaluate", "--classifier-weights", str(weights), "--arch", "small_vgg", "--arch-kwargs",
              json.dumps({"width": 8}), "--data", "sample", "--size", "32", "--max-eval", "8",
              "--set", "progress=false", "--output", str(out)]
    assert main([*common, "--worst-case", "--set", f"worst_case={json.dumps(settings)}"]) == 0
    res = json.loads((out / "results.json").read_text())
    validate_results(res)
    assert res["system"]["threshold"] == [] and res["system"]["cushion"] == "none"
    report = (out / "report.md").read_text()
    assert "no Shield: nothing is rejected" in report and "clean images accepted" not in report
    rec = res["worst_case"]["splits"]["test"]
    # the system is the classifier: its curve is the undefended one, and its clean accuracy that of the weights
    assert rec["curve"][0]["robust_accuracy"] == pytest.approx(rec["undefended"][0]["robust_accuracy"], abs=0.13)
    assert rec["clean"]["accuracy"] == pytest.approx(rec["undefended"][0]["accuracy"])
    # zero weights and an output bias towards class c predict c for every image: the file's weights are judged
    state = tiny_wrapper.classifier.state_dict()
    head = [k for k, v in state.items() if k.endswith("bias") and v.shape == (2,)][-1]
    for c in (0, 1):
        torch.save({k: torch.eye(2)[c] if k == head else torch.zeros_like(v) for k, v in state.items()}, weights)
        assert main([*common, "--worst-case", "--set", f"worst_case={json.dumps(settings)}"]) == 0
        const = json.loads((out / "results.json").read_text())["worst_case"]["splits"]["test"]
        assert const["clean"]["accuracy"] == pytest.approx(const["class_counts"][c] / const["n"]), c
    capsys.readouterr()
    wrapper_file = tmp_path / "aegis.pt"
    tiny_wrapper.save(wrapper_file)
    with pytest.raises(SystemExit, match="is an AegisWrapper checkpoint"):  # not silently its classifier alone
        main(["evaluate", "--classifier-weights", str(wrapper_file), *common[3:], "--worst-case"])
    with pytest.raises(SystemExit, match="add --worst-case"):  # without it there is nothing to score
        main(common)
    with pytest.raises(SystemExit):  # one system at a time
        main([*common, "--worst-case", "--wrapper", str(weights)])
    assert "not allowed with argument" in capsys.readouterr().err


def test_evaluate_command_needs_architecture(tiny_wrapper, tmp_path):
    path = tmp_path / "aegis.pt"
    tiny_wrapper.save(path)
    with pytest.raises(SystemExit, match="--classifier"):
        main(["evaluate", "--wrapper", str(path), "--data", "sample", "--size", "32", "--output", str(tmp_path / "o")])


def test_evaluate_command_bad_input_is_one_clear_line(tiny_wrapper, tmp_path, capsys):
    path, clf_path = tmp_path / "aegis.pt", tmp_path / "clf.pt"
    tiny_wrapper.save(path)
    save_classifier(tiny_wrapper.classifier, clf_path, "small_vgg", width=8)
    common = ["evaluate", "--wrapper", str(path), "--classifier", str(clf_path), "--data", "sample", "--size", "32",
              "--output", str(tmp_path / "o")]
    assert main([*common, "--set", "adaptiv_steps=3"]) == 2
    err = capsys.readouterr().err
    assert "python -m monai_aegis evaluate: error:" in err and "adaptive_steps" in err and "Traceback" not in err
    assert main([*common, "--detectors", "shield,odin"]) == 2
    assert "odin" in capsys.readouterr().err
    missing = ["evaluate", "--wrapper", str(tmp_path / "nope.pt"), "--classifier", str(clf_path), "--data", "sample",
               "--size", "32", "--output", str(tmp_path / "o")]
    assert main(missing) == 2
    assert "nope.pt" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
