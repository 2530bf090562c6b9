"""scispaCy backend: `en_core_sci_sm`/`en_core_sci_md` NER plus the scispaCy EntityLinker (UMLS, MeSH, ...).

Neither the models nor the linker files are on PyPI, and nothing here downloads: the model is loaded from a
local path, and the linker is built from local files (scispaCy's name-based loader calls the network even when
its cache is full), so a missing file fails at once with a message naming it.

Paths (argument, else environment variable):

- ``model``      / ``SPECPROBE_SCISPACY_MODEL``:  the unpacked model folder (the one with ``config.cfg``).
- ``linker_dir`` / ``SPECPROBE_SCISPACY_LINKER``: a folder with ``nmslib_index.bin``,
  ``tfidf_vectorizer.joblib``, ``tfidf_vectors_sparse.npz`` and ``concept_aliases.json``.
- ``kb_path``     / ``SPECPROBE_SCISPACY_KB``:     the knowledge base ``.jsonl`` (e.g. ``umls_2022_ab_cat0129.jsonl``);
  default: the one ``.jsonl`` file in ``linker_dir``.

Without a linker folder the backend still runs NER alone (concept id = ``""``, source ``"scispacy-ner"``)
when ``require_linker=False``.

A mention's term key (`term_key`) follows the offline backend's abbreviation rule: an abbreviation is
case-sensitive ("MS" is not "ms", "AIDS" is not "aids"); any other surface is lower-cased. An abbreviation
the text defines ("pulmonary embolism (PE)") counts for its long form's term, as in the offline backend
(`Mention.abbreviation_of` names the long form).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .abbreviations import abbreviation_key, is_abbreviation
from .base import Mention, as_text_list, iter_progress

ENV_MODEL = "SPECPROBE_SCISPACY_MODEL"
ENV_LINKER = "SPECPROBE_SCISPACY_LINKER"
ENV_KB = "SPECPROBE_SCISPACY_KB"
LINKER_FILES = ("nmslib_index.bin", "tfidf_vectorizer.joblib", "tfidf_vectors_sparse.npz", "concept_aliases.json")


class MissingResourceError(FileNotFoundError):
    """A model or linker file the scispaCy backend needs is absent; the message names it and how to supply it."""


def resolve_paths(
    model: str | os.PathLike | None = None,
    linker_dir: str | os.PathLike | None = None,
    kb_path: str | os.PathLike | None = None,
    require_linker: bool = True,
) -> dict:
    """Check the local files and return {"model": Path, "linker_dir": Path|None, "kb": Path|None}.

    Raises `MissingResourceError` naming every missing piece (no network access is attempted)."""
    model = model or os.environ.get(ENV_MODEL)
    linker_dir = linker_dir or os.environ.get(ENV_LINKER)
    kb_path = kb_path or os.environ.get(ENV_KB)
    problems: list[str] = []
    model_path = Path(model) if model else None
    if model_path is None:
        problems.append(
            f"no scispaCy model given: pass --scispacy-model PATH or set ${ENV_MODEL} to the unpacked "
            "en_core_sci_sm/en_core_sci_md folder (the one containing config.cfg)"
        )
    elif not (model_path / "config.cfg").is_file():
        nested = sorted(model_path.glob("*/config.cfg")) if model_path.is_dir() else []
        if nested:
            model_path = nested[0].parent
        else:
            problems.append(f"scispaCy model not found: {model_path} has no config.cfg")
    linker_path = Path(linker_dir) if linker_dir else None
    kb = Path(kb_path) if kb_path else None
    if linker_path is None:
        if require_linker:
            problems.append(
                f"no linker folder given: pass --linker-dir PATH or set ${ENV_LINKER} to a folder with "
                f"{', '.join(LINKER_FILES)}"
            )
    elif not linker_path.is_dir():
        problems.append(f"linker folder not found: {linker_path}")
    else:
        missing = [f for f in LINKER_FILES if not (linker_path / f).is_file()]
        if missing:
            problems.append(f"linker folder {linker_path} lacks {', '.join(missing)}")
        if kb is None:
            found = sorted(linker_path.glob("*.jsonl"))
            if len(found) == 1:
                kb = found[0]
            else:
                problems.append(
                    f"no knowledge base file: pass --kb PATH or set ${ENV_KB} "
                    f"({len(found)} .jsonl files in {linker_path})"
                )
    if kb is not None and not kb.is_file():
        problems.append(f"knowledge base file not found: {kb}")
    if problems:
        raise MissingResourceError("scispaCy backend: " + "; ".join(problems))
    return {"model": model_path, "linker_dir": linker_path, "kb": kb}


def term_key(surface: str) -> str:
    """The term key a mention counts for: an abbreviation (`abbreviations.is_abbreviation`) as written, less
    a plural "s" ("MS", "TRAbs" -> "TRAb"), so that it never merges with an ordinary word ("ms", "aids");
    any other surface lower-cased ("Myocardial infarction" -> "myocardial infarction")."""
    return abbreviation_key(surface) if is_abbreviation(surface) else surface.lower()


class ScispacyExtractor:
    """NER + entity linking with local scispaCy resources (see the module docstring)."""

    name = "scispacy"

    def __init__(
        self,
        model: str | None = None,
        linker_dir: str | None = None,
        kb_path: str | None = None,
        require_linker: bool = True,
        threshold: float = 0.8,
        source: str = "umls",
    ) -> None:
        paths = resolve_paths(model, linker_dir, kb_path, require_linker)
        import scispacy.abbreviation  # noqa: F401  (registers the factory)
        import spacy

        self.nlp = spacy.load(paths["model"])
        if "abbreviation_detector" not in self.nlp.pipe_names:
            self.nlp.add_pipe("abbreviation_detector")
        self.linker = None
        self.source = source
        if paths["linker_dir"] is not None:
            self.linker = _local_linker(paths["linker_dir"], paths["kb"], threshold)

    @classmethod
    def from_pipeline(cls, nlp, linker=None, source: str = "umls") -> ScispacyExtractor:
        """An extractor around a spaCy pipeline that is already loaded (its `doc.ents` are the mentions)
        and an optional scispaCy `EntityLinker`: no files are read."""
        self = cls.__new__(cls)
        self.nlp, self.linker, self.source = nlp, linker, source
        return self

    def _mentions(self, doc) -> list[Mention]:
        out = []
        for ent in doc.ents:
            long = _long_form(ent)
            cid, name, ids = "", long or ent.text, ()
            if self.linker is not None:
                cands = ent._.kb_ents
                if cands:
                    ids = tuple(c for c, _ in cands)
                    cid = ids[0]
                    name = self.linker.kb.cui_to_entity[cid].canonical_name
            out.append(
                Mention(
                    ent.text,
                    ent.start_char,
                    ent.end_char,
                    name,
                    cid,
                    self.source if cid else "scispacy-ner",
                    ids,
                    term_key(long or ent.text),
                    long,
                )
            )
        return out

    def extract(self, text: str) -> list[Mention]:
        return self.extract_many([text])[0]

    def extract_many(self, texts: Sequence[str], progress: bool = False) -> list[list[Mention]]:
        texts = as_text_list(texts)
        docs = self.nlp.pipe(texts, batch_size=32)
        docs = iter_progress(docs, len(texts), progress, "extracting terms (scispaCy)")
        return [self._link(d) for d in docs]

    def _link(self, doc) -> list[Mention]:
        if self.linker is not None:
            doc = self.linker(doc)
        return self._mentions(doc)


def _long_form(ent) -> str | None:
    """The long form of an entity that is an abbreviation defined in its text ("... pulmonary embolism (PE)":
    every "PE" -> "pulmonary embolism"), as scispaCy's AbbreviationDetector marks it; None otherwise. The
    mention then counts for its long form's term, as in the offline backend."""
    from spacy.tokens import Span

    long = ent._.long_form if Span.has_extension("long_form") else None
    return None if long is None else getattr(long, "text", str(long))


def _local_linker(linker_dir: Path, kb_path: Path, threshold: float):
    """An EntityLinker built from local files only (no `cached_path` download)."""
    import json

    import joblib
    from scispacy.candidate_generation import CandidateGenerator, LinkerPaths, load_approximate_nearest_neighbours_index
    from scispacy.linking import EntityLinker
    from scispacy.linking_utils import KnowledgeBase

    paths = LinkerPaths.from_directory(linker_dir)
    ann_index = load_approximate_nearest_neighbours_index(paths)
    vectorizer = joblib.load(paths.tfidf_vectorizer)
    with open(paths.concept_aliases_list, encoding="utf-8") as fh:
        aliases = json.load(fh)
    kb = KnowledgeBase(str(kb_path))
    cg = CandidateGenerator(ann_index=ann_index, tfidf_vectorizer=vectorizer, ann_concept_aliases_list=aliases, kb=kb)
    return EntityLinker(
        candidate_generator=cg, resolve_abbreviations=True, threshold=threshold, max_entities_per_mention=1
    )
