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
