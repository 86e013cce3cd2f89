"""scripts/compare_variants.py end to end on the embedded sample with tiny budgets: variants train, are judged by
the worst-case evaluation, resume from their files, and the table reports every variant."""

from __future__ import annotations

import json

import pytest
from toys import load_script


@pytest.fixture(scope="module")
def compare_variants():
    return load_script("compare_variants")


def test_variants_table_and_resume(compare_variants, tmp_path, capsys):
    args = ["--dataset", "sample", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
            "--variants", "input_joint,at", "--shield-epochs", "1", "--shield-steps", "1", "--at-epochs", "1",
            "--eps", "8,16", "--steps", "2", "--pgd-steps", "2", "--queries", "5", "--n-eval", "8", "--threads", "1"]
    assert compare_variants.main(args) == 0
    out = tmp_path / "out"
    rec = json.loads((out / "wc_input_joint.json").read_text())
    test = rec["splits"]["test"]
    assert [r["eps"] for r in test["curve"]] == [8 / 256, 16 / 256] and test["n"] == 8
    assert 0.0 <= test["clean"]["accepted_full_split"] <= 1.0
    assert rec["recipe"]["shield"]["adversaries"] == ["pgd", "apgd_joint"] and rec["train_seconds"] > 0
    at = json.loads((out / "wc_at.json").read_text())
    assert at["recipe"]["classifier"] == "at" and "accepted_full_split" not in at["splits"]["test"]["clean"]
    table = (out / "variants.md").read_text()
    assert "| undefended classifier |" in table and "| input_joint |" in table and "| at |" in table
    first = (out / "wc_input_joint.json").stat().st_mtime_ns
    capsys.readouterr()
    assert compare_variants.main(args) == 0  # a rerun reuses the finished variants
    assert (out / "wc_input_joint.json").stat().st_mtime_ns == first
    assert "| input_joint |" in capsys.readouterr().out
