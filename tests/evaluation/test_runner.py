import json
import math

import pytest
import torch

from monai_aegis.evaluation import EvaluationConfig, default_layer_subsets, run_evaluation, validate_results
from monai_aegis.evaluation import system as system_mod
from monai_aegis.evaluation.classifiers import SMALL_VGG_LAYERS
from monai_aegis.networks import AegisWrapper

from .conftest import make_tiny_wrapper

ATTACKS = ["FGSM", "PGD", {"name": "PGD", "label": "PGD-4", "eps": 4 / 256}, "CW-L2", "TF", "Fea", "HFC", "WB", "SPGD"]
TINY = dict(
    conventional_steps=2, adaptive_steps=2, cw_binary_search_steps=1, cw_steps=3, n_fit=48, stress_samples=4,
    stress_steps=2, sanity_samples=8, sanity_eps=[2 / 256, 1.0], sanity_attacks=["PGD"],
    detector_kwargs={"dnn": {"epochs": 2}, "lid": {"k": 5, "batch_size": 16}}, cushion_ablation=["identity", "jpeg80"],
    cushion_ablation_attacks=["PGD"], class_names=["NORMAL", "PNEUMONIA"], progress=False, batch_size=16,
)


def _splits(sample32):
    xt, yt = sample32["test"]
    perm = torch.randperm(xt.shape[0], generator=torch.Generator().manual_seed(0))
    return {"holdout": (xt[perm[:10]], yt[perm[:10]]), "test": (xt[perm[10:18]], yt[perm[10:18]])}


@pytest.fixture(scope="module")
def evaluated(tiny_classifier, tiny_substitute, sample32, tmp_path_factory):
    wrapper = make_tiny_wrapper(tiny_classifier, sample32)
    threshold = wrapper.threshold.clone()
    out = tmp_path_factory.mktemp("eval")
    res = run_evaluation(wrapper, sample32["train"], _splits(sample32), sample32["val"], output_dir=out,
                         substitute=tiny_substitute, attacks=ATTACKS, **TINY)
    assert torch.equal(wrapper.threshold, threshold)  # the caller's wrapper is left as it was
    return res, out


