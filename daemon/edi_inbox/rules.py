"""Business rules for a purchase order: what the ERP may rely on.

``validate(po)`` returns every problem at once (a partner fixes a file in one
go, not one round trip per mistake), in document order. Each ``Problem`` has a
stable ``code``, a message the partner can act on, and, where known, the PO
number, line number, segment number (counted from the ISA), segment id and
element position, so the 997 can point at it.

Codes:

- ``missing_beg``: no BEG segment (the problem points at the segment after
  the ST, where it belonged: the 997 says AK3 BEG there with AK304 3).
- ``missing_po_number``: BEG03 empty.
- ``missing_date``: BEG05 empty.
- ``invalid_date``: BEG05 or a DTM02 (order or line) is not a real date
  (``CCYYMMDD``, or ``YYMMDD`` as older versions wrote it).
- ``invalid_time``: a DTM03 (order or line) is not a real time (``HHMM``,
  ``HHMMSS``, ``HHMMSSD`` or ``HHMMSSDD``, up to 235959): 2460, 2400.
- ``no_lines``: no PO1 segment (pointing at the CTT, else the SE, where the
  lines belonged: AK3 PO1 with AK304 3).
- ``missing_quantity``: PO102 empty.
- ``not_numeric``: PO102, PO104, CTT01, AMT02 or SAC05 is not an X12 number.
- ``quantity_not_positive``: PO102 is 0 or negative.
- ``negative_unit_price``: PO104 below 0. A missing PO104 is allowed: the line
  takes its price from a CTP (``orders.CTP_PRICE_CODES``), or the ERP prices it
  from its catalogue and it adds 0 to the total.
- ``duplicate_line_number``: a PO101 used by an earlier line (blank PO101s are
  not compared).
- ``line_count_mismatch``: CTT01 differs from the number of PO1 segments.
- ``unknown_segment``: a segment whose id is no 850's (``orders.SEGMENTS_850``:
  ``P01`` typed for ``PO1``, an 810's ``IT1``): the order would go on
  without what it says (997 AK304 6, segment not in the set).
- ``misplaced_segment``: a segment out of place, not read where it stands
  (997 AK304 2, unexpected segment): after the CTT anything but an AMT (a
  ``CUR``, a ``PO1``), a BEG after the lines, a line's CUR after its loops,
  a segment of a loop outside it (an N3 with no N1 before it:
  ``orders.IN_LOOP_ONLY``), a segment the header holds only inside a loop
  outside one (an MSG with no N9, an FA1 with no AMT:
  ``orders.HEADER_IN_LOOP_ONLY``), a line's segment in the header (a PO3,
  an LS: ``orders.LINE_ONLY``).
  At most ``orders.MAX_NOTED`` unknown or misplaced segments are named.
- ``segment_out_of_sequence``: a header segment sent after one the 850's
  header puts later (a BEG after a DTM, a REF after a DTM: the order of
  ``orders._HEADER_ORDERS``, by release), read all the same (997 AK304 7,
  segment not in proper sequence). At most ``orders.MAX_NOTED`` are named.
- ``currency_mismatch``: a line's currency (its CUR, or its pricing CTP's)
  is not the order's (the header CUR), or, with no header CUR, not another
  line's: one order's total cannot add two currencies (997 AK4 on CUR02).
- ``price_unit_mismatch``: a line priced by a CTP whose CTP05 names another
  unit than the line's PO103 (48.00 per CA on a line of 24 EA): its price per
  unit ordered is not known, and the ERP would take 48.00 per EA (997 AK4 on
  CTP05). Always an error.
- ``total_mismatch``: an AMT*TT, rounded half-up to the cent, is neither the
  lines' exact total nor the sum of their amounts each rounded to the cent
  (both half-up; see ``_check_totals``), with or without the order's SAC
  charges and allowances; not checked on an order with a line left for the
  ERP to price (no PO104, no counted CTP).
"""

from __future__ import annotations

import dataclasses
import decimal
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal

from .errors import Problem
from .money import EXACT
from .orders import (
    HEADER_IN_LOOP_ONLY,
    IN_LOOP_ONLY,
    LINE_ONLY,
    MAX_NOTED,
    Charge,
    DateReference,
    Line,
    PurchaseOrder,
)
from .x12.values import is_time

CENT = Decimal("0.01")
# Rounds to the cent without ever losing a digit before the point.
_CENTS = decimal.Context(
    prec=decimal.MAX_PREC,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    rounding=ROUND_HALF_UP,
    traps=[decimal.InvalidOperation],
)


def cents(value: Decimal) -> Decimal:
    """``value`` rounded half-up to two decimal places."""
    return value.quantize(CENT, context=_CENTS)


