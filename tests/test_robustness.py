"""Notebook 06's analyses on synthetic grids written to disk (no model needed)."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from cqa_utils import grid_report as gr
from cqa_utils import robustness as rb
from cqa_utils.config import load_config

N_ITEMS = 12  # shrunk from the benchmark's 48 per group: enough for the tests to see a planted effect
SEEDS = (1, 2, 3)
HEADLINE = 2


def write_run(root, name, arm, seed, effect, rng, item_effects, headline=HEADLINE):
    """results/<name>/03_logprobs/{scores.csv, config.yaml}; the arm's literary specific ΔI rises by `effect`."""
    stage = root / name / "03_logprobs"
    stage.mkdir(parents=True)
    cfg = load_config("smoke", {"train.arm": arm, "run.seed": seed, "run.name": name, "stats.headline_epoch": headline})
    (stage / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    run_shift = rng.normal(0, 0.2)  # seed noise: one shift for every item of the run
    rows = []
    for group in ("literary", "factual"):
        for i in range(N_ITEMS):
            item = f"p{i:02d}"
            for variant, level in (("x", 5.0), ("x_degraded", 3.0)):
                for epoch in range(headline + 1):
                    rise = (effect if group == "literary" else 0.0) * epoch / headline + run_shift * (epoch > 0)
                    full = level + item_effects[group, item] + rise + rng.normal(0, 0.3)
                    specific = 0.5 * level + item_effects[group, item] + rise + rng.normal(0, 0.3)
                    scored = epoch in (0, headline)  # controls are scored at the base and the headline epoch only
                    rows.append({"item_id": item, "group": group, "variant": variant, "epoch": epoch,
                                 "pair_id": item, "n_tokens": 50, "delta_i": full, "delta_i_mean": full / 50,
                                 "delta_i_specific": specific if scored else np.nan,
                                 "delta_i_specific_mean": specific / 50 if scored else np.nan})
    pd.DataFrame(rows).to_csv(stage / "scores.csv", index=False)


def write_grid(root, grid="g", effect=1.5, seeds=SEEDS, seed=0, extra_runs=()):
    """A manifest and runs of cot and shuffled_cot × seeds under root/results; cot's planted effect is `effect`."""
    rng = np.random.default_rng(seed)
    item_effects = {(g, f"p{i:02d}"): rng.normal(0, 1) for g in ("literary", "factual") for i in range(N_ITEMS)}
    results = root / "results"
    runs = []
    for arm, arm_effect in (("cot", effect), ("shuffled_cot", 0.0)):
        for s in seeds:
            # names deliberately not "<arm>-s<seed>", so the arm must come from the config
            name = f"{grid}-run{len(runs)}"
            write_run(results, name, arm, s, arm_effect, rng, item_effects)
            runs.append({"name": name, "overrides": {"train.arm": arm, "run.seed": s}, "status": "done", "wall_s": 1.0})
    runs += list(extra_runs)
    manifest = results / "sweeps" / grid / "sweep.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"grid": grid, "config": "smoke", "runs": runs}), encoding="utf-8")
    return results


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    results = write_grid(root, extra_runs=[{"name": "g-pending", "overrides": {}, "status": "pending"}])
    runs = rb.grid_runs("g", results, root / "reference")
    return results, runs, rb.item_deltas(runs)


@pytest.fixture(scope="module")
def null(tmp_path_factory):
    root = tmp_path_factory.mktemp("null")
    results = write_grid(root, effect=0.0, seed=1)
    return rb.item_deltas(rb.grid_runs("g", results, root / "reference"))


def test_finished_runs_load_with_arm_and_seed_from_their_saved_config(planted):
    _, runs, _ = planted
    table = runs[["run", "arm", "seed", "headline_epoch"]].drop_duplicates().sort_values("run")
    assert table["run"].tolist() == [f"g-run{i}" for i in range(6)]  # the pending run is left out
    assert table["arm"].tolist() == ["cot"] * 3 + ["shuffled_cot"] * 3
    assert table["seed"].tolist() == [1, 2, 3, 1, 2, 3] and set(table["headline_epoch"]) == {HEADLINE}


def test_the_published_manifest_is_read_when_the_grid_was_not_run_here(tmp_path):
    reference = write_grid(tmp_path)  # the same layout, moved to reference/
    (reference / "sweeps" / "g" / "sweep.json").rename(reference / "sweeps" / "g.json")
    assert rb.find_manifest("g", tmp_path / "nowhere", reference) == reference / "sweeps" / "g.json"
    assert rb.grid_runs("g", tmp_path / "nowhere", reference)["run"].nunique() == 6
    with pytest.raises(FileNotFoundError, match="no manifest for grid 'h'"):
        rb.find_manifest("h", tmp_path / "nowhere", reference)


def test_a_local_manifest_finds_runs_an_earlier_session_published(tmp_path):
    results = write_grid(tmp_path)  # this machine's manifest; two of its runs now live only in reference/
    reference = tmp_path / "reference"
    reference.mkdir()
    for name in ("g-run0", "g-run3"):
        (results / name).rename(reference / name)
    assert rb.run_folder(results / "sweeps" / "g" / "sweep.json", "g", "g-run0", results, reference) == reference / "g-run0"
    assert rb.run_folder(results / "sweeps" / "g" / "sweep.json", "g", "g-run1", results, reference) == results / "g-run1"
    assert sorted(rb.grid_runs("g", results, reference)["run"].unique()) == [f"g-run{i}" for i in range(6)]


def test_a_done_run_without_scores_is_an_error_naming_it(tmp_path):
    results = write_grid(tmp_path, extra_runs=[{"name": "g-lost", "overrides": {}, "status": "done"}])
    with pytest.raises(FileNotFoundError, match="run 'g-lost' is marked done"):
        rb.grid_runs("g", results, tmp_path)


def test_delta_delta_i_per_item_is_headline_minus_base_of_the_intact_text(planted):
    results, _, deltas = planted
    scores = pd.read_csv(results / "g-run4" / "03_logprobs" / "scores.csv")
    x = scores[(scores["variant"] == "x") & (scores["group"] == "factual") & (scores["item_id"] == "p03")]
    by_epoch = x.set_index("epoch")
    for kind, column in (("full", "delta_i"), ("specific", "delta_i_specific")):
        got = deltas[(deltas["run"] == "g-run4") & (deltas["kind"] == kind) & (deltas["group"] == "factual")
                     & (deltas["item_id"] == "p03")]["diff"]
        assert got.tolist() == pytest.approx([by_epoch.loc[HEADLINE, column] - by_epoch.loc[0, column]])
    assert len(deltas) == 6 * 2 * 2 * N_ITEMS  # runs × kinds × groups × items


def test_every_seed_is_summarized_and_its_spread_reported(planted):
    _, _, deltas = planted
    per_seed = rb.seed_summaries(deltas, n_boot=200)
    assert len(per_seed) == 2 * 2 * 2 * 3 and set(per_seed["n"]) == {N_ITEMS}
    spread = rb.seed_spread(per_seed).set_index(["kind", "arm", "group"])
    cot = spread.loc[("specific", "cot", "literary")]
    assert cot["n_seeds"] == 3 and cot["seeds_p_below_05"] == 3 and cot["d_z_min"] > 1
    assert cot["p_min"] <= cot["p_median"] <= cot["p_max"]


def test_the_arm_contrast_finds_the_planted_effect_and_not_a_null_one(planted, null):
    found = rb.contrast_tests(rb.item_contrasts(planted[2])).set_index(["kind", "group"])
    lit = found.loc[("specific", "literary")]
    assert lit["n_items"] == N_ITEMS and lit["p_one_sided"] < 0.01 and lit["hl_ci_low"] > 0
    assert lit["hl"] == pytest.approx(1.5, abs=0.5)
    assert found.loc[("specific", "factual"), "p_one_sided"] > 0.05
    none = rb.contrast_tests(rb.item_contrasts(null)).set_index(["kind", "group"])
    assert none.loc[("specific", "literary"), "p_one_sided"] > 0.05


def test_the_all_runs_model_finds_the_planted_effect_and_not_a_null_one(planted, null):
    fit = rb.mixed_model(planted[2], "specific").set_index("contrast")
    assert fit.loc["literary", "df"] == 4 and fit["converged"].all()  # df: 6 runs − 2 arms
    assert fit.loc["literary", "p_one_sided"] < 0.01 and fit.loc["literary", "ci_low"] > 0
    assert fit.loc["literary", "estimate"] == pytest.approx(1.5, abs=0.5)
    assert fit.loc["literary − factual", "p_one_sided"] < 0.01
    assert fit.loc["factual", "p_one_sided"] > 0.05
    assert rb.mixed_model(null, "specific").set_index("contrast").loc["literary", "p_one_sided"] > 0.05


def test_the_all_runs_model_leaves_out_other_arms_and_waits_for_two_runs_of_each(planted):
    deltas = planted[2]
    one_control = deltas[~((deltas["arm"] == "shuffled_cot") & (deltas["seed"] != 1))]
    fit = rb.mixed_model(one_control, "specific")
    assert fit["estimate"].isna().all() and "≥ 2 runs of each of cot and shuffled_cot" in fit["note"][0]
    extra = deltas[deltas["run"] == deltas["run"].iloc[0]].assign(run="g-verdict", arm="verdict_only", seed=9)
    with_extra = rb.mixed_model(pd.concat([deltas, extra]), "specific").set_index("contrast")
    alone = rb.mixed_model(deltas, "specific").set_index("contrast")
    assert with_extra.loc["literary", "df"] == 4 and with_extra.loc["literary", "estimate"] == pytest.approx(
        alone.loc["literary", "estimate"])


def test_the_published_controls_runs_that_stopped_notebook_06_give_a_reason_and_a_fallback_fit(tmp_path):
    """2 cot + 1 shuffled_cot of the real grid: lbfgs raised LinAlgError on its specific ΔI and stopped notebook 06."""
    import numpy as np
    import statsmodels.formula.api as smf

    runs = ["controls-cot-s1", "controls-shuffled_cot-s1", "controls-cot-s2"]
    for name in runs:
        (tmp_path / name).symlink_to(rb.PROJECT_ROOT / "reference" / name)
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "c.json").write_text(json.dumps({"grid": "c", "runs": [
        {"name": n, "status": "done"} for n in runs]}))
    deltas = rb.item_deltas(rb.grid_runs("c", tmp_path / "none", tmp_path))
    model = rb.mixed_models(deltas)  # one shuffled_cot run: no estimate, and the reason
    assert set(model["kind"]) == {"full", "specific"} and model["estimate"].isna().all()
    assert model["note"].str.contains("has 2 \\+ 1").all()
    data = deltas[deltas["kind"] == "specific"].reset_index(drop=True)
    data = data.assign(cell=data["arm"] + "|" + data["group"], item=data["group"] + ":" + data["item_id"])
    fit, failed = rb._fit_reml(smf.mixedlm("diff ~ 0 + C(cell)", data, groups=np.ones(len(data)), re_formula="0",
                                           vc_formula={c: f"0 + C({c})" for c in ("item", "seed", "run")}))
    assert fit is not None and np.isfinite(fit.fe_params).all()
    assert failed in ("", "lbfgs → powell raised Singular matrix")  # the latter on the machine it was found on


