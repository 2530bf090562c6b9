"""argparse value types shared by every CLI: counts that must be positive are checked when parsed,
so `--max-length 0` or `--limit -1` is an error rather than a silent default or a dropped text; and the
`--mapping` option of every command that reads a QA file (`add_mapping_argument`)."""

from __future__ import annotations

import argparse
import json


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1 (0 is not "the default")."""
    value = _int(text, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = _int(text, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


#: the --mapping help every command that reads a QA file shows
MAPPING_HELP = (
    "how to read a QA file the loader cannot read alone, as a JSON object: the columns of a csv/jsonl file "
    '\'{"question": "q", "options": ["a","b","c","d"], "answer": "ans", "answer_format": "letter"}\'; '
    "for MedMCQA whose cop numbers cannot tell their base, '{\"cop_base\": 0}' (counted from 0) or 1"
)


def mapping(text: str) -> dict | None:
    """--mapping: a JSON object (see `specprobe.terms.formats`); blank text is no mapping."""
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'must be a JSON object such as \'{{"question": "q"}}\', got {text!r}')
    return value


def add_mapping_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, note: str = "") -> None:
    """Add --mapping (`mapping`, default None) to a command that reads a QA file; `note` ends its help."""
    parser.add_argument("--mapping", type=mapping, default=None, metavar="JSON", help=MAPPING_HELP + note)