def test_all_tables_present(evaluated):
    res, _ = evaluated
    labels = ["FGSM", "PGD", "PGD-4", "CW-L2", "TF", "Fea", "HFC", "WB", "SPGD"]
    dets = ["shield", "kd", "lid", "maha", "dnn"]
    combos = {(r["split"], r["cushion"], r["attack"], r["detector"]) for r in res["detection"]}
    assert combos == {(s, c, a, d) for s in ("holdout", "test") for c in ("jpeg80", "none") for a in labels for d in dets}
    assert {(r["split"], r["cushion"]) for r in res["clean"]} == {(s, c) for s in ("holdout", "test")
                                                                  for c in ("jpeg80", "none")}
    assert len(res["attacks"]) == 2 * 2 * len(labels)
    subsets = default_layer_subsets(SMALL_VGG_LAYERS)
    la = {(r["subset"], r["detector"]) for r in res["layer_ablation"]}
    assert {(s, d) for s in subsets for d in dets[1:]} <= la and ("all", "shield") in la
    assert {(r["cushion"], r["attack"]) for r in res["cushion_ablation"]} == {("identity", "PGD"), ("jpeg80", "PGD")}
    assert {(r["cushion"], r["direction"]) for r in res["stress_test"]} == {
        (c, d) for c in ("none", "jpeg80") for d in ("up", "down")}
    assert [r["eps"] for r in res["sanity"]["eps_sweep"]] == [2 / 256, 1.0]
    names = [c["name"] for c in res["sanity"]["checks"]]
    assert any("rises with eps" in n for n in names) and any("transfer" in n for n in names)
    assert res["system"]["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert res["data"]["fit"]["n"] == 48 and res["data"]["fit"]["n_adversarial"] > 0


def test_metrics_are_consistent(evaluated):
    res, _ = evaluated
    det = {(r["split"], r["cushion"], r["attack"], r["detector"]): r for r in res["detection"]}
    for r in res["attacks"]:
        assert 0 <= r["undetected_success"] <= r["success_rate"] <= 1
        rob = r["robust_accuracy"]
        # a detector can only add defended images to the classifier alone
        assert all(v >= rob["classifier"] - 1e-9 for v in rob.values())
        n_adv = round(r["success_rate"] * r["n"])
        for d in ("shield", "kd"):
            m = det[(r["split"], r["cushion"], r["attack"], d)]
            assert m["n_adv"] == n_adv and m["n_clean"] == r["n"]
            assert (m["auroc"] is None) == (n_adv == 0)
        if r["mean_linf"] is not None and r["attack"] not in ("CW-L2",):
            eps = 4 / 256 if r["attack"] == "PGD-4" else 16 / 256
            assert r["mean_linf"] <= eps + 1e-6
    # the direction records partition each attack's images
    for r in res["attacks"]:
        parts = [d for d in res["directions"]
                 if (d["split"], d["cushion"], d["attack"]) == (r["split"], r["cushion"], r["attack"])]
        assert sum(d["n"] for d in parts) == r["n"]
        assert {(d["source"], d["target"]) for d in parts} <= {("NORMAL", "PNEUMONIA"), ("PNEUMONIA", "NORMAL")}


def test_outputs_written_and_valid(evaluated):
    res, out = evaluated
    on_disk = json.loads((out / "results.json").read_text())
    validate_results(on_disk)
    assert on_disk == json.loads(json.dumps(res))
    report = (out / "report.md").read_text()
    for section in ("## Summary", "## Clean performance", "## Split `holdout`, with Cushion", "## Layer ablation",
                    "## Cushion ablation", "## Stress test", "## Sanity checks", "NORMAL → PNEUMONIA"):
        assert section in report, section
    figures = [f for v in res["figures"].values() for f in ([v] if isinstance(v, str) else v)]
    assert {"examples.png", "eps_sweep.png", "roc_holdout_jpeg80.png"} <= set(figures)
    for f in figures:
        assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # atomic writes leave no temporaries


def test_results_schema_rejects_bad_documents(evaluated):
    res, _ = evaluated
    bad = json.loads(json.dumps(res))
    del bad["detection"][0]["auroc"]
    bad["attacks"][0]["success_rate"] = 1.5
    bad["clean"][0]["accuracy"] = float("nan")
    bad["system"]["layer_names"] = "block1"
    with pytest.raises(ValueError) as e:
        validate_results(bad)
    msg = str(e.value)
    assert "detection[0]: missing required key 'auroc'" in msg
    assert "attacks[0].success_rate: 1.5 > maximum" in msg
    assert "clean[0].accuracy: NaN" in msg
    assert "system.layer_names: expected array" in msg


def test_each_attack_is_crafted_once(tiny_wrapper, sample32, monkeypatch):
    built = []
    real = system_mod.make_aegis_attack

    def counting(name, wrapper, **kw):
        built.append((name, wrapper.cushion.name if wrapper.cushion is not None else "none", kw.get("eps")))
        return real(name, wrapper, **kw)

    monkeypatch.setattr(system_mod, "make_aegis_attack", counting)
    splits = _splits(sample32)
    res = run_evaluation(tiny_wrapper, sample32["train"], splits, sample32["val"], attacks=["PGD", "WB"],
                         detectors=["shield", "kd"], **{**TINY, "sanity_eps": [], "stress_samples": 0})
    main = [b for b in built if b[2] == 16 / 256]
    # main tables: once per (split, setting, attack); the layer ablation reuses them; the Cushion ablation adds PGD
    # once per Cushion (through make_aegis_attack on its own wrapper)
    assert sorted(main).count(("PGD", "jpeg80", 16 / 256)) == len(splits) + 1
    assert sorted(main).count(("PGD", "none", 16 / 256)) == len(splits)
    assert sorted(main).count(("PGD", "identity", 16 / 256)) == 1  # the ablation's no-op Cushion row
    assert sorted(main).count(("WB", "jpeg80", 16 / 256)) == len(splits)
    assert res["sanity"]["eps_sweep"] == [] and res["stress_test"] == []


def test_config_from_dict_and_errors():
    cfg = EvaluationConfig.from_dict({"attacks": ["PGD"], "eps": 0.03}, max_eval=5)
    assert cfg.attacks == ["PGD"] and cfg.eps == 0.03 and cfg.max_eval == 5
    assert EvaluationConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="Did you mean 'adaptive_steps'"):
        EvaluationConfig.from_dict({"adaptive_step": 3})
    with pytest.raises(ValueError, match="unknown detector"):
        EvaluationConfig(detectors=["shield", "knn"])
    with pytest.raises(ValueError, match="duplicates"):
        EvaluationConfig(attacks=["PGD", {"name": "PGD"}])
    with pytest.raises(ValueError, match="cushion_modes"):
        EvaluationConfig(cushion_modes=["sometimes"])


