"""JSON text as edi-inbox writes it: compact, non-ASCII kept, money as a
string. What the ERP is sent, the database keeps and the records hold."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

from .money import as_text


def _default(value: Any) -> Any:
    """What JSON cannot hold, as it can: money as a string (never a float),
    dates ISO, sets and tuples as lists, anything else as its text."""
    if isinstance(value, Decimal):
        return as_text(value)
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


# One encoder for every call: json.dumps with options builds a new one each
# time, and a file's records encode about a dozen values.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_default)


def dumps(value: Any) -> str:
    """Compact JSON text, non-ASCII kept, ``Decimal`` as a string: what the
    ERP is sent and the database keeps, encoded once per order."""
    return _ENCODER.encode(value)
