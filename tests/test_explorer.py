"""Notebook 03's explorer on synthetic stage-03 files (fast, no model): widget and static fallback."""
from __future__ import annotations

import pytest
from test_plots import make_scores, make_tokens

from cqa_utils import explorer


pytestmark = pytest.mark.usefixtures("agg_backend")  # conftest: headless matplotlib, figures closed


@pytest.fixture
def run_files(tmp_path):
    """A stage 03 folder with scores.csv and tokens.parquet, as run_logprobs writes them."""
    scores = make_scores()
    scores.to_csv(tmp_path / "scores.csv", index=False)
    make_tokens(scores).to_parquet(tmp_path / "tokens.parquet", index=False)
    return tmp_path


def test_batch_runs_get_the_static_figure_and_the_items_delta_i(run_files, capsys):
    from matplotlib.figure import Figure

    scores, tokens = explorer.load_token_data(run_files)
    fig = explorer.token_explorer(scores, tokens, condition="uncond")
    assert isinstance(fig, Figure)
    assert "log P(x_t)" in fig._suptitle.get_text() and "epoch 2" in fig._suptitle.get_text()
    item = explorer.pick_items(scores, 2, k=1)[0]
    rows = scores[(scores.item_id == item) & (scores.variant == "x")].set_index("epoch")["delta_i"]
    printed = capsys.readouterr().out
    assert printed.startswith(f"{item} (literary, ")
    assert f"{rows[0]:+.2f} nats on the base model, {rows[2]:+.2f} at epoch 2" in printed
    assert f"Δ(ΔI) = {rows[2] - rows[0]:+.2f} nats" in printed


def test_the_sentence_names_the_quantity_the_figure_sums_beside_delta_delta_i(run_files):
    """The figure's panel says "Σ change = …" of log P(x|y) (or log P(x)); the sentence gives that number
    under that name and shows how it and the other condition's change make Δ(ΔI)."""
    scores, tokens = explorer.load_token_data(run_files)
    rows = scores[(scores.item_id == "lit-01") & (scores.variant == "x")].set_index("epoch")
    cond, uncond = (rows.loc[2, c] - rows.loc[0, c] for c in ("logp_cond", "logp_uncond"))
    for condition, shown, summed in (("cond", "log P(x | y)", cond), ("uncond", "log P(x)", uncond)):
        second = explorer.delta_i_summary(scores, "lit-01", 2, condition).splitlines()[1]
        assert second.startswith(f"Δ(ΔI) = change in log P(x|y) {cond:+.2f} − change in log P(x) {uncond:+.2f} ")
        assert f"the figure colours each token's change in {shown}: its Σ change is {summed:+.2f} nats" in second
    assert f"{cond - uncond:+.2f}" == f"{rows.loc[2, 'delta_i'] - rows.loc[0, 'delta_i']:+.2f}"


def test_in_jupyterlab_the_explorer_is_a_widget_over_every_item_checkpoint_and_condition(run_files, monkeypatch):
    import ipywidgets as widgets

    monkeypatch.setattr(explorer, "interactive_notebook", lambda: True)
    scores, tokens = explorer.load_token_data(run_files)
    app = explorer.token_explorer(scores, tokens)
    assert isinstance(app, widgets.VBox)
    (item, checkpoint), condition = app.children[0].children, app.children[1]
    assert [value for _, value in item.options] == ["lit-01", "lit-02", "lit-03", "fac-01", "fac-02", "fac-03"]
    assert [value for _, value in checkpoint.options] == [1, 2] and checkpoint.value == 2
    assert [value for _, value in condition.options] == ["cond", "uncond"]
    # labels are never cut: buttons as wide as their text, descriptions as wide as theirs
    assert condition.style.button_width == "auto"
    assert {w.style.description_width for w in (item, checkpoint, condition)} == {"initial"}
    shown = []
    draw = explorer.token_view
    monkeypatch.setattr(explorer, "token_view", lambda *args: shown.append(args[2:]) or draw(*args))
    item.value, checkpoint.value, condition.value = "fac-02", 1, "uncond"
    assert shown[-1] == ("fac-02", 1, "uncond")  # each change redraws the figure for the new choice


def test_a_folder_without_stage_03_files_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"scores.csv: missing; is .* a finished stage 03"):
        explorer.load_token_data(tmp_path)


def test_a_run_without_trained_checkpoints_has_nothing_to_explore():
    scores = make_scores(epochs=(0,))
    with pytest.raises(ValueError, match="only the base model"):
        explorer.token_explorer(scores, make_tokens(scores))
