"""Run every benchmark and write ``results/bench/<name>.json`` (``make bench``).

Numbers are ratios against the ecosystem's own tools measured in the same process, on
the machine at hand: re-run them rather than trusting figures from another CPU.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_scoring  # noqa: E402
import bench_training  # noqa: E402

from cqa_utils.runs import environment_record, write_json  # noqa: E402
from cqa_utils.config import PROJECT_ROOT, load_config  # noqa: E402


def main() -> int:
    out = PROJECT_ROOT / "results" / "bench"
    for name, bench in (("scoring", bench_scoring), ("training", bench_training)):
        print(f"=== {name}", flush=True)
        result = bench.run()
        result["environment"] = environment_record(load_config("default"))
        write_json(out / f"{name}.json", result)
        print(json.dumps({k: v for k, v in result.items() if k != "environment"}, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
