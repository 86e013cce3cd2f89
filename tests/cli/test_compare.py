"""``python -m monai_aegis compare``: defences side by side from worst-case results, refusing different image sets.
Built on the committed headline run (docs/results/worst_case_cxr64_default/results.json), a real record."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from monai_aegis.cli import main

HEADLINE = Path(__file__).resolve().parents[2] / "docs" / "results" / "worst_case_cxr64_default" / "results.json"


@pytest.fixture()
def headline():
    return json.loads(HEADLINE.read_text())


def _write(path: Path, res: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res))
    return path


def test_rows_are_the_records_curves(headline, tmp_path, capsys):
    other = copy.deepcopy(headline)
    for rec in other["worst_case"]["splits"].values():  # a second defence on the same images
        for row in rec["curve"]:
            row["robust_accuracy"] = row["robust_accuracy"] / 2
        rec["checks"][0]["passed"] = False
    _write(tmp_path / "b" / "results.json", other)
    out = tmp_path / "table.md"
    assert main(["compare", "--run", f"Shield A={HEADLINE.parent}", "--run", f"B={tmp_path / 'b'}",
                 "--undefended", "Shield A", "--output", str(out)]) == 0
    text = out.read_text()
    for split, rec in headline["worst_case"]["splits"].items():
        eps = [f"{r['eps'] * 256:g}/256" for r in rec["curve"]]
        block = text.split(f"**Split `{split}`**")[1].split("**Split")[0]
        lines = [ln for ln in block.splitlines() if ln.startswith("| ")]
        assert lines[0] == "| " + " | ".join(["defence", "clean acc. %", "accepted %", *eps, "checks passed"]) + " |"
        rows = {ln.split(" | ")[0][2:]: ln.split(" | ")[1:] for ln in lines[2:]}
        assert list(rows) == ["Shield A", "Shield A: classifier alone", "B"]
        n_checks = len(rec["checks"])
        passed = sum(c["passed"] for c in rec["checks"])
        assert rows["Shield A"][2:] == [f"{100 * r['robust_accuracy']:.1f}" for r in rec["curve"]] + \
            [f"{passed} / {n_checks} |"]
        assert rows["B"][2:-1] == [f"{50 * r['robust_accuracy']:.1f}" for r in rec["curve"]]
        assert rows["B"][-1] == f"{passed - 1} / {n_checks} |"
        assert rows["Shield A: classifier alone"][2:-1] == [f"{100 * r['robust_accuracy']:.1f}"
                                                            for r in rec["undefended"]]
    assert main(["compare", "--run", f"A={HEADLINE}"]) == 0  # printed without --output
    assert "| A |" in capsys.readouterr().out


def test_a_system_that_rejects_nothing_has_no_acceptance(headline, tmp_path, capsys):
    bare = copy.deepcopy(headline)  # e.g. an adversarially trained classifier alone: no Shield, no thresholds
    bare["system"].update(threshold=[], layer_names=[], cushion="none")
    _write(tmp_path / "bare" / "results.json", bare)
    assert main(["compare", "--run", f"Shield={HEADLINE.parent}", "--run", f"bare={tmp_path / 'bare'}"]) == 0
    rows = {ln.split(" | ")[0][2:]: ln.split(" | ")[1:] for ln in capsys.readouterr().out.splitlines()
            if ln.startswith("| Shield |") or ln.startswith("| bare |")}
    assert rows["bare"][1] == "–" and rows["Shield"][1] != "–"
    assert rows["bare"][2:] == rows["Shield"][2:]  # the curve itself is reported as it is


def test_different_images_and_bad_input_are_refused(headline, tmp_path, capsys):
    fewer = copy.deepcopy(headline)
    fewer["worst_case"]["splits"]["test"]["n"] = 32
    reseeded = copy.deepcopy(headline)
    reseeded.setdefault("data", {}).setdefault("splits", {})["holdout"] = {"subset_seed": 7}
    seeded = copy.deepcopy(headline)
    seeded.setdefault("data", {}).setdefault("splits", {})["holdout"] = {"subset_seed": 0}
    no_wc = {k: v for k, v in headline.items() if k != "worst_case"}
    cases = {
        "different image sets": [f"A={HEADLINE}", f"B={_write(tmp_path / 'fewer.json', fewer)}"],
        "subset seeds": [f"A={_write(tmp_path / 's0.json', seeded)}", f"B={_write(tmp_path / 's7.json', reseeded)}"],
        "no worst-case record": [f"A={_write(tmp_path / 'nowc.json', no_wc)}"],
        "no results file": [f"A={tmp_path / 'missing'}"],
        "LABEL=PATH": ["just-a-path"],
        "labels must be distinct": [f"A={HEADLINE}", f"A={HEADLINE}"],
    }
    for message, runs in cases.items():
        argv = ["compare"] + [a for r in runs for a in ("--run", r)]
        assert main(argv) == 2, message
        assert message in capsys.readouterr().err
    assert main(["compare", "--run", f"A={HEADLINE}", "--undefended", "B"]) == 2
    assert "undefended names unknown runs ['B']" in capsys.readouterr().err