# Rules that judge segments against each other (the lines' count and total,
# one currency, a CTP's unit against its line's): in a set refused for its
# syntax, a segment refused or read past would skew them, so they wait until
# the syntax holds. The others judge a segment by itself, and are told beside
# the syntax errors (the 997 names each broken segment at once).
ACROSS = ("line_count_mismatch", "total_mismatch", "currency_mismatch", "price_unit_mismatch")

# Rules whose level ``[rules]`` sets (error, warn, off); every other code
# (a missing BEG, BEG03 or PO1, a value that is not a number) is always an error.
LEVELLED = (
    "unknown_segment",
    "misplaced_segment",
    "segment_out_of_sequence",
    "currency_mismatch",
    "line_count_mismatch",
    "total_mismatch",
    "quantity_not_positive",
    "duplicate_line_number",
    "invalid_date",
    "invalid_time",
    "missing_date",
    "negative_unit_price",
)


def split(
    problems: list[Problem], levels: Mapping[str, str]
) -> tuple[list[Problem], list[Problem]]:
    """``problems`` as (errors, warnings) under ``levels`` (code -> error, warn
    or off); a code not in ``LEVELLED`` or not in ``levels`` is an error."""
    errors: list[Problem] = []
    warnings: list[Problem] = []
    for problem in problems:
        level = levels.get(problem.code, "error") if problem.code in LEVELLED else "error"
        if level == "warn":
            warnings.append(problem)
        elif level != "off":
            errors.append(problem)
    return errors, warnings


def validate(po: PurchaseOrder) -> list[Problem]:
    """Every business-rule problem of ``po``; an empty list means it may go to the ERP."""
    found = _Problems(po)
    for code, noted, why in (
        ("unknown_segment", po.unknown_segments, "is not a segment of an 850"),
        ("misplaced_segment", po.misplaced_segments, "is out of place"),
    ):
        for n, (tag, number) in enumerate(noted[:MAX_NOTED], 1):
            where = _out_of_place(po, tag, number) if code == "misplaced_segment" else ""
            beyond = n == MAX_NOTED and len(noted) > MAX_NOTED
            more = "; more such segments follow, not listed" if beyond else ""
            found.add(
                code,
                f"segment {tag} (segment {number}) {why}{where}; what it says is not read{more}",
                segment_id=tag,
                segment_number=number,
            )
    for n, (tag, number, after) in enumerate(po.unsequenced_segments[:MAX_NOTED], 1):
        beyond = n == MAX_NOTED and len(po.unsequenced_segments) > MAX_NOTED
        found.add(
            "segment_out_of_sequence",
            f"segment {tag} (segment {number}) comes after {after}, which the 850's header"
            f" puts after it{'; more such segments follow, not listed' if beyond else ''}",
            segment_id=tag,
            segment_number=number,
        )
    _check_header(po, found)
    _check_lines(po, found)
    _check_currencies(po, found)
    _check_charges(po, found)
    _check_totals(po, found)
    return found.done()


# Problems kept of one code an order: a file of 10,000 lines each breaking a
# rule must not cost 10,000 problems, AK3s and report entries. The level is
# the code's, so what is left out changes no decision; the last kept says so.
MAX_ALIKE = 100


class _Problems:
    """Collects problems, filling in the PO number once; at most
    ``MAX_ALIKE`` of a code (``done`` says how many more there were)."""

    def __init__(self, po: PurchaseOrder) -> None:
        self.po_number = po.po_number or None
        self.problems: list[Problem] = []
        self.counts: dict[str, int] = {}

    def done(self) -> list[Problem]:
        """The problems, the last of each code cut short saying how many more."""
        last = {problem.code: i for i, problem in enumerate(self.problems)}
        for code, i in last.items():
            more = self.counts[code] - MAX_ALIKE
            if more > 0:
                message = f"{self.problems[i].message}; and {more} more alike, not listed"
                self.problems[i] = dataclasses.replace(self.problems[i], message=message, more=more)
        return self.problems

    def add(
        self,
        code: str,
        message: str,
        *,
        segment_id: str,
        segment_number: int | None = None,
        element: int | None = None,
        line: Line | None = None,
    ) -> None:
        n = self.counts[code] = self.counts.get(code, 0) + 1
        if n > MAX_ALIKE:
            return
        self.problems.append(
            Problem(
                code=code,
                message=message,
                po_number=self.po_number,
                line_number=(line.number or None) if line is not None else None,
                segment_number=segment_number,
                segment_id=segment_id,
                element=element,
            )
        )


