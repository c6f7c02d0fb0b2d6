import pytest
from conftest import annotation, benchmark_item

from cqa_utils.data import Annotation, BenchmarkItem, Constraints, CotStep, Judgment
from cqa_utils.prompts import TEMPLATES, appreciation_text, get_template, scoring_prefixes


def item(**changes):
    raw = benchmark_item(1)
    raw.update(changes)
    return BenchmarkItem(raw["id"], raw["group"], raw["lang"], raw["context"], Constraints(**raw["constraints"]),
                         raw["x"], raw.get("x_degraded"), raw.get("degraded_breaks"))


def test_conditional_prefix_differs_only_by_the_constraint_block():
    prefixes = scoring_prefixes(item())
    assert prefixes["cond"].startswith("### Context\n") and prefixes["cond"].endswith("### Passage\n")
    assert "Intent: show the crossing's calm\n" in prefixes["cond"]
    assert prefixes["uncond"] == prefixes["cond"].replace(
        "### Constraints\nIntent: show the crossing's calm\nAudience: general adult readers\n"
        "Reality: a diesel river ferry at dusk\n\n", "")


def test_empty_context_leaves_only_the_passage_header():
    assert scoring_prefixes(item(context=""))["uncond"] == "### Passage\n"


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_continuation_tokens_are_identical_after_either_prefix(embedded, template):
    from cqa_utils.scoring import ScoreRequest, encode_request

    _, tokenizer = embedded
    for text in ("The ferry nosed out.", " leading space", "Quote: \"yes\" — and 3.5 km\nsecond line"):
        prefixes = scoring_prefixes(item(), template)
        conts = [encode_request(tokenizer, ScoreRequest("k", prefixes[c], text), 0)[1] for c in ("cond", "uncond")]
        assert conts[0] == conts[1] == tokenizer(text, add_special_tokens=False).input_ids


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_encoding_prefix_and_x_together_gives_the_same_tail_as_apart(embedded, template):
    """The scorer encodes prefix and x apart; that must equal what the model sees for the joined text."""
    _, tokenizer = embedded
    for text in ("The ferry nosed out.", "“Quoted” opening — and 3.5 km\nsecond line", "lower-case start"):
        for prefix in scoring_prefixes(item(), template).values():
            joint = tokenizer(prefix + text, add_special_tokens=False).input_ids
            apart = tokenizer(prefix, add_special_tokens=False).input_ids + tokenizer(text, add_special_tokens=False).input_ids
            assert joint == apart, (template, prefix[-20:], text)


def test_training_text_masks_nothing_of_the_target_and_ends_with_the_verdict():
    raw = annotation(1)
    ann = Annotation(raw["id"], "en", raw["genre"], raw["context"], Constraints(**raw["constraints"]), raw["passage"],
                     tuple(CotStep(**s) for s in raw["cot"]), Judgment(**raw["judgment"]))
    text = appreciation_text(ann)
    assert text.prompt.endswith("### Appreciation\n") and raw["passage"] in text.prompt
    assert text.target.startswith("1. [intent] ") and text.target.endswith("Verdict: works. Small physical signs hold the wait.\n")
    assert "### Constraints" in text.prompt


def test_unknown_template_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"known: \['compact', 'plain'\]"):
        get_template("chatml")
