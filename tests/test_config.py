import pytest

from cqa_utils.config import CONFIG_DIR, config_from_dict, describe_options, load_config


def test_layers_apply_in_order_default_then_named_then_overrides():
    cfg = load_config("smoke", {"train.epochs": 3})
    assert cfg.train.epochs == 3  # override beats smoke.yaml (2)
    assert cfg.data.max_annotations == 8  # from smoke.yaml
    assert cfg.train.lora_r == 16  # from default.yaml


def test_every_shipped_config_resolves():
    for path in CONFIG_DIR.glob("*.yaml"):
        load_config(path.stem)


def test_paper_config_selects_qwen_nf4_on_gpu():
    cfg = load_config("paper-qwen2.5-7b")
    assert (cfg.model.name, cfg.model.quant, cfg.model.device, cfg.train.precision) == \
        ("Qwen/Qwen2.5-7B", "nf4", "cuda", "bfloat16")


def test_unknown_key_is_an_error_listing_valid_keys():
    with pytest.raises(ValueError, match=r"unknown key train.epoch;.*'epochs'"):
        load_config("default", {"train.epoch": 3})


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("train:\n  learnig_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"typo.yaml: unknown key train.learnig_rate"):
        load_config(bad)


@pytest.mark.parametrize("key, expected", [
    ("train.epoch", r"overrides: unknown key train.epoch; did you mean 'train.epochs'\? valid keys in train: \["),
    ("trian.epochs", r"overrides: unknown section 'trian'; did you mean 'train'\? valid sections: \["),
    ("model.epochs", r"unknown key model.epochs; did you mean 'train.epochs' or 'score.epochs'\?"),
])
def test_a_near_miss_override_says_did_you_mean(key, expected):
    with pytest.raises(ValueError, match=expected):
        load_config("default", {key: 3})


def test_a_near_miss_set_on_the_command_line_says_did_you_mean_before_anything_runs(capsys):
    from cqa_utils.cli import main

    assert main(["run", "--config", "smoke", "--set", "train.epoch=3"]) == 1  # load_config fails before any notebook
    assert "unknown key train.epoch; did you mean 'train.epochs'?" in capsys.readouterr().err


@pytest.mark.parametrize("text, expected", [
    ("train:\n  learnig_rate: 0.1\n", r"typo.yaml: unknown key train.learnig_rate; did you mean 'train.learning_rate'\?"),
    ("trian:\n  epochs: 3\n", r"typo.yaml: unknown section 'trian'; did you mean 'train'\?"),
])
def test_a_near_miss_in_a_config_file_names_the_file_and_says_did_you_mean(tmp_path, text, expected):
    bad = tmp_path / "typo.yaml"
    bad.write_text(text)
    with pytest.raises(ValueError, match=expected):
        load_config(bad)


def test_a_key_unlike_any_known_one_gets_no_guess_only_the_valid_keys():
    with pytest.raises(ValueError, match=r"unknown key train.zzz; valid keys in train: \['arm'"):
        load_config("default", {"train.zzz": 1})


def test_an_override_without_a_section_names_the_sections_that_have_the_key():
    with pytest.raises(ValueError, match=r"override 'epochs' must be written section.key, e.g. train.epochs or score.epochs"):
        load_config("default", {"epochs": 3})


def test_wrong_type_and_bad_choice_are_errors():
    with pytest.raises(ValueError, match="wrong type; expected int"):
        load_config("default", {"train.epochs": "five"})
    with pytest.raises(ValueError, match=r"not one of \['auto', 'cpu', 'cuda'\]"):
        load_config("default", {"model.device": "tpu"})
    with pytest.raises(ValueError, match="must be >= 1"):
        load_config("default", {"train.epochs": 0})


def test_contradictory_settings_name_both_fields():
    with pytest.raises(ValueError, match="score.precision=bfloat16 contradicts model.device=cpu"):
        load_config("default", {"score.precision": "bfloat16", "model.device": "cpu"})


def test_run_name_cannot_escape_results():
    with pytest.raises(ValueError, match="run.name"):
        load_config("default", {"run.name": "../elsewhere"})


def test_saved_config_round_trips():
    cfg = load_config("smoke")
    assert config_from_dict(cfg.to_dict()) == cfg


def test_missing_config_lists_known_names():
    with pytest.raises(FileNotFoundError, match="named configs: .*smoke"):
        load_config("no-such-config")


def test_config_keys_list_every_field_once_with_default_help_and_choices():
    from cqa_utils.config import Config

    lines = describe_options().splitlines()
    expected = [f"{section}.{key}" for section, values in Config().to_dict().items() for key in values]
    assert [line.split(" = ")[0] for line in lines] == expected
    assert "train.epochs = 5: training epochs; one adapter is saved after each" in lines
    assert "model.device = 'auto': where the model runs (one of ['auto', 'cpu', 'cuda'])" in lines
    assert all(line.split(": ", 1)[1].strip() for line in lines)  # every key has help text
