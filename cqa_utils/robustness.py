"""Robustness across a grid of runs (notebook 06): is the effect the CoT's content, or seed noise?

A grid (``cqa sweep``) trains several arms (:mod:`cqa_utils.arms`) with several seeds, each an
ordinary run. This module reads the grid's manifest, puts every finished run's stage-03
scores into one frame, and asks whether the paper's arm (``cot``) raises the item-specific
ΔI of literary text more than the same targets with the passage–reasoning link broken
(``shuffled_cot``), beyond what reseeding alone moves. Per-run Δ(ΔI) comes from
:func:`cqa_utils.analysis.paired_differences`, the tests from :mod:`cqa_utils.stats`; this
module only arranges runs, seeds and arms. Kinds: ``full`` (the paper's raw ΔI, column
``delta_i``) and ``specific`` (``delta_i_specific``), summed nats, intact variant only.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .analysis import jsonable, kinds_scored, paired_differences, summary_row
from .config import PROJECT_ROOT, config_from_dict
from .data import GROUPS
from .publish import published_manifest
from .runs import refuse_published, saved_config, write_csv, write_json
from .stats import bootstrap_ci_mean, cohens_dz, headline_epoch, hodges_lehmann, wilcoxon_one_sided

KINDS = ("full", "specific")
ARM, CONTROL = "cot", "shuffled_cot"  # the contrast: the paper's arm minus its shuffled control
SCORES = Path("03_logprobs") / "scores.csv"
NAN = float("nan")


def _resolve(path: str | Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def find_manifest(grid: str, results_dir: str | Path = "results", reference_dir: str | Path = "reference") -> Path:
    """``results/sweeps/<grid>/sweep.json`` if this machine ran the grid, else the published copy."""
    candidates = [_resolve(results_dir) / "sweeps" / grid / "sweep.json", published_manifest(grid, _resolve(reference_dir))]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"no manifest for grid {grid!r}: looked for {[str(p) for p in candidates]}; "
                            f"run `cqa sweep --grid configs/sweeps/{grid}.yaml` first")


def read_manifest(path: Path) -> dict:
    """The manifest, checked for the fields this module needs (a clear error names the file)."""
    import json

    manifest = json.loads(Path(path).read_text(encoding="utf-8"))
    runs = manifest.get("runs") if isinstance(manifest, dict) else None
    if not isinstance(runs, list):
        raise ValueError(f"{path}: expected an object with a 'runs' list")
    for i, run in enumerate(runs):
        missing = [k for k in ("name", "status") if not isinstance(run, dict) or k not in run]
        if missing:
            raise ValueError(f"{path}: runs[{i}] lacks {missing}")
    return manifest


def run_folder(manifest: Path, grid: str, name: str, results_dir: str | Path = "results",
               reference_dir: str | Path = "reference") -> Path:
    """Where one of a manifest's runs sits. A published manifest's runs are in ``reference/``;
    this machine's manifest may mix runs trained here (``results/<run>/``) with runs it found
    published by an earlier session (``reference/<run>/``), as the sweep's own resume does."""
    fresh = Path(manifest) == _resolve(results_dir) / "sweeps" / grid / "sweep.json"
    local = _resolve(results_dir) / name
    return local if fresh and local.is_dir() else _resolve(reference_dir) / name


def grid_runs(grid: str, results_dir: str | Path = "results", reference_dir: str | Path = "reference") -> pd.DataFrame:
    """Every finished run's scores.csv in one long frame with ``run, arm, seed, headline_epoch`` first.

    Runs are found by :func:`run_folder`. Arm,
    seed and headline epoch are read from the run's saved stage-03 config, not from its name,
    so a renamed run cannot be counted under the wrong arm. Runs not ``done`` are left out.
    """
    path = find_manifest(grid, results_dir, reference_dir)
    frames = []
    for run in read_manifest(path)["runs"]:
        if run["status"] != "done":
            continue
        scores_path = run_folder(path, grid, run["name"], results_dir, reference_dir) / SCORES
        if not scores_path.is_file():
            raise FileNotFoundError(f"{path}: run {run['name']!r} is marked done but {scores_path} is missing")
        cfg = config_from_dict(saved_config(scores_path.parent), source=str(scores_path.parent / "config.yaml"))
        scores = pd.read_csv(scores_path)
        epoch = headline_epoch(cfg.stats.headline_epoch, scores["epoch"])
        frames.append(scores.assign(run=run["name"], arm=cfg.train.arm, seed=cfg.run.seed, headline_epoch=epoch))
    if not frames:
        raise ValueError(f"{path}: no run of grid {grid!r} is done yet")
    frame = pd.concat(frames, ignore_index=True)
    first = ["run", "arm", "seed", "headline_epoch"]
    return frame[first + [c for c in frame.columns if c not in first]]


