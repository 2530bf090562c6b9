"""Instruction prompts for multiple-choice questions, shared by training and evaluation.

A question becomes a prompt (the question, its lettered options, then "Answer:") and each option a
*continuation* of that prompt. Two continuation styles are supported:

* ``"letter"`` (default, as lm-evaluation-harness' MedQA/MMLU tasks): the continuations are
  ``" A"``, ``" B"``, ...; the model must pick the letter of the right option. Training teaches the
  same letter, so evaluation measures exactly what was trained.
* ``"text"``: the continuations are ``" " + option text`` (lm-eval's cloze style, e.g. ARC/PIQA);
  useful for base models that have never seen the letter format. Length normalisation matters here.

Continuation tokens are located by encoding ``prompt + continuation`` once (one BOS where the model
has one, via `specprobe.core.encoding.encode`) and taking the tokens whose character span ends
after the prompt, so tokenizers that merge the space into the next token (GPT-2, Llama's ``▁``)
are handled the same way. A token that straddles the prompt/continuation boundary is flagged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from specprobe.core.encoding import TokenizerError, encode
from specprobe.core.items import check_max_length, fit_max_length  # noqa: F401  (evaluation, accuracy_matrix)
from specprobe.terms.datasets import DataError, QARecord
from specprobe.terms.records import OPTION_LETTERS, check_option_count

LETTERS = OPTION_LETTERS  # A-Z, as the QA loaders and the lexicon's contexts letter options
DEFAULT_TEMPLATE = "Question: {question}\n{options}\nAnswer:"
DEFAULT_OPTION_FORMAT = "{letter}. {option}"
CONTINUATIONS = ("letter", "text")


@dataclass(frozen=True)
class PromptFormat:
    """How a `QARecord` becomes a prompt and its option continuations (configurable; see module doc)."""

    template: str = DEFAULT_TEMPLATE
    option_format: str = DEFAULT_OPTION_FORMAT
    continuation: str = "letter"
    delimiter: str = " "

    def __post_init__(self) -> None:
        if self.continuation not in CONTINUATIONS:
            raise ValueError(f"continuation must be one of {CONTINUATIONS}, got {self.continuation!r}")
        for key in ("{question}", "{options}"):
            if key not in self.template:
                raise ValueError(f"the prompt template must contain {key}; got {self.template!r}")
        if "{option}" not in self.option_format:
            raise ValueError(f"option_format must contain {{option}}; got {self.option_format!r}")
        try:
            self.template.format(question="q", options="o")
            self.option_format.format(letter="A", option="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"bad prompt template: {exc!r} (only {{question}}, {{options}}, {{letter}}, "
                "{option} are filled; double other braces)"
            ) from exc

    def prompt(self, record: QARecord) -> str:
        opts = "\n".join(self.option_format.format(letter=LETTERS[i], option=o) for i, o in enumerate(record.options))
        return self.template.format(question=record.question, options=opts)

    def continuations(self, record: QARecord) -> list[str]:
        if self.continuation == "letter":
            return [self.delimiter + LETTERS[i] for i in range(len(record.options))]
        return [self.delimiter + o for o in record.options]

    def target(self, record: QARecord) -> str:
        """The continuation of the correct option (what training teaches)."""
        return self.continuations(record)[record.answer_index]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> PromptFormat:
        return cls(**(d or {}))


def resolve_format(
    trained: dict | None, template: str | None = None, option_format: str | None = None, continuation: str | None = None
) -> PromptFormat:
    """The format to evaluate with: each part given here, else the trained one's (a manifest's
    "prompt"; None: the defaults). The delimiter is always the default one."""
    t = PromptFormat.from_dict(trained)
    return PromptFormat(template or t.template, option_format or t.option_format, continuation or t.continuation)


def check_record(record: QARecord, where: str = "") -> None:
    """Raise `DataError` for a record evaluation or training cannot use (names the file and item)."""
    at = where or f"item {record.id!r}"
    if not record.options:
        raise DataError(f"{at}: the options list is empty")
    check_option_count(len(record.options), at)
    if record.answer not in record.options:
        raise DataError(f"{at}: answer {record.answer!r} is not one of the options {list(record.options)}")


def answer_options(record: QARecord) -> frozenset[int]:
    """The indices of the options that are the answer: every option with the answer's text. A question
    can list one text twice (MedMCQA has such items); a record holds its answer as text, so each of
    the copies is a correct pick (`answer_index` and the trained letter are the first copy's)."""
    return frozenset(i for i, o in enumerate(record.options) if o == record.answer)


def check_records(records: Sequence[QARecord], source: str = "<records>") -> None:
    for i, rec in enumerate(records):
        check_record(rec, f"{source}: item {i} (id {rec.id!r})")


@dataclass(frozen=True)
class EncodedContinuation:
    """prompt+continuation token ids and the positions of the continuation's tokens."""

    ids: tuple[int, ...]
    positions: tuple[int, ...]
    n_dropped: int = 0  # prompt tokens dropped from the left to fit max_length
    straddles: bool = False  # the first continuation token also covers prompt characters
    kept_from: int = 0  # with n_dropped: the first prompt character the kept tokens cover (what fit starts there)


def encode_continuation(
    tokenizer,
    prompt: str,
    continuation: str,
    *,
    max_length: int | None = None,
    append_eos: bool = False,
    where: str = "",
) -> EncodedContinuation:
    """Encode prompt+continuation; positions are the tokens ending after the prompt (plus EOS if asked).

    Too long inputs lose prompt tokens from the left (after the BOS), never continuation tokens. `where`
    ("question 'q7', option B") starts the message of a ValueError about this pair, which names no question.
    """
    try:
        return _encode_continuation(tokenizer, prompt, continuation, max_length, append_eos)
    except TokenizerError:  # the tokenizer's own problem, not this question's
        raise
    except ValueError as exc:
        if not where:
            raise
        raise ValueError(f"{where}: {exc}") from exc


def _encode_continuation(
    tokenizer, prompt: str, continuation: str, max_length: int | None, append_eos: bool
) -> EncodedContinuation:
    if not continuation:
        raise ValueError("the continuation is empty")
    enc = encode(tokenizer, prompt + continuation)
    cut = len(prompt)
    positions = [i for i, o in enumerate(enc.offsets) if o is not None and o[1] > cut]
    if not positions:
        raise ValueError(f"no token of continuation {continuation!r} found after the prompt")
    first = enc.offsets[positions[0]]
    assert first is not None  # positions only holds tokens that have offsets
    straddles = first[0] < cut
    ids = list(enc.ids)
    if append_eos:
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is not None:
            ids.append(eos)
            positions.append(len(ids) - 1)
    n_dropped = kept_from = 0
    if max_length is not None and len(ids) > max_length:
        keep_front = 1 if enc.has_bos else 0
        n_dropped = len(ids) - max_length
        if positions[0] - n_dropped < keep_front + 1:
            raise ValueError(
                f"the continuation alone ({len(ids) - positions[0]} tokens) does not fit max_length={max_length}"
            )
        ids = ids[:keep_front] + ids[keep_front + n_dropped :]
        positions = [p - n_dropped for p in positions]
        kept_from = next((o[0] for o in enc.offsets[keep_front + n_dropped :] if o is not None), cut)
    if positions[0] < 1:
        raise ValueError("the continuation starts at the first token: nothing to condition it on")
    return EncodedContinuation(tuple(ids), tuple(positions), n_dropped, straddles, kept_from)
