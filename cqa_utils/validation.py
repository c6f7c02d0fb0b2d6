"""``cqa validate``: the schema plus the design rules a benchmark must meet to be a fair test.

The schema (data.py) says a record is well formed; these rules say the benchmark measures
fit between x and its constraints y rather than word matching (see data/README.md):

* **leakage** — no normalized 8-gram shared between any benchmark text (x, x_degraded,
  context, constraints) and any annotation text (passage, context, constraints, CoT);
  an exempt file is checked on x and x_degraded only, the rule v1 was built under;
* **no reuse** — no personal name and no topic tag (compared Snowball-stemmed) shared
  between a benchmark item and an annotation;
* **briefs, not descriptions** — each item's word overlap (:func:`cqa_utils.overlap.overlap_share`
  of x against y) at most ``max_overlap``, and the two groups' means within ``max_group_gap``;
* **degradations that break one thing** — x_degraded within ±``degraded_length`` of x in
  words, sharing as many of y's content words as x (±``degraded_shared``), so the overlap
  baseline's metric check (ties count half) lies within ``baseline_band``; breaks balanced;
* **a fair control** — the factual item of a pair within ±``pair_length`` of the literary one.

A benchmark file can be exempted from the design rules (not the schema or x's leakage) in
a ``manifest.yaml`` beside it (``<data>/benchmark/manifest.yaml``) with a stated reason; v1 is,
and is kept for comparison.

``cqa validate`` takes the data/ folder (``annotations/*.jsonl``, ``benchmark/*.jsonl``), one
JSONL file, or a folder of them; each file's kind comes from :func:`cqa_utils.data.file_kind`.
Leakage and no-reuse compare the benchmark files with the annotation files validated with them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .data import Annotation, BenchmarkItem, DataError, file_kind, load_annotations, load_benchmark, read_jsonl
from .overlap import content_words, overlap_share, shared_words

LEAKAGE_NGRAM = 8


@dataclass(frozen=True)
class DesignRules:
    max_overlap: float = 0.06  # share of x's content stems that y may repeat
    max_group_gap: float = 0.02  # |mean overlap literary − mean overlap factual|
    degraded_length: float = 0.10  # x_degraded words within ±10 % of x
    degraded_shared: int = 1  # |y-words in x_degraded − y-words in x|
    baseline_band: tuple[float, float] = (0.40, 0.60)  # overlap baseline's metric check, ties half
    pair_length: float = 0.15  # factual x words within ±15 % of its literary partner


def _texts(record) -> dict[str, str]:
    if isinstance(record, Annotation):
        fields = {"passage": record.passage, "context": record.context, "constraints": record.constraints.text()}
        return fields | {f"cot[{i}]": s.text for i, s in enumerate(record.cot)}
    return {"x": record.x, "x_degraded": record.x_degraded or "", "context": record.context,
            "constraints": record.constraints.text()}


def ngrams(text: str, n: int = LEAKAGE_NGRAM) -> set[tuple[str, ...]]:
    """Word n-grams after lower-casing and stripping punctuation, so re-punctuated copies still match."""
    words = re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower().replace("’", "'"))
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def leakage(annotations: list[Annotation], benchmark: list[BenchmarkItem], n: int = LEAKAGE_NGRAM,
            fields: tuple[str, ...] = ("x", "x_degraded", "context", "constraints")) -> list[str]:
    """Benchmark ``fields`` sharing a normalized n-gram with any annotation text (passage, context,
    constraints, CoT). Exempt files are checked on x and x_degraded only, the rule they were built under."""
    seen: dict[tuple[str, ...], str] = {}
    for ann in annotations:
        for text in _texts(ann).values():
            for gram in ngrams(text, n):
                seen.setdefault(gram, ann.id)
    problems = []
    for item in benchmark:
        for field, text in _texts(item).items():
            if field not in fields:
                continue
            hits = [g for g in ngrams(text, n) if g in seen]
            if hits:
                problems.append(f"benchmark item {item.id}: {field}: shares {len(hits)} {n}-gram(s) with "
                                f"annotation {seen[hits[0]]}, e.g. {' '.join(hits[0])!r}")
    return problems


def _tag(text: str) -> frozenset[str]:
    return content_words(text) or frozenset({text.lower().strip()})


def reuse(annotations: list[Annotation], benchmark: list[BenchmarkItem], where: dict[str, str]) -> list[str]:
    """A name or topic tag of a benchmark item that an annotation also carries, naming both records."""
    names, topics = {}, {}
    for ann in annotations:
        for name in ann.names:
            names.setdefault(name.lower(), ann.id)
        for tag in ann.topics:
            topics.setdefault(_tag(tag), (ann.id, tag))
    problems = []
    for item in benchmark:
        for name in item.names:
            if name.lower() in names:
                problems.append(f"{where[item.id]}: names: {name!r} is also a name in annotation {names[name.lower()]}")
        for tag in item.topics:
            if _tag(tag) in topics:
                ann_id, theirs = topics[_tag(tag)]
                problems.append(f"{where[item.id]}: topics: {tag!r} is annotation {ann_id}'s topic {theirs!r}")
    return problems


def overlap_report(items: list[BenchmarkItem]) -> list[dict]:
    """Per item and variant: overlap share with y and the shared stems (what ``cqa validate`` prints)."""
    rows = []
    for item in items:
        y = item.constraints.text()
        for variant, text in (("x", item.x), ("x_degraded", item.x_degraded)):
            if text:
                rows.append({"item_id": item.id, "group": item.group, "variant": variant,
                             "overlap": overlap_share(text, y), "shared": shared_words(text, y)})
    return rows


def baseline_metric_check(items: list[BenchmarkItem]) -> tuple[float, int, int, int]:
    """Share of degraded items where y's words favour the intact x (ties half): (share, ahead, tied, n)."""
    ahead = tied = n = 0
    for item in items:
        if item.x_degraded:
            y = item.constraints.text()
            intact, degraded = len(shared_words(item.x, y)), len(shared_words(item.x_degraded, y))
            ahead, tied, n = ahead + (intact > degraded), tied + (intact == degraded), n + 1
    return ((ahead + tied / 2) / n if n else float("nan")), ahead, tied, n


