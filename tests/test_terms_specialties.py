"""The specialty table, the log-odds z-scores (toy example by hand) and the combination rule."""

import math

import pytest

from specprobe.terms.specialties import (
    SPECIALTIES,
    AssignmentRule,
    MapRow,
    SpecialtyMap,
    combine,
    load_map,
    log_odds_z,
)


def test_log_odds_toy_example_by_hand():
    counts = {"a": {"X": 10, "Y": 0}, "b": {"X": 0, "Y": 10}, "c": {"X": 5, "Y": 5}}
    z = log_odds_z(counts, ["X", "Y"], prior_strength=1.0)
    # N = 30, n_X = n_Y = 15, alpha_0 = 30, alpha_a = 10 (term a's corpus count)
    delta = math.log(20 / 25) - math.log(10 / 35)
    expected = delta / math.sqrt(1 / 20 + 1 / 10)
    assert z["a"]["X"] == pytest.approx(expected)
    assert z["a"]["X"] == pytest.approx(2.6585, abs=1e-3)
    assert z["a"]["Y"] == pytest.approx(-expected)
    assert z["b"]["Y"] == pytest.approx(expected)
    assert z["c"]["X"] == pytest.approx(0.0, abs=1e-12)


def test_log_odds_prior_shrinks_small_counts():
    counts = {"rare": {"X": 2}, "common": {"X": 20}, "other": {"X": 50, "Y": 200}}
    z = log_odds_z(counts, ["X", "Y"])
    assert 0 < z["rare"]["X"] < z["common"]["X"]
    weak = log_odds_z(counts, ["X", "Y"], prior_strength=0.1)
    assert weak["rare"]["X"] > z["rare"]["X"]
    with pytest.raises(ValueError):
        log_odds_z(counts, ["X", "Y"], prior_strength=0)


def test_combine_rule():
    z = {"Cardiology": 3.0, "Neurology": 2.5, "Psychiatry": 0.1}
    counts = {"Cardiology": 5, "Neurology": 1, "Psychiatry": 1}
    specs, specific = combine(["Cardiology"], z, counts)
    assert specs == ("Cardiology",) and specific  # Neurology: z high but only 1 occurrence
    specs, specific = combine(["A", "B", "C"], {"D": 5.0}, {"D": 3})
    assert len(specs) == 4 and not specific
    assert combine([], {"X": 0.0}, {"X": 4}) == ((), False)
    assert combine(["A"], {"X": 9.0}, {"X": 9}, AssignmentRule(use_corpus=False)) == (("A",), True)
    assert combine(["A"], {"X": 9.0}, {"X": 9}, AssignmentRule(use_ontology=False)) == (("X",), True)


@pytest.mark.parametrize(
    "bad",
    [
        {"z_min": math.nan},
        {"z_min": math.inf},
        {"prior_strength": 0.0},
        {"prior_strength": math.nan},
        {"max_specialties": 0},
        {"min_count": 0},
        {"min_specialty_count": -1},
        {"use_ontology": False, "use_corpus": False},
    ],
)
def test_rule_refuses_values_that_would_silently_assign_nothing(bad):
    with pytest.raises(ValueError, match=next(iter(bad)) if len(bad) == 1 else "both off"):
        AssignmentRule(**bad)


