import pytest
import torch

from monai_aegis.evaluation import FeatureMean, stress_table, stress_test
from monai_aegis.evaluation.classifiers import SMALL_VGG_LAYERS
from monai_aegis.networks import FeatureHooks, cushion_from_name


def test_feature_mean_objective_picks_layer_and_sign():
    feats = {"a": torch.arange(8.0).view(2, 1, 2, 2), "b": torch.ones(2, 3)}
    obj = FeatureMean(["a", "b"], torch.tensor([0, 1]), torch.tensor([1.0, -1.0]))
    assert obj.layer_names == ("a", "b")
    out = obj(None, feats, None, None)
    assert torch.allclose(out, torch.tensor([1.5, -1.0]))
    with pytest.raises(ValueError, match="layer_index"):
        FeatureMean(["a"], torch.tensor([1]))
    with pytest.raises(ValueError, match="built for 3"):
        FeatureMean(["a", "b"], torch.tensor([0, 1, 0]))(None, feats, None, None)


def test_stress_test_moves_layer_means_and_cushion_matters(tiny_classifier, sample32):
    x = sample32["test"][0][:4]
    cushion = cushion_from_name("bit_depth4")
    records = stress_test(tiny_classifier, x, SMALL_VGG_LAYERS, eps=16 / 256, steps=5,
                          cushions={"none": None, "bit_depth4": cushion}, batch_size=16)
    assert len(records) == 2 * 2 * len(SMALL_VGG_LAYERS)
    table = stress_table(records)
    for cname, rows in table.items():
        for layer, r in rows.items():
            # the attacker moves every layer's mean in the requested direction
            assert r["up"] > r["clean"] > r["down"], (cname, layer, r)
            assert r["up_rel"] > 0 > r["down_rel"]
    # the clean means of the uncushioned rows are the layer means of f(x)
    with torch.no_grad():
        _, feats = FeatureHooks(tiny_classifier, SMALL_VGG_LAYERS).run(x)
    for layer in SMALL_VGG_LAYERS:
        assert table["none"][layer]["clean"] == pytest.approx(float(feats[layer].flatten(1).mean(1).mean()), rel=1e-5)
    # the cushion changes what the attacker achieves (quantisation absorbs part of the perturbation)
    diffs = [abs(table["none"][n]["up"] - table["bit_depth4"][n]["up"]) for n in SMALL_VGG_LAYERS]
    assert max(diffs) > 1e-3


def test_stress_test_batched_equals_single_objective(tiny_classifier, sample32):
    """The replicated batch (all layers and directions at once) equals one BIM per (layer, direction)."""
    from monai_aegis.attacks import BIM

    x = sample32["test"][0][:2]
    rec = stress_test(tiny_classifier, x, SMALL_VGG_LAYERS, eps=8 / 256, steps=3, batch_size=64)
    k = 2  # block2 ("up")
    obj = FeatureMean(SMALL_VGG_LAYERS, torch.full((2,), 1), torch.ones(2))
    x_adv = BIM(tiny_classifier, eps=8 / 256, steps=3, objective=obj)(x).x_adv
    with torch.no_grad():
        _, feats = FeatureHooks(tiny_classifier, SMALL_VGG_LAYERS).run(x_adv)
    expected = float(feats["block2"].flatten(1).mean(1).mean())
    assert rec[k]["layer"] == "block2" and rec[k]["direction"] == "up"
    assert rec[k]["adv_mean"] == pytest.approx(expected, rel=1e-4)
