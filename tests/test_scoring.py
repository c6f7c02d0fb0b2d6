"""Exact log-probs on the real embedded model (fp32, CPU)."""
import numpy as np
import pytest
import torch
from conftest import REORDERINGS, assert_within, fp32_floor, naive_batch_logprobs

from cqa_utils.scoring import ScoreRequest, encode_request, score_requests, split_boundary, start_token_id

REQUESTS = [
    ScoreRequest("a", "### Passage\n", "The kettle ticked as it warmed."),
    ScoreRequest("b", "", "Water boils at a lower temperature on a mountain."),
    ScoreRequest("c", "Context: a long night shift on a ward.\n\n### Passage\n",
                 "She counted the drips and the minutes, and lost track of both around three."),
    ScoreRequest("d", "Answer: ", "forty-two"),
    ScoreRequest("e", "### Passage\n", "Short."),
]


def naive_logprobs(model, tokenizer, request, start_token="<|endoftext|>"):
    """Independent reference: one unpadded sequence, full log-softmax, no batching."""
    return naive_batch_logprobs(model, tokenizer, [request], start_token)[0]


@pytest.fixture(scope="module")
def reference(embedded):
    model, tokenizer = embedded
    return {r.key: naive_logprobs(model, tokenizer, r) for r in REQUESTS}


@pytest.fixture(scope="module")
def bounds(embedded):
    """(per-token, summed) bound in nats: REORDERINGS × the fp32 floor measured on this CPU (conftest)."""
    token, summed = fp32_floor(*embedded, REQUESTS)
    return REORDERINGS * token, REORDERINGS * max(summed, token)


def assert_scores_within(results, reference, bounds, label):
    token_bound, sum_bound = bounds
    for key, result in results.items():
        assert_within(result.logprobs, reference[key], token_bound, f"{label}, request {key!r}, per token (nats)")
        assert_within(result.logprobs.sum(), reference[key].sum(), sum_bound, f"{label}, request {key!r}, sum (nats)")


def score(embedded, requests, **kwargs):
    model, tokenizer = embedded
    return {s.key: s for s in score_requests(model, tokenizer, requests, start_token="<|endoftext|>",
                                             progress=False, **kwargs)}


def test_the_measured_fp32_floor_is_rounding_not_a_bug(bounds):
    """A padding or masking bug in the naive variants moves log-probs by whole nats, not by rounding."""
    assert max(bounds) < 1e-3, f"the naive reference's exact variants disagree by {bounds} nats"


def test_one_pair_at_a_time_equals_a_naive_reference(embedded, reference, bounds):
    assert_scores_within(score(embedded, REQUESTS, batch_size=1), reference, bounds, "batch 1")


def test_batched_scores_equal_the_naive_reference_within_the_fp32_floor(embedded, reference, bounds):
    assert_scores_within(score(embedded, REQUESTS, batch_size=5), reference, bounds, "batch 5")


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_scores_do_not_depend_on_batch_size(embedded, reference, bounds, batch_size):
    assert_scores_within(score(embedded, REQUESTS, batch_size=batch_size), reference, bounds, f"batch {batch_size}")


def test_results_come_back_in_input_order_whatever_the_order(embedded, bounds):
    forward = score(embedded, REQUESTS, batch_size=2)
    backward = score(embedded, REQUESTS[::-1], batch_size=2)
    model, tokenizer = embedded
    ordered = score_requests(model, tokenizer, REQUESTS[::-1], progress=False)
    assert [s.key for s in ordered] == [r.key for r in REQUESTS[::-1]]
    assert_scores_within(backward, {k: v.logprobs for k, v in forward.items()}, bounds, "reversed order")


def test_trailing_space_of_the_prefix_moves_into_the_continuation(embedded):
    _, tokenizer = embedded
    assert split_boundary("Answer: ", "forty-two") == ("Answer:", " forty-two")
    ctx, cont = encode_request(tokenizer, REQUESTS[3], 0)
    assert tokenizer.decode(cont) == " forty-two" and tokenizer.decode(ctx[1:]) == "Answer:"


def test_empty_prefix_conditions_on_the_start_token_only(embedded):
    _, tokenizer = embedded
    ctx, _ = encode_request(tokenizer, REQUESTS[1], start_token_id(tokenizer, "<|endoftext|>"))
    assert ctx == [tokenizer.convert_tokens_to_ids("<|endoftext|>")]


def test_start_token_must_be_one_token(embedded):
    _, tokenizer = embedded
    with pytest.raises(ValueError, match="not a single token"):
        start_token_id(tokenizer, "<|not-a-token|>")


def test_empty_continuation_and_overlong_text_are_errors(embedded):
    model, tokenizer = embedded
    with pytest.raises(ValueError, match="'z': the continuation is empty"):
        score_requests(model, tokenizer, [ScoreRequest("z", "prefix", "")], progress=False)
    long = ScoreRequest("long", "", "word " * (model.config.max_position_embeddings + 10))
    with pytest.raises(ValueError, match="'long': .* exceed the model's context"):
        score_requests(model, tokenizer, [long], progress=False)


def test_two_gloo_processes_score_exactly_as_one(embedded, tmp_path):
    """Scoring sharded across two CPU processes (torchrun, gloo) gives the one-process scores,
    bit for bit, at the same thread count (torchrun would set 1 thread per process, and fp32
    GEMMs split across a different number of threads round differently)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "sharded.npz"
    worker = Path(__file__).with_name("sharded_scoring.py")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(worker), str(out), "2"], check=True, timeout=600,
                   env=os.environ | {"OMP_NUM_THREADS": str(torch.get_num_threads())})
    sharded = np.load(out)
    assert int(sharded["processes"]) == 2 and str(sharded["backend"]) == "gloo"
    assert list(sharded["keys"]) == [r.key for r in REQUESTS]
    for key, result in score(embedded, REQUESTS, batch_size=2).items():
        np.testing.assert_array_equal(sharded[key], result.logprobs, err_msg=key)


def test_stage_03_as_two_processes_writes_the_one_process_scores(tmp_path):
    """``torchrun … cqa logprobs``: each rank scores a share, rank 0 writes what one process writes."""
    import os
    import subprocess
    import sys

    import pandas as pd

    from conftest import PROJECT_ROOT, base_only_config
    from cqa_utils.runs import stage_dir
    from cqa_utils.stages.logprobs import run_logprobs

    benchmark = PROJECT_ROOT / "data" / "benchmark" / "benchmark_v2.jsonl"
    small = {"data.max_items_per_group": 2, "score.base_cache": False, "score.mismatched_k": 1}
    one, _ = base_only_config(tmp_path / "one", benchmark, small)
    two, overrides = base_only_config(tmp_path / "two", benchmark, small)
    run_logprobs(one)
    sets = [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    "-m", "cqa_utils.cli", "logprobs", "--config", "smoke", *sets], check=True, timeout=900,
                   env=os.environ | {"OMP_NUM_THREADS": str(torch.get_num_threads())})
    columns = ["item_id", "variant", "epoch", "logp_cond", "logp_uncond", "delta_i_specific"]
    pd.testing.assert_frame_equal(pd.read_csv(stage_dir(two, "03") / "scores.csv")[columns],
                                  pd.read_csv(stage_dir(one, "03") / "scores.csv")[columns])
