"""The README's Results section, generated from a finished run (``cqa report``, ``make reproduce``).

Reads ``results/<run>/04_stats/stats.json``, rewrites the block between the markers in
README.md, and copies the run's figures (stage 05) into ``figures/``. The verdict sentence
is computed from the numbers, so the README never claims more than the run showed.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from .config import PROJECT_ROOT, Config
from .runs import atomic_path, stage_outputs, write_text

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.{digits}f}"
    return str(int(value)) if isinstance(value, float) else str(value)


def verdict(report: dict) -> str:
    """One honest sentence: does this run show the paper's domain-selective effect?"""
    rows = {r["group"]: r for r in report["paper_comparison"]}
    lit, fact = rows.get("literary", {}), rows.get("factual", {})
    lit_p, lit_d = lit.get("p_holm"), lit.get("d_z")
    if lit_p is None or lit_d is None:
        return "The run is too small for a test (smoke-sized); no conclusion is drawn."
    literary_up = lit_p < 0.05 and lit_d > 0
    factual_up = fact.get("p_holm") is not None and fact["p_holm"] < 0.05 and (fact.get("d_z") or 0) > 0
    if literary_up and not factual_up:
        return "This run reproduces the direction of the paper's claim: ΔI rises for literary text (Holm-adjusted) and not for the factual control."
    if literary_up and factual_up:
        return "ΔI rises for both groups in this run, so the effect is not domain-selective here."
    sentence = (f"This run does not reproduce the paper's effect: the literary Δ(ΔI) has d_z = {lit_d:+.2f} "
                f"with Holm-adjusted one-sided p = {lit_p:.3g}.")
    if factual_up:
        sentence += (f" ΔI rises for the factual control instead (d_z = {fact['d_z']:+.2f}, "
                     f"Holm-adjusted p = {fact['p_holm']:.3g}).")
    return sentence


def results_markdown(report: dict) -> str:
    run = report["run"]
    lines = [
        f"Run `{run['name']}`: model `{run['model']}`, {run['epochs_trained']} epochs, "
        f"items per group {run['n_items']}; headline epoch {report['headline_epoch']}; "
        "Δ(ΔI) summed over x's tokens (nats), one-sided Wilcoxon signed-rank, paired d_z.",
        "",
        "| group | paper n | paper p | paper d | our n | mean Δ(ΔI) | 95% CI | p (one-sided) | p (Holm) | d_z | Hedges g |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["paper_comparison"]:
        lines.append(f"| {r['group']} | {_fmt(r['paper_n'])} | {_fmt(r['paper_p_one_sided'])} | {_fmt(r['paper_d'], 2)} "
                     f"| {_fmt(r['n'])} | {_fmt(r['mean_delta_delta_i'])} | [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] "
                     f"| {_fmt(r['p_one_sided'])} | {_fmt(r['p_holm'])} | {_fmt(r['d_z'], 2)} | {_fmt(r['hedges_g'], 2)} |")
    check = report["metric_check"]
    selective = [s for s in report["selectivity"] if s.get("epoch") == report["headline_epoch"] and s.get("measure") == "sum"]
    lines += ["", f"**Verdict.** {verdict(report)}", ""]
    if check.get("n"):
        lines.append(f"**Metric check (base model).** ΔI(intact) > ΔI(degraded) for {check['k']} of {check['n']} "
                     f"literary items (one-sided sign test p = {_fmt(check['p_sign_test'], 3)}).")
    if selective:
        s = selective[0]
        lines.append(f"**Selectivity.** Literary minus factual mean Δ(ΔI) = {_fmt(s.get('mean_difference'))} nats "
                     f"(permutation p = {_fmt(s.get('p_permutation'))}, Mann–Whitney p = {_fmt(s.get('p_mannwhitney'))}).")
    lines += ["", "Figures: `figures/fig_a_audit_shares.png` … `figures/fig_g_metric_check.png`; every number: "
              f"`results/{run['name']}/04_stats/stats.csv`."]
    return "\n".join(lines)


def update_readme(readme: Path, report: dict) -> Path:
    text = readme.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme}: the markers {BEGIN} … {END} are missing")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return write_text(readme, f"{head}{BEGIN}\n{results_markdown(report)}\n{END}{tail}")


def copy_figures(cfg: Config, dest: Path | str | None = None) -> list[Path]:
    """Copy the PNG and PDF files of a finished stage 05 into ``dest`` (default: figures/)."""
    dest = Path(dest) if dest is not None else PROJECT_ROOT / "figures"
    copied = []
    for name, path in sorted(stage_outputs(cfg, "05").items()):
        with atomic_path(dest / name) as tmp:
            shutil.copyfile(path, tmp)
        copied.append(dest / name)
    return copied


def publish(cfg: Config, readme: Path = PROJECT_ROOT / "README.md") -> list[Path]:
    """Copy the run's figures into figures/ and regenerate the README's Results block."""
    report = json.loads(stage_outputs(cfg, "04")["report"].read_text(encoding="utf-8"))
    return [*copy_figures(cfg), update_readme(readme, report)]
