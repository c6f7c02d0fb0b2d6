"""The notebooks' table view (cqa_utils.display.key_view): key columns first, rounded, notes as text."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from cqa_utils.display import key_view


def stats_row(**changes) -> dict:
    """One row of stats.csv (its 25 columns), as stage 04 writes it."""
    row = dict(group="literary", kind="specific", epoch=5, measure="sum", role="primary", n=48, n_zero=0,
               mean=1.357812, median=0.948, sd=3.5438, w_plus=812.0, p_one_sided=0.001324, p_two_sided=0.002648,
               wilcoxon_method="exact", d_z=0.38316, hedges_g=0.377, ci_low=0.3511, ci_high=2.3321, hl=1.29081,
               hl_ci_low=0.43541, hl_ci_high=2.13033, tost_margin=1.0631, p_tost=0.7163, p_holm=0.001324, note=math.nan)
    return row | changes


def test_a_wide_row_shows_its_key_columns_first_and_rounded_with_the_full_frame_kept():
    frame = pd.DataFrame([stats_row(), stats_row(group="factual", role="exploratory", p_one_sided=3.35e-07)])
    view = key_view(frame, "stats", full="table")
    assert list(view.table.columns) == ["group", "kind", "measure", "epoch", "n", "mean", "d_z",
                                        "p_one_sided", "p_holm", "hl", "hl_ci", "p_tost"]
    first = view.table.iloc[0]
    assert (first["mean"], first["d_z"], first["p_one_sided"], first["hl_ci"]) == ("1.358", "+0.383", "0.00132",
                                                                                   "[0.435, 2.130]")
    assert view.table.iloc[1]["p_one_sided"] == "3.35e-07"  # a tiny p keeps its digits, never 0.000
    assert view.table.iloc[0]["epoch"] == "5" and view.table.iloc[0]["n"] == "48"
    assert view.full is frame and len(frame.columns) == 25
    assert "13 of 25 columns, rounded; every column, unrounded: `table`" in view.caption
    html = view._repr_html_()
    assert "<table" in html and "0.00132" in html and "`table`" in html
    # a narrow window may wrap a header after an underscore, never a value
    assert "<th>p_<wbr>one_<wbr>sided</th>" in html and "<td><nobr>[0.435, 2.130]</nobr></td>" in html
    assert "1.358" in repr(view) and "`table`" in repr(view)


def test_columns_the_frame_lacks_are_left_out_and_none_at_all_is_an_error():
    frame = pd.DataFrame({"item_id": ["a"], "group": ["literary"], "delta_i": [1.23456], "paper_n": [20.0]})
    assert list(key_view(frame, "scores").table.columns) == ["item_id", "group", "delta_i"]
    assert key_view(frame, ["paper_n"]).table.iloc[0, 0] == "20"  # a count read back as float stays a count
    with pytest.raises(ValueError, match="none of the key columns"):
        key_view(frame, ["p_holm"])
    with pytest.raises(ValueError, match=r"not a table name; accepted: .*'stats'"):
        key_view(frame, "nope")


def test_every_distinct_note_is_printed_under_the_table_with_the_rows_it_belongs_to():
    boundary = "The MLE may be on the boundary of the parameter space."
    model = pd.DataFrame({"kind": ["full", "full", "specific"], "contrast": ["literary", "factual", "literary"],
                          "estimate": [1.8, 2.3, math.nan], "p_one_sided": [6e-4, 2e-4, math.nan],
                          "converged": [True, True, False], "note": [boundary, boundary, "not fitted: singular"]})
    view = key_view(model, "mixed_model", full="model")
    assert "note" not in view.table.columns and view.table.iloc[2]["estimate"] == "–"
    assert view.notes == [f"note: {boundary} (full · literary; full · factual)",
                          "note: not fitted: singular (specific · literary)"]
    html = view._repr_html_()
    assert html.count('class="cqa-note"') == 2 and "boundary of the parameter space" in html
    assert key_view(model.assign(note=""), "mixed_model").notes == []

