"""Scale-out: sharding, and multi_gpu_train.json under torchrun with the gloo backend on CPU (2 processes)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from bundle_helpers import BUNDLES, REPO_ROOT, TINY, read_json

from monai_aegis.bundle import shard_indices


@pytest.mark.parametrize("n,world", [(10, 2), (7, 2), (5, 3), (1, 2)])
def test_shards_cover_every_sample_once_after_trimming(n, world):
    shards = [shard_indices(n, r, world) for r in range(world)]
    assert len({s.numel() for s in shards}) == 1  # equal sizes, as all_gather needs
    assert torch.equal(torch.cat(shards)[:n], torch.arange(n))


def test_sharded_detection_single_process_matches_direct_evaluation():
    from monai_aegis.bundle import build_aegis, sharded_detection
    from monai_aegis.evaluation.detection import evaluate_shield_detection
    from monai_aegis.networks.nets import small_vgg

    w = build_aegis(small_vgg(1, 2, width=4), (1, 32, 32), 2, cushion="jpeg80", shield_width=2, shield_hidden=4)
    x, y = torch.rand(12, 1, 32, 32), torch.arange(12) % 2
    w.calibrate(x, tnr=0.9, min_per_class=100)
    ours = sharded_detection(w, x, y, {"BIM": {"steps": 2}}, batch_size=5)["BIM"]
    ref = evaluate_shield_detection(w, (x, y), "BIM", {"steps": 2}).metrics(0.9)
    for k in ("attack_success", "clean_accuracy", "robust_accuracy"):
        assert ours[k] == pytest.approx(ref[k])


@pytest.mark.slow
def test_multi_gpu_train_with_gloo_matches_single_process_evaluation(tmp_path):
    """2 CPU processes (gloo): DDP Shield training, rank-0-only checkpoints, sharded attack evaluation whose metrics
    equal a single-process evaluation of the saved model (deterministic attacks)."""
    attacks = "{'BIM': {}, 'WB': {'random_start': False}}"
    overrides = []
    for k, v in {**TINY, "max_items": 20}.items():
        overrides += [f"--{k}", str(v)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "monai.bundle", "run", "--config_file",
           f"['{BUNDLES / 'aegis_cxr' / 'train.json'}','{BUNDLES / 'aegis_cxr' / 'multi_gpu_train.json'}']",
           "--meta_file", str(BUNDLES / "aegis_cxr" / "metadata.json"), "--bundle_root", str(tmp_path),
           "--eval_attacks", attacks, *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = read_json(tmp_path / "eval" / "train_summary.json")
    assert summary["world_size"] == 2 and summary["n_test"] == 20
    assert proc.stdout.count("Aegis saved to") == 1  # rank 0 prints and saves
    ckpts = list((tmp_path / "models" / "shield_checkpoints").glob("*.pt"))
    assert [p.name for p in ckpts] == ["checkpoint_epoch=1.pt"]  # written by rank 0 only (one saver)

    again = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    log = again.stdout + again.stderr  # both ranks reuse the classifier and resume from rank 0's checkpoint
    assert log.count("classifier: reused") == 2 and log.count("nothing left to train") == 2

    from monai.bundle import ConfigParser

    from monai_aegis.bundle import load_aegis, sharded_detection, stack_loader

    parser = ConfigParser()
    parser.read_config(str(BUNDLES / "aegis_cxr" / "train.json"))
    parser.update({"bundle_root": str(tmp_path), **TINY, "max_items": 20})
    wrapper = load_aegis(parser.get_parsed_content("network_def"), tmp_path / "models" / "aegis.pt")
    x, y = stack_loader(parser.get_parsed_content("test#dataloader"))
    single = sharded_detection(wrapper, x, y, {"BIM": {"steps": 2}, "WB": {"steps": 2, "random_start": False}})
    for name, metrics in summary["attacks"].items():
        for k, v in metrics.items():
            ref = single[name][k]
            assert (v is None and ref != ref) or v == pytest.approx(ref, abs=1e-6), (name, k, v, ref)