def test_default_layer_subsets():
    s = default_layer_subsets(["a", "b", "c"])
    assert list(s) == ["only a", "only b", "only c", "shallow", "deep", "all"]
    assert s["shallow"] == ["a", "b"] and s["deep"] == ["c"] and s["all"] == ["a", "b", "c"]
    assert list(default_layer_subsets(["a"])) == ["all"]


def test_wrapper_without_cushion_and_bad_inputs(tiny_classifier, tiny_wrapper, sample32):
    bare = AegisWrapper(tiny_classifier, tiny_wrapper.shield, cushion=None, threshold=tiny_wrapper.threshold)
    splits = {"test": _splits(sample32)["test"]}
    res = run_evaluation(bare, sample32["train"], splits, sample32["val"], attacks=["FGSM"], detectors=["shield", "maha"],
                         layer_ablation_attacks=[], **{**TINY, "cushion_ablation": [], "sanity_eps": [],
                                                       "stress_samples": 0})
    assert {r["cushion"] for r in res["attacks"]} == {"none"}
    assert any("no Cushion" in n for n in res["notes"])
    assert not math.isnan(res["clean"][0]["accuracy"])
    with pytest.raises(TypeError, match="AegisWrapper"):
        run_evaluation(tiny_classifier, sample32["train"], splits)
    with pytest.raises(ValueError, match="ablation_split"):
        run_evaluation(bare, sample32["train"], splits, ablation_split="nope", attacks=["FGSM"])


def test_a_classifier_alone_is_judged_by_the_worst_case(tiny_classifier, sample32):
    """No Shield, no Cushion, no hooked layers (an adversarially trained classifier as a baseline): the worst case
    needs no layers and attacks the bare classifier; what does read layers says so."""
    bare = AegisWrapper(tiny_classifier)
    splits = {"test": _splits(sample32)["test"]}
    only_wc = {**TINY, "attacks": [], "detectors": ["shield"], "layer_ablation_attacks": [], "cushion_ablation": [],
               "sanity_eps": [], "stress_samples": 0, "figures": False,
               "worst_case": {"eps": [8 / 256], "steps": 3, "pgd_steps": 2, "convergence_samples": 0,
                              "blackbox_eps": [], "blackbox_queries": 5}, "max_eval": 8}
    res = run_evaluation(bare, sample32["train"], splits, sample32["val"], **only_wc)
    wc = res["worst_case"]["splits"]["test"]
    assert res["system"]["layer_names"] == [] and any("no Shield" in n for n in res["notes"])
    assert {m["attack"] for m in wc["members"]} <= {"APGD-CE", "APGD-CW"}
    row = wc["curve"][0]
    # the system is the classifier: its worst case is the undefended one, below its clean accuracy
    assert row["robust_accuracy"] == pytest.approx(row["undefended_robust_accuracy"], abs=0.13)
    assert row["robust_accuracy"] <= wc["clean"]["accuracy"]
    with pytest.raises(ValueError, match="no hooked layers for the baseline detectors, the stress test"):
        run_evaluation(bare, sample32["train"], splits, sample32["val"],
                       **{**only_wc, "detectors": ["maha"], "stress_samples": 2})


