"""kill -9 of a real ``python -m monai.bundle run`` training run, then the same command again: the classifier is
reused, the Shield resumes from its last complete checkpoint, and the result equals an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from bundle_helpers import BUNDLES, REPO_ROOT, TINY

from monai_aegis.utils import safe_torch_load

#: three Shield epochs of a few tenths of a second each, so the run can be killed between two of them
OVERRIDES = {**TINY, "max_items": 32, "shield_epochs": 3, "attack_steps": 4}


def _command(root: Path, **extra) -> list[str]:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLES / "aegis_cxr" / "train.json"),
           "--meta_file", str(BUNDLES / "aegis_cxr" / "metadata.json"), "--bundle_root", str(root)]
    for k, v in {**OVERRIDES, **extra}.items():
        cmd += [f"--{k}", repr(v)]
    return cmd


def _run(root: Path, **extra) -> str:
    out = subprocess.run(_command(root, **extra), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def _run_and_kill_after_first_epoch(root: Path) -> None:
    """Start the run and SIGKILL it as soon as the log says Shield epoch 1 is complete (its checkpoint is written
    before that line)."""
    proc = subprocess.Popen(_command(root), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if "ShieldTrainer - INFO - Epoch[1] Complete" in line:
                os.killpg(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stdout.close()  # type: ignore[union-attr]
    assert proc.returncode == -signal.SIGKILL


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    flat: dict[str, torch.Tensor] = {}

    def walk(prefix: str, obj) -> None:
        if isinstance(obj, torch.Tensor):
            flat[prefix] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}/{k}", v)

    walk("", safe_torch_load(path))
    return flat


def test_kill_9_then_rerun_resumes_and_equals_an_uninterrupted_run(tmp_path):
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    _run(full)

    _run_and_kill_after_first_epoch(crashed)
    ckpts = sorted(p.name for p in (crashed / "models" / "shield_checkpoints").glob("*.pt"))
    assert ckpts and f"checkpoint_epoch={OVERRIDES['shield_epochs']}.pt" not in ckpts, ckpts
    assert not (crashed / "models" / "aegis.pt").exists()

    log = _run(crashed)  # the same command again
    assert "classifier: reused" in log and "classifier: trained" not in log
    assert "resumed from" in log and f"at epoch {ckpts[-1][len('checkpoint_epoch='):-3]}/3" in log
    a, b = _tensors(full / "models" / "aegis.pt"), _tensors(crashed / "models" / "aegis.pt")
    assert a.keys() == b.keys() and len(a) > 4
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a), \
        [k for k in a if not torch.allclose(a[k].float(), b[k].float(), atol=1e-6)]

    log = _run(crashed, resume=False)  # the flag to start fresh
    assert "classifier: trained the classifier" in log and "resumed from" not in log
    assert "removing 1 earlier checkpoint" in log
