"""The streaming reader for a cut-off JSON array (ShareGPT V3 as shipped on PyPI)."""
import json

import pytest

from cqa_utils import sharegpt as G

RECORDS = [{"id": f"c{i}", "conversations": [{"from": "human", "value": f"Write poem {i} \u00e9"},
                                              {"from": "gpt", "value": "x" * (i * 37 % 500)}]}
           for i in range(60)]


def test_a_complete_array_is_read_whole_across_chunk_boundaries(tmp_path):
    path = tmp_path / "full.json"
    path.write_text(json.dumps(RECORDS, indent=1), encoding="utf-8")
    records, info = G.read_json_array_prefix(path, chunk_chars=97)  # tiny chunks: every record straddles one
    assert records == RECORDS
    assert info.complete and info.records == 60 and info.size_bytes == path.stat().st_size


def test_a_truncated_file_keeps_the_complete_records_and_reports_the_cut(tmp_path):
    text = json.dumps(RECORDS)
    cut = text.index('{"id": "c42"') + 25          # in the middle of record 42
    path = tmp_path / "cut.json"
    path.write_text(text[:cut], encoding="utf-8")
    records, info = G.read_json_array_prefix(path, chunk_chars=128)
    assert records == RECORDS[:42]
    assert not info.complete and info.records == 42
    assert info.cut_at_char == text.index('{"id": "c42"')  # where the dropped record starts


def test_nothing_parseable_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[{"id": "c0", "conversations": [', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json: no complete JSON record"):
        G.read_json_array_prefix(path)
    path.write_text('{"not": "an array"}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a JSON array"):
        G.read_json_array_prefix(path)


def test_corrupt_json_in_the_middle_is_not_mistaken_for_a_cut(tmp_path):
    text = json.dumps(RECORDS)
    broken = text.replace('{"id": "c10"', '{"id": c10', 1)
    path = tmp_path / "corrupt.json"
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(ValueError, match=r"corrupt\.json: character \d+"):
        G.read_json_array_prefix(path, chunk_chars=256)


def test_first_exchange_takes_the_first_human_turn_and_the_reply_after_it():
    conv = {"conversations": [{"from": "gpt", "value": "hello"}, {"from": "human", "value": "a poem?"},
                              {"from": "human", "value": "please"}, {"from": "gpt", "value": "Roses"}]}
    assert G.first_exchange(conv) == ("a poem?", "Roses")
    assert G.first_exchange({"conversations": []}) == ("", "")


@pytest.mark.skipif(__import__("importlib").util.find_spec(G.PACKAGE) is None, reason=f"not installed: {G.INSTALL}")
def test_the_packaged_file_yields_the_documented_prefix():
    records, info = G.read_json_array_prefix(G.package_file())
    assert info.records == 17671 and not info.complete   # DESIGN.md: 17,671 complete conversations before the cut
    assert info.sha256 == "99af0276a84059eca22886be5ea278454a05a505f455436f2f2e78a8faa77772"
    assert all("conversations" in r for r in records[:100])
