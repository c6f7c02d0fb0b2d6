"""Training on the real embedded model with tiny configs (sizes shrunk on purpose)."""
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import PROJECT_ROOT, annotation, write_jsonl
from safetensors.torch import load_file

from cqa_utils.config import load_config
from cqa_utils.frontend import BATCH_VAR
from cqa_utils.training import (IGNORE_INDEX, line_progress_callback, report_progress, study_callbacks,
                                target_only_trainer, target_positions, tokenize_examples)

# bitwise on the same CPU; the bound leaves room for thread-count differences between runs
RESUME_TOLERANCE = 1e-6
# Data parallel sums the same gradients in another order than accumulation does, and Adam turns a rounding-sized
# gradient difference into an update difference of up to the learning rate where a gradient is near zero; how far the
# adapters then land apart depends on the CPU's kernels, so the bound is measured in the same test: one process that
# sums the same gradients in other exact orders (batch 4 × 1 step and 1 × 4 instead of 2 × 2) gives the floor (the
# farther of the two), and the two processes, differing by about one such reordering, must land within twice it.
REORDERINGS = 2


@pytest.fixture
def tiny(tmp_path):
    """Six short annotations and a config that trains them for 2 epochs in seconds."""
    path = write_jsonl(tmp_path / "ann.jsonl", [annotation(i) for i in range(1, 7)])
    return {"data.annotations": str(path), "run.results_dir": str(tmp_path / "results"), "run.name": "tiny",
            "train.epochs": 2, "train.batch_size": 2, "train.grad_accum": 1, "train.precision": "float32"}


def test_prompt_tokens_are_masked_and_the_target_ends_with_eos(embedded, tiny):
    _, tokenizer = embedded
    example = tokenize_examples(load_config("smoke", tiny), tokenizer, 8192)[0]
    n_prompt = example["prompt_tokens"]
    assert example["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert example["labels"][n_prompt:] == example["input_ids"][n_prompt:]
    assert example["input_ids"][-1] == tokenizer.eos_token_id


def test_training_sequences_start_with_the_scoring_start_token(embedded, tiny):
    from cqa_utils.scoring import start_token_id

    _, tokenizer = embedded
    cfg = load_config("smoke", tiny)
    example = tokenize_examples(cfg, tokenizer, 8192)[0]
    assert example["input_ids"][0] == start_token_id(tokenizer, cfg.model.start_token)
    assert tokenizer.convert_ids_to_tokens(example["input_ids"][0]) == "<|endoftext|>"


def test_too_long_examples_are_an_error_not_truncated(embedded, tiny):
    _, tokenizer = embedded
    with pytest.raises(ValueError, match=r"annotations \['t-001'.*exceed train.max_length \(50 tokens"):
        tokenize_examples(load_config("smoke", {**tiny, "train.max_length": 50}), tokenizer, 8192)


def test_target_only_trainer_gives_the_same_loss_as_full_logits(embedded, tiny, tmp_path):
    from transformers import TrainingArguments

    model, tokenizer = embedded
    examples = tokenize_examples(load_config("smoke", tiny), tokenizer, 8192)[:3]
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.tensor([e["input_ids"] + [0] * (width - len(e["input_ids"])) for e in examples])
    labels = torch.tensor([e["labels"] + [IGNORE_INDEX] * (width - len(e["labels"])) for e in examples])
    mask = torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in examples])
    trainer = target_only_trainer()(model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True,
                                                                        report_to="none"))
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        part = trainer.compute_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": labels})
    assert len(target_positions(labels)) < width - 1  # the head really ran on fewer positions
    assert abs(full.item() - part.item()) < 1e-6


def test_non_finite_loss_stops_training_with_a_clear_message(tmp_path):
    class State:
        global_step, epoch, num_input_tokens_seen, is_world_process_zero, log_history = 7, 1.5, 0, True, []

    guard = study_callbacks(tmp_path)[0]
    guard.on_train_begin(None, State(), None)
    with pytest.raises(FloatingPointError, match=r"loss became nan at step 7 .* last good adapter"):
        guard.on_log(None, State(), None, logs={"loss": math.nan})


def test_training_progress_is_a_few_lines_with_epoch_step_loss_and_time_left(capsys):
    from transformers import TrainerState

    state = TrainerState(max_steps=20, num_train_epochs=2)
    lines = line_progress_callback()
    lines.on_train_begin(None, state, None)
    for step in range(1, 21):
        state.global_step, state.epoch = step, step / 10
        lines.bar.min_gap = 0  # every tenth gets its line; the default waits 5 s between lines
        lines.on_step_end(None, state, None)
        lines.on_log(None, state, None, logs={"loss": 3.0 - step / 10})
    lines.on_train_end(None, state, None)
    out = capsys.readouterr().err.splitlines()
    assert out[0] == "training: 20 optimizer steps over 2 epochs"  # before the first step, which may take minutes
    assert out[1].startswith("training: 1/20 step (5 %) · ")  # right after the first optimizer step
    assert len(out) == 12  # then one per tenth (2, 4, …, 18) and the last
    assert out[2].startswith("training: 2/20 step (10 %) · ") and "left · epoch 1/2 · loss 2.900" in out[2]
    assert out[-1].startswith("training: 20/20 step in ") and out[-1].endswith("epoch 2/2 · loss 1.100")


