"""The analyses that run models, as plain functions of paths, for a pipeline stage or a script: read
the inputs, run the analysis, save the result (when `out` is given) and return it.

A runner wires them like the analyses of saved results (`files.py`): one stage per adapter, whose
inputs are the base, the adapter folder (with its snapshots, for `trajectory_files`), the lexicon
and the probe texts, and whose output is one result file (`Result.load` reads it back once this
module's package is imported)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from specprobe.probe.analyses.general_text import GeneralTextShift, general_text_control
from specprobe.probe.analyses.trajectory import Trajectory, trajectory
from specprobe.probe.options import ProbeOptions
from specprobe.utils.io import iter_jsonl, looks_like_json

PathLike = str | os.PathLike


def _terms_and_texts(terms: PathLike, data: PathLike | None, limit: int | None) -> tuple[Any, Any]:
    """The lexicon (or terms file) and the QA file's questions as texts, as `specprobe compare` reads them."""
    import argparse

    from specprobe.probe.cli import read_terms_and_texts

    args = argparse.Namespace(terms=str(terms), data=str(data) if data is not None else None, limit=limit)
    return read_terms_and_texts(args)


def trajectory_files(
    base: PathLike,
    adapter: PathLike,
    terms: PathLike,
    data: PathLike | None = None,
    out: PathLike | None = None,
    *,
    specialty: str | None = None,
    limit: int | None = None,
    options: ProbeOptions | None = None,
) -> Trajectory:
    """`trajectory` of the snapshots listed in `adapter`'s manifest (and its final adapter) against
    `base`, on the terms of `terms` in the questions of the QA file `data`; saved to `out`."""
    lexicon, texts = _terms_and_texts(terms, data, limit)
    result = trajectory(str(base), Path(adapter), lexicon, texts, specialty=specialty, options=options)
    if out is not None:
        result.save(out)
    return result


def general_text_files(
    base: PathLike,
    adapter: PathLike,
    out: PathLike | None = None,
    *,
    texts: PathLike | None = None,
    device: str | None = None,
    dtype: str | None = None,
    batch_size: int | None = None,
) -> GeneralTextShift:
    """`general_text_control` of `adapter` on `base`: the shipped WordNet texts, or `texts` (a text
    file, one text a line, or a JSON-lines file of {"id", "text"}); saved to `out`."""
    given = read_general_texts(texts) if texts is not None else None
    result = general_text_control(
        str(base), given, tuned=str(adapter), device=device, dtype=dtype, batch_size=batch_size
    )
    if out is not None:
        result.save(out)
    return result


def read_general_texts(path: PathLike, what: str = "texts file") -> list[Any]:
    """Texts from a `.jsonl` file ({"id", "text"} a line) or a plain UTF-8 text file (one text a line).
    A missing file, a folder, text that is not UTF-8 (latin-1, UTF-16), a line without a "text" string,
    JSON in a file read as one text a line (a QA file: its JSON would be scored as text) or a file
    without any text is a ValueError / OSError naming `what` (an option, like "--texts"), the
    file and, where there is one, the line."""
    from specprobe.terms.records import read_text  # invalid UTF-8: the file, byte and line

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} {p}: no such file")
    if p.is_dir():
        raise IsADirectoryError(f"{what} {p}: a folder, not a .jsonl file or a text file (one text a line)")
    try:
        if p.suffix == ".jsonl":
            texts: list[Any] = []
            for lineno, record in iter_jsonl(p):
                if not isinstance(record.get("text"), str):
                    raise ValueError(f'{p}: line {lineno}: no "text" string (each line is {{"id", "text"}})')
                texts.append(record)
        else:
            text = read_text(p)
            if text.strip() and (p.suffix == ".json" or looks_like_json(text)):  # QA data, a lexicon: not texts
                raise ValueError(
                    f'{p}: holds JSON, not one text a line; give a .jsonl file of {{"id", "text"}} lines '
                    "or a plain text file"
                )
            texts = [line for line in text.splitlines() if line.strip()]
    except ValueError as exc:  # its message begins with the file
        raise ValueError(f"{what} {exc}") from None
    if not texts:
        form = '{"id", "text"} lines' if p.suffix == ".jsonl" else "one text a line"
        raise ValueError(f"{what} {p}: no text in the file (expected {form})")
    return texts
