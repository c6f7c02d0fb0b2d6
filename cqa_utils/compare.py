"""A run beside a published one (``cqa compare RUN --to reference/default``): the same study on another machine.

A reproduction on another CPU is expected to differ in a known way: fp32 scoring of the same weights gives the same
base log-probs, while training (bf16 where the CPU's probe picks it, and kernels that sum in CPU-specific orders)
lands on slightly different adapters, so every trained score moves a little. This module shows which of the two a
user's run did, item by item, with both runs' verdicts side by side. It reads each run's ``03_logprobs/scores.csv``
and ``04_stats/stats.json`` (or a ``cqa score`` folder's ``scores.csv``: base scores only, no verdicts, compared
with the published run's epochs that it scored) and writes ``compare.csv`` / ``compare.json`` only where asked.
A reproduction worth keeping is recorded in ``reference/reproductions/<name>.json`` (``--record``), and the README's
Reproducibility table is generated from those records.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from .analysis import paired_differences
from .config import PROJECT_ROOT
from .report import controlled_verdict, replace_block, verdict
from .robustness import fmt_number
from .runs import REFERENCE_DIR, write_csv, write_json, write_text

SCORES = Path("03_logprobs") / "scores.csv"
STATS = Path("04_stats") / "stats.json"
KEYS = ["group", "item_id", "variant", "epoch"]
SCORE_COLUMNS = ("logp_cond", "logp_uncond", "delta_i", "delta_i_specific")
REPRODUCTIONS = REFERENCE_DIR / "reproductions"
BEGIN, END = "<!-- reproductions:begin -->", "<!-- reproductions:end -->"


def read_run(folder: Path) -> tuple[pd.DataFrame, dict | None]:
    """(scores, stats report) of a finished run folder, (scores, None) of a ``cqa score`` folder, or an error
    naming the stage that is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such run folder (a run name under results/, or a folder path)")
    if not (folder / SCORES).is_file() and (folder / SCORES.name).is_file():
        return pd.read_csv(folder / SCORES.name), None
    for rel, stage in ((SCORES, "03"), (STATS, "04")):
        if not (folder / rel).is_file():
            raise FileNotFoundError(f"{folder / rel} is missing: finish stage {stage} of that run first "
                                    f"(cqa run --run {folder.name} --only {stage})")
    return pd.read_csv(folder / SCORES), json.loads((folder / STATS).read_text(encoding="utf-8"))


def score_differences(mine: pd.DataFrame, theirs: pd.DataFrame) -> pd.DataFrame:
    """Every scored (item, variant, epoch) of both runs, each score column side by side with its difference.

    Returns:
        DataFrame[group, item_id, variant, epoch, <col>_run, <col>_published, <col>_diff ...], nats;
        a row that only one run has is an error (the runs scored different items or epochs).
    """
    columns = [c for c in SCORE_COLUMNS if c in mine.columns and c in theirs.columns]
    joined = mine[KEYS + columns].merge(theirs[KEYS + columns], on=KEYS, how="outer",
                                        suffixes=("_run", "_published"), indicator=True)
    unmatched = joined[joined["_merge"] != "both"]
    if len(unmatched):
        row = unmatched.iloc[0]
        side = "the run" if row["_merge"] == "left_only" else "the published run"
        raise ValueError(f"only {side} scored (item {row.item_id!r}, variant {row.variant!r}, epoch {row.epoch}); "
                         f"{len(unmatched)} such row(s): the two runs used different benchmarks or epochs")
    for column in columns:
        joined[f"{column}_diff"] = joined[f"{column}_run"] - joined[f"{column}_published"]
    return joined.drop(columns="_merge").sort_values(KEYS).reset_index(drop=True)


def item_changes(mine: pd.DataFrame, theirs: pd.DataFrame, kind: str, epoch: int) -> pd.DataFrame:
    """Δ(ΔI) per item at ``epoch`` in both runs, largest disagreement first.

    Returns:
        DataFrame[group, item_id, run, published, difference], nats.
    """
    both = []
    for scores in (mine, theirs):
        changes = paired_differences(scores, kind=kind)
        both.append(changes[changes["epoch"] == epoch].set_index(["group", "item_id"])["diff"])
    table = pd.DataFrame({"run": both[0], "published": both[1]}).reset_index()
    table["difference"] = table["run"] - table["published"]
    return table.reindex(table["difference"].abs().sort_values(ascending=False).index).reset_index(drop=True)


