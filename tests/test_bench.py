"""The benchmark's bookkeeping (no speed is asserted here): turn-taking timings, the profile's
grouping of operators, and the README table rendered from a bench record."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import malloc_of_a_child

from cqa_utils.malloc import PREFERENCE

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_scoring  # noqa: E402
import bench_training_variants  # noqa: E402
import paper_estimate  # noqa: E402
import profile_stages  # noqa: E402
import run_all  # noqa: E402


def test_packed_examples_do_not_attend_across_each_other(embedded):
    """The packing variant's per-example losses equal the unpacked ones on real annotations; plain
    concatenation (no restarting positions) does not, so the comparison can fail."""
    import torch

    from cqa_utils.config import load_config
    from cqa_utils.training import tokenize_examples

    model, tokenizer = embedded
    examples = tokenize_examples(load_config("smoke", {"data.max_annotations": 3}), tokenizer, None)
    with torch.no_grad():
        alone = torch.cat([bench_training_variants.example_losses(
            model, torch.tensor([e["input_ids"]]), torch.tensor([e["labels"]])) for e in examples])
        ids, labels, positions, ends = bench_training_variants.packed(examples)
        together = bench_training_variants.example_losses(model, ids, labels, positions, ends)
        concatenated = bench_training_variants.example_losses(model, ids, labels, None, ends)
    assert len(together) == len(examples) == 3
    torch.testing.assert_close(together, alone, atol=2e-4, rtol=0)
    assert (concatenated[1:] - alone[1:]).abs().min() > 1e-2
    assert concatenated[0] == pytest.approx(alone[0].item(), abs=2e-4)


def test_timed_functions_take_turns_and_each_gets_its_own_median():
    calls = []
    result = bench_scoring.alternating({"a": lambda: calls.append("a") or 1, "b": lambda: calls.append("b") or 2}, 3)
    assert calls == ["a", "b"] * 3
    assert {name: (len(times), last) for name, (_, times, last) in result.items()} == {"a": (3, 1), "b": (3, 2)}
    median, times, _ = result["a"]
    assert median == pytest.approx(sorted(times)[1], abs=1e-3)


def test_the_profile_groups_real_operators_by_kind():
    import torch

    def work():
        x = torch.randn(64, 256)
        torch.log_softmax(x @ torch.randn(256, 512), dim=-1)
        torch.nn.functional.dropout(x, 0.1, training=True)
        x.to(torch.bfloat16)

    shares = profile_stages.shares(profile_stages._profiled(work))
    assert {"matmul", "log-softmax", "dropout masks", "casts and copies"} <= set(shares)
    assert sum(v["share"] for v in shares.values()) == pytest.approx(1.0, abs=0.01)
    assert list(shares) == sorted(shares, key=lambda kind: -shares[kind]["seconds"])  # largest first
    assert profile_stages.group_of("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert profile_stages.group_of("aten::silu") == profile_stages.OTHER


@pytest.fixture
def reference_bench():
    return json.loads((BENCHMARKS.parent / "reference" / "bench" / "bench.json").read_text(encoding="utf-8"))


def test_the_readme_table_marks_each_goal_and_says_how_the_timings_were_taken(reference_bench):
    reference_bench["scoring"]["alternating"] = False  # an older record: one scorer's timings after the other's
    reference_bench.pop("profile", None)
    table = run_all.bench_markdown(reference_bench)
    scoring = next(line for line in table.splitlines() if line.startswith("| scoring: speed vs lm-eval"))
    met = "yes" if reference_bench["scoring"]["ratio_vs_lm_eval"] >= 1.15 else "**no**"
    assert scoring.endswith(f"| ≥ 1.15 | {met} |")
    assert "taking turns" not in scoring
    reference_bench["scoring"]["alternating"] = True
    assert "taking turns" in run_all.bench_markdown(reference_bench)
    assert "Where training time goes" not in table  # no profile phase, no profile line


def test_a_record_with_the_profile_phase_shows_where_each_stage_spends_its_time(reference_bench):
    by_kind = {"matmul": {"seconds": 7.5, "share": 0.75}, "attention": {"seconds": 2.5, "share": 0.25}}
    reference_bench["profile"] = {stage: {"tokens": 100, "precision": "float32", "self_cpu_s": 10.0,
                                          "by_kind": by_kind} for stage in ("training", "scoring")}
    reference_bench["profile"]["peak_rss_gib"] = 5.2  # every phase's record carries its process's peak
    lines = [line for line in run_all.bench_markdown(reference_bench).splitlines() if line.startswith("Where ")]
    assert lines == [f"Where {stage} time goes (torch.profiler, 100 tokens, float32, self CPU 10.0 s; "
                     f"`profile_{stage}.txt`): matmul 75%, attention 25%." for stage in ("training", "scoring")]


def test_the_training_levers_table_shows_every_variant_of_the_record():
    record = json.loads((BENCHMARKS.parent / "reference" / "bench" / "training_variants.json").read_text(encoding="utf-8"))
    table = run_all.variants_markdown(record).splitlines()
    rows = [line for line in table if line.startswith("| ") and not line.startswith("| variant")]
    assert [row.split(" | ")[0][2:] for row in rows] == [v["variant"] for v in record["variants"]]
    assert rows[0].split(" | ")[2] == "1.00×"  # the yardstick is stage 02's own step
    assert f"{record['variants'][0]['tokens']} tokens" in table[0]


def test_the_paper_estimate_charges_qwen25_7b_shapes_at_the_measured_ratios():
    layers, hidden, inter, kv = 28, 3584, 18944, 512
    estimate = paper_estimate.run()
    assert estimate["shapes"]["n_body"] == layers * (2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter)
    assert estimate["shapes"]["n_head"] == hidden * 152064                  # untied head
    reference = json.loads((BENCHMARKS.parent / "reference" / "default" / "efficiency.json").read_text())
    train = estimate["stages"]["02"]
    flops = 6 * reference["training"]["tokens"] * estimate["shapes"]["n_body"] + \
        4 * reference["training"]["target_tokens"] * estimate["shapes"]["n_head"]  # checkpointing: 3 body passes
    assert train["seconds_at_rate"] == pytest.approx(flops / 989e12, abs=0.1)
    ratio = next(s["ratio"] for s in reference["stages"] if s["stage"] == "02")
    assert train["estimated_seconds"] == pytest.approx(flops / 989e12 * ratio, abs=0.1)
    bench = json.loads((BENCHMARKS.parent / "reference" / "bench" / "bench.json").read_text())
    line = next(x for x in run_all.bench_markdown({**bench, "paper_estimate": estimate}).splitlines()
                if x.startswith("**Estimate"))
    assert f"about {estimate['estimated_minutes']:.0f} min" in line and "not a measurement" in line


def test_the_allocator_bench_sees_which_malloc_its_child_really_runs():
    import bench_allocator

    assert bench_allocator.allocator_env("glibc") == {}
    assert malloc_of_a_child(bench_allocator.allocator_env("glibc_pinned_mmap")) == "glibc"
    preloads = {name: bench_allocator.allocator_env(name) for name in PREFERENCE}
    present = {name: env for name, env in preloads.items() if env is not None}
    if not present:
        pytest.skip("no jemalloc or tcmalloc here: apt-get install libjemalloc2 libtcmalloc-minimal4")
    for name, env in present.items():
        assert malloc_of_a_child(env) == name


def test_a_child_whose_preload_did_not_take_refuses_to_report(monkeypatch):
    import bench_allocator

    monkeypatch.delenv("LD_PRELOAD", raising=False)
    with pytest.raises(RuntimeError, match="asked for jemalloc, the process runs glibc"):
        bench_allocator._child("jemalloc", 1)
