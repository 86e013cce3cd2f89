"""The paper's Tables 2-5 beside ours, cell by cell, as Markdown.

Reads one ``results.json`` of :func:`monai_aegis.evaluation.run_evaluation` (ours) and the paper's values as
transcribed in ``docs/results/paper_tables.json`` (Yao, He, Zhou, *Medical Aegis*, arXiv:2111.10969), and writes the
four tables with each of our cells next to the paper's. A cell we did not measure reads ``-``; nothing is filled
in. Mapping of the paper's rows to ours: "Shield" = our Shield evaluated without the Cushion, "Medical Aegis" = with
it (attacked through BPDA); "<detector> w/ Cushion" = the baseline on the cushioned system; Table 2's HFC-strengthened
MIM / BIM / PGD / CW-Linf = our attacks labelled ``HFC-MIM``, ``HFC-BIM``, ``HFC-PGD`` (or ``HFC``, which is PGD
with the HFC prior), ``HFC-CW-Linf``; Table 5's layer subsets = our ``all`` / ``only <layer>`` (shallow to deep).

    python scripts/paper_tables.py --results runs/cxr64/eval_pgd_wb/results.json --dataset cxr --split holdout \\
        --label "small_vgg 64 px" --out docs/results/paper_tables_cxr64.md
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "docs" / "results" / "paper_tables.json"


def pct(v: Any) -> str:
    """Our value in %; ``n/a`` where the measure is undefined (e.g. an AUROC when no attack succeeded)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{100 * float(v):.1f}"


def paper_pct(v: Any) -> str:
    return "-" if v is None else f"{float(v):g}"


class Ours:
    """Look-ups into one results.json."""

    def __init__(self, results: Mapping[str, Any], split: str) -> None:
        self.r, self.split = results, split
        self.cushion = results["system"].get("cushion") or "none"
        self.layers = list(results["system"].get("layer_names") or [])

    def detection(self, attack: str, detector: str, cushioned: bool) -> dict | None:
        want = self.cushion if cushioned else "none"
        for row in self.r.get("detection", []):
            if (row["split"], row["cushion"], row["attack"], row["detector"]) == (self.split, want, attack, detector):
                return row
        return None

    def first_detection(self, attacks: list[str], detector: str, cushioned: bool) -> dict | None:
        for a in attacks:
            row = self.detection(a, detector, cushioned)
            if row is not None:
                return row
        return None

    def layer(self, subset: str, attack: str) -> dict | None:
        for row in self.r.get("layer_ablation", []):
            if (row["split"], row["subset"], row["attack"], row["detector"]) == (self.split, subset, attack, "shield"):
                return row
        return None

    def cushion_row(self, cushion: str, attack: str) -> dict | None:
        for row in self.r.get("cushion_ablation", []):
            if (row["split"], row["cushion"], row["attack"]) == (self.split, cushion, attack):
                return row
        return None


def table2(paper: Mapping[str, Any], ours: Ours) -> list[str]:
    t = paper["table2"]
    det = {"KD": "kd", "MAHA": "maha", "LID": "lid", "DNN": "dnn"}
    head = "| detector | " + " | ".join(f"{a} AUROC / TPR: ours (paper)" for a in t["attacks"]) + " |"
    lines = [head, "|---" * (len(t["attacks"]) + 1) + "|"]
    for name, cells in t["rows"].items():
        if name in ("Shield", "Medical Aegis"):
            detector, cushioned = "shield", name == "Medical Aegis"
        else:
            detector, cushioned = det[name.split()[0]], name.endswith("w/ Cushion")
        row = [name]
        for attack, (p_auc, p_tpr) in zip(t["attacks"], cells):
            ours_row = ours.first_detection([f"HFC-{attack}"] + (["HFC"] if attack == "PGD" else []), detector,
                                            cushioned)
            mine = "-" if ours_row is None else f"{pct(ours_row['auroc'])} / {pct(ours_row['tpr'])}"
            row.append(f"{mine} ({paper_pct(p_auc)} / {paper_pct(p_tpr)})")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def side_by_side(block: Mapping[str, Any], dataset: str, ours: Ours, label: str) -> list[str]:
    attacks = block["attacks"]
    lines = ["| defence | source | " + " | ".join(attacks) + " |", "|---|---" + "|---" * len(attacks) + "|"]
    for defence in ("Shield", "Medical Aegis"):
        for backbone, rows in block["rows"][dataset].items():
            lines.append(f"| {defence} | paper, {backbone} | " + " | ".join(paper_pct(v) for v in rows[defence]) + " |")
        mine = [ours.detection(a, "shield", defence == "Medical Aegis") for a in attacks]
        lines.append(f"| {defence} | **ours, {label}** | "
                     + " | ".join("-" if m is None else f"**{pct(m['auroc'])}**" for m in mine) + " |")
    return lines


