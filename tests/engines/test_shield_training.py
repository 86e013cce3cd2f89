import copy

import pytest
import torch
from ignite.engine import Events
from monai.handlers import CheckpointLoader, CheckpointSaver
from torch.utils.data import DataLoader, TensorDataset
from toys import SAMPLE_SIZE as SIZE
from toys import shield_trainer as _trainer
from toys import shield_wrapper as _wrapper

from monai_aegis.engines import (
    AdversarialShieldUpdate,
    ShieldAdversary,
    ShieldLoss,
    ShieldScorer,
    ShieldTrainer,
)
from monai_aegis.evaluation import evaluate_shield_detection
from monai_aegis.handlers import EpsilonScheduler
from monai_aegis.networks import AegisWrapper


def test_shield_loss_matches_eq3():
    pred = torch.tensor([[2.0, -1.0], [0.5, 1.5], [0.3, -0.2]])
    label = torch.tensor([[0, 1], [1, 0], [0, 0]])
    s = torch.nn.functional.logsigmoid
    expected = -(s(torch.tensor(2.0))) - ((s(-torch.tensor(1.5)) + s(-torch.tensor(0.3))) / 2)
    assert torch.allclose(ShieldLoss()(pred, label), expected)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        ShieldLoss()(pred, label[:, 0])


def test_training_detects_pgd_and_leaves_classifier_frozen(trained_classifier, sample_arrays):
    clf = trained_classifier
    state = copy.deepcopy(clf.state_dict())
    x, y = sample_arrays["train"]
    xv, yv = sample_arrays["val"]
    xt, yt = sample_arrays["test"]
    with torch.no_grad():
        logits_before = clf(xt)

    untrained = _wrapper(clf)
    untrained.shield.fit_input_stats(untrained.forward_features(x[:64])[1])
    untrained.calibrate(xv)
    base = evaluate_shield_detection(untrained, (xt, yt), "PGD").metrics()

    wrapper = _wrapper(clf)
    epochs_seen, eps_seen = [], []
    trainer = _trainer(wrapper, x, y, epochs=16)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: (epochs_seen.append(e.state.epoch),
                                                                  eps_seen.append(e.state.eps)))
    trainer.run()
    assert eps_seen[0] == pytest.approx(1 / 256) and eps_seen[-1] == pytest.approx(16 / 256)
    assert trainer.state.metrics["detection_acc"] > 0.75

    # the classifier is frozen: weights, BatchNorm buffers and predictions unchanged, still in eval mode
    for k, v in clf.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert not clf.training and not any(p.requires_grad for p in clf.parameters())
    with torch.no_grad():
        assert torch.equal(clf(xt), logits_before)
    assert sum(len(m._forward_hooks) for m in clf.modules()) == 0

    wrapper.calibrate(xv, tnr=0.9)
    trained = evaluate_shield_detection(wrapper, (xt, yt), "PGD").metrics()
    assert trained["attack_success"] > 0.5
    assert trained["auroc"] >= 0.85, trained
    assert trained["auroc"] > base["auroc"] + 0.1, (trained, base)
    # calibrated on 64 validation images (32 per class): on 64 held-out test images acceptance is near 90%
    # only up to sampling error (the precise TNR check with large samples is in tests/networks/test_aegis.py)
    assert 0.7 <= trained["clean_accepted"] <= 1.0


def test_mixed_adversaries_and_wb_term(trained_classifier, sample_arrays):
    wrapper = _wrapper(trained_classifier)
    x, y = sample_arrays["train"]
    adv = ShieldAdversary(wrapper, attacks=["shield_pgd", "wb", "spgd", "opgd"], steps=2)
    res = adv(x[:8], y[:8], 1 - y[:8], 8 / 256)
    assert res.x_adv.shape == x[:8].shape
    assert (res.x_adv - x[:8]).abs().max() <= 8 / 256 + 1e-6
    with pytest.raises(ValueError, match="did you mean|not a valid"):
        ShieldAdversary(wrapper, attacks="pgdd")
    assert all(adv.build(name, 8 / 256).amp is None for name in ("pgd", "wb", "spgd", "apgd_joint"))
    wrapper.amp = "bf16"  # the adversary runs the classifier in the wrapper's precision
    assert all(adv.build(name, 8 / 256).amp == "bf16" for name in ("pgd", "wb", "spgd", "apgd_joint"))


