"""Property tests (hypothesis): every saved result and the `Lexicon` reload exactly.

For each `Result` subclass (Comparison, LayerView, Patching, LogitAttribution, MCEvaluation,
AccuracyMatrix, ExperimentResult, and the analyses SeenUnseen, AccuracyLink, Trajectory, GeneralTextShift), frames are generated with the columns and value types the
package itself writes (built as the package builds them: `pd.DataFrame(rows, columns=Cls.columns)`),
including empty frames, NaN/inf floats, empty tuples and arbitrary Unicode. Each is saved to `.json`
and `.json.gz`, reloaded through `Result.load`, the subclass's own `load` and `load_result`, and must
give an instance of that subclass (its `__init__` run) with an equal frame (tuple columns back as
tuples), equal metadata and extras. Saving is deterministic and idempotent (load -> save gives the same
bytes), `.gz` really gzips, and no temporary file is left behind.

`Lexicon`: random terms and metadata, saved and reloaded, give the same entries (z rounded to 4
decimals, as documented by `TermEntry.to_dict`) and the same metadata.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from specprobe.app.experiment_result import ExperimentResult
from specprobe.core.results import Result, load_result
from specprobe.finetune.accuracy_matrix import AccuracyMatrix
from specprobe.finetune.evaluation import MCEvaluation
from specprobe.probe.analyses.accuracy_link import AccuracyLink
from specprobe.probe.analyses.general_text import GeneralTextShift
from specprobe.probe.analyses.seen_unseen import SeenUnseen
from specprobe.probe.analyses.trajectory import Trajectory
from specprobe.probe.comparison import Comparison
from specprobe.probe.lens import LayerView
from specprobe.probe.patching import LogitAttribution, Patching
from specprobe.terms.lexicon import Lexicon, TermEntry
from specprobe.terms.specialties import AssignmentRule

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module", autouse=True)
def _versions_once():
    """`Result.__init__` calls `library_versions()` (8 importlib.metadata look-ups, ~40 ms) on every
    construction and every load, even when the metadata already holds "versions" (`dict.setdefault`
    evaluates its argument). The versions cannot change within a test run, so look them up once here:
    the same values, 20x faster round trips."""
    import specprobe.core.results as results_module

    versions = results_module.library_versions()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(results_module, "library_versions", lambda *a, **k: dict(versions))
        yield


# -- value strategies ---------------------------------------------------------------------------------------------
# any Unicode except lone surrogates (not encodable as UTF-8, so not a Python string a file can hold)
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
name = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=10)
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-50, 0), st.just(float("nan")))
finite = st.floats(allow_nan=False, allow_infinity=False)
ints = st.integers(-(2**40), 2**40)
counts = st.integers(0, 10_000)
specs = st.lists(st.sampled_from(["Cardiology", "Neurology", "Pédiatrie", "内科", "A;B", ""]), max_size=3).map(tuple)


def occurrence(draw) -> dict:
    start = draw(st.integers(0, 10_000))
    return {
        "text_id": draw(name),
        "term": draw(name),
        "specialties": draw(specs),
        "start": start,
        "end": start + draw(st.integers(0, 50)),
        "n_tokens": draw(st.integers(0, 8)),
        "is_control": draw(st.booleans()),
        "flags": draw(st.sampled_from(["", "straddles", "straddles,window"])),
    }


@st.composite
def comparison_row(draw) -> dict:
    occ = occurrence(draw)
    return {
        **occ,
        "text_specialties": draw(specs),
        "surface": draw(text),
        "logp_base": draw(floats),
        "logp_tuned": draw(floats),
        "delta": draw(floats),
        "delta_per_token": draw(floats),
        "token_logp_base": draw(st.lists(floats, max_size=4)),
        "token_logp_tuned": draw(st.lists(floats, max_size=4)),
    }


@st.composite
def layer_row(draw) -> dict:
    return {
        **occurrence(draw),
        "layer": draw(st.integers(0, 80)),
        "model": draw(st.sampled_from(["base", "tuned"])),
        "logp": draw(floats),
        "logp_per_token": draw(floats),
        "token_logp": draw(st.lists(floats, max_size=4)),
    }


@st.composite
def patching_row(draw) -> dict:
    return {
        **occurrence(draw),
        "direction": draw(st.sampled_from(["base->tuned", "tuned->base"])),
        "layer": draw(st.integers(0, 80)),
        "component": draw(st.sampled_from(["attn", "mlp", "layer"])),
        "logp_base": draw(floats),
        "logp_tuned": draw(floats),
        "logp_patched": draw(floats),
        "delta": draw(floats),
        "recovered": draw(floats),
    }


@st.composite
def attribution_row(draw) -> dict:
    return {
        **occurrence(draw),
        "model": draw(st.sampled_from(["base", "tuned"])),
        "layer": draw(st.integers(-1, 80)),
        "component": draw(st.sampled_from(["embed", "attn", "mlp", "bias"])),
        "contribution": draw(floats),
    }


@st.composite
def mc_row(draw) -> dict:
    n = draw(st.integers(1, 6))
    logps = tuple(draw(st.lists(floats, min_size=n, max_size=n)))
    return {
        "model": draw(name),
        "item_id": draw(name),
        "specialties": draw(specs),
        "n_options": n,
        "answer_index": draw(st.integers(0, n - 1)),
        "answer_indices": tuple(sorted(draw(st.sets(st.integers(0, n - 1), min_size=1)))),
        "option_logp": logps,
        "option_n_tokens": tuple(draw(st.lists(st.integers(0, 40), min_size=n, max_size=n))),
        "option_n_chars": tuple(draw(st.lists(st.integers(1, 400), min_size=n, max_size=n))),
        "pred": draw(st.integers(0, n - 1)),
        "pred_norm": draw(st.integers(0, n - 1)),
        "correct": draw(st.booleans()),
        "correct_norm": draw(st.booleans()),
        "truncated": draw(st.booleans()),
        "straddles": draw(st.booleans()),
    }


@st.composite
def accuracy_row(draw) -> dict:
    n = draw(st.integers(0, 500))
    k, kn = draw(st.integers(0, n)), draw(st.integers(0, n))
    return {
        "model": draw(name),
        "trained_on": draw(st.one_of(st.none(), name)),
        "specialty": draw(name),
        "n": n,
        "n_correct": k,
        "acc": k / n if n else math.nan,
        "acc_lo": draw(floats),
        "acc_hi": draw(floats),
        "n_correct_norm": kn,
        "acc_norm": kn / n if n else math.nan,
        "acc_norm_lo": draw(floats),
        "acc_norm_hi": draw(floats),
    }


MATRIX_COLUMNS = [
    "finetune_specialty",
    "specialty",
    "n",
    "n_terms",
    "n_texts",
    "mean_delta_per_token",
    "ci_low",
    "ci_high",
    "minus_control",
    "minus_control_ci_low",
    "minus_control_ci_high",
    "n_pairs",
    "p_value",
    "p_holm",
]


@st.composite
def matrix_row(draw) -> dict:
    """A row of the compare matrix (`compare_matrix`: Comparison.by_specialty per adapter)."""
    return {
        "finetune_specialty": draw(name),
        "specialty": draw(name),
        "n": draw(counts),
        "n_terms": draw(counts),
        "n_texts": draw(counts),
        **{c: draw(floats) for c in MATRIX_COLUMNS[5:11]},
        "n_pairs": draw(counts),
        "p_value": draw(floats),
        "p_holm": draw(floats),
    }


@st.composite
def seen_unseen_row(draw) -> dict:
    return {
        "text_id": draw(name),
        "term": draw(name),
        "specialties": draw(specs),
        "is_control": draw(st.booleans()),
        "group": draw(st.sampled_from(["seen", "unseen_same", "unseen_other", "control"])),
        "train_count": draw(counts),
        "n_tokens": draw(st.integers(0, 8)),
        "delta": draw(floats),
        "delta_per_token": draw(floats),
    }


@st.composite
def accuracy_link_row(draw) -> dict:
    return {
        "adapter": draw(name),
        "item_id": draw(name),
        "specialties": draw(specs),
        "n_occurrences": draw(counts),
        **{c: draw(floats) for c in ("term_delta", "control_delta", "term_minus_control")},
        "correct_base": draw(st.booleans()),
        "correct_tuned": draw(st.booleans()),
        "acc_change": draw(st.integers(-1, 1)),
        **{c: draw(floats) for c in ("margin_base", "margin_tuned", "margin_change")},
    }


@st.composite
def trajectory_row(draw) -> dict:
    return {
        "step": draw(counts),
        "text_id": draw(name),
        "term": draw(name),
        "specialties": draw(specs),
        "text_specialties": draw(specs),
        "is_control": draw(st.booleans()),
        "n_tokens": draw(st.integers(0, 8)),
        **{c: draw(floats) for c in ("logp_base", "logp_tuned", "delta", "delta_per_token")},
    }


@st.composite
def general_text_row(draw) -> dict:
    return {
        "text_id": draw(name),
        "n_tokens": draw(counts),
        **{c: draw(floats) for c in ("logp_base", "logp_tuned", "delta", "delta_per_token")},
        "truncated": draw(st.booleans()),
    }


json_scalar = st.one_of(st.none(), st.booleans(), ints, finite, text)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)),
    max_leaves=8,
)
metadata = st.dictionaries(
    st.text(max_size=8).filter(lambda k: k not in ("created", "versions")), json_value, max_size=4
)

CASES = {
    Comparison: (comparison_row(), Comparison.columns),
    LayerView: (layer_row(), LayerView.columns),
    Patching: (patching_row(), Patching.columns),
    LogitAttribution: (attribution_row(), LogitAttribution.columns),
    MCEvaluation: (mc_row(), MCEvaluation.columns),
    AccuracyMatrix: (accuracy_row(), AccuracyMatrix.columns),
    ExperimentResult: (matrix_row(), MATRIX_COLUMNS),
    SeenUnseen: (seen_unseen_row(), SeenUnseen.columns),
    AccuracyLink: (accuracy_link_row(), AccuracyLink.columns),
    Trajectory: (trajectory_row(), Trajectory.columns),
    GeneralTextShift: (general_text_row(), GeneralTextShift.columns),
}


def test_every_result_subclass_is_covered():
    """A new Result subclass must be added to CASES (it is then round-trip tested like the others)."""
    import specprobe.app.experiment_result  # noqa: F401  (import every module that defines a result)
    import specprobe.finetune.accuracy_matrix  # noqa: F401
    import specprobe.finetune.evaluation  # noqa: F401
    import specprobe.probe.analyses  # noqa: F401
    import specprobe.probe.comparison  # noqa: F401
    import specprobe.probe.lens  # noqa: F401
    import specprobe.probe.patching  # noqa: F401

    def all_subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from all_subclasses(sub)

    found = {c for c in all_subclasses(Result) if c.__module__.startswith("specprobe.")}
    assert found == set(CASES), f"not covered: {found - set(CASES)}; stale: {set(CASES) - found}"


def _extras(cls, draw) -> dict:
    if cls is ExperimentResult:
        return {
            "paths": draw(st.dictionaries(text, st.one_of(text, st.dictionaries(text, text, max_size=2)), max_size=3))
        }
    if cls is Comparison:
        return {"missing": draw(st.lists(name, max_size=3))}
    return draw(st.dictionaries(text, json_value, max_size=2))


def _metadata(cls, draw) -> dict:
    meta = draw(metadata)
    if cls is ExperimentResult:
        meta.update({"config": draw(st.dictionaries(text, json_value, max_size=3)), "root": draw(name)})
    if cls is LayerView:
        meta["n_layers"] = draw(st.integers(0, 80))
    return meta


def _assert_frames_equal(got: pd.DataFrame, want: pd.DataFrame, what: str) -> None:
    # a frame with no columns at all (an empty compare matrix) reloads with an empty object column index
    # instead of an empty RangeIndex: the same (no) columns
    assert_frame_equal(got, want, check_column_type=bool(len(want.columns)), obj=what)
    # assert_frame_equal takes [1, 2] == (1, 2): check every cell's type too (tuples stay tuples, lists lists)
    for col in want.columns:
        if want[col].dtype == object:
            kinds = [
                (type(a).__name__, type(b).__name__) for a, b in zip(got[col], want[col]) if type(a) is not type(b)
            ]
            assert not kinds, f"{what}: column {col!r} reloads {kinds[0][0]} values where {kinds[0][1]} were saved"


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("cls", list(CASES), ids=lambda c: c.__name__)
def test_result_round_trip(cls, tmp_path_factory):
    row_strategy, columns = CASES[cls]

    @SETTINGS
    @given(rows=st.lists(row_strategy, max_size=6), data=st.data())
    def check(rows, data):
        folder = tmp_path_factory.mktemp(cls.__name__)
        frame = pd.DataFrame(rows, columns=columns)
        original = cls(frame, _metadata(cls, data.draw), _extras(cls, data.draw))
        want = original.to_pandas()
        for suffix in (".json", ".json.gz"):
            path = folder / f"result{suffix}"
            original.save(path)
            raw = path.read_bytes()
            assert (raw[:2] == b"\x1f\x8b") == suffix.endswith(".gz"), f"{suffix}: gzipped? {raw[:2]!r}"
            for loader in (Result.load, cls.load, load_result):
                loaded = loader(path)
                assert type(loaded) is cls, f"{loader.__qualname__} gave {type(loaded).__name__}, not {cls.__name__}"
                got = loaded.to_pandas()
                _assert_frames_equal(got, want, f"{cls.__name__} {suffix} via {loader.__qualname__}")
                assert loaded.metadata == original.metadata
                assert loaded.extras == original.extras
                assert len(loaded) == len(original)
            if cls is ExperimentResult:  # its own __init__ ran: the lazy-load cache exists
                assert "_cache" in vars(loaded) and loaded._cache == {}
            # deterministic and idempotent: saving the reloaded result writes the same bytes
            again = folder / f"again{suffix}"
            loaded.save(again)
            assert again.read_bytes() == raw
        assert _files(folder) == sorted(["result.json", "result.json.gz", "again.json", "again.json.gz"]), (
            "a temporary file was left behind"
        )

    check()


@pytest.mark.parametrize("cls", list(CASES), ids=lambda c: c.__name__)
def test_loading_as_another_result_class_is_refused(cls, tmp_path):
    row_strategy, columns = CASES[cls]
    path = cls(pd.DataFrame([], columns=columns)).save(tmp_path / "r.json.gz")
    other = next(c for c in CASES if c is not cls)
    with pytest.raises(ValueError, match=f"holds a {cls.__name__}, not a {other.__name__}"):
        other.load(path)


def test_loading_a_lexicon_as_a_result_names_the_file_and_what_it_holds(tmp_path):
    path = Lexicon({"mi": TermEntry("mi")}, {"specialties": []}).save(tmp_path / "lexicon.json.gz")
    with pytest.raises(ValueError, match=r"lexicon.json.gz: holds a specprobe Lexicon, not a result; .*Lexicon.load"):
        load_result(path)


def test_a_result_file_without_its_rows_is_one_error_naming_it(tmp_path):
    path = Comparison(pd.DataFrame([], columns=Comparison.columns)).save(tmp_path / "c.json")
    doc = json.loads(path.read_text())
    del doc["rows"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"c.json: a damaged Comparison file: no 'rows' or 'columns' list"):
        load_result(path)


def test_metadata_is_stored_as_json_values(tmp_path):
    """Tuples, numpy scalars and arrays and Path values in metadata come back as their JSON forms."""
    meta = {
        "shape": (1, 2),
        "np": np.float32(0.5),
        "arr": np.arange(3),
        "path": Path("a/b"),
        "i": np.int64(7),
        "nested": {"t": ("x", np.bool_(True))},
    }
    loaded = Comparison(pd.DataFrame([], columns=Comparison.columns), meta).save(tmp_path / "c.json")
    back = Result.load(loaded).metadata
    assert back["shape"] == [1, 2] and back["np"] == 0.5 and back["arr"] == [0, 1, 2]
    assert back["path"] == str(Path("a/b")) and back["i"] == 7 and back["nested"] == {"t": ["x", True]}
    assert type(back["i"]) is int and type(back["nested"]["t"][1]) is bool


# -- Lexicon -------------------------------------------------------------------------------------------------------
term_key = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12).filter(lambda s: s.strip())
spec_names = st.sampled_from(["Cardiology", "Neurology", "Pédiatrie", "内科", "Oncology"])
z_values = st.floats(-1e6, 1e6, allow_nan=False)


@st.composite
def term_entries(draw) -> dict[str, TermEntry]:
    keys = draw(st.lists(term_key, max_size=6, unique=True))
    out = {}
    for t in keys:
        out[t] = TermEntry(
            term=t,
            canonical=draw(text),
            concept_ids=draw(st.lists(text, max_size=2)),
            sources=draw(st.lists(st.sampled_from(["ontology", "corpus", "scispacy"]), max_size=2)),
            surfaces=draw(st.dictionaries(text, counts, max_size=3)),
            count=draw(counts),
            counts=draw(st.dictionaries(spec_names, counts, max_size=3)),
            questions=draw(st.lists(text, max_size=3)),
            ontology=draw(st.lists(spec_names, max_size=2)),
            ontology_evidence=draw(st.lists(text, max_size=2)),
            z=draw(st.dictionaries(spec_names, z_values, max_size=3)),
            specialties=draw(st.lists(spec_names, max_size=2)),
            specific=draw(st.booleans()),
        )
    return out


@st.composite
def lexicon_meta(draw) -> dict:
    meta = draw(metadata)
    meta["sources"] = [
        {
            "path": draw(name),
            "sha256": draw(st.one_of(st.none(), st.text("0123456789abcdef", min_size=64, max_size=64))),
            "format": draw(st.sampled_from(["auto", "jsonl", "csv"])),
            "n_records": draw(counts),
        }
        for _ in range(draw(st.integers(0, 2)))
    ]
    meta["specialties"] = draw(st.lists(spec_names, unique=True, max_size=4))
    # every field: a lexicon's rule is refused when one is missing (it would be assumed, silently)
    rule = st.builds(
        AssignmentRule,
        z_min=finite,
        min_specialty_count=counts,
        max_specialties=st.integers(1, 15),
        min_count=st.integers(1, 10_000),
        prior_strength=st.floats(1e-6, 1e6),
        use_ontology=st.just(True),
        use_corpus=st.booleans(),
    )
    meta["rule"] = draw(rule).to_dict()
    meta["totals"] = draw(st.dictionaries(spec_names, counts, max_size=3))
    return meta


def _as_saved(entry: TermEntry) -> TermEntry:
    """The entry a save/load gives back: z rounded to 4 decimals (TermEntry.to_dict), all else exact."""
    return TermEntry(**{**vars(entry), "z": {k: round(v, 4) for k, v in entry.z.items()}})


@SETTINGS
@given(terms=term_entries(), meta=lexicon_meta())
def test_lexicon_round_trip(tmp_path_factory, terms, meta):
    folder = tmp_path_factory.mktemp("lexicon")
    lex = Lexicon(terms, meta)
    for filename in ("lexicon.json", "lexicon.json.gz"):
        path = folder / filename
        lex.save(path)
        back = Lexicon.load(path)
        assert type(back) is Lexicon
        assert list(back.terms) == list(lex.terms)  # order kept
        for t in lex.terms:
            assert back[t] == _as_saved(lex[t]), t
            assert all(type(n) is int for n in back[t].counts.values())
        assert back.meta == lex.meta
        assert back.term_specialties() == lex.term_specialties()
        assert back.specialties == lex.specialties
        assert back.stats() == lex.stats()
        # a second round trip is exact (the rounding is idempotent)
        back.save(folder / "again.json")
        assert Lexicon.load(folder / "again.json").to_dict() == back.to_dict()
        first = path.read_bytes()
        lex.save(path)
        assert path.read_bytes() == first  # deterministic bytes
    assert _files(folder) == ["again.json", "lexicon.json", "lexicon.json.gz"], "a temporary file was left behind"


def test_lexicon_gz_is_gzip_like_results(tmp_path):
    lex = Lexicon(
        {"aspirin": TermEntry("aspirin", count=3, specialties=["Cardiology"], specific=True)},
        {"specialties": ["Cardiology"]},
    )
    plain = lex.save(tmp_path / "lexicon.json")
    (tmp_path / "gz.json.gz").write_bytes(gzip.compress(plain.read_bytes()))
    assert Lexicon.load(tmp_path / "gz.json.gz").to_dict() == lex.to_dict()  # a gzipped lexicon loads
    assert lex.save(tmp_path / "saved.json.gz").read_bytes()[:2] == b"\x1f\x8b"  # and .gz names are gzipped


def test_lexicon_file_is_the_documented_schema(tmp_path):
    lex = Lexicon({"mi": TermEntry("mi", z={"Cardiology": 2.123456789})}, {"specialties": ["Cardiology"]})
    data = json.loads(lex.save(tmp_path / "l.json").read_text(encoding="utf-8"))
    assert data["schema"] == "specprobe.terms.lexicon" and data["schema_version"] == 1
    assert data["terms"]["mi"]["z"] == {"Cardiology": 2.1235} and "term" not in data["terms"]["mi"]
