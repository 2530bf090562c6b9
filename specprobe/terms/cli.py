"""`specprobe terms ...`: build, show, stats and export specialty term lexicons."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from specprobe.utils.argtypes import add_mapping_argument, positive_int

_LEXICON_HELP = "lexicon JSON file (from `specprobe terms build`; .gz allowed)"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "terms", help="specialty term lexicons from QA data", description="Build and inspect specialty term lexicons."
    )
    sub = p.add_subparsers(dest="terms_command", metavar="ACTION")
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])

    b = sub.add_parser("build", help="build a lexicon from a QA data file")
    b.add_argument(
        "data",
        help="QA data file: S-MedQA JSON (a list, or JSON Lines), MedQA JSONL, MedMCQA, instruction, or any "
        "CSV/JSONL with --mapping",
    )
    b.add_argument("--out", required=True, help="lexicon JSON to write (atomically; a .gz name is gzipped)")
    b.add_argument(
        "--backend",
        choices=("offline", "scispacy"),
        default="offline",
        help="term extractor: offline (bundled ontologies, no downloads; default) or scispacy (its NER and "
        "entity linker; needs their files: --scispacy-model, --linker-dir, --kb)",
    )
    b.add_argument(
        "--format",
        default="auto",
        choices=("auto", "smedqa", "medqa", "medmcqa", "instruction", "csv", "jsonl"),
        help="the data file's format (default auto: from the suffix and the first record's keys; csv and jsonl "
        "read the columns --mapping names). A file that is not a JSON list is read as JSON Lines",
    )
    b.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_mapping_argument(b)
    b.add_argument("--skip-bad", action="store_true", help="skip malformed records and report them")
    b.add_argument("--min-count", type=positive_int, default=1, help="drop terms seen fewer times (default 1)")
    b.add_argument(
        "--max-specialties", type=positive_int, default=3, help="a term is specific with at most this many (3)"
    )
    b.add_argument("--z-min", type=float, default=1.96, help="corpus z-score needed for a corpus assignment")
    b.add_argument("--prior-strength", type=float, default=1.0, help="Dirichlet prior size, x corpus counts")
    b.add_argument(
        "--signals",
        choices=("both", "ontology", "corpus"),
        default="both",
        help="which signals assign specialties: the ontologies, the corpus z-scores, or both (default)",
    )
    b.add_argument("--specialty-map", help="an edited copy of specprobe/data/terms/specialty_map.csv")
    b.add_argument("--scispacy-model", help="path of an en_core_sci_sm/md model (or $SPECPROBE_SCISPACY_MODEL)")
    b.add_argument("--linker-dir", help="folder with the linker files (or $SPECPROBE_SCISPACY_LINKER)")
    b.add_argument("--kb", help="knowledge base .jsonl for the linker (or $SPECPROBE_SCISPACY_KB)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(handler=cmd_build)

    s = sub.add_parser("show", help="list a lexicon's terms")
    s.add_argument("lexicon", help=_LEXICON_HELP)
    s.add_argument("--specialty", help="only this specialty's terms, strongest corpus signal first")
    s.add_argument("--top", type=positive_int, default=30, help="list at most this many terms (default 30)")
    s.add_argument("--all", action="store_true", help="include non-specific terms")
    s.set_defaults(handler=cmd_show, prints_result=True)

    st = sub.add_parser("stats", help="a lexicon's size per specialty and its build settings")
    st.add_argument("lexicon", help=_LEXICON_HELP)
    st.add_argument("--json", action="store_true", help="print the stats, rule and sources as JSON")
    st.set_defaults(handler=cmd_stats, prints_result=True)

    e = sub.add_parser("export", help="export a lexicon as a CSV table (one row per term)")
    e.add_argument("lexicon", help=_LEXICON_HELP)
    e.add_argument(
        "--csv", action="store_true", help="CSV, the only table format and the default (the flag may be left out)"
    )
    e.add_argument("--out", help="CSV file to write, atomically (default: stdout); never the lexicon itself")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    e.set_defaults(handler=cmd_export, prints_result=True)


def _check_out(out: Path, overwrite: bool, **inputs: str | Path | None) -> None:
    """Refuse, before any work, an --out that is one of the command's `inputs` (named by keyword), a
    folder, an existing file without `overwrite`, or a path that cannot be written."""
    from specprobe.utils.io import check_writable

    for what, given in inputs.items():
        if given is None:
            continue
        path = Path(given)
        if out.exists() and path.exists() and out.samefile(path):
            raise ValueError(f"--out {out} is the {what.replace('_', ' ')} it reads; write to another file")
    if out.is_dir():
        raise IsADirectoryError(f"--out {out} is a folder; give the name of a file to write")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    check_writable(out, "--out")


def cmd_build(args) -> int:
    from .build import build_lexicon
    from .specialties import AssignmentRule

    _check_out(Path(args.out), args.overwrite, data_file=args.data, specialty_map=args.specialty_map)
    rule = AssignmentRule(
        z_min=args.z_min,
        max_specialties=args.max_specialties,
        min_count=1,
        prior_strength=args.prior_strength,
        use_ontology=args.signals != "corpus",
        use_corpus=args.signals != "ontology",
    )
    opts = {}
    if args.backend == "scispacy":
        opts = {"model": args.scispacy_model, "linker_dir": args.linker_dir, "kb_path": args.kb}
    lex = build_lexicon(
        args.data,
        backend=args.backend,
        format=args.format,
        mapping=args.mapping,
        skip_bad=args.skip_bad,
        min_count=args.min_count,
        rule=rule,
        specialty_map=args.specialty_map,
        progress=not args.no_progress,
        extractor_options=opts,
    )
    lex.save(args.out)
    src = lex.meta["sources"][0]
    if src["n_skipped"]:
        print(f"skipped {src['n_skipped']} malformed record(s):", file=sys.stderr)
        for msg in src["skipped"]:
            print(f"  {msg}", file=sys.stderr)
    st = lex.stats()
    print(
        f"wrote {args.out}: {st['terms']} terms, {st['specific_terms']} specific, from {src['n_records']} "
        f"records in {lex.meta['timings_s']['total']:.1f} s"
    )
    return 0


def cmd_show(args) -> int:
    from .lexicon import Lexicon

    lex = Lexicon.load(args.lexicon)
    if args.specialty:
        entries = lex.for_specialty(args.specialty, specific_only=not args.all)
    else:
        entries = sorted((e for e in lex.terms.values() if e.specific or args.all), key=lambda e: (-e.count, e.term))
    print(f"{'term':40} {'count':>5} {'z':>6}  specialties   [ontology evidence]")
    for e in entries[: args.top]:
        z = e.z.get(args.specialty, 0.0) if args.specialty else e.top_z()
        print(
            f"{e.term[:40]:40} {e.count:5d} {z:6.2f}  {'; '.join(e.specialties) or '-'}   "
            f"[{', '.join(e.ontology_evidence) or 'corpus only'}]"
        )
    return 0


def cmd_stats(args) -> int:
    from .lexicon import Lexicon

    lex = Lexicon.load(args.lexicon)
    st = lex.stats()
    if args.json:
        print(json.dumps({"stats": st, "rule": lex.meta.get("rule"), "sources": lex.meta.get("sources")}, indent=1))
        return 0
    print(f"{st['terms']} terms, {st['assigned_terms']} with a specialty, {st['specific_terms']} specific")
    qs = lex.meta.get("questions_per_specialty", {})
    print(f"{'specialty':28} {'specific terms':>14} {'questions':>9}")
    for s, n in st["specific_per_specialty"].items():
        print(f"{s:28} {n:14d} {qs.get(s, 0):9d}")
    print(f"rule: {lex.meta.get('rule')}")
    for src in lex.meta.get("sources", []):
        print(f"source: {src['path']} ({_source_details(src)})")
    return 0


def _source_details(src: dict) -> str:
    """What a lexicon records of a source file; `Lexicon.load` requires only its path (a lexicon made in Python
    may record no more), so the other fields are said only where present."""
    sha = src.get("sha256")
    parts = [f"sha256 {sha[:12]}..." if sha else "no sha256 recorded"]
    parts += [f"{src[k]} {what}" for k, what in (("n_records", "records"), ("n_skipped", "skipped")) if k in src]
    return ", ".join(parts)


def cmd_export(args) -> int:
    from specprobe.utils.io import atomic_write_text

    from .lexicon import Lexicon

    if args.out:
        _check_out(Path(args.out), args.overwrite, lexicon=args.lexicon)
    df = Lexicon.load(args.lexicon).to_pandas()
    if args.out:
        atomic_write_text(args.out, df.to_csv(index=False))
        print(f"wrote {args.out}: {len(df)} rows")
    else:
        try:
            df.to_csv(sys.stdout, index=False)
        except BrokenPipeError:  # e.g. piped into `head`
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