def test_sanity_sweep_takes_more_steps_not_bigger_ones_above_the_budget(tiny_wrapper, sample32, monkeypatch):
    """Above the main eps the sweep scales the step count (capped by sanity_max_steps), keeping the step size."""
    built = []
    original = system_mod.AttackFactory.build

    def spy(self, spec, system, **extra):
        label, attack = original(self, spec, system, **extra)
        if "eps" in extra:
            built.append((extra["eps"], attack.steps, attack.step_size))
        return label, attack

    monkeypatch.setattr(system_mod.AttackFactory, "build", spy)
    xt, yt = sample32["test"]
    run_evaluation(tiny_wrapper, sample32["train"], {"holdout": (xt[:6], yt[:6])}, sample32["val"],
                   attacks=["PGD"], detectors=["shield"], cushion_modes=["with"], conventional_steps=4,
                   layer_ablation_attacks=[], cushion_ablation=[], stress_samples=0, sanity_samples=6,
                   sanity_eps=[8 / 256, 16 / 256, 64 / 256, 1.0], sanity_attacks=["PGD"], sanity_max_steps=40,
                   figures=False, progress=False, n_fit=24)
    steps = {eps: s for eps, s, _ in built}
    alpha = {eps: a for eps, _, a in built}
    assert steps == {8 / 256: 4, 16 / 256: 4, 64 / 256: 16, 1.0: 40}
    assert alpha[64 / 256] == pytest.approx(alpha[16 / 256])  # same step size as the main budget
    assert alpha[1.0] == pytest.approx(2.5 / 40)  # capped step count: larger steps only beyond the cap


def test_paper_protocol_attacks_build_what_table_2_names(tiny_wrapper, sample32):
    """HFC-MIM / HFC-BIM / HFC-CW-Linf: the HFC prior on MIM (momentum, no random start), BIM (no random start) and
    the CW margin; the protocol adds them to the default list, which now holds DIM and TIM too."""
    from monai_aegis.attacks import GaussianFeatureModel, make_aegis_attack
    from monai_aegis.attacks.steps import MomentumStep
    from monai_aegis.evaluation import DEFAULT_ATTACKS, HFC_STRENGTHENED, PAPER_PROTOCOL

    assert {"DIM", "TIM"} <= set(DEFAULT_ATTACKS)
    cfg = EvaluationConfig.from_dict(PAPER_PROTOCOL)
    assert [a for a in cfg.attacks if isinstance(a, dict)] == list(HFC_STRENGTHENED)
    assert cfg.layer_ablation_attacks == ["PGD", "CW-Linf", "HFC", "WB"]
    x, y = sample32["train"]
    fm = GaussianFeatureModel.fit_model(tiny_wrapper.classifier, x, y, SMALL_VGG_LAYERS, reg_covar=1e-3)
    built = {}
    for spec in HFC_STRENGTHENED:
        kw = {k: v for k, v in spec.items() if k not in ("name", "label")}
        built[spec["label"]] = make_aegis_attack("HFC", tiny_wrapper, feature_model=fm, steps=2, **kw)
    assert isinstance(built["HFC-MIM"].step_rule, MomentumStep) and not built["HFC-MIM"].random_start
    assert not built["HFC-BIM"].random_start and not isinstance(built["HFC-BIM"].step_rule, MomentumStep)
    assert "CWMargin" in repr(built["HFC-CW-Linf"].objective) and built["HFC-CW-Linf"].random_start
    res = built["HFC-MIM"](sample32["test"][0][:4], sample32["test"][1][:4], target=1 - sample32["test"][1][:4])
    assert float((res.x_adv - sample32["test"][0][:4]).abs().max()) <= 16 / 256 + 1e-6


def test_a_split_alone_gets_its_subset_back_with_the_recorded_seed(tiny_wrapper, sample32):
    """The i-th split draws its ``max_eval`` subset with seed + i: evaluated alone with that seed it gets the same
    images (the docs' single-split reruns depend on this)."""
    splits = _splits(sample32)
    quick = {**TINY, "attacks": ["FGSM"], "detectors": ["shield"], "sanity_eps": [], "stress_samples": 0,
             "cushion_ablation": [], "figures": False, "max_eval": 5}
    both = run_evaluation(tiny_wrapper, sample32["train"], splits, sample32["val"], **quick)
    seeds = {k: v["subset_seed"] for k, v in both["data"]["splits"].items()}
    assert seeds == {"holdout": 0, "test": 1}
    alone = run_evaluation(tiny_wrapper, sample32["train"], {"test": splits["test"]}, sample32["val"],
                           **{**quick, "seed": seeds["test"]})
    assert alone["data"]["splits"]["test"] == both["data"]["splits"]["test"]
    assert [r for r in alone["clean"] if r["split"] == "test"] == [r for r in both["clean"] if r["split"] == "test"]
    full = run_evaluation(tiny_wrapper, sample32["train"], splits, sample32["val"], **{**quick, "max_eval": None})
    assert all(v["subset_seed"] is None for v in full["data"]["splits"].values())
