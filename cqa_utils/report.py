"""The README's Results section, generated from a finished run (``cqa report``, ``make reproduce``).

Reads ``results/<run>/04_stats/stats.json`` and stage 01's ``conclusion.json`` and
``shares.csv``, rewrites the blocks between the ``results`` and ``audit`` markers in
README.md (and the ``efficiency`` and ``study-time`` blocks from the run's ``efficiency.json``), and copies the run's
figures (stage 05) into ``figures/``. Those blocks belong to one run, the *headline run* the
Results block names; a run of another name (Gemma, a seed, a replicator's GPU run) updates only
the per-model table and the across-models figure unless it is told to take the headline over.
The verdict sentences are computed from the numbers, so the README never claims more than the
run showed.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from .config import PROJECT_ROOT, Config
from .data import GROUPS
from .efficiency import FILENAME as EFFICIENCY_FILE, efficiency_markdown, study_time_markdown
from .publish import REFERENCE_DIR
from .runs import atomic_path, is_done, run_dir, stage_dir, stage_outputs, write_text

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
AUDIT_BEGIN, AUDIT_END = "<!-- audit:begin -->", "<!-- audit:end -->"
MODELS_BEGIN, MODELS_END = "<!-- models:begin -->", "<!-- models:end -->"
EFFICIENCY_BEGIN, EFFICIENCY_END = "<!-- efficiency:begin -->", "<!-- efficiency:end -->"
STUDY_TIME_BEGIN, STUDY_TIME_END = "<!-- study-time:begin -->", "<!-- study-time:end -->"


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.{digits}f}"
    return str(int(value)) if isinstance(value, float) else str(value)


def _p(value) -> str:
    """A p-value to three significant digits, so a tiny one reads 3.35e-07, not 0.000."""
    return "–" if value is None else f"{value:.3g}"


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


def controlled_verdict(report: dict) -> str:
    """One sentence on the pre-declared primary endpoint: supported, equivalent to none, or inconclusive."""
    primary = report.get("primary") or {}
    row, declared = primary.get("row"), primary.get("declared") or {}
    if not row or row.get("p_one_sided") is None:
        return "The primary endpoint was not scored in this run (controls off, or too small); no conclusion is drawn."
    what = f"the literary {declared.get('kind')} Δ(ΔI) at epoch {declared.get('epoch')}"
    numbers = (f"mean {row['mean']:+.2f} nats, Hodges–Lehmann {_fmt(row.get('hl'), 2)}, d_z = {row['d_z']:+.2f}, "
               f"one-sided p = {row['p_one_sided']:.3g}")
    if row["p_one_sided"] < 0.05 and row["d_z"] > 0:
        control = _control_row(report, declared)
        if control and control.get("p_one_sided") is not None and control["p_one_sided"] < 0.05 and control["d_z"] > 0:
            return (f"The primary endpoint is positive — {what} rises ({numbers}) — but the factual control rises "
                    f"too (d_z = {control['d_z']:+.2f}, one-sided p = {control['p_one_sided']:.3g}), so this run does "
                    "not show the paper's domain-selective effect.")
        if control is None:
            return f"The primary endpoint is positive: {what} rises ({numbers}); no factual control was scored."
        return f"The primary endpoint supports the paper's claim: {what} rises ({numbers}) and the factual control does not."
    margin = report.get("settings", {}).get("equivalence_dz")
    if row.get("p_tost") is not None and row["p_tost"] < 0.05:
        return (f"The primary endpoint shows no effect: {what} is equivalent to zero within ±{margin} sd "
                f"(TOST p = {row['p_tost']:.3g}; {numbers}).")
    return (f"The primary endpoint is inconclusive: {what} is not significantly positive, nor equivalent to zero "
            f"within ±{margin} sd (TOST p = {_fmt(row.get('p_tost'))}; {numbers}).")


def _control_row(report: dict, declared: dict) -> dict | None:
    """The factual row of the primary endpoint's kind, measure and epoch (its control)."""
    for r in report.get("stats_table", []):
        if (r["group"], r["kind"], r["measure"], r["epoch"]) == ("factual", declared.get("kind"),
                                                                  declared.get("measure", "sum"), declared.get("epoch")):
            return r
    return None


