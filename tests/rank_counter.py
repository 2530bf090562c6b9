"""`python rank_counter.py ARGS...`: specprobe's command line, recording what this rank did.

For the data-parallel tests, launched by torchrun in place of `-m specprobe.app.cli`: on exit each rank
writes $COUNT_DIR/rank<RANK>.json with the batches and items it scored (`scoring._score_batch` calls)
and the names of the files it wrote (every specprobe write ends in an atomic `os.replace`)."""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path
from typing import Any

from specprobe.core import scoring

RECORD: dict[str, Any] = {"batches": 0, "items": 0, "writes": []}
_score_batch, _replace = scoring._score_batch, os.replace


def _counted_batch(split: Any, rows: list, *args: Any, **kwargs: Any) -> Any:
    RECORD["batches"] += 1
    RECORD["items"] += sum(len(row.items) for row in rows)
    return _score_batch(split, rows, *args, **kwargs)


def _counted_replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
    RECORD["writes"].append(Path(dst).name)
    _replace(src, dst, *args, **kwargs)


def _save() -> None:
    Path(os.environ["COUNT_DIR"], f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(RECORD))


if __name__ == "__main__":
    from specprobe.app.cli import main

    scoring._score_batch, os.replace = _counted_batch, _counted_replace  # pyright: ignore[reportAttributeAccessIssue]
    atexit.register(_save)
    sys.exit(main(sys.argv[1:]))