def item_deltas(runs: pd.DataFrame, kinds=KINDS, measure: str = "sum") -> pd.DataFrame:
    """Δ(ΔI) = ΔI(headline epoch) − ΔI(epoch 0) per run, kind and item (variant x).

    Returns DataFrame[run, arm, seed, kind, group, item_id, diff]; a kind a run did not score
    is left out for that run, a headline epoch without that kind is an error naming the run.
    """
    rows = []
    for (run, arm, seed, epoch), scores in runs.groupby(["run", "arm", "seed", "headline_epoch"], sort=True):
        for kind in (k for k in kinds if k in kinds_scored(scores)):
            diffs = paired_differences(scores, measure, kind=kind)
            at = diffs[diffs["epoch"] == epoch]
            if at.empty:
                raise ValueError(f"run {run!r}: {kind} ΔI was not scored at its headline epoch {epoch}")
            rows.append(at.drop(columns="epoch").assign(run=run, arm=arm, seed=int(seed), kind=kind))
    columns = ["run", "arm", "seed", "kind", "group", "item_id", "diff"]
    return pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)


def seeds_per_arm(deltas: pd.DataFrame) -> dict[str, int]:
    """How many seeds each arm has (distinct runs' seeds)."""
    return {arm: int(n) for arm, n in deltas.groupby("arm")["seed"].nunique().items()}


