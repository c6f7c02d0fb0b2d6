"""The README's generated Results block: every branch of the verdict sentence, and the table."""
import pytest

import json
import shutil

from cqa_utils.config import PROJECT_ROOT, load_config
from cqa_utils.grid_report import malloc_line, wall_time_line
from cqa_utils.report import (controlled_verdict, headline_run, models_markdown, publish, published_model_reports,
                              results_markdown, update_readme, verdict)


def report(lit_p, lit_d, fact_p, fact_d) -> dict:
    row = {"paper_n": 20, "paper_p_one_sided": 0.041, "paper_d": 0.5, "epoch": 5, "n": 40,
           "mean_delta_delta_i": 1.5, "p_one_sided": 0.01, "hedges_g": 0.3, "ci_low": 0.1, "ci_high": 2.0}
    return {"paper_comparison": [dict(row, group="literary", p_holm=lit_p, d_z=lit_d),
                                 dict(row, group="factual", p_holm=fact_p, d_z=fact_d)],
            "run": {"name": "r", "model": "m", "epochs_trained": 5, "n_items": {"literary": 40, "factual": 40}},
            "headline_epoch": 5, "metric_check": {"n": 40, "k": 29, "p_sign_test": 0.003},
            "selectivity": [{"epoch": 5, "measure": "sum", "mean_difference": -1.0, "p_permutation": 0.9,
                             "p_mannwhitney": 0.8}],
            "stats_table": [{"group": "literary", "kind": "specific", "epoch": 5, "measure": "sum", "n": 40, "mean": 0.4,
                             "hl": 0.3, "hl_ci_low": -0.1, "hl_ci_high": 0.9, "p_one_sided": 0.2, "p_holm": 0.4,
                             "d_z": 0.1, "p_tost": 0.3, "role": "primary"},
                            {"group": "factual", "kind": "specific", "epoch": 5, "measure": "sum", "n": 40, "mean": 0.1,
                             "hl": 0.1, "hl_ci_low": -0.4, "hl_ci_high": 0.6, "p_one_sided": 0.4, "p_holm": 0.4,
                             "d_z": 0.05, "p_tost": 0.04, "role": "exploratory"}],
            "settings": {"equivalence_dz": 0.3}}


def with_primary(report_: dict, p: float | None, d: float, p_tost: float) -> dict:
    row = {"mean": 0.4, "hl": 0.3, "d_z": d, "p_one_sided": p, "p_tost": p_tost}
    return report_ | {"primary": {"declared": {"kind": "specific", "measure": "sum", "epoch": 5},
                                  "row": row if p is not None else None}}


@pytest.mark.parametrize("numbers,expected", [
    ((None, None, 0.5, 0.1), "too small for a test"),
    ((0.01, 0.6, 0.40, 0.1), "reproduces the direction of the paper's claim"),
    ((0.01, 0.6, 0.01, 0.5), "rises for both groups"),
    ((0.01, -0.6, 0.40, 0.1), "does not reproduce the paper's effect: the literary Δ(ΔI) has d_z = -0.60"),
    ((0.30, 0.2, 0.40, 0.1), "does not reproduce the paper's effect: the literary Δ(ΔI) has d_z = +0.20"),
    ((0.30, 0.2, 0.002, 0.7), "ΔI rises for the factual control instead (d_z = +0.70"),
])
def test_verdict_follows_the_numbers(numbers, expected):
    sentence = verdict(report(*numbers))
    assert expected in sentence
    if numbers[0] is not None and not (numbers[0] < 0.05 and numbers[1] > 0) and numbers[2] >= 0.05:
        assert "factual control instead" not in sentence


@pytest.mark.parametrize("p,d,p_tost,expected", [
    (None, 0.0, 0.5, "not scored in this run"),
    (0.01, 0.45, 0.9, "supports the paper's claim: the literary specific Δ(ΔI) at epoch 5 rises"),
    (0.40, 0.02, 0.01, "shows no effect: the literary specific Δ(ΔI) at epoch 5 is equivalent to zero within ±0.3 sd"),
    (0.40, 0.10, 0.30, "is inconclusive"),
    (0.01, -0.40, 0.30, "is inconclusive"),  # a significant p with a negative effect is not support
])
def test_controlled_verdict_follows_the_primary_endpoint(p, d, p_tost, expected):
    assert expected in controlled_verdict(with_primary(report(0.3, 0.2, 0.4, 0.1), p, d, p_tost))


