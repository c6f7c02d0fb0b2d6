"""Run every benchmark and write ``results/bench/bench.json`` and ``bench.md`` (``make bench``).

Each phase runs in a fresh (spawned) process, so its peak resident memory is its own, and with the
malloc the study's kernels get (:mod:`cqa_utils.malloc`), so the bench times what `make reproduce` runs.
Numbers are measured on the machine at hand, against the ecosystem's own tools and the
machine's matmul bound in the same run: re-run them rather than trusting another CPU's.
``--readme`` also writes the table into README.md's ``bench`` block.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import paper_estimate  # noqa: E402

from cqa_utils.config import PROJECT_ROOT, load_config  # noqa: E402
from cqa_utils.malloc import preload_env  # noqa: E402
from cqa_utils.report import replace_block  # noqa: E402
from cqa_utils.runs import environment_record, write_json, write_text  # noqa: E402

PHASES = ("bound", "scoring", "training", "profile", "scaling")
GOALS = {  # the performance issue's targets: (direction, value)
    ("scoring", "ratio_vs_lm_eval"): (">=", 1.15), ("scoring", "max_abs_diff_nats"): ("<=", 2e-4),
    ("scoring", "fraction_of_bound"): (">=", 0.85), ("training", "ratio_vs_trl"): (">=", 1.5),
    ("training", "fraction_of_bound"): (">=", 0.5), ("peak_rss_gib", "max"): ("<=", 8.0),
}
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
BENCH_DIR = PROJECT_ROOT / "results" / "bench"


def machine_bound() -> dict:
    """The machine's sustained matmul rate, fp32 and bf16, on the embedded model's own Linear shapes."""
    from cqa_utils.bound import measure_bound
    from cqa_utils.efficiency import model_shapes

    shapes = model_shapes(load_config("default").model.name)
    return {"shapes": shapes.as_dict(), **{dtype: measure_bound(shapes, dtype=dtype, rows=512, head_rows=512,
                                                                backward=True).as_dict()
                                           for dtype in ("float32", "bfloat16")}}


def _phase(name: str) -> dict:
    """One phase, in its own process; returns its result and the process's peak RSS."""
    import bench_scaling
    import bench_scoring
    import bench_training
    import profile_stages

    from cqa_utils.malloc import malloc_in_use
    from cqa_utils.runs import peak_rss_gib

    run = {"bound": machine_bound, "scoring": bench_scoring.run, "training": bench_training.run,
           "profile": lambda: profile_stages.run(out=BENCH_DIR), "scaling": bench_scaling.run}[name]
    return {**run(), "peak_rss_gib": peak_rss_gib(), "malloc": malloc_in_use()}


def _met(value: float, goal: tuple[str, float]) -> str:
    return "yes" if (value >= goal[1] if goal[0] == ">=" else value <= goal[1]) else "**no**"


