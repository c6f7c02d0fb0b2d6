"""The machine's bound and a run's efficiency: FLOP counts from the model's own shapes, token
counts from what reached the model, and the README table built from efficiency.json."""
import json

import pandas as pd
import pytest
from conftest import base_only_config, benchmark_item, write_jsonl

from cqa_utils.bound import Bound, LinearShapes, linear_shapes, scoring_work, training_work
from cqa_utils.efficiency import efficiency_markdown, model_shapes
from cqa_utils.report import update_readme
from cqa_utils.scoring import ScoreRequest, request_tokens


def test_the_shapes_hold_every_matrix_weight_once(embedded):
    model, _ = embedded
    shapes = linear_shapes(model)
    matrices = sum(p.numel() for p in model.parameters() if p.ndim == 2)  # Linear weights + input embeddings
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    embeddings = model.get_input_embeddings().weight.numel()
    assert shapes.n_body == matrices - embeddings - (0 if tied else shapes.n_head)
    assert shapes.n_head == embeddings and shapes.head == (576, 49152)  # SmolLM2-135M: hidden 576, 49,152 tokens


def test_the_meta_device_shapes_equal_the_loaded_model(embedded):
    assert model_shapes("embedded:smollm2-135m-instruct") == linear_shapes(embedded[0])


def test_time_at_the_bound_is_each_products_flops_over_its_rate():
    shapes = LinearShapes({(10, 20): 3}, (10, 100))  # n_body 600, n_head 1000
    bound = Bound("float32", rows=4, head_rows=2, body_gflops=2.0, head_gflops=4.0, backward_gflops=1.0)
    score = scoring_work(forwarded_tokens=1e6, scored_tokens=5e5)
    assert bound.seconds(score, shapes) == pytest.approx(2 * 1e6 * 600 / 2e9 + 2 * 5e5 * 1000 / 4e9)
    train = training_work(tokens=1e6, target_tokens=5e5)
    forward = 2 * 1e6 * 600 / 2e9 + 2 * 5e5 * 1000 / 4e9
    backward = 2 * 1e6 * 600 / 1e9 + 2 * 5e5 * 1000 / 4e9  # transposed body products at their own rate
    assert bound.seconds(train, shapes) == pytest.approx(forward + backward)
    assert train.gflop(shapes) == pytest.approx(2 * score.gflop(shapes))


def test_stage_03_charges_only_the_tokens_that_reached_the_model(tmp_path, embedded):
    from cqa_utils.stages.logprobs import run_logprobs

    bench = write_jsonl(tmp_path / "b.jsonl", [benchmark_item(1), benchmark_item(2, group="factual")])
    small = {"score.mismatched_k": 0, "score.single_slot": False}
    cfg, _ = base_only_config(tmp_path, bench, small | {"score.base_cache": False})
    out = run_logprobs(cfg)
    pairs = [json.loads(line) for line in out["pairs"].read_text(encoding="utf-8").splitlines()]
    requests = [ScoreRequest(p["key"], p["prefix"], p["continuation"]) for p in pairs]
    timing = pd.read_csv(out["timing"]).iloc[0]
    forwarded, scored = request_tokens(embedded[1], requests, cfg.model.start_token)
    assert (timing.forwarded_tokens, timing.scored_tokens) == (forwarded, scored)
    assert timing.scored_tokens == timing.continuation_tokens and timing.batches == -(-len(requests) // 8)

    cached, _ = base_only_config(tmp_path / "again", bench, small)
    run_logprobs(cached)
    timing = pd.read_csv(run_logprobs(cached, force=True)["timing"]).iloc[0]  # every request now a cache hit
    assert timing.cached == len(requests) and (timing.forwarded_tokens, timing.batches) == (0, 0)


EFFICIENCY = {
    "run": "default", "model": "embedded:smollm2-135m-instruct", "cpu_capability": "AVX512", "torch_threads": 2,
    "shapes": {"n_body": 106168320, "n_head": 28311552},
    "training": {"tokens": 405450, "target_tokens": 120000, "resumed": False},
    "scoring": {"tokens": 900000, "scored_tokens": 300000},
    "bound": {"02": {"dtype": "bfloat16", "rows": 811, "head_rows": 240, "body_gflops": 300.0, "head_gflops": 320.0,
                     "backward_gflops": 280.0},
              "03": {"dtype": "float32", "rows": 3000, "head_rows": 900, "body_gflops": 150.0, "head_gflops": 160.0,
                     "backward_gflops": None}},
    "stages": [{"stage": "00", "seconds": 12.0, "gflop": 0.0, "bound_seconds": 0.0, "ratio": None},
               {"stage": "02", "seconds": 1500.0, "gflop": 185000.0, "bound_seconds": 640.0, "ratio": 2.34},
               {"stage": "03", "seconds": 900.0, "gflop": 200000.0, "bound_seconds": 1300.0, "ratio": 0.69}],
    "study": {"wall_seconds": 2412.0, "bound_seconds": 1940.0, "ratio": 1.24},
}


def test_the_readme_speed_block_is_generated_from_efficiency_json(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- study-time:begin -->\nold\n<!-- study-time:end -->\n"
                      "<!-- efficiency:begin -->\nold\n<!-- efficiency:end -->\ntail\n", encoding="utf-8")
    update_readme(readme, efficiency=EFFICIENCY)
    text = readme.read_text(encoding="utf-8")
    assert "old" not in text and text.endswith("<!-- efficiency:end -->\ntail\n")
    assert "Run `default` (embedded:smollm2-135m-instruct) took 40 min on 2 CPU threads" in text  # 2412 s
    assert "| 02 training | 1500 | 185000 | 640 | 2.34 |" in text and "| **study** | **2412** | | **1940** | **1.24** |" in text
    assert "405,450 tokens trained" in text and "was resumed" not in text
    assert "was resumed" in efficiency_markdown(EFFICIENCY | {"training": EFFICIENCY["training"] | {"resumed": True}})
