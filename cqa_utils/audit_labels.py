"""The audit's hand labels: who labelled what, when, and how far the labellers agree.

Used by :mod:`cqa_utils.stages.data_audit` (notebook 01). Three files in ``data/audit/``:

- ``label_sample.jsonl``: the drawn records, one per line -- blind ``item`` id, ``dataset``,
  ``record_id``, ``slice_rule`` ("" = a non-creative negative), ``instruction_sha256`` and,
  for redistributable sources, ``instruction_excerpt``;
- ``labels.jsonl``: one line per (item, labeller) -- ``craft``/``audience``/``reality`` as
  levels 0/1/2 (nothing / named / taught, ``taxonomy.yaml``), ``rationale``, ``labelled_at``;
- ``labellers.yaml``: each labeller: what it is, what it saw, when it worked.

The labeller ``adjudicated`` holds the final label of every item: the shared label where
the two blind labellers agree, the adjudicator's decision where they do not.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from .audit import LABELS, LEVELS, TAUGHT
from .data import read_jsonl

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "audit"
FINAL = "adjudicated"
SAMPLE_KEYS = ("item", "dataset", "record_id", "slice_rule", "instruction_sha256")
LABEL_KEYS = ("item", "labeller", *LABELS, "rationale", "labelled_at")


def text_sha256(text: str) -> str:
    """Hash of an instruction, so labels can be checked against sources that are not shipped."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _rows(path: Path, keys: tuple[str, ...]) -> list[dict]:
    rows = []
    for number, rec in read_jsonl(path):
        missing = [k for k in keys if k not in rec]
        if missing:
            raise ValueError(f"{path}:{number}: missing field(s) {missing}")
        rows.append(dict(rec, _line=number))
    return rows


def load_sample(path: Path | None = None):
    """The labelled sample's records (``label_sample.jsonl``); duplicate items are errors."""
    import pandas as pd
    path = Path(path) if path is not None else DATA_DIR / "label_sample.jsonl"
    rows = _rows(path, SAMPLE_KEYS)
    seen: dict[str, int] = {}
    for rec in rows:
        if rec["item"] in seen:
            raise ValueError(f"{path}:{rec['_line']}: item {rec['item']!r} repeats line {seen[rec['item']]}")
        seen[rec["item"]] = rec["_line"]
    df = pd.DataFrame(rows).drop(columns="_line")
    return df.astype({"record_id": str}).assign(
        instruction_excerpt=df.get("instruction_excerpt", pd.Series("", index=df.index)).fillna(""))


def load_labels(path: Path | None = None, sample=None, labellers: dict | None = None):
    """Every labeller's labels (long form), checked against the sample and the labeller registry.

    Errors name the file and line: a level outside 0/1/2, an item not in the sample, an
    unregistered labeller, an (item, labeller) pair given twice, and -- for the final
    labeller -- an item left without a final label.
    """
    import pandas as pd
    path = Path(path) if path is not None else DATA_DIR / "labels.jsonl"
    sample = load_sample() if sample is None else sample
    labellers = load_labellers() if labellers is None else labellers
    items, seen, rows = set(sample["item"]), {}, _rows(path, LABEL_KEYS)
    for rec in rows:
        where = f"{path}:{rec['_line']}"
        for k in LABELS:
            if rec[k] not in LEVELS:
                raise ValueError(f"{where}: field {k!r} must be a level in {list(LEVELS)}, got {rec[k]!r}")
        if rec["item"] not in items:
            raise ValueError(f"{where}: item {rec['item']!r} is not in the label sample")
        if rec["labeller"] not in labellers:
            raise ValueError(f"{where}: labeller {rec['labeller']!r} is not registered in "
                             f"labellers.yaml ({sorted(labellers)})")
        key = (rec["item"], rec["labeller"])
        if key in seen:
            raise ValueError(f"{where}: item {key[0]!r} labelled twice by {key[1]!r} (line {seen[key]})")
        seen[key] = rec["_line"]
    unlabelled = sorted(items - {i for i, who in seen if who == FINAL})
    if unlabelled:
        raise ValueError(f"{path}: {len(unlabelled)} item(s) without a {FINAL!r} label, e.g. {unlabelled[:5]}")
    return pd.DataFrame(rows).drop(columns="_line")


