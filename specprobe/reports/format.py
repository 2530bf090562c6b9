"""Numbers for reading: one formatting rule for every table, finding and reading on a report page.

Tables used to mix `0.08861` with `2.496e-07`; a reader compares magnitudes at a glance only when every
number has the same form. Here: 3 significant digits in plain decimal notation (never an exponent),
p-values as `<0.001` below one in a thousand, a sign where the number is a change.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

DIGITS = 3
P_FLOOR = 0.001
#: the significance level of every mark and finding's wording (heatmap asterisks, "significant")
ALPHA = 0.05
MISSING = "–"


def _finite(value: Any) -> float | None:
    """`value` as a finite float, or None (missing, NaN, infinite or not a number)."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def number(value: Any, *, digits: int = DIGITS, signed: bool = False) -> str:
    """`value` with `digits` significant digits in plain decimal notation (12345 -> "12345",
    0.000012345 -> "0.0000123", 0.08861 -> "0.0886"); `signed`: a leading + on positive values."""
    v = _finite(value)
    if v is None:
        return MISSING
    if v == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(v))))
    text = f"{v:+.{decimals}f}" if signed else f"{v:.{decimals}f}"
    if float(text) == 0:  # rounding reached zero: drop the sign of "-0.00"
        text = text.lstrip("+-")
    return text


def p_value(value: Any) -> str:
    """A p-value: "<0.001" below 0.001, else 3 significant digits (0.0123, 0.5, 1), with more digits
    where 3 would round a p below `ALPHA` up to it: 0.04996 reads "0.04996", not a significant "0.0500"."""
    v = _finite(value)
    if v is None:
        return MISSING
    if v < P_FLOOR:
        return f"<{P_FLOOR}"
    digits = DIGITS
    text = number(v, digits=digits)
    while v < ALPHA <= float(text) and digits < 17:
        digits += 1
        text = number(v, digits=digits)
    return text


def is_p_column(name: str) -> bool:
    """Whether a table column holds p-values (p, p_value, p_holm, p_perm, ...)."""
    n = str(name).lower()
    return n == "p" or n.startswith("p_") or n.endswith("_p")


def is_count_column(name: str) -> bool:
    """Whether a table column holds counts (n, n_texts, n_pairs, count, ...): whole numbers even where a
    missing cell made the column float."""
    n = str(name).lower()
    return n in ("n", "count") or n.startswith("n_")


def cell_text(value: Any, column: str = "") -> str:
    """A table cell's number as shown: p-values by `p_value`, counts as whole numbers, other floats by
    `number`, ints as they are."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if is_count_column(column) and isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return p_value(value) if is_p_column(column) else number(value)


def exact(value: float) -> str:
    """A float in full precision without an exponent (metadata: a learning rate of 1e-05 reads 0.00001)."""
    v = _finite(value)
    if v is None:
        return MISSING
    return np.format_float_positional(v, trim="-")


def interval(mean: Any, low: Any, high: Any, *, signed: bool = True) -> str:
    """ "+0.0123 [0.00500, 0.0201]", or the mean alone when the interval is missing."""
    m = number(mean, signed=signed)
    if _finite(low) is None or _finite(high) is None:
        return m
    return f"{m} [{number(low, signed=signed)}, {number(high, signed=signed)}]"