def test_the_verdict_follows_the_numbers(planted, null):
    shown = rb.verdict(rb.contrast_tests(rb.item_contrasts(planted[2])), rb.seeds_per_arm(planted[2]))
    assert shown.startswith("An appreciation-specific effect: shown")
    not_shown = rb.verdict(rb.contrast_tests(rb.item_contrasts(null)), rb.seeds_per_arm(null))
    assert not_shown.startswith("An appreciation-specific effect: not shown — the literary contrast is not significant")
    one_seed = null[null["seed"] == 1]
    few = rb.verdict(rb.contrast_tests(rb.item_contrasts(one_seed)), rb.seeds_per_arm(one_seed))
    assert "too few runs" in few and "1 seed(s) of cot" in few
    # significant for literary, but no larger than for factual: not shown, with that reason
    tests = rb.contrast_tests(rb.item_contrasts(planted[2]))
    tests.loc[(tests["kind"] == "specific") & (tests["group"] == "factual"), "hl"] = 10.0
    assert "not larger than the factual contrast" in rb.verdict(tests, rb.seeds_per_arm(planted[2]))


def test_the_report_renders_the_readme_section(planted, tmp_path):
    results, _, deltas = planted
    tests = rb.contrast_tests(rb.item_contrasts(deltas))
    spread = rb.seed_spread(rb.seed_summaries(deltas, n_boot=200))
    arms = rb.arm_summaries(deltas, n_boot=200)
    report = rb.robustness_report("g", results / "sweeps/g/sweep.json", deltas, tests, rb.mixed_models(deltas), spread,
                                  arms)
    paths = rb.write_outputs(tmp_path, {"contrast": tests}, report)
    saved = json.loads(paths["report"].read_text())
    assert saved["seeds_per_arm"] == {"cot": 3, "shuffled_cot": 3}
    assert saved["manifest"] == str(results / "sweeps/g/sweep.json")     # outside the project: kept whole
    inside = rb.robustness_report("g", rb.PROJECT_ROOT / "results/sweeps/g/sweep.json", deltas, tests,
                                  rb.mixed_models(deltas), spread, arms)
    assert inside["manifest"] == "results/sweeps/g/sweep.json"           # inside: no machine path published
    text = gr.robustness_markdown(saved)
    assert saved["verdict"] in text and "| specific | literary | 12 |" in text
    assert pd.read_csv(paths["contrast"]).shape == tests.shape