def test_terms_build_refuses_a_nan_z_min_before_reading_the_data(tmp_path):
    """The CLI checks the rule before extraction; a missing data file is never reached."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "specprobe.app.cli", "terms", "build", str(tmp_path / "absent.json")]
    for extra, message in (
        (["--z-min", "nan"], "z_min must be a finite number"),
        (["--min-count", "0"], "--min-count"),
    ):
        done = subprocess.run([*cmd, "--out", str(tmp_path / "lex.json"), *extra], capture_output=True, text=True)
        assert done.returncode == 2
        assert message in done.stderr and "Traceback" not in done.stderr


def test_map_loads_and_uses_only_known_specialties():
    m = load_map()
    assert {s for r in m.rows for s in r.specialties} <= set(SPECIALTIES)
    assert {s for r in m.rows for s in r.specialties} == set(SPECIALTIES)  # every specialty is reachable
    assert len(SPECIALTIES) == 15


def test_map_lookups():
    m = load_map()
    assert m.icd10cm("ICD10CM:I21.9")[0] == ("Cardiology",)
    assert m.icd10cm("I63.9")[0] == ("Neurology",)  # cerebrovascular block overrides the circulatory chapter
    assert m.icd10cm("O14")[0] == ("Obstetrics and gynecology",)
    assert "Pediatrics" in m.icd10cm("P07.3")[0]
    assert m.icd10cm("H40.9")[0] == ()  # eye: no S-MedQA specialty
    assert m.hpo("HP:0001250")[0] == ("Neurology",)  # seizure
    assert m.hpo("HP:0000716")[0] == ("Psychiatry",)  # depression
    assert m.keywords("neonatal jaundice")[0] == ("Pediatrics",)
    assert "Emergency medicine" in m.keywords("opioid overdose")[0]


def test_map_rejects_unknown_specialty(tmp_path):
    p = tmp_path / "map.csv"
    p.write_text("source,key,specialties,label,note\nicd10cm,9,Cardiologgy,x,\n")
    with pytest.raises(ValueError, match="line 2: unknown specialty 'Cardiologgy'"):
        SpecialtyMap.load(p)
    p.write_text("source,key,specialties\nwhatever,9,Cardiology\n")
    with pytest.raises(ValueError, match="unknown source"):
        SpecialtyMap.load(p)


def test_none_rows_block_the_ccsr_fallback():
    m = load_map()
    assert m.icd10cm("E53.8")[0] == ()  # nutritional deficiency: "none", even where CCSR says END
    assert m.icd10cm("R51.9")[0] in ((), ("Neurology",))  # symptoms chapter: empty, CCSR may decide


def test_a_key_mapped_twice_to_other_specialties_is_an_error(tmp_path):
    """A repeated (source, key) row silently replaced the earlier one (last wins); one with other
    specialties is an error naming the file, both lines and the key, an identical repeat is accepted."""
    p = tmp_path / "map.csv"
    head = "source,key,specialties,label,note\n"
    p.write_text(head + "icd10cm,I21,Cardiology,MI,\n# a comment\nicd10cm,I21,Neurology,MI again,\n")
    with pytest.raises(ValueError) as info:
        SpecialtyMap.load(p)
    msg = str(info.value)
    assert msg == (
        f"{p}: line 4: icd10cm key 'I21' is mapped again, to Neurology, but already to Cardiology (line 2); "
        "keep one row per key"
    )
    p.write_text(head + "hpo,HP:0001250,Neurology,,\nhpo,HP:0001250,none,,\n")
    with pytest.raises(ValueError, match=r"line 3: hpo key 'HP:0001250' is mapped again, to none, but already"):
        SpecialtyMap.load(p)
    p.write_text(head + "keyword,\\bneonat,Pediatrics,a,\nkeyword,\\bneonat,Pediatrics;Neurology,b,\n")
    with pytest.raises(ValueError, match=r"line 3: keyword key '\\\\bneonat'"):
        SpecialtyMap.load(p)
    p.write_text(
        head + "icd10cm,I21,Cardiology;Emergency medicine,MI,\nicd10cm, I21 ,Cardiology; Emergency medicine,x,\n"
    )
    m = SpecialtyMap.load(p)
    assert len(m.rows) == 1 and m.icd10cm("I21.9")[0] == ("Cardiology", "Emergency medicine")
    with pytest.raises(ValueError, match="<memory>: icd10cm key 'I21' is mapped again"):
        SpecialtyMap([*m.rows, MapRow("icd10cm", "I21", ("Neurology",))])


def test_the_shipped_map_has_one_row_per_key():
    m = load_map()
    assert len({(r.source, r.key) for r in m.rows}) == len(m.rows)


def test_terms_build_names_a_conflicting_specialty_map_row(tmp_path, capsys):
    """`--specialty-map` with a key mapped twice: exit 2 with one line naming the file, line and key,
    before any extraction."""
    import json

    from specprobe.app.cli import main

    data = tmp_path / "qa.json"
    data.write_text(
        json.dumps([{"Question": "Chest pain?", "Specialty": "Cardiology", "Options": ["a", "b"], "Answer": "a"}])
    )
    bad = tmp_path / "map.csv"
    bad.write_text("source,key,specialties\nicd10cm,I21,Cardiology\nicd10cm,I21,Neurology\n")
    out = tmp_path / "lex.json"
    assert main(["terms", "build", str(data), "--out", str(out), "--specialty-map", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{bad}: line 3: icd10cm key 'I21' is mapped again" in err and len(err.splitlines()) == 1, err
    assert not out.exists()