def bench_markdown(bench: dict) -> str:
    """The README's table: each measure, its goal, whether it is met; then the scaling points."""
    s, t, rss = bench["scoring"], bench["training"], bench["peak_rss_gib"]
    rows = [
        ("scoring: speed vs lm-eval `HFLM.loglikelihood`, same tokens (median of "
         f"{s['repeats']}{', taking turns' if s.get('alternating') else ''})", s["ratio_vs_lm_eval"],
         f"{s['ratio_vs_lm_eval']:.2f}× ({s['tokens_per_s']:.0f} vs {s['lm_eval_tokens_per_s']:.0f} tok/s)",
         ("scoring", "ratio_vs_lm_eval")),
        ("scoring: largest difference from lm-eval", s["max_abs_diff_nats"], f"{s['max_abs_diff_nats']:.1e} nats",
         ("scoring", "max_abs_diff_nats")),
        ("scoring: share of the fp32 bound", s["fraction_of_bound"], f"{s['fraction_of_bound']:.0%}",
         ("scoring", "fraction_of_bound")),
        ("training: speed vs TRL `SFTTrainer`", t["ratio_vs_trl"], f"{t['ratio_vs_trl']:.2f}× (final loss ratio "
         f"{t['final_loss_vs_trl']:.4f})", ("training", "ratio_vs_trl")),
        (f"training: share of the {t['precision']} bound", t["fraction_of_bound"], f"{t['fraction_of_bound']:.0%}",
         ("training", "fraction_of_bound")),
        ("peak RSS (scoring / training / max)", rss["max"], f"{rss['scoring']:.1f} / {rss['training']:.1f} / "
         f"{rss['max']:.1f} GiB", ("peak_rss_gib", "max")),
    ]
    lines = ["| measure | this machine | goal | met |", "|---|---|---|---|"]
    for label, value, shown, key in rows:
        goal = GOALS[key]
        lines.append(f"| {label} | {shown} | {goal[0].replace('>=', '≥').replace('<=', '≤')} {goal[1]:g} | "
                     f"{_met(value, goal)} |")
    merge = s["adapter_merge"]
    b = bench["bound"]
    env = bench["environment"]
    lines += ["", f"Bound on the model's shapes at 512 rows: fp32 {b['float32']['body_gflops']:.0f} GFLOP/s body, "
                  f"{b['float32']['head_gflops']:.0f} head; bf16 {b['bfloat16']['body_gflops']:.0f} body, "
                  f"{b['bfloat16']['head_gflops']:.0f} head. Adapters merged for scoring: "
                  f"{merge['speedup']:.2f}× the unmerged LoRA layers, at most "
                  f"{merge['max_abs_diff_nats_per_token']:.1e} nats/token apart.",
              *_profile_lines(bench.get("profile")), *_estimate_lines(bench.get("paper_estimate")),
              "", "| scaling | size | tokens | seconds | tok/s | share of bound |", "|---|---|---:|---:|---:|---:|"]
    for kind in ("scoring", "training"):
        for p in bench["scaling"][kind]:
            tokens = p.get("forwarded_tokens", p.get("tokens"))
            lines.append(f"| {kind} by {p['axis']} | {p['size']} | {tokens} | {p['seconds']:.1f} | "
                         f"{p['tokens_per_s']:.0f} | {p['fraction_of_bound']:.0%} |")
    malloc = bench["training"].get("malloc", "glibc (not recorded)")
    lines += ["", f"Measured {bench['finished'][:10]} on {bench['machine']['processor']} "
                  f"({env['torch_threads']} threads, CPU capability {env['cpu_capability']}, malloc {malloc}), torch "
                  f"{env['packages']['torch']}; `results/bench/bench.json` holds every raw time."]
    return "\n".join(lines)


def _profile_lines(profile: dict | None) -> list[str]:
    """Where each stage's time went (torch.profiler), for records that have the profile phase."""
    import profile_stages

    lines = []
    for stage in (stage for stage in profile_stages.STAGES if stage in (profile or {})):
        p = profile[stage]
        kinds = ", ".join(f"{kind} {v['share']:.0%}" for kind, v in p["by_kind"].items())
        lines += ["", f"Where {stage} time goes (torch.profiler, {p['tokens']} tokens, {p['precision']}, self CPU "
                      f"{p['self_cpu_s']:.1f} s; `profile_{stage}.txt`): {kinds}."]
    return lines