def spread(differences: pd.DataFrame) -> pd.DataFrame:
    """How far the runs are apart, base model (epoch 0) and trained epochs apart: max |difference| and how many
    values are bit-identical, per score column.

    Returns:
        DataFrame[scores, quantity, n, identical, max_abs_difference], the last in nats.
    """
    rows = []
    for name, part in (("base model", differences[differences["epoch"] == 0]),
                       ("trained epochs", differences[differences["epoch"] > 0])):
        for column in (c for c in differences.columns if c.endswith("_diff")):
            values = part[column].dropna()
            rows.append({"scores": name, "quantity": column.removesuffix("_diff"), "n": len(values),
                         "identical": int((values == 0).sum()),
                         "max_abs_difference": float(values.abs().max()) if len(values) else float("nan")})
    return pd.DataFrame(rows)


def verdicts(mine: dict | None, theirs: dict | None) -> pd.DataFrame:
    """Both runs' verdict sentences and primary-endpoint numbers, side by side ("–" where a side has no stats)."""
    def numbers(report: dict | None) -> dict:
        if report is None:
            return dict.fromkeys(("primary mean (nats)", "primary one-sided p", "primary d_z", "primary endpoint",
                                  "paper comparison"), "–")
        row = (report.get("primary") or {}).get("row") or {}
        return {"primary mean (nats)": row.get("mean"), "primary one-sided p": row.get("p_one_sided"),
                "primary d_z": row.get("d_z"), "primary endpoint": controlled_verdict(report),
                "paper comparison": verdict(report)}

    return pd.DataFrame({"run": numbers(mine), "published": numbers(theirs)})


def compare_runs(run: Path, published: Path) -> dict:
    """Everything ``cqa compare`` shows: spread, per-item Δ(ΔI) of the primary endpoint, verdicts.

    Returns:
        {"run", "published", "kind", "epoch", "spread", "items", "scores", "reports", "verdicts"}: frames, paths
        and each side's stats report (None for a ``cqa score`` folder).
    """
    (mine, mine_report), (theirs, theirs_report) = read_run(run), read_run(published)
    if mine_report is None:  # a `cqa score` folder: the published run's scores at the epochs it scored
        theirs = theirs[theirs["epoch"].isin(mine["epoch"].unique())]
    declared = ((theirs_report or {}).get("primary") or {}).get("declared") or {}
    kind = declared.get("kind", "full")
    epoch = int(declared.get("epoch", (theirs_report or {}).get("headline_epoch", 0)))
    scores = score_differences(mine, theirs)
    trained = epoch in set(mine["epoch"]) and epoch > 0
    items = item_changes(mine, theirs, kind, epoch) if trained else pd.DataFrame(
        columns=["group", "item_id", "run", "published", "difference"])
    return {"run": Path(run), "published": Path(published), "kind": kind, "epoch": epoch,
            "spread": spread(scores), "items": items, "scores": scores,
            "reports": {"run": mine_report, "published": theirs_report},
            "verdicts": verdicts(mine_report, theirs_report)}


def comparison_text(result: dict, top: int = 10) -> str:
    """The comparison as a terminal reads it: spread, the items that moved most, the verdicts."""
    items = result["items"]
    with pd.option_context("display.width", 120, "display.max_columns", 10, "display.max_colwidth", 200,
                           "display.float_format", "{:.4g}".format):
        parts = [
            f"=== {result['run']}  beside  {result['published']}",
            "How far the scores are apart (nats; 'identical' counts bit-identical values):",
            result["spread"].to_string(index=False),
            f"\nΔ(ΔI) per item, {result['kind']} ΔI at epoch {result['epoch']} (the primary endpoint's), "
            f"the {min(top, len(items))} of {len(items)} items that moved most:" if len(items) else
            f"\nΔ(ΔI) per item: none to compare (the run scored no epoch {result['epoch']}).",
            items.head(top).to_string(index=False) if len(items) else "",
            "\nVerdicts side by side:",
        ]
        for label, row in result["verdicts"].iterrows():
            parts += [f"  {label}:", f"    run:       {_short(row['run'])}", f"    published: {_short(row['published'])}"]
    return "\n".join(parts)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_comparison(result: dict, out: Path) -> list[Path]:
    """``compare.csv`` (every score side by side) and ``compare.json`` (spread, items, verdicts) in ``out``."""
    out = Path(out)
    summary = {"run": str(result["run"]), "published": str(result["published"]), "kind": result["kind"],
               "epoch": result["epoch"], "spread": result["spread"].to_dict("records"),
               "items": result["items"].to_dict("records"), "verdicts": result["verdicts"].to_dict()}
    return [write_csv(out / "compare.csv", result["scores"]),
            write_json(out / "compare.json", json.loads(pd.Series(summary).to_json()))]