def test_resume_from_checkpoint(trained_classifier, sample_arrays, tmp_path):
    """Stop after epoch 1 of 2, resume: epoch counter, eps schedule, Shield weights and optimizer continue."""
    x, y = sample_arrays["train"]
    x, y = x[:64], y[:64]
    wrapper = _wrapper(trained_classifier)
    sched = EpsilonScheduler(1 / 256, 16 / 256, 2)
    trainer = _trainer(wrapper, x, y, epochs=2, steps=1, scheduler=sched)
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda e: e.terminate())
    save_dict = {"shield": wrapper.shield, "optimizer": trainer.optimizer, "trainer": trainer, "eps": sched}
    CheckpointSaver(str(tmp_path), save_dict, save_final=True, final_filename="final.pt").attach(trainer)
    trainer.run()
    assert trainer.state.epoch == 1
    saved = copy.deepcopy(wrapper.shield.state_dict())

    wrapper2 = _wrapper(trained_classifier, seed=1)
    sched2 = EpsilonScheduler(1 / 256, 16 / 256, 2)
    trainer2 = _trainer(wrapper2, x, y, epochs=2, steps=1, scheduler=sched2)
    CheckpointLoader(str(tmp_path / "final.pt"), {"shield": wrapper2.shield, "optimizer": trainer2.optimizer,
                                                  "trainer": trainer2, "eps": sched2}).attach(trainer2)
    seen = {}

    def first_iteration(engine):
        if not seen:
            seen["epoch"], seen["eps"] = engine.state.epoch, engine.state.eps
            seen["same_weights"] = all(torch.equal(v, saved[k]) for k, v in wrapper2.shield.state_dict().items())

    trainer2.add_event_handler(Events.ITERATION_STARTED, first_iteration)
    trainer2.run()
    assert seen["epoch"] == 2  # continues at epoch 2
    assert seen["eps"] == pytest.approx(16 / 256)  # the schedule resumes too
    assert seen["same_weights"]  # loaded weights and input standardisation kept (no re-fit on resume)
    assert trainer2.state.epoch == 2 and trainer2.state.iteration == 4


def test_scorer_keeps_classifier_in_eval(trained_classifier):
    wrapper = _wrapper(trained_classifier)
    scorer = ShieldScorer(wrapper).train()
    assert scorer.training and wrapper.shield.training and not trained_classifier.training
    with pytest.raises(ValueError, match="Shield"):
        ShieldScorer(AegisWrapper(trained_classifier))


def test_update_requires_labels():
    update = AdversarialShieldUpdate(lambda x, y, t, e: x, 2)

    class _E:
        non_blocking = False
        to_kwargs = {}

        class state:
            device = "cpu"

        @staticmethod
        def prepare_batch(b, *a, **k):
            return b, None

    with pytest.raises(ValueError, match="labels"):
        update(_E, torch.rand(2, 1, SIZE, SIZE))


def test_joint_adversary_and_accepted_negatives(trained_classifier, sample_arrays):
    """``apgd_joint`` is a training attacker; with ``negatives="accepted"`` every attacker returns, per image, a
    point that is fooled and accepted at the training threshold whenever one of its iterates was."""
    from monai_aegis.attacks import DetectorGate

    wrapper = _wrapper(trained_classifier)
    x, y = sample_arrays["train"]
    x, y = x[:16], y[:16]
    wrapper.shield.fit_input_stats(wrapper.forward_features(x)[1])
    target = 1 - y
    joint = ShieldAdversary(wrapper, attacks="apgd_joint", steps=5)(x, y, target, 8 / 256)
    assert (joint.x_adv - x).abs().max() <= 8 / 256 + 1e-6
    gate = DetectorGate(wrapper.shield, 0.0, wrapper.layer_names)

    def fooled_and_accepted(x_adv):
        with torch.no_grad():
            logits, feats = wrapper.forward_features(x_adv)
            return (logits.argmax(1) == target) & gate.accepted(logits, feats)

    torch.manual_seed(0)
    last = ShieldAdversary(wrapper, attacks="wb", steps=6, negatives="objective")(x, y, target, 8 / 256)
    torch.manual_seed(0)
    best = ShieldAdversary(wrapper, attacks="wb", steps=6, negatives="accepted")(x, y, target, 8 / 256)
    n_best, n_last = int(fooled_and_accepted(best.x_adv).sum()), int(fooled_and_accepted(last.x_adv).sum())
    assert n_best >= n_last and n_best > 0
    assert "negatives='accepted'" in repr(ShieldAdversary(wrapper, negatives="accepted"))
    with pytest.raises(ValueError, match="Unsupported option 'best'"):
        ShieldAdversary(wrapper, negatives="best")


