"""Fixtures of the bundle tests: one tiny trained aegis_cxr bundle per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from bundle_helpers import TINY, bundle_files, run_workflow


@pytest.fixture(scope="session")
def tiny_cxr_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The aegis_cxr train.json run once on a tiny override; returns its bundle_root (models/, eval/)."""
    root = tmp_path_factory.mktemp("aegis_cxr")
    run_workflow(bundle_files("aegis_cxr", "train.json"), "train", bundle_root=str(root), **TINY)
    return root
