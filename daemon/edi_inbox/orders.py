"""An 850 transaction set as a canonical purchase order.

``from_transaction`` reads the segments the X12 reader hands over into frozen
dataclasses; ``PurchaseOrder.to_json`` is what the ERP receives;
``render.to_x12`` writes an order back as a complete interchange.

Raw strings are kept wherever a business rule must judge them (quantities,
prices, dates, counts): the model never refuses an order, ``rules.validate``
does, with a message that points at the segment and element. Every part
remembers the number of the segment it came from (counted from the ISA, as
``Segment.number``); those numbers are provenance, not content, so they take
no part in equality: an order rendered and read back compares equal.

Money is ``Decimal``, computed exactly: no float, no rounding.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import re
import sys
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any, NamedTuple

from .errors import NotHandledError, SetErrors, X12Error, shorten
from .jsontext import dumps
from .money import EXACT, as_text
from .x12.model import Segment, TransactionSet
from .x12.scan import digits
from .x12.values import (
    MAX_NUMBER_CHARS,
    is_number,
    is_time,
    parse_date,
    parse_decimal,
    parse_integer,
)

# Party codes whose name is the vendor's, best first: vendor, supplier, seller.
VENDOR_CODES = ("VN", "SU", "SE")

# CTP02 price identifiers that give the price the buyer pays per unit (CTP03),
# for a line without PO104, best first: unit cost price (VICS/UCS), contract
# price, net item price. Not counted: RES (the retail price the store will
# sell at, printed on tickets), DIS (a discount), MSR/LPR (list prices).
CTP_PRICE_CODES = ("UCP", "CON", "NET")

# PO105 (basis of unit price, element 639) codes whose PO104 is the price of
# more than one unit, and of how many: HP per hundred, TP per thousand (screws,
# labels, packaging). Any other code (PE per each, CT contract, QT quoted ...)
# or none: PO104 is the price of one unit.
PRICE_BASIS_UNITS = {"HP": 100, "TP": 1000}


def _iso_or_raw(raw: str) -> str:
    parsed = parse_date(raw)
    return parsed.isoformat() if parsed is not None else raw


def _provenance() -> Any:
    """A segment number: kept for pointing at problems, ignored by ``==``."""
    return field(default=None, compare=False)


# --------------------------------------------------------------------- model


class _Part:
    """A part of the order; as JSON, every compared field (provenance left out)."""

    __slots__ = ()

    def to_json(self) -> dict[str, Any]:
        names = _COMPARED.get(type(self))
        if names is None:  # once per class: dataclasses.fields() costs ~1.5 µs a call
            parts = fields(self)  # type: ignore[arg-type]
            names = _COMPARED[type(self)] = tuple(f.name for f in parts if f.compare)
        return {name: _jsonable(getattr(self, name)) for name in names}


_COMPARED: dict[type, tuple[str, ...]] = {}  # a part's class -> the fields its JSON holds


def _jsonable(value: Any) -> Any:
    if value.__class__ is str or value is None:  # most are: asked first
        return value
    if isinstance(value, _Part):
        return value.to_json()
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    return value


@dataclass(frozen=True, kw_only=True, slots=True)
class Envelope(_Part):
    """Who sent the order and under which control numbers (ISA, GS, ST)."""

    sender_qualifier: str = "ZZ"  # ISA05
    sender_id: str = "SENDER"  # ISA06, padding removed
    receiver_qualifier: str = "ZZ"  # ISA07
    receiver_id: str = "RECEIVER"  # ISA08, padding removed
    interchange_date: str = "250101"  # ISA09 YYMMDD
    interchange_time: str = "1200"  # ISA10 HHMM
    interchange_version: str = "00401"  # ISA12
    interchange_control_number: str = "000000001"  # ISA13
    usage: str = "P"  # ISA15: P production, T test
    functional_id: str = "PO"  # GS01
    group_sender: str = "SENDER"  # GS02
    group_receiver: str = "RECEIVER"  # GS03
    group_control_number: str = "1"  # GS06
    version: str = "004010"  # GS08
    set_control_number: str = "0001"  # ST02

    def to_json(self) -> dict[str, Any]:
        """Every field as sent, ISA09 ISO where it is a date (``1997-11-07``), as BEG05 is."""
        document = _Part.to_json(self)
        document["interchange_date"] = _iso_or_raw(self.interchange_date)
        return document


@dataclass(frozen=True, kw_only=True, slots=True)
class Reference(_Part):
    """A REF: qualifier (REF01), value (REF02), free-form description (REF03)."""

    qualifier: str = ""
    value: str = ""
    description: str = ""
    segment_number: int | None = _provenance()


@dataclass(frozen=True, kw_only=True, slots=True)
class Communication(_Part):
    """One PER number: qualifier (TE phone, FX fax, EM e-mail ...) and number."""

    qualifier: str = ""
    number: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Contact(_Part):
    """A PER: function code (PER01, BD buyer ...), name (PER02), its numbers."""

    function: str = ""
    name: str = ""
    communications: tuple[Communication, ...] = ()
    segment_number: int | None = _provenance()


@dataclass(frozen=True, kw_only=True, slots=True)
class DateReference(_Part):
    """A DTM: qualifier (DTM01, 002 delivery requested ...), date, time, the
    time's zone, or a date-time period instead of the date (a ship window:
    ``RD8`` ``19980301-19980315``)."""

    qualifier: str = ""
    date_raw: str = ""  # DTM02 as sent, judged by the rules
    time: str = ""  # DTM03 HHMM[SS[d..]] as sent
    time_code: str = ""  # DTM04: the time's zone (ET, PT, UT, GM ...) as sent
    period_format: str = ""  # DTM05: DTM06's format (D8, RD8, DT ...); before 4010, the century
    period: str = ""  # DTM06: a date, time or range in that format, as sent
    segment_number: int | None = _provenance()

    @property
    def date(self) -> _dt.date | None:
        return parse_date(self.date_raw)

    def to_json(self) -> dict[str, Any]:
        document = {
            "qualifier": self.qualifier,
            "date": _iso_or_raw(self.date_raw),
            "time": self.time,
        }
        # Only a DTM that has them: the others keep their JSON, and their key.
        # DTM05 without DTM06 is no period (X12 wants both): the Century of
        # versions before 4010 (``DTM*037*19980205***19``), left out.
        if self.time_code:
            document["time_code"] = self.time_code
        if self.period:
            document["period_format"], document["period"] = self.period_format, self.period
        return document


@dataclass(frozen=True, kw_only=True, slots=True)
class Party(_Part):
    """An N1 loop: who (N101 entity code, N102 name, N103/N104 id) and where."""

    entity: str = ""  # N101: VN vendor, ST ship to, BT bill to, BY buyer ...
    name: str = ""
    id_qualifier: str = ""
    id: str = ""
    names: tuple[str, ...] = ()  # N201, N202 of every N2
    address_lines: tuple[str, ...] = ()  # N301, N302 of every N3
    city: str = ""  # N401
    state: str = ""  # N402
    postal_code: str = ""  # N403
    country: str = ""  # N404
    references: tuple[Reference, ...] = ()  # REF inside the loop
    contacts: tuple[Contact, ...] = ()  # PER inside the loop
    segment_number: int | None = _provenance()


@dataclass(frozen=True, kw_only=True, slots=True)
class ProductId(_Part):
    """One PO1 product id pair: qualifier (VN, UP, BP, IN ...) and id."""

    qualifier: str = ""
    id: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Description(_Part):
    """A PID: type (PID01 F free-form, S structured), characteristic (PID02), text."""

    kind: str = ""  # PID01
    characteristic: str = ""  # PID02: 08 product, 73 colour, 74 size ...
    agency: str = ""  # PID03
    code: str = ""  # PID04
    text: str = ""  # PID05
    segment_number: int | None = _provenance()


@dataclass(frozen=True, kw_only=True, slots=True)
class Charge(_Part):
    """A SAC, of the order or of the line it follows: a charge (SAC01 ``C``:
    freight, handling …), an allowance (``A``: a discount, a promotion) or
    neither (``N``: a note, such as a service code). Its money is SAC05; one
    given as a percentage (SAC06/07) or a rate (SAC08-11) is passed on as
    written, for the ERP to apply. Every element is kept."""

    indicator: str = ""  # SAC01: A allowance, C charge, N neither
    code: str = ""  # SAC02: what for (D240 freight, C310 discount, F800 promotion …)
    agency: str = ""  # SAC03: whose code list SAC04 is from
    agency_code: str = ""  # SAC04
    amount_raw: str = ""  # SAC05: N2, two implied decimals
    percent_qualifier: str = ""  # SAC06: what SAC07 is a percentage of
    percent: str = ""  # SAC07, as written
    rate: str = ""  # SAC08, as written (per SAC09 unit)
    unit: str = ""  # SAC09: the unit SAC08 and SAC10 count in
    quantity: str = ""  # SAC10, as written
    quantity_2: str = ""  # SAC11, as written
    handling: str = ""  # SAC12: 02 off invoice, 06 paid by the customer …
    reference: str = ""  # SAC13
    option: str = ""  # SAC14: option number
    description: str = ""  # SAC15
    language: str = ""  # SAC16
    segment_number: int | None = _provenance()

    @property
    def amount(self) -> Decimal | None:
        """SAC05 as money: N2, so ``5000`` is 50.00; one written with a decimal
        point (not N2, but partners' systems send it) is read as written.
        None when empty or not a number."""
        if "." in self.amount_raw:
            return parse_decimal(self.amount_raw)
        number = parse_integer(self.amount_raw)
        return None if number is None else Decimal(number).scaleb(-2)

    @property
    def signed(self) -> Decimal | None:
        """What it does to the order's total: a charge adds its amount, an
        allowance takes it off; None for neither, or without an amount."""
        amount = self.amount
        if amount is None or self.indicator not in ("A", "C"):
            return None
        return amount if self.indicator == "C" else -amount

    def to_json(self) -> dict[str, Any]:
        return {
            "indicator": self.indicator,
            "code": self.code,
            "agency": self.agency,
            "agency_code": self.agency_code,
            "amount": as_text(self.amount),
            "percent_qualifier": self.percent_qualifier,
            "percent": self.percent,
            "rate": self.rate,
            "unit": self.unit,
            "quantity": self.quantity,
            "quantity_2": self.quantity_2,
            "handling": self.handling,
            "reference": self.reference,
            "option": self.option,
            "description": self.description,
            "language": self.language,
        }


def _with_charges(document: dict[str, Any], charges: tuple[Charge, ...]) -> dict[str, Any]:
    """``document`` with its ``charges``, if it has any: the JSON (and so the
    idempotency key) of an order without a SAC is what it was before SACs
    were read."""
    if charges:
        document["charges"] = [c.to_json() for c in charges]
    return document


@dataclass(frozen=True, kw_only=True, slots=True)
class Line(_Part):
    """A PO1 loop: what is ordered, how many, at what price.

    A line without a (valid) unit price has no amount and adds nothing to the
    order's total; ``rules`` allows a missing price (the ERP prices it from the
    catalogue) but refuses one that is present and not a number.
    """

    number: str = ""  # PO101, optional in X12
    quantity_raw: str = ""  # PO102
    unit: str = ""  # PO103
    unit_price_raw: str = ""  # PO104
    price_basis: str = ""  # PO105
    ctp_code: str = ""  # CTP02 of the CTP that prices the line when PO104 is empty
    ctp_price_raw: str = ""  # its CTP03
    ctp_basis: str = ""  # its CTP09: the basis of CTP03 (HP per hundred, TP per thousand)
    ctp_unit: str = ""  # its CTP05's unit (C00101): what CTP03 is the price of (``_measure``)
    ctp_segment_number: int | None = _provenance()
    currency: str = ""  # CUR02 of the line's CUR (PO1 loop) or of its pricing CTP's loop
    currency_segment_number: int | None = _provenance()
    product_ids: tuple[ProductId, ...] = ()  # PO106/07, PO108/09, ...
    descriptions: tuple[Description, ...] = ()
    references: tuple[Reference, ...] = ()
    dates: tuple[DateReference, ...] = ()
    parties: tuple[Party, ...] = ()  # N1 loops inside the line (e.g. ship-to per line)
    charges: tuple[Charge, ...] = ()  # its SACs
    segment_number: int | None = _provenance()
    # ``amount``, worked out once: the JSON, the order's total and the rules
    # each read it (a quarter of the order's model was spent redoing it).
    _amount: Decimal | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_amount", self._quantity_times_price())

    @property
    def quantity(self) -> Decimal | None:
        return parse_decimal(self.quantity_raw)

    @property
    def unit_price(self) -> Decimal | None:
        """PO104, else the CTP03 of a counted CTP (``CTP_PRICE_CODES``), else None."""
        if self.unit_price_raw:
            return parse_decimal(self.unit_price_raw)
        return parse_decimal(self.ctp_price_raw) if self.ctp_price_raw else None

    @property
    def price_source(self) -> str | None:
        """Where the unit price comes from: "PO104", "CTP UCP" …, or None (unpriced)."""
        if self.unit_price_raw:
            return "PO104"
        return f"CTP {self.ctp_code}" if self.ctp_price_raw else None

    @property
    def basis(self) -> str:
        """The basis of the unit price (the JSON's ``price_basis``): PO105 for
        PO104, the CTP09 of the CTP that prices the line for its CTP03 (PO105
        is PO104's basis, not a CTP's); upper case, unpadded (``hp `` is HP)."""
        by_ctp = self.ctp_price_raw and not self.unit_price_raw
        return (self.ctp_basis if by_ctp else self.price_basis).strip().upper()

    @property
    def priced_units(self) -> int:
        """How many units the unit price is the price of: 100 or 1000 for a
        price per hundred or thousand (``basis``, ``PRICE_BASIS_UNITS``), else 1."""
        return PRICE_BASIS_UNITS.get(self.basis, 1) if self.price_source else 1

    @property
    def price_unit(self) -> str:
        """The unit the unit price is the price of: the pricing CTP's CTP05
        when it names one, else the line's own (PO103). ``rules`` refuses a
        line where they differ: a price per case is not a price per each."""
        if self.ctp_unit and self.ctp_price_raw and not self.unit_price_raw:
            return self.ctp_unit
        return self.unit

    @property
    def amount(self) -> Decimal | None:
        """Quantity × unit price ÷ ``priced_units``, exact (2,000 at 15.00 per
        thousand are 30.00); None when quantity or price is missing or invalid.
        Every total (``PurchaseOrder.total_amount``, the JSON, ``rules``) is
        summed from this one amount."""
        return self._amount

    def _quantity_times_price(self) -> Decimal | None:
        quantity, price = self.quantity, self.unit_price
        if quantity is None or price is None:
            return None
        amount = EXACT.multiply(quantity, price)
        units = self.priced_units
        return amount if units == 1 else EXACT.divide(amount, Decimal(units))

    @property
    def description(self) -> str:
        """The product description (PID02 08) if given, else the first PID text."""
        texts = [d for d in self.descriptions if d.text]
        for d in texts:
            if d.characteristic == "08":
                return d.text
        return texts[0].text if texts else ""

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "line_number": self.number,
            "quantity": as_text(self.quantity),
            "unit": self.unit,
            "unit_price": as_text(self.unit_price),
            "price_source": self.price_source,
            "price_basis": self.basis,
            "product_ids": [p.to_json() for p in self.product_ids],
            "description": self.description,
            "descriptions": [d.to_json() for d in self.descriptions],
            "amount": as_text(self.amount),
            "references": [r.to_json() for r in self.references],
            "dates": [d.to_json() for d in self.dates],
            "parties": [p.to_json() for p in self.parties],
        }
        if self.currency:  # only a line that names its currency: the others keep their key
            document["currency"] = self.currency
        return _with_charges(document, self.charges)


@dataclass(frozen=True, kw_only=True, slots=True)
class Totals(_Part):
    """The CTT: number of line items the sender counted, and its hash total."""

    line_count_raw: str = ""  # CTT01
    hash_total_raw: str = ""  # CTT02
    segment_number: int | None = _provenance()

    @property
    def line_count(self) -> int | None:
        return parse_integer(self.line_count_raw)

    @property
    def hash_total(self) -> Decimal | None:
        return parse_decimal(self.hash_total_raw)

    def to_json(self) -> dict[str, Any]:
        return {"line_count": self.line_count, "hash_total": as_text(self.hash_total)}


@dataclass(frozen=True, kw_only=True, slots=True)
class Amount(_Part):
    """An AMT of the order (header or summary): qualifier (TT total ...), amount."""

    qualifier: str = ""
    amount_raw: str = ""
    segment_number: int | None = _provenance()

    @property
    def amount(self) -> Decimal | None:
        return parse_decimal(self.amount_raw)

    def to_json(self) -> dict[str, Any]:
        return {"qualifier": self.qualifier, "amount": as_text(self.amount)}


@dataclass(frozen=True, kw_only=True, slots=True)
class PurchaseOrder(_Part):
    """One 850, canonical: the header (BEG, CUR, REF, PER, DTM), parties, lines, totals."""

    envelope: Envelope = field(default_factory=Envelope)
    purpose: str = ""  # BEG01: 00 original, 05 replace ...
    order_type: str = ""  # BEG02: SA stand-alone, NE new, DS drop ship ...
    po_number: str = ""  # BEG03, trailing spaces removed
    release_number: str = ""  # BEG04, trailing spaces removed
    date_raw: str = ""  # BEG05 as sent
    contract_number: str = ""  # BEG06
    currency: str = ""  # CUR02 of the header CUR, upper case, unpadded
    references: tuple[Reference, ...] = ()
    contacts: tuple[Contact, ...] = ()
    dates: tuple[DateReference, ...] = ()
    parties: tuple[Party, ...] = ()
    lines: tuple[Line, ...] = ()
    totals: Totals | None = None  # the CTT, if sent
    amounts: tuple[Amount, ...] = ()
    charges: tuple[Charge, ...] = ()  # the header's SACs (a line's are the line's)
    set_segment_number: int | None = _provenance()  # the ST
    beg_segment_number: int | None = _provenance()  # None: the set has no BEG
    # The CTT, else the SE: the segment a missing PO1 belonged before
    summary_segment_number: int | None = _provenance()
    # (segment id, number) of each segment that is no 850's (``SEGMENTS_850``): read past
    unknown_segments: tuple[tuple[str, int], ...] = field(default=(), compare=False)
    # ... and of each segment out of place (a BEG after the lines, a PO1 or another
    # segment but AMT after the CTT), read past; each list at most MAX_NOTED + 1 long
    misplaced_segments: tuple[tuple[str, int], ...] = field(default=(), compare=False)
    # (segment id, number, the id of the header segment it follows) of each
    # header segment sent after one the 850 puts later: read all the same
    unsequenced_segments: tuple[tuple[str, int, str], ...] = field(default=(), compare=False)

    @property
    def date(self) -> _dt.date | None:
        return parse_date(self.date_raw)

    @property
    def vendor_name(self) -> str | None:
        """The name of the vendor party (N1 VN), else supplier (SU), else seller (SE)."""
        for code in VENDOR_CODES:
            for party in self.parties:
                if party.entity == code and party.name:
                    return party.name
        return None

    @property
    def total_amount(self) -> Decimal | None:
        """Σ line amount (``Line.amount``) over the lines, exact; unpriced lines add 0.
        None when no line has a price: the order is unpriced, not worth 0."""
        total: Decimal | None = None
        for line in self.lines:
            amount = line.amount
            if amount is not None:
                total = EXACT.add(total or Decimal(0), amount)
        return total

    @property
    def all_charges(self) -> tuple[Charge, ...]:
        """The header's SACs, then each line's."""
        return (*self.charges, *(c for line in self.lines for c in line.charges))

    @property
    def charges_total(self) -> Decimal | None:
        """What the SACs with an amount, the header's and the lines', do to
        the order's total (``Charge.signed``): charges added, allowances
        taken off; None when none has one. Not in ``total_amount``, which is
        the lines' (SAC12 says how each is handled: off the invoice, paid by
        the customer …, for the ERP to apply)."""
        total: Decimal | None = None
        for charge in self.all_charges:
            signed = charge.signed
            if signed is not None:
                total = EXACT.add(total or Decimal(0), signed)
        return total

    @property
    def priced(self) -> bool:
        """Whether any line carries a price (PO104 or a counted CTP)."""
        return any(line.unit_price is not None for line in self.lines)

    def amount(self, qualifier: str) -> Amount | None:
        """The first AMT with this qualifier (``"TT"``: total transaction amount)."""
        return next((a for a in self.amounts if a.qualifier == qualifier), None)

    # The envelope identity, where the pipeline and the ERP look for it.
    @property
    def sender_id(self) -> str:
        return self.envelope.sender_id

    @property
    def receiver_id(self) -> str:
        return self.envelope.receiver_id

    @property
    def interchange_control_number(self) -> str:
        return self.envelope.interchange_control_number

    @property
    def group_control_number(self) -> str:
        return self.envelope.group_control_number

    @property
    def set_control_number(self) -> str:
        return self.envelope.set_control_number

    def to_json(self, *, lines: bool = True) -> dict[str, Any]:
        """The canonical order for the ERP: every field, Decimals as strings,
        ISO dates. ``lines=False``: its ``lines`` an empty list (``encode``
        writes them one at a time)."""
        document: dict[str, Any] = {
            **self.envelope.to_json(),
            "po_number": self.po_number,
            "purpose": self.purpose,
            "order_type": self.order_type,
            "release_number": self.release_number,
            "date": _iso_or_raw(self.date_raw),
            "contract_number": self.contract_number,
            "currency": self.currency,
            "vendor_name": self.vendor_name,
            "total_amount": as_text(self.total_amount),
            "priced": self.priced,  # false: no price at all; the ERP prices it
            "line_count": len(self.lines),
            "references": [r.to_json() for r in self.references],
            "contacts": [c.to_json() for c in self.contacts],
            "dates": [d.to_json() for d in self.dates],
            "parties": [p.to_json() for p in self.parties],
            "lines": [line.to_json() for line in self.lines] if lines else [],
            "totals": self.totals.to_json() if self.totals is not None else None,
            "amounts": [a.to_json() for a in self.amounts],
        }
        return _with_charges(document, self.charges)


def identity(po: PurchaseOrder, group: str | None = None) -> tuple[Any, ...]:
    """Who ordered what, as the partner means it: sender (ISA05:ISA06, and
    its GS02 ``group`` when a partner is told apart by it, tagged: see
    ``SENDER_GROUP``), PO number (BEG03) with its release number (BEG04:
    releases against one blanket order share BEG03), and purpose (BEG01: 00
    original, 01 cancellation, 05 replace, 07 duplicate …); and, for a test
    interchange (ISA15 other than ``P``), its usage: partners send an order
    as a test before they send it for real, and the test is another order.
    Envelope numbers take no part: partners reset them."""
    env = po.envelope
    found: tuple[Any, ...] = (
        env.sender_qualifier,
        env.sender_id,
        po.po_number,
        po.release_number,
        po.purpose,
    )
    if group is not None:
        found += (("GS02", group),)
    return found if env.usage == PRODUCTION else (*found, env.usage)


PRODUCTION = "P"  # ISA15: production data; "T" test, "I" information

# The JSON key of the GS02 that tells an order's sender apart from another
# partner's under the same ISA id (``partners.split_by_group``): part of the
# order's identity, not of its content; absent for every other order, whose
# JSON and key are what they were before.
SENDER_GROUP = "sender_group"


_ENVELOPE_KEYS = frozenset(f.name for f in fields(Envelope))
_NOT_CONTENT = _ENVELOPE_KEYS | {SENDER_GROUP}
# ``identity`` as the order's JSON names it (and "usage", unless production).
_IDENTITY_KEYS = ("sender_qualifier", "sender_id", "po_number", "release_number", "purpose")


def content_hash(document: dict[str, Any]) -> str:
    """sha256 of the canonical order (``to_json``) without its envelope: the
    same order sent again under new control numbers hashes alike; any change
    to what is ordered, at what price, for whom, hashes differently."""
    return hashlib.sha256(_canonical(_content(document)).encode("utf-8")).hexdigest()


# The canonical text a content hash is of: sorted keys, no spaces, non-ASCII kept.
_canonical = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode


# The version of ``to_json``'s fields, recorded with each order
# (``orders.json_version``). Some fields are written only when an order has
# them (``charges``, a line's ``currency``): two orders of this version are
# compared field for field, so a resend that adds or drops a charge is other
# content; an order recorded before the versions (NULL) or under another one
# may lack a field only because its version did not read it. Bump it
# whenever ``to_json`` gains a field.
JSON_VERSION = 2  # 2: a DTM's time_code, period_format and period


def same_content(a: dict[str, Any], b: dict[str, Any], *, complete: bool = False) -> bool:
    """Whether two orders' JSON (``to_json``) say the same thing, envelopes
    aside, numbers compared by value: a resend written ``2.0`` and ``3.5``
    is the order sent as ``2`` and ``3.50`` (X12 R and N values compare by
    value), though its content hash, and so its key, differ. A field one of
    them lacks is not compared: an order recorded by an older version, whose
    JSON had fewer fields (``priced``, ``price_source``), is still the same
    order when everything both say agrees. ``complete``: two orders of this
    version's JSON (``JSON_VERSION``), where a field only one has
    (``charges``) is a difference."""
    a, b = _by_value(_content(a)), _by_value(_content(b))
    return a == b if complete else _common(a, b)


def same_receiver(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two orders' JSON were sent to one receiver (ISA07:ISA08), as
    far as both say. One PO number with other content sent to another
    receiver (a supplier's other division) is another order; the same
    content sent to both is one (a misdirected resend)."""
    return all(
        a.get(k) is None or b.get(k) is None or a[k] == b[k]
        for k in ("receiver_qualifier", "receiver_id")
    )


