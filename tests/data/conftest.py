"""Fixtures for the data tests: tiny image files in the real datasets' layouts, written into ``tmp_path``."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def kermany_root(tmp_path: Path, write_png) -> Path:
    """A Kaggle-layout Kermany folder: train 3 NORMAL / 4 PNEUMONIA, test 2 / 2, mixed extension case."""
    root = tmp_path / "chest_xray"
    names = {
        ("train", "NORMAL"): ["IM-0115-0001.jpeg", "IM-0117-0001.png", "NORMAL2-IM-0095-0001.PNG"],
        ("train", "PNEUMONIA"): [
            "person1_bacteria_1.jpeg",
            "person1_bacteria_2.jpg",
            "person22_virus_50.png",
            "person1430_bacteria_3695.JPEG",
        ],
        ("test", "NORMAL"): ["IM-0011-0001-0001.png", "NORMAL2-IM-0173-0001-0002.png"],
        ("test", "PNEUMONIA"): ["person100_bacteria_475.png", "person1661_virus_2872.jpg"],
    }
    for i, ((split, cls), files) in enumerate(sorted(names.items())):
        for j, name in enumerate(files):
            write_png(root / split / cls / name, seed=10 * i + j)
    (root / "train" / "NORMAL" / "notes.txt").write_text("not an image")
    (root / "train" / "NORMAL" / ".DS_Store").write_text("")
    return root
