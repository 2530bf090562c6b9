"""The lexicon's clinical rules: abbreviations, the canonical concept of a match, cross-specialty HPO branches,
synonym corrections, and the audits in `specprobe/data/terms/` kept consistent with the builder."""

import importlib.util
from pathlib import Path

import pytest

from specprobe.terms import ontology
from specprobe.terms.datasets import default_data_path
from specprobe.terms.extract import canonical
from specprobe.terms.extract.abbreviations import abbreviation_key, curated_abbreviations, is_abbreviation, is_short
from specprobe.terms.extract.offline import OfflineExtractor, default_offline_extractor
from specprobe.terms.ontology import Concept, SynonymFix, apply_synonym_fixes
from specprobe.terms.specialties import MapRow, SpecialtyMap, load_map

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def offline():
    return default_offline_extractor()


def _tiny(*concepts: Concept) -> OfflineExtractor:
    return OfflineExtractor(concepts=list(concepts))


def _surfaces(ex: OfflineExtractor, text: str) -> list[str]:
    return [m.surface for m in ex.extract(text)]


# ------------------------------------------------------------------------------------------ abbreviations


def test_abbreviation_shapes():
    assert all(is_abbreviation(t) for t in ("COPD", "MI", "S3", "TRAb", "TRAbs", "HbA1c"))
    assert not any(is_abbreviation(t) for t in ("Hb", "Pain", "McArdle", "copd", "12"))
    assert abbreviation_key("TRAbs") == "TRAb" and abbreviation_key("AIDS") == "AIDS"
    assert is_short("TRAbs") and is_short("VMA") and not is_short("STEMI")


def test_short_abbreviation_not_defined_in_text_is_not_a_term(offline):
    assert offline.lookup("vitreomacular adhesion")  # the ontology lists "VMA" for it ...
    assert "VMA" not in _surfaces(offline, "Urinary VMA was elevated.")  # ... but here it is vanillylmandelic acid


def test_short_mixed_case_abbreviation_matches_only_exactly_and_long():
    ex = _tiny(Concept("X:1", "Thyroid receptor antibody", "hpo", ("Thyroid receptor antibody", "TRAb")))
    assert _surfaces(ex, "Her trab level and TRAb level were high.") == []  # lower case: a word; exact: too short
    ms = ex.extract("Thyroid receptor antibodies (TRAb) were found. TRAb fell.")
    assert [m.surface for m in ms] == ["Thyroid receptor antibodies", "TRAb", "TRAb"]
    assert len({m.norm for m in ms}) == 1  # the abbreviation counts for its long form


def test_longer_abbreviation_matches_exactly_only():
    ex = _tiny(Concept("X:2", "Glycated hemoglobin", "hpo", ("Glycated hemoglobin", "HbA1c")))
    assert _surfaces(ex, "Her HbA1c was 9%.") == ["HbA1c"]
    assert _surfaces(ex, "Her HBA1C was 9%. Her hba1c was 9%.") == []


def test_abbreviation_in_text_is_not_an_ordinary_word():
    ex = _tiny(Concept("X:3", "Crisis", "hpo", ("Crisis",)))
    assert _surfaces(ex, "The CRISIS score was low.") == []
    assert _surfaces(ex, "A crisis occurred.") == ["crisis"]


def test_curated_abbreviation_takes_its_long_forms_concept(offline):
    (ocd,) = offline.extract("She has a history of OCD.")
    (long,) = offline.extract("She has obsessive-compulsive disorder.")
    assert ocd.concept_id == long.concept_id and ocd.canonical == "Obsessive-compulsive disorder"
    assert ocd.norm == "ocd" and ocd.abbreviation_of is None  # a term of its own, so it can be found in texts


def test_every_curated_abbreviation_names_a_concept(offline):
    missing = [(s, lf) for s, lf in curated_abbreviations().items() if not offline.lookup(lf)]
    assert not missing, f"curated long forms naming no concept: {missing}"
    assert all(is_short(s) for s in curated_abbreviations())


def test_abbreviation_defined_in_text_agreeing_with_the_ontology(offline):
    ms = offline.extract("A raised titer of TSH receptor autoantibodies (TRAbs) was found.")
    trab = [m for m in ms if m.surface == "TRAbs"]
    assert trab and trab[0].concept_id == "HP:0034189"


# ------------------------------------------------------------------------------------------ canonical concept

GENERAL = Concept("X:10", "Lichen", "hpo", ("Lichen",))
SPECIFIC = Concept("X:11", "Lichen simplex chronicus", "hpo", ("Lichen simplex chronicus", "Lichen"))


