"""Abbreviation rules of the offline matcher: which tokens are abbreviations, and which short ones may be terms.

An abbreviation of up to `SHORT_MAX` characters is ambiguous out of context ("VMA" is vanillylmandelic acid in a
urine test, vitreomacular adhesion in HPO; "ASD" is an atrial septal defect or autism). Such an abbreviation is a
term only when the text defines it ("... transient ischemic attack (TIA) ...") or it is in the curated list
`specprobe/data/terms/abbreviations.csv`, which names the long form it stands for. Abbreviations are matched
case-sensitively (a plural "s" aside: "TRAbs" ~ "TRAb"), so an ordinary word in capitals is not one of them.
"""

from __future__ import annotations

import csv
import functools
import re
from importlib import resources

SHORT_MAX = 4
# 2-6 letters/digits starting with a letter, with a capital and at least two capitals or digits: "COPD", "MI",
# "S3", "TRAb", "HbA1c" (not "Hb": one capital; not "McArdle": 7 characters)
_ABBREV = re.compile(r"^(?=.*[A-Z])(?=(?:[^A-Z0-9]*[A-Z0-9]){2})[A-Za-z][A-Za-z0-9]{1,5}$")


def is_abbreviation(token: str) -> bool:
    """True for a token written as an abbreviation (see `_ABBREV`)."""
    return bool(_ABBREV.match(token))


def abbreviation_key(token: str) -> str:
    """The form abbreviations are compared in: the token, less a final lower-case plural "s" ("TRAbs" -> "TRAb")."""
    if token.endswith("s") and is_abbreviation(token[:-1]):
        return token[:-1]
    return token


def is_short(token: str) -> bool:
    """An abbreviation short enough to be ambiguous out of context (see the module docstring)."""
    return len(abbreviation_key(token)) <= SHORT_MAX


@functools.lru_cache(maxsize=4)
def curated_abbreviations(path: str | None = None) -> dict[str, str]:
    """The curated list: abbreviation key -> long form (`abbreviations.csv`; lines starting with '#' are comments)."""
    if path is None:
        text = (resources.files("specprobe") / "data" / "terms" / "abbreviations.csv").read_text(encoding="utf-8")
    else:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    rows = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    out = {}
    for rec in csv.DictReader(rows):
        short, long = rec["abbreviation"].strip(), rec["long_form"].strip()
        if not is_abbreviation(short) or not long:
            raise ValueError(f"abbreviations list: {short!r} is not an abbreviation with a long form")
        out[abbreviation_key(short)] = long
    return out
