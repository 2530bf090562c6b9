"""`specprobe compare`: base vs tuned term log-probabilities from the command line."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from specprobe.core.checkpoint import PARTIAL_SCORES  # under --out while compare runs, then removed
from specprobe.probe.inputs import normalize_terms, terms_from_frame
from specprobe.terms.records import read_text

COMPARE_OUTPUTS = ("comparison.json.gz", "by_specialty.csv", "by_term.csv")


def register(sub: argparse._SubParsersAction) -> None:
    from specprobe.probe.options import add_probe_arguments

    p = sub.add_parser(
        "compare",
        help="compare term log-probabilities under a base and a fine-tuned model",
        description="Score every occurrence of every term (and control words) under base and tuned.",
    )
    add_probe_arguments(p)
    p.add_argument(
        "--out",
        required=True,
        help="output directory (comparison.json.gz, by_specialty.csv, by_term.csv; while scoring, finished "
        f"batches in {PARTIAL_SCORES}/, so that the same command rerun after a kill resumes)",
    )
    p.set_defaults(handler=run_compare)


def read_terms(path: str) -> Any:
    """A Lexicon file, a JSON mapping/list, a table (parquet, JSONL, CSV/TSV with a `term` column and an
    optional `specialty`/`specialties` column), or plain text with one term per line."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"terms file not found: {p}")
    from specprobe.utils.tables import read_table, table_suffix  # pandas: only when a table is given

    if table_suffix(p) is not None:
        return terms_from_frame(read_table(p, "terms"))  # its errors name the file (`read_table`)
    if p.suffix in (".json", ".gz"):
        from specprobe.utils.io import read_json

        obj = read_json(p)
        if isinstance(obj, dict) and "schema_version" in obj and "terms" in obj:
            from specprobe.terms.lexicon import Lexicon  # lexicon files written by `specprobe terms build`

            return Lexicon.load(p)
        if isinstance(obj, (dict, list)):
            try:
                normalize_terms(obj)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{p}: {exc}") from exc
            return obj
        raise ValueError(f"{p}: expected a lexicon, a mapping term -> specialties, or a list of terms")
    terms = [line.strip() for line in read_text(p).splitlines() if line.strip() and not line.startswith("#")]
    if not terms:
        raise ValueError(f"{p}: no terms in file")
    return terms


def read_terms_and_texts(args: argparse.Namespace):
    """(terms, texts) from the shared --terms/--data/--mapping/--limit options."""
    from specprobe.terms.datasets import load_qa

    mapping = getattr(args, "mapping", None)
    if mapping and not args.data:  # the lexicon's own texts are read with the mapping it records
        raise ValueError("--mapping says how to read --data; give --data, or leave --mapping out")
    terms = read_terms(args.terms)
    texts = None
    if args.data:
        texts = [r.as_text_record() for r in load_qa(args.data, mapping=mapping)]
    elif hasattr(terms, "data_sources"):
        terms.data_sources()  # a lexicon with no data file of its own: say so before any model loads
    if args.limit is not None:
        if texts is None and hasattr(terms, "contexts"):
            texts = list(terms.contexts())
        texts = texts[: args.limit] if texts is not None else None
    return terms, texts


def read_inputs(args: argparse.Namespace):
    """(terms, texts, controls) from the shared --terms/--data/--limit/--controls options."""
    from specprobe.probe.options import read_controls

    terms, texts = read_terms_and_texts(args)
    return terms, texts, read_controls(args.controls)


def table_csv(frame: Any) -> str:
    """A results table as CSV, its cells of several names (a term's specialties) joined by ";" as
    `terms_from_frame` splits them: Python's tuple text "('Cardiology',)" read back as one specialty name."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].map(lambda v: isinstance(v, (tuple, list))).any():
            frame[column] = frame[column].map(lambda v: ";".join(v) if isinstance(v, (tuple, list)) else v)
    return frame.to_csv(index=False)


def run_compare(args: argparse.Namespace) -> int:
    """Under `accelerate launch`/`torchrun` the ranks share the scoring; rank 0 alone writes and prints."""
    from specprobe.core.distributed import init_from_env, is_main
    from specprobe.probe.compare import compare
    from specprobe.probe.options import ProbeOptions, check_out_dir

    opts = ProbeOptions.from_args(args)
    out = check_out_dir(args.out, COMPARE_OUTPUTS, args.overwrite)
    init_from_env(opts.device)
    terms, texts = read_terms_and_texts(args)
    from specprobe.core.models import ModelPair

    pair = ModelPair.load(
        args.base,
        args.tuned,
        tokenizer=opts.tokenizer,
        device=opts.device,
        dtype=opts.dtype,
        force_adapter=args.force_adapter,
    )
    # finished batches are kept there while scoring: the same command, rerun after a kill, resumes
    comp = compare(pair, terms=terms, texts=texts, options=opts, checkpoint=out / PARTIAL_SCORES, keep_checkpoint=True)
    if not is_main():
        return 0
    out.mkdir(parents=True, exist_ok=True)
    comp.save(out / "comparison.json.gz")
    from specprobe.utils.io import atomic_write_text

    by_specialty = comp.by_specialty()
    atomic_write_text(out / "by_specialty.csv", table_csv(by_specialty))
    atomic_write_text(out / "by_term.csv", table_csv(comp.by_term()))
    print(comp.summary(table=by_specialty))
    if comp.missing:
        print(
            f"\n{len(comp.missing)} term(s) occur in no text: {', '.join(comp.missing[:10])}{' ...' if len(comp.missing) > 10 else ''}"
        )
    shutil.rmtree(out / PARTIAL_SCORES, ignore_errors=True)  # the results are written: no resume needs them
    print(f"\nwrote {out / 'comparison.json.gz'}, by_specialty.csv, by_term.csv")
    return 0
