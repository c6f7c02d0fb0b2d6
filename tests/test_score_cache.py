"""The base-score cache: a hit returns the stored scores; any change to its key is a miss."""
import numpy as np
import pytest

from cqa_utils.score_cache import ScoreCache, score_with_cache
from cqa_utils.scoring import ScoreRequest, TokenScores

REQUESTS = [ScoreRequest(f"k{i}", f"### Passage {i}\n", f"text {i}") for i in range(3)]


def fake_scorer(calls):
    def score(requests):
        calls.append([r.key for r in requests])
        return [TokenScores(r.key, np.arange(3), -np.arange(1, 4) * (1.0 + int(r.key[1:]))) for r in requests]
    return score


def test_a_second_pass_is_served_from_the_cache(tmp_path):
    cache = ScoreCache.for_model(tmp_path, "a" * 64, "float32", "<|endoftext|>", "plain")
    calls = []
    first, hits = score_with_cache(cache, fake_scorer(calls), REQUESTS)
    assert hits == 0 and calls == [["k0", "k1", "k2"]]
    again, hits = score_with_cache(cache, fake_scorer(calls), REQUESTS[::-1] + [ScoreRequest("k9", "p", "new")])
    assert hits == 3 and calls[-1] == ["k9"]                   # only the new request is scored
    assert [s.key for s in again] == ["k2", "k1", "k0", "k9"]  # results in the caller's order
    for a, b in zip(first, again[2::-1]):
        np.testing.assert_array_equal(a.logprobs, b.logprobs)
        np.testing.assert_array_equal(a.token_ids, b.token_ids)


@pytest.mark.parametrize("change", [
    dict(weights_sha256="b" * 64), dict(precision="bfloat16"), dict(start_token=None), dict(template="compact")])
def test_other_weights_precision_start_token_or_template_miss(tmp_path, change):
    setting = dict(weights_sha256="a" * 64, precision="float32", start_token="<|endoftext|>", template="plain")
    score_with_cache(ScoreCache.for_model(tmp_path, **setting), fake_scorer([]), REQUESTS)
    calls = []
    _, hits = score_with_cache(ScoreCache.for_model(tmp_path, **(setting | change)), fake_scorer(calls), REQUESTS)
    assert hits == 0 and calls == [["k0", "k1", "k2"]]


def test_a_changed_prefix_or_continuation_misses(tmp_path):
    cache = ScoreCache.for_model(tmp_path, "a" * 64, "float32", None, "plain")
    score_with_cache(cache, fake_scorer([]), REQUESTS)
    edited = [ScoreRequest("k0", REQUESTS[0].prefix + " ", REQUESTS[0].continuation),
              ScoreRequest("k1", REQUESTS[1].prefix, REQUESTS[1].continuation + "!")]
    calls = []
    _, hits = score_with_cache(cache, fake_scorer(calls), edited)
    assert hits == 0 and calls == [["k0", "k1"]]


def test_a_scoring_change_that_bumps_the_schema_invalidates_every_entry(tmp_path, monkeypatch):
    from cqa_utils import score_cache

    cache = ScoreCache.for_model(tmp_path, "a" * 64, "float32", None, "plain")
    score_with_cache(cache, fake_scorer([]), REQUESTS)
    monkeypatch.setattr(score_cache, "SCHEMA", score_cache.SCHEMA + 1)
    calls = []
    _, hits = score_with_cache(cache, fake_scorer(calls), REQUESTS)
    assert hits == 0 and len(calls) == 1


def test_the_model_hash_covers_weights_config_and_tokenizer(tmp_path, monkeypatch):
    from cqa_utils import models

    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        (tmp_path / name).write_text(name)
    monkeypatch.setattr(models, "resolve_model_path", lambda name: str(tmp_path))
    models.weights_sha256.cache_clear()
    before = models.weights_sha256("m")
    (tmp_path / "tokenizer.json").write_text("another tokenizer")
    models.weights_sha256.cache_clear()
    assert models.weights_sha256("m") != before and len(before) == 64
    models.weights_sha256.cache_clear()


def test_requests_of_equal_text_get_equal_numbers_within_and_across_runs(tmp_path):
    """Two items may hold the same passage: one entry serves both, and a stored entry is never replaced."""
    cache = ScoreCache.for_model(tmp_path, "a" * 64, "float32", None, "plain")
    twins = [ScoreRequest("lit-1", "p", "same text"), ScoreRequest("lit-2", "p", "same text")]
    noisy = iter([-1.0, -1.0001, -1.0002, -1.0003])  # a scorer whose numbers depend on the batch

    def score(requests):
        return [TokenScores(r.key, np.arange(1), np.array([next(noisy)])) for r in requests]
    first, _ = score_with_cache(cache, score, twins)
    again, hits = score_with_cache(cache, score, twins[::-1])
    assert hits == 2
    assert {float(s.logprobs[0]) for s in first + again} == {-1.0}


def test_a_rank_that_does_not_write_gets_the_same_answers_and_leaves_the_store_alone(tmp_path):
    cache = ScoreCache.for_model(tmp_path, "a" * 64, "float32", "<|endoftext|>", "plain")
    score_with_cache(cache, fake_scorer([]), REQUESTS[:1])
    calls = []
    got, hits = score_with_cache(cache, fake_scorer(calls), REQUESTS, write=False)
    assert hits == 1 and calls == [["k1", "k2"]] and [s.key for s in got] == ["k0", "k1", "k2"]
    assert set(cache.get(REQUESTS)) == {"k0"}  # nothing new stored
    writer, _ = score_with_cache(cache, fake_scorer([]), REQUESTS)
    for a, b in zip(got, writer):
        np.testing.assert_array_equal(a.logprobs, b.logprobs)
