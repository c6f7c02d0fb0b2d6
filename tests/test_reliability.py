"""Bad input fails loudly and leaves nothing behind; reruns are deterministic."""
import pandas as pd
import pytest
from conftest import REORDERINGS, annotation, assert_within, base_only_config, benchmark_item, fp32_floor, write_jsonl

from cqa_utils.cli import main as cqa
from cqa_utils.config import load_config
from cqa_utils.data import DataError
from cqa_utils.runs import stage_dir
from cqa_utils.stages.logprobs import run_logprobs

SCORE_COLUMNS = ["item_id", "pair_id", "group", "variant", "checkpoint", "epoch", "n_tokens", "logp_cond",
                 "logp_uncond", "delta_i", "delta_i_mean", "delta_i_specific", "delta_i_specific_mean",
                 "delta_i_intent", "delta_i_intent_mean", "delta_i_audience", "delta_i_audience_mean",
                 "delta_i_reality", "delta_i_reality_mean", "logp_mismatched", "mismatched", "overlap", "y_words"]
CONTROL_COLUMNS = ["delta_i_specific", "delta_i_intent", "delta_i_audience", "delta_i_reality", "overlap"]


@pytest.fixture
def base_only(tmp_path):
    """A config whose stage 02 is 'done' with no epochs, so stage 03 scores the base model only."""
    bench = write_jsonl(tmp_path / "bench.jsonl", [benchmark_item(1), benchmark_item(2), benchmark_item(3, "factual"),
                                                   benchmark_item(4, "factual")])
    return base_only_config(tmp_path, bench)


def test_bad_benchmark_stops_scoring_before_any_output(base_only, tmp_path):
    cfg, overrides = base_only
    bad = write_jsonl(tmp_path / "bad.jsonl", [benchmark_item(1), benchmark_item(2, id="lit-01")])
    with pytest.raises(DataError, match=r"bad.jsonl:2: id: duplicate id"):
        run_logprobs(load_config("smoke", {**overrides, "data.benchmark": str(bad)}))
    assert not stage_dir(cfg, "03").exists()


def test_leaking_benchmark_item_is_refused_by_validate(tmp_path, capsys):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "benchmark").mkdir()
    ann = annotation(1)
    write_jsonl(tmp_path / "annotations" / "a.jsonl", [ann])
    write_jsonl(tmp_path / "benchmark" / "b.jsonl", [benchmark_item(1, x="Yes: " + ann["passage"])])
    assert cqa(["validate", str(tmp_path)]) == 1
    assert "shares" in capsys.readouterr().err


def test_asking_for_an_untrained_epoch_names_the_saved_ones(base_only):
    _, overrides = base_only
    with pytest.raises(ValueError, match=r"epoch\(s\) \[7\], which were never trained; saved epochs .*: \[\]"):
        run_logprobs(load_config("smoke", {**overrides, "score.epochs": [7]}))


def test_same_config_and_seed_give_the_same_delta_i_table(base_only):
    cfg, _ = base_only
    first = pd.read_csv(run_logprobs(cfg)["scores"])
    second = pd.read_csv(run_logprobs(cfg, force=True)["scores"])
    assert list(first.columns) == SCORE_COLUMNS
    pd.testing.assert_frame_equal(first, second, check_exact=True)


def test_delta_i_in_scores_csv_is_cond_minus_uncond_of_the_scored_strings(base_only, embedded):
    """Re-score two rows of pairs.jsonl one at a time; swapping cond and uncond would flip the sign."""
    import json

    from cqa_utils.scoring import ScoreRequest, logprob_sum, score_requests

    cfg, _ = base_only
    outputs = run_logprobs(cfg)
    scores = pd.read_csv(outputs["scores"]).set_index(["item_id", "variant"])
    pairs = [json.loads(line) for line in outputs["pairs"].read_text().splitlines()]
    rows = {p["condition"]: p for p in pairs if p["item_id"] == "lit-01" and p["variant"] == "x"}
    model, tokenizer = embedded
    requests = [ScoreRequest(c, r["prefix"], r["continuation"]) for c, r in rows.items()]
    logp = {q.key: logprob_sum(score_requests(model, tokenizer, [q], start_token=cfg.model.start_token,
                                              progress=False)[0]) for q in requests}
    bound = REORDERINGS * fp32_floor(model, tokenizer, requests, cfg.model.start_token)[1]  # stage 03 batched them
    row = scores.loc[("lit-01", "x")]
    assert_within(row["logp_cond"], logp["cond"], bound, "lit-01 logp_cond, batched vs alone (nats)")
    assert_within(row["logp_uncond"], logp["uncond"], bound, "lit-01 logp_uncond, batched vs alone (nats)")
    assert_within(row["delta_i"], logp["cond"] - logp["uncond"], 2 * bound, "lit-01 ΔI (two sums, nats)")
    assert abs(row["delta_i"]) > 1e-3  # the constraint block changes the score, so a swap would show


