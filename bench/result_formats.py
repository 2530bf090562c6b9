"""`python -m bench.result_formats [RUN_DIR]`: file size and load time of results as .json.gz vs .parquet.

Reads every saved result under RUN_DIR (default `specprobe-demo`, the folder `specprobe demo` writes:
comparisons, layer views, the accuracy matrix), writes each again as `.json.gz` and as `.parquet` into
a temporary folder, checks both reload to the same table, and prints, per result kind, the number of
files and rows, the total size of each format and the median time to load one file (3 repeats).
`--json PATH` also writes the numbers. Nothing here is estimated: every number is measured in this run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd

from specprobe.core.results import Result

FORMATS = (".json.gz", ".parquet")


def find_results(root: Path) -> list[Path]:
    """Every saved result file under `root` (JSON or gzipped JSON with a specprobe header)."""
    out = []
    for path in sorted(root.rglob("*.json*")):
        if path.name.endswith((".json", ".json.gz")) and path.stat().st_size > 0:
            try:
                Result.load(path)
            except (ValueError, KeyError):
                continue  # a lexicon, a config, a stage manifest: not a result
            out.append(path)
    return out


def _load_seconds(path: Path, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        Result.load(path)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(paths: list[Path]) -> pd.DataFrame:
    """Per result kind: files, rows, bytes and median load seconds of each format."""
    acc: dict[str, dict] = defaultdict(lambda: defaultdict(float))
    with tempfile.TemporaryDirectory(prefix="specprobe-formats-") as tmp:
        for i, path in enumerate(paths):
            result = Result.load(path)
            row = acc[result.kind]
            row["files"] += 1
            row["rows"] += len(result)
            frames = []
            for suffix in FORMATS:
                out = result.save(Path(tmp) / f"{i}{suffix}")
                row[f"bytes{suffix}"] += out.stat().st_size
                row[f"load_s{suffix}"] += _load_seconds(out)
                frames.append(Result.load(out).to_pandas())
            pd.testing.assert_frame_equal(frames[0], frames[1], obj=str(path))
    rows = []
    for kind, r in acc.items():
        n = r["files"]
        rows.append(
            {
                "kind": kind,
                "files": int(n),
                "rows": int(r["rows"]),
                "json.gz MB": r["bytes.json.gz"] / 1e6,
                "parquet MB": r["bytes.parquet"] / 1e6,
                "parquet / json.gz": r["bytes.parquet"] / r["bytes.json.gz"],
                "load s/file json.gz": r["load_s.json.gz"] / n,
                "load s/file parquet": r["load_s.parquet"] / n,
            }
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.result_formats", description=(__doc__ or "").splitlines()[0])
    p.add_argument("run_dir", nargs="?", default="specprobe-demo", help="a folder with saved results")
    p.add_argument("--json", type=Path, help="also write the table here")
    args = p.parse_args(argv)
    root = Path(args.run_dir)
    if not root.is_dir():
        p.error(f"not a folder: {root} (run `specprobe demo --out {root}` first)")
    paths = find_results(root)
    if not paths:
        p.error(f"no saved results under {root}")
    table = measure(paths)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.json:
        args.json.write_text(json.dumps(table.to_dict(orient="records"), indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