def table5_layers(paper: Mapping[str, Any], ours: Ours) -> list[str]:
    t = paper["table5_layers"]
    ordinal = ["1st", "2nd", "3rd", "4th"]
    names = {"all": "all"}
    names.update({f"only {o}": f"only {layer}" for o, layer in zip(ordinal, ours.layers)})
    lines = ["| Shield layers (paper: VGG-16 ReLU 3/6/9/12; ours) | "
             + " | ".join(f"{a}: ours (paper)" for a in t["attacks"]) + " |", "|---" * (len(t["attacks"]) + 1) + "|"]
    for subset, cells in t["rows"].items():
        mine_subset = names.get(subset, subset)
        row = [f"{subset} (ours: {mine_subset})"]
        for attack, p in zip(t["attacks"], cells):
            m = ours.layer(mine_subset, attack)
            row.append(f"{'-' if m is None else pct(m['auroc'])} ({paper_pct(p)})")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def table5_cushions(paper: Mapping[str, Any], ours: Ours) -> list[str]:
    t = paper["table5_cushions"]
    lines = ["| Cushion | " + " | ".join(f"{c}: ours (paper)" for c in t["columns"]) + " |",
             "|---" * (len(t["columns"]) + 1) + "|"]
    for cushion, cells in t["rows"].items():
        row = [cushion]
        for col, p in zip(t["columns"], cells):
            if col == "Model":
                m = next((ours.cushion_row(cushion, a) for a in ("PGD", "WB") if ours.cushion_row(cushion, a)), None)
                mine = "-" if m is None else pct(m["clean_accuracy"])
            else:
                m = ours.cushion_row(cushion, col)
                mine = "-" if m is None else pct(m["auroc"])
            row.append(f"{mine} ({paper_pct(p)})")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def render(paper: Mapping[str, Any], results: Mapping[str, Any], dataset: str, split: str, label: str) -> str:
    ours = Ours(results, split)
    out = [f"# The paper's Tables 2-5 beside ours ({dataset}, {split} split, {label})", "",
           f"Ours: `results.json` of {results.get('created', '?')}, Cushion `{ours.cushion}`, "
           f"hooked layers {', '.join(ours.layers)}. The paper's values: {paper['source']}.", ""]
    out += [f"* {n}" for n in paper["notes"]]
    out += ["* `-`: not measured in our run; `n/a`: measured but undefined (no successful adversarial example, so no "
            "AUROC).", ""]
    out += ["## Table 2: detectors against HFC-strengthened attacks, AUROC / TPR at 90 % TNR (%)", "",
            f"The paper's values are for {paper['table2']['dataset']}, {paper['table2']['backbone']}.", ""]
    out += table2(paper, ours) + [""]
    out += ["## Table 3: conventional attacks, AUROC (%)", ""] + side_by_side(paper["table3"], dataset, ours, label)
    out += ["", "## Table 4: adaptive attacks, AUROC (%)", ""] + side_by_side(paper["table4"], dataset, ours, label)
    out += ["", "## Table 5 (left): Shield on a subset of layers, AUROC (%)", ""] + table5_layers(paper, ours)
    out += ["", "## Table 5 (right): Cushion choices, AUROC of Medical Aegis (%) and the classifier's accuracy", ""]
    out += table5_cushions(paper, ours) + [""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", required=True, help="results.json of run_evaluation")
    p.add_argument("--dataset", choices=["cxr", "fundus"], required=True)
    p.add_argument("--split", default="holdout")
    p.add_argument("--label", default="ours", help="how to name our setting in the tables")
    p.add_argument("--paper", default=str(PAPER))
    p.add_argument("--out", default="", help="Markdown file (default: print)")
    args = p.parse_args(argv)
    paper = json.loads(Path(args.paper).read_text())
    results = json.loads(Path(args.results).read_text())
    splits = {row["split"] for row in results.get("detection", [])}
    if args.split not in splits:
        raise SystemExit(f"split {args.split!r} is not in {args.results} (it has {sorted(splits)}).")
    text = render(paper, results, args.dataset, args.split, args.label)
    if args.out:
        from monai_aegis.utils import atomic_write_text

        atomic_write_text(args.out, text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
