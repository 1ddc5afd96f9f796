"""X12 simple data element values: numbers (R, N0), dates (DT) and times (TM).

What a sender may write, read strictly: ``Decimal()`` alone would take "NaN",
"1e5", "+1" and non-ASCII digits, ``datetime`` a 2460 time of its own kind.
Pure functions; ``orders`` reads an 850's elements with them, the reader an
ISA's date and time.
"""

from __future__ import annotations

import datetime as _dt
import re
from decimal import Decimal

# X12 R (decimal) type: digits with an optional leading minus and decimal
# point. ``Decimal()`` alone would also take "NaN", "Infinity", "1e5", "+1",
# "1_000" and non-ASCII digits, none of which an X12 sender may write.
_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_INTEGER = re.compile(r"-?[0-9]+")
_DATE = re.compile(r"[0-9]{6}(?:[0-9]{2})?")
# TM: HHMM, HHMMSS, HHMMSSD or HHMMSSDD; hours 00-23, minutes and seconds 00-59.
_TIME = re.compile(r"(?:[01][0-9]|2[0-3])[0-5][0-9](?:[0-5][0-9][0-9]{0,2})?")

# Six-digit (YYMMDD) years below this are 20YY, the rest 19YY.
CENTURY_PIVOT = 50

# No X12 numeric element has more digits than this (R is at most 18 in the
# 850). A longer count is not a number: ``int`` of 4,301 digits raises, and
# thousands cost time (``Decimal`` has neither problem; ``orders`` refuses a
# longer element anyway).
MAX_NUMBER_CHARS = 20


def parse_decimal(raw: str) -> Decimal | None:
    """The value of an X12 R (or N0) element, or None when it is not one."""
    return Decimal(raw) if _DECIMAL.fullmatch(raw) else None


def parse_integer(raw: str) -> int | None:
    """The value of an X12 N0 element (a count), or None when it is not one
    (or one of over ``MAX_NUMBER_CHARS`` digits past its leading zeros)."""
    if not _INTEGER.fullmatch(raw):
        return None
    sign, significant = ("-", raw[1:].lstrip("0")) if raw[0] == "-" else ("", raw.lstrip("0"))
    return int(sign + (significant or "0")) if len(significant) <= MAX_NUMBER_CHARS else None


def is_number(raw: str) -> bool:
    """Whether ``raw`` is written as an X12 R or N element may be."""
    return _DECIMAL.fullmatch(raw) is not None


def parse_date(raw: str) -> _dt.date | None:
    """``CCYYMMDD`` (or pre-4010 ``YYMMDD``) as a date; None when not a real date."""
    if not _DATE.fullmatch(raw):
        return None
    if len(raw) == 6:
        yy = int(raw[:2])
        year = (2000 if yy < CENTURY_PIVOT else 1900) + yy
        month, day = int(raw[2:4]), int(raw[4:6])
    else:
        year, month, day = int(raw[:4]), int(raw[4:6]), int(raw[6:8])
    try:
        return _dt.date(year, month, day)
    except ValueError:
        return None


def is_time(raw: str) -> bool:
    """Whether ``raw`` is a real X12 time (TM): ``HHMM[SS[D[D]]]``, 0000 to 235959."""
    return _TIME.fullmatch(raw) is not None
