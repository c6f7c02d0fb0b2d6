"""Schemas and loaders for the project's own data: CoT annotations and the benchmark.

Every problem in a file is reported with file, line and field (malformed JSON, missing,
misspelt, empty or mistyped fields, unknown labels, duplicate ids), all at once, before
anything is used. A record may carry fields of its own (a source, a licence, a note): they
are kept, read-only, in its ``extra`` and passed through to stage 03's outputs, never
rendered into a prompt; a field name close to a known one is refused as a likely typo.
A field that is missing is one problem (not also a wrong type). ``cqa validate`` runs the same
checks plus the benchmark's design rules (:mod:`cqa_utils.validation`); it tells a file's kind
(annotations or benchmark) from its folder name or its fields (:func:`file_kind`).
Used by notebooks 01–03 and by the ``cqa validate`` and ``cqa score`` commands.
"""
from __future__ import annotations

import difflib
import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONSTRAINT_TYPES = ("intent", "audience", "reality")
COT_TYPES = (*CONSTRAINT_TYPES, "craft")
VERDICTS = ("works", "partly", "fails")
GENRES = ("realist_fiction", "genre_fiction", "poetry", "drama", "childrens", "literary_nonfiction")
GROUPS = ("literary", "factual")
TAG_FIELDS = ("topics", "names")  # optional on every record; the no-reuse check compares them
ANNOTATION_FIELDS = ("id", "lang", "genre", "context", "constraints", "passage", "cot", "judgment")  # required
BENCHMARK_FIELDS = ("id", "group", "lang", "context", "constraints", "x")  # required
BENCHMARK_OPTIONAL = ("x_degraded", "degraded_breaks", "pair_id")
KINDS = ("annotations", "benchmark")  # what a data file holds; also the folder names of the data/ layout
TYPO_CUTOFF = 0.75  # difflib similarity at or above which an unknown field name is taken for a typo


