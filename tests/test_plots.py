"""Figures a–g on synthetic frames shaped like the real stage files (fast, no model).

Sizes are shrunk on purpose: 3 items per group and epochs 0..2 (2 items in the small-n
tests), like a smoke run.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

EPOCHS = (0, 1, 2)
WORDS = ["The", " ferry", " nosed", " out", " into", " the", " brown", " water", ",", "\n",
         " while", " gulls", " kept", " pace", " beside", " the", " rail", "."]


pytestmark = pytest.mark.usefixtures("agg_backend")  # conftest: headless matplotlib, figures closed


def make_scores(n: int = 3, epochs=EPOCHS, seed: int = 0) -> pd.DataFrame:
    """scores.csv: literary items have x and x_degraded, factual items x only."""
    rng = np.random.default_rng(seed)
    rows = []
    for group, prefix in (("literary", "lit"), ("factual", "fac")):
        for i in range(1, n + 1):
            base = rng.normal(5, 2)
            for variant in ("x", "x_degraded") if group == "literary" else ("x",):
                for epoch in epochs:
                    n_tok = 120 + i
                    lift = 0.8 * epoch if group == "literary" else 0.0
                    value = base + lift + rng.normal(0, 1) - (2.0 if variant == "x_degraded" else 0.0)
                    uncond = -float(rng.uniform(300, 400))
                    rows.append(dict(item_id=f"{prefix}-{i:02d}", group=group, variant=variant,
                                     checkpoint="base" if epoch == 0 else f"epoch-{epoch}", epoch=epoch,
                                     n_tokens=n_tok, logp_cond=uncond + value, logp_uncond=uncond,
                                     delta_i=value, delta_i_mean=value / n_tok))
    return pd.DataFrame(rows)


def make_tokens(scores: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for r in scores.itertuples():
        for condition in ("cond", "uncond"):
            for position, text in enumerate(WORDS * 3):
                rows.append(dict(checkpoint=r.checkpoint, epoch=r.epoch, item_id=r.item_id, group=r.group,
                                 variant=r.variant, condition=condition, position=position,
                                 token_id=1000 + position, token=text.replace(" ", "Ġ"), text=text,
                                 logprob=-float(rng.gamma(2.0, 1.5))))
    return pd.DataFrame(rows)


def make_shares(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(corrected shares, hand-label shares, our annotations' shares) shaped like stage 01's files."""
    from cqa_utils.audit import LABELS, type_shares
    from cqa_utils.audit_shares import corrected_shares

    rng = np.random.default_rng(seed)
    records = pd.concat([pd.DataFrame({"dataset": d, **{k: (rng.random(n) < p).astype(int)
                                                        for k, p in zip(LABELS, (0.6, 0.2, 0.1))}})
                         for d, n in (("lima", 60), ("alpaca", 40), ("hanna", 30))], ignore_index=True)
    gold = (rng.random(80) < 0.4).astype(int)
    labelled = pd.DataFrame({**{k: gold for k in LABELS},
                             **{f"pred_{k}": np.where(rng.random(80) < 0.85, gold, 1 - gold) for k in LABELS}})
    roles = {"lima": "training", "alpaca": "evaluation", "hanna": "evaluation"}
    shares = corrected_shares(records, labelled, roles, n_boot=100).assign(bar="taught")
    perfect = labelled.assign(**{f"pred_{k}": labelled[k] for k in LABELS}, dataset=["lima", "hanna"] * 40)
    hand = corrected_shares(perfect, perfect, roles, n_boot=100).assign(bar="taught")
    ours = type_shares(records.head(8).assign(dataset="cqa_annotations"))
    return shares, hand, ours


def make_log(steps: int = 12, epochs: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    step = np.arange(1, steps + 1)
    return pd.DataFrame({"step": step, "epoch": np.round(step * epochs / steps, 4),
                         "loss": 2.5 - 0.05 * step + rng.normal(0, 0.05, steps),
                         "lr": 2e-4 * (1 - step / steps), "grad_norm": rng.uniform(0.5, 2, steps),
                         "tokens": step * 1500, "tokens_per_s": rng.uniform(90, 110, steps)})


def make_stats(scores: pd.DataFrame) -> pd.DataFrame:
    from cqa_utils.analysis import stats_table

    return stats_table(scores, n_boot=200, seed=0)


def _check(fig, n_axes: int) -> None:
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure)
    assert len(fig.axes) == n_axes
    titles = [ax.get_title() or ax.get_title(loc="left") for ax in fig.axes]
    assert any(titles) or (fig._suptitle and fig._suptitle.get_text())


