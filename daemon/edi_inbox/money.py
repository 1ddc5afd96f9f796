"""Exact money: a decimal context in which additions and products never
round (digits grow as needed), and sums made in it.

Python's default context keeps 28 significant digits; an order's total, a
job's, and the sums ``stats`` shows are all made here, so that the record,
the ERP's body and the totals never disagree about the same money. Only
division or quantize could round: the one division (``PRICE_BASIS_UNITS``,
by 100 or 1000) only moves the decimal point.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

EXACT = decimal.Context(
    prec=decimal.MAX_PREC,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[decimal.InvalidOperation, decimal.Overflow, decimal.DivisionByZero],
)


def as_text(value: Decimal | None) -> str | None:
    """Money (or a quantity) as JSON and people read it: a plain decimal
    string, never exponent text (``0.000000125``, not ``1.25E-7`` as ``str``
    writes it); None stays None."""
    return None if value is None else format(value, "f")


def exact_sum(amounts: Iterable[Any]) -> Decimal:
    """The exact sum of ``amounts`` (Decimals, or their text as a database
    returns it; None adds nothing)."""
    total = Decimal(0)
    for amount in amounts:
        if amount is not None:
            exact = amount if isinstance(amount, Decimal) else Decimal(str(amount))
            total = EXACT.add(total, exact)
    return total