def test_controlled_verdict_says_when_the_factual_control_rises_too():
    base = report(0.3, 0.2, 0.4, 0.1)
    base["stats_table"][1].update(p_one_sided=0.001, d_z=0.8)
    sentence = controlled_verdict(with_primary(base, 0.01, 0.38, 0.7))
    assert "the factual control rises too (d_z = +0.80" in sentence and "not show the paper's domain-selective" in sentence
    base["stats_table"].pop(1)
    assert "no factual control was scored" in controlled_verdict(with_primary(base, 0.01, 0.38, 0.7))


def test_results_block_replaces_only_the_text_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:begin -->\nold\n<!-- results:end -->\noutro\n")
    update_readme(readme, with_primary(report(0.3, 0.2, 0.002, 0.7), 0.4, 0.1, 0.3))
    text = readme.read_text()
    assert text.startswith("intro\n<!-- results:begin -->\n") and text.endswith("<!-- results:end -->\noutro\n")
    assert "old" not in text and results_markdown(with_primary(report(0.3, 0.2, 0.002, 0.7), 0.4, 0.1, 0.3)) in text
    assert "| literary | 20 | 0.041 | 0.50 | 40 |" in text and "29 of 40" in text
    assert "| literary | specific | 40 | 0.400 | 0.300 [-0.100, 0.900] | 0.200 | 0.400 | 0.10 | 0.300 | primary |" in text