def seed_summaries(deltas: pd.DataFrame, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """One row per kind × arm × group × seed: n, mean Δ(ΔI) and its CI, one-sided Wilcoxon p, d_z, HL."""
    keep = ["n", "mean", "ci_low", "ci_high", "p_one_sided", "d_z", "hl", "note"]
    rows = []
    for (kind, arm, group, run_seed, run), sub in deltas.groupby(["kind", "arm", "group", "seed", "run"], sort=True):
        row = summary_row(sub["diff"].to_numpy(float), n_boot, seed, level, equivalence_dz=0.3)
        rows.append({"kind": kind, "arm": arm, "group": group, "seed": run_seed, "run": run,
                     **{k: row[k] for k in keep}})
    return pd.DataFrame(rows)


def seed_means(deltas: pd.DataFrame) -> pd.DataFrame:
    """Δ(ΔI) per kind × arm × group × item, averaged over the arm's seeds (column ``diff``)."""
    return deltas.groupby(["kind", "arm", "group", "item_id"], as_index=False).agg(
        diff=("diff", "mean"), n_seeds=("seed", "nunique"))


def arm_summaries(deltas: pd.DataFrame, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Per kind × arm × group: mean over items of the seed-averaged Δ(ΔI), bootstrap CI over items."""
    rows = []
    for (kind, arm, group), sub in seed_means(deltas).groupby(["kind", "arm", "group"], sort=True):
        d = sub["diff"].to_numpy(float)
        low, high = bootstrap_ci_mean(d, n_boot=n_boot, seed=seed, level=level)
        rows.append({"kind": kind, "arm": arm, "group": group, "n_seeds": int(sub["n_seeds"].max()),
                     "n_items": int(d.size), "mean": float(d.mean()), "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


def seed_spread(per_seed: pd.DataFrame) -> pd.DataFrame:
    """How much reseeding alone moves p and d_z: min / median / max per kind × arm × group."""
    grouped = per_seed.groupby(["kind", "arm", "group"], sort=True)
    spread = grouped.agg(n_seeds=("seed", "nunique"), p_min=("p_one_sided", "min"),
                         p_median=("p_one_sided", "median"), p_max=("p_one_sided", "max"),
                         d_z_min=("d_z", "min"), d_z_median=("d_z", "median"), d_z_max=("d_z", "max"))
    spread["seeds_p_below_05"] = grouped["p_one_sided"].apply(lambda p: int((p < 0.05).sum()))
    return spread.reset_index()


def item_contrasts(deltas: pd.DataFrame, arm: str = ARM, control: str = CONTROL) -> pd.DataFrame:
    """Per kind × group × item: seed-averaged Δ(ΔI) of ``arm`` minus that of ``control`` (``contrast``).

    Averaging over seeds first makes each item one paired observation, so the test below
    is across items (the benchmark's population) with seed noise shrunk, not counted as n.
    """
    means = seed_means(deltas)
    wide = means[means["arm"].isin([arm, control])].pivot_table(
        index=["kind", "group", "item_id"], columns="arm", values="diff")
    if not {arm, control} <= set(wide.columns):
        return pd.DataFrame(columns=["kind", "group", "item_id", arm, control, "contrast"])
    wide = wide[[arm, control]].dropna()
    return wide.assign(contrast=wide[arm] - wide[control]).reset_index().rename_axis(columns=None)


def contrast_tests(contrasts: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per kind × group: one-sided Wilcoxon (contrast > 0), Hodges–Lehmann with its CI, d_z, mean."""
    rows = []
    for (kind, group), sub in contrasts.groupby(["kind", "group"], sort=True):
        d = sub["contrast"].to_numpy(float)
        test = wilcoxon_one_sided(d)
        hl, low, high = hodges_lehmann(d, level)
        rows.append({"kind": kind, "group": group, "n_items": int(d.size), "mean": float(d.mean()), "hl": hl,
                     "hl_ci_low": low, "hl_ci_high": high, "d_z": cohens_dz(d), "p_one_sided": test.p,
                     "note": test.note})
    table = pd.DataFrame(rows, columns=["kind", "group", "n_items", "mean", "hl", "hl_ci_low", "hl_ci_high",
                                        "d_z", "p_one_sided", "note"])
    order = {g: i for i, g in enumerate(GROUPS)}
    return table.sort_values(["kind", "group"], key=lambda c: c.map(order) if c.name == "group" else c,
                             ignore_index=True)


def mixed_model(deltas: pd.DataFrame, kind: str = "specific", arm: str = ARM, control: str = CONTROL,
                level: float = 0.95) -> pd.DataFrame:
    """All runs of ``arm`` and ``control`` at once: Δ(ΔI) ~ arm × group cell means + item + seed
    + run random intercepts (REML). Other arms stay out: a single run of one would be a cell
    whose mean cannot be told from its run shift.

    Why a linear mixed model and not a permutation of arm labels within items: the question
    is whether the arm effect beats seed noise, and seed noise moves a whole run (every
    item of it) at once. Permuting labels item by item treats that shared run shift as
    independent per item and makes p too small exactly when seeds differ; permuting whole
    runs respects it but 3 + 3 runs have only 20 relabellings, so p can never reach 0.05.
    The mixed model keeps the run as a unit (run and seed variance components, crossed with
    items) and says how large each variance is. Its p uses a t reference with between-run
    ("containment") df = runs − arms rather than statsmodels' normal z, which is liberal with
    a handful of runs; for the within-run literary − factual difference this df is
    conservative. The verdict rests on the paired Wilcoxon; this model is the cross-check.

    Returns one row per contrast (``<arm> − <control>`` in literary, in factual, and
    literary − factual) with estimate, se, df, one-sided p (> 0), CI and the variance
    components (item, seed, run, residual); NaN with a note where the grid is too small.
    """
    import statsmodels.formula.api as smf
    from scipy import stats

    data = deltas[(deltas["kind"] == kind) & deltas["arm"].isin([arm, control])].reset_index(drop=True)
    data = data.assign(cell=data["arm"] + "|" + data["group"], item=data["group"] + ":" + data["item_id"].astype(str))
    names = {"literary": (f"{arm}|literary", f"{control}|literary"), "factual": (f"{arm}|factual", f"{control}|factual")}
    n_runs, n_arms = data["run"].nunique(), data["arm"].nunique()
    df = n_runs - n_arms
    base = {"kind": kind, "n_obs": len(data), "n_runs": n_runs, "df": df}
    contrasts = ("literary", "factual", "literary − factual")
    cells, per_arm = set(data["cell"]), data.groupby("arm")["run"].nunique()
    if min(per_arm.get(arm, 0), per_arm.get(control, 0)) < 2 or not all(c in cells for p in names.values() for c in p):
        note = (f"needs ≥ 2 runs of each of {arm} and {control} (one run's mean cannot be told from its run "
                f"shift) and both groups; has {per_arm.get(arm, 0)} + {per_arm.get(control, 0)}")
        return pd.DataFrame([base | {"contrast": c, "estimate": NAN, "note": note} for c in contrasts])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit, failed = _fit_reml(smf.mixedlm(
            "diff ~ 0 + C(cell)", data, groups=np.ones(len(data)), re_formula="0",
            vc_formula={"item": "0 + C(item)", "seed": "0 + C(seed)", "run": "0 + C(run)"}))
    if fit is None:
        return pd.DataFrame([base | {"contrast": c, "estimate": NAN, "note": f"not fitted: {failed}"} for c in contrasts])
    params = {name[len("C(cell)["):-1]: value for name, value in fit.fe_params.items()}
    order = list(params)
    cov = fit.cov_params().iloc[: len(order), : len(order)].to_numpy()
    variance = dict(zip(fit.model.exog_vc.names, fit.vcomp)) | {"residual": fit.scale}
    note = "; ".join([failed] * bool(failed) + sorted({str(w.message).splitlines()[0] for w in caught}))
    rows = []
    for contrast in contrasts:
        weights = np.zeros(len(order))
        for group, sign in (("literary", 1.0), ("factual", -1.0)) if " − " in contrast else ((contrast, 1.0),):
            a, b = names[group]
            weights[order.index(a)] += sign
            weights[order.index(b)] -= sign
        estimate = float(weights @ np.array([params[c] for c in order]))
        variance_of_estimate = float(weights @ cov @ weights)
        if not 0 < variance_of_estimate < math.inf:
            rows.append(base | {"contrast": contrast, "estimate": estimate, "note": (
                f"no standard error: its variance is {variance_of_estimate:.3g} (a variance component at 0)")})
            continue
        se = math.sqrt(variance_of_estimate)
        half = stats.t.ppf(0.5 + level / 2, df) * se
        rows.append(base | {"contrast": contrast, "estimate": estimate, "se": se, "t": estimate / se,
                            "p_one_sided": float(stats.t.sf(estimate / se, df)), "ci_low": estimate - half,
                            "ci_high": estimate + half, **{f"var_{k}": float(v) for k, v in variance.items()},
                            "converged": bool(fit.converged), "note": note})
    return pd.DataFrame(rows)


def _fit_reml(model, methods=("lbfgs", "powell")):
    """REML fit with statsmodels' optimizer fallback; returns (fit or None, what failed).

    statsmodels moves to its next optimizer only when one does not converge; with a handful
    of runs the seed and run variances sit at 0 and lbfgs can instead raise on a singular
    matrix (seen on the controls grid with 2 + 1 runs), so an error starts again from the
    next optimizer in the list."""
    failed = []
    for i in range(len(methods)):
        try:
            return model.fit(reml=True, method=list(methods[i:])), "; ".join(failed)
        except np.linalg.LinAlgError as err:
            failed.append(f"{' → '.join(methods[i:])} raised {err}")
    return None, "; ".join(failed)


def mixed_models(deltas: pd.DataFrame, kinds=KINDS, level: float = 0.95) -> pd.DataFrame:
    """:func:`mixed_model` for every kind the grid scored, one frame."""
    return pd.concat([mixed_model(deltas, k, level=level) for k in kinds if k in set(deltas["kind"])],
                     ignore_index=True)


def verdict(tests: pd.DataFrame, seeds: dict[str, int], arm: str = ARM, control: str = CONTROL) -> str:
    """One sentence from the numbers: an appreciation-specific effect is shown, not shown (why), or too few runs.

    Shown only if the literary specific contrast ``arm − control`` (seed-averaged, paired
    across items) has one-sided Wilcoxon p < 0.05 and a Hodges–Lehmann CI above 0, and its
    HL estimate exceeds the factual one.
    """
    n_arm, n_control = seeds.get(arm, 0), seeds.get(control, 0)
    if n_arm < 2 or n_control < 2:
        return (f"An appreciation-specific effect: too few runs — the grid has {n_arm} seed(s) of {arm} and "
                f"{n_control} of {control}; at least 2 of each are needed.")
    rows = {r["group"]: r for r in tests[tests["kind"] == "specific"].to_dict("records")}
    lit, fac = rows.get("literary"), rows.get("factual")
    if lit is None or fac is None:
        return "An appreciation-specific effect: not shown — the specific ΔI was not scored for both groups."
    numbers = (f"literary specific Δ(ΔI), {arm} − {control} over {n_arm} + {n_control} seeds: HL {fmt_number(lit['hl'])} "
               f"nats [{fmt_number(lit['hl_ci_low'])}, {fmt_number(lit['hl_ci_high'])}], one-sided Wilcoxon p = "
               f"{fmt_number(lit['p_one_sided'], '.3g')}, n = {lit['n_items']} items; factual HL {fmt_number(fac['hl'])}")
    reasons = []
    if not lit["p_one_sided"] < 0.05:
        reasons.append("the literary contrast is not significant (p ≥ 0.05)")
    if not lit["hl_ci_low"] > 0:
        reasons.append("its Hodges–Lehmann CI reaches 0")
    if not lit["hl"] > fac["hl"]:
        reasons.append("it is not larger than the factual contrast")
    if reasons:
        return f"An appreciation-specific effect: not shown — {'; '.join(reasons)} ({numbers})."
    return f"An appreciation-specific effect: shown ({numbers})."


def robustness_report(grid: str, manifest: Path, deltas: pd.DataFrame, tests: pd.DataFrame,
                      model: pd.DataFrame, spread: pd.DataFrame, arms: pd.DataFrame) -> dict:
    """What notebook 06 saves as robustness.json: the verdict and the numbers behind it (NaN → None).
    The manifest is named relative to the project, so the published copy holds no machine's paths."""
    seeds = seeds_per_arm(deltas)
    manifest = _resolve(manifest)
    shown = manifest.relative_to(PROJECT_ROOT) if manifest.is_relative_to(PROJECT_ROOT) else manifest
    return jsonable({"grid": grid, "manifest": str(shown), "verdict": verdict(tests, seeds),
                     "seeds_per_arm": seeds, "runs": sorted(deltas["run"].unique()),
                     "n_items": deltas.groupby("group")["item_id"].nunique().to_dict(),
                     "contrast": {"arm": ARM, "control": CONTROL, "tests": tests.to_dict("records")},
                     "mixed_model": model.to_dict("records"), "seed_spread": spread.to_dict("records"),
                     "arms": arms.to_dict("records")})


def fmt_number(value, spec: str = "+.2f") -> str:
    """A number for prose and tables; None or NaN (a test too small to run) as "–"."""
    return "–" if value is None or value != value else format(value, spec)


def output_dir(grid: str, results_dir: str | Path = "results", out_dir: str | Path = "") -> Path:
    """Where notebook 06 writes: ``out_dir`` if given, else ``<results_dir>/sweeps/<grid>/06_robustness``;
    never inside the published runs."""
    out = _resolve(out_dir) if str(out_dir) else _resolve(results_dir) / "sweeps" / grid / "06_robustness"
    refuse_published(out, "notebook 06's outputs")
    return out


def write_outputs(out: Path, tables: dict[str, pd.DataFrame], report: dict) -> dict[str, Path]:
    """``<name>.csv`` per table and ``robustness.json`` (each written atomically); paths by name."""
    paths = {name: write_csv(out / f"{name}.csv", frame) for name, frame in tables.items()}
    return paths | {"report": write_json(out / "robustness.json", report)}
