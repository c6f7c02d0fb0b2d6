"""Public datasets for the data audit: where each one lives and how to read it.

Driven by notebook 01_data_audit.ipynb (through ``cqa_utils.audit``). Writes nothing.
The registry ``SOURCES`` is data: adding a dataset means adding an entry, not a branch.
Local copies live in ``<audit.local_root>/<name>/`` (default ``../shared/datasets``; see each
PROVENANCE.md); the hub ids are for online use and are read with ``datasets.load_dataset``.

Field specs are dotted paths into one JSON record: ``"turns.0"`` is the first turn,
``"history.*.0"`` every user turn of a history list; a list of specs is joined with a
blank line, empty parts dropped.
"""
from __future__ import annotations

import re
from pathlib import Path

from .config import PROJECT_ROOT, AuditConfig
from .data import read_jsonl

COLUMNS = ["dataset", "record_id", "instruction", "response", "category", "rubric"]

# One entry per dataset. file: main JSONL (relative to local_root); id: own id field or
# None (then "L<line>", 1-based line of the main file); join: a second file whose field
# ``take`` becomes the response, matched on ``on``; creative: the dataset's own category
# values that mean creative writing, "all" when every record is creative, or None (then
# the instruction regex decides); hub: load_dataset() arguments for the full data online
# (field overrides where the hub layout differs), or None. The hub path is not exercised
# offline; hub schemas were taken from the dataset cards, not checked here.
SOURCES: dict[str, dict] = {
    "self_instruct_seed_tasks": dict(
        file="self_instruct_seed_tasks/seed_tasks.jsonl", id="id",
        instruction=["instruction", "instances.0.input"], response="instances.0.output",
        category="name", creative=None,
        hub=None),  # seeds are GitHub-only; yizhongw/self_instruct holds the 82K generated data
    "self_instruct_user_oriented": dict(
        file="self_instruct_user_oriented/user_oriented_instructions.jsonl", id="id",
        instruction=["instruction", "instances.0.input"], response="instances.0.output",
        category="motivation_app", creative=None,
        hub=dict(path="yizhongw/self_instruct", name="human_eval", split="train")),
    "alpaca_eval": dict(
        file="alpaca_eval/alpaca_eval_outputs_gpt4_1106_preview.jsonl", id=None,
        instruction="instruction", response="output", category="dataset", creative=None,
        hub=dict(path="tatsu-lab/alpaca_eval", name="alpaca_eval_gpt4_baseline",
                 split="eval")),
    "vicuna_bench": dict(
        file="vicuna_bench/question.jsonl", id="question_id",
        instruction="turns.0", category="category", creative={"writing", "roleplay"},
        join=dict(file="vicuna_bench/answer_gpt35.jsonl", on="question_id", take="text"),
        hub=None),
    "mt_bench": dict(
        file="mt_bench/question.jsonl", id="question_id",
        instruction="turns.*", category="category", creative={"writing", "roleplay"},
        join=dict(file="mt_bench/reference_answer_gpt-4.jsonl", on="question_id",
                  take="choices.0.turns.*"),
        hub=None),  # lmsys/mt_bench_human_judgments holds judgments, not this layout
    "koala_test_set": dict(
        file="koala_test_set/koala_test_set.jsonl", id="id", instruction="prompt",
        creative=None, hub=None),
    "wizardlm_testset": dict(
        file="wizardlm_testset/WizardLM_testset.jsonl", id="idx", instruction="Instruction",
        category="Skill", creative={"Writting", "Literature", "Roleplay"}, hub=None),
    "lima": dict(
        file="lima/lima_train.jsonl", id=None,
        instruction=["history.*.0", "instruction", "input"], response="output",
        creative=None,
        hub=dict(path="GAIR/lima", split="train",  # gated: accept the terms first
                 instruction="conversations.0", response="conversations.1")),
    "oasst_prompt_lottery_en": dict(
        file="oasst_prompt_lottery_en/prompts.jsonl", id="idx", instruction="prompt",
        creative=None,
        join=dict(file="oasst_prompt_lottery_en/gpt-4_sample_2023-04-16.jsonl", on="prompt",
                  take="results.0.outputs.0"),
        hub=None),  # OpenAssistant/oasst1 is the full message tree, not this lottery
    "eqbench_creative_writing": dict(
        file="eqbench_creative_writing/creative_writing_prompts_v2.jsonl", id="prompt_id",
        instruction="writing_prompt", response="reference_output", creative="all",
        rubric="judging_criteria.*.criteria.*", hub=None),
    "writingbench_length_subset": dict(
        file="writingbench_length_subset/length_subset.jsonl", id="index",
        instruction="query", category="domain1", creative={"Literature & Arts"},
        rubric=["checklist.*.name", "checklist.*.criteria_description"], hub=None),
    "hanna_story_eval": dict(
        file="hanna_story_eval/hanna_llm_stories.jsonl", id="index", instruction="Prompt",
        response="Story", category="Model", creative="all", hub=None),
}

