"""`iter_jsonl`, the one JSON-lines reader: objects round-trip with their line numbers, and a bad line is one
ValueError "<path>: line <n>: <problem>" (the format every JSON-lines input of specprobe reports)."""

import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specprobe.utils.io import iter_jsonl

#: any JSON value (U+2028 and other line-separator characters included in strings)
_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
_VALUES = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3)
)
_OBJECTS = st.lists(st.dictionaries(st.text(), _VALUES, max_size=4), max_size=8)
#: lines that are not a JSON object: broken JSON, other JSON values
_BAD_LINES = st.sampled_from(['{"text": broken', "{", '{"a": 1} trailing', "[1, 2]", '"text"', "3", "null", "true"])


def _write(folder: str, lines: list[str]) -> Path:
    path = Path(folder) / "data.jsonl"
    path.write_bytes("".join(line + "\n" for line in lines).encode("utf-8"))
    return path


def _lines(objects: list[dict], blanks: list[bool]) -> tuple[list[str], list[int]]:
    """The JSON lines of `objects` (a blank line before those flagged in `blanks`) and each object's line number."""
    lines, numbers = [], []
    for obj, blank in zip(objects, blanks + [False] * len(objects)):
        if blank:
            lines.append("  ")
        lines.append(json.dumps(obj, ensure_ascii=False))
        numbers.append(len(lines))
    return lines, numbers


@settings(max_examples=60, deadline=None)
@given(objects=_OBJECTS, blanks=st.lists(st.booleans(), max_size=8))
def test_objects_round_trip_with_their_line_numbers(objects, blanks):
    lines, numbers = _lines(objects, blanks)
    with tempfile.TemporaryDirectory() as folder:
        assert list(iter_jsonl(_write(folder, lines))) == list(zip(numbers, objects))


@settings(max_examples=60, deadline=None)
@given(objects=_OBJECTS.filter(bool), blanks=st.lists(st.booleans(), max_size=8), data=st.data())
def test_a_corrupted_line_is_reported_with_its_line_number(objects, blanks, data):
    lines, numbers = _lines(objects, blanks)
    k = data.draw(st.integers(0, len(objects) - 1))
    lines[numbers[k] - 1] = data.draw(_BAD_LINES)
    with tempfile.TemporaryDirectory() as folder:
        path = _write(folder, lines)
        read = []
        with pytest.raises(ValueError) as info:
            read.extend(iter_jsonl(path))
    message = str(info.value)
    assert message.startswith(f"{path}: line {numbers[k]}: ") and "\n" not in message
    assert re.search(r"not valid JSON \(.+, column \d+\)|expected a JSON object, got (an?|null)", message)
    assert read == list(zip(numbers[:k], objects[:k])), "the lines before the bad one were read"


def test_a_bom_is_dropped_and_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n{"b": "caf\xe9"}\n')
    assert next(iter_jsonl(path)) == (1, {"a": 1})
    with pytest.raises(ValueError, match=r"data.jsonl: line 3: not valid UTF-8 at byte 10 of the line"):
        list(iter_jsonl(path))


def test_the_texts_readers_report_the_same_format(tmp_path):
    from specprobe.probe.analyses.general_text import default_texts
    from specprobe.probe.analyses.model_files import read_general_texts

    assert default_texts() and all({"id", "text"} <= set(t) for t in default_texts())
    path = tmp_path / "texts.jsonl"
    path.write_text('{"id": "a", "text": "fine"}\n["not", "an object"]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"texts.jsonl: line 2: expected a JSON object, got an array"):
        read_general_texts(path)
