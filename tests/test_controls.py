"""The ΔI controls: mismatched partners, single-slot prefixes, the reductions and their analyses."""
import pandas as pd
import pytest
from conftest import benchmark_item

from cqa_utils.controls import (baseline_blind_items, baseline_metric_check, control_values, delta_column,
                                mismatched_partners, overlap_regression)
from cqa_utils.data import BenchmarkItem, Constraints
from cqa_utils.prompts import TEMPLATES, control_prefixes, scoring_prefixes


def items(n=6):
    raw = [benchmark_item(i, "literary" if i <= n // 2 else "factual") for i in range(1, n + 1)]
    return [BenchmarkItem(r["id"], r["group"], r["lang"], r["context"], Constraints(**r["constraints"]), r["x"],
                          r.get("x_degraded"), r.get("degraded_breaks")) for r in raw]


def test_mismatched_partners_are_seeded_same_group_and_never_the_item():
    chosen = mismatched_partners(items(10), k=3, seed=7)
    groups = {i.id: i.group for i in items(10)}
    for item, partners in chosen.items():
        assert item not in partners and len(partners) == 3 and len(set(partners)) == 3
        assert {groups[p] for p in partners} == {groups[item]}
    assert mismatched_partners(items(10), k=3, seed=7) == chosen
    assert mismatched_partners(list(reversed(items(10))), k=3, seed=7) == chosen  # not file order
    assert mismatched_partners(items(10), k=3, seed=8) != chosen
    assert all(len(p) == 2 for p in mismatched_partners(items(6), k=5, seed=0).values())  # group of 3


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_single_slot_prefixes_differ_from_the_full_one_only_by_the_dropped_lines(embedded, template):
    from cqa_utils.scoring import ScoreRequest, encode_request

    _, tokenizer = embedded
    item = items()[0]
    full = scoring_prefixes(item, template)["cond"]
    lines = {"intent": f"Intent: {item.constraints.intent}\n", "audience": f"Audience: {item.constraints.audience}\n",
             "reality": f"Reality: {item.constraints.reality}\n"}
    slots = control_prefixes(item, [], ("intent", "audience", "reality"), template)
    for slot, prefix in slots.items():
        kept = slot.split(":")[1]
        expected = full
        for name, line in lines.items():
            if name != kept:
                expected = expected.replace(line, "")
        assert prefix == expected
        x_ids = [encode_request(tokenizer, ScoreRequest("k", p, item.x), 0)[1] for p in (prefix, full)]
        assert x_ids[0] == x_ids[1]


def test_mismatched_prefix_keeps_the_own_context_and_takes_the_other_constraints():
    own, other = items()[:2]
    other = BenchmarkItem(other.id, other.group, "en", "Another context.", Constraints("i2", "a2", "r2"), "y")
    prefix = control_prefixes(own, [other], (), "plain")[f"mismatch:{other.id}"]
    assert prefix == scoring_prefixes(own)["cond"].replace(
        f"Intent: {own.constraints.intent}\nAudience: {own.constraints.audience}\nReality: {own.constraints.reality}\n",
        "Intent: i2\nAudience: a2\nReality: r2\n")


def test_control_values_reduce_by_name():
    values = control_values({"cond": -10.0, "uncond": -14.0, "mismatch:b": -13.0, "mismatch:c": -11.0,
                             "slot:intent": -12.5}, n_tokens=4)
    assert values == {"delta_i": 4.0, "delta_i_mean": 1.0, "delta_i_specific": 2.0, "delta_i_specific_mean": 0.5,
                      "delta_i_intent": 1.5, "delta_i_intent_mean": 0.375}
    assert delta_column("audience", "mean") == "delta_i_audience_mean"
    with pytest.raises(ValueError, match="accepted"):
        delta_column("style")


def scores_frame():
    rows = []
    for i, (yx, yd, dx, dd) in enumerate([(3, 1, 5.0, 2.0), (2, 2, 4.0, 1.0), (1, 2, 1.0, 3.0), (0, 0, 2.0, 2.5)]):
        for variant, y_words, delta in (("x", yx, dx), ("x_degraded", yd, dd)):
            rows.append({"item_id": f"lit-{i}", "group": "literary", "variant": variant, "epoch": 0,
                         "y_words": y_words, "overlap": y_words / 10, "delta_i": delta, "delta_i_mean": delta / 10})
    return pd.DataFrame(rows)


def test_baseline_metric_check_and_the_items_it_cannot_see():
    scores = scores_frame()
    assert baseline_metric_check(scores) | {} == {"n": 4, "ahead": 1, "tied": 2, "behind": 1, "share": 0.5, "note": ""}
    assert baseline_blind_items(scores) == ["lit-1", "lit-2", "lit-3"]


def test_overlap_regression_matches_a_least_squares_fit():
    import numpy as np

    scores = scores_frame()
    fit = overlap_regression(scores).iloc[0]
    x = scores[scores.variant == "x"]
    slope, intercept = np.polyfit(x["overlap"], x["delta_i"], 1)
    r = np.corrcoef(x["overlap"], x["delta_i"])[0, 1]
    assert (fit["slope"], fit["intercept"], fit["r2"], fit["n"]) == pytest.approx((slope, intercept, r ** 2, 4))
