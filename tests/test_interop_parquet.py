"""Parquet files and Hugging Face datasets hold a result exactly.

Every `Result` subclass, with the frames of tests/test_props_roundtrip.py (NaN/inf floats, NaN inside
per-token lists, empty lists and tuples, arbitrary Unicode, empty frames): `.save("x.parquet")` and
`Result.load` give the same frame as the JSON round trip (list columns as lists, tuple columns as
tuples), the same metadata and extras; saving again writes the same bytes; the header sits in the
parquet schema metadata. `.to_hf()` gives a `datasets.Dataset` with the same rows, and
`Result.from_hf` rebuilds the result, also after `save_to_disk` / `load_from_disk`.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import sys
from typing import cast

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from specprobe.core.results import Result, load_result
from specprobe.probe.comparison import Comparison
from specprobe.utils.extras import MissingExtraError
from tests.test_props_roundtrip import CASES, SETTINGS, _assert_frames_equal, _extras, _metadata, _versions_once

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

__all__ = ["_versions_once"]  # the fixture (autouse, module scope) is used by this module's tests too


@pytest.mark.parametrize("cls", list(CASES), ids=lambda c: c.__name__)
def test_parquet_round_trip_is_exact(cls, tmp_path_factory):
    row_strategy, columns = CASES[cls]

    @SETTINGS
    @given(rows=st.lists(row_strategy, max_size=6), data=st.data())
    def check(rows, data):
        folder = tmp_path_factory.mktemp(cls.__name__)
        original = cls(pd.DataFrame(rows, columns=columns), _metadata(cls, data.draw), _extras(cls, data.draw))
        want = original.to_pandas()
        path = original.save(folder / "r.parquet")
        assert path.read_bytes()[:4] == b"PAR1"
        via_json = Result.load(original.save(folder / "r.json.gz")).to_pandas()
        for loader in (Result.load, cls.load, load_result):
            loaded = loader(path)
            assert type(loaded) is cls
            _assert_frames_equal(loaded.to_pandas(), want, f"{cls.__name__} parquet via {loader.__qualname__}")
            _assert_frames_equal(loaded.to_pandas(), via_json, f"{cls.__name__} parquet vs json.gz")
            assert loaded.metadata == original.metadata and loaded.extras == original.extras
        again = loaded.save(folder / "again.parquet")
        assert again.read_bytes() == path.read_bytes(), "saving the reloaded result changed the file"
        kv = pq.read_schema(path).metadata
        raw = kv[b"specprobe"] if b"specprobe" in kv else gzip.decompress(base64.b64decode(kv[b"specprobe.gz"]))
        header = json.loads(raw)
        assert header["specprobe_result"] == cls.kind and header["metadata"] == json.loads(
            json.dumps(original.metadata)
        )

    check()


def _comparison() -> Comparison:
    rows = [
        {
            "text_id": "t1",
            "term": "seizure",
            "specialties": ("Neurology",),
            "start": 4,
            "n_tokens": 2,
            "delta": 0.25,
            "token_logp_base": [-1.5, math.nan],
            "token_logp_tuned": [-1.25, -math.inf],
            "is_control": False,
        },
        {
            "text_id": "t2",
            "term": "budget",
            "specialties": (),
            "start": 0,
            "n_tokens": 0,
            "delta": math.nan,
            "token_logp_base": [],
            "token_logp_tuned": [],
            "is_control": True,
        },
    ]
    return Comparison(pd.DataFrame(rows), {"base": "b", "tuned": "t"}, {"missing": ["never"]})


def test_parquet_keeps_list_columns_as_lists(tmp_path):
    path = _comparison().save(tmp_path / "c.parquet")
    schema = pq.read_schema(path)
    assert pa.types.is_list(schema.field("token_logp_base").type)
    assert pa.types.is_floating(schema.field("token_logp_base").type.value_type)
    assert pa.types.is_list(schema.field("specialties").type)
    table = pq.read_table(path)  # any parquet reader sees the lists, NaN and -inf inside them included
    first = table.column("token_logp_tuned").to_pylist()[0]
    assert first[0] == -1.25 and first[1] == -math.inf
    assert math.isnan(table.column("token_logp_base").to_pylist()[0][1])
    back = cast(Comparison, Comparison.load(path))
    assert back.to_pandas()["token_logp_base"].iloc[1] == [] and back.missing == ["never"]


def test_a_long_header_is_gzipped_in_the_file(tmp_path):
    comp = _comparison()
    comp.extras["items"] = [{"id": f"q{i}", "scores": [i / 7, -i / 3]} for i in range(500)]
    path = comp.save(tmp_path / "c.parquet")
    kv = pq.read_schema(path).metadata
    assert b"specprobe" not in kv and b"specprobe.gz" in kv
    header_bytes = len(json.dumps(comp.extras).encode())
    assert path.stat().st_size < header_bytes / 2, "the header is stored compressed"
    back = Result.load(path)
    assert back.extras == comp.extras and back.metadata == comp.metadata
    _assert_frames_equal(back.to_pandas(), comp.to_pandas(), "packed header")


def test_a_parquet_file_read_by_pyarrow_itself_is_a_result_also_with_a_long_header(tmp_path):
    """`from_arrow` takes "a parquet file read with pyarrow": also one whose header is stored packed
    (`specprobe.gz`), which `pq.read_table` hands over as it is in the file."""
    comp = _comparison()
    comp.extras["items"] = [{"id": f"q{i}"} for i in range(500)]
    path = comp.save(tmp_path / "c.parquet")
    table = pq.read_table(path)
    assert b"specprobe.gz" in table.schema.metadata
    back = Comparison.from_arrow(table)
    assert back.extras == comp.extras and back.metadata == comp.metadata
    _assert_frames_equal(back.to_pandas(), comp.to_pandas(), "pq.read_table")


def test_a_table_with_only_some_of_the_columns_is_refused_not_filled_with_nan(tmp_path):
    """`pq.read_table(path, columns=[...])` or `table.select(...)` keeps the header, which lists every
    column: the missing ones must not come back as NaN (by_specialty would then count nothing)."""
    comp = _comparison()
    path = comp.save(tmp_path / "c.parquet")
    for table in (pq.read_table(path, columns=["term", "delta"]), comp.to_arrow().select(["term", "delta"])):
        with pytest.raises(ValueError, match=r"lacks \d+ of the result's columns \('text_id', 'specialties'"):
            Comparison.from_arrow(table)
    pq.write_table(comp.to_arrow().drop_columns(["is_control"]), tmp_path / "some.parquet")
    with pytest.raises(ValueError, match=r"some.parquet: the table lacks 1 of the result's columns \('is_control'\)"):
        Result.load(tmp_path / "some.parquet")


def test_to_hf_is_a_dataset_that_rebuilds_the_result(tmp_path):
    datasets = pytest.importorskip("datasets")
    comp = _comparison()
    ds = comp.to_hf()
    assert isinstance(ds, datasets.Dataset) and ds.num_rows == len(comp)
    assert ds.column_names == list(comp.to_pandas().columns)
    assert ds[0]["token_logp_tuned"] == [-1.25, -math.inf] and ds[0]["specialties"] == ["Neurology"]
    assert isinstance(ds.features["token_logp_base"], (datasets.Sequence, getattr(datasets, "List", list)))
    ds.save_to_disk(str(tmp_path / "ds"))
    for d in (ds, datasets.load_from_disk(str(tmp_path / "ds"))):
        back = Result.from_hf(d)
        assert type(back) is Comparison
        _assert_frames_equal(back.to_pandas(), comp.to_pandas(), "from_hf")
        assert back.metadata == comp.metadata and back.extras == comp.extras


def test_from_hf_refuses_a_foreign_dataset():
    datasets = pytest.importorskip("datasets")
    with pytest.raises(ValueError, match="no specprobe header|not a specprobe result"):
        Result.from_hf(datasets.Dataset.from_dict({"a": [1]}))


def test_from_hf_of_a_dataset_that_lost_its_header_says_why(tmp_path, monkeypatch):
    """`ds.to_parquet` / `push_to_hub` + `load_dataset` keep the rows but not `info.description` (datasets
    stores only features and splits in a dataset card): the error says so, and what to share instead."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    _comparison().to_hf().to_parquet(str(tmp_path / "ds.parquet"))
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "ds.parquet"), split="train")
    with pytest.raises(ValueError, match=r"no specprobe header .*not push_to_hub, to_parquet or load_dataset.*save"):
        Result.from_hf(ds)


