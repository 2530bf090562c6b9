"""Property tests (hypothesis) of small model-free helpers: report number formatting, specialty selection, the
optimizer steps' example order, and atomic writes."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from specprobe.core.step_order import group_indices  # noqa: E402
from specprobe.reports.format import ALPHA, MISSING, P_FLOOR, number, p_value  # noqa: E402
from specprobe.terms.records import DataError, QARecord  # noqa: E402
from specprobe.terms.selection import NO_SPECIALTY, select  # noqa: E402
from specprobe.utils.io import atomic_write_bytes, read_json, write_json  # noqa: E402

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True)


# -- report numbers ------------------------------------------------------------------------------------------
@SETTINGS
@given(st.floats(allow_nan=False, allow_infinity=False), st.integers(1, 8), st.booleans())
@example(0.04996, 3, False)
@example(-0.000012345, 3, True)
@example(5e-324, 3, False)
def test_a_number_is_plain_decimal_keeps_its_sign_and_rounds_to_its_digits(v, digits, signed):
    text = number(v, digits=digits, signed=signed)
    assert "e" not in text.lower() and text != MISSING
    if v == 0:
        assert text == "0"
        return
    shown = float(text)
    assert shown != 0 and (shown > 0) == (v > 0), (v, text)
    assert text.startswith("+") == (signed and v > 0)
    unit = 10.0 ** (math.floor(math.log10(abs(v))) - digits + 1)  # the last significant digit's place
    assert abs(shown - v) <= 0.5 * unit * (1 + 1e-9) + 1e-15 * abs(v), (v, digits, text)


@SETTINGS
@given(st.floats(0.0, 1.0))
@example(P_FLOOR)
@example(ALPHA)
@example(math.nextafter(ALPHA, 0))
@example(math.nextafter(P_FLOOR, 0))
def test_a_p_value_never_reads_across_the_floor_or_alpha(v):
    text = p_value(v)
    if v < P_FLOOR:
        assert text == f"<{P_FLOOR}"
        return
    assert "e" not in text and float(text) >= P_FLOOR
    assert (float(text) < ALPHA) == (v < ALPHA), (v, text)


# -- specialty selection ---------------------------------------------------------------------------------------
NAMES = ["Cardiology", "cardiology", "Neurology", "ENT", "ent", "Obstetrics and gynecology", "A"]
records = st.lists(st.lists(st.sampled_from(NAMES), max_size=3), min_size=1, max_size=10).map(
    lambda ss: [QARecord(f"q{i}", "Which?", ("x", "y"), "x", tuple(s)) for i, s in enumerate(ss)]
)


def _ids(recs, specialty) -> list[str] | None:
    try:
        return [r.id for r in select(recs, specialty)]
    except DataError:
        return None


@SETTINGS
@given(records, st.lists(st.sampled_from([*NAMES, NO_SPECIALTY, "CARDIOLOGY"]), min_size=1, max_size=3))
def test_selecting_several_specialties_is_the_union_of_each(recs, wanted):
    each = [_ids(recs, w) for w in wanted]
    together = _ids(recs, wanted)
    if any(e is None for e in each):  # one unknown specialty is an error, alone or in a list
        assert together is None
        return
    union = {i for e in each for i in e or ()}
    assert together == [r.id for r in recs if r.id in union]  # in the data's order, each once
    assert _ids(recs, ", ".join(wanted)) == together  # a comma list is the list


# -- example order of the optimizer steps ------------------------------------------------------------------------
@SETTINGS
@given(st.integers(1, 50), st.integers(0, 2**32 - 1), st.integers(0, 4), st.integers(1, 60))
def test_an_epochs_steps_are_full_groups_covering_every_example(n, seed, epoch, group_size):
    steps = [group_indices(n, seed, epoch, k, group_size) for k in range(math.ceil(n / group_size))]
    drawn = [i for s in steps for i in s]
    assert all(len(s) == group_size for s in steps)
    assert sorted(drawn[:n]) == list(range(n))  # a permutation first, then wrapped to fill the last group
    assert set(drawn) <= set(range(n))
    assert steps == [group_indices(n, seed, epoch, k, group_size) for k in range(len(steps))]  # seeded


# -- atomic writes -----------------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(SETTINGS, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200), st.one_of(st.none(), st.integers(0o200, 0o777)), st.sampled_from([0o022, 0o077, 0]))
def test_an_atomic_write_round_trips_and_keeps_permissions(tmp_path, data, mode, umask):
    path = tmp_path / "out.bin"
    path.unlink(missing_ok=True)
    if mode is not None:
        path.write_bytes(b"before")
        os.chmod(path, mode | 0o200)
    old = os.umask(umask)
    try:
        atomic_write_bytes(path, data)
    finally:
        os.umask(old)
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == (0o666 & ~umask if mode is None else mode | 0o200)
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no temporary file left


@settings(SETTINGS, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(json_values, st.sampled_from(["v.json", "v.json.gz"]))
def test_json_round_trips_plain_and_gzipped(tmp_path, value, name):
    path = Path(tmp_path) / name
    write_json(path, value)
    assert read_json(path) == value
