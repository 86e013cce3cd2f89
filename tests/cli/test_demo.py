"""``python -m monai_aegis demo``: the table explains its columns, and its figures behave as the legend says."""

from __future__ import annotations

import torch

from monai_aegis.cli import main
from monai_aegis.cli.demo import high_frequency_fraction


def _rows(out: str) -> dict[str, list[float]]:
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0] not in ("cushion", "---"):
            rows[cells[0]] = [float(c.replace(",", "").replace("inf", "inf")) for c in cells[1:]]
    return rows


def test_demo_explains_and_measures(capsys):
    assert main(["demo", "--size", "64"]) == 0
    out = capsys.readouterr().out
    for column in ("mean abs change", "PSNR (dB)", "high-freq. energy kept", "perturbation kept", "pixels moved"):
        assert column in out.split("| cushion |")[0], column  # the legend comes before the table
    rows = _rows(out)
    assert {"jpeg80", "bit_depth4", "tvm", "identity"} <= set(rows)
    assert rows["identity"][3] == 1.0 and rows["identity"][4] > 0.99  # keeps the whole perturbation
    assert rows["tvm"][2] < 0.6 and rows["tvm"][3] < 0.6  # TV minimisation smooths and shrinks it
    # bit depth 4 (16/256 levels): a 4/256 change crosses a level on ~1/4 of the pixels, each by a full level
    moved, kept = rows["bit_depth4"][4], rows["bit_depth4"][3]
    assert 0.15 < moved < 0.35 and kept > 1.5 and abs(kept - (moved * 16) ** 0.5) < 0.1


def test_high_frequency_fraction():
    smooth = torch.cos(torch.linspace(0, 2 * torch.pi, 33)[:32]).view(1, 1, 1, 32).expand(2, 1, 32, 32)
    checker = (torch.arange(32).view(-1, 1) + torch.arange(32).view(1, -1)) % 2
    assert float(high_frequency_fraction(smooth).max()) < 0.1
    assert float(high_frequency_fraction(checker.float().view(1, 1, 32, 32))) > 0.99