def design_problems(path: Path, items: list[BenchmarkItem], where: dict[str, str],
                    rules: DesignRules = DesignRules()) -> list[str]:
    """Every violation of the design rules in one benchmark file (per item, then per file)."""
    problems, by_group = [], {}
    for row in overlap_report(items):
        if row["variant"] == "x":
            by_group.setdefault(row["group"], []).append(row["overlap"])
            if row["overlap"] > rules.max_overlap:
                problems.append(f"{where[row['item_id']]}: constraints: y repeats {row['overlap']:.3f} of x's "
                                f"content words (cap {rules.max_overlap}): {row['shared']}")
    for item in items:
        if not item.x_degraded:
            continue
        y = item.constraints.text()
        words, degraded_words = len(item.x.split()), len(item.x_degraded.split())
        if abs(degraded_words - words) > rules.degraded_length * words:
            problems.append(f"{where[item.id]}: x_degraded: {degraded_words} words vs {words} in x "
                            f"(allowed ±{rules.degraded_length:.0%})")
        gap = len(shared_words(item.x_degraded, y)) - len(shared_words(item.x, y))
        if abs(gap) > rules.degraded_shared:
            problems.append(f"{where[item.id]}: x_degraded: shares {gap:+d} of y's content words relative to x "
                            f"(allowed ±{rules.degraded_shared}): the overlap baseline could tell them apart")
    means = {g: sum(v) / len(v) for g, v in by_group.items()}
    if len(means) == 2 and abs(means["literary"] - means["factual"]) > rules.max_group_gap:
        problems.append(f"{path}: (file): mean overlap literary {means['literary']:.3f} vs factual "
                        f"{means['factual']:.3f} differ by more than {rules.max_group_gap}")
    share, ahead, tied, n = baseline_metric_check(items)
    low, high = rules.baseline_band
    if n and not low <= share <= high:
        problems.append(f"{path}: (file): the word-overlap baseline favours the intact text in {share:.0%} of "
                        f"{n} items ({ahead} ahead, {tied} tied); must lie in [{low:.0%}, {high:.0%}]")
    breaks = [i.degraded_breaks for i in items if i.degraded_breaks]
    counts = {b: breaks.count(b) for b in ("intent", "audience", "reality")}
    if breaks and max(counts.values()) - min(counts.values()) > max(1, len(breaks) // 10):
        problems.append(f"{path}: (file): degraded_breaks unbalanced: {counts}")
    problems += _pair_lengths(items, where, rules)
    return problems


def _pair_lengths(items: list[BenchmarkItem], where: dict[str, str], rules: DesignRules) -> list[str]:
    pairs: dict[str, dict[str, BenchmarkItem]] = {}
    for item in items:
        if item.pair_id:
            pairs.setdefault(item.pair_id, {})[item.group] = item
    problems = []
    for pair_id, members in pairs.items():
        if set(members) != {"literary", "factual"}:
            some = next(iter(members.values()))
            problems.append(f"{where[some.id]}: pair_id: {pair_id!r} has only {sorted(members)}")
            continue
        lit, fact = (len(members[g].x.split()) for g in ("literary", "factual"))
        if abs(fact - lit) > rules.pair_length * lit:
            problems.append(f"{where[members['factual'].id]}: x: {fact} words vs {lit} in literary partner "
                            f"{members['literary'].id} (allowed ±{rules.pair_length:.0%})")
    return problems


def exempt_files(folder: Path) -> dict[str, str]:
    """Benchmark files of ``folder`` exempted from the design rules, with the reason (its ``manifest.yaml``)."""
    import yaml

    manifest = Path(folder) / "manifest.yaml"
    if not manifest.is_file():
        return {}
    entries = (yaml.safe_load(manifest.read_text(encoding="utf-8")) or {}).get("files", {})
    for name, entry in entries.items():
        if not isinstance(entry, dict) or not str(entry.get("reason", "")).strip():
            raise ValueError(f"{manifest}: files.{name}: needs a 'reason' saying why it is exempt")
    return {name: entry["reason"] for name, entry in entries.items() if entry.get("exempt_from_design_rules")}


def item_lines(path: Path) -> dict[str, str]:
    """``file:line`` of every record id, for messages that point at the record."""
    return {str(obj.get("id")): f"{path}:{number}" for number, obj in read_jsonl(path)}


def data_files(path: Path) -> list[Path]:
    """The JSONL files ``cqa validate`` checks: ``path`` itself, or a folder's ``*.jsonl`` and its
    ``annotations/*.jsonl`` and ``benchmark/*.jsonl`` (the data/ layout)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    files = [f for where in (path, path / "annotations", path / "benchmark") for f in sorted(where.glob("*.jsonl"))]
    if not files:
        raise FileNotFoundError(f"{path}: no *.jsonl file in it, nor in its annotations/ or benchmark/ folder")
    return files


def validate_path(path: Path, kind: str | None = None) -> dict:
    """Validate a data folder, one JSONL file, or a folder of them: schema, leakage, reuse, design.

    ``kind`` ("annotations" or "benchmark") states what files hold where neither their folder name
    nor their fields tell (:func:`cqa_utils.data.file_kind`). Returns ``{file: {"kind": ...,
    "records": n}}``, benchmark files adding ``"overlap": [...]``, ``"exempt": reason or None`` and
    ``"baseline_metric_check"``; raises DataError listing every problem found in every file.
    """
    problems, report, annotations, benchmarks, exempt = [], {}, [], [], {}
    for file in data_files(path):
        try:
            file_is = file_kind(file, kind)
            records = (load_annotations if file_is == "annotations" else load_benchmark)(file)
        except DataError as err:
            problems.extend(err.problems)
            continue
        report[str(file)] = {"kind": file_is, "records": len(records)}
        if file_is == "annotations":
            annotations.extend(records)
            continue
        if file.parent not in exempt:
            exempt[file.parent] = exempt_files(file.parent)
        where = item_lines(file)
        benchmarks.append((file, records, where))
        report[str(file)] |= {"overlap": overlap_report(records), "exempt": exempt[file.parent].get(file.name),
                              "baseline_metric_check": baseline_metric_check(records)[0]}
    for file, items, where in benchmarks:
        if file.name in exempt[file.parent]:
            problems += leakage(annotations, items, fields=("x", "x_degraded"))
        else:
            problems += leakage(annotations, items) + reuse(annotations, items, where) + design_problems(file, items, where)
    if problems:
        raise DataError(problems)
    return report


def print_report(report: dict) -> None:
    """What ``cqa validate`` prints: per file its size, and per benchmark item its overlap with y."""
    for path, entry in report.items():
        print(f"ok  {entry['records']:4d} records  {path}  ({entry['kind']})")
        if "overlap" not in entry:
            continue
        for row in entry["overlap"]:
            print(f"      {row['item_id']:<10} {row['variant']:<10} overlap {row['overlap']:.3f}  {' '.join(row['shared'])}")
        means = {}
        for row in entry["overlap"]:
            if row["variant"] == "x":
                means.setdefault(row["group"], []).append(row["overlap"])
        summary = ", ".join(f"{g} {sum(v) / len(v):.3f}" for g, v in means.items())
        print(f"      mean overlap of x with y: {summary}; word-overlap baseline metric check "
              f"{entry['baseline_metric_check']:.0%} (ties half)")
        if entry["exempt"]:
            print(f"      exempt from the design rules: {entry['exempt']}")
    kinds = {entry["kind"] for entry in report.values()}
    if kinds == {"annotations", "benchmark"}:
        print("schema, leakage, no-reuse and design rules: all hold")
    elif kinds == {"benchmark"}:
        print("schema and design rules: all hold; leakage and no-reuse not checked: no annotation file was "
              "given (validate the benchmark with the annotations, e.g. a folder holding both)")
    else:
        print("schema: holds; no benchmark file was given, so no leakage, no-reuse or design rule applies")
