"""The README's "Controls and robustness" block (``cqa report --grid``), generated from a grid's
notebook 06 output (``robustness.json``), its manifest's wall times and its runs' cost records.

The verdict and the arms' ranking are computed from the numbers (:mod:`cqa_utils.robustness`),
so the block never claims more than the grid showed.
"""
from __future__ import annotations

import json
from pathlib import Path

from .config import PROJECT_ROOT
from .data import GROUPS
from .report import replace_block, run_cost
from .robustness import KINDS, find_manifest, fmt_number, read_manifest, run_folder
from .runs import write_text

BEGIN, END = "<!-- robustness:begin -->", "<!-- robustness:end -->"


def robustness_markdown(report: dict) -> str:
    """The README's "Controls and robustness" section, rendered from robustness.json."""
    seeds = ", ".join(f"{arm} × {n}" for arm, n in report["seeds_per_arm"].items())
    contrast = report["contrast"]
    lines = [f"Grid `{report['grid']}` ({seeds} seeds); Δ(ΔI) at each run's headline epoch, summed nats, "
             f"{contrast['arm']} − {contrast['control']} per item averaged over seeds.", "",
             f"**Verdict.** {report['verdict']}", "",
             "| ΔI kind | group | items | HL [95% CI] | d_z | p (one-sided Wilcoxon) | mixed model: estimate, p (df) |",
             "|---|---|---|---|---|---|---|"]
    model = {(r["kind"], r["contrast"]): r for r in report["mixed_model"]}
    for r in contrast["tests"]:
        m = model.get((r["kind"], r["group"]), {})
        fit = (f"{fmt_number(m.get('estimate'))}, p = {fmt_number(m.get('p_one_sided'), '.3g')} (df {m.get('df')})"
               if m.get("estimate") is not None else "–")
        lines.append(f"| {r['kind']} | {r['group']} | {r['n_items']} | {fmt_number(r['hl'])} [{fmt_number(r['hl_ci_low'])}, "
                     f"{fmt_number(r['hl_ci_high'])}] | {fmt_number(r['d_z'])} | {fmt_number(r['p_one_sided'], '.3g')} | {fit} |")
    lines += ["", "Seed spread per arm and group (specific ΔI; min–max over seeds, one value for one seed): "
              + "; ".join(_spread_cell(s) for s in report["seed_spread"] if s["kind"] == "specific") + ".",
              *_arm_lines(report.get("arms", []), contrast["arm"], contrast["control"]),
              "", "Every number and figure: notebook 06 (`06_robustness/` beside the grid's manifest)."]
    return "\n".join(lines)


def _spread_cell(row: dict) -> str:
    """One arm × group of the seed spread: the one-sided p and d_z, a range only where seeds differ."""
    def span(low, high, spec):
        return fmt_number(low, spec) if row["n_seeds"] < 2 else f"{fmt_number(low, spec)}–{fmt_number(high, spec)}"
    return (f"{row['arm']} {row['group']} p {span(row['p_min'], row['p_max'], '.3g')}, "
            f"d_z {span(row['d_z_min'], row['d_z_max'], '+.2f')}")