def test_missing_markers_are_an_error(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        update_readme(readme, with_primary(report(0.3, 0.2, 0.4, 0.1), 0.4, 0.1, 0.3))


def test_audit_block_is_generated_from_the_conclusion_and_the_role_means(tmp_path):
    from test_plots import make_shares

    from cqa_utils.report import audit_markdown
    shares, hand, _ = make_shares()
    block = audit_markdown({"training": "T sentence.", "evaluation": "E sentence."}, shares, hand)
    assert block.startswith("**Training data.** T sentence.\n\n**Evaluation data.** E sentence.")
    row = shares[(shares.group == "mean:training") & (shares.label == "craft")].iloc[0]
    assert f"| training | classifier, corrected | {100 * row.share:.0f}% [{100 * row.ci_low:.0f}, " in block
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- audit:begin -->\nold\n<!-- audit:end -->\nb\n<!-- results:begin -->\nkeep\n<!-- results:end -->\n")
    update_readme(readme, None, block)          # only the audit stage finished: Results untouched
    text = readme.read_text()
    assert "old" not in text and block in text and "<!-- results:begin -->\nkeep\n" in text


def test_models_table_has_a_row_per_published_run_and_leaves_grid_runs_out(tmp_path):
    from cqa_utils.runs import write_json

    for name, model in (("solo", "embedded:a"), ("other", "embedded:b"), ("grid-run", "embedded:a")):
        numbers = report(0.3, 0.2, 0.002, 0.7)
        write_json(tmp_path / name / "04_stats" / "stats.json", numbers | {"run": numbers["run"] | {"name": name, "model": model}})
    write_json(tmp_path / "sweeps" / "g.json", {"grid": "g", "runs": [{"name": "grid-run", "status": "done"}]})
    found = published_model_reports(tmp_path)
    assert sorted(r["run"]["name"] for r in found) == ["other", "solo"]
    table = models_markdown(found)
    assert "| `embedded:a` | `solo` | 29 of 40 (p = 0.003) | specific | 0.400 | 0.2 | 0.10 | 0.100 | 0.4 | 0.05 |" in table
    assert table.index("`embedded:a`") < table.index("`embedded:b`") and "grid-run" not in table
    assert f"- `solo`: {controlled_verdict(found[1])}" in table and f"- `other`: {controlled_verdict(found[0])}" in table
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- models:begin -->\nold\n<!-- models:end -->\nb\n")
    update_readme(readme, models=found)
    assert table in readme.read_text() and "old" not in readme.read_text()


def test_the_grid_wall_time_line_gives_the_total_each_run_and_marks_a_resumed_one():
    manifest = {"runs": [{"name": "g-a", "status": "done", "wall_s": 3000.0, "resumed": False},
                         {"name": "g-b", "status": "done", "wall_s": 1200.0, "resumed": True},
                         {"name": "g-c", "status": "pending", "wall_s": None}]}
    line = wall_time_line(manifest)
    assert line.startswith("2 of 3 runs finished; measured wall time 1.2 h for 2 runs")
    assert "`g-a` 50 min, `g-b` 20 min (resumed)" in line and "covers only the session" in line
    assert wall_time_line({"runs": manifest["runs"][2:]}) == "0 of 1 runs finished; no wall times recorded."


def test_the_grid_malloc_line_groups_each_runs_training_peak_and_efficiency_by_its_malloc(tmp_path):
    runs = {"g-a": ([3.4, 6.6, 6.5], None, 4.24), "g-b": ([3.1, 4.2], "tcmalloc", 1.69), "g-c": ([3.3, 6.4], None, None)}
    for name, (rss, malloc, ratio) in runs.items():
        stage = tmp_path / name / "02_finetune"
        stage.mkdir(parents=True)
        stage.joinpath("train_log.csv").write_text("step,peak_rss_gib\n" + "".join(
            f"{i},{v}\n" for i, v in enumerate(rss, 1)))
        stage.joinpath("environment.json").write_text(json.dumps({"malloc": malloc} if malloc else {}))
        if ratio:
            (tmp_path / name / "efficiency.json").write_text(json.dumps({"study": {"ratio": ratio}}))
    line = malloc_line(tmp_path / name for name in [*runs, "g-never-trained"])
    assert line.endswith(": glibc (not recorded) (2 runs): peak 6.4–6.6 GiB, wall/bound 4.24; "
                         "tcmalloc (1 run): peak 4.2 GiB, wall/bound 1.69.")
    assert malloc_line([tmp_path / "g-never-trained"]) == ""


def test_a_run_that_is_not_the_headline_run_updates_only_the_model_table_and_figure(tmp_path):
    """A Gemma (or seed, or GPU) run reported into a README whose Results show `default` leaves
    the Results, audit and efficiency blocks alone; with two models published, it regenerates the
    per-model table and draws the across-models figure from the same reports."""
    from cqa_utils.runs import write_json

    published = json.loads((PROJECT_ROOT / "reference/default/04_stats/stats.json").read_text(encoding="utf-8"))
    for name, model in (("default", published["run"]["model"]), ("second", "embedded:second-model")):
        write_json(tmp_path / "reference" / name / "04_stats" / "stats.json",
                   published | {"run": published["run"] | {"name": name, "model": model}})
    for part in ("02_finetune/train_log.csv", "02_finetune/environment.json", "efficiency.json"):
        (tmp_path / "reference/default" / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PROJECT_ROOT / "reference/default" / part, tmp_path / "reference/default" / part)
    cost = json.loads((PROJECT_ROOT / "reference/default/efficiency.json").read_text(encoding="utf-8"))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:begin -->\nRun `default`: model m\nkept\n<!-- results:end -->\n"
                      "<!-- models:begin -->\nold\n<!-- models:end -->\n")
    assert headline_run(readme.read_text()) == "default"
    cfg = load_config("default", {"run.name": "second"})
    paths = publish(cfg, readme, figures=tmp_path / "figures", reference=tmp_path / "reference")
    text = readme.read_text()
    assert "Run `default`: model m\nkept" in text and "old" not in text
    assert "| `embedded:second-model` | `second` |" in text
    assert (f"`default` {cost['study']['wall_seconds'] / 60:.0f} min on {cost['torch_threads']} threads (wall/bound "
            f"{cost['study']['ratio']:.2f}), stage 02 peak") in text and "`second` " not in text.split("Measured")[1]
    assert sorted(p.name for p in paths) == ["README.md", "fig_k_across_models.pdf", "fig_k_across_models.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    with pytest.raises(ValueError, match="run 'second' has neither a finished stage 01 nor 04"):
        publish(cfg, readme, figures=tmp_path / "figures", reference=tmp_path / "reference", headline=True)
    readme.write_text("<!-- results:begin -->\n<!-- results:end -->\n")   # a README that shows no run yet
    assert headline_run(readme.read_text()) is None
    with pytest.raises(ValueError, match="neither a finished stage"):
        publish(cfg, readme, figures=tmp_path / "figures", reference=tmp_path / "reference")