# Instruction regex for datasets without a creative category. Strong terms name a creative
# form outright. Weak terms are common outside creative writing too ("who plays in American
# Horror Story", a "plot" in matplotlib, a "character" in a string), so they count only
# after a composing verb ("write ... a story", "tell me a joke", "pretend to be a
# character") within 60 characters, and only when no technical word is present.
_STRONG = (r"poems?|poetry|poetic|haikus?|limericks?|sonnets?|lyrics|ballads?|odes?|"
           r"screenplays?|short stor(?:y|ies)|fairy ?tales?|fables?|rap (?:song|verse|battle)|"
           r"bedtime stor(?:y|ies)|fan ?fiction|villanelle|rhym(?:e|es|ing)|free verse")
_WEAK = (r"stor(?:y|ies)|storytelling|songs?|fiction(?:al)?|novels?|narratives?|"
         r"characters?|scenes?|dialogues?|plot|tales?|verses?|raps?|script|"
         r"role-?play|screenwrit\w*|creative writing|jokes?|riddles?")
_TECH = (r"python|java\b|javascript|c\+\+|sql|code|coding|function|string|array|matplotlib|"
         r"dataframe|pandas|regex|html|json|excel|database|algorithm|compile|bash|shell|"
         r"gdscript|visual basic|software|user stor|"
         r"novel (?:approach|method|way|idea|technique|solution|framework|model)")
CREATIVE_STRONG = re.compile(rf"\b(?:{_STRONG})\b", re.I)
_VERB = (r"write|writing|compose|create|craft|tell|narrate|generate|come up with|make up|"
         r"invent|draft|rewrite|continue|turn (?:it|this)|pretend|imagine|role-?play|act as|"
         r"give me|regale")
TECHNICAL = re.compile(rf"\b(?:{_TECH})", re.I)
COMPOSE_THEN_WEAK = re.compile(rf"\b(?:{_VERB})\b.{{0,60}}?\b({_WEAK})\b", re.I | re.S)


def _get(record, spec: str | list | None) -> str:
    """Text at a dotted path (``*`` maps over a list); lists of specs are joined."""
    if spec is None:
        return ""
    if isinstance(spec, list):
        return "\n\n".join(p for p in (_get(record, s) for s in spec) if p)
    values = [record]
    for key in spec.split("."):
        nxt = []
        for v in values:
            if key == "*":
                nxt.extend(v if isinstance(v, list) else [])
            elif isinstance(v, list):
                if key.isdigit() and int(key) < len(v):
                    nxt.append(v[int(key)])
            elif isinstance(v, dict) and key in v and v[key] is not None:
                nxt.append(v[key])
            elif isinstance(v, dict) and key.isdigit():  # hub rows: dict of lists
                nxt.append({k: x[int(key)] for k, x in v.items()
                            if isinstance(x, list) and int(key) < len(x)})
        values = nxt
    return "\n\n".join(str(v) for v in values if str(v).strip())


def read_records(path: Path) -> list[dict]:
    """Every record of a local dataset file, each with its line number under ``_line``.

    Reads with the project's one JSONL reader (``file:line: field: message`` errors); a
    missing file says where the datasets are expected and how to point elsewhere.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: not found. Put the shared datasets at {AuditConfig().local_root} next to the "
            f"project root (see its README.md), pass local_root=, or use source='hub'.")
    return [dict(obj, _line=number) for number, obj in read_jsonl(path)]


def _frame(name: str, entry: dict, records: list[dict], where: str):
    """Registry field specs applied to raw records -> the audit's fixed columns."""
    import pandas as pd
    rows = []
    for i, rec in enumerate(records):
        idf = entry.get("id")
        if idf is not None and rec.get(idf) is None:
            raise ValueError(f"{where}:{rec.get('_line', i + 1)}: missing id field {idf!r}")
        rows.append(dict(
            dataset=name,
            record_id=str(rec[idf]) if idf is not None else f"L{rec.get('_line', i + 1)}",
            instruction=_get(rec, entry.get("instruction")),
            response=_get(rec, entry.get("response")),
            category=_get(rec, entry.get("category")),
            rubric=_get(rec, entry.get("rubric"))))
    df = pd.DataFrame(rows, columns=COLUMNS)
    dup = df.record_id[df.record_id.duplicated()]
    assert dup.empty, f"{where}: record ids not unique: {list(dup[:5])}"
    return df