def test_the_readme_section_shows_every_arm_with_one_seed_arms_marked_exploratory(planted):
    deltas = planted[2]
    positive = deltas[deltas["run"] == deltas["run"].iloc[0]].assign(run="g-lm", arm="passage_lm", seed=9,
                                                                     diff=lambda d: d["diff"] + 5.0)
    arms = rb.arm_summaries(pd.concat([deltas, positive]), n_boot=200)
    report = {"grid": "g", "seeds_per_arm": {}, "verdict": "v", "contrast": {"arm": "cot", "control": "shuffled_cot",
                                                                            "tests": []},
              "mixed_model": [], "seed_spread": [], "arms": arms.to_dict("records")}
    text = gr.robustness_markdown(report)
    rows = [line for line in text[text.index("| arm |"):].splitlines() if line.startswith("| ")]
    assert rows[0] == "| arm | seeds | literary full | literary specific | factual full | factual specific |"
    assert [row.split(" | ")[0:2] for row in rows[1:]] == [["| cot", "3"], ["| shuffled_cot", "3"],
                                                          ["| passage_lm", "1 (exploratory)"]]
    cot = arms[(arms["arm"] == "cot") & (arms["group"] == "literary") & (arms["kind"] == "specific")].iloc[0]
    assert f"{cot['mean']:+.2f} [{cot['ci_low']:+.2f}, {cot['ci_high']:+.2f}]" == rows[1].split(" | ")[3]
    ranking = next(line for line in text.splitlines() if line.startswith("Ranked by"))
    assert ranking.startswith("Ranked by literary specific Δ(ΔI): passage_lm +")
    assert "The largest rise comes from passage_lm, not from the paper's arm (cot)" in ranking
    alone = rb.arm_summaries(deltas, n_boot=200)           # without the positive control: cot leads
    lit = alone[(alone["group"] == "literary") & (alone["kind"] == "specific")].set_index("arm")["mean"]
    expected = "the paper's arm (cot) moves it most" if lit["cot"] > lit["shuffled_cot"] else "not from the paper's arm"
    assert expected in gr.robustness_markdown(report | {"arms": alone.to_dict("records")})
    report.pop("arms")  # a robustness.json written before the arms were kept still renders
    assert "| arm |" not in gr.robustness_markdown(report)


