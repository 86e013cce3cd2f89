"""Helpers of the bundle tests: tiny overrides of the bundle configs and a workflow runner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLES = REPO_ROOT / "bundles"

#: overrides that make train.json run in seconds: few images, one epoch, two attack steps
TINY: dict[str, Any] = {
    "max_items": 24,
    "classifier_epochs": 1,
    "shield_epochs": 1,
    "attack_steps": 2,
    "eval_attack_steps": 2,
    "batch_size": 8,
    "shield_width": 4,
    "network_def#width": 8,
    "network_def#convs_per_block": 1,
    "summary_worst_case": {"eps": [8 / 256], "steps": 2, "pgd_steps": 2, "lams": [1.0], "proxies": ["identity"]},
}


def bundle_files(name: str, *configs: str) -> list[str]:
    return [str(BUNDLES / name / c) for c in configs]


def run_workflow(config_files: list[str], workflow_type: str | None, **overrides: Any) -> Any:
    """Build, check, initialise, run and finalise a ``ConfigWorkflow``; returns it."""
    from monai.bundle import ConfigWorkflow

    meta = str(Path(config_files[0]).parent / "metadata.json")
    wf = ConfigWorkflow(config_file=config_files if len(config_files) > 1 else config_files[0], meta_file=meta,
                        logging_file=None, workflow_type=workflow_type, **overrides)
    wf.initialize()
    if workflow_type is not None:
        assert wf.check_properties() == []
    wf.run()
    wf.finalize()
    return wf


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