def load_source(name: str, source: str = "local", local_root: Path | None = None):
    """One dataset as a DataFrame with the audit's columns, read the registry's way.

    Args:
        name: a key of ``SOURCES``.
        source: "local" (JSONL under local_root) or "hub" (``datasets.load_dataset``).
        local_root: folder holding the dataset folders; default ../shared/datasets.
    Returns:
        DataFrame[dataset, record_id, instruction, response, category, rubric], one row
        per record in file order; response/category/rubric are "" where absent.
    """
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; valid: {sorted(SOURCES)}")
    entry = SOURCES[name]
    if source == "hub":
        hub = entry.get("hub")
        if hub is None:
            raise ValueError(f"{name}: no hub copy with this layout; use source='local'")
        from datasets import load_dataset
        hub = dict(hub)
        fields = {k: hub.pop(k) for k in ("instruction", "response") if k in hub}
        ds = load_dataset(**hub)
        records = [dict(r, _line=i + 1) for i, r in enumerate(ds)]
        return _frame(name, {**entry, **fields}, records, f"hub:{hub['path']}")
    if source != "local":
        raise ValueError(f"source must be 'local' or 'hub', got {source!r}")
    root = Path(local_root) if local_root is not None else default_local_root()
    path = root / entry["file"]
    records = read_records(path)
    join = entry.get("join")
    if join:
        other = {str(r.get(join["on"])): r for r in read_records(root / join["file"])}
        for rec in records:
            match = other.get(str(rec.get(join["on"])))
            rec["_joined"] = match or {}
        entry = {**entry, "response": "_joined." + join["take"]}
    return _frame(name, entry, records, str(path))


def default_local_root() -> Path:
    """The config's default ``audit.local_root``, resolved against the project root."""
    return (PROJECT_ROOT / AuditConfig().local_root).resolve()


def load_all(local_root: Path | None = None, names=None):
    """Every registry dataset (or ``names``) stacked into one frame."""
    import pandas as pd
    return pd.concat([load_source(n, local_root=local_root) for n in (names or SOURCES)],
                     ignore_index=True)


def creative_match(text: str) -> str:
    """The regex term that makes an instruction creative, or "" (see CREATIVE_* above)."""
    m = CREATIVE_STRONG.search(text or "")
    if m:
        return m.group(0).lower()
    m = COMPOSE_THEN_WEAK.search(text or "")
    if m and not TECHNICAL.search(text):
        return m.group(1).lower()
    return ""


def creative_rule(dataset: str, category: str, instruction: str) -> str:
    """Why a record is creative ("category:writing", "dataset:all", "regex:poem") or ""."""
    rule = SOURCES.get(dataset, {}).get("creative")
    if rule == "all":
        return "dataset:all"
    if rule:
        return f"category:{category}" if category in rule else ""
    term = creative_match(instruction)
    return f"regex:{term}" if term else ""


def creative_slice(df):
    """Records that ask for or respond with creative writing, plus ``slice_rule``.

    The dataset's own category decides where it has one (vicuna/mt_bench writing and
    roleplay, WizardLM Writting/Literature/Roleplay, WritingBench Literature & Arts;
    EQ-Bench and HANNA are all creative); elsewhere the instruction regex does.
    Unknown datasets (e.g. a test frame) use the regex.
    """
    rules = [creative_rule(d, c, i) for d, c, i in
             zip(df["dataset"], df.get("category", [""] * len(df)), df["instruction"])]
    out = df.assign(slice_rule=rules)
    return out[out.slice_rule != ""].copy()


def slice_sizes(df, creative=None):
    """Per dataset: records, creative records, share and the rules that selected them."""
    import pandas as pd
    creative = creative_slice(df) if creative is None else creative
    rows = []
    for name, g in df.groupby("dataset", sort=False):
        c = creative[creative.dataset == name]
        kinds = c.slice_rule.str.split(":").str[0].value_counts().to_dict()
        rows.append(dict(dataset=name, n=len(g), n_creative=len(c),
                         share=len(c) / len(g) if len(g) else float("nan"),
                         rules=", ".join(f"{k} {v}" for k, v in kinds.items())))
    return pd.DataFrame(rows)


def draw_label_sample(df, seed: int = 0, n_creative: int = 18, n_other: int = 4):
    """The hand-labelling sample: per dataset, up to n_creative creative-slice records and
    up to n_other others (negatives for the classifiers), each drawn with ``seed``.

    Returns the drawn rows (all columns of ``df`` plus ``slice_rule``; "" = not creative),
    ordered by dataset in registry order, then creative first, then record order.
    """
    import pandas as pd
    rules = creative_slice(df).slice_rule
    full = df.assign(slice_rule=rules.reindex(df.index).fillna(""))
    parts = []
    for name in dict.fromkeys(df["dataset"]):
        g = full[full.dataset == name]
        for pool, k in ((g[g.slice_rule != ""], n_creative), (g[g.slice_rule == ""], n_other)):
            parts.append(pool.sample(n=min(k, len(pool)), random_state=seed).sort_index())
    return pd.concat(parts)
