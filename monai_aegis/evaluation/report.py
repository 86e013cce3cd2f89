# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Human-readable report (``report.md``) and figures (PNG, matplotlib's Agg backend) of an evaluation; every file is
written atomically (temporary file in the destination folder, then renamed)."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.utils import optional_import

from ..metrics import roc_curve
from ..utils import atomic_write_json, atomic_write_text
from ..utils.io import atomic_write
from .schema import validate_results
from .worst_case import curve_summary

__all__ = ["check_line", "render_report", "worst_case_comparison_lines", "worst_case_lines", "write_outputs"]

_DET_NAMES = {"shield": "Shield", "kd": "KD", "lid": "LID", "maha": "MAHA", "dnn": "DNN", "classifier": "none"}


def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}"


def _pct(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * v:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> str:
    align = align or ("l" + "r" * (len(header) - 1))
    sep = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _ordered(values: Any) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def check_line(check: Mapping[str, Any], bold: bool = False) -> str:
    """``PASS: name (detail)`` / ``FAIL: ...`` / ``n/a: ...`` for one check record (``passed`` True/False/None)."""
    passed = check.get("passed")
    mark = "PASS" if passed else ("n/a" if passed is None else ("**FAIL**" if bold else "FAIL"))
    detail = f" ({check['detail']})" if check.get("detail") else ""
    return f"{mark}: {check['name']}{detail}"


def summary_lines(results: Mapping[str, Any]) -> list[str]:
    """The console summary of an evaluation (``run_evaluation`` results): the worst-case curve of every split with
    its checks, then the sanity checks -- what ``evaluate`` and the bundle's ``evaluate.json`` print."""
    lines: list[str] = []
    for split, rec in results.get("worst_case", {}).get("splits", {}).items():
        lines.append(f"worst-case robust accuracy (rejected or still correct), split {split}:")
        lines += ["  " + line for line in curve_summary(rec).splitlines()]
        lines += [f"  {check_line(c)}" for c in rec["checks"]]
    lines += [f"  {check_line(c)}" for c in results["sanity"]["checks"]]
    return lines


def _eps(e: float) -> str:
    return f"{e * 256:g}/256"


def _rejects(results: Mapping[str, Any]) -> bool:
    """Whether the evaluated system has reject thresholds (a classifier alone has none: it rejects nothing, and its
    acceptance is no figure of merit). Records without system information are taken to have them."""
    return (results.get("system") or {}).get("threshold") != []


def worst_case_lines(worst_case: Mapping[str, Any], figure: str | None = None, rejects: bool = True) -> list[str]:
    """The report's headline section: the worst-case robustness curve of every evaluated split (``rejects``: the
    system has reject thresholds; a classifier alone rejects nothing, and its acceptance is not reported)."""
    st = worst_case["settings"]
    out = ["## Worst-case robustness (headline)", ""]
    out.append(
        "Threat model: white box (the attacker knows the classifier, the Cushion, the Shield and its thresholds), "
        "L-inf perturbations of at most eps in [0, 1] intensities, targeted to "
        f"{'every other class' if st['targets'] == 'all' else 'one other class'}. An image is **broken** when any attack "
        "finds a point in the ball that the classifier gets wrong and the deployed system accepts (judged on the true "
        "system); *robust accuracy* = the share of images not broken (rejected or still correct). Ensemble: "
        f"{', '.join(str(a if isinstance(a, str) else a.get('label', a.get('name'))) for a in st['attacks'])} "
        f"(APGD-Joint with lam in {st['lams']}), {st['steps']} steps for the APGD attacks and {st['pgd_steps']} for the "
        f"fixed-step ones, {st['restarts']} restart(s), best iterate kept, "
        f"through the Cushion with the BPDA proxies {st['proxies']}; gradient-free Square ({st['blackbox_queries']} "
        "queries) on the images the white-box attacks left unbroken; "
        + ("a point found at a smaller eps counts at every larger one. " if st["carry_over"] else "each eps independently. ")
        + "SR@q: share of the correctly classified images broken when the thresholds are recalibrated on clean "
        "validation images to reject q % of them. The undefended classifier (no Cushion, no Shield) is attacked with "
        f"{', '.join(str(a) for a in st['undefended_attacks'])}."
    )
    out.append("")
    if figure:
        out += [f"![worst-case robustness curve]({figure})", ""]
    for split, rec in worst_case["splits"].items():
        clean = rec["clean"]
        acc_at = ", ".join(f"{_pct(v)} % at {q} % rejection" for q, v in clean["accepted_at"].items() if q != "deployed")
        accepted = (f"clean images accepted {_pct(clean['accepted'])} % at the deployed threshold"
                    f"{'; ' + acc_at if acc_at else ''}" if rejects else "no Shield: nothing is rejected")
        out.append(f"**Split `{split}`** ({rec['n']} images, per class {rec['class_counts']}): clean accuracy "
                   f"{_pct(clean['accuracy'])} %, {accepted}."
                   + (" The defence is random (EOT used)." if rec["random_defence"] else ""))
        out.append("")
        sr_keys = _ordered(q for r in rec["curve"] for q in r["sr"])
        proxies = rec["proxies"]
        header = ["eps", "robust acc. %", "undefended %", "gain (points)", "success %"] + [f"SR@{q} %" for q in sr_keys]
        if len(proxies) > 1:
            header.append(f"{proxies[0]} proxy only %")
        header.append("broken by Square only")
        rows = []
        for r in rec["curve"]:
            und = r.get("undefended_robust_accuracy")
            gain = None if und is None else r["robust_accuracy"] - und
            row = [_eps(r["eps"]), _pct(r["robust_accuracy"]), _pct(und), "–" if gain is None else f"{100 * gain:+.1f}",
                   _pct(r["success_rate"])] + [_pct(r["sr"].get(q)) for q in sr_keys]
            if len(proxies) > 1:
                row.append(_pct(r["robust_accuracy_by_proxy"].get(proxies[0])))
            bb = r.get("broken_by_blackbox_only")
            row.append("–" if bb is None else str(bb))
            rows.append(row)
        out += [_table(header, rows), ""]
        members = rec["members"]
        if members:
            eps_list = _ordered(m["eps"] for m in members)
            cell = {(m["attack"], m["proxy"], m["eps"]): m for m in members}
            keys = _ordered((m["attack"], m["proxy"]) for m in members)
            rows = [[a, p] + [f"{cell[(a, p, e)]['n_new']} / {cell[(a, p, e)]['n_run']}" if (a, p, e) in cell else "–"
                              for e in eps_list] for a, p in keys]
            out += ["Images first broken by each attack / images it attacked (AutoAttack-style: each attack runs on "
                    "the images still unbroken).", ""]
            out += [_table(["attack", "proxy"] + [_eps(e) for e in eps_list], rows, "ll" + "r" * len(eps_list)), ""]
        for c in rec["checks"]:
            out.append(f"- {check_line(c, bold=True)}")
        for note in rec["notes"]:
            out.append(f"- {note}")
        out.append(f"- Time: {_f(rec['seconds'], 0)} s.")
        out.append("")
    return out


def worst_case_comparison_lines(runs: Mapping[str, Mapping[str, Any]], undefended: Sequence[str] = ()) -> list[str]:
    """Defences side by side: per split, one row per run (robust accuracy at every eps of the worst case, clean
    accuracy and acceptance, checks passed), from the ``worst_case`` records of several evaluations. A system that
    rejects nothing (no thresholds, e.g. an adversarially trained classifier alone) shows "–" for acceptance.

    Args:
        runs: ``{label: results}``, each the ``results.json`` of an evaluation with a worst case (or its
            ``worst_case`` record alone), in the order of the rows.
        undefended: labels of runs whose bare classifier (no Cushion, no Shield) gets a row of its own, from the
            undefended curve of that run (runs on the same classifier share it: name one).

    Raises:
        ValueError: a run without worst case, an unknown label in ``undefended``, or runs that evaluated different
            images of a split (the comparison would not be side by side).
    """
    records, subset_seeds, rejects = {}, {}, {}
    for label, res in runs.items():
        wc = res.get("worst_case", res)
        if not isinstance(wc, Mapping) or "splits" not in wc:
            raise ValueError(f"run {label!r} has no worst-case record (evaluate with --worst-case).")
        records[label] = wc
        rejects[label] = _rejects(res)
        subset_seeds[label] = {k: v.get("subset_seed") for k, v in res.get("data", {}).get("splits", {}).items()}
    unknown = [u for u in undefended if u not in records]
    if unknown:
        raise ValueError(f"undefended names unknown runs {unknown}; the runs are {list(records)}.")
    out: list[str] = []
    for split in _ordered(s for wc in records.values() for s in wc["splits"]):
        have = {label: wc["splits"][split] for label, wc in records.items() if split in wc["splits"]}
        images = {label: (rec["n"], tuple(rec["class_counts"])) for label, rec in have.items()}
        seeds = {label: subset_seeds[label].get(split) for label in have}  # None: not recorded (older results)
        if len(set(images.values())) > 1 or len({v for v in seeds.values() if v is not None}) > 1:
            raise ValueError(f"split {split!r}: the runs evaluated different image sets (images, class counts: "
                             f"{images}; subset seeds {seeds}).")
        eps_list = _ordered(r["eps"] for rec in have.values() for r in rec["curve"])
        header = ["defence", "clean acc. %", "accepted %"] + [_eps(e) for e in eps_list] + ["checks passed"]
        rows = []
        for label, rec in have.items():
            cell = {r["eps"]: r["robust_accuracy"] for r in rec["curve"]}
            checks = [c for c in rec["checks"] if c.get("passed") is not None]
            accepted = _pct(rec["clean"]["accepted"]) if rejects[label] else "–"
            rows.append([label, _pct(rec["clean"]["accuracy"]), accepted]
                        + [_pct(cell.get(e)) for e in eps_list]
                        + [f"{sum(bool(c['passed']) for c in checks)} / {len(checks)}"])
            if label in undefended and rec.get("undefended"):
                ref = {r["eps"]: r["robust_accuracy"] for r in rec["undefended"]}
                acc = rec["undefended"][0].get("accuracy")
                rows.append([f"{label}: classifier alone", _pct(acc), "–"] + [_pct(ref.get(e)) for e in eps_list]
                            + ["–"])
        n, counts = next(iter(images.values()))
        out += [f"**Split `{split}`** ({n} images, per class {list(counts)}; robust accuracy % = rejected or still "
                "correct under the per-image worst case)", "", _table(header, rows), ""]
    return out


def _mode_title(cushion: str) -> str:
    return "without Cushion" if cushion == "none" else f"with Cushion ({cushion}, attacked with BPDA)"


def render_report(results: Mapping[str, Any]) -> str:
    """The Markdown report of a ``results.json`` document."""
    sysinfo, cfg, data = results["system"], results["config"], results["data"]
    tnr = int(round(100 * cfg.get("tnr", 0.9)))
    out: list[str] = ["# Robustness evaluation report", ""]
    out.append(
        f"Classifier `{sysinfo['classifier']}` ({sysinfo['num_classes']} classes: {', '.join(sysinfo['class_names'])}), "
        f"hooked layers `{', '.join(sysinfo['layer_names'])}`, Cushion `{sysinfo['cushion']}`, detectors "
        f"{', '.join(_DET_NAMES.get(d, d) for d in sysinfo['detectors'])}. Created {results['created']}."
    )
    out.append("")
    splits = data["splits"]
    baselines = [d for d in sysinfo["detectors"] if d != "shield"]
    out.append("Evaluation splits: " + "; ".join(
        f"`{k}` {v['n']} images (per class {v['class_counts']})" for k, v in splits.items()) + ". "
        + (f"Baselines fitted on {data['fit']['n']} training images ({data['fit']['n_adversarial']} successful "
           f"{data['fit']['fit_attack']} adversarial examples for LID / DNN). " if baselines else "")
        + f"Thresholds calibrated at {tnr}% TNR on {data['calibration']['n']} {data['calibration']['source']}.")
    out.append("")

    # ---------------------------------------------------------------- worst case (the headline)
    if results.get("worst_case"):
        out += worst_case_lines(results["worst_case"], results.get("figures", {}).get("worst_case"),
                                rejects=_rejects(results)) + [""]

    if results["attacks"]:
        out += ["**Protocol of the per-attack tables.** Every attack is crafted once per split and setting, targeted to "
                f"another class (L-inf eps = {cfg['eps'] * 256:g}/256; {cfg['conventional_steps']} steps for "
                f"conventional attacks, {cfg['adaptive_steps']} for adaptive ones; CW-L2 "
                f"{cfg['cw_binary_search_steps']} x {cfg['cw_steps']}). Detection metrics (AUROC, TPR at "
                f"{tnr}% TNR) compare the clean images the classifier gets right with the **successful** adversarial "
                "versions of those images only, as usual in the detection literature; attack success rates are over "
                "those images too. *Undetected success* = fooled the classifier and accepted by the Shield. *Robust "
                "accuracy* is over all images: an image is defended when its adversarial version is rejected by the "
                f"detector (threshold at {tnr}% TNR on clean validation images) or still classified correctly. "
                "Adaptive attacks (WB, WB_d, SPGD, OPGD) target the Shield; the baselines score the same images (they "
                "are not attacked adaptively).", ""]

    # ---------------------------------------------------------------- verdict
    verdict = _verdict(results)
    if verdict:
        out += ["## Summary", ""] + verdict + [""]

    # ---------------------------------------------------------------- clean
    out += ["## Clean performance", ""]
    dets = _ordered(d for r in results["clean"] for d in r["accepted"])
    rows = [[r["split"], r["cushion"], _pct(r["accuracy"])] + [_pct(r["accepted"].get(d)) for d in dets]
            for r in results["clean"]]
    out += [_table(["split", "Cushion", "accuracy %"] + [f"accepted by {_DET_NAMES.get(d, d)} %" for d in dets], rows,
                   "ll" + "r" * (1 + len(dets))), ""]
    out.append(f"Acceptance uses thresholds calibrated on the validation images at {tnr}% TNR; a split prepared "
               "differently from the validation data (e.g. the Kermany test split) can fall well below it.")
    out.append("")

    # ---------------------------------------------------------------- detection tables
    det_rows = results["detection"]
    atk_rows = results["attacks"]
    for split in _ordered(r["split"] for r in atk_rows):
        for cushion in _ordered(r["cushion"] for r in atk_rows if r["split"] == split):
            out += [f"## Split `{split}`, {_mode_title(cushion)}", ""]
            sel = [r for r in det_rows if r["split"] == split and r["cushion"] == cushion]
            attacks = _ordered(r["attack"] for r in sel)
            dets = _ordered(r["detector"] for r in sel)
            cell = {(r["detector"], r["attack"]): r for r in sel}
            out += [f"Detection: AUROC / TPR at {tnr}% TNR (successful attacks only).", ""]
            rows = [[_DET_NAMES.get(d, d)] + [f"{_f(cell[(d, a)]['auroc'])} / {_f(cell[(d, a)]['tpr'], 2)}"
                                              if (d, a) in cell else "–" for a in attacks] for d in dets]
            out += [_table(["detector"] + attacks, rows), ""]
            sel_a = [r for r in atk_rows if r["split"] == split and r["cushion"] == cushion]
            rdets = _ordered(d for r in sel_a for d in r["robust_accuracy"])
            rows = [[r["attack"], str(r["n"]), _pct(r["success_rate"]), _pct(r["undetected_success"])]
                    + [_pct(r["robust_accuracy"].get(d)) for d in rdets]
                    + [_f(None if r["mean_linf"] is None else r["mean_linf"] * 256, 2), _f(r["mean_l2"], 3),
                       _f(r["seconds"], 0)] for r in sel_a]
            out += ["Attacks: success and undetected success (% of correctly classified images), robust accuracy (% of "
                    "all images) of the classifier alone and with each detector, mean perturbation of the successful "
                    "examples.", ""]
            out += [_table(["attack", "n", "success %", "undetected %"]
                           + [f"robust acc. {_DET_NAMES.get(d, d)} %" if d != "classifier" else "robust acc. (no detector) %"
                              for d in rdets] + ["mean L-inf (/256)", "mean L2", "time (s)"], rows), ""]
            dirs = [r for r in results["directions"] if r["split"] == split and r["cushion"] == cushion]
            if dirs:
                rows = [[r["attack"], f"{r['source']} → {r['target']}", str(r["n"]), _pct(r["success_rate"]),
                         _pct(r["undetected_success"]), _f(r["auroc"]), _f(r["tpr"], 2), _pct(r["robust_accuracy"])]
                        for r in dirs]
                out += ["Per attack direction (Shield; negatives: clean images of the target class).", ""]
                out += [_table(["attack", "direction", "n", "success %", "undetected %", "Shield AUROC",
                                f"TPR@{tnr}", "robust acc. %"], rows, "llrrrrrr"), ""]

    # ---------------------------------------------------------------- layer ablation
    la = results["layer_ablation"]
    if la:
        out += ["## Layer ablation", "", f"AUROC / TPR at {tnr}% TNR with subsets of the hooked layers "
                f"(split `{la[0]['split']}`, {_mode_title(results['attacks'][0]['cushion'] if results['attacks'] else 'none')}).", ""]
        attacks = _ordered(r["attack"] for r in la)
        dets = _ordered(r["detector"] for r in la)
        cell = {(r["subset"], r["detector"], r["attack"]): r for r in la}
        header = ["layers"] + [f"{_DET_NAMES.get(d, d)} {a}" for a in attacks for d in dets]
        rows = []
        for sub in _ordered(r["subset"] for r in la):
            layers = next(r["layers"] for r in la if r["subset"] == sub)
            rows.append([f"{sub} ({', '.join(layers)})" if sub not in layers else sub]
                        + [f"{_f(cell[(sub, d, a)]['auroc'])} / {_f(cell[(sub, d, a)]['tpr'], 2)}"
                           if (sub, d, a) in cell else "–" for a in attacks for d in dets])
        out += [_table(header, rows), ""]

    # ---------------------------------------------------------------- cushion ablation
    ca = results["cushion_ablation"]
    if ca:
        out += ["## Cushion ablation", "", f"The Shield with each Cushion (threshold re-calibrated on validation "
                f"images; the Shield itself was trained with `{sysinfo['cushion']}`), split `{ca[0]['split']}`.", ""]
        rows = [[r["cushion"], r["attack"], _pct(r["clean_accuracy"]), _pct(r["clean_accepted"]),
                 _pct(r["success_rate"]), _pct(r["undetected_success"]), _f(r["auroc"]), _f(r["tpr"], 2),
                 _pct(r["robust_accuracy"])] for r in ca]
        out += [_table(["Cushion", "attack", "clean acc. %", "clean accepted %", "success %", "undetected %", "AUROC",
                        f"TPR@{tnr}", "robust acc. %"], rows, "llrrrrrrr"), ""]

    # ---------------------------------------------------------------- stress test
    st = results["stress_test"]
    if st:
        out += ["## Stress test", "", f"BIM (eps {cfg['stress_eps'] * 256:g}/256, {cfg['stress_steps']} steps) "
                f"raising (↑) or lowering (↓) the mean activation of one layer at a time, {st[0]['n']} images. "
                "Mean activation over images, and its relative change.", ""]
        rows = []
        grouped: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        for r in st:
            g = grouped.setdefault((r["cushion"], r["layer"]), {"clean": r["clean_mean"]})
            g[r["direction"]] = (r["adv_mean"], r["relative_change"])
        for (cushion, layer), g in grouped.items():
            up, down = g.get("up", (None, None)), g.get("down", (None, None))
            rows.append([cushion, layer, _f(g["clean"]), f"{_f(up[0])} ({_signed_pct(up[1])})",
                         f"{_f(down[0])} ({_signed_pct(down[1])})"])
        out += [_table(["Cushion", "layer", "clean mean", "↑ mean (change)", "↓ mean (change)"], rows, "llrrr"), ""]

    # ---------------------------------------------------------------- sanity
    san = results["sanity"]
    if san["eps_sweep"] or san["checks"]:
        out += ["## Sanity checks (gradient masking)", ""]
        if san["eps_sweep"]:
            attacks = _ordered(r["attack"] for r in san["eps_sweep"])
            eps = _ordered(r["eps"] for r in san["eps_sweep"])
            cell = {(r["attack"], r["eps"]): r for r in san["eps_sweep"]}
            rows = [[f"{e * 256:g}/256" if e < 1 else "unbounded (1.0)"]
                    + [f"{_pct(cell[(a, e)]['success_rate'])} / {_pct(cell[(a, e)]['undetected_success'])}"
                       if (a, e) in cell else "–" for a in attacks] for e in eps]
            out += ["Success / undetected success (%) against eps.", ""]
            out += [_table(["eps"] + attacks, rows), ""]
        for c in san["checks"]:
            out.append(f"- {check_line(c, bold=True)}")
        out.append("")

    # ---------------------------------------------------------------- figures, notes, timing
    figs = {k: v for k, v in results.get("figures", {}).items() if k != "worst_case"}
    if figs:
        out += ["## Figures", ""]
        for name, path in figs.items():
            for p in ([path] if isinstance(path, str) else path):
                out.append(f"![{name}]({p})")
        out.append("")
    if results.get("notes"):
        out += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    timing = results.get("timing", {})
    if timing:
        out.append("Time (s): " + ", ".join(f"{k} {_f(v, 0)}" for k, v in timing.items()) + ".")
        out.append("")
    return "\n".join(out)


def _signed_pct(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * v:+.0f}%"


def _verdict(results: Mapping[str, Any]) -> list[str]:
    """Plain statements, per split and setting, of which attacks break the defence and which it barely detects."""
    lines = []
    det = {(r["split"], r["cushion"], r["attack"]): r for r in results["detection"] if r["detector"] == "shield"}
    for split in _ordered(r["split"] for r in results["attacks"]):
        for cushion in _ordered(r["cushion"] for r in results["attacks"] if r["split"] == split):
            rows = [r for r in results["attacks"] if r["split"] == split and r["cushion"] == cushion]
            broken, weak = [], []
            for r in rows:
                d = det.get((split, cushion, r["attack"]))
                und = r["undetected_success"]
                auroc = None if d is None else d["auroc"]
                if und is not None and und >= 0.5:
                    broken.append(f"{r['attack']} ({_pct(und)}% undetected)")
                elif auroc is not None and auroc < 0.7 and (r["success_rate"] or 0) > 0:
                    weak.append(f"{r['attack']} (AUROC {_f(auroc)}, {_pct(und)}% undetected)")
            if not det:
                continue
            parts = []
            if broken:
                parts.append("**attacks that break the defence** (>= 50% of the attacked images fool the classifier and "
                             "pass the Shield): " + ", ".join(broken))
            if weak:
                parts.append("barely detected (Shield AUROC < 0.7): " + ", ".join(weak))
            if not parts:
                parts.append("every attack is detected (Shield AUROC >= 0.7) and none passes the Shield on half the images")
            rob = [r["robust_accuracy"].get("shield") for r in rows if r["robust_accuracy"].get("shield") is not None]
            if rob:
                parts.append(f"robust accuracy with the Shield {_pct(min(rob))}-{_pct(max(rob))}%")
            lines.append(f"- `{split}`, {_mode_title(cushion)}: " + "; ".join(parts) + ".")
    for c in results["sanity"]["checks"]:
        if c["passed"] is False:
            lines.append(f"- Sanity check failed: {c['name']} ({c['detail']}) -- treat the affected numbers with care.")
    return lines


# ---------------------------------------------------------------------------------------------------- figures
def _save(fig: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def _roc_figure(plt: Any, roc: Mapping[tuple[str, str, str, str], tuple[torch.Tensor, torch.Tensor]], split: str,
                cushion: str, path: Path) -> bool:
    keys = [k for k in roc if k[0] == split and k[1] == cushion]
    attacks = _ordered(k[2] for k in keys)
    if not attacks:
        return False
    ncol = min(4, len(attacks))
    nrow = math.ceil(len(attacks) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 3.0 * nrow), squeeze=False)
    for ax, attack in zip(axes.flat, attacks):
        for k in keys:
            if k[2] != attack:
                continue
            neg, pos = roc[k]
            if neg.numel() and pos.numel():
                fpr, tpr, _ = roc_curve(neg.double().numpy(), pos.double().numpy())
                ax.plot(fpr, tpr, label=_DET_NAMES.get(k[3], k[3]), lw=1.5 if k[3] == "shield" else 1.0)
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
        ax.set_title(attack, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(attacks):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"ROC (FPR vs TPR), split {split}, {_mode_title(cushion)}", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    _save(fig, path)
    plt.close(fig)
    return True


def _examples_figure(plt: Any, ex: Mapping[str, Any], attacks: Sequence[str], n: int, class_names: Sequence[str],
                     path: Path) -> bool:
    if "x" not in ex or not ex.get("adv"):
        return False
    attacks = [a for a in attacks if a in ex["adv"]] or list(ex["adv"])[:3]
    x, y, t, correct = ex["x"], ex["y"], ex["t"], ex["correct"]
    m = x.shape[0]
    first_succ = ex["adv"][attacks[0]][1][:m] & correct[:m]
    order = torch.cat([first_succ.nonzero()[:, 0], (~first_succ).nonzero()[:, 0]])[:n]
    if order.numel() == 0:
        return False
    cols = 1 + 2 * len(attacks)
    fig, axes = plt.subplots(order.numel(), cols, figsize=(1.9 * cols, 2.0 * order.numel()), squeeze=False)

    def show(ax: Any, img: torch.Tensor, title: str) -> None:
        img = img.detach().float()
        if img.shape[0] == 1:
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(img[:3].permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(title, fontsize=7)
        ax.axis("off")

    for row, i in enumerate(order.tolist()):
        show(axes[row, 0], x[i], f"clean ({class_names[int(y[i])]})")
        for j, a in enumerate(attacks):
            x_adv, succ = ex["adv"][a]
            d = x_adv[i] - x[i]
            scale = float(d.abs().max()) or 1.0
            tag = f"→ {class_names[int(t[i])]}" if bool(succ[i]) else "failed"
            show(axes[row, 1 + 2 * j], x_adv[i], f"{a} {tag}")
            show(axes[row, 2 + 2 * j], 0.5 + d / (2 * scale), f"perturbation x{0.5 / scale:.0f}")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def _sweep_figure(plt: Any, sweep: Sequence[Mapping[str, Any]], path: Path) -> bool:
    if not sweep:
        return False
    fig, ax = plt.subplots(figsize=(4.8, 3.2))
    for a in _ordered(r["attack"] for r in sweep):
        rows = [r for r in sweep if r["attack"] == a]
        eps = [r["eps"] * 256 for r in rows]
        ax.plot(eps, [r["success_rate"] for r in rows], "o-", label=f"{a} success")
        ax.plot(eps, [r["undetected_success"] for r in rows], "s--", label=f"{a} undetected")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("eps (/256)")
    ax.set_ylabel("rate")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def _worst_case_figure(plt: Any, worst_case: Mapping[str, Any], path: Path) -> bool:
    splits = worst_case.get("splits", {})
    if not splits:
        return False
    fig, axes = plt.subplots(1, len(splits), figsize=(5.0 * len(splits), 3.6), squeeze=False)
    for ax, (split, rec) in zip(axes.flat, splits.items()):
        curve = rec["curve"]
        eps = [r["eps"] * 256 for r in curve]
        ax.plot(eps, [r["robust_accuracy"] for r in curve], "o-", lw=2, label="Aegis robust accuracy")
        if any(r.get("undefended_robust_accuracy") is not None for r in curve):
            ax.plot(eps, [r.get("undefended_robust_accuracy") for r in curve], "s-", label="undefended robust accuracy")
        for q in _ordered(q for r in curve for q in r["sr"]):
            ax.plot(eps, [r["sr"].get(q) for r in curve], "^--", lw=1, label=f"attack success SR@{q}")
        ax.axhline(rec["clean"]["accuracy"] or 0, color="grey", ls=":", lw=1, label="clean accuracy")
        if rec["clean"].get("accepted") is not None:
            ax.axhline(rec["clean"]["accepted"], color="black", ls="-.", lw=0.8, label="clean accepted")
        ax.set_xscale("log", base=2)
        ax.set_xticks(eps)
        ax.set_xticklabels([f"{e:g}" for e in eps])
        ax.set_xlabel("eps (/256, L-inf)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"worst case, split {split} ({rec['n']} images)", fontsize=9)
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("rate")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7, bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    _save(fig, path)
    plt.close(fig)
    return True


def write_outputs(results: dict[str, Any], out_dir: Path, roc: Mapping[tuple[str, str, str, str], Any],
                  examples: Mapping[str, Any], figures: bool = True) -> dict[str, Any]:
    """Write the figures, ``results.json`` and ``report.md`` into ``out_dir`` (each atomically); return the results
    with their ``figures`` entry filled in (paths relative to ``out_dir``)."""
    from ..utils import json_safe

    out_dir.mkdir(parents=True, exist_ok=True)
    figs: dict[str, Any] = {}
    if figures:
        matplotlib, has_mpl = optional_import("matplotlib")
        if has_mpl:
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            roc_paths = []
            for split, cushion in _ordered((k[0], k[1]) for k in roc):
                name = f"roc_{split}_{cushion}.png"
                if _roc_figure(plt, roc, split, cushion, out_dir / name):
                    roc_paths.append(name)
            if roc_paths:
                figs["roc"] = roc_paths
            cfg = results["config"]
            wanted = cfg.get("example_attacks") or [a for a in ("PGD", "CW-L2", "WB") if a in examples.get("adv", {})]
            if _examples_figure(plt, examples, wanted, int(cfg.get("n_examples", 4)), results["system"]["class_names"],
                                out_dir / "examples.png"):
                figs["examples"] = "examples.png"
            if _sweep_figure(plt, results["sanity"]["eps_sweep"], out_dir / "eps_sweep.png"):
                figs["eps_sweep"] = "eps_sweep.png"
            if results.get("worst_case") and _worst_case_figure(plt, results["worst_case"], out_dir / "worst_case.png"):
                figs["worst_case"] = "worst_case.png"
        else:
            results.setdefault("notes", []).append("matplotlib is not installed: no figures were written.")
    results["figures"] = figs
    results = json_safe(results)
    validate_results(results)
    atomic_write_json(out_dir / "results.json", results)
    atomic_write_text(out_dir / "report.md", render_report(results))
    return results