def test_threshold_follows_clean_quantile_and_augment_runs(trained_classifier, sample_arrays):
    x, y = sample_arrays["train"]
    x, y = x[:64], y[:64]
    wrapper = _wrapper(trained_classifier)
    adversary = ShieldAdversary(wrapper, attacks="spgd", steps=1)
    seen = []

    def augment(xb):
        seen.append(xb.shape[0])
        return (xb * 0.9).clamp(0, 1)

    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=False)
    trainer = ShieldTrainer("cpu", 1, loader, wrapper, torch.optim.Adam(wrapper.shield.parameters(), 1e-3),
                            adversary=adversary, augment=augment, threshold_tnr=0.9)
    trainer.run()
    assert seen == [32, 32]
    thr = trainer.state.output["threshold"]
    assert isinstance(adversary.threshold, torch.Tensor) and adversary.threshold.shape == (2,)
    assert adversary.threshold.tolist() == pytest.approx(thr)
    update = trainer._process_function  # ignite's process function: the AdversarialShieldUpdate
    assert isinstance(update, AdversarialShieldUpdate)
    assert update.state_dict()["threshold"].tolist() == pytest.approx(thr)
    with pytest.raises(ValueError, match="threshold_tnr"):
        AdversarialShieldUpdate(lambda a, b, c, d: a, 2, threshold_tnr=1.5)
    with pytest.raises(ValueError, match="'threshold' attribute"):
        AdversarialShieldUpdate(lambda a, b, c, d: a, 2, threshold_tnr=0.9)


def test_tracked_threshold_is_the_clean_quantile():
    from types import SimpleNamespace

    update = AdversarialShieldUpdate(SimpleNamespace(threshold=0.0), 2, threshold_tnr=0.8, threshold_momentum=0.5)
    logits = torch.stack([torch.arange(10.0), -torch.arange(10.0)], 1)  # class 0 reads column 0, class 1 column 1
    y = torch.tensor([0] * 5 + [1] * 5)
    update._track_threshold(logits, y)
    expected = [torch.quantile(torch.arange(5.0), 0.2), torch.quantile(-torch.arange(5.0, 10.0), 0.2)]
    assert update.threshold.tolist() == pytest.approx([float(v) for v in expected])
    update._track_threshold(logits, y)  # same batch again: the running average stays put
    assert update.threshold.tolist() == pytest.approx([float(v) for v in expected])
    update._track_threshold(logits + 2.0, y)
    assert update.threshold.tolist() == pytest.approx([float(v) + 1.0 for v in expected])
    assert update.adversary.threshold.tolist() == pytest.approx(update.threshold.tolist())
    fresh = AdversarialShieldUpdate(SimpleNamespace(threshold=0.0), 2, threshold_tnr=0.8)
    fresh.load_state_dict(update.state_dict())
    assert torch.equal(fresh.threshold, update.threshold)
    assert torch.equal(fresh.adversary.threshold, update.threshold)


def test_outliers_join_the_negatives(trained_classifier, sample_arrays):
    """outliers=RandOutlier: a quarter of each batch is added as out-of-distribution negatives of random classes."""
    from monai_aegis.transforms import RandOutlier

    x, y = sample_arrays["train"]
    x, y = x[:64], y[:64]
    wrapper = _wrapper(trained_classifier)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=False)
    trainer = ShieldTrainer("cpu", 1, loader, wrapper, torch.optim.Adam(wrapper.shield.parameters(), 1e-3),
                            adversary=ShieldAdversary(wrapper, attacks="pgd", steps=1),
                            outliers=RandOutlier(kinds=["uniform"]).set_random_state(0))
    batches = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: batches.append(e.state.output["label"].clone()))
    trainer.run()
    labels = batches[0]
    assert labels.shape == (32 + 32 + 8, 2)  # clean, attacked, outliers
    assert (labels[64:, 1] == 0).all() and (labels[:32, 1] == 1).all()
    assert "outliers" in trainer.shield_update.state_dict()
    with pytest.raises(ValueError, match="outlier_fraction"):
        AdversarialShieldUpdate(lambda a, b, c, d: a, 2, outlier_fraction=0.0)


