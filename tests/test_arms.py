"""Training arms on the real annotations: targets, prompts and loss masks per arm."""
import pytest

from cqa_utils.arms import ARMS, derangement, training_texts
from cqa_utils.config import load_config
from cqa_utils.data import load_annotations
from cqa_utils.prompts import appreciation_text, scoring_prefixes
from cqa_utils.training import IGNORE_INDEX, tokenize_examples


@pytest.fixture(scope="module")
def annotations():
    return load_annotations(load_config("default").resolve_path("data/annotations/cot_annotations.jsonl"))


def test_cot_is_the_papers_target(annotations):
    texts = training_texts(annotations, "cot")
    assert [t.id for t in texts] == [t.target_id for t in texts] == [a.id for a in annotations]
    assert texts[0] == appreciation_text(annotations[0])
    assert texts[0].target.startswith("1. [") and "Verdict: " in texts[0].target


def test_shuffled_cot_never_keeps_a_passages_own_cot_and_is_seeded(annotations):
    cot = {t.id: t for t in training_texts(annotations, "cot")}
    shuffled = training_texts(annotations, "shuffled_cot", seed=7)
    assert all(t.target_id != t.id for t in shuffled)                          # a derangement
    assert all(t.prompt == cot[t.id].prompt and t.target == cot[t.target_id].target for t in shuffled)
    assert sorted(t.target for t in shuffled) == sorted(t.target for t in cot.values())  # same target text
    assert training_texts(annotations, "shuffled_cot", seed=7) == shuffled
    assert [t.target_id for t in training_texts(annotations, "shuffled_cot", seed=8)] != [t.target_id for t in shuffled]


def test_derangement_has_no_fixed_point_and_refuses_one_item():
    for seed in range(50):
        perm = derangement(3, seed)
        assert sorted(perm) == [0, 1, 2] and all(p != i for i, p in enumerate(perm))
    with pytest.raises(ValueError, match="at least 2 annotations"):
        derangement(1, 0)


def test_verdict_only_keeps_the_prompt_and_only_the_verdict_line(annotations):
    cot, verdict = training_texts(annotations, "cot"), training_texts(annotations, "verdict_only")
    for c, v, ann in zip(cot, verdict, annotations):
        assert v.prompt == c.prompt and c.target.endswith(v.target)
        assert v.target.startswith(f"Verdict: {ann.judgment.verdict}.") and "[" not in v.target


def test_passage_lm_trains_x_after_exactly_the_scoring_prefix(annotations):
    from cqa_utils.data import BenchmarkItem
    ann = annotations[0]
    text = training_texts([ann], "passage_lm")[0]
    as_item = BenchmarkItem(id=ann.id, group="literary", lang=ann.lang, context=ann.context,
                            constraints=ann.constraints, x=ann.passage)
    assert text.prompt == scoring_prefixes(as_item)["cond"]       # the prefix P(x | y) is scored after
    assert text.target == ann.passage.strip()


def test_unknown_arm_is_refused_by_the_config_and_the_builder(annotations):
    with pytest.raises(ValueError, match="train.arm"):
        load_config("smoke", {"train.arm": "cot_shuffled"})
    with pytest.raises(ValueError, match="not an arm"):
        training_texts(annotations, "cot_shuffled")


@pytest.mark.parametrize("arm", ARMS)
def test_each_arms_loss_mask_covers_its_target_and_nothing_else(arm):
    from transformers import AutoTokenizer

    from cqa_utils.models import resolve_model_path

    cfg = load_config("smoke", {"train.arm": arm})
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(cfg.model.name))
    examples = tokenize_examples(cfg, tokenizer, None)
    texts = {t.id: t for t in training_texts(load_annotations(cfg.resolve_path(cfg.data.annotations))[:len(examples)],
                                              arm, cfg.prompt.template, cfg.run.seed)}
    for e in examples:
        n_prompt = e["prompt_tokens"]
        assert e["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
        target = [t for t in e["labels"][n_prompt:]]
        assert IGNORE_INDEX not in target and target[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(target[:-1]) == texts[e["id"]].target
        assert e["target_id"] == texts[e["id"]].target_id