def test_adds_qualifiers():
    assert canonical.adds_qualifiers("Lichen simplex chronicus", "Lichen")
    assert not canonical.adds_qualifiers("Rhinorrhea", "Runny nose")
    assert not canonical.adds_qualifiers("Lichen", "Lichen")


def test_more_general_concept_is_canonical():
    concept, name = canonical.choose([(SPECIFIC, "Lichen"), (GENERAL, "Lichen")], "lichen")
    assert concept is GENERAL and name == "Lichen"


def test_over_specific_concept_alone_shows_the_matched_string():
    concept, name = canonical.choose([(SPECIFIC, "Lichen")], "lichen")
    assert concept is SPECIFIC and name == "Lichen"


def test_untitled_icd_code_and_nos_inclusion_show_the_matched_string():
    untitled = Concept("ICD10CM:T14.8", "Other injury of unspecified body region", "icd10cm", ("Abrasion", "Fracture"))
    assert canonical.choose([(untitled, "Fracture")], "fractur")[1] == "Fracture"
    nos = Concept(
        "ICD10CM:A05.1", "Botulism food poisoning", "icd10cm", ("Botulism food poisoning", "Botulism"), ("Botulism",)
    )
    assert canonical.choose([(nos, "Botulism")], "botulism")[1] == "Botulism"
    titled = Concept("ICD10CM:I10", "Essential (primary) hypertension", "icd10cm", ("Essential hypertension",))
    assert (
        canonical.choose([(titled, "Essential hypertension")], "essential hypertension")[1] == "Essential hypertension"
    )


def test_real_dictionary_canonicals(offline):
    got = {m.surface: m.canonical for m in offline.extract("A fracture, lichen and botulism.")}
    assert got == {"fracture": "Fracture", "lichen": "Lichen", "botulism": "Botulism"}


def test_an_eponym_titled_concept_is_canonical(offline):
    """A title with an apostrophe was normalised "bell ' s palsy" against the entry's "bell 's palsy", so the
    concept titled "Bell's palsy" lost to HPO "Facial palsy" (likewise Horner's, Barrett's, Ebstein's)."""
    text = "Bell's palsy, Horner\u2019s syndrome and Barrett's esophagus."
    got = [(m.canonical, m.concept_id) for m in offline.extract(text)]
    assert got == [
        ("Bell's palsy", "ICD10CM:G51.0"),
        ("Horner's syndrome", "ICD10CM:G90.2"),
        ("Barrett's esophagus", "ICD10CM:K22.7"),
    ]


# ------------------------------------------------------------------------------------------ HPO branches


def test_none_row_blocks_a_cross_specialty_branch_and_sub_branches_still_apply():
    rows = [
        MapRow("hpo", "HP:0000707", ("Neurology",)),  # nervous system
        MapRow("hpo", "HP:0011446", (), final=True),  # mental function: crosses neurology and psychiatry
        MapRow("hpo", "HP:0034434", ("Neurology",)),  # abnormal communication
    ]
    m = SpecialtyMap(rows)
    assert m.hpo("HP:0002381")[0] == ("Neurology",)  # aphasia: through the sub-branch
    assert m.hpo("HP:0000716")[0] == ()  # depression: not neurology through the nervous system
    assert m.hpo("HP:0001250")[0] == ("Neurology",)  # seizure: outside the blocked branch


@pytest.mark.parametrize(
    "branch",
    ["HP:0011446", "HP:0002960", "HP:0003549", "HP:0011029", "HP:0001005", "HP:0008047", "HP:0000745"],
)
def test_cross_specialty_branches_give_no_specialty(branch):
    row = load_map()._by["hpo"][branch]
    assert row.final and row.specialties == ()


@pytest.mark.parametrize(
    "term_id, expected",
    [
        ("HP:0002381", ("Neurology",)),  # aphasia, not psychiatry
        ("HP:0000870", ("Endocrinology",)),  # hyperprolactinemia, not neurology (pituitary under brain morphology)
        ("HP:0034189", ("Endocrinology",)),  # TSH receptor antibody, not rheumatology (autoimmunity)
        ("HP:0003454", ("Hematology",)),  # platelet antibody
        ("HP:0003493", ("Rheumatology",)),  # antinuclear antibody
        ("HP:0002138", ("Neurology",)),  # subarachnoid hemorrhage, not hematology or cardiology
    ],
)
def test_hpo_terms_land_in_one_specialty(term_id, expected):
    assert load_map().hpo(term_id)[0] == expected


