"""Craft / audience / reality audit of public alignment data (paper finding 2).

Driven by notebook 01 through :mod:`cqa_utils.stages.data_audit`. Reads the public datasets
(``audit_sources``), ``data/audit/taxonomy.yaml`` and the hand labels
``data/audit/labels.jsonl``; writes nothing itself (the stage saves the frames it returns). Two classifiers label each
record craft/audience/reality: a transparent cue-regex one (``classify_rules``) and a
TF-IDF + logistic-regression one trained on the hand labels (``classify_learned``).
Both are scored against the hand labels (``agreement``), the learned one only out of fold.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from .data import Annotation

LABELS = ("craft", "audience", "reality")
LEVELS = (0, 1, 2)  # nothing / named / taught (data/audit/taxonomy.yaml)
TAUGHT = 2          # the headline bar: the record teaches the type
DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "audit"


def load_taxonomy(path: Path | None = None) -> dict:
    """The taxonomy YAML with every cue compiled; a bad entry names the label and cue."""
    import yaml
    path = Path(path) if path is not None else DATA_DIR / "taxonomy.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: taxonomy not found; it ships in data/audit/")
    tax = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    labels = tax.get("labels") or {}
    missing = [k for k in LABELS if k not in labels]
    if missing:
        raise ValueError(f"{path}: labels {missing} missing; need {list(LABELS)}")
    for name in LABELS:
        entry = labels[name]
        if not entry.get("definition") or not entry.get("cues"):
            raise ValueError(f"{path}: label {name!r} needs 'definition' and 'cues'")
        for cue in entry["cues"]:
            where = f"{path}: {name}.{cue.get('id')}"
            if cue.get("scope", "any") not in ("any", "instruction"):
                raise ValueError(f"{where}: scope must be 'any' or 'instruction', "
                                 f"got {cue.get('scope')!r}")
            if cue.get("level", TAUGHT) not in LEVELS[1:]:
                raise ValueError(f"{where}: level must be 1 (named) or 2 (taught), got {cue.get('level')!r}")
            if cue.get("level", TAUGHT) == 1 and cue.get("scope") != "instruction":
                raise ValueError(f"{where}: a level-1 (named) cue reads the instruction only; "
                                 f"set scope: instruction")
            try:
                cue["regex"] = re.compile(cue["pattern"], re.I)
            except (KeyError, re.error) as err:
                raise ValueError(f"{path}: {name}.{cue.get('id')}: bad pattern ({err})") from None
    return tax


def classify_rules(df, taxonomy: dict, fields=("instruction", "response"), bar: int = TAUGHT):
    """Multi-label cue classifier; every decision is traceable to the cue that fired.

    A type's level is the highest level among its cues that fire (0 when none does).

    Args:
        df: frame with the ``fields`` columns (e.g. from ``load_source``).
        taxonomy: ``load_taxonomy()``; cues with scope "instruction" read only fields[0].
        bar: the level that counts as positive (2 = taught, the headline; 1 = named).
    Returns:
        DataFrame on df's index: dataset, record_id (when present), craft/audience/reality
        as 0/1 (level >= bar), <label>_level in 0..2, and <label>_cues such as
        "fixed_form:haiku; genre:horror" ("" if none).
    """
    import pandas as pd
    out = {k: df[k] for k in ("dataset", "record_id") if k in df}
    first = df[fields[0]].fillna("").astype(str)
    every = df[list(fields)].fillna("").astype(str).agg("\n\n".join, axis=1)
    for name in LABELS:
        hits, levels = [], []
        for head, full in zip(first, every):
            fired, level = [], 0
            for cue in taxonomy["labels"][name]["cues"]:
                m = cue["regex"].search(head if cue.get("scope") == "instruction" else full)
                if m:
                    fired.append(f"{cue['id']}:{m.group(0).lower()}")
                    level = max(level, cue.get("level", TAUGHT))
            hits.append("; ".join(fired))
            levels.append(level)
        out[name] = [int(v >= bar) for v in levels]
        out[f"{name}_level"] = levels
        out[f"{name}_cues"] = hits
    return pd.DataFrame(out, index=df.index)


def _texts(df) -> list[str]:
    return (df["instruction"].fillna("") + "\n\n" + df["response"].fillna("")).tolist()


def _learned_model(seed: int = 0):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, max_features=50_000),
        OneVsRestClassifier(LogisticRegression(class_weight="balanced", max_iter=2000,
                                               random_state=seed)))


def classify_learned(train_labels, df, seed: int = 0):
    """TF-IDF (1-2 grams) + one-vs-rest logistic regression fitted on hand labels.

    Args:
        train_labels: hand labels with text (``attach_text``), columns LABELS as 0/1.
        df: records to label (instruction, response columns).
    Returns:
        DataFrame on df's index: craft/audience/reality as 0/1 and p_<label> in [0, 1].
    """
    import pandas as pd
    for frame, name in ((train_labels, "train_labels"), (df, "df")):
        if "instruction" not in frame:
            raise ValueError(f"{name} has no text; pass it through attach_text() first")
    model = _learned_model(seed).fit(_texts(train_labels), train_labels[list(LABELS)].values)
    proba = model.predict_proba(_texts(df))  # [n_records, 3]
    out = pd.DataFrame((proba >= 0.5).astype(int), columns=list(LABELS), index=df.index)
    for j, name in enumerate(LABELS):
        out[f"p_{name}"] = proba[:, j]
    return out


def prompt_key(text: str) -> str:
    """Normalised prompt text (case, whitespace and punctuation folded): the same prompt
    shipped by two datasets (156 Koala prompts are also in AlpacaEval) gets one key."""
    return " ".join(re.sub(r"[^\w\s]", " ", str(text).lower()).split())


def cross_val_predict_learned(labels, folds: int = 5, seed: int = 0):
    """Out-of-fold learned predictions, so agreement is never measured on training data.

    Folds are grouped by ``prompt_key`` of the instruction (sklearn ``GroupKFold``): a
    prompt that two datasets share is never in a training fold and its test fold at once.
    """
    import pandas as pd
    from sklearn.model_selection import GroupKFold
    groups = labels["instruction"].map(prompt_key)
    parts = []
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(labels, groups=groups):
        parts.append(classify_learned(labels.iloc[train], labels.iloc[test], seed=seed))
    return pd.concat(parts).loc[labels.index]


def agreement(gold, pred, labels=LABELS):
    """Per-label precision, recall, F1 and Cohen's kappa of pred against gold (sklearn)."""
    import pandas as pd
    from sklearn.metrics import cohen_kappa_score, precision_recall_fscore_support
    rows = []
    for name in labels:
        g, p = gold[name].astype(int).values, pred[name].astype(int).values
        prec, rec, f1, _ = precision_recall_fscore_support(
            g, p, average="binary", zero_division=0)
        kappa = cohen_kappa_score(g, p) if len(set(g) | set(p)) > 1 else float("nan")
        rows.append(dict(label=name, n=len(g), gold_pos=int(g.sum()), pred_pos=int(p.sum()),
                         precision=prec, recall=rec, f1=f1, kappa=kappa))
    return pd.DataFrame(rows)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials.

    Closed form (Wilson 1927) with z from scipy: statsmodels is not a dependency, and the
    Wald interval collapses to [0, 0] at k = 0, which small per-dataset samples hit often.
    """
    from scipy.stats import norm
    if n <= 0:
        return (float("nan"), float("nan"))
    z = norm.ppf(0.5 + confidence / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def type_shares(df_labelled, by: str | None = "dataset", labels=LABELS, confidence=0.95):
    """Share of records teaching each constraint type, per group, with Wilson intervals.

    Returns:
        Long DataFrame: <by>, label, n, k, share, ci_low, ci_high (fractions in [0, 1]).
    """
    import pandas as pd
    groups = df_labelled.groupby(by, sort=False) if by else [("all", df_labelled)]
    rows = []
    for key, g in groups:
        for name in labels:
            k, n = int(g[name].sum()), len(g)
            lo, hi = wilson_interval(k, n, confidence)
            rows.append({by or "group": key, "label": name, "n": n, "k": k,
                         "share": k / n if n else float("nan"), "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def annotation_frame(annotations: list[Annotation]):
    """The project's CoT annotations in the audit's record shape (dataset "cqa_annotations").

    instruction = context + passage; response = the CoT step texts + judgment summary.
    Takes records already checked by :func:`cqa_utils.data.load_annotations`.
    """
    import pandas as pd

    rows = [dict(dataset="cqa_annotations", record_id=ann.id,
                 instruction="\n\n".join(x for x in (ann.context, ann.passage) if x),
                 response="\n\n".join([s.text for s in ann.cot] + [ann.judgment.summary]),
                 category=ann.genre, rubric="")
            for ann in annotations]
    return pd.DataFrame(rows)


def classify_annotations(annotations: list[Annotation], taxonomy: dict):
    """The rule classifier applied to our own CoT annotations, for contrast with public data."""
    return classify_rules(annotation_frame(annotations), taxonomy)


def capped(df, cap: int | None, seed: int):
    """At most ``cap`` records per dataset, drawn with a fixed seed (smoke runs)."""
    if not cap:
        return df
    shuffled = df.sample(frac=1.0, random_state=seed)
    return shuffled.groupby("dataset", sort=False).head(cap).sort_index()