def test_delta_i_specific_equals_a_hand_computation_for_two_items(base_only, embedded):
    """log P(x | own y) − mean_k log P(x | y_k), each term re-scored alone from pairs.jsonl."""
    import json

    from cqa_utils.scoring import ScoreRequest, logprob_sum, score_requests

    cfg, _ = base_only
    outputs = run_logprobs(cfg)
    scores = pd.read_csv(outputs["scores"]).set_index(["item_id", "variant"])
    pairs = [json.loads(line) for line in outputs["pairs"].read_text().splitlines()]
    model, tokenizer = embedded
    for item in ("lit-01", "fac-03"):
        requests = [ScoreRequest(p["condition"], p["prefix"], p["continuation"])
                    for p in pairs if p["item_id"] == item and p["variant"] == "x"]
        logp = {q.key: logprob_sum(score_requests(model, tokenizer, [q], start_token=cfg.model.start_token,
                                                  progress=False)[0]) for q in requests}
        bound = 2 * REORDERINGS * fp32_floor(model, tokenizer, requests, cfg.model.start_token)[1]  # two terms
        mismatched = [v for c, v in logp.items() if c.startswith("mismatch:")]
        assert len(mismatched) == 1  # two items per group: the one other item
        expected = logp["cond"] - sum(mismatched) / len(mismatched)
        assert_within(scores.loc[(item, "x"), "delta_i_specific"], expected, bound, f"{item} specific ΔI (nats)")
        assert_within(scores.loc[(item, "x"), "delta_i_reality"], logp["slot:reality"] - logp["uncond"], bound,
                      f"{item} reality ΔI (nats)")


def test_cli_score_writes_the_same_files_for_any_benchmark(base_only, tmp_path):
    cfg, overrides = base_only
    out = tmp_path / "scored"
    assert cqa(["score", "--benchmark", overrides["data.benchmark"], "--config", "smoke", "--out", str(out)]) == 0
    scores = pd.read_csv(out / "scores.csv")
    assert list(scores.columns) == SCORE_COLUMNS and set(scores.variant) == {"x", "x_degraded"}
    assert scores[CONTROL_COLUMNS].notna().all().all()  # the controls, for any benchmark file
    assert (out / "pairs.jsonl").is_file() and (out / "tokens.parquet").is_file()
    environment = __import__("json").loads((out / "environment.json").read_text())
    assert environment["benchmark"] == overrides["data.benchmark"] and environment["cpu_capability"]
    assert load_config((out / "config.yaml").as_posix()).to_dict() == load_config("smoke").to_dict()  # as resolved
    reference = pd.read_csv(run_logprobs(cfg)["scores"])
    pd.testing.assert_frame_equal(scores, reference, check_exact=True)  # one code path, the same batches: bitwise


def test_cqa_run_exits_non_zero_when_a_notebook_fails(tmp_path, capsys):
    code = cqa(["run", "--config", "smoke", "--only", "00", "--set", f"run.results_dir={tmp_path}",
                "--set", f"model.name={tmp_path / 'no-such-model'}"])
    assert code == 1
    assert "00_environment_check.ipynb failed in cell" in capsys.readouterr().err


def test_config_typo_on_the_command_line_is_an_error(capsys):
    assert cqa(["config", "--show", "smoke"]) == 0
    assert cqa(["run", "--config", "smoke", "--set", "train.epoks=2"]) == 1
    assert "unknown key train.epoks" in capsys.readouterr().err
