"""Validators (every problem named by file, line and field), extra fields, and the corpus itself."""
import collections
import dataclasses
import json
import re

import pandas as pd
import pytest
from conftest import PROJECT_ROOT, annotation, base_only_config, benchmark_item, write_jsonl

from cqa_utils.data import COT_TYPES, DataError, Extra, load_annotations, load_benchmark

ANNOTATIONS = PROJECT_ROOT / "data" / "annotations" / "cot_annotations.jsonl"
BENCHMARKS = {"v1": (PROJECT_ROOT / "data" / "benchmark" / "benchmark_v1.jsonl", 40),
              "v2": (PROJECT_ROOT / "data" / "benchmark" / "benchmark_v2.jsonl", 48)}  # file, items per group


def problems_of(loader, path):
    with pytest.raises(DataError) as err:
        loader(path)
    return err.value.problems


@pytest.mark.parametrize("line, expected", [
    ('{"id": "t-001", "lang": ', r"f.jsonl:2: \(line\): malformed JSON"),
    ("[1, 2]", r"f.jsonl:2: \(line\): must be a JSON object"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, expected):
    path = write_jsonl(tmp_path / "f.jsonl", [annotation(1), line])
    assert re.search(expected, problems_of(load_annotations, path)[0])


@pytest.mark.parametrize("change, expected", [
    ({"passage": None}, r"f.jsonl:1: passage: must be a string"),
    ({"passage": "   \n "}, r"f.jsonl:1: passage: is empty or whitespace only"),
    ({"genre": "opera"}, r"f.jsonl:1: genre: 'opera' is not one of"),
    ({"genres": "poetry"}, r"f.jsonl:1: genres: unknown field; did you mean 'genre'\?"),
    ({"judgment": {"verdict": "works", "sumary": "s"}}, r"f.jsonl:1: judgment.sumary: unknown field; did you mean 'summary'\?"),
    ({"cot": [{"type": "craft", "txt": "t"}]}, r"f.jsonl:1: cot\[0\].txt: unknown field; did you mean 'text'\?"),
    ({"constraints": {"intent": "a", "audience": "b", "reality": "c", "tone": "d"}},
     r"f.jsonl:1: constraints.tone: unknown field; allowed: \['audience', 'intent', 'reality'\]"),
    ({"cot": []}, r"f.jsonl:1: cot: must be a non-empty list"),
    ({"judgment": {"verdict": "great", "summary": "s"}}, r"f.jsonl:1: judgment.verdict: 'great' is not one of"),
    ({"constraints": {"intent": "a", "audience": "b"}}, r"f.jsonl:1: constraints.reality: missing required field"),
])
def test_bad_annotation_fields_are_named(tmp_path, change, expected):
    path = write_jsonl(tmp_path / "f.jsonl", [annotation(1, **change)])
    assert any(re.search(expected, p) for p in problems_of(load_annotations, path))


def test_fields_unlike_any_known_name_are_kept_as_extras(tmp_path):
    path = write_jsonl(tmp_path / "f.jsonl", [annotation(1, mood="calm", Notes=None)])
    assert load_annotations(path)[0].extra == {"mood": "calm", "Notes": None}  # Notes: only 0.6 like 'names'


def test_missing_field_and_unknown_cot_type_are_named(tmp_path):
    record = annotation(1)
    del record["context"]
    record["cot"][0]["type"] = "mood"
    problems = problems_of(load_annotations, write_jsonl(tmp_path / "f.jsonl", [record]))
    assert any("f.jsonl:1: context: missing required field" in p for p in problems)
    assert any("f.jsonl:1: cot[0].type: 'mood' is not one of" in p for p in problems)


def without(record: dict, dotted: str) -> dict:
    """``record`` with one field removed; ``constraints.reality`` and ``cot[0].text`` reach inside."""
    head, _, rest = dotted.partition(".")
    if not rest:
        return {k: v for k, v in record.items() if k != head}
    if head.startswith("cot["):
        steps = [dict(step) for step in record["cot"]]
        steps[int(head[4:-1])].pop(rest)
        return record | {"cot": steps}
    return record | {head: {k: v for k, v in record[head].items() if k != rest}}


@pytest.mark.parametrize("loader, record, missing", [
    *((load_annotations, annotation(1), f) for f in ("id", "lang", "genre", "context", "constraints", "passage",
                                                     "cot", "judgment", "constraints.reality", "judgment.verdict",
                                                     "cot[0].text", "cot[0].type")),
    *((load_benchmark, benchmark_item(1), f) for f in ("id", "group", "lang", "context", "constraints", "x")),
], ids=lambda v: v if isinstance(v, str) else "")
def test_one_missing_field_is_exactly_one_problem(tmp_path, loader, record, missing):
    path = write_jsonl(tmp_path / "f.jsonl", [without(record, missing)])
    assert problems_of(loader, path) == [f"{path}:1: {missing}: missing required field"]


def test_a_field_present_as_null_is_a_wrong_type_not_a_missing_field(tmp_path):
    path = write_jsonl(tmp_path / "f.jsonl", [annotation(1, passage=None)])
    assert problems_of(load_annotations, path) == [f"{path}:1: passage: must be a string, got NoneType"]


def test_cot_without_a_constraint_type_is_rejected(tmp_path):
    record = annotation(1)
    record["cot"] = [s for s in record["cot"] if s["type"] != "reality"]
    problems = problems_of(load_annotations, write_jsonl(tmp_path / "f.jsonl", [record]))
    assert any("has no 'reality' step" in p for p in problems)


def test_duplicate_ids_name_both_lines(tmp_path):
    path = write_jsonl(tmp_path / "f.jsonl", [annotation(1), annotation(2), annotation(1)])
    assert problems_of(load_annotations, path) == [f"{path}:3: id: duplicate id 't-001' (first on line 1)"]


def test_every_problem_in_a_file_is_reported_at_once(tmp_path):
    path = write_jsonl(tmp_path / "f.jsonl", [annotation(1, lang=3), annotation(2, genre="x"), "{"])
    assert len(problems_of(load_annotations, path)) == 1  # JSON errors stop parsing first
    path = write_jsonl(tmp_path / "g.jsonl", [annotation(1, lang=3), annotation(2, genre="x")])
    assert len(problems_of(load_annotations, path)) == 2


@pytest.mark.parametrize("change, expected", [
    ({"group": "poetic"}, r"group: 'poetic' is not one of"),
    ({"x": ""}, r"x: is empty"),
    ({"degraded_breaks": "craft"}, r"degraded_breaks: 'craft' is not one of"),
])
def test_bad_benchmark_items_are_named(tmp_path, change, expected):
    path = write_jsonl(tmp_path / "b.jsonl", [benchmark_item(1, **change)])
    assert any(re.search(expected, p) for p in problems_of(load_benchmark, path))


def test_factual_items_cannot_carry_a_degraded_version(tmp_path):
    item = benchmark_item(1, "factual", x_degraded="y", degraded_breaks="reality")
    problems = problems_of(load_benchmark, write_jsonl(tmp_path / "b.jsonl", [item]))
    assert any("only literary items carry a degraded version" in p for p in problems)


def test_missing_and_empty_files_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_benchmark(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    assert "contains no records" in problems_of(load_benchmark, tmp_path / "empty.jsonl")[0]


def test_annotation_corpus_teaches_all_three_constraint_types():
    records = load_annotations(ANNOTATIONS)
    words = collections.Counter()
    for rec in records:
        assert {s.type for s in rec.cot} == set(COT_TYPES), rec.id
        for step in rec.cot:
            words[step.type] += len(step.text.split())
    total = sum(words.values())
    assert words["audience"] / total >= 0.25 and words["reality"] / total >= 0.25
    assert sum(r.judgment.verdict != "works" for r in records) >= len(records) / 4
    assert len({r.genre for r in records}) == 6
    assert all(60 <= len(r.passage.split()) <= 250 for r in records)


def test_annotation_cots_quote_their_own_passage():
    records = load_annotations(ANNOTATIONS)
    quoting = [r for r in records
               if any(len(q.split()) >= 3 and q in r.passage for s in r.cot for q in re.findall(r'"([^"]+)"', s.text))]
    assert len(quoting) >= 0.95 * len(records)


def test_no_sentence_of_eight_words_recurs_across_annotations():
    seen = {}
    for line in ANNOTATIONS.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        texts = [s["text"] for s in rec["cot"]] + [rec["judgment"]["summary"]]
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(texts)):
            words = tuple(re.findall(r"[a-z0-9']+", sentence.lower()))
            if len(words) >= 8:
                assert seen.setdefault(words, rec["id"]) == rec["id"], f"{rec['id']} repeats {seen[words]}"


@pytest.mark.parametrize("version", sorted(BENCHMARKS))
def test_benchmark_is_paired_and_sized(version):
    path, per_group = BENCHMARKS[version]
    items = load_benchmark(path)
    literary = [i for i in items if i.group == "literary"]
    factual = [i for i in items if i.group == "factual"]
    assert len(literary) >= per_group and len(factual) >= per_group
    assert all(i.x_degraded and i.degraded_breaks for i in literary)
    assert all(40 <= len(i.x.split()) <= 200 for i in items)
    assert {i.pair_id for i in literary} == {i.pair_id for i in factual}


EXTRAS = {"source": "written for this test", "licence": "CC BY 4.0", "year": 2025,
          "meta": {"reviewer": "r1", "tags": ["a", "b"]},
          "delta_i": "not a score"}  # named like a computed column of scores.csv
SHIPPED = {load_benchmark: (BENCHMARKS["v2"][0], ("lit-01", "fact-01")),  # one topic pair
           load_annotations: (ANNOTATIONS, ("ann-001", "ann-002"))}


def shipped_with_extras(tmp_path, loader, typo: bool):
    """Two records of a shipped file, each with EXTRAS; with ``typo`` line 2 misspells 'constraints'."""
    source, ids = SHIPPED[loader]
    rows = [json.loads(line) | EXTRAS for line in source.read_text(encoding="utf-8").splitlines()]
    rows = [row for row in rows if row["id"] in ids]
    if typo:
        rows[1]["contraints"] = rows[1].pop("constraints")
    return write_jsonl(tmp_path / f"{source.stem}{'-typo' if typo else ''}.jsonl", rows)


@pytest.mark.parametrize("loader", SHIPPED, ids=lambda loader: loader.__name__)
def test_a_typo_among_extra_fields_is_refused_naming_file_line_and_the_known_name(tmp_path, loader):
    path = shipped_with_extras(tmp_path, loader, typo=True)
    problems = problems_of(loader, path)
    assert f"{path}:2: contraints: unknown field; did you mean 'constraints'?" in problems
    assert {p.split(": ")[1] for p in problems} == {"contraints", "constraints"}  # the extras are no problem


@pytest.mark.parametrize("loader", SHIPPED, ids=lambda loader: loader.__name__)
def test_extra_fields_are_kept_read_only_beside_an_unchanged_record(tmp_path, loader):
    source, ids = SHIPPED[loader]
    records = loader(shipped_with_extras(tmp_path, loader, typo=False))
    assert all(r.extra == EXTRAS for r in records)
    assert [dataclasses.replace(r, extra=Extra()) for r in records] == [r for r in loader(source) if r.id in ids]
    assert dataclasses.asdict(records[0])["extra"] == EXTRAS  # so pd.DataFrame(records) works too
    with pytest.raises(TypeError, match="read-only"):
        records[0].extra["source"] = "changed"


def test_extra_fields_reach_pairs_jsonl_and_scores_csv_without_replacing_a_computed_column(tmp_path):
    from cqa_utils.stages.logprobs import run_logprobs

    bench = shipped_with_extras(tmp_path, load_benchmark, typo=False)
    cfg, _ = base_only_config(tmp_path, bench, {"score.mismatched_k": 0, "score.single_slot": False})  # tiny: cond, uncond
    outputs = run_logprobs(cfg)
    pairs = [json.loads(line) for line in outputs["pairs"].read_text(encoding="utf-8").splitlines()]
    assert len(pairs) == 6 and all(p["extra"] == EXTRAS for p in pairs)  # 3 texts × 2 conditions, nested meta too
    scores = pd.read_csv(outputs["scores"])
    scalar = ["extra.source", "extra.licence", "extra.year", "extra.delta_i"]
    assert list(scores.columns[-4:]) == scalar and "extra.meta" not in scores.columns
    assert scores[scalar].drop_duplicates().values.tolist() == [["written for this test", "CC BY 4.0", 2025, "not a score"]]
    assert scores["delta_i"].to_numpy() == pytest.approx((scores["logp_cond"] - scores["logp_uncond"]).to_numpy())