def _estimate_lines(estimate: dict | None) -> list[str]:
    """The paper config on one GPU, estimated (``paper_estimate.py``), for records that have it."""
    if not estimate:
        return []
    train, score = estimate["stages"]["02"], estimate["stages"]["03"]
    return ["", f"**Estimate, not a measurement:** the paper config ({estimate['model']}) on one GPU at spec rates "
                f"(bf16 {train['assumed_tflops']:g}, fp32 {score['assumed_tflops']:g} TFLOP/s) takes "
                f"{train['seconds_at_rate']:.0f} s of training and {score['seconds_at_rate']:.0f} s of scoring "
                f"for run `{estimate['work_from']}`'s tokens; at the wall/bound ratios measured here on CPU "
                f"({train['cpu_measured_ratio']}, {score['cpu_measured_ratio']}) about "
                f"{estimate['estimated_minutes']:.0f} min. nf4 dequantization and a GPU's own small-batch "
                f"overheads are not in it, so read it as a floor until a GPU run measures it."]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readme", action="store_true", help="also write the table into README.md")
    parser.add_argument("--render", action="store_true", help="measure nothing: rewrite bench.md (and with "
                                                                "--readme the README block) from bench.json")
    args = parser.parse_args(argv)
    out = BENCH_DIR
    if args.render:
        return publish(json.loads((out / "bench.json").read_text(encoding="utf-8")), out, args.readme)
    os.environ.update(preload_env())  # the phases run the malloc stage 02's kernels run (cqa_utils.malloc)
    bench = {}
    for name in PHASES:
        print(f"=== {name}", flush=True)
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            bench[name] = pool.submit(_phase, name).result()
        print(json.dumps(bench[name], indent=1)[:2000], flush=True)
    bench["peak_rss_gib"] = {name: bench[name]["peak_rss_gib"] for name in PHASES}
    bench["peak_rss_gib"]["max"] = max(bench["peak_rss_gib"].values())
    bench["paper_estimate"] = paper_estimate.run()
    import torch  # noqa: F401  (loaded, so the environment record holds threads and CPU capability)

    bench["environment"] = environment_record(load_config("default"))
    bench["machine"] = {"processor": _cpu_name(), "machine": platform.machine()}
    bench["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_json(out / "bench.json", bench)
    return publish(bench, out, args.readme)


def allocator_markdown(record: dict) -> str:
    """``bench_allocator.py``'s record as a table: each malloc's peak RSS and speed against glibc's."""
    rows = record["allocators"]
    losses = {r["train_loss"] for r in rows}
    loss = (f"the same final loss ({rows[0]['train_loss']}) under each" if len(losses) == 1
            else "final losses " + ", ".join(f"{r['allocator']} {r['train_loss']}" for r in rows))
    env = record["environment"]
    lines = [f"Stage 02's trainer under each malloc (`benchmarks/bench_allocator.py`: one epoch over "
             f"{record['examples']} annotations, one process and one timing each, {loss}; measured {env['created'][:10]}, "
             f"{env['torch_threads']} threads, CPU capability {env['cpu_capability']}):", "",
             "| malloc | how | peak RSS (GiB) | vs glibc | tok/s | speed vs glibc |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        how = " ".join(f"`{key}={value}`" for key, value in r["env"].items()) or "default"
        lines.append(f"| {r['allocator']} | {how} | {r['peak_rss_gib']:.2f} | {r['peak_rss_vs_glibc']:.2f}× | "
                     f"{r['tokens_per_s']:.0f} | {r['speed_vs_glibc']:.2f}× |")
    lines += [f"| {s['allocator']} | skipped: {s['reason']} | | | | |" for s in record.get("skipped", [])]
    return "\n".join(lines)


def variants_markdown(record: dict) -> str:
    """``bench_training_variants.py``'s record as a table: each lever's speed against stage 02's own step."""
    rows, env = record["variants"], record["environment"]
    lines = [f"Training levers against stage 02's own step (`benchmarks/bench_training_variants.py`: forward and "
             f"backward of {rows[0]['examples']} annotations, {rows[0]['tokens']} tokens, best of "
             f"{len(rows[0]['times'])} passes after a warm-up; each example's loss at initialisation compared "
             f"with the step's; measured {env['created'][:10]}, {env['torch_threads']} threads, CPU capability "
             f"{env['cpu_capability']}, malloc {env['malloc']}):", "",
             "| variant | tok/s | speed vs stage 02 | largest loss difference | warm-up pass (s) |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['variant']} | {r['tokens_per_s']:.0f} | {r['speed_vs_autocast']:.2f}× | "
              f"{r['max_abs_loss_diff_vs_autocast']:.4f} | {r['first_pass_s']:.0f} |" for r in rows]
    return "\n".join(lines)


def publish(bench: dict, out: Path, readme: bool) -> int:
    """Write bench.md (and the README block) from a bench record, with the tables of
    ``bench_allocator.py`` and ``bench_training_variants.py`` where their records lie beside it;
    print the table."""
    table = bench_markdown(bench)
    for name, markdown in (("allocator.json", allocator_markdown), ("training_variants.json", variants_markdown)):
        if (out / name).is_file():
            table += "\n\n" + markdown(json.loads((out / name).read_text(encoding="utf-8")))
    write_text(out / "bench.md", table + "\n")
    print(table)
    if readme:
        path = PROJECT_ROOT / "README.md"
        write_text(path, replace_block(path.read_text(encoding="utf-8"), BEGIN, END, table, path))
    return 0


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    raise SystemExit(main())