def test_outlier_negatives_teach_the_shield_to_reject_them(trained_classifier, sample_arrays):
    """A few epochs with RandOutlier negatives: the calibrated Shield accepts far fewer such inputs than one trained
    without them, at the same clean TNR."""
    from monai_aegis.evaluation import outlier_acceptance
    from monai_aegis.transforms import RandOutlier

    x, y = sample_arrays["train"]
    xv, _ = sample_arrays["val"]
    xt, _ = sample_arrays["test"]
    accepted = {}
    for name, outliers in (("without", None), ("with", RandOutlier(kinds=["blobs", "inverted"]).set_random_state(0))):
        wrapper = _wrapper(trained_classifier, cushion=None)
        loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True,
                            generator=torch.Generator().manual_seed(0))
        ShieldTrainer("cpu", 4, loader, wrapper, torch.optim.Adam(wrapper.shield.parameters(), 3e-3),
                      adversary=ShieldAdversary(wrapper, attacks="pgd", steps=1), outliers=outliers,
                      outlier_fraction=0.5).run()
        wrapper.calibrate(xv, tnr=0.9)
        rows = outlier_acceptance(wrapper, xt, kinds=["blobs", "inverted"])
        accepted[name] = (rows["blobs"]["accepted"] + rows["inverted"]["accepted"]) / 2
    assert accepted["with"] < 0.5 * accepted["without"], accepted


def test_persistent_starts_follow_each_image_through_a_shuffled_loader(trained_classifier, sample_arrays):
    """Each image's attack starts from the perturbation *that image* got the epoch before, whatever batch the
    shuffled loader puts it in; a first sight starts uniformly in the ball."""
    from monai_aegis.utils import tensor_loader

    x, y = sample_arrays["train"]
    x, y = x[:40], y[:40]
    eps = 4 / 256
    calls = []

    def adversary(xb, yb, tb, e, start=None):  # a deterministic 'attack': +eps where the image is bright, else -eps
        calls.append((xb.clone(), start.clone()))
        return (xb + eps * torch.where(xb > 0.5, 1.0, -1.0)).clamp(0, 1)

    wrapper = _wrapper(trained_classifier)
    loader = tensor_loader(x, y, 16, shuffle=True, seed=3)
    trainer = ShieldTrainer("cpu", 2, loader, wrapper, torch.optim.Adam(wrapper.shield.parameters(), 1e-3),
                            adversary=adversary, eps=eps, persistent_starts=True)
    trainer.run()
    assert len(calls) == 6
    for xb, start in calls[:3]:  # epoch 1: uniform random starts inside the ball and the clip range
        assert float((start - xb).abs().max()) <= eps + 1e-6 and 0 <= float(start.min()) <= float(start.max()) <= 1
        assert float((start - xb).abs().mean()) > eps / 4
    for xb, start in calls[3:]:  # epoch 2: exactly the image's own previous perturbation (float16 storage)
        expected = (xb + eps * torch.where(xb > 0.5, 1.0, -1.0)).clamp(0, 1)
        assert torch.allclose(start, expected, atol=1e-3)
    assert set(trainer._shield_update.starts) == {str(i) for i in range(40)}


def test_persistent_starts_need_ids_and_a_start_argument(trained_classifier, sample_arrays):
    x, y = sample_arrays["train"]
    wrapper = _wrapper(trained_classifier)
    with pytest.raises(ValueError, match="takes start="):
        AdversarialShieldUpdate(lambda xb, yb, tb, e: xb, 2, persistent_starts=True)
    loader = DataLoader(TensorDataset(x[:16], y[:16]), batch_size=8)  # tuple batches: no ids
    trainer = ShieldTrainer("cpu", 1, loader, wrapper, torch.optim.Adam(wrapper.shield.parameters(), 1e-3),
                            adversary=ShieldAdversary(wrapper, steps=1), persistent_starts=True)
    with pytest.raises(ValueError, match="per-image ids"):
        trainer.run()