@pytest.mark.parametrize("n", [3, 2])
def test_every_figure_is_built_with_titles_and_expected_axes(n):
    from cqa_utils import audit_plots, plots, token_plots
    from cqa_utils.analysis import PAPER_EPOCH5

    scores = make_scores(n)
    stats = make_stats(scores)
    tokens = make_tokens(scores)
    shares, hand, ours = (f.drop(columns="boot", errors="ignore") for f in make_shares())
    _check(audit_plots.fig_audit_shares(shares, hand, ours), 2)  # public data + our annotations
    _check(audit_plots.fig_audit_shares(shares), 1)
    _check(plots.fig_training_loss(make_log()), 2)  # loss axis + twin lr axis
    _check(plots.fig_paired_delta_i(scores, epoch=2), 2)
    _check(plots.fig_delta_delta_by_epoch(stats), 1)
    _check(plots.fig_delta_delta_by_epoch(stats, measure="mean"), 1)
    _check(plots.fig_effect_sizes(stats, PAPER_EPOCH5, epoch=2), 1)
    _check(token_plots.fig_token_surprise(tokens, "lit-01", epoch=2), 2)  # text panel + colourbar
    items = token_plots.pick_items(scores, epoch=1, k=2)
    _check(token_plots.fig_token_surprise(tokens, items, epoch=1), len(items) + 1)
    _check(plots.fig_metric_check(scores, epoch=0), 1)


def test_effect_sizes_survive_a_degenerate_row():
    from cqa_utils import plots
    from cqa_utils.analysis import PAPER_EPOCH5

    stats = make_stats(make_scores(2))
    stats.loc[stats["group"] == "factual", ["d_z", "hedges_g", "ci_low", "ci_high"]] = np.nan
    _check(plots.fig_effect_sizes(stats, PAPER_EPOCH5, epoch=1), 1)
    _check(plots.fig_delta_delta_by_epoch(stats), 1)


def test_save_fig_writes_png_and_pdf_and_no_temp_files(tmp_path):
    from cqa_utils import plots

    paths = plots.save_fig(plots.fig_training_loss(make_log()), "loss", tmp_path)
    assert sorted(p.name for p in paths) == ["loss.pdf", "loss.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.pdf", "loss.png"]


def test_saving_the_same_figure_at_another_time_gives_identical_bytes(tmp_path, monkeypatch):
    from cqa_utils import plots

    saved = []
    for run, epoch_seconds in enumerate(("1000000000", "1700000000")):  # 2001 vs 2023: dates that would differ
        monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch_seconds)
        saved.append(plots.save_fig(plots.fig_training_loss(make_log()), "loss", tmp_path / str(run)))
    for first, second in zip(*saved):
        assert first.read_bytes() == second.read_bytes(), f"{first.name} differs between two saves"
    pdf, png = saved[0][1].read_bytes(), saved[0][0].read_bytes()
    assert b"CreationDate" not in pdf and b"Matplotlib" not in pdf
    assert b"Software" not in png


def test_token_changes_are_tuned_minus_base_per_position():
    from cqa_utils.token_plots import token_changes

    tokens = make_tokens(make_scores(2))
    out = token_changes(tokens, "lit-02", epoch=2)
    assert list(out.columns) == ["position", "text", "base", "tuned", "change"]
    sel = tokens[(tokens.item_id == "lit-02") & (tokens.variant == "x") & (tokens.condition == "cond")]
    base = sel[sel.epoch == 0].set_index("position")["logprob"]
    tuned = sel[sel.epoch == 2].set_index("position")["logprob"]
    assert out["position"].tolist() == list(range(len(WORDS) * 3))
    np.testing.assert_allclose(out["change"], (tuned - base).to_numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["base"], base.to_numpy())
    with pytest.raises(ValueError, match="epoch=7"):
        token_changes(tokens, "lit-02", epoch=7)
    with pytest.raises(ValueError, match="no tokens for item"):
        token_changes(tokens, "nope", epoch=1)


def test_pick_items_returns_the_largest_and_smallest_literary_change():
    from cqa_utils.token_plots import pick_items
    from cqa_utils.analysis import paired_differences

    scores = make_scores(5)
    diffs = paired_differences(scores)
    at = diffs[(diffs.group == "literary") & (diffs.epoch == 2)].set_index("item_id")["diff"]
    assert pick_items(scores, epoch=2, k=2) == [at.idxmax(), at.idxmin()]
    assert len(pick_items(scores, epoch=2, k=3)) == 3
    assert sorted(pick_items(make_scores(2), epoch=1, k=4)) == ["lit-01", "lit-02"]


def test_wrapping_keeps_lines_within_width_and_breaks_at_newlines():
    from cqa_utils.token_plots import _wrap

    placed = _wrap(WORDS * 4, width=20)
    assert all(col + len(text) <= 20 for _, col, text in placed if col)
    newline = [i for i, w in enumerate(WORDS * 4) if "\n" in w][0]
    assert placed[newline + 1][1] == 0 and placed[newline + 1][0] == placed[newline][0] + 1


def test_dz_interval_is_the_stated_approximation():
    from cqa_utils.plots import dz_interval

    lo, hi = dz_interval(0.5, 20)
    half = 1.96 * np.sqrt(1 / 20 + 0.25 / 40)
    assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half))
    assert all(np.isnan(dz_interval(0.5, None)))


