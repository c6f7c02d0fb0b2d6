"""The figure that compares models: Δ(ΔI) of each group at each run's headline epoch, per model.

Stage 05 draws it (``fig_k_across_models``) when the run and the single-model runs published
in ``reference/`` (:func:`cqa_utils.report.published_model_reports`) hold more than one model,
so a reader sees SmolLM2 and Gemma side by side without training either.
"""
from __future__ import annotations

from .plots import GROUP_COLOURS, styled_pyplot

KINDS = ("full", "specific")


def headline_rows(report: dict) -> list[dict]:
    """The summed-nats rows of a stage 04 report at its headline epoch, labelled with its model and run."""
    label = {"model": report["run"]["model"].removeprefix("embedded:"), "run": report["run"]["name"]}
    return [label | r for r in report.get("stats_table", [])
            if r["measure"] == "sum" and r["epoch"] == report["headline_epoch"] and r["kind"] in KINDS]


def models_in(reports: list[dict]) -> set[str]:
    return {report["run"]["model"] for report in reports}


def fig_across_models(reports: list[dict]):
    """Mean Δ(ΔI) (nats, summed over x) with its 95 % bootstrap CI, one panel per ΔI kind,
    groups side by side and one marker per run; the paper's claim is a literary rise only."""
    import pandas as pd
    from matplotlib.lines import Line2D

    plt = styled_pyplot()
    rows = pd.DataFrame([row for report in reports for row in headline_rows(report)])
    if rows.empty:
        raise ValueError("none of the reports has a summed-nats row at its headline epoch")
    runs = list(dict.fromkeys(zip(rows["model"], rows["run"])))
    kinds = [k for k in KINDS if k in set(rows["kind"])]
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.6 * len(kinds) + 1.2, 3.4), sharey=True, squeeze=False)
    markers = "osD^v<>"
    for ax, kind in zip(axes[0], kinds):
        for g, group in enumerate(["literary", "factual"]):
            for r, (model, run) in enumerate(runs):
                one = rows[(rows["kind"] == kind) & (rows["group"] == group) & (rows["model"] == model)
                           & (rows["run"] == run)]
                if one.empty:
                    continue
                row = one.iloc[0]
                x = g + (r - (len(runs) - 1) / 2) * 0.18
                ax.errorbar([x], [row["mean"]], yerr=[[row["mean"] - row["ci_low"]], [row["ci_high"] - row["mean"]]],
                            fmt=markers[r % len(markers)], color=GROUP_COLOURS.get(group, "0.4"), capsize=3)
        ax.axhline(0, color="0.3", linewidth=0.8)
        ax.set_xticks([0, 1], ["literary", "factual"])
        ax.set(title=f"ΔI {kind}", xlim=(-0.6, 1.6))
    axes[0][0].set_ylabel("Δ(ΔI) at the headline epoch (nats, summed over x)")
    handles = [Line2D([], [], marker=markers[r % len(markers)], color="0.2", linestyle="none", label=f"{m} ({run})")
               for r, (m, run) in enumerate(runs)]
    axes[0][-1].legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.suptitle("Across models: fine-tuned minus base ΔI, mean and 95 % CI", fontsize=10)
    fig.tight_layout()
    return fig
