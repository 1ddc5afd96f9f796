"""A purchase order written back as X12: a complete ISA..IEA interchange.

Used by the tests (the Hypothesis round trip: render, read back, compare),
the benches and anyone who needs sample 850s. Pure code, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .orders import (
    Charge,
    Contact,
    DateReference,
    Party,
    PurchaseOrder,
    Reference,
)
from .x12.model import Delimiters
from .x12.values import CENTURY_PIVOT


def _trim(elements: list[str]) -> list[str]:
    """Drop trailing empty elements: X12 does not transmit them."""
    end = len(elements)
    while end > 1 and not elements[end - 1]:
        end -= 1
    return elements[:end]


def _flat_pairs(pairs: Iterable[tuple[str, str]]) -> list[str]:
    return [value for pair in pairs for value in pair]


def _party_segments(party: Party) -> list[list[str]]:
    out = [["N1", party.entity, party.name, party.id_qualifier, party.id]]
    out += [["N2", *party.names[i : i + 2]] for i in range(0, len(party.names), 2)]
    out += [["N3", *party.address_lines[i : i + 2]] for i in range(0, len(party.address_lines), 2)]
    if party.city or party.state or party.postal_code or party.country:
        out.append(["N4", party.city, party.state, party.postal_code, party.country])
    out += [_ref_segment(r) for r in party.references]
    out += [_per_segment(c) for c in party.contacts]
    return out


def _sac_segment(c: Charge) -> list[str]:
    return [
        "SAC",
        c.indicator,
        c.code,
        c.agency,
        c.agency_code,
        c.amount_raw,
        c.percent_qualifier,
        c.percent,
        c.rate,
        c.unit,
        c.quantity,
        c.quantity_2,
        c.handling,
        c.reference,
        c.option,
        c.description,
        c.language,
    ]


def _ref_segment(r: Reference) -> list[str]:
    return ["REF", r.qualifier, r.value, r.description]


def _per_segment(c: Contact) -> list[str]:
    numbers = _flat_pairs((n.qualifier, n.number) for n in c.communications)
    return ["PER", c.function, c.name, *numbers]


def _dtm_segment(d: DateReference) -> list[str]:
    return ["DTM", d.qualifier, d.date_raw, d.time, d.time_code, d.period_format, d.period]


def transaction_segments(po: PurchaseOrder) -> list[list[str]]:
    """The order as ST..SE segments (element lists, tag first), in 850 order.

    A BEG is always written. The last AMT goes after the CTT (the summary
    holds one), the others in the header, the only other place where they
    are the order's; an order without a CTT keeps them all there.
    """
    body: list[list[str]] = [
        [
            "BEG",
            po.purpose,
            po.order_type,
            po.po_number,
            po.release_number,
            po.date_raw,
            po.contract_number,
        ],
    ]
    if po.currency:
        body.append(["CUR", "BY", po.currency])
    body += [_ref_segment(r) for r in po.references]
    body += [_per_segment(c) for c in po.contacts]
    body += [_sac_segment(c) for c in po.charges]
    body += [_dtm_segment(d) for d in po.dates]
    amounts = [["AMT", a.qualifier, a.amount_raw] for a in po.amounts]
    summary = amounts[-1:] if po.totals is not None else []
    body += amounts[: len(amounts) - len(summary)]
    for party in po.parties:
        body += _party_segments(party)
    for line in po.lines:
        ids = _flat_pairs((p.qualifier, p.id) for p in line.product_ids)
        body.append(
            [
                "PO1",
                line.number,
                line.quantity_raw,
                line.unit,
                line.unit_price_raw,
                line.price_basis,
                *ids,
            ]
        )
        if line.currency:
            body.append(["CUR", "BY", line.currency])
        if line.ctp_price_raw:  # the CTP that priced the line
            quantity = "1" if line.ctp_unit else ""  # CTP04 and CTP05 go together (P0405)
            ctp = ["CTP", "", line.ctp_code, line.ctp_price_raw, quantity, line.ctp_unit]
            body.append([*ctp, "", "", "", line.ctp_basis])  # CTP09 the basis
        body += [
            ["PID", d.kind, d.characteristic, d.agency, d.code, d.text] for d in line.descriptions
        ]
        body += [_ref_segment(r) for r in line.references]
        body += [_sac_segment(c) for c in line.charges]
        body += [_dtm_segment(d) for d in line.dates]
        for party in line.parties:
            body += _party_segments(party)
    if po.totals is not None:
        body.append(["CTT", po.totals.line_count_raw, po.totals.hash_total_raw])
        body += summary
    control = po.envelope.set_control_number
    segments = [["ST", "850", control], *(_trim(s) for s in body)]
    segments.append(["SE", str(len(segments) + 1), control])
    return segments


def _fixed(value: str, width: int, what: str) -> str:
    if len(value) > width:
        raise ValueError(f"{what} {value!r} is longer than {width} characters")
    return value.ljust(width)


def _digits(value: str, width: int, what: str) -> str:
    if len(value) != width or not value.isascii() or not value.isdigit():
        raise ValueError(f"{what} {value!r} must be {width} digits")
    return value


def _group_date(isa_date: str, version: str) -> str:
    """GS04 from ISA09: CCYYMMDD from version 004010 on, YYMMDD before."""
    if version[:6] < "004010":
        return isa_date
    yy = int(isa_date[:2])
    return f"{(20 if yy < CENTURY_PIVOT else 19)}{isa_date}"


def to_x12(
    orders: PurchaseOrder | Sequence[PurchaseOrder],
    delimiters: Delimiters = Delimiters(),
    *,
    line_ending: str = "",
    encoding: str = "latin-1",
) -> bytes:
    """Render orders as one complete ISA..IEA interchange, counts and all.

    Several orders become several sets in one group; they must share the ISA
    and GS identity of the first. ``line_ending`` ("", "\\n", "\\r\\n", "\\r")
    follows every segment terminator. ``delimiters.repetition`` goes in ISA11
    from version 00402 on; before that, and without one, ISA11 is ``U``.
    ISA01-04 are written blank (``00``); GS04/GS05 follow ISA09/ISA10.
    X12 has no escape: a delimiter inside a value, a value too wide for the
    ISA, or delimiters that are not distinct, non-alphanumeric single
    characters raise ``ValueError``.
    """
    pos = [orders] if isinstance(orders, PurchaseOrder) else list(orders)
    if not pos:
        raise ValueError("no orders to render")
    env = pos[0].envelope
    for po in pos[1:]:
        other = po.envelope
        if (other.sender_id, other.receiver_id, other.interchange_control_number) != (
            env.sender_id,
            env.receiver_id,
            env.interchange_control_number,
        ) or other.group_control_number != env.group_control_number:
            raise ValueError("orders rendered together must share the ISA and GS identity")

    element, component, terminator = delimiters.element, delimiters.component, delimiters.segment
    repetition = delimiters.repetition if env.interchange_version >= "00402" else None
    seps = [element, component, terminator] + ([repetition] if repetition else [])
    if any(len(c) != 1 or c.isalnum() or c == " " for c in seps) or len(set(seps)) != len(seps):
        raise ValueError(f"delimiters {seps!r} must be distinct single non-alphanumeric characters")
    if line_ending not in ("", "\n", "\r\n", "\r"):
        raise ValueError(f"line ending {line_ending!r} is not one of '', LF, CRLF, CR")

    isa = [
        "ISA",
        "00",
        " " * 10,
        "00",
        " " * 10,
        _fixed(env.sender_qualifier, 2, "ISA05"),
        _fixed(env.sender_id, 15, "ISA06"),
        _fixed(env.receiver_qualifier, 2, "ISA07"),
        _fixed(env.receiver_id, 15, "ISA08"),
        _digits(env.interchange_date, 6, "ISA09"),
        _digits(env.interchange_time, 4, "ISA10"),
        repetition or "U",
        _digits(env.interchange_version, 5, "ISA12"),
        _digits(env.interchange_control_number, 9, "ISA13"),
        "0",
        _fixed(env.usage, 1, "ISA15"),
    ]
    gs = [
        "GS",
        env.functional_id,
        env.group_sender,
        env.group_receiver,
        _group_date(env.interchange_date, env.version),
        env.interchange_time,
        env.group_control_number,
        "X",
        env.version,
    ]
    segments: list[list[str]] = [gs]
    for po in pos:
        segments += transaction_segments(po)
    segments.append(["GE", str(len(pos)), env.group_control_number])
    segments.append(["IEA", "1", env.interchange_control_number])

    banned = set(seps)
    data = isa[:11] + isa[12:]  # ISA11 is the repetition separator itself
    for seg in [data, *segments]:
        for value in seg:
            if banned.intersection(value):
                raise ValueError(f"{seg[0]} value {value!r} contains a delimiter")
    end = terminator + line_ending
    text = element.join(isa) + element + component + end
    text += "".join(element.join(seg) + end for seg in segments)
    try:
        return text.encode(encoding)
    except UnicodeEncodeError as exc:
        raise ValueError(f"the order cannot be written in {encoding}: {exc}") from exc


def renumbered(interchange: bytes, n: int) -> bytes:
    """A copy of a one-interchange file made distinct by ``n``: ISA13 and IEA02
    become ``n`` (nine digits) and BEG03 ends in it, every width kept. For
    tests and benches that need many different but valid files."""
    text = interchange.decode("latin-1")
    sep, term = text[3], text[105]
    isa = text[:105].split(sep)
    old = isa[13]
    isa[13] = f"{n:09d}"
    text = sep.join(isa) + text[105:]
    text = text.replace(f"IEA{sep}1{sep}{old}", f"IEA{sep}1{sep}{n:09d}")
    start = text.index(f"{term}BEG{sep}") + 1
    end = text.index(term, start)
    beg = text[start:end].split(sep)
    beg[3] = f"{n:0{len(beg[3])}d}"[-len(beg[3]) :]
    return (text[:start] + sep.join(beg) + text[end:]).encode("latin-1")
