"""Exact log-probs on the real embedded model (fp32, CPU)."""
import numpy as np
import pytest
import torch

from cqa_utils.scoring import ScoreRequest, encode_request, score_requests, split_boundary, start_token_id

REQUESTS = [
    ScoreRequest("a", "### Passage\n", "The kettle ticked as it warmed."),
    ScoreRequest("b", "", "Water boils at a lower temperature on a mountain."),
    ScoreRequest("c", "Context: a long night shift on a ward.\n\n### Passage\n",
                 "She counted the drips and the minutes, and lost track of both around three."),
    ScoreRequest("d", "Answer: ", "forty-two"),
    ScoreRequest("e", "### Passage\n", "Short."),
]
# fp32 noise floor, measured here: a different matmul shape moves per-token log-probs by up
# to 1.2e-5 nats and sums of ~10 tokens by up to 1.7e-5 nats. Scoring runs the output head on
# the continuation positions only, so even one pair at a time differs from the full-logit
# reference in the head's shape (measured: up to 8.6e-6 nats at batch 1, 1.1e-5 at batch 5).
EXACT = 1e-5  # one pair at a time: the body has the naive call's shapes, the head does not
TOLERANCE = 2e-5  # per token, batched
SUM_TOLERANCE = 5e-5  # summed continuation, batched


def naive_logprobs(model, tokenizer, request, start_token="<|endoftext|>"):
    """Independent reference: one unpadded sequence, full log-softmax, no batching."""
    start = tokenizer.convert_tokens_to_ids(start_token)
    prefix, cont = split_boundary(request.prefix, request.continuation)
    ctx = [start] + tokenizer(prefix, add_special_tokens=False).input_ids
    tgt = tokenizer(cont, add_special_tokens=False).input_ids
    ids = torch.tensor([ctx + tgt])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    return np.array([logp[len(ctx) - 1 + i, t].item() for i, t in enumerate(tgt)])


@pytest.fixture(scope="module")
def reference(embedded):
    model, tokenizer = embedded
    return {r.key: naive_logprobs(model, tokenizer, r) for r in REQUESTS}


def score(embedded, requests, **kwargs):
    model, tokenizer = embedded
    return {s.key: s for s in score_requests(model, tokenizer, requests, start_token="<|endoftext|>",
                                             progress=False, **kwargs)}


def test_one_pair_at_a_time_equals_a_naive_reference(embedded, reference):
    for key, result in score(embedded, REQUESTS, batch_size=1).items():
        np.testing.assert_allclose(result.logprobs, reference[key], atol=EXACT, rtol=0)


def test_batched_scores_equal_the_naive_reference_within_the_fp32_floor(embedded, reference):
    for key, result in score(embedded, REQUESTS, batch_size=5).items():
        np.testing.assert_allclose(result.logprobs, reference[key], atol=TOLERANCE, rtol=0)
        assert abs(result.logprobs.sum() - reference[key].sum()) < SUM_TOLERANCE


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_scores_do_not_depend_on_batch_size(embedded, reference, batch_size):
    for key, result in score(embedded, REQUESTS, batch_size=batch_size).items():
        np.testing.assert_allclose(result.logprobs, reference[key], atol=TOLERANCE, rtol=0)
        assert abs(result.logprobs.sum() - reference[key].sum()) < SUM_TOLERANCE


def test_results_come_back_in_input_order_whatever_the_order(embedded):
    forward = score(embedded, REQUESTS, batch_size=2)
    backward = score(embedded, REQUESTS[::-1], batch_size=2)
    model, tokenizer = embedded
    ordered = score_requests(model, tokenizer, REQUESTS[::-1], progress=False)
    assert [s.key for s in ordered] == [r.key for r in REQUESTS[::-1]]
    for key in forward:
        np.testing.assert_allclose(forward[key].logprobs, backward[key].logprobs, atol=TOLERANCE, rtol=0)


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
