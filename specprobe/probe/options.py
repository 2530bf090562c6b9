"""`ProbeOptions`: the options every probe analysis shares, in one frozen object.

`compare`, `layers`, `patch`, `logit_attribution` and `remote_layers` all find terms and score them
the same way, so they take the same options: which control words, how texts are matched and
encoded, how long texts are handled, how models are loaded and batched. Each public function still
accepts them as keyword arguments; `ProbeOptions.resolve` turns those (or an `options=` object) into
the one `ProbeOptions` that flows inside, down to `prepare()`.

The command line spells the same options once (`add_probe_arguments`, read back by
`ProbeOptions.from_args`), for both `specprobe compare` and `specprobe layers`; `metadata` is how a
result records them (caches and saved results key on exactly those keys and values).
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any

from specprobe.core.batch_defaults import DEFAULT_BATCH_ROWS
from specprobe.probe.inputs import DEFAULT_TEMPLATE
from specprobe.probe.occurrences import MatchOptions
from specprobe.utils.argtypes import add_mapping_argument, positive_int


@dataclass(frozen=True)
class ProbeOptions:
    """How terms (and control words) are found, encoded and scored; shared by every probe analysis.

    `controls`: "auto" (frequency-matched ordinary words), a sequence of words (kept as a tuple), or
    None. `n_controls`, `seed`: how many control words "auto" picks, and its random seed.
    `template`: the context built for each term when no texts are given. `match`: how terms are
    matched in texts. `add_bos`: None puts the tokenizer's BOS first, once, wherever it has one (also
    GPT-2's, which its tokenizer does not add); False: no BOS; True: BOS, an error without one.
    `max_length`: context length (None: the model's; more is an error). `long_texts`: "window" (score
    in sliding windows) or "error". `batch_size`, `device`, `dtype`, `tokenizer`, `progress`: how models are loaded and run.
    """

    controls: str | Sequence[str] | None = "auto"  # a sequence of words is kept as a tuple
    n_controls: int | None = None
    template: str = DEFAULT_TEMPLATE
    match: MatchOptions = MatchOptions()
    add_bos: bool | None = None
    max_length: int | None = None
    long_texts: str = "window"
    seed: int = 0
    batch_size: int | None = None
    device: str | None = None
    dtype: str | None = None
    tokenizer: Any = field(default=None, repr=False)
    progress: bool = True

    def __post_init__(self) -> None:
        controls = self.controls
        if controls is not None and not isinstance(controls, str) and isinstance(controls, Iterable):
            object.__setattr__(self, "controls", tuple(controls))  # a list of words, frozen

    @classmethod
    def resolve(cls, options: ProbeOptions | None, fn: Callable, **given: Any) -> ProbeOptions:
        """The options `fn` runs with: `options` when given, else `fn`'s keyword arguments (`given`).

        With `options`, a keyword argument left at `fn`'s default defers to `options`; one set to a
        value that differs from `options`' is an error (the call would be ambiguous).
        """
        from_keywords = cls(**given)
        if options is None:
            return from_keywords
        if not isinstance(options, ProbeOptions):
            raise TypeError(f"{fn.__name__}: options must be a ProbeOptions, got {type(options).__name__}")
        defaults = cls(**{name: _defaults(fn)[name] for name in given})
        conflicts = [
            name
            for name in given
            if _differs(getattr(from_keywords, name), getattr(defaults, name))
            and _differs(getattr(from_keywords, name), getattr(options, name))
        ]
        if conflicts:
            raise ValueError(
                f"{fn.__name__}: options= and the keyword argument(s) {', '.join(conflicts)} disagree "
                f"({'; '.join(f'{n}: {getattr(options, n)!r} in options=, {getattr(from_keywords, n)!r} as keyword' for n in conflicts)}); "
                "pass each option once, in options= or as a keyword argument"
            )
        return options

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ProbeOptions:
        """The options given on a command line built with `add_probe_arguments`."""
        return cls(
            controls=read_controls(args.controls),
            batch_size=args.batch_size,
            max_length=args.max_length,
            long_texts=args.long_texts,
            device=args.device,
            dtype=args.dtype,
            progress=not args.no_progress,
        )

    def metadata(self, max_length: int, texts_given: bool) -> dict:
        """The options as results record them (`Prepared.options`): exactly these keys and values,
        which caches and saved results depend on. `max_length`: the context length actually used."""
        return {
            "match": asdict(self.match),
            "add_bos": self.add_bos,
            "max_length": max_length,
            "long_texts": self.long_texts,
            "controls": self.controls if isinstance(self.controls, (str, type(None))) else "given",
            "n_controls": self.n_controls,
            "template": None if texts_given else self.template,
            "seed": self.seed,
        }


PROBE_OPTION_NAMES = tuple(f.name for f in fields(ProbeOptions))


# Values keyed like an option left out although they are not its default now: `batch_size = 8` was the
# default of every device when stage keys first dropped defaults, and run folders keyed then must still be
# found (batch composition moves numbers by float rounding only: tests/test_probe_compare.py, batch size 1 vs 16).
KEYED_AS_UNSET = {"batch_size": DEFAULT_BATCH_ROWS["cpu"]}


def without_probe_defaults(options: Mapping[str, Any]) -> dict:
    """`options` (a [compare] table) less those set to `ProbeOptions`' defaults, which compare, layers and the
    general-text control share: cache keys built from this agree whether a default is written out or left out."""
    defaults = {f.name: f.default for f in fields(ProbeOptions)}
    return {
        k: v
        for k, v in options.items()
        if k not in defaults or (v != defaults[k] and not (k in KEYED_AS_UNSET and v == KEYED_AS_UNSET[k]))
    }


@cache
def _defaults(fn: Callable) -> dict[str, Any]:
    params = inspect.signature(fn).parameters
    return {name: params[name].default for name in PROBE_OPTION_NAMES if name in params}


def _differs(a: Any, b: Any) -> bool:
    return a is not b and bool(a != b)


def read_controls(value: str) -> str | list[str] | None:
    """--controls: 'auto', 'none' (no control words), or a file with one word per line."""
    if value == "none":
        return None
    if value == "auto":
        return "auto"
    from specprobe.terms.records import read_text  # invalid UTF-8 is an error naming the file and line
    from specprobe.utils.io import looks_like_json

    path = Path(value)
    if not path.exists():
        raise FileNotFoundError(f"--controls {value!r}: not 'auto', 'none', or an existing file of words")
    if path.is_dir():
        raise IsADirectoryError(f"--controls {value}: a folder, not a file with one word per line")
    text = read_text(path)
    if text.strip() and (path.suffix in (".json", ".jsonl") or looks_like_json(text)):  # a lexicon, QA data
        raise ValueError(f"--controls {value}: holds JSON, not one word per line (a plain text file)")
    words = [w.strip() for w in text.splitlines() if w.strip()]
    if not words:
        raise ValueError(f"--controls {value}: no words in the file (--controls none: no control words)")
    return words


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    """The models, inputs and `ProbeOptions` arguments shared by `specprobe compare` and `specprobe layers`."""
    parser.add_argument("--base", required=True, help="hub id or local directory of the base model")
    parser.add_argument(
        "--tuned", required=True, help="PEFT adapter directory, or a full fine-tuned model (hub id / directory)"
    )
    parser.add_argument(
        "--terms",
        required=True,
        help="lexicon JSON (specprobe terms build), JSON mapping term -> specialties, "
        "or a text file with one term per line",
    )
    parser.add_argument(
        "--data", help="QA file (S-MedQA JSON) whose questions are the contexts; default: the lexicon's own"
    )
    add_mapping_argument(parser, " (for --data)")
    parser.add_argument(
        "--controls",
        default="auto",
        help="'auto' (frequency-matched ordinary words), 'none', or a file with one word per line",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help=f"at most this many texts per forward pass (default {DEFAULT_BATCH_ROWS['cpu']} on a CPU, "
        f"{DEFAULT_BATCH_ROWS['cuda']} on a GPU; a token budget bounds each pass too: 1,024 tokens on a CPU, 16,384 on a GPU)",
    )
    parser.add_argument("--max-length", type=positive_int, default=None, help="context length (default: the model's)")
    parser.add_argument(
        "--long-texts",
        choices=["window", "error"],
        default="window",
        help="a text longer than the context: score it in sliding windows (default) or stop with an error",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, or shard (spread over all GPUs)")
    parser.add_argument(
        "--dtype", default="auto", help="auto (default: fp32 on CPU, bf16/fp16 on GPU), fp32, bf16 or fp16"
    )
    parser.add_argument("--limit", type=positive_int, default=None, help="use only the first N texts (quick looks)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    parser.add_argument(
        "--force-adapter",
        action="store_true",
        help="load an adapter recorded for another architecture or shape (normally refused)",
    )


def check_out_dir(out: str | Path, outputs: Sequence[str], overwrite: bool) -> Path:
    """Refuse an --out that cannot take the results, before any model loads: a file, a folder already
    holding one of `outputs` (unless `overwrite`), or one that cannot be written. Nothing is created here."""
    from specprobe.utils.io import check_writable

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"--out {path} is a file, not a folder")
    existing = [name for name in outputs if (path / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"--out {path} already holds {', '.join(existing)}; pass --overwrite to replace")
    check_writable(path, "--out")  # a read-only folder fails now, not after the models have run
    return path
