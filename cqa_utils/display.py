"""Small HTML views for notebooks: per-token values as coloured text (notebook 03).

matplotlib draws the publication figure (token_plots.fig_token_surprise); in a notebook,
inline HTML keeps the real text selectable and wraps like prose, which a reader wants
when looking at which words a constraint made more or less expected.
"""
from __future__ import annotations

import html


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