FIGURES = ("fig_a_audit_shares", "fig_b_training_loss", "fig_c_paired_delta_i", "fig_d_delta_delta_by_epoch",
           "fig_e_effect_sizes", "fig_f_token_surprise", "fig_g_metric_check")


def test_run_figures_writes_every_figure_and_copies_them(tmp_path, monkeypatch):
    from cqa_utils import report as rep
    from cqa_utils import runs
    from cqa_utils.config import load_config
    from cqa_utils.stages import figures
    from cqa_utils.analysis import stats_report

    monkeypatch.setattr(runs, "git_commit", lambda: None)
    monkeypatch.setattr(figures, "REFERENCE_DIR", tmp_path / "reference")  # no published runs of other models
    cfg = load_config("smoke", {"run.results_dir": str(tmp_path), "run.name": "t",
                                "stats.headline_epoch": 5})  # beyond the 2 scored epochs
    scores = make_scores(3)
    report = stats_report(scores, n_boot=100, n_perm=100) | {"headline_epoch": 2, "run": {"name": "t", "model": cfg.model.name}}
    shares, hand, ours = make_shares()
    files = {"01": {"shares": shares.drop(columns="boot"), "shares_hand_labels": hand.drop(columns="boot"),
                    "shares_annotations": ours}, "02": {"train_log": make_log()},
             "03": {"scores": scores}, "04": {"stats": pd.DataFrame(report["stats_table"])}}
    for key, frames in files.items():
        stage = runs.open_stage(cfg, key)
        written = {name: runs.write_csv(stage.file(f"{name}.csv"), frame) for name, frame in frames.items()}
        if key == "03":
            make_tokens(scores).to_parquet(stage.file("tokens.parquet"), index=False)
            written["tokens"] = stage.file("tokens.parquet")
        if key == "04":
            written["report"] = runs.write_json(stage.file("stats.json"), report)
        stage.finish(written)
    paths = figures.run_figures(cfg)
    assert sorted(paths) == sorted(f"{n}.{e}" for n in FIGURES for e in ("png", "pdf"))
    assert all(path.name == name for name, path in paths.items())
    done = json.loads((runs.stage_dir(cfg, "05") / "DONE").read_text())
    assert done["summary"]["epoch"] == 2
    assert figures.run_figures(cfg) == paths  # finished stage: a no-op returning its outputs
    copied = rep.copy_figures(cfg, tmp_path / "figures")
    assert len(copied) == 14 and all(p.stat().st_size > 0 for p in copied)

    # A run of another model published in reference/ adds the comparison figure, drawn from both reports.
    runs.write_json(tmp_path / "reference" / "other" / "04_stats" / "stats.json",
                    report | {"run": {"name": "other", "model": "embedded:gemma3-270m"}})
    runs.write_json(tmp_path / "reference" / "t" / "04_stats" / "stats.json", report)  # this run, published: once
    reports = figures.model_reports(report)
    assert [(r["run"]["name"], r["run"]["model"]) for r in reports] == [("t", cfg.model.name), ("other", "embedded:gemma3-270m")]
    paths = figures.run_figures(cfg, force=True)
    assert {"fig_k_across_models.png", "fig_k_across_models.pdf"} <= set(paths)


def test_figure_epoch_falls_back_to_the_last_scored_epoch():
    from cqa_utils.stages.figures import figure_epoch

    scores = make_scores(2)
    assert figure_epoch(scores, 5) == 2 and figure_epoch(scores, 1) == 1
    assert figure_epoch(scores[scores.epoch != 1], 1) == 2
    with pytest.raises(ValueError, match="only epoch 0"):
        figure_epoch(scores[scores.epoch == 0], 5)


def test_the_across_models_figure_has_a_panel_per_kind_and_a_marker_per_run(agg_backend):
    from cqa_utils.analysis import stats_report
    from cqa_utils.model_plots import fig_across_models, headline_rows

    report = stats_report(make_scores(3), n_boot=100, n_perm=100) | {"headline_epoch": 2}
    reports = [report | {"run": {"name": name, "model": model}}
               for name, model in (("default", "embedded:smollm2-135m-instruct"), ("gemma", "embedded:gemma3-270m"))]
    rows = headline_rows(reports[1])
    assert rows and all(r["epoch"] == 2 and r["measure"] == "sum" and r["model"] == "gemma3-270m" for r in rows)
    fig = fig_across_models(reports)
    kinds = {r["kind"] for r in rows}
    assert len(fig.axes) == len(kinds)
    legend = fig.axes[-1].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["smollm2-135m-instruct (default)", "gemma3-270m (gemma)"]
    groups = {r["group"] for r in rows}
    assert all(len(ax.containers) == 2 * len(groups) for ax in fig.axes)  # one error bar per group × run