class DataError(ValueError):
    """One or more problems in a data file, each as ``file:line: field: message``."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        super().__init__(f"{len(problems)} problem(s):\n  " + "\n  ".join(shown))


class Extra(dict):
    """A record's extra fields, read-only at the top level.

    A dict rather than a ``MappingProxyType`` so that ``json.dumps``, ``dataclasses.asdict``
    (and so ``pd.DataFrame(records)``), ``copy.deepcopy`` and pickling keep working on records.
    """

    def _read_only(self, *args, **kwargs):
        raise TypeError("a record's extra fields are read-only")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self):
        return Extra, (dict(self),)


@dataclass(frozen=True)
class Constraints:
    intent: str
    audience: str
    reality: str

    def text(self) -> str:
        """The three slots joined: y as plain text, what word overlap is measured against."""
        return "\n".join((self.intent, self.audience, self.reality))


@dataclass(frozen=True)
class CotStep:
    type: str
    text: str


@dataclass(frozen=True)
class Judgment:
    verdict: str
    summary: str


@dataclass(frozen=True)
class Annotation:
    id: str
    lang: str
    genre: str
    context: str
    constraints: Constraints
    passage: str
    cot: tuple[CotStep, ...]
    judgment: Judgment
    topics: tuple[str, ...] = ()  # concrete main subjects, for the no-reuse check against the benchmark
    names: tuple[str, ...] = ()  # personal names of characters, people or animals in the record
    extra: Mapping[str, Any] = field(default_factory=Extra, hash=False)  # fields outside the schema, as read


@dataclass(frozen=True)
class BenchmarkItem:
    id: str
    group: str
    lang: str
    context: str
    constraints: Constraints
    x: str
    x_degraded: str | None = None
    degraded_breaks: str | None = None
    pair_id: str | None = None
    topics: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=Extra, hash=False)  # fields outside the schema, as read


class _Checker:
    """Collects problems for one record so a file reports everything in one go."""

    def __init__(self, where: str, problems: list[str]):
        self.where, self.problems = where, problems
        self.missing: set[str] = set()  # fields already reported missing: no second problem for them

    def fail(self, field: str, message: str) -> None:
        if field not in self.missing:
            self.problems.append(f"{self.where}: {field}: {message}")

    def keys(self, obj: dict, required: tuple, optional: tuple = (), prefix: str = "",
             open_schema: bool = False) -> Extra:
        """Check ``obj``'s field names; return its extra fields.

        A missing required field, or an unknown one close to a known name, is a problem. Other
        unknown fields are the record's extras when ``open_schema`` (top-level records), and
        problems otherwise: the nested objects' slots are rendered into prompts, so a slot the
        code does not know would silently change what is scored.
        """
        known = required + optional
        for key in required:
            if key not in obj:
                self.fail(prefix + key, "missing required field")
                self.missing.add(prefix + key)
        extra = {}
        for key, value in obj.items():
            if key in known:
                continue
            guess = likely_typo(key, known)
            if guess:
                self.fail(prefix + key, f"unknown field; did you mean {guess!r}?")
            elif open_schema:
                extra[key] = value
            else:
                self.fail(prefix + key, f"unknown field; allowed: {sorted(known)}")
        return Extra(extra)

    def text(self, obj: dict, key: str, prefix: str = "", allow_empty: bool = False) -> str:
        value = obj.get(key)
        if not isinstance(value, str):
            self.fail(prefix + key, f"must be a string, got {type(value).__name__}")
            return ""
        if not allow_empty and not value.strip():
            self.fail(prefix + key, "is empty or whitespace only")
        return value

    def choice(self, obj: dict, key: str, allowed: tuple, prefix: str = "") -> str:
        value = self.text(obj, key, prefix)
        if value and value not in allowed:
            self.fail(prefix + key, f"{value!r} is not one of {list(allowed)}")
        return value

    def strings(self, obj: dict, key: str) -> tuple[str, ...]:
        """An optional list of non-empty strings (``()`` when the field is absent)."""
        value = obj.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            self.fail(key, f"must be a list of non-empty strings, got {value!r}")
            return ()
        return tuple(value)

    def mapping(self, obj: dict, key: str) -> dict:
        value = obj.get(key)
        if not isinstance(value, dict):
            self.fail(key, f"must be an object, got {type(value).__name__}")
            return {}
        return value


def likely_typo(name: str, known: tuple[str, ...]) -> str | None:
    """The known field name that ``name`` is probably a misspelling of, else None.

    Compared lower-cased by difflib's ratio, 2 × matching characters / the two lengths summed.
    The cutoff :data:`TYPO_CUTOFF` = 0.75 admits one wrong letter in a four-letter name (``lamg``
    → ``lang``) and more in longer ones (``contraints`` scores 0.95), while plausible extra
    fields stay below it against every schema name: ``pair`` and ``text`` 0.73, ``language``
    0.67, ``notes`` 0.60, ``licence`` 0.50, ``source`` 0.36. difflib's default of 0.6 would
    take ``notes`` for a typo of ``names``.
    """
    matches = difflib.get_close_matches(name.lower(), known, n=1, cutoff=TYPO_CUTOFF)
    return matches[0] if matches else None


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) pairs; blank lines skipped; every bad line reported.

    A ``.gz`` file is read through gzip (the shipped audit records are compressed).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows, problems = [], []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                problems.append(f"{path}:{number}: (line): malformed JSON: {err.msg} at column {err.colno}")
                continue
            if not isinstance(obj, dict):
                problems.append(f"{path}:{number}: (line): must be a JSON object, got {type(obj).__name__}")
                continue
            rows.append((number, obj))
    if problems:
        raise DataError(problems)
    if not rows:
        raise DataError([f"{path}: (file): contains no records"])
    return rows


def _constraints(check: _Checker, obj: dict) -> Constraints:
    raw = check.mapping(obj, "constraints")
    if raw:
        check.keys(raw, CONSTRAINT_TYPES, prefix="constraints.")
    return Constraints(*(check.text(raw, k, "constraints.") if raw else "" for k in CONSTRAINT_TYPES))


def _parse_annotation(check: _Checker, obj: dict) -> Annotation:
    extra = check.keys(obj, ANNOTATION_FIELDS, optional=TAG_FIELDS, open_schema=True)
    steps = obj.get("cot")
    parsed_steps = []
    if not isinstance(steps, list) or not steps:
        check.fail("cot", "must be a non-empty list of {type, text} steps")
        steps = []
    for index, step in enumerate(steps):
        prefix = f"cot[{index}]."
        if not isinstance(step, dict):
            check.fail(f"cot[{index}]", "must be an object {type, text}")
            continue
        check.keys(step, ("type", "text"), prefix=prefix)
        parsed_steps.append(CotStep(check.choice(step, "type", COT_TYPES, prefix), check.text(step, "text", prefix)))
    present = {s.type for s in parsed_steps}
    typed = parsed_steps and present <= set(COT_TYPES)  # a step without a valid type may be the absent one
    for needed in COT_TYPES:
        if typed and needed not in present:
            check.fail("cot", f"has no {needed!r} step; every CoT reasons about {list(COT_TYPES)}")
    judgment = check.mapping(obj, "judgment")
    if judgment:
        check.keys(judgment, ("verdict", "summary"), prefix="judgment.")
    return Annotation(
        id=check.text(obj, "id"), lang=check.text(obj, "lang"), genre=check.choice(obj, "genre", GENRES),
        context=check.text(obj, "context", allow_empty=True), constraints=_constraints(check, obj),
        passage=check.text(obj, "passage"), cot=tuple(parsed_steps),
        judgment=Judgment(check.choice(judgment, "verdict", VERDICTS, "judgment.") if judgment else "",
                          check.text(judgment, "summary", "judgment.") if judgment else ""),
        topics=check.strings(obj, "topics"), names=check.strings(obj, "names"), extra=extra,
    )


def _parse_benchmark_item(check: _Checker, obj: dict) -> BenchmarkItem:
    extra = check.keys(obj, BENCHMARK_FIELDS, optional=(*BENCHMARK_OPTIONAL, *TAG_FIELDS), open_schema=True)
    group = check.choice(obj, "group", GROUPS)
    has_degraded = "x_degraded" in obj or "degraded_breaks" in obj
    if has_degraded and group == "factual":
        check.fail("x_degraded", "only literary items carry a degraded version")
    if has_degraded and not ("x_degraded" in obj and "degraded_breaks" in obj):
        check.fail("degraded_breaks" if "x_degraded" in obj else "x_degraded",
                   "x_degraded and degraded_breaks come together")
    return BenchmarkItem(
        id=check.text(obj, "id"), group=group, lang=check.text(obj, "lang"),
        context=check.text(obj, "context", allow_empty=True), constraints=_constraints(check, obj),
        x=check.text(obj, "x"),
        x_degraded=check.text(obj, "x_degraded") if "x_degraded" in obj else None,
        degraded_breaks=check.choice(obj, "degraded_breaks", CONSTRAINT_TYPES) if "degraded_breaks" in obj else None,
        pair_id=check.text(obj, "pair_id") if "pair_id" in obj else None,
        topics=check.strings(obj, "topics"), names=check.strings(obj, "names"), extra=extra,
    )


def _load(path: Path, parse) -> list:
    path = Path(path)
    problems: list[str] = []
    records, first_line = [], {}
    for number, obj in read_jsonl(path):
        check = _Checker(f"{path}:{number}", problems)
        record = parse(check, obj)
        if record.id in first_line:
            check.fail("id", f"duplicate id {record.id!r} (first on line {first_line[record.id]})")
        elif record.id:
            first_line[record.id] = number
        records.append(record)
    if problems:
        raise DataError(problems)
    return records


def load_annotations(path: Path) -> list[Annotation]:
    """Load and validate the CoT annotations; raises DataError listing every problem."""
    return _load(path, _parse_annotation)


def load_benchmark(path: Path) -> list[BenchmarkItem]:
    """Load and validate a benchmark file in the project's schema."""
    return _load(path, _parse_benchmark_item)