def load_labellers(path: Path | None = None) -> dict:
    """``labellers.yaml``: labeller id -> description (kind, what it saw, when)."""
    import yaml
    path = Path(path) if path is not None else DATA_DIR / "labellers.yaml"
    found = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("labellers") or {}
    if FINAL not in found:
        raise ValueError(f"{path}: the final labeller {FINAL!r} must be registered")
    return found


def final_labels(labels, sample, bar: int = TAUGHT):
    """The sample with each item's final levels (<label>_level) and 0/1 labels at ``bar``."""
    final = labels[labels.labeller == FINAL].set_index("item")
    out = sample.copy()
    for name in LABELS:
        out[f"{name}_level"] = out["item"].map(final[name]).astype(int)
        out[name] = (out[f"{name}_level"] >= bar).astype(int)
    out["rationale"] = out["item"].map(final["rationale"])
    return out


def labeller_agreement(labels, first: str = "A", second: str = "B"):
    """Agreement of two labellers per type: exact level, Cohen's kappa at both bars, and
    quadratic-weighted kappa on the 0/1/2 levels (sklearn).

    The weighted kappa is the ordinal-scale measure: for two raters it is close to
    Krippendorff's interval alpha, whose PyPI implementation is GPL-licensed and so not a
    dependency of this Apache-2.0 project.

    Returns:
        DataFrame[label, n, exact, kappa_taught, kappa_named, kappa_weighted].
    """
    import numpy as np
    import pandas as pd
    from sklearn.metrics import cohen_kappa_score
    a = labels[labels.labeller == first].set_index("item")
    b = labels[labels.labeller == second].set_index("item")
    both = a.index.intersection(b.index)
    rows = []
    for name in LABELS:
        x, y = a.loc[both, name].astype(int).values, b.loc[both, name].astype(int).values

        def kappa(u, v, **kw):
            return cohen_kappa_score(u, v, **kw) if len(set(u) | set(v)) > 1 else float("nan")
        rows.append(dict(
            label=name, n=len(both), exact=float(np.mean(x == y)),
            kappa_taught=kappa(x >= TAUGHT, y >= TAUGHT), kappa_named=kappa(x >= 1, y >= 1),
            kappa_weighted=kappa(x, y, weights="quadratic")))
    return pd.DataFrame(rows)


def attach_text(sample, frames: dict):
    """The sample joined to its records' instruction/response/category.

    Args:
        sample: ``load_sample()`` (or ``final_labels``) rows.
        frames: dataset -> frame from ``audit_sources.load_source``.
    Raises:
        ValueError listing items whose (dataset, record_id) does not resolve, or whose
        instruction no longer hashes to ``instruction_sha256`` (the source changed under the labels).
    """
    import pandas as pd
    missing = sorted(set(sample.dataset) - set(frames))
    if missing:
        raise ValueError(f"labelled datasets not loaded: {missing}")
    text = pd.concat([frames[d] for d in sample.dataset.unique()], ignore_index=True)[
        ["dataset", "record_id", "instruction", "response", "category"]]
    out = sample.merge(text, on=["dataset", "record_id"], how="left", validate="1:1")
    bad = out[out.instruction.isna()]
    if len(bad):
        raise ValueError(f"labels not found in their source: {list(zip(bad.dataset, bad.record_id))[:10]}")
    drift = out[[text_sha256(i) != h for i, h in zip(out.instruction, out.instruction_sha256)]]
    if len(drift):
        raise ValueError(f"labelled instructions changed in the source: "
                         f"{list(zip(drift.dataset, drift.record_id))[:10]}")
    return out.set_index(sample.index)