def _kind_rows(report: dict) -> list[str]:
    """The controlled table: every kind of ΔI per group at the headline epoch (summed nats)."""
    lines = ["| group | ΔI kind | n | mean Δ(ΔI) | Hodges–Lehmann [95% CI] | p (one-sided) | p (Holm) | d_z | TOST p | role |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    order = {g: i for i, g in enumerate(GROUPS)}
    for r in sorted(report["stats_table"], key=lambda r: order.get(r["group"], len(order))):
        if r["epoch"] == report["headline_epoch"] and r["measure"] == "sum":
            lines.append(f"| {r['group']} | {r['kind']} | {_fmt(r['n'])} | {_fmt(r['mean'])} | {_fmt(r['hl'])} "
                         f"[{_fmt(r['hl_ci_low'])}, {_fmt(r['hl_ci_high'])}] | {_fmt(r['p_one_sided'])} "
                         f"| {_fmt(r['p_holm'])} | {_fmt(r['d_z'], 2)} | {_fmt(r['p_tost'])} | {r['role']} |")
    return lines


def _controls_lines(report: dict) -> list[str]:
    lines = []
    check, baseline = report["metric_check"], report.get("baseline_metric_check") or {}
    blind = report.get("metric_check_where_baseline_blind") or {}
    if check.get("n"):
        lines.append(f"**Metric check (base model).** ΔI(intact) > ΔI(degraded) for {check['k']} of {check['n']} "
                     f"literary items (one-sided sign test p = {_fmt(check['p_sign_test'], 3)}).")
    if baseline.get("n"):
        lines.append(f"The model-free word-overlap baseline favours the intact text in {_fmt(baseline['share'], 2)} of "
                     f"{baseline['n']} items (ties half; 0.5 is chance); on the {blind.get('n_items', 0)} items where it "
                     f"cannot tell them apart, the model puts the intact text ahead in {blind.get('k', 0)} of "
                     f"{blind.get('n', 0)} (p = {_fmt(blind.get('p_sign_test'), 3)}).")
    base_fits = [r for r in report.get("overlap_regression", []) if r["epoch"] == 0 and r["kind"] == "full"]
    if base_fits:
        lines.append("ΔI on word overlap, base model: " + "; ".join(
            f"{r['group']} slope {_fmt(r['slope'], 1)} nats per unit overlap, R² = {_fmt(r['r2'], 2)}" for r in base_fits) + ".")
    return lines


def _selectivity_lines(report: dict) -> list[str]:
    epoch = report["headline_epoch"]
    pick = lambda rows, kind: [r for r in rows if r.get("epoch") == epoch and r.get("measure") == "sum"  # noqa: E731
                               and r.get("kind", "full") == kind]
    lines = []
    for s in pick(report["selectivity"], "full"):
        lines.append(f"**Selectivity.** Literary minus factual mean Δ(ΔI) = {_fmt(s.get('mean_difference'))} nats "
                     f"(permutation p = {_fmt(s.get('p_permutation'))}, Mann–Whitney p = {_fmt(s.get('p_mannwhitney'))}).")
    for kind in ("full", "specific"):
        for s in pick(report.get("paired_selectivity", []), kind):
            if s.get("n_pairs"):
                lines.append(f"Paired by topic ({s['n_pairs']} pairs, {kind} ΔI): literary minus factual "
                             f"Hodges–Lehmann {_fmt(s.get('hl'))} [{_fmt(s.get('hl_ci_low'))}, {_fmt(s.get('hl_ci_high'))}] "
                             f"nats, one-sided p = {_fmt(s.get('p_one_sided'))}.")
    return lines


def results_markdown(report: dict) -> str:
    run = report["run"]
    lines = [
        f"Run `{run['name']}`: model `{run['model']}`, benchmark `{run.get('benchmark', '?')}`, "
        f"{run['epochs_trained']} epochs, items per group {run['n_items']}; headline epoch {report['headline_epoch']}; "
        "Δ(ΔI) summed over x's tokens (nats), one-sided Wilcoxon signed-rank, paired d_z.",
        "",
        f"**Primary endpoint (declared before the run).** {controlled_verdict(report)}",
        "",
        "The paper's measure, the full ΔI, beside the paper (exploratory here):",
        "",
        "| group | paper n | paper p | paper d | our n | mean Δ(ΔI) | 95% CI | p (one-sided) | p (Holm) | d_z | Hedges g |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["paper_comparison"]:
        lines.append(f"| {r['group']} | {_fmt(r['paper_n'])} | {_fmt(r['paper_p_one_sided'])} | {_fmt(r['paper_d'], 2)} "
                     f"| {_fmt(r['n'])} | {_fmt(r['mean_delta_delta_i'])} | [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] "
                     f"| {_fmt(r['p_one_sided'])} | {_fmt(r['p_holm'])} | {_fmt(r['d_z'], 2)} | {_fmt(r['hedges_g'], 2)} |")
    lines += ["", f"**Verdict on the paper's measure.** {verdict(report)}", "",
              "Every kind of ΔI at the headline epoch (specific: own y minus the mean of K other items' y; "
              "intent / audience / reality: that slot alone):", "", *_kind_rows(report), ""]
    lines += [part for line in _controls_lines(report) + _selectivity_lines(report) for part in (line, "")]
    where = f"`results/{run['name']}/04_stats/stats.csv`"
    if (REFERENCE_DIR / run["name"] / "MANIFEST.json").is_file():
        where += f", committed as `reference/{run['name']}/04_stats/stats.csv` (`cqa publish`)"
    lines += [f"Figures: `figures/fig_a_audit_shares.png` onwards (notebook 05); every number: {where}."]
    return "\n".join(lines)


def _headline(report: dict, group: str, kind: str) -> dict:
    """The summed-nats row of one group and ΔI kind at the headline epoch ({} if not scored)."""
    return next((r for r in report.get("stats_table", []) if (r["group"], r["kind"], r["measure"], r["epoch"])
                 == (group, kind, "sum", report["headline_epoch"])), {})


def models_markdown(reports: list[dict]) -> str:
    """One row per published single-model run: the base model's metric check and the headline
    Δ(ΔI) of both groups, full and specific, with one-sided p and d_z."""
    lines = ["| model | run | metric check (base) | ΔI kind | literary Δ(ΔI) | p | d_z | factual Δ(ΔI) | p | d_z |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for report in sorted(reports, key=lambda r: (r["run"]["model"], r["run"]["name"])):
        check = report["metric_check"]
        checked = f"{check['k']} of {check['n']} (p = {_fmt(check['p_sign_test'])})" if check.get("n") else "–"
        for kind in ("full", "specific"):
            lit, fact = (_headline(report, group, kind) for group in ("literary", "factual"))
            if not lit and not fact:
                continue
            lines.append(f"| `{report['run']['model']}` | `{report['run']['name']}` | {checked} | {kind} "
                         f"| {_fmt(lit.get('mean'))} | {_p(lit.get('p_one_sided'))} | {_fmt(lit.get('d_z'), 2)} "
                         f"| {_fmt(fact.get('mean'))} | {_p(fact.get('p_one_sided'))} | {_fmt(fact.get('d_z'), 2)} |")
    lines += ["", "Summed nats at each run's headline epoch, one-sided Wilcoxon signed-rank p, paired d_z; metric "
              "check: literary items whose intact text gets the higher ΔI on the base model, sign test."]
    ordered = sorted(reports, key=lambda r: (r["run"]["model"], r["run"]["name"]))
    lines += ["", *(f"- `{r['run']['name']}`: {controlled_verdict(r)}" for r in ordered)]
    cost = cost_line(reports)
    return "\n".join([*lines, "", cost] if cost else lines)


def published_model_reports(root: Path) -> list[dict]:
    """Stage 04 reports of the published runs under ``root`` that are not part of a grid, each
    with what its run cost (``cost``, :func:`run_cost`) beside the numbers."""
    in_grids = {run["name"] for manifest in sorted((root / "sweeps").glob("*.json"))
                for run in json.loads(manifest.read_text(encoding="utf-8"))["runs"]}
    found = sorted(root.glob("*/04_stats/stats.json"))
    return [json.loads(path.read_text(encoding="utf-8")) | {"cost": run_cost(path.parents[1])}
            for path in found if path.parts[-3] not in in_grids]


def run_cost(folder: Path) -> dict | None:
    """What a finished run cost: the study's wall time and its ratio to this machine's bound
    (efficiency.json, where the run has one), stage 02's peak RSS (the highest ``peak_rss_gib``
    of train_log.csv) and the malloc stage 02 ran under (its environment.json; runs from before
    that record are "not recorded": nothing was preloaded then, so glibc's). None before stage 02."""
    import pandas as pd

    stage = Path(folder) / "02_finetune"
    if not (stage / "train_log.csv").is_file():
        return None
    environment = json.loads((stage / "environment.json").read_text(encoding="utf-8"))
    record = Path(folder) / EFFICIENCY_FILE
    efficiency = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
    study, threads = efficiency.get("study", {}), efficiency.get("torch_threads")
    return {"malloc": environment.get("malloc", "glibc (not recorded)"),
            "peak_gib": float(pd.read_csv(stage / "train_log.csv")["peak_rss_gib"].max()),
            "wall_s": study.get("wall_seconds"), "ratio": study.get("ratio"), "threads": threads}


def cost_line(reports: list[dict]) -> str:
    """The per-model table's footnote: each published run's wall time, wall/bound and training peak."""
    parts = [f"`{r['run']['name']}` {c['wall_s'] / 60:.0f} min on {c['threads']} threads (wall/bound "
             f"{c['ratio']:.2f}), stage 02 peak {c['peak_gib']:.1f} GiB under {c['malloc']}"
             for r in sorted(reports, key=lambda r: (r["run"]["model"], r["run"]["name"]))
             if (c := r.get("cost")) and c.get("wall_s") is not None]
    return ("Measured cost of each run, whole study (efficiency.json, train_log.csv): " + "; ".join(parts) + "."
            if parts else "")


def audit_markdown(conclusion: dict, shares, hand) -> str:
    """The audit's conclusion per role and the role means (corrected, and from hand labels)."""
    from .audit_shares import share_table
    lines = [part for role, sentence in conclusion.items() for part in (f"**{role.capitalize()} data.** {sentence}", "")]
    lines += ["| role | shares from | craft | audience | reality | creative records |", "|---|---|---|---|---|---|"]
    for what, frame in (("classifier, corrected", shares), ("adjudicated hand labels", hand)):
        table = share_table(frame, "taught")
        for group in (g for g in table.index if g.startswith("mean:")):
            row = table.loc[group]
            lines.append(f"| {group[5:]} | {what} | {row.craft} | {row.audience} | {row.reality} | {row.n} |")
    lines += ["", "Shares: unweighted mean over each role's datasets, 95% bootstrap CI; bar: the record *teaches* "
              "the type (level 2). Per dataset, both bars and the labellers' agreement: notebook 01."]
    return "\n".join(lines)


def replace_block(text: str, begin: str, end: str, body: str, where: Path) -> str:
    """``text`` with what lies between the ``begin`` and ``end`` markers replaced by ``body``."""
    if begin not in text or end not in text:
        raise ValueError(f"{where}: the markers {begin} … {end} are missing")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def update_readme(readme: Path, report: dict | None = None, audit: str | None = None,
                  models: list[dict] | None = None, efficiency: dict | None = None) -> Path:
    """Rewrite the Results block (from ``report``), the audit block (``audit``), the
    per-model table (from ``models``, reports of published runs) and the study's
    efficiency table and time (from ``efficiency``, the run's efficiency.json) in place."""
    text = readme.read_text(encoding="utf-8")
    if efficiency is not None:
        text = replace_block(text, EFFICIENCY_BEGIN, EFFICIENCY_END, efficiency_markdown(efficiency), readme)
        text = replace_block(text, STUDY_TIME_BEGIN, STUDY_TIME_END, study_time_markdown(efficiency), readme)
    if report is not None:
        text = replace_block(text, BEGIN, END, results_markdown(report), readme)
    if audit is not None:
        text = replace_block(text, AUDIT_BEGIN, AUDIT_END, audit, readme)
    if models:
        text = replace_block(text, MODELS_BEGIN, MODELS_END, models_markdown(models), readme)
    return write_text(readme, text)


ACROSS_MODELS = "fig_k_across_models"


def copy_figures(cfg: Config, dest: Path | str) -> list[Path]:
    """Copy the PNG and PDF files of a finished stage 05 into ``dest``, all but the across-models
    figure, which :func:`across_models_figure` draws from the published runs instead."""
    dest = Path(dest)
    copied = []
    for name, path in sorted(stage_outputs(cfg, "05").items()):
        if name.startswith(ACROSS_MODELS):
            continue
        with atomic_path(dest / name) as tmp:
            shutil.copyfile(path, tmp)
        copied.append(dest / name)
    return copied


def headline_run(text: str) -> str | None:
    """The run a README's Results block shows (its first line names it), None while it shows none."""
    if BEGIN not in text or END not in text:
        return None
    found = re.search(r"^Run `([^`]+)`", text.split(BEGIN, 1)[1].split(END, 1)[0], re.MULTILINE)
    return found.group(1) if found else None


def across_models_figure(reports: list[dict], dest: Path) -> list[Path]:
    """``fig_k_across_models`` in ``dest`` from the published single-model runs, where they hold
    more than one model: drawn from the same reports as the per-model table, so the two agree
    whichever run was reported last."""
    from . import model_plots, plots

    if len(model_plots.models_in(reports)) < 2:
        return []
    fig = model_plots.fig_across_models(reports)
    try:
        return plots.save_fig(fig, ACROSS_MODELS, dest)
    finally:
        import matplotlib.pyplot as plt
        plt.close(fig)


def publish(cfg: Config, readme: Path = PROJECT_ROOT / "README.md", figures: Path = PROJECT_ROOT / "figures",
            reference: Path = REFERENCE_DIR, headline: bool = False) -> list[Path]:
    """Regenerate the README blocks whose stages finished (audit: 01; Results and figures/: 04, 05),
    the Speed section's efficiency table where the run has one, and the per-model table and
    across-models figure from the runs published in ``reference``. A run that is not the README's
    headline run touches only the last two, unless ``headline`` hands it the Results."""
    import pandas as pd

    models = published_model_reports(reference)
    shown = headline_run(readme.read_text(encoding="utf-8"))
    if not headline and shown not in (None, cfg.run.name):
        print(f"the README's Results show run {shown!r}; run {cfg.run.name!r} updates the per-model table "
              f"(from {reference}) and the across-models figure only (--headline: show it in the Results)")
        return [*across_models_figure(models, figures), update_readme(readme, models=models)]
    done = {key for key in ("01", "04") if is_done(stage_dir(cfg, key))}
    if not done:
        raise ValueError(f"run {cfg.run.name!r} has neither a finished stage 01 nor 04; run `cqa run` first")
    block = report = None
    if "01" in done:
        audit = stage_outputs(cfg, "01")
        block = audit_markdown(json.loads(audit["conclusion"].read_text(encoding="utf-8")),
                               pd.read_csv(audit["shares"]), pd.read_csv(audit["shares_hand_labels"]))
    if "04" in done:
        report = json.loads(stage_outputs(cfg, "04")["report"].read_text(encoding="utf-8"))
    copied = copy_figures(cfg, figures) if is_done(stage_dir(cfg, "05")) else []
    speed = run_dir(cfg) / EFFICIENCY_FILE
    efficiency = json.loads(speed.read_text(encoding="utf-8")) if speed.is_file() else None
    return [*copied, *across_models_figure(models, figures), update_readme(readme, report, block, models, efficiency)]


def report_into_run(cfg: Config, readme: Path = PROJECT_ROOT / "README.md") -> Path:
    """The README and figures regenerated from this run into ``results/<run>/report/``, leaving the project's
    README.md and figures/ as published: a reproduction on another machine lands a little apart (bf16 training
    differs by CPU), and that belongs beside the published numbers (``cqa compare``), not over them."""
    out = run_dir(cfg) / "report"
    with atomic_path(out / "README.md") as tmp:
        shutil.copyfile(readme, tmp)
    publish(cfg, readme=out / "README.md", figures=out / "figures", headline=True)
    return out