def _out_of_place(po: PurchaseOrder, tag: str, number: int) -> str:
    """Why a segment ``orders.from_transaction`` found misplaced is out of place."""
    if tag == "BEG":
        return " (a BEG after the lines: the header has ended)"
    ctt = po.totals.segment_number if po.totals is not None else None
    if ctt is not None and number > ctt:
        return " (after the CTT an 850 has only AMT)"
    if tag in IN_LOOP_ONLY:
        return f" (it stands in an {IN_LOOP_ONLY[tag]} loop, after its {IN_LOOP_ONLY[tag]})"
    if tag in LINE_ONLY:
        return " (a line's segment, before the first PO1)"
    if tag in HEADER_IN_LOOP_ONLY:
        return f" (in the header it stands only in a loop: {HEADER_IN_LOOP_ONLY[tag]})"
    return " (a line's CUR comes before its loops)"


def _check_header(po: PurchaseOrder, found: _Problems) -> None:
    beg = po.beg_segment_number
    if beg is None:
        if not any(tag == "BEG" for tag, _ in po.misplaced_segments):  # else said so
            found.add(
                "missing_beg",
                "the order has no BEG segment (purchase order number and date)",
                segment_id="BEG",
                segment_number=po.set_segment_number + 1 if po.set_segment_number else None,
            )
    else:
        if not po.po_number.strip():
            found.add(
                "missing_po_number",
                "BEG03 (purchase order number) is empty",
                segment_id="BEG",
                segment_number=beg,
                element=3,
            )
        if not po.date_raw:
            found.add(
                "missing_date",
                "BEG05 (purchase order date) is empty",
                segment_id="BEG",
                segment_number=beg,
                element=5,
            )
        elif po.date is None:
            found.add(
                "invalid_date",
                f"BEG05 (purchase order date) {po.date_raw!r} is not a real date (CCYYMMDD)",
                segment_id="BEG",
                segment_number=beg,
                element=5,
            )
    _check_dates(po.dates, found, prefix="")


def _check_dates(
    dates: tuple[DateReference, ...], found: _Problems, *, prefix: str, line: Line | None = None
) -> None:
    for d in dates:
        if d.date_raw and d.date is None:
            found.add(
                "invalid_date",
                f"{prefix}DTM {d.qualifier} date {d.date_raw!r} is not a real date (CCYYMMDD)",
                segment_id="DTM",
                segment_number=d.segment_number,
                element=2,
                line=line,
            )
        if d.time and not is_time(d.time):
            found.add(
                "invalid_time",
                f"{prefix}DTM {d.qualifier} time {d.time!r} is not a real time (HHMM, HHMMSS,"
                " hours 00-23, minutes and seconds 00-59)",
                segment_id="DTM",
                segment_number=d.segment_number,
                element=3,
                line=line,
            )


def _check_lines(po: PurchaseOrder, found: _Problems) -> None:
    if not po.lines:
        found.add(
            "no_lines",
            "the order has no line items (PO1 segments)",
            segment_id="PO1",
            segment_number=po.summary_segment_number,
        )
    seen: set[str] = set()
    for position, line in enumerate(po.lines, start=1):
        label = f"line {line.number}" if line.number else f"PO1 #{position}"

        def add(code: str, message: str, element: int, line: Line = line) -> None:
            found.add(
                code,
                message,
                segment_id="PO1",
                segment_number=line.segment_number,
                element=element,
                line=line,
            )

        if line.number.strip():
            if line.number in seen:
                add(
                    "duplicate_line_number",
                    f"{label}: line number {line.number!r} (PO101) is used by an earlier line;"
                    " line numbers must be unique",
                    1,
                )
            seen.add(line.number)

        quantity = line.quantity
        if not line.quantity_raw:
            add("missing_quantity", f"{label}: quantity (PO102) is missing", 2)
        elif quantity is None:
            add("not_numeric", f"{label}: quantity {line.quantity_raw!r} is not a number", 2)
        elif quantity <= 0:
            add(
                "quantity_not_positive",
                f"{label}: quantity {line.quantity_raw!r} must be greater than 0",
                2,
            )

        price, raw = line.unit_price, line.unit_price_raw
        if raw:
            segment_id, number, element, said = "PO1", line.segment_number, 4, "unit price"
        else:  # the CTP that prices the line, if any
            raw = line.ctp_price_raw
            segment_id, number, element, said = "CTP", line.ctp_segment_number, 3, "price (CTP03)"
        problem = None
        if raw and price is None:
            problem = ("not_numeric", f"{label}: {said} {raw!r} is not a number")
        elif price is not None and price < 0:
            problem = ("negative_unit_price", f"{label}: {said} {raw!r} must not be negative")
        if problem is not None:
            found.add(
                *problem, segment_id=segment_id, segment_number=number, element=element, line=line
            )

        if line.price_unit.strip().upper() != line.unit.strip().upper():
            found.add(
                "price_unit_mismatch",
                f"{label}: the price {line.ctp_price_raw} (CTP03) is per {line.price_unit}"
                f" (CTP05), the line orders {line.unit or 'no unit'} (PO103): its price per"
                f" {line.unit or 'unit'} is not known; send PO104 or a CTP in the line's unit",
                segment_id="CTP",
                segment_number=line.ctp_segment_number,
                element=5,
                line=line,
            )

        _check_dates(line.dates, found, prefix=f"{label}: ", line=line)