def test_a_damaged_parquet_file_is_one_error_naming_it(tmp_path):
    path = _comparison().save(tmp_path / "c.parquet")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="c.parquet"):
        Result.load(path)
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"a": [1]}), plain)
    with pytest.raises(ValueError, match="plain.parquet: .*no specprobe header|plain.parquet: .*not a specprobe"):
        Result.load(plain)


def test_missing_extra_is_one_line_naming_it(tmp_path, monkeypatch):
    saved = _comparison().save(tmp_path / "saved.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MissingExtraError, match=r"needs pyarrow.*pip install 'specprobe\[parquet\]'") as err:
        _comparison().save(tmp_path / "c.parquet")
    assert "\n" not in str(err.value)
    with pytest.raises(MissingExtraError, match=r"reading .*saved.parquet needs pyarrow.*specprobe\[parquet\]"):
        Result.load(saved)
    from specprobe.probe.inputs import normalize_terms

    with pytest.raises(MissingExtraError, match=r"specprobe\[parquet\]"):
        normalize_terms(saved)  # a parquet file given as terms
    assert Result.load(_comparison().save(tmp_path / "c.json.gz")).kind == "comparison", "JSON needs no extra"
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(MissingExtraError, match=r"needs datasets.*specprobe\[hf\]"):
        _comparison().to_hf()
