"""Small views for notebooks: a wide table's key columns, rounded (03, 04, 06), and per-token values
as coloured text (notebook 03).

A stage's tables keep every column (``stats.csv`` has 25); on screen a reader needs the few that
answer the question, rounded, and the warnings in full. :func:`key_view` picks those columns
(first the ones that say which row it is, then the estimate, d_z and p), rounds them (p-values to
three significant digits, so a tiny one reads 3.35e-07, not 0.0000), prints every distinct
``note`` of the rows below the table as visible text, and keeps the whole frame one attribute
away (``.full``). It only formats: the numbers come from the frame it is given.

matplotlib draws the publication figure (token_plots.fig_token_surprise); in a notebook,
inline HTML keeps the real text selectable and wraps like prose, which a reader wants
when looking at which words a constraint made more or less expected.
"""
from __future__ import annotations

import html
import math
import re
from typing import Sequence

import pandas as pd

# The columns a reader needs first, per table (named after the file the table is saved as). A column
# the frame lacks is left out: a run without the controls has no delta_i_specific.
KEY_COLUMNS: dict[str, list[str]] = {
    "scores": ["item_id", "group", "variant", "checkpoint", "n_tokens", "logp_cond", "logp_uncond", "delta_i",
               "delta_i_mean", "delta_i_specific", "overlap"],
    "timing": ["checkpoint", "requests", "cached", "with_controls", "batches", "scored_tokens", "seconds"],
    "stats": ["group", "kind", "measure", "epoch", "n", "mean", "d_z", "p_one_sided", "p_holm", "hl",
              "hl_ci_low", "hl_ci_high", "p_tost"],
    "paper_comparison": ["group", "epoch", "paper_n", "n", "paper_d", "d_z", "paper_p_one_sided", "p_one_sided",
                         "p_holm", "mean_delta_delta_i", "ci_low", "ci_high"],
    "selectivity": ["kind", "measure", "epoch", "n_literary", "n_factual", "mean_literary", "mean_factual",
                    "mean_difference", "p_permutation", "p_mannwhitney"],
    "paired_selectivity": ["kind", "measure", "epoch", "n_pairs", "mean", "d_z", "p_one_sided", "hl", "hl_ci_low",
                           "hl_ci_high"],
    "per_seed": ["kind", "arm", "group", "seed", "n", "mean", "d_z", "p_one_sided", "hl", "ci_low", "ci_high"],
    "contrast": ["kind", "group", "n_items", "mean", "d_z", "p_one_sided", "hl", "hl_ci_low", "hl_ci_high"],
    "mixed_model": ["kind", "contrast", "estimate", "se", "df", "p_one_sided", "ci_low", "ci_high", "converged"],
    "seed_spread": ["kind", "arm", "group", "n_seeds", "p_min", "p_median", "p_max", "d_z_min", "d_z_median",
                    "d_z_max", "seeds_p_below_05"],
}
# Per column, where the default (``digits`` decimals) reads badly: whole seconds, a signed effect size.
FORMATS = {"seconds": ".0f", "wall_s": ".0f", "d_z": "+.3f"}
P_VALUE = re.compile(r"(^|_)p(_|$)")  # p, p_one_sided, paper_p_one_sided, p_min … (an int column stays an int)
MISSING = "–"


