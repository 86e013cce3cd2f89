"""scripts/paper_tables.py: every cell of ours sits beside the paper's, mapped to the right row and column; cells we
did not measure read '-', undefined ones 'n/a'."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from toys import load_script

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def paper_tables():
    return load_script("paper_tables")


def _det(cushion, attack, detector, auroc, tpr=0.5, split="holdout"):
    return {"split": split, "cushion": cushion, "attack": attack, "detector": detector, "auroc": auroc, "tpr": tpr}


RESULTS = {
    "created": "2026-12-07",
    "system": {"cushion": "jpeg80", "layer_names": ["b1", "b2", "b3", "b4"]},
    "detection": [
        _det("none", "FGSM", "shield", 0.912), _det("jpeg80", "FGSM", "shield", 0.987),
        _det("jpeg80", "PGD-L2", "shield", None),
        _det("none", "HFC-MIM", "kd", 0.25, 0.125), _det("jpeg80", "HFC-MIM", "kd", 0.75, 0.375),
        _det("none", "HFC", "shield", 0.5, 0.25),  # the PGD column of Table 2 falls back to HFC
        _det("jpeg80", "WB", "shield", 0.6, split="test"),  # another split: not shown
    ],
    "layer_ablation": [{"split": "holdout", "subset": "only b3", "attack": "WB", "detector": "shield", "auroc": 0.4}],
    "cushion_ablation": [{"split": "holdout", "cushion": "tvm", "attack": "WB", "clean_accuracy": 0.9, "auroc": 0.8}],
}


def test_cells_beside_the_papers(paper_tables):
    paper = json.loads((ROOT / "docs" / "results" / "paper_tables.json").read_text())
    text = paper_tables.render(paper, RESULTS, "cxr", "holdout", "toy")
    table3 = text.split("## Table 3")[1].split("## Table 4")[0].splitlines()
    t3_shield = next(line for line in table3 if line.startswith("| Shield | **ours")).split(" | ")
    assert t3_shield[2] == "**91.2**" and t3_shield[3] == "-"  # FGSM measured, BIM not
    t3_aegis = next(line for line in table3 if line.startswith("| Medical Aegis | **ours")).split(" | ")
    assert t3_aegis[2] == "**98.7**" and t3_aegis[9] == "**n/a**"  # PGD-L2 measured, no AUROC
    assert "| Shield | paper, ResNet-50 | 89.5 |" in text  # the paper's CXR ResNet-50 FGSM cell
    kd = next(line for line in text.splitlines() if line.startswith("| KD |"))
    assert "25.0 / 12.5 (50.3 / 0.9)" in kd
    kd_c = next(line for line in text.splitlines() if line.startswith("| KD w/ Cushion |"))
    assert "75.0 / 37.5 (75.8 / 9.3)" in kd_c
    shield = next(line for line in text.splitlines() if line.startswith("| Shield | - (99 / 97.7)"))
    assert "50.0 / 25.0 (99.2 / 97.8)" in shield  # HFC -> the PGD column
    layers = next(line for line in text.splitlines() if line.startswith("| only 3rd"))
    assert "(ours: only b3)" in layers and layers.endswith("40.0 (36.2) |")
    tvm = next(line for line in text.splitlines() if line.startswith("| tvm |"))
    assert tvm == "| tvm | 90.0 (99.2) | - (100) | - (100) | - (100) | 80.0 (100) |"
    assert "60.0" not in text  # the test split's row stays out of a holdout table


def test_cli_refuses_an_absent_split(paper_tables, tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(RESULTS))
    with pytest.raises(SystemExit, match="split 'val'"):
        paper_tables.main(["--results", str(path), "--dataset", "cxr", "--split", "val"])
    out = tmp_path / "tables.md"
    assert paper_tables.main(["--results", str(path), "--dataset", "fundus", "--out", str(out)]) == 0
    assert "| Shield | paper, ResNet-50 | 98.8 |" in out.read_text()  # fundus rows of Table 3