def _content(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k not in _NOT_CONTENT}


def _common(a: Any, b: Any) -> bool:
    """``a == b``, comparing dicts on the keys both have, at every depth."""
    if isinstance(a, dict) and isinstance(b, dict):
        return all(_common(a[k], b[k]) for k in a.keys() & b.keys())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_common, a, b))
    return bool(a == b)


def _by_value(value: Any, key: str = "") -> Any:
    """``value`` with every number ``to_json`` writes as text (``_NUMBER_KEYS``) a
    Decimal, and no ``price_basis`` (``_BASIS``)."""
    if isinstance(value, dict):
        return {k: _by_value(v, k) for k, v in value.items() if k != _BASIS}
    if isinstance(value, list):
        return [_by_value(v) for v in value]
    if key == "currency" and isinstance(value, str):  # as an older version wrote it
        return value.strip().upper()
    if key in _NUMBER_KEYS and isinstance(value, str):
        number = parse_decimal(value)
        if number is None and _EXPONENT.fullmatch(value):  # as versions before as_text wrote it
            number = Decimal(value)
        return value if number is None else number
    return value


# A line's price basis is not compared: what it does is in the line's amount
# (quantity × price ÷ its units), and older versions wrote it otherwise (as
# the partner did, ``hp ``; PO105's beside a CTP's price).
_BASIS = "price_basis"