def file_kind(path: Path, kind: str | None = None) -> str:
    """What a JSONL file holds, ``"annotations"`` or ``"benchmark"``.

    A stated ``kind`` wins (it may not contradict the folder name); else a folder named
    ``annotations`` or ``benchmark`` says it; else the fields: the kind more of whose own required
    fields the records carry (annotations: genre, passage, cot, judgment; benchmark: group, x), so
    an extra field named like the other kind's (a benchmark item's ``passage`` note) does not
    decide it. Raises DataError naming the file when the kind cannot be told.
    """
    path = Path(path)
    folder = path.resolve().parent.name
    if kind is not None:
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r} is not one of {list(KINDS)}")
        if folder in KINDS and folder != kind:
            raise DataError([f"{path}: (file): stated kind {kind!r} contradicts its folder {folder}/; "
                             "move the file or leave the kind out"])
        return kind
    if folder in KINDS:
        return folder
    fields = set().union(*(obj for _, obj in read_jsonl(path)))
    own = {"annotations": [f for f in ANNOTATION_FIELDS if f not in BENCHMARK_FIELDS],
           "benchmark": [f for f in BENCHMARK_FIELDS if f not in ANNOTATION_FIELDS]}
    share = {k: sum(f in fields for f in names) / len(names) for k, names in own.items()}
    if share["annotations"] != share["benchmark"]:
        return max(share, key=share.get)
    if share["annotations"]:
        why = (f"its records carry annotation fields ({', '.join(f for f in own['annotations'] if f in fields)}) "
               f"and benchmark fields ({', '.join(f for f in own['benchmark'] if f in fields)}) alike; "
               "a file holds one kind")
    else:
        why = (f"no record has an annotation's fields ({', '.join(own['annotations'])}) or a benchmark "
               f"item's ({', '.join(own['benchmark'])})")
    raise DataError([f"{path}: (file): cannot tell whether it holds annotations or benchmark items: {why}; "
                     "state it with --kind annotations or --kind benchmark"])