@pytest.mark.parametrize("batch", [True, False])
def test_batch_runs_swap_the_trainers_bar_for_lines(embedded, tmp_path, monkeypatch, batch):
    from transformers import TrainingArguments

    monkeypatch.setenv(BATCH_VAR, "1" if batch else "0")
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)  # as in a terminal
    model, _ = embedded
    trainer = target_only_trainer()(model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True,
                                                                        report_to="none"))
    report_progress(trainer)
    names = trainer.callback_handler.callback_list.splitlines()
    assert ("TrainingLines" in names) is batch
    assert any(name.endswith("ProgressCallback") for name in names) is not batch


def train_command(overrides: dict) -> list[str]:
    args = [sys.executable, "-m", "cqa_utils.cli", "train", "--config", "smoke"]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    return args


def adapters(folder):
    return {p.parent.name: load_file(p) for p in sorted(folder.glob("epoch-*/adapter_model.safetensors"))}


def max_difference(a, b):
    assert a.keys() == b.keys()
    return max((a[k][n] - b[k][n]).abs().max().item() for k in a for n in a[k])


@pytest.mark.slow
def test_killed_training_resumes_and_ends_with_the_same_adapters(tiny, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    straight = dict(tiny, **{"run.name": "straight", "train.epochs": 3})
    subprocess.run(train_command(straight), check=True, cwd=PROJECT_ROOT, env=env, capture_output=True)

    killed = dict(straight, **{"run.name": "killed"})
    stage = tmp_path / "results" / "killed" / "02_finetune"
    proc = subprocess.Popen(train_command(killed), cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (stage / "epoch-1").is_dir() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # into epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (stage / "DONE").exists() and not (stage / "epoch-3").exists()
    rerun = subprocess.run(train_command(killed), cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming from" in rerun.stdout
    assert max_difference(adapters(stage), adapters(tmp_path / "results" / "straight" / "02_finetune")) <= RESUME_TOLERANCE


@pytest.mark.slow
def test_resuming_with_different_settings_is_refused(tiny, tmp_path):
    from cqa_utils.stages.finetune import run_finetune

    stage = tmp_path / "results" / "tiny" / "02_finetune"
    stage.mkdir(parents=True)
    (stage / "config.yaml").write_text(__import__("yaml").safe_dump(load_config("smoke", tiny).to_dict()))
    with pytest.raises(ValueError, match="different model/data/train settings"):
        run_finetune(load_config("smoke", {**tiny, "train.learning_rate": 1e-3}))


@pytest.mark.slow
def test_two_cpu_processes_train_the_same_adapters_as_one(tiny, tmp_path):
    """Data parallel (2 gloo ranks × batch 2) against one process (batch 2 × 2 accumulation steps), within the
    floor of fp32 reordering measured here (one process at batch 4 × 1 step and at 1 × 4)."""
    eight = write_jsonl(tmp_path / "eight.jsonl", [annotation(i) for i in range(1, 9)])  # divides into 2 ranks x 2
    common = dict(tiny, **{"data.annotations": str(eight), "train.epochs": 2, "train.lora_dropout": 0.0,
                           "train.group_by_length": False, "train.warmup_ratio": 0.0, "train.learning_rate": 1e-3})
    # the ranks run the one process's thread count: fp32 GEMMs split across other thread counts round differently
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS=str(torch.get_num_threads()))
    for name, batch, accumulation in (("one", 2, 2), ("four", 4, 1), ("single", 1, 4)):
        subprocess.run(train_command(dict(common, **{"run.name": name, "train.batch_size": batch,
                                                     "train.grad_accum": accumulation})),
                       check=True, cwd=PROJECT_ROOT, env=env, capture_output=True)
    launcher = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    two = train_command(dict(common, **{"run.name": "two", "train.grad_accum": 1}))
    run = subprocess.run(launcher + two[1:], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    results = tmp_path / "results"
    summary = __import__("json").loads((results / "two" / "02_finetune" / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["effective_batch"] == 4
    one, two, *others = (adapters(results / name / "02_finetune") for name in ("one", "two", "four", "single"))
    moved = max(v.abs().max().item() for k, v in one["epoch-2"].items() if "lora_B" in k)
    assert moved > 1e-3  # training really changed the adapter
    ulp = torch.finfo(torch.float32).eps * moved  # a floor of exactly 0 still allows rounding at these magnitudes
    floor = max(max_difference(one, other) for other in others)
    bound = REORDERINGS * max(floor, ulp)
    assert bound < moved / 10, f"the floor ({bound:.3g}) is not rounding next to what training moved ({moved:.3g})"
    gap = max_difference(one, two)
    assert gap <= bound, (f"two processes' adapters are {gap:.3g} from one process's; the bound is {bound:.3g} "
                          f"(twice the {floor:.3g} between batch 2 × 2 and batch 4 × 1 or 1 × 4 here)")
