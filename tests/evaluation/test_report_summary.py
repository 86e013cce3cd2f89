"""summary_lines: the one console summary that evaluate and the bundle's evaluate.json print."""

from monai_aegis.evaluation.report import check_line, summary_lines


def test_summary_lines_lists_curve_and_checks():
    results = {
        "worst_case": {"splits": {"test": {
            "curve": [{"eps": 8 / 256, "robust_accuracy": 0.75, "undefended_robust_accuracy": 0.0, "sr": {"5": 0.2}}],
            "checks": [{"name": "converged", "passed": True, "detail": "0.01"}],
        }}},
        "sanity": {"checks": [{"name": "unbounded breaks all", "passed": False}, {"name": "n/a one", "passed": None}]},
    }
    lines = summary_lines(results)
    assert lines[0] == "worst-case robust accuracy (rejected or still correct), split test:"
    assert lines[1] == "  eps 8/256: robust accuracy 0.750, undefended 0.000, SR@5 0.200"
    assert lines[2:] == ["  PASS: converged (0.01)", "  FAIL: unbounded breaks all", "  n/a: n/a one"]
    assert summary_lines({"sanity": {"checks": []}}) == []
    assert check_line({"name": "x", "passed": False}, bold=True) == "**FAIL**: x"
