"""Every Python snippet of README.md runs as written (newcomers copy them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_snippets():
    assert len(SNIPPETS) >= 2


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs(index, tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(SNIPPETS[index], f"README.md snippet {index + 1}", "exec"), namespace)  # noqa: S102
    if "wrapper" in namespace:  # the wrapping snippet: a calibrated, screening Aegis came out of it
        out = namespace["out"]
        assert out["pred"].shape == (8,) and out["accept"].dtype == torch.bool
        assert namespace["wrapper"].threshold.numel() == 2