def _cell(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return format(value, spec)


def _column_spec(name: str, values: pd.Series, digits: int) -> str | None:
    """The format spec of one column, or None to show it as text."""
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return None
    if pd.api.types.is_integer_dtype(values):
        return "d"
    if P_VALUE.search(name):
        return ".3g"
    if name in FORMATS:
        return FORMATS[name]
    finite = values.dropna()
    if len(finite) and (finite == finite.round()).all() and finite.abs().max() < 1e15:
        return ".0f"  # a count read back as float because a NaN sits beside it (paper_n)
    return f".{digits}f"


class KeyView:
    """A frame's key columns, rounded, with its notes as text; ``.full`` is the frame itself."""

    def __init__(self, full: pd.DataFrame, table: pd.DataFrame, notes: list[str], caption: str, index: bool):
        self.full = full  # every column, unrounded: what the numbers come from
        self.table = table  # what is shown: the key columns as formatted text
        self.notes = notes  # one line per distinct note, with the rows it belongs to
        self.caption = caption
        self._index = index

    def _repr_html_(self) -> str:
        # A header may break after an underscore (<wbr>) where the window is narrow; a value never breaks
        # (<nobr>: "fact-01" or "[0.435, 2.130]" on two lines misreads).
        cells = self.table.map(lambda v: f"<nobr>{html.escape(str(v))}</nobr>")
        cells.columns = [html.escape(str(c)).replace("_", "_<wbr>") for c in cells.columns]
        cells.index = [html.escape(str(i)) for i in cells.index]
        table = cells.to_html(index=self._index, border=0, classes="dataframe cqa-key-view", escape=False)
        caption = f'<div style="font-size: 85%; margin-top: 2px">{html.escape(self.caption)}</div>'
        notes = "".join(f'<div class="cqa-note" style="white-space: normal; margin-top: 3px">⚠ {html.escape(n)}</div>'
                        for n in self.notes)
        return f"<div>{table}{caption}{notes}</div>"

    def __repr__(self) -> str:
        return "\n".join([self.table.to_string(index=self._index), self.caption, *(f"⚠ {n}" for n in self.notes)])


def key_view(frame: pd.DataFrame, columns: str | Sequence[str], full: str | None = None, digits: int = 3,
             note: str = "note") -> KeyView:
    """``frame``'s key columns, rounded, for the screen; every distinct ``note`` printed below as text.

    Args:
        frame: any table of the study; it is kept whole as ``.full``.
        columns: a name of :data:`KEY_COLUMNS` (the table's file name, e.g. ``"stats"``) or the columns to show,
            in order; columns the frame lacks are left out. A ``<x>_low`` shown with its ``<x>_high`` becomes one
            column ``<x>`` reading ``[low, high]``.
        full: how the reader reaches every column (e.g. the notebook's variable name), named in the caption;
            default ``.full``.
        digits: decimals of a float column; p-values get three significant digits, integers none.
        note: the column of warnings (a boundary fit, a fallback test): each distinct one is shown under the table
            with the rows it belongs to, never cut off at the table's edge.

    Example: ``key_view(pd.read_csv(outputs["stats"]), "stats", full="table")``.
    """
    if isinstance(columns, str):
        if columns not in KEY_COLUMNS:
            raise ValueError(f"columns={columns!r}: not a table name; accepted: {sorted(KEY_COLUMNS)} or a list of "
                             "column names")
        columns = KEY_COLUMNS[columns]
    picked = [c for c in columns if c in frame.columns]
    if not picked:
        raise ValueError(f"none of the key columns {list(columns)} is in the frame; its columns: {list(frame.columns)}")
    shown = {}
    for name in picked:
        stem = name[: -len("_high")] if name.endswith("_high") else None
        if stem and f"{stem}_low" in picked:
            continue  # shown with its _low
        if name.endswith("_low") and (high := name[: -len("_low")] + "_high") in picked:
            spec = _column_spec(name, frame[name], digits) or "s"
            shown[name[: -len("_low")]] = [f"[{_cell(lo, spec)}, {_cell(hi, spec)}]"
                                           for lo, hi in zip(frame[name], frame[high])]
            continue
        spec = _column_spec(name, frame[name], digits)
        shown[name] = [MISSING if pd.isna(v) else str(v) for v in frame[name]] if spec is None else \
            [_cell(v, spec) for v in frame[name]]
    index = not isinstance(frame.index, pd.RangeIndex)
    table = pd.DataFrame(shown, index=frame.index)
    where = f"`{full}`" if full else "`.full` of this view"
    caption = (f"{len(picked)} of {len(frame.columns)} columns, rounded; every column, unrounded: {where}"
               if len(picked) < len(frame.columns) else f"all {len(picked)} columns, rounded; unrounded: {where}")
    return KeyView(frame, table, _notes(frame, picked, note), caption, index)


def _notes(frame: pd.DataFrame, picked: list[str], note: str) -> list[str]:
    """Each distinct non-empty note, once, with the rows it belongs to (named by their text key columns)."""
    if note not in frame.columns:
        return []
    labels = [c for c in picked if c != note and not pd.api.types.is_numeric_dtype(frame[c])
              and not pd.api.types.is_bool_dtype(frame[c])]
    rows: dict[str, list[str]] = {}
    for position, (_, row) in enumerate(frame.iterrows()):
        text = row[note]
        if not isinstance(text, str) or not text.strip():
            continue
        rows.setdefault(text.strip(), []).append(" · ".join(str(row[c]) for c in labels) or f"row {position}")
    return [f"{note}: {text} ({'; '.join(where)})" for text, where in rows.items()]


def colored_tokens(texts: list[str], values: list[float], vmax: float | None = None, unit: str = "nats") -> str:
    """HTML with each token's background red (value < 0) or blue (> 0), scaled to ``vmax``."""
    vmax = vmax or max((abs(v) for v in values), default=1.0) or 1.0
    spans = []
    for text, value in zip(texts, values):
        strength = min(abs(value) / vmax, 1.0)
        rgb = "33, 102, 172" if value > 0 else "178, 24, 43"
        spans.append(f'<span title="{value:+.3f} {unit}" style="background: rgba({rgb}, {strength:.2f}); '
                     f'white-space: pre-wrap">{html.escape(text)}</span>')
    legend = (f'<div style="font-size: 80%; margin-top: 6px">blue: more probable, red: less probable; '
              f'full colour = {vmax:.2f} {unit}; hover a token for its value</div>')
    return '<div style="line-height: 1.9; font-family: serif">' + "".join(spans) + "</div>" + legend