_EXPONENT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?E[-+]?[0-9]+")


# The JSON keys whose values are Decimals written as text (``as_text``).
_NUMBER_KEYS = frozenset({"quantity", "unit_price", "amount", "hash_total", "total_amount"})


def idempotency_key(po: PurchaseOrder) -> str:
    """A key stable per order: the same order sent again (a retry, or a resend
    under a new ISA13) gets the same key; two different orders never share one."""
    return encode(po).key


def document_key(document: dict[str, Any]) -> str:
    """``idempotency_key`` of an order's JSON, as ``to_json`` makes it or as
    read back from a body sent to the ERP: the identity (``identity``) and
    the content (``content_hash``) as a JSON array (so no two different tuples
    hash alike), sha256, 32 hex digits."""
    return _key(document, content_hash(document))


def _key(document: dict[str, Any], content: str) -> str:
    parts = [*document_identity(document), content]
    encoded = json.dumps(parts, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()[:32]


class Encoded(NamedTuple):
    """An order as the ERP is sent it and the database keeps it: its JSON
    text (``jsontext.dumps`` of ``to_json``) and its key (``document_key``)."""

    text: str
    key: str


# Where an order's lines go in its JSON written with none, canonical or not:
# the one key ``"lines"`` is the document's own (a string's quotes are escaped,
# and no value is followed by a colon), so the text splits there once.
_NO_LINES = '"lines":[]'


# Lines written out and hashed together by ``encode``: their dicts (~1.5 KB
# each) live only that long.
_LINES_AT_ONCE = 64


def encode(po: PurchaseOrder, group: str | None = None) -> Encoded:
    """``po``'s JSON text and key — ``to_json``, with ``SENDER_GROUP`` set to
    ``group`` if given — built ``_LINES_AT_ONCE`` lines at a time: their dicts
    live only while they are written out and hashed, where a document of
    every line's dict, then its canonical text, held ~1.5 KB a line at once.
    The text and the key are byte for byte ``dumps(document)`` and
    ``document_key(document)``."""
    document = po.to_json(lines=False)
    if group is not None:
        document[SENDER_GROUP] = group
    head, tail = _around_lines(dumps(document))
    digest = hashlib.sha256()
    canonical_head, canonical_tail = _around_lines(_canonical(_content(document)))
    digest.update(canonical_head.encode("utf-8"))
    text = io.StringIO()  # written to only, it grows as one text (a list joined took twice)
    text.write(head)
    lines = po.lines
    for start in range(0, len(lines), _LINES_AT_ONCE):
        # A list's text is its items' joined by commas (the separators are the
        # same): one call to each encoder for a chunk of lines, not two a line.
        chunk = [line.to_json() for line in lines[start : start + _LINES_AT_ONCE]]
        comma = "," if start else ""
        text.write(comma + dumps(chunk)[1:-1])
        digest.update((comma + _canonical(chunk)[1:-1]).encode("utf-8"))
    text.write(tail)
    digest.update(canonical_tail.encode("utf-8"))
    return Encoded(text.getvalue(), _key(document, digest.hexdigest()))


def head(text: str | None) -> dict[str, Any]:
    """An order's JSON text (``encode``'s, or a body recorded) decoded as far
    as its lines: every field ``to_json`` writes before them — the
    envelope, the header's, the parties — without the dicts of its lines
    (~6x the text). The first ``,"lines":[`` is the order's own: a quote
    inside a string is escaped, and no other part has lines. {} for None."""
    if not text:
        return {}
    end = text.find(',"lines":[')
    return json.loads(text if end < 0 else text[:end] + "}")  # type: ignore[no-any-return]


def _around_lines(text: str) -> tuple[str, str]:
    """``text`` of a document without lines, cut inside its ``"lines":[]``."""
    head, tail = text.split(_NO_LINES)
    return head + _NO_LINES[:-1], _NO_LINES[-1] + tail


def document_identity(document: dict[str, Any], *, group: bool = True) -> list[Any]:
    """``identity`` of an order's JSON (``to_json``, or a body sent to the
    ERP); ``group=False``: without its ``SENDER_GROUP``."""
    parts = [document.get(k) for k in _IDENTITY_KEYS]
    if group and document.get(SENDER_GROUP) is not None:
        parts.append(("GS02", document[SENDER_GROUP]))
    if document.get("usage", PRODUCTION) != PRODUCTION:
        parts.append(document["usage"])
    return parts


def same_order(a: dict[str, Any], b: dict[str, Any], *, complete: bool = False) -> bool:
    """Two orders' JSON are one order: the same identity, the same content
    (``same_content``: numbers by value; ``complete``: every field, else the
    fields both have). A GS02 only one of them is told apart by (sent before
    its partner was configured so, or after) is not compared: one order is
    never two for it."""
    group = a.get(SENDER_GROUP) is not None and b.get(SENDER_GROUP) is not None
    same = document_identity(a, group=group) == document_identity(b, group=group)
    return same and same_content(a, b, complete=complete)


def record_key(key: str, job_id: str, index: int) -> str:
    """The record's key for an order never posted because it duplicates one
    that was (its ERP key belongs to that one's row)."""
    encoded = json.dumps([key, job_id, index], separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()[:32]


# ----------------------------------------------------------------- reading


# The elements of each segment an order is read from, as the 004010 850's
# segment directory and data element dictionary write them (element 1
# first): requirement (M mandatory, O optional, X conditional on a syntax
# note), type (ID code, AN string, DT date, TM time, R decimal, N0/N2 whole
# or implied-decimal number, C a composite) and minimum/maximum length. An
# element that breaks its line is refused before anything is built from it,
# with the 997's AK4 code: 1 mandatory element empty, 3 one element too many,
# 4 too short, 5 too long (a 40 KB PO number would otherwise go into every
# search index and every log line), 7 a code outside its list (``_CODES``),
# 12 a repetition (005010; before, 6) in an element that does not repeat, 6
# the component separator in one that is no composite, 8 a date that is
# none (CUR08 20230231), 9 a time that is none. A number's
# length is its digits (a sign and a point do not count; leading zeros do
# toward its minimum only), checked only when it is written as a number:
# ``rules`` says what is not one, with a better message. BEG03 and BEG05
# are mandatory too, but ``rules`` judges them (``missing_po_number``,
# ``missing_date``: the second is levelled), as it judges DTM02 and DTM03
# (``invalid_date``, ``invalid_time``); a DT may be six digits (YYMMDD,
# as older versions wrote it; README). A composite (REF04, CTP05) is allowed 99
# characters, its components checked as elements are (``_COMPOSITES``; one
# too many: 13, before 005010 3). PO1
# is PO101-PO105 and ten qualifier/id pairs. Other versions: ``_TABLES``.
_PO1_IDS = ", X ID 2/2, X AN 1/48" * 10
_CUR_DATES = ", X ID 3/3, X DT 8/8, X TM 4/8" * 5
_PER_NUMBERS = ", X ID 2/2, X AN 1/80" * 3
_SEGMENT_ELEMENTS = {
    "BEG": "M ID 2/2, M ID 2/2, M AN 1/22, O AN 1/30, M DT 8/8, O AN 1/30, O ID 2/2,"
    " O ID 3/3, O ID 2/2, O ID 2/2, O ID 2/2, O ID 2/2",
    "CUR": "M ID 2/3, M ID 3/3, O R 4/10, O ID 2/3, O ID 3/3, O ID 3/3" + _CUR_DATES,
    "REF": "M ID 2/3, X AN 1/30, X AN 1/80, O C040 1/99",
    "PER": "M ID 2/2, O AN 1/60" + _PER_NUMBERS + ", O AN 1/20",
    "DTM": "M ID 3/3, X DT 8/8, X TM 4/8, O ID 2/2, X ID 2/3, X AN 1/35",
    "N1": "M ID 2/3, X AN 1/60, X ID 1/2, X AN 2/80, O ID 2/2, O ID 2/3",
    "N2": "M AN 1/60, O AN 1/60",
    "N3": "M AN 1/55, O AN 1/55",
    "N4": "O AN 2/30, O ID 2/2, O ID 3/15, O ID 2/3, X ID 1/2, O AN 1/30",
    "PO1": "O AN 1/20, X R 1/15, O ID 2/2, X R 1/17, O ID 2/2" + _PO1_IDS,
    "CTP": "O ID 2/2, X ID 3/3, X R 1/17, X R 1/15, X C001 1/99, O ID 3/3, O R 1/10, O R 1/15,"
    " O ID 2/2, X R 1/10, O ID 1/2",
    "PID": "M ID 1/1, O ID 2/3, X ID 2/2, X AN 1/12, X AN 1/80, O ID 2/3, O AN 1/15,"
    " O ID 1/1, O ID 2/3",
    "CTT": "M N0 1/6, O R 1/10, X R 1/10, X ID 2/2, X R 1/8, X ID 2/2, O AN 1/80",
    "AMT": "M ID 1/3, M R 1/18, O ID 1/1",
    "SAC": "M ID 1/1, X ID 4/4, X ID 2/2, X AN 1/10, O N2 1/15, X ID 1/1, X R 1/6, O R 1/9,"
    " X ID 2/2, X R 1/15, O R 1/15, O ID 1/2, X AN 1/30, O AN 1/20, X AN 1/80, O ID 2/3",
}
# The syntax notes of those segments, as the standard writes them: P paired
# (any given, all given), R required (at least one), C conditional (the first
# given, all the others), E exclusion (at most one given). A note broken is
# AK4 2 on the element missing (an R's first), an E AK4 10 on the second
# given. The notes of elements an order never reads are left out (CUR's
# dates). A DTM05 of two digits alone is the
# century versions before 4010 wrote there (real 4010 files still do): not
# DTM05 as 4010 means it, so P0506 does not hold it.
_SYNTAX_NOTES = {
    "REF": "R0203",
    "PER": "P0304 P0506 P0708",
    "DTM": "R020305 C0403 P0506",
    "N1": "R0203 P0304",
    "N4": "C0605",
    "PO1": "C0302 C0504 " + " ".join(f"P{n:02d}{n + 1:02d}" for n in range(6, 25, 2)),
    "PID": "C0403 R0405",
    "CTP": "P0405 C0607",
    "CTT": "P0304 P0506",
    "SAC": "R0203 P0304 P0607 P0910 C1110 C1413 C1615",
}
# What other versions define otherwise (by GS08's first six characters),
# over 004010's lines: (elements, syntax notes). Before 004010 DTM05 is the
# century (N0 2/2) and the period DTM06/DTM07; from 004040 REF02 and SAC13
# are AN 1/50; from 005010 an N4 has N407 (country subdivision, ID 1/3),
# never beside N402, and PER's numbers are AN 1/256. Releases after 005010
# are judged by 005010's lines, except that elements past a segment's last
# are not refused (later releases add some: 8010's N408).
_BEFORE_4010 = {
    "DTM": (
        "M ID 3/3, X DT 8/8, X TM 4/8, O ID 2/2, X N0 2/2, X ID 2/3, X AN 1/35",
        "R020306 C0403 P0607",
    )
}
# 003040 (its element dictionary; the lengths grew by 004010): N102, N2 and
# N3 AN 1/35, N104 2/17, PER02 1/35 and no PER07/PER08, PO101 AN 1/11,
# PO102 1/9, PO104 1/14 and the product ids AN 1/30, a PID of eight
# elements (PID04 1/12, PID06 2/2, PID07 1/15). Checked against that
# release alone: 003050 to 003072 are judged by 004010's lines.
_IN_3040 = {
    **_BEFORE_4010,
    "N1": ("M ID 2/3, X AN 1/35, X ID 1/2, X AN 2/17, O ID 2/2, O ID 2/3", _SYNTAX_NOTES["N1"]),
    "N2": ("M AN 1/35, O AN 1/35", ""),
    "N3": ("M AN 1/35, O AN 1/35", ""),
    "PER": ("M ID 2/2, O AN 1/35" + ", X ID 2/2, X AN 1/80" * 2, "P0304 P0506"),
    "PO1": (
        "O AN 1/11, X R 1/9, O ID 2/2, X R 1/14, O ID 2/2" + ", X ID 2/2, X AN 1/30" * 10,
        _SYNTAX_NOTES["PO1"],
    ),
    "PID": (
        "M ID 1/1, O ID 2/3, X ID 2/2, X AN 1/12, X AN 1/80, O ID 2/2, O AN 1/15, O ID 1/1",
        _SYNTAX_NOTES["PID"],
    ),
}
_SAC_4040 = _SEGMENT_ELEMENTS["SAC"].split(", ")
_SAC_4040[12] = "X AN 1/50"  # SAC13 (127)
_FROM_4040 = {
    "REF": ("M ID 2/3, X AN 1/50, X AN 1/80, O C040.50 1/99", _SYNTAX_NOTES["REF"]),
    "SAC": (", ".join(_SAC_4040), _SYNTAX_NOTES["SAC"]),
}
_FROM_5010 = {
    **_FROM_4040,
    "N4": (_SEGMENT_ELEMENTS["N4"] + ", X ID 1/3", "C0605 C0704 E0207"),
    "PER": (
        "M ID 2/2, O AN 1/60" + ", X ID 2/2, X AN 1/256" * 3 + ", O AN 1/20",
        _SYNTAX_NOTES["PER"],
    ),
}
# The composites among them, component by component (a composite's own
# length, 1/99 above, bounds it whole): C001, a unit of measure (CTP05:
# the unit, then exponents and multipliers); C040, a reference (REF04:
# qualifier and value pairs; its values AN 1/50 from 004040, C040.50).
_COMPOSITES = {
    "C001": "M ID 2/2" + ", O R 1/15, O R 1/10, O ID 2/2" * 4 + ", O R 1/15, O R 1/10",
    "C040": "M ID 2/3, M AN 1/30, X ID 2/3, X AN 1/30, X ID 2/3, X AN 1/30",
    "C040.50": "M ID 2/3, M AN 1/50, X ID 2/3, X AN 1/50, X ID 2/3, X AN 1/50",
}
# Elements ``rules`` judges (with levels and better messages): not here.
_JUDGED_BY_RULES = {("BEG", 3), ("BEG", 5), ("DTM", 2), ("DTM", 3)}
_CODES = {("AMT", 3): ("C", "D")}  # 478: credit, debit


class _Element(NamedTuple):
    required: bool  # AK4 1 when empty
    kind: str  # DT or TM: judged as a date (AK4 8) or a time (AK4 9); else ""
    number: bool  # R or N: the length counts digits
    composite: bool  # may hold the component separator
    components: tuple[_Element, ...]  # a composite's, in order
    low: int
    high: int
    codes: tuple[str, ...]  # the values allowed, if the order knows the list
    fits: tuple[int, int]  # lengths that need no closer look (the common case)


class _Note(NamedTuple):
    kind: str  # P, R, C or E
    positions: tuple[int, ...]
    text: str  # as the standard writes it: P0607


class _Elements(NamedTuple):
    elements: tuple[_Element, ...]
    required: int  # the last mandatory element's position (0: none)
    notes: tuple[_Note, ...]


def _elements(tag: str, text: str, notes_text: str) -> _Elements:
    elements = _line(tag, text)
    last = max((n for n, e in enumerate(elements, 1) if e.required), default=0)
    notes = tuple(
        _Note(note[0], tuple(int(note[i : i + 2]) for i in range(1, len(note), 2)), note)
        for note in notes_text.split()
    )
    return _Elements(tuple(elements), last, notes)


def _line(tag: str, text: str) -> list[_Element]:
    """The elements of a segment's (or a composite's) line of the table."""
    elements = []
    for position, spec in enumerate(text.split(", "), 1):
        requirement, kind, length = spec.split(" ")
        low, high = map(int, length.split("/"))
        low = 6 if kind == "DT" else low
        number, codes = kind in ("R", "N0", "N2"), _CODES.get((tag, position), ())
        judged = (tag, position) in _JUDGED_BY_RULES
        when = kind if kind in ("DT", "TM") and not judged else ""
        if codes or when or (number and low > 1):
            fits = (1, 0)  # always looked at
        elif number:  # at most ``high`` characters: its digits are in bounds, or it
            fits = (0, high)  # is no number at all, which ``rules`` says
        else:
            fits = (low, high)
        elements.append(
            _Element(
                required=requirement == "M" and not judged,
                kind=when,
                number=number,
                composite=kind.startswith("C"),
                components=tuple(_line(kind, _COMPOSITES[kind])) if kind in _COMPOSITES else (),
                low=low,
                high=high,
                codes=codes,
                fits=fits,
            )
        )
    return elements


def _table(overlay: dict[str, tuple[str, str]]) -> dict[str, _Elements]:
    lines = {tag: (text, _SYNTAX_NOTES.get(tag, "")) for tag, text in _SEGMENT_ELEMENTS.items()}
    return {tag: _elements(tag, *line) for tag, line in {**lines, **overlay}.items()}


SEGMENT_ELEMENTS = _table({})  # 004010's
_OLDER = _table(_BEFORE_4010)
_TABLES = (  # (the first version, its table), newest first
    ("005010", _table(_FROM_5010)),
    ("004040", _table(_FROM_4040)),
    ("004010", SEGMENT_ELEMENTS),
    ("003050", _OLDER),
    ("003040", _table(_IN_3040)),
    ("", _OLDER),
)


class Syntax(NamedTuple):
    """What ``checked`` judges a transaction set's segments by."""

    table: dict[str, _Elements]  # by segment id: its version's lines
    repetition: str | None  # the interchange's repetition separator (005010)
    component: str  # and its component separator
    # AK403's codes for too many repetitions and components: 12 and 13 from
    # 005010; before, 6 (invalid character) and 3 (too many data elements)
    too_many: tuple[str, str]
    later: bool  # a release after 005010: elements past a segment's last are its own
    header_order: dict[str, int]  # the header's order (``_HEADER_ORDERS``)
    header_loops: dict[str, frozenset[str]]  # its loops (the LDT's from 004030)
    max_use: dict[str, dict[str, int]]  # ``_MAX_USE``, 003040's for that release

    @classmethod
    def of(cls, ts: TransactionSet) -> Syntax:
        version = ts.group.version[:6]
        if not digits(version):
            version = "004010"  # not a version: judged as the one this table is of
        table = next(t for first, t in _TABLES if version >= first)
        too_many = ("12", "13") if version >= "005010" else ("6", "3")
        later = version > "005010"
        order = next(o for first, o in _HEADER_ORDERS if version >= first)
        loops = _HEADER_LOOPS if version >= "004030" else _HEADER_LOOPS_BEFORE_4030
        max_use = _MAX_USE_3040 if "003040" <= version < "003050" else _MAX_USE
        d = ts.delimiters
        return cls(table, d.repetition, d.component, too_many, later, order, loops, max_use)


def checked(s: Segment, syntax: Syntax) -> Segment:
    """``s``, if each element is as its line of ``syntax.table`` says;
    else ``X12Error`` with the 997's AK4 code, naming the element.

    Trailing spaces do not count toward a maximum (fixed-width exports pad
    AN values) and do toward a minimum (X12 pads short values so). No
    element read here repeats (a repetition separator in one: AK4 12), and
    only a composite holds the component separator (elsewhere: AK4 6, an
    invalid character). An element past the segment's last is AK4 3 on the
    first position past it (AK401 has two digits). Only segments the order
    reads are checked: what it leaves out (a DTM inside an N9) is none of
    its business.
    """
    spec = syntax.table[s.tag]
    repetition, component = syntax.repetition, syntax.component
    elements, defined = s.elements, spec.elements
    count, width = len(elements), len(defined)
    for i in range(1, max(count, spec.required + 1)):
        if i > width:
            extra = next((j for j in range(i, count) if elements[j]), None)
            if extra is not None and not syntax.later:  # empty ones are only untidy
                raise _element_error(
                    s,
                    width + 1,
                    "3",  # AK4 3: too many data elements
                    f"{s.tag} has {count - 1} elements; the standard defines"
                    f" {width} ({s.tag}{extra:02d} is {shorten(elements[extra])})",
                    value=elements[extra],
                )
            break
        value = elements[i] if i < count else ""
        element = defined[i - 1]
        if not value:
            if element.required:
                raise _element_error(
                    s, i, "1", f"{s.tag}{i:02d} is empty; the standard requires it"
                )  # AK4 1: mandatory data element missing
            continue
        if repetition is not None and repetition in value:
            raise _element_error(
                s,
                i,
                syntax.too_many[0],  # too many repetitions (or, before 005010, invalid character)
                f"{s.tag}{i:02d} holds the repetition separator {repetition!r}, and the"
                f" element does not repeat: {shorten(value)}",
            )
        if component in value and not element.composite:
            raise _element_error(
                s,
                i,
                "6",  # invalid character
                f"{s.tag}{i:02d} holds the component separator {component!r}, and the"
                f" element has no components: {shorten(value)}",
            )
        low, high = element.fits
        if not low <= len(value) <= high:
            _check_value(s, i, value, element)  # the common case costs no call
        if element.components:
            _check_components(s, i, value.split(component), element.components, syntax)
    for note in spec.notes:
        # Past the segment's last element nothing is given: only an R breaks.
        if note.kind == "R" or note.positions[0] < count:
            given = [p < count and elements[p] != "" for p in note.positions]
            if (
                (note.kind == "R" and not any(given))
                or (note.kind == "P" and any(given) and not all(given))
                or (note.kind == "C" and given[0] and not all(given))
                or (note.kind == "E" and sum(given) > 1)
            ):
                _broken_note(s, note, given)
    return s


def _century(value: str) -> bool:
    return len(value) == 2 and digits(value)


def _broken_note(s: Segment, note: _Note, given: list[bool]) -> None:
    """The AK4 2 of ``checked`` for ``s``, which breaks the syntax note
    ``note`` (``given``: which of its elements are), unless it is a DTM05
    century alone."""
    if s.tag == "DTM" and note.text == "P0506" and given == [True, False] and _century(s.get(5)):
        return  # the century of versions before 4010
    first = note.positions[0]
    names = [f"{s.tag}{p:02d}" for p in note.positions]
    if note.kind == "E":
        second = [p for p, g in zip(note.positions, given, strict=True) if g][1]
        raise _element_error(
            s,
            second,
            "10",  # AK4 10: exclusion condition violated
            f"only one of {' or '.join(names)} may be given (syntax note {note.text})",
        )
    missing = next((p for p, g in zip(note.positions, given, strict=True) if not g), first)
    if note.kind == "P":
        why = f"{' and '.join(names)} go together; {s.tag}{missing:02d} is empty"
    elif note.kind == "R":
        why = f"one of {' or '.join(names)} is required; all are empty"
    else:
        why = f"{s.tag}{first:02d} is given, so {s.tag}{missing:02d} is required"
    raise _element_error(
        s, missing, "2", f"{why} (syntax note {note.text})"
    )  # AK4 2: conditional required data element missing


def _check_components(
    s: Segment, i: int, parts: list[str], components: tuple[_Element, ...], syntax: Syntax
) -> None:
    """The AK4 1, 4 or 5 of ``checked`` for a component of composite ``i``
    (named ``CTP05-01``; the 997 points at the composite), or too many
    components (13; before 005010, 3)."""
    if len(parts) > len(components) and any(parts[len(components) :]):
        raise _element_error(
            s,
            i,
            syntax.too_many[1],
            f"{s.tag}{i:02d} has {len(parts)} components; the standard defines"
            f" {len(components)}: {shorten(s.get(i))}",
        )
    for j, (part, component) in enumerate(zip(parts, components, strict=False), 1):
        name = f"{s.tag}{i:02d}-{j:02d}"
        if not part:
            if component.required:
                raise _element_error(s, i, "1", f"{name} is empty; the standard requires it")
        elif not component.fits[0] <= len(part) <= component.fits[1]:
            _check_value(s, i, part, component, name)


def _check_value(
    s: Segment, i: int, value: str, element: _Element, name: str | None = None
) -> None:
    """The AK4 5, 4 or 7 of ``checked`` for element ``i`` (or its component
    ``name``), if its value breaks its line."""
    name = name or f"{s.tag}{i:02d}"
    if element.kind:
        _check_when(s, i, value, element, name)
    if element.codes and value not in element.codes:
        raise _element_error(
            s,
            i,
            "7",  # AK4 7: invalid code value
            f"{name} {shorten(value)} is not one of its codes ({', '.join(element.codes)})",
        )
    low, high = element.low, element.high
    if element.number and is_number(value):
        body = value.lstrip("-")
        written = sum(c.isdigit() for c in body)
        significant = written - (len(body) - len(body.lstrip("0")))
        # Leading zeros count toward the minimum only.
        long, short, what = significant, written, "digit"
    elif element.number:  # not a number: ``rules`` says so, unless it is long junk
        long = short = len(value)
        what, low, high = "character", 0, MAX_NUMBER_CHARS
    else:
        long = short = len(value)
        what = "character"
        if long > high:
            long = len(value.rstrip(" "))
    if long > high:
        raise _element_error(
            s,
            i,
            "5",  # AK4 5: data element too long
            f"{name} is {long} {what}s long, over its maximum of {high}: {shorten(value)}",
        )
    if short < low:
        raise _element_error(
            s,
            i,
            "4",  # AK4 4: data element too short
            f"{name} is {short} {what}{'' if short == 1 else 's'} long, under its"
            f" minimum of {low}: {shorten(value)}",
        )


def _check_when(s: Segment, i: int, value: str, element: _Element, name: str) -> None:
    """The AK4 8 or 9 of ``checked`` for a date or a time that is none
    (20230231, 2460), once its length holds."""
    if not element.low <= len(value) <= element.high:
        return  # too long or short: said so first
    if element.kind == "DT" and parse_date(value) is None:
        raise _element_error(s, i, "8", f"{name} {shorten(value)} is not a date")
    if element.kind == "TM" and not is_time(value):
        raise _element_error(s, i, "9", f"{name} {shorten(value)} is not a time")


def _element_error(
    s: Segment, i: int, code: str, message: str, value: str | None = None
) -> X12Error:
    """The ``X12Error`` of element ``i`` of ``s`` (its AK4), quoting ``value``
    (the element's own by default)."""
    return X12Error(
        message,
        segment_number=s.number,
        segment_id=s.tag,
        element=i,
        code=code,
        value=(s.get(i) if value is None else value)[:99],
    )


def _tags(text: str) -> frozenset[str]:
    return frozenset(text.split(" "))


# Every segment an 850 may hold (header, detail and summary, their loops
# included), checked against public 850 grammars of versions 2040 to 7040
# (bots-edi, EdiFabric's templates, stupidedi) and the corpus: another is
# not a segment of the set (``unknown_segments``, the rule ``unknown_segment``).
SEGMENTS_850 = _tags(
    "ST BEG CUR REF PER TAX FOB CTP PAM CSH TC2 SAC ITA ITD DIS INC DTM LDT LIN SI PID MEA"
    " PWK PKG TD1 TD5 TD3 TD4 MAN PCT CTB TXI AMT AT N9 MSG MTX NTE N1 N2 N3 N4 IN2 NX1 NX2"
    " LM LQ SPI CB1 G53 G61 ADV EFI BIN YNQ USD III SSS SHH PO1 PO2 PO3 PO4 PAL CN1 IT3 IT8"
    " SDQ QTY SCH LS LE SLN LX FA1 FA2 CTT SE"
)
_HEADER_READ = _tags("BEG CUR REF PER DTM AMT N1 SAC")  # what the header reads, outside loops
# Where each segment (or loop, by its first) stands in the 850's header, in
# its order: one that comes after a segment placed later is out of sequence
# (the rule ``segment_out_of_sequence``). The LDT is a plain segment after
# the DTM before 004030, a loop after the TXI from it; segments not listed
# (NTE, MSG outside a loop) go anywhere.
_HEADER_SEQUENCE = (
    "BEG CUR REF PER TAX FOB CTP PAM CSH TC2 SAC ITD DIS INC DTM {} LIN SI PID MEA"
    " PWK PKG TD1 TD5 TD3 TD4 MAN PCT CTB TXI {} AMT N9 N1 LM SPI ADV"
)
_HEADER_ORDERS = (  # (the first version, its order), newest first
    ("004030", {tag: n for n, tag in enumerate(_HEADER_SEQUENCE.format("", "LDT").split())}),
    ("", {tag: n for n, tag in enumerate(_HEADER_SEQUENCE.format("LDT", "").split())}),
)
_LINE_READ = _tags("PID REF DTM N1 SAC CUR CTP")  # ... and a line, after its PO1
# Segments that stand only inside a loop, after its first (an N3 is a
# party's address), and the line's own segments: one found elsewhere is out
# of place (``misplaced_segments``), not dropped without a word.
IN_LOOP_ONLY = {
    **dict.fromkeys(("N2", "IN2", "N3", "N4", "NX2"), "N1"),
    "LQ": "LM",
    "G61": "SPI",
}
# ... those that stand in a line on their own but in the header only inside a
# loop (the 850s of 003040 to 005010 agree), by the loops they stand in ...
HEADER_IN_LOOP_ONLY = {
    "MSG": "N9, SPI or CB1",
    "MTX": "N9, SPI, CB1, ADV or LDT",
    "EFI": "N9",
    "CB1": "SPI",
    "FA1": "AMT",
    "FA2": "AMT",
}
LINE_ONLY = _tags("PO3 PO4 CN1 IT3 IT8 SDQ SLN QTY SCH LS LE")  # ... and a line's own


# The loops (by first segment) and the segments each holds after it, per the
# 004010 850 and what later releases added (IN2 in N1 loops, MTX, PWK and
# EFI in N9's, the header's LDT loop from 004030; AT in 003060's AMT loop):
# a REF after an N1 is the party's, a DTM after an N9 the note's, a PID
# after an SLN the subline's. A segment not in the set closes the loop.
_HEADER_LOOPS_BEFORE_4030 = {
    "N1": _tags("N2 IN2 N3 N4 NX2 REF PER SI FOB TD1 TD5 TD3 TD4 PKG"),
    "N9": _tags("DTM MSG MTX PWK EFI"),
    "SAC": _tags("CUR"),
    "AMT": _tags("AT REF DTM PCT FA1 FA2"),
    "LM": _tags("LQ"),
    "SPI": _tags("REF DTM MSG MTX N1 N2 N3 N4 G61 CB1 LDT"),
    "ADV": _tags("DTM MTX"),
}
_HEADER_LOOPS = {**_HEADER_LOOPS_BEFORE_4030, "LDT": _tags("QTY MSG MTX REF")}
_LINE_LOOPS = {
    "N1": _tags("N2 IN2 N3 N4 QTY NX2 REF PER SI DTM FOB SCH TD1 TD5 TD3 TD4 PKG"),
    "PID": _tags("MEA"),
    "CTP": _tags("CUR"),
    "SAC": _tags("CUR CTP"),
    "QTY": _tags("SI"),
    "SCH": _tags("TD1 TD5 TD3 TD4 REF"),
    "LDT": _tags("QTY MAN MSG MTX REF LM LQ"),
    "N9": _tags("DTM MSG MTX PWK EFI"),
    "SLN": _tags(
        "MSG MTX SI PID PO3 TC2 ADV DTM CTP PAM PO4 TAX N9 SAC QTY N1 N2 IN2 N3 N4 NX2 REF PER"
        " CUR MEA LDT"
    ),
    "AMT": _tags("REF PCT"),
    "LM": _tags("LQ"),
}


def _an(value: str) -> str:
    """An X12 AN (string) element that identifies the order (BEG03, BEG04) as
    its sender means it: trailing spaces are not significant in AN values
    (fixed-width exports pad them; "PO-1   " is PO-1), leading spaces are."""
    return value.rstrip(" ")


def _pairs(segment: Segment, first: int) -> list[tuple[str, str]]:
    """Element pairs from ``first`` to the end, skipping pairs left empty."""
    pairs = ((segment.get(i), segment.get(i + 1)) for i in range(first, len(segment.elements), 2))
    return [(a, b) for a, b in pairs if a or b]


def _reference(s: Segment) -> Reference:
    return Reference(
        qualifier=s.get(1), value=s.get(2), description=s.get(3), segment_number=s.number
    )


def _contact(s: Segment) -> Contact:
    numbers = tuple(Communication(qualifier=q, number=n) for q, n in _pairs(s, 3))
    return Contact(
        function=s.get(1), name=s.get(2), communications=numbers, segment_number=s.number
    )


def _date(s: Segment) -> DateReference:
    return DateReference(
        qualifier=s.get(1),
        date_raw=s.get(2),
        time=s.get(3),
        time_code=s.get(4),
        period_format=s.get(5),
        period=s.get(6),
        segment_number=s.number,
    )


class _Checker:
    """``checked`` for one set, keeping each broken segment's error (its 997
    names every one) rather than stopping at the first."""

    def __init__(self, syntax: Syntax) -> None:
        self.syntax = syntax
        self.found: list[X12Error] = []

    def __call__(self, s: Segment) -> Segment:
        try:
            return checked(s, self.syntax)
        except X12Error as exc:
            self.found.append(exc)
            return s


class _PartyBuilder:
    def __init__(self, n1: Segment, check: _Checker, where: str) -> None:
        self.n1 = n1
        self.check = check
        self.uses = _Uses(where, check.syntax.max_use)
        self.names: list[str] = []
        self.lines: list[str] = []
        self.n4: Segment | None = None
        self.references: list[Reference] = []
        self.contacts: list[Contact] = []

    def add(self, s: Segment) -> None:
        self.uses.count(s)
        if s.tag in ("N2", "N3", "REF", "PER") or (s.tag == "N4" and self.n4 is None):
            self.check(s)
        if s.tag == "N2":
            self.names.extend(e for e in s.elements[1:3] if e)
        elif s.tag == "N3":
            self.lines.extend(e for e in s.elements[1:3] if e)
        elif s.tag == "N4" and self.n4 is None:
            self.n4 = s
        elif s.tag == "REF":
            self.references.append(_reference(s))
        elif s.tag == "PER":
            self.contacts.append(_contact(s))

    def build(self) -> Party:
        n1, n4 = self.n1, self.n4
        return Party(
            entity=n1.get(1),
            name=n1.get(2),
            id_qualifier=n1.get(3),
            id=n1.get(4),
            names=tuple(self.names),
            address_lines=tuple(self.lines),
            city=n4.get(1) if n4 else "",
            state=n4.get(2) if n4 else "",
            postal_code=n4.get(3) if n4 else "",
            country=n4.get(4) if n4 else "",
            references=tuple(self.references),
            contacts=tuple(self.contacts),
            segment_number=n1.number,
        )


class _LineBuilder:
    def __init__(self, po1: Segment, max_use: dict[str, dict[str, int]]) -> None:
        self.po1 = po1
        self.descriptions: list[Description] = []
        self.references: list[Reference] = []
        self.dates: list[DateReference] = []
        self.parties: list[_PartyBuilder] = []
        self.ctp: Segment | None = None  # the first CTP that prices the line
        self.ctp_unit = ""  # its CTP05's unit
        self.currency: Segment | None = None  # the CUR that prices the line
        self.looped = False  # whether one of the line's loops (CTP, PID, N1 …) has begun
        self.charges: list[Charge] = []
        self.uses = _Uses("a line", max_use)

    def add_currency(self, cur: Segment) -> None:
        """A CUR of the line's (after its PO1, or in its pricing CTP's loop);
        a second one naming another currency is refused: a line has one."""
        if self.currency is not None and _code(self.currency.get(2)) != _code(cur.get(2)):
            raise X12Error(
                f"CUR (segment {cur.number}) names {cur.get(2)!r} for the line of PO1"
                f" segment {self.po1.number}, its CUR (segment {self.currency.number})"
                f" {self.currency.get(2)!r}; a line has one currency",
                segment_number=cur.number,
                segment_id="CUR",
                element=2,
                code="7",
            )
        self.currency = self.currency or cur

    def build(self) -> Line:
        # Codes of two characters (PO103, PO105, the id qualifiers) are one
        # string each however many lines repeat them: ~100 bytes a line less.
        s = self.po1
        return Line(
            number=s.get(1),
            quantity_raw=s.get(2),
            unit=sys.intern(s.get(3)),
            unit_price_raw=s.get(4),
            price_basis=sys.intern(s.get(5)),
            ctp_code=_code(self.ctp.get(2)) if self.ctp else "",
            ctp_price_raw=self.ctp.get(3) if self.ctp else "",
            ctp_basis=self.ctp.get(9) if self.ctp else "",
            ctp_unit=self.ctp_unit,
            ctp_segment_number=self.ctp.number if self.ctp else None,
            currency=_code(self.currency.get(2)) if self.currency else "",
            currency_segment_number=self.currency.number if self.currency else None,
            product_ids=tuple(ProductId(qualifier=sys.intern(q), id=i) for q, i in _pairs(s, 6)),
            descriptions=tuple(self.descriptions),
            references=tuple(self.references),
            dates=tuple(self.dates),
            parties=tuple(p.build() for p in self.parties),
            charges=tuple(self.charges),
            segment_number=s.number,
        )


# Unknown or misplaced segments noted a set: the rules name these, and say
# there are more (a file of a million tiny ones must not cost a million problems).
MAX_NOTED = 10


def _note(found: list[tuple[str, int]], s: Segment) -> None:
    """``s`` noted in ``found`` (unknown or misplaced), up to one past ``MAX_NOTED``."""
    if len(found) <= MAX_NOTED:
        found.append((s.tag, s.number))


def _code(value: str) -> str:
    """An ID element as X12 means it: upper case, without the padding a fixed-width export adds."""
    return value.strip().upper()


def _prices(line: _LineBuilder, ctp: Segment | None) -> bool:
    """Whether ``ctp`` is the CTP that prices ``line``: its first counted one,
    on a line without PO104 (a CUR in its loop is then the line's)."""
    return ctp is not None and ctp is line.ctp and not line.po1.get(4)


def _measure(ctp05: str, separator: str) -> str:
    """CTP05 (C001) as the unit its price is of: the unit code (C00101), or,
    with an exponent or a multiplier other than 1 after it (``EA>>12``: per 12
    each; ``M>2``: per square metre), the whole composite as written, which is
    no line's unit (``rules`` refuses it)."""
    unit, *rest = ctp05.split(separator)
    return unit if all(part in ("", "1") for part in rest) else ctp05


def _once_only(s: Segment) -> X12Error:
    """A second BEG (another PO number), header CUR (another currency) or
    CTT (another line count)."""
    return X12Error(
        f"{s.tag} appears a second time; the 850 allows one",
        segment_number=s.number,
        segment_id=s.tag,
        code="5",  # AK304 5: segment exceeds maximum use
    )


# The most times the 004010 850 allows each segment or loop (by its first
# segment) an order reads, where it stands: the header, a line (PO1 loop), an
# N1 loop, the summary (after the CTT). One more is refused: AK304 4 for a
# loop, 5 for a segment. BEG, CTT and the header's CUR are ``_once_only``'s.
_MAX_USE = {
    "the header": {"PER": 3, "DTM": 10, "SAC": 25, "N1": 200},
    "a line": {"CUR": 1, "DTM": 10, "SAC": 25, "N1": 200, "PID": 1000},
    "a line's N1 loop": {"N2": 2, "N3": 2, "N4": 1, "REF": 12, "PER": 3},
    "the header's N1 loop": {"N2": 2, "N3": 2, "REF": 12},  # PER >1 from 003060
    "the header's AMT loop": {"DTM": 1},
    "the header's SAC loop": {"CUR": 1},
    "a line's CTP loop": {"CUR": 1},
    "a line's SAC loop": {"CUR": 1, "CTP": 1},
    "the summary": {"AMT": 1},
}
# 003040's lower limits: 12 REFs in the header and a line, one N4 and three
# PERs in the header's N1 loop.
_MAX_USE_3040 = {
    **_MAX_USE,
    "the header": {**_MAX_USE["the header"], "REF": 12},
    "a line": {**_MAX_USE["a line"], "REF": 12},
    "the header's N1 loop": {**_MAX_USE["the header's N1 loop"], "N4": 1, "PER": 3},
}
_COUNTED_LOOPS = frozenset(("SAC", "N1", "PID"))


class _Uses:
    """How often each segment of ``max_use[where]`` (``Syntax.max_use``) has appeared there."""

    def __init__(self, where: str, max_use: dict[str, dict[str, int]]) -> None:
        self.where, self.limits = where, max_use.get(where, {})
        self.counts: dict[str, int] = {}

    def count(self, s: Segment) -> None:
        limit = self.limits.get(s.tag)
        if limit is None:
            return
        n = self.counts[s.tag] = self.counts.get(s.tag, 0) + 1
        if n == limit + 1:  # said once: the rest are read past
            loop = s.tag in _COUNTED_LOOPS and not self.where.endswith("N1 loop")
            raise X12Error(
                f"{s.tag}{' loop' if loop else ''} appears {n} times in {self.where};"
                f" the 850 allows {limit}",
                segment_number=s.number,
                segment_id=s.tag,
                code="4" if loop else "5",  # AK304: loop over its maximum, segment over
            )


def _charge(s: Segment) -> Charge:
    return Charge(
        indicator=s.get(1),
        code=s.get(2),
        agency=s.get(3),
        agency_code=s.get(4),
        amount_raw=s.get(5),
        percent_qualifier=s.get(6),
        percent=s.get(7),
        rate=s.get(8),
        unit=s.get(9),
        quantity=s.get(10),
        quantity_2=s.get(11),
        handling=s.get(12),
        reference=s.get(13),
        option=s.get(14),
        description=s.get(15),
        language=s.get(16),
        segment_number=s.number,
    )


def from_transaction(ts: TransactionSet) -> PurchaseOrder:
    """Read an 850 into a ``PurchaseOrder``; any other set raises ``NotHandledError``.

    Never refuses an 850 for its content (a missing BEG, junk in a quantity):
    that is for ``rules.validate`` to report. An element the standard does
    not allow as written (empty where mandatory, too long or short, a code
    outside its list: ``SEGMENT_ELEMENTS``) is refused here, as X12: the order
    is never posted; ``SetErrors`` names each broken segment and carries the
    order as read, for the rules that judge the rest. Segments the order does not model
    (MSG, TD5, PKG, FOB, N9, SLN ...) are left out without a word.
    """
    st = ts.segments[0] if ts.segments and ts.segments[0].tag == "ST" else None
    if ts.code != "850":
        raise NotHandledError(
            f"transaction set {ts.code} is not handled",
            segment_number=st.number if st else None,
            segment_id="ST",
            element=1,
            code="1",  # AK5 1: transaction set not supported
        )
    beg: Segment | None = None
    header_cur: Segment | None = None
    currency = ""
    references: list[Reference] = []
    contacts: list[Contact] = []
    dates: list[DateReference] = []
    parties: list[_PartyBuilder] = []
    lines: list[Line] = []  # built as soon as the next PO1 (or the end) comes:
    line: _LineBuilder | None = None  # its segments are not held for the whole set
    totals: Totals | None = None
    amounts: list[Amount] = []
    charges: list[Charge] = []

    area = "header"  # header, line (after a PO1), summary (after the CTT)
    loop: str | None = None  # the loop inside the area we are in, by first tag
    party: _PartyBuilder | None = None  # the N1 loop being read, if loop == "N1"

    syntax = Syntax.of(ts)
    header_uses = _Uses("the header", syntax.max_use)
    summary_uses = _Uses("the summary", syntax.max_use)
    loop_uses = _Uses("", syntax.max_use)  # the segments of the loop being read (a SAC's CURs)
    unknown: list[tuple[str, int]] = []
    misplaced: list[tuple[str, int]] = []
    unsequenced: list[tuple[str, int, str]] = []
    furthest: Segment | None = None  # the header segment placed latest so far
    opener: Segment | None = None  # the segment that opened ``loop``

    # Each broken segment's first error: a set's 997 names every one (up to
    # MAX_NOTED); a segment past its maximum use, or once too often, is read past.
    check = _Checker(syntax)
    found = check.found
    for s in ts.segments:
        try:
            tag = s.tag
            if tag in ("ST", "SE"):
                continue
            if tag not in SEGMENTS_850:
                _note(unknown, s)
                continue
            if tag == "BEG" and beg is not None:  # anywhere: another PO number
                raise _once_only(s)
            if tag == "BEG" and area != "header":  # after a PO1: out of place, not read
                _note(misplaced, s)
                continue
            if tag == "PO1" and area == "summary":  # a line after the CTT: not read
                _note(misplaced, s)
                continue
            if tag == "PO1":
                if line is not None:
                    lines.append(line.build())
                line = _LineBuilder(check(s), syntax.max_use)
                area, loop = "line", None
                continue
            if tag == "CTT":
                if totals is not None:  # another line count
                    raise _once_only(s)
                check(s)
                totals = Totals(
                    line_count_raw=s.get(1), hash_total_raw=s.get(2), segment_number=s.number
                )
                area, loop = "summary", None
                continue
            if area == "summary":
                if tag == "AMT":
                    summary_uses.count(s)
                    check(s)
                    amounts.append(
                        Amount(qualifier=s.get(1), amount_raw=s.get(2), segment_number=s.number)
                    )
                else:  # only AMT may follow the CTT: what else is there would go unread
                    _note(misplaced, s)
                continue

            loops = syntax.header_loops if area == "header" else _LINE_LOOPS
            if loop is not None and tag in loops[loop]:
                if loop == "N1" and party is not None:
                    party.add(s)
                    continue
                loop_uses.count(s)
                if tag == "CUR" and loop == "CTP" and line is not None and _prices(line, opener):
                    line.add_currency(check(s))
                continue  # inside a loop the order does not model
            if tag in IN_LOOP_ONLY or (
                area == "header" and (tag in LINE_ONLY or tag in HEADER_IN_LOOP_ONLY)
            ):
                _note(misplaced, s)  # outside the loop it belongs in, or before the lines
                continue
            loop = tag if tag in loops else None
            opener, party = s, None
            if loop is not None:
                where = f"{'the header' if area == 'header' else 'a line'}'s {loop} loop"
                loop_uses = _Uses(where, syntax.max_use)
            if loop is not None and line is not None and area == "line":
                line.looped = True

            if area == "header":
                place = syntax.header_order.get(tag)
                if place is not None:
                    if furthest is None or place >= syntax.header_order[furthest.tag]:
                        furthest = s
                    elif len(unsequenced) <= MAX_NOTED:
                        unsequenced.append((tag, s.number, furthest.tag))
                header_uses.count(s)
                if tag == "CUR" and header_cur is not None:  # another currency: not read
                    raise _once_only(s)
                if tag in _HEADER_READ:
                    check(s)
                if tag == "BEG":
                    beg = s
                elif tag == "CUR":
                    header_cur = s
                    currency = _code(s.get(2))
                elif tag == "REF":
                    references.append(_reference(s))
                elif tag == "PER":
                    contacts.append(_contact(s))
                elif tag == "DTM":
                    dates.append(_date(s))
                elif tag == "AMT":
                    amounts.append(
                        Amount(qualifier=s.get(1), amount_raw=s.get(2), segment_number=s.number)
                    )
                elif tag == "N1":
                    party = _PartyBuilder(s, check, "the header's N1 loop")
                    parties.append(party)
                elif tag == "SAC":
                    charges.append(_charge(s))
            else:
                assert line is not None  # the line area begins at a PO1
                line.uses.count(s)
                if tag in _LINE_READ:
                    check(s)
                if tag == "PID":
                    line.descriptions.append(
                        Description(
                            kind=s.get(1),
                            characteristic=s.get(2),
                            agency=s.get(3),
                            code=s.get(4),
                            text=s.get(5),
                            segment_number=s.number,
                        )
                    )
                elif tag == "REF":
                    line.references.append(_reference(s))
                elif tag == "DTM":
                    line.dates.append(_date(s))
                elif tag == "CTP" and line.ctp is None and _code(s.get(2)) in CTP_PRICE_CODES:
                    line.ctp = s
                    line.ctp_unit = _measure(s.get(5), ts.delimiters.component)
                elif tag == "CUR" and line.looped:  # the line's CUR comes before its loops
                    _note(misplaced, s)
                elif tag == "CUR":
                    line.add_currency(s)
                elif tag == "N1":
                    party = _PartyBuilder(s, check, "a line's N1 loop")
                    line.parties.append(party)
                elif tag == "SAC":
                    line.charges.append(_charge(s))
        except X12Error as exc:  # over its maximum use: the set is refused, read on
            found.append(exc)
        if len(found) > MAX_NOTED:
            break

    if len(found) > MAX_NOTED:  # read no further: no order to judge
        raise SetErrors(found[:MAX_NOTED])
    interchange, group = ts.interchange, ts.group
    envelope = Envelope(
        sender_qualifier=interchange.sender_qualifier,
        sender_id=interchange.sender_id,
        receiver_qualifier=interchange.receiver_qualifier,
        receiver_id=interchange.receiver_id,
        interchange_date=interchange.date,
        interchange_time=interchange.time,
        interchange_version=interchange.version,
        interchange_control_number=interchange.control_number,
        usage=interchange.usage,
        functional_id=group.functional_id,
        group_sender=group.sender,
        group_receiver=group.receiver,
        group_control_number=group.control_number,
        version=group.version,
        set_control_number=ts.control_number,
    )
    b = beg if beg is not None else Segment(["BEG"], 0)  # no BEG: empty fields, rules object
    last = ts.segments[-1] if ts.segments else None
    summary = totals.segment_number if totals is not None else None
    if summary is None and last is not None and last.tag == "SE":
        summary = last.number
    po = PurchaseOrder(
        envelope=envelope,
        purpose=b.get(1),
        order_type=b.get(2),
        po_number=_an(b.get(3)),
        release_number=_an(b.get(4)),
        date_raw=b.get(5),
        contract_number=b.get(6),
        currency=currency,
        references=tuple(references),
        contacts=tuple(contacts),
        dates=tuple(dates),
        parties=tuple(p.build() for p in parties),
        lines=(*lines, line.build()) if line is not None else tuple(lines),
        totals=totals,
        amounts=tuple(amounts),
        charges=tuple(charges),
        set_segment_number=st.number if st else None,
        beg_segment_number=beg.number if beg is not None else None,
        summary_segment_number=summary,
        unknown_segments=tuple(unknown),
        misplaced_segments=tuple(misplaced),
        unsequenced_segments=tuple(unsequenced),
    )
    if found:
        raise SetErrors(found, order=po)
    return po
