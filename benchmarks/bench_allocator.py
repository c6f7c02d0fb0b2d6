"""Peak memory of stage 02's training under each malloc the machine offers.

Stage 02's peak RSS climbs over a run (3.4 GiB after the first optimizer step, 6.5 GiB by epoch
5 in the published runs, `peak_rss_gib` in their train_log.csv) while the tensors it holds stay
the same size: each sequence has its own length, so every step frees and allocates buffers of
new sizes, and glibc's malloc keeps freed heap it cannot return. This measures whether another
allocator holds less. Each allocator runs the project's trainer (the same one ``make bench``
times) for one epoch over the first ``examples`` annotations in a fresh process, with the
allocator preloaded (``LD_PRELOAD``) or glibc tuned through its environment variables; the
child checks its own memory map so a preload that silently failed is not reported as measured.
Not part of ``make bench`` (minutes per allocator). Run:
``.venv/bin/python benchmarks/bench_allocator.py`` → ``results/bench/allocator.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cqa_utils.config import PROJECT_ROOT, load_config  # noqa: E402
from cqa_utils.malloc import PACKAGES, PREFERENCE, library_path, malloc_in_use  # noqa: E402
from cqa_utils.runs import environment_record, write_json  # noqa: E402

# glibc's mmap threshold grows with every large free (up to 32 MiB on 64-bit), after which
# activation-sized buffers come from the heap; pinning it keeps them in mmap, returned on free.
GLIBC_PINNED = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 20)}
ALLOCATORS = ("glibc", "glibc_pinned_mmap", *PREFERENCE)


def allocator_env(name: str) -> dict[str, str] | None:
    """Environment additions that select ``name``; None where its library is not installed."""
    if name == "glibc":
        return {}
    if name == "glibc_pinned_mmap":
        return dict(GLIBC_PINNED)
    library = library_path(name)
    return {"LD_PRELOAD": library} if library else None


def _child(name: str, n_examples: int) -> dict:
    loaded = malloc_in_use()
    if loaded != (name if name in PREFERENCE else "glibc"):
        raise RuntimeError(f"asked for {name}, the process runs {loaded}")
    from bench_training import _train, examples_for

    from cqa_utils.runs import peak_rss_gib

    cfg, plan, examples = examples_for(n_examples)
    return {"allocator": name, **_train("cqa_target_only", cfg, examples, plan), "peak_rss_gib": peak_rss_gib()}


def run(n_examples: int = 40, allocators=ALLOCATORS) -> dict:
    """One child process per allocator, glibc's default first (the yardstick of each ratio);
    allocators whose library is absent are listed as skipped."""
    results, skipped = [], []
    for name in ["glibc", *[a for a in allocators if a != "glibc"]]:
        extra = allocator_env(name)
        if extra is None:
            skipped.append({"allocator": name, "reason": f"not installed (apt-get install {PACKAGES[name]})"})
            continue
        done = subprocess.run([sys.executable, __file__, "--child", name, "--examples", str(n_examples)],
                              env={**os.environ, **extra}, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"{name}: child failed\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]) | {"env": extra})
        print(json.dumps(results[-1]), flush=True)
    base = results[0]
    for r in results:
        r["peak_rss_vs_glibc"] = round(r["peak_rss_gib"] / base["peak_rss_gib"], 3)
        r["speed_vs_glibc"] = round(r["tokens_per_s"] / base["tokens_per_s"], 3)
    import torch  # noqa: F401  (loaded, so the environment record holds threads and CPU capability)

    return {"examples": n_examples, "allocators": results, "skipped": skipped,
            "environment": environment_record(load_config("default"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=40)
    parser.add_argument("--allocators", nargs="+", default=list(ALLOCATORS), choices=ALLOCATORS)
    parser.add_argument("--child", choices=ALLOCATORS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.examples)), flush=True)
        return 0
    write_json(PROJECT_ROOT / "results" / "bench" / "allocator.json", run(args.examples, args.allocators))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