def _arm_lines(arms: list[dict], arm: str, control: str) -> list[str]:
    """Every arm's own Δ(ΔI) beside the contrast: the positive control shows what a real effect on
    P(x | y) looks like at this scale, and an arm with one seed is marked exploratory."""
    if not arms:
        return []
    cells = {(a["arm"], a["group"], a["kind"]): a for a in arms}
    columns = [(group, kind) for group in GROUPS for kind in KINDS if any(k[1:] == (group, kind) for k in cells)]
    names = sorted({a["arm"] for a in arms}, key=lambda name: (name != arm, name != control, name))
    lines = ["", "Each arm's Δ(ΔI) (mean over items of the seed-averaged change, nats, 95 % bootstrap CI over items):",
             "", "| arm | seeds | " + " | ".join(f"{group} {kind}" for group, kind in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for name in names:
        seeds = max(a["n_seeds"] for a in arms if a["arm"] == name)
        shown = [cells.get((name, group, kind)) for group, kind in columns]
        lines.append(f"| {name} | {seeds}{' (exploratory)' if seeds < 2 else ''} | " + " | ".join(
            f"{fmt_number(c['mean'])} [{fmt_number(c['ci_low'])}, {fmt_number(c['ci_high'])}]" if c else "–" for c in shown) + " |")
    ranking = _ranking(arms, arm)
    return [*lines, "", ranking] if ranking else lines


def _ranking(arms: list[dict], arm: str, group: str = "literary", kind: str = "specific") -> str:
    """The arms ordered by their literary specific Δ(ΔI), and whether the paper's arm moves it most:
    a reading of the table above (exploratory where an arm has one seed), computed, not typed."""
    cells = sorted((a for a in arms if (a["group"], a["kind"]) == (group, kind) and a["mean"] is not None),
                   key=lambda a: -a["mean"])
    if len(cells) < 2 or arm not in {a["arm"] for a in cells}:
        return ""
    order = ", ".join(f"{a['arm']} {fmt_number(a['mean'])}" for a in cells)
    mine = next(a for a in cells if a["arm"] == arm)
    higher = cells[:cells.index(mine)]
    if not higher:
        return f"Ranked by {group} {kind} Δ(ΔI): {order}; the paper's arm ({arm}) moves it most."
    clear = [a["arm"] for a in higher if a["ci_low"] is not None and mine["ci_high"] is not None
             and a["ci_low"] > mine["ci_high"]]
    apart = (f"the 95 % CI of {', '.join(clear)} lies wholly above {arm}'s" if clear
             else f"the 95 % CIs of the arms above {arm} overlap its own")
    return (f"Ranked by {group} {kind} Δ(ΔI): {order}. The largest rise comes from {higher[0]['arm']}, not from the "
            f"paper's arm ({arm}); {apart} (a reading of the table, exploratory where an arm has one seed).")


def wall_time_line(manifest: dict) -> str:
    """Measured time of a grid's runs (``wall_s`` of each finished run in the manifest), in total
    and per run; a resumed run is marked, since its time covers only the session that finished it."""
    timed = [r for r in manifest["runs"] if r.get("status") == "done" and r.get("wall_s")]
    done = sum(r.get("status") == "done" for r in manifest["runs"])
    if not timed:
        return f"{done} of {len(manifest['runs'])} runs finished; no wall times recorded."
    walls = sorted(r["wall_s"] for r in timed)
    per_run = ", ".join(f"`{r['name']}` {r['wall_s'] / 60:.0f} min{' (resumed)' if r.get('resumed') else ''}"
                        for r in timed)
    note = (" A resumed run's time covers only the session that finished it."
            if any(r.get("resumed") for r in timed) else "")
    return (f"{done} of {len(manifest['runs'])} runs finished; measured wall time {sum(walls) / 3600:.1f} h for "
            f"{len(walls)} runs (median {walls[len(walls) // 2] / 60:.0f} min per run): {per_run}.{note}")


def malloc_line(runs) -> str:
    """Stage 02's peak memory and the study's wall/bound ratio of a grid's finished runs, given
    their folders, grouped by the malloc each run's stage 02 ran under (:func:`run_cost`)."""
    by_malloc: dict[str, list[dict]] = {}
    for cost in filter(None, map(run_cost, map(Path, runs))):
        by_malloc.setdefault(cost["malloc"], []).append(cost)
    if not by_malloc:
        return ""

    def span(values, fmt):
        values = sorted(v for v in values if v is not None)
        return "–" if not values else fmt.format(values[0]) + ("" if len(values) == 1 else "–" + fmt.format(values[-1]))

    parts = [f"{name} ({len(rows)} run{'s' if len(rows) > 1 else ''}): peak {span([c['peak_gib'] for c in rows], '{:.1f}')} "
             f"GiB, wall/bound {span([c['ratio'] for c in rows], '{:.2f}')}" for name, rows in sorted(by_malloc.items())]
    return ("Per run, by the malloc stage 02 ran under: stage 02's peak RSS (train_log.csv) and the run's wall time "
            "against this machine's bound (efficiency.json; it rises with whatever else shared the cores): "
            + "; ".join(parts) + ".")


def publish_grid(grid_file: Path | str, readme: Path = PROJECT_ROOT / "README.md") -> Path:
    """Regenerate the README's "Controls and robustness" block from a grid's notebook 06 output."""
    from .sweep import load_grid

    grid = load_grid(grid_file)
    manifest_path = find_manifest(grid.name)
    manifest = read_manifest(manifest_path)
    candidates = [manifest_path.parent / "06_robustness", manifest_path.with_suffix("") / "06_robustness"]
    found = next((c / "robustness.json" for c in candidates if (c / "robustness.json").is_file()), None)
    if found is None:
        raise FileNotFoundError(f"no notebook 06 output for grid {grid.name!r} in {[str(c) for c in candidates]}; "
                                f"run notebook 06 (cqa sweep runs it when the grid is finished)")
    machine = malloc_line(run_folder(manifest_path, grid.name, r["name"]) for r in manifest["runs"] if r["status"] == "done")
    block = "\n\n".join(filter(None, [robustness_markdown(json.loads(found.read_text(encoding="utf-8"))),
                                       wall_time_line(manifest), machine]))
    text = replace_block(readme.read_text(encoding="utf-8"), BEGIN, END, block, readme)
    return write_text(readme, text)