def test_obstetric_and_eye_findings():
    m = load_map()
    placenta_previa = next(c.id for c in ontology.hpo_concepts() if c.name == "Placenta previa")
    assert m.hpo(placenta_previa)[0] == ("Obstetrics and gynecology",)
    assert m.hpo("HP:0000509")[0] == ()  # conjunctivitis: eye, not cardiology through its vessels
    assert "Pediatrics" in m.hpo("HP:0001622")[0]  # premature birth is also pediatric


# ------------------------------------------------------------------------------------------ synonym fixes


def test_synonym_fixes_drop_and_add():
    c = Concept("HP:1", "Confusional arousal", "hpo", ("Confusional arousal", "Unresponsive"))
    d = Concept("HP:2", "Reduced consciousness", "hpo", ("Reduced consciousness",))
    fixes = (SynonymFix("drop", "HP:1", "unresponsive", "r"), SynonymFix("add", "HP:2", "Unresponsive", "r"))
    out = apply_synonym_fixes((c, d), fixes)
    assert out[0].synonyms == ("Confusional arousal",) and out[1].synonyms[-1] == "Unresponsive"


def test_synonym_fixes_reject_unknown_action(tmp_path):
    p = tmp_path / "fixes.csv"
    p.write_text("action,concept_id,synonym,reason\nremove,HP:1,x,y\n")
    with pytest.raises(ValueError, match="action must be"):
        ontology.load_synonym_fixes(str(p))


def test_unresponsive_is_reduced_consciousness(offline):
    (m,) = offline.extract("She was unresponsive.")
    assert m.canonical == "Reduced consciousness"


# ------------------------------------------------------------------------------------------ audits


def _audit_module():
    path = REPO / "scripts" / "audit_lexicon.py"
    if not path.exists():
        pytest.skip("scripts/ not available (installed package)")
    spec = importlib.util.spec_from_file_location("audit_lexicon", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.data
@pytest.mark.skipif(
    not default_data_path().exists(),
    reason=f"S-MedQA data not found at {default_data_path()} (set $SPECPROBE_SMEDQA)",
)
def test_audits_match_the_current_lexicon():
    """The audited items are still the top terms / the seeded sample, mapped as recorded, each with a verdict
    (and a reason when incorrect): a rule change that moves them fails here until the audit is redone."""
    audit = _audit_module()
    lex = audit.load_lexicon(default_data_path())
    concepts = audit.read_audit(audit.AUDIT_DIR / audit.CONCEPTS_FILE)
    pairs = audit.read_audit(audit.AUDIT_DIR / audit.SPECIALTY_FILE)
    assert len(concepts) == audit.N_CONCEPTS and len(pairs) == audit.N_PAIRS
    problems = audit.drift(lex, concepts, pairs)
    assert not problems, "\n".join(problems[:20])


def test_hash_sample_is_stable_when_the_population_changes_a_little():
    audit = _audit_module()
    pairs = [(f"term {i}", "Cardiology") for i in range(500)]
    first = audit.sample_pairs(pairs, 50, seed=7)
    assert len(set(first)) == 50 and audit.sample_pairs(list(reversed(pairs)), 50, seed=7) == first
    grown = audit.sample_pairs([*pairs, ("one more", "Neurology")], 50, seed=7)
    assert len(set(first) - set(grown)) <= 1  # at most the one new pair displaces one old pair
    assert audit.sample_pairs(pairs, 50, seed=8) != first


@pytest.mark.parametrize(
    ("text", "term", "specialties"),
    [
        # the age-word rule on a bare "colic" made biliary colic (S-MedQA, Gastroenterology) a pediatric term
        ("Her biliary colic recurred after meals.", "colic", {"Gastroenterology"}),
        # "injury" made an organ's acute injury an emergency term (AKI written out, not as "AKI")
        ("He developed acute kidney injury.", "acute kidney injury", {"Nephrology"}),
        # missing spellings matched the shorter term: "shock", "stroke", "stress" (Z73.3)
        ("She is in septic shock.", "septic shock", {"Infectious diseases", "Emergency medicine"}),
        ("He collapsed with heat stroke.", "heat stroke", {"Emergency medicine"}),
        ("Posttraumatic stress disorder was diagnosed.", "posttraumatic stress disorder", {"Psychiatry"}),
    ],
)
def test_keyword_rules_and_spellings_give_the_terms_their_specialties(offline, text, term, specialties):
    smap = load_map()
    found = {m.surface.lower(): m for m in offline.extract(text)}
    assert term in found, sorted(found)
    assert set(smap.ontology_specialties(found[term].concept_ids, term)[0]) == specialties