def test_notebook_06_runs_headless_on_a_synthetic_grid(tmp_path):
    from cqa_utils.pipeline import run_notebook
    from cqa_utils.registry import GRID_NOTEBOOKS

    results = write_grid(tmp_path)
    executed = tmp_path / "executed"
    run_notebook(GRID_NOTEBOOKS[0], {"grid": "g", "results_dir": str(results), "reference_dir": str(tmp_path / "ref"),
                                     "n_boot": 200}, executed)
    default = results / "sweeps" / "g" / "06_robustness"  # out_dir empty: beside the manifest
    report = json.loads((default / "robustness.json").read_text())
    assert report["verdict"].startswith("An appreciation-specific effect: shown")
    assert {p.name for p in default.glob("fig_*")} == {f"fig_{n}.{e}" for n in ("arm_deltas", "arm_contrast", "seed_spread")
                                                        for e in ("png", "pdf")}
    assert (executed / "notebooks" / "06_robustness.ipynb").is_file() and (executed / "html" / "06_robustness.html").is_file()


def test_notebook_06_runs_on_a_grid_still_running_and_says_too_few_runs(tmp_path):
    """A grid published mid-way (only cot finished) still renders: an empty contrast, a verdict that waits."""
    from cqa_utils.pipeline import run_notebook
    from cqa_utils.registry import GRID_NOTEBOOKS

    results = write_grid(tmp_path, seeds=(1, 2))
    manifest = results / "sweeps" / "g" / "sweep.json"
    data = json.loads(manifest.read_text())
    for run in data["runs"]:
        run["status"] = "done" if run["overrides"]["train.arm"] == "cot" else "pending"
    manifest.write_text(json.dumps(data))
    run_notebook(GRID_NOTEBOOKS[0], {"grid": "g", "results_dir": str(results), "reference_dir": str(tmp_path / "ref"),
                                     "n_boot": 100}, tmp_path / "executed")
    out = results / "sweeps" / "g" / "06_robustness"
    report = json.loads((out / "robustness.json").read_text())
    assert report["seeds_per_arm"] == {"cot": 2} and "too few runs" in report["verdict"]
    assert pd.read_csv(out / "contrast.csv").empty and (out / "fig_arm_contrast.png").is_file()


def test_the_seed_spread_shows_a_range_over_seeds_and_one_value_for_one_seed(planted):
    deltas = planted[2]
    single = deltas[deltas["run"] == deltas["run"].iloc[0]].assign(run="g-lm", arm="passage_lm", seed=9)
    spread = rb.seed_spread(rb.seed_summaries(pd.concat([deltas, single]), n_boot=200))
    report = {"grid": "g", "seeds_per_arm": {}, "verdict": "v", "contrast": {"arm": "cot", "control": "shuffled_cot",
                                                                            "tests": []},
              "mixed_model": [], "seed_spread": spread.to_dict("records")}
    line = next(l for l in gr.robustness_markdown(report).splitlines() if l.startswith("Seed spread"))
    rows = spread[spread["kind"] == "specific"].set_index(["arm", "group"])
    cot, lm = rows.loc[("cot", "literary")], rows.loc[("passage_lm", "literary")]
    assert f"cot literary p {cot['p_min']:.3g}–{cot['p_max']:.3g}, d_z {cot['d_z_min']:+.2f}–{cot['d_z_max']:+.2f}" in line
    assert f"passage_lm literary p {lm['p_min']:.3g}, d_z {lm['d_z_min']:+.2f};" in line
