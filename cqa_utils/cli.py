"""The ``cqa`` command line: run the study, train, score a benchmark, publish the results.

Copy-paste examples::

    cqa run --config configs/default.yaml                 # the whole study (make reproduce)
    cqa run --config smoke --run try1 --only 02-03        # a slice of the pipeline
    cqa run --config smoke --set train.epochs=1 --force   # override any key, redo finished stages
    cqa train --config smoke --run try1                   # stage 02 alone, in this process
    cqa logprobs --config smoke --run try1                # stage 03 alone, in this process
    cqa sweep --grid configs/sweeps/controls.yaml         # arms × seeds, one run each, resumable
    cqa sweep --grid configs/sweeps/smoke.yaml --dry-run  # list the runs and what is finished
    cqa sweep --grid configs/sweeps/controls.yaml --publish   # each finished run -> reference/ at once
    accelerate launch --multi_gpu --num_processes 4 -m cqa_utils.cli train --config paper-qwen2.5-7b
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 -m cqa_utils.cli train --config smoke
    torchrun --standalone --nproc_per_node 2 -m cqa_utils.cli logprobs --config smoke   # each rank scores a share
    cqa validate data/                                    # schema, leakage, benchmark design rules (CI runs this)
    cqa validate my_items.jsonl --kind benchmark          # one file or a folder of them (--kind if it cannot be told)
    cqa score --benchmark my_items.jsonl --out scored/    # ΔI for your own items, base model
    cqa score --benchmark my_items.jsonl --adapter results/default/02_finetune/epoch-5 --out scored5/
    cqa report --config default                           # README results + figures/ from a finished run
    cqa report --config default --to-run                  # the same into results/default/report/ (make reproduce)
    cqa compare default --to reference/default            # your run beside the published one, item by item
    cqa report --config configs/gemma3-270m.yaml          # another run: the per-model table and figure only
    cqa report --grid configs/sweeps/controls.yaml        # README controls and robustness from notebook 06
    cqa publish --config default                          # compact outputs of a run -> reference/<run>/
    cqa efficiency --config default                       # stage times vs this machine's matmul bound
    cqa publish --grid configs/sweeps/controls.yaml       # every finished run of a grid + its manifest
    cqa config --show smoke                               # the resolved config
    cqa config --keys                                     # every key, its default and meaning
    cqa build-model                                       # convert + verify the embedded model
    cqa build-model --model embedded:gemma3-270m          # the optional Gemma 3 270M base (after: make gemma)
    cqa audit-pack --local-root ../shared/datasets        # rebuild data/audit/records/ from the full copies
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from .config import EMBEDDED_MODEL


def _parse_set(values: list[str]) -> dict:
    overrides = {}
    for item in values:
        key, eq, raw = item.partition("=")
        if not eq:
            raise ValueError(f"--set {item!r} must look like section.key=value")
        overrides[key] = yaml.safe_load(raw)
    return overrides


def _run_options(parser: argparse.ArgumentParser, force: bool = True) -> None:
    """The options every command that resolves a run shares."""
    parser.add_argument("--config", default="default", help="config name or YAML path")
    parser.add_argument("--run", dest="run_name", help="run name (results/<run>/); default from the config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    if force:
        parser.add_argument("--force", action="store_true", help="redo stages that already finished")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cqa", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute the notebooks in order with papermill")
    _run_options(run)
    run.add_argument("--only", help="one stage (03) or a range (02-04)")

    train = sub.add_parser("train", help="stage 02 (fine-tuning) in this process; accelerate/torchrun start one per rank")
    _run_options(train)
    logprobs = sub.add_parser("logprobs", help="stage 03 (scoring) in this process; under accelerate/torchrun "
                                               "each rank scores a share of the batches and rank 0 writes")
    _run_options(logprobs)

    sweep = sub.add_parser("sweep", help="run a grid of runs (arms × seeds × any key) one after another, resumable")
    sweep.add_argument("--grid", required=True, help="grid file, e.g. configs/sweeps/controls.yaml")
    sweep.add_argument("--config", default=None, help="base config instead of the grid file's")
    sweep.add_argument("--dry-run", action="store_true", help="check the grid and list its runs; run nothing")
    sweep.add_argument("--publish", action="store_true",
                       help="publish each run to reference/ as soon as it finishes (a grid that spans sessions)")

    validate = sub.add_parser("validate", help="check annotations and benchmark files (schema, leakage, design rules)")
    validate.add_argument("path", nargs="?", default="data",
                          help="the data folder (annotations/, benchmark/), one .jsonl file, or a folder of them "
                               "(default: data)")
    validate.add_argument("--kind", choices=("annotations", "benchmark"),
                          help="what the files hold, where neither their folder name nor their fields say it")

    score = sub.add_parser("score", help="ΔI for every item of a benchmark file")
    score.add_argument("--benchmark", required=True, help="JSONL in the project's benchmark schema; extra fields pass through")
    score.add_argument("--config", default="default", help="config name or YAML path")
    score.add_argument("--adapter", help="peft adapter folder (default: the base model, epoch 0)")
    score.add_argument("--out", required=True, help="output folder for scores.csv, pairs.jsonl, tokens.parquet")
    score.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")

    report = sub.add_parser("report", help="regenerate the README's Results block and figures/ from a finished run")
    _run_options(report, force=False)
    report.add_argument("--grid", help="instead: the README's Controls and robustness block from a grid's notebook 06")
    report.add_argument("--headline", action="store_true",
                        help="show this run in the README's Results even though they show another run "
                             "(without it, such a run updates only the per-model table and figure)")
    report.add_argument("--to-run", action="store_true",
                        help="write the README and figures into results/<run>/report/ instead of the project's "
                             "README.md and figures/ (make reproduce: the committed reference stays as published)")

    publish = sub.add_parser("publish", help="copy a finished run's compact outputs (no weights) into reference/<run>/")
    _run_options(publish, force=False)
    publish.add_argument("--grid", help="publish every finished run of this grid file, and its manifest")
    publish.add_argument("--max-file-mb", type=float, default=8.0, help="leave out (and list) larger files")

    compare = sub.add_parser("compare", help="a run beside a published one, item by item, with both verdicts")
    compare.add_argument("run", nargs="?", help="a run name under results/ or a run folder (default: from --config/--run)")
    _run_options(compare, force=False)
    compare.add_argument("--to", help="the published run to compare with (default: the config's own published run, "
                                      "reference/<its run.name>)")
    compare.add_argument("--out", help="also write compare.csv and compare.json into this folder")
    compare.add_argument("--record", metavar="NAME", help="keep it as reference/reproductions/NAME.json and "
                                                           "regenerate the README's table of reproductions")

    efficiency = sub.add_parser("efficiency", help="a run's stage times against this machine's matmul bound "
                                                   "(cqa run writes it after training and scoring)")
    _run_options(efficiency, force=False)

    config = sub.add_parser("config", help="show a resolved config or list every key")
    config.add_argument("--show", metavar="CONFIG", help="print the resolved config")
    config.add_argument("--keys", action="store_true", help="list every key with default and help")

    build = sub.add_parser("build-model", help="convert an embedded GGUF model into the cache and verify it")
    build.add_argument("--model", default=EMBEDDED_MODEL, metavar="NAME",
                       help=f"an embedded:* model (default {EMBEDDED_MODEL}, or embedded:gemma3-270m)")
    build.add_argument("--force", action="store_true", help="rebuild even if the cache holds a verified copy")

    pack = sub.add_parser("audit-pack", help="rebuild the shipped audit records (data/audit/records/) from full copies")
    pack.add_argument("--local-root", default=None, help="folder of the full dataset copies (default ../shared/datasets)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (ValueError, FileNotFoundError, PermissionError, RuntimeError) as err:
        print(f"cqa {args.command}: error: {err}", file=sys.stderr)
        return 1


def _resolve(args):
    from .config import load_config

    overrides = _parse_set(args.set) | ({"run.name": args.run_name} if getattr(args, "run_name", None) else {})
    return load_config(args.config, overrides)


def run_summary(cfg, results) -> str:
    """What ``cqa run`` prints last: where to read the run, and its primary verdict (stage 04's stats.json, in
    the words of the README's Results, :func:`cqa_utils.report.controlled_verdict`)."""
    import json

    from .pipeline import where_to_read
    from .report import controlled_verdict
    from .runs import is_done, run_dir, stage_dir, stage_outputs

    if is_done(stage_dir(cfg, "04")):
        report = json.loads(stage_outputs(cfg, "04")["report"].read_text(encoding="utf-8"))
        verdict = controlled_verdict(report)
    else:
        verdict = "none yet: stage 04 (statistics) has not finished in this run."
    return "\n".join([f"=== run {cfg.run.name}: {len(results)} notebook(s) finished",
                      *where_to_read(run_dir(cfg), results), f"  primary verdict:    {verdict}"])


def _dispatch(args) -> int:
    if args.command == "run":
        from .pipeline import run_pipeline

        results = run_pipeline(args.config, args.run_name, args.only, args.force, _parse_set(args.set))
        print("\n" + run_summary(_resolve(args), results), flush=True)
    elif args.command == "sweep":
        from .sweep import run_sweep

        run_sweep(args.grid, args.config, args.dry_run, args.publish)
    elif args.command in ("train", "logprobs"):
        from .registry import get_stage

        runner = get_stage("02" if args.command == "train" else "03").load_runner()
        for name, path in runner(_resolve(args), force=args.force).items():
            print(f"wrote {name}: {path}")
    elif args.command == "validate":
        from .validation import print_report, validate_path

        print_report(validate_path(args.path, args.kind))
    elif args.command == "score":
        from .stages.logprobs import score_benchmark_file

        for name, path in score_benchmark_file(_resolve(args), args.benchmark, args.out, adapter=args.adapter).items():
            print(f"wrote {name}: {path}")
    elif args.command == "report" and args.to_run:
        from .report import report_into_run

        cfg = _resolve(args)
        print(f"the README and figures of run {cfg.run.name} (the project's README.md and figures/ "
              f"keep the published reference): {report_into_run(cfg)}")
    elif args.command == "report":
        from .grid_report import publish_grid
        from .report import publish

        for path in [publish_grid(args.grid)] if args.grid else publish(_resolve(args), headline=args.headline):
            print(f"wrote {path}")
    elif args.command == "compare":
        from .compare import compare_runs, comparison_text, write_comparison
        from .config import load_config
        from .runs import REFERENCE_DIR, run_dir

        cfg = _resolve(args)
        if args.run and ("/" in args.run or Path(args.run).is_dir()):  # a folder, else a run name under results/
            run = Path(args.run)
        else:
            run = run_dir(cfg).parent / (args.run or cfg.run.name)
        published = Path(args.to) if args.to else REFERENCE_DIR / load_config(args.config).run.name
        if not args.to and not published.is_dir():
            print(f"no published run of config {args.config!r} at {published} to compare {run} with (--to names one)")
            return 0
        result = compare_runs(run, published)
        print(comparison_text(result))
        for path in write_comparison(result, Path(args.out)) if args.out else []:
            print(f"wrote {path}")
        if args.record:
            from .compare import record_reproduction, update_readme_reproductions

            print(f"wrote {record_reproduction(result, args.record)}\nwrote {update_readme_reproductions()}")
    elif args.command == "publish" and args.grid:
        from .sweep import load_grid, publish_finished

        print(f"wrote {publish_finished(load_grid(args.grid), args.max_file_mb)}")
    elif args.command == "publish":
        from .publish import publish_run

        publish_run(_resolve(args), max_file_mb=args.max_file_mb)
    elif args.command == "efficiency":
        from .pipeline import report_efficiency

        report_efficiency(_resolve(args))
    elif args.command == "config":
        from .config import describe_options, load_config

        if args.keys:
            print(describe_options())
        if args.show:
            print(yaml.safe_dump(load_config(args.show).to_dict(), sort_keys=False))
    elif args.command == "build-model":
        import json

        from .embedded import build_embedded_model, model_cache_status

        build_embedded_model(args.model, force=args.force)
        print(json.dumps(model_cache_status(args.model), indent=2))
    elif args.command == "audit-pack":
        from .audit_labels import load_sample
        from .audit_sources import pack_records

        sample = load_sample()
        keep = {d: set(g.record_id) for d, g in sample.groupby("dataset")}
        print(f"wrote {pack_records(keep, args.local_root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