def machine(run: Path) -> dict:
    """The CPU facts behind a run's numbers: capability and training precision (stage 02's record, or a
    ``cqa score`` folder's environment.json, which trained nothing), malloc, commit."""
    record = Path(run) / "02_finetune" / "environment.json"
    env = json.loads((record if record.is_file() else Path(run) / "environment.json").read_text(encoding="utf-8"))
    plan = env.get("device_plan") or {}
    return {"cpu_capability": env.get("cpu_capability"), "train_dtype": plan.get("train_dtype"),
            "precision_reason": plan.get("reason"), "malloc": env.get("malloc"), "git_commit": env.get("git_commit")}


def record_reproduction(result: dict, name: str, dest: Path = REPRODUCTIONS) -> Path:
    """``<dest>/<name>.json``: one reproduction's machines, spread, primary endpoint and verdicts, compact."""
    primary = {side: ((report or {}).get("primary") or {}).get("row") or {}
               for side, report in result["reports"].items()}
    items = result["items"]["difference"]
    record = {"name": name, "published": result["published"].name, "kind": result["kind"], "epoch": result["epoch"],
              "machines": {"run": machine(result["run"]), "published": machine(result["published"])},
              "spread": result["spread"].to_dict("records"),
              "max_item_difference": float(items.abs().max()) if len(items) else None,
              "primary": {side: {k: row.get(k) for k in ("mean", "p_one_sided", "d_z")} for side, row in primary.items()},
              "verdicts": result["verdicts"].loc[["primary endpoint", "paper comparison"]].to_dict()}
    return write_json(Path(dest) / f"{name}.json", json.loads(pd.Series(record).to_json()))


def reproductions_markdown(records: list[dict]) -> str:
    """The README's table of recorded reproductions: what was bit-identical, how far the rest moved."""
    if not records:
        return "No reproduction on another machine is recorded yet (`cqa compare … --record NAME`)."
    lines = ["| reproduction | its CPU · training | published run's | base scores bit-identical | "
             "base: max \\|Δ log P\\| | base: max \\|Δ ΔI\\| | trained: max \\|Δ ΔI\\| | "
             "primary p: run / published | same verdicts |", "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        spread = pd.DataFrame(r["spread"]).set_index(["scores", "quantity"])["max_abs_difference"]
        counts = pd.DataFrame(r["spread"]).query("scores == 'base model'")[["identical", "n"]].sum()
        mine, theirs = r["machines"]["run"], r["machines"]["published"]
        p_run, p_published = (r["primary"][side].get("p_one_sided") for side in ("run", "published"))
        same = "–" if p_run is None else "yes" if {_wording(v) for v in r["verdicts"]["run"].values()} == {
            _wording(v) for v in r["verdicts"]["published"].values()} else "no"
        lines.append(
            f"| {r['name']} | {mine['cpu_capability']} · {mine['train_dtype'] or 'none'} | "
            f"{theirs['cpu_capability']} · {theirs['train_dtype']} | {int(counts['identical'])} of {int(counts['n'])} | "
            f"{fmt_number(_largest(spread, 'base model', ('logp_cond', 'logp_uncond')), '.2g')} | "
            f"{fmt_number(_largest(spread, 'base model', ('delta_i', 'delta_i_specific')), '.2g')} | "
            f"{fmt_number(_largest(spread, 'trained epochs', ('delta_i', 'delta_i_specific')), '.3g')} | "
            f"{fmt_number(p_run, '.3g')} / {fmt_number(p_published, '.3g')} | {same} |")
    return "\n".join(lines)


def _largest(spread: pd.Series, scores: str, quantities: tuple[str, ...]) -> float | None:
    values = [spread.get((scores, q)) for q in quantities]
    values = [v for v in values if v is not None and v == v]
    return max(values) if values else None


def _wording(sentence: str) -> str:
    """A verdict sentence without its numbers: two runs agree when they reach the same verdict."""
    return re.sub(r"[-+−]?\d[\d.,]*(e[-+]?\d+)?", "#", sentence)


def update_readme_reproductions(readme: Path = PROJECT_ROOT / "README.md", records_dir: Path = REPRODUCTIONS) -> Path:
    """Rewrite the README's reproductions block from every record in ``records_dir``."""
    records = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(records_dir).glob("*.json"))]
    text = replace_block(readme.read_text(encoding="utf-8"), BEGIN, END, reproductions_markdown(records), readme)
    return write_text(readme, text)