def _check_currencies(po: PurchaseOrder, found: _Problems) -> None:
    """Every line that names a currency names the order's: the header CUR's,
    or, when the header has none, the first such line's."""
    order = po.currency
    for position, line in enumerate(po.lines, start=1):
        if not line.currency:
            continue
        if not order:
            order = line.currency
        elif line.currency != order:
            label = f"line {line.number}" if line.number else f"PO1 #{position}"
            said = "the order's (CUR)" if po.currency else "an earlier line's"
            found.add(
                "currency_mismatch",
                f"{label}: priced in {line.currency!r} (CUR), {said} in {order!r}; one order's"
                " total cannot add two currencies",
                segment_id="CUR",
                segment_number=line.currency_segment_number,
                element=2,
                line=line,
            )


def _check_charges(po: PurchaseOrder, found: _Problems) -> None:
    """Every SAC05 (the order's and its lines') an X12 number: money not read
    is money the ERP would not get."""
    places: list[tuple[str, Line | None, tuple[Charge, ...]]] = [("", None, po.charges)]
    for position, each in enumerate(po.lines, 1):
        label = f"line {each.number}" if each.number else f"PO1 #{position}"
        places.append((f"{label}: ", each, each.charges))
    for where, line, charges in places:
        for charge in charges:
            if charge.amount_raw and charge.amount is None:
                found.add(
                    "not_numeric",
                    f"{where}SAC05 (allowance or charge amount) {charge.amount_raw!r}"
                    " is not a number",
                    segment_id="SAC",
                    segment_number=charge.segment_number,
                    element=5,
                    line=line,
                )


def _check_totals(po: PurchaseOrder, found: _Problems) -> None:
    """CTT01 against the PO1 count; every AMT*TT against the lines' amounts.

    An AMT*TT is accepted when, rounded half-up to the cent, it equals either
    total a sender's system may compute from the same lines (``Line.amount``,
    quantity × unit price on its PO105 basis): the exact sum rounded once to
    the cent, or the sum of the line amounts each rounded to the cent first,
    as invoices and ERPs extend lines (seven lines of 3 × 1.2345 are 25.92
    summed then rounded, 25.90 rounded then summed). Both are the right total
    under one convention; any other amount is a wrong price or a lost line.
    An order with SAC amounts (``PurchaseOrder.charges_total``) may state
    its total with them (freight added, allowances taken off) or without
    (the lines alone): either is accepted.
    """
    totals = po.totals
    if totals is not None:
        count = totals.line_count
        if count is None:
            found.add(
                "not_numeric",
                f"CTT01 (number of line items) {totals.line_count_raw!r} is not a number",
                segment_id="CTT",
                segment_number=totals.segment_number,
                element=1,
            )
        elif count != len(po.lines):
            found.add(
                "line_count_mismatch",
                f"CTT01 says {count} line items but the order has {len(po.lines)} PO1 segments",
                segment_id="CTT",
                segment_number=totals.segment_number,
                element=1,
            )

    if po.total_amount is None or any(not line.price_source for line in po.lines):
        return  # no price, or a line the ERP prices: no lines' total to compare with
    if any(c.indicator in ("A", "C") and c.amount is None for c in po.all_charges):
        return  # a percentage or a rate the ERP applies: no total to compare with
    computed = cents(po.total_amount)
    by_line = Decimal(0)
    for line in po.lines:
        amount = line.amount
        if amount is not None:
            by_line = EXACT.add(by_line, cents(amount))
    shown = str(computed) if by_line == computed else f"{computed} ({by_line} line by line)"
    shown += " (sum of quantity × unit price)"
    accepted = {computed, by_line}
    applied = po.charges_total
    if applied is not None:
        applied = cents(applied)
        accepted |= {EXACT.add(computed, applied), EXACT.add(by_line, applied)}
        shown += f", nor {EXACT.add(computed, applied)} with its allowances and charges (SAC)"
    for amt in po.amounts:
        if amt.qualifier != "TT":
            continue
        declared = amt.amount
        if declared is None:
            found.add(
                "not_numeric",
                f"AMT*TT (total amount) {amt.amount_raw!r} is not a number",
                segment_id="AMT",
                segment_number=amt.segment_number,
                element=2,
            )
        elif cents(declared) not in accepted:
            found.add(
                "total_mismatch",
                f"AMT*TT total {amt.amount_raw} does not match the lines' total {shown}",
                segment_id="AMT",
                segment_number=amt.segment_number,
                element=2,
            )
