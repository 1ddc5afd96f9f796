"""Round trips: an order rendered by render.to_x12 and read back by the X12 reader is unchanged."""

from __future__ import annotations

import io
import json
import string
from dataclasses import fields, is_dataclass, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edi_inbox import orders, render
from edi_inbox.jsontext import dumps
from edi_inbox.orders import (
    Amount,
    Communication,
    Contact,
    DateReference,
    Description,
    Envelope,
    Line,
    Party,
    ProductId,
    PurchaseOrder,
    Reference,
    Totals,
    from_transaction,
)
from edi_inbox.render import to_x12
from edi_inbox.x12.model import Delimiters
from edi_inbox.x12.reader import X12Reader

CORPUS = Path(__file__).parent / "data" / "corpus"

# Delimiters a partner may choose: printable punctuation and the control characters
# seen in the wild. Not "." or "-": they are part of X12 numbers, so never free.
LEGAL_DELIMITERS = sorted(set(string.punctuation) - {".", "-"}) + list("\x1c\x1d\x1e\x1f\x15\x7f")
LINE_ENDINGS = ["", "\n", "\r\n"]
TEXT = string.ascii_letters + string.digits + " " + string.punctuation
CODE = string.ascii_uppercase + string.digits


def read_back(data: bytes) -> list[PurchaseOrder]:
    """Every 850 in ``data`` through the real reader, which must find nothing wrong."""
    reader = X12Reader(io.BytesIO(data))
    sets = list(reader.transaction_sets())
    assert reader.errors == [], [str(e) for e in reader.errors]
    return [from_transaction(ts) for ts in sets]


def text(max_size: int = 12, min_size: int = 0) -> st.SearchStrategy[str]:
    """Element data as X12 carries it: no whitespace at either end."""
    return (
        st.text(TEXT, min_size=min_size, max_size=max_size)
        .map(lambda s: s.strip(" "))
        .filter(lambda s: len(s) >= min_size)
    )


def code(min_size: int = 1, max_size: int = 3) -> st.SearchStrategy[str]:
    return st.text(CODE, min_size=min_size, max_size=max_size)


def few(strategy: st.SearchStrategy, max_size: int = 2) -> st.SearchStrategy[tuple]:
    return st.lists(strategy, max_size=max_size).map(tuple)


def optional(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """An element left out, or one as ``strategy`` writes it (within its lengths)."""
    return st.just("") | strategy


# Values within each element's lengths (``orders.SEGMENT_ELEMENTS``): what
# breaks them is refused as it is read, and these orders must come back.
NUMBER = st.one_of(
    st.from_regex(r"-?(?:[0-9]{1,5}(?:\.[0-9]{0,4})?|\.[0-9]{1,4})", fullmatch=True),
    text(6),  # junk is kept raw and must come back as sent
)
COUNT = st.one_of(st.from_regex(r"[0-9]{1,6}", fullmatch=True), text(6))
DATE = st.one_of(
    st.dates().map(lambda x: f"{x.year:04d}{x.month:02d}{x.day:02d}"), text(8, min_size=6)
)
TIME = st.times().map(lambda x: x.strftime("%H%M"))
REFERENCES = few(
    st.builds(Reference, qualifier=code(2, 3), value=text(), description=text()).filter(
        lambda r: r.value or r.description  # R0203
    )
)
CONTACTS = few(
    st.builds(
        Contact,
        function=code(2, 2),
        name=text(),
        communications=few(
            st.builds(Communication, qualifier=code(2, 2), number=text(min_size=1)), 3
        ),
    )
)
DATES = few(
    st.builds(
        DateReference,
        qualifier=code(3, 3),
        date_raw=DATE,
        time=optional(TIME),
        time_code=optional(code(2, 2)),
        period_format=optional(code(2, 3)),
        period=code(0, 12),
    )
    .map(lambda d: d if d.time else replace(d, time_code=""))  # C0403
    .map(lambda d: d if bool(d.period_format) == bool(d.period) else replace(d, period=""))
    .map(lambda d: d if d.period else replace(d, period_format=""))  # P0506
    .filter(lambda d: d.date_raw or d.time or d.period_format)  # R020305
)
PARTIES = few(
    st.builds(
        Party,
        entity=code(2, 3),
        name=text(),
        id_qualifier=code(0, 2),
        id=text(min_size=2),
        names=few(text(min_size=1), 3),  # N2 elements; empty ones are not kept
        address_lines=few(text(min_size=1), 3),
        city=optional(text(min_size=2)),
        state=optional(code(2, 2)),
        postal_code=optional(text(9, min_size=3)),
        country=optional(code(2, 3)),
        references=REFERENCES,
        contacts=CONTACTS,
    )
    .map(lambda p: p if p.id_qualifier else replace(p, id=""))  # P0304
    .filter(lambda p: p.name or p.id_qualifier)  # R0203
)
# The CTP that prices a line, or none.
CTPS = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {
            "ctp_code": st.sampled_from(orders.CTP_PRICE_CODES),
            "ctp_price_raw": NUMBER.filter(bool),
            "ctp_unit": optional(code(2, 2)),  # C00101 ID 2/2
            "ctp_basis": optional(code(2, 2)),
        }
    ),
)
LINES = few(
    st.builds(
        Line,
        number=text(6),
        quantity_raw=NUMBER,
        unit=optional(code(2, 2)),
        unit_price_raw=NUMBER,
        price_basis=optional(code(2, 2)),
        product_ids=few(st.builds(ProductId, qualifier=code(2, 2), id=text(min_size=1)), 4),
        descriptions=few(
            st.builds(
                Description,
                kind=st.sampled_from(["F", "S", "X"]),
                characteristic=optional(code(2, 3)),
                agency=optional(code(2, 2)),
                code=text(4),
                text=text(20),
            )
            .map(lambda d: d if d.agency else replace(d, code=""))  # C0403
            .filter(lambda d: d.code or d.text)  # R0405
        ),
        references=REFERENCES,
        dates=DATES,
        parties=PARTIES.map(lambda t: t[:1]),  # a ship-to per line, now and then
        currency=optional(code(3, 3)),
    )
    .map(lambda line: line if line.quantity_raw else replace(line, unit=""))  # C0302
    .map(lambda line: line if line.unit_price_raw else replace(line, price_basis=""))  # C0504
    .flatmap(lambda line: CTPS.map(lambda ctp: replace(line, **ctp))),
    4,
)
# ISA05/ISA07 (I05): a code of its list, as the reader checks (TA1 005/007)
QUALIFIERS = st.sampled_from(["01", "08", "12", "14", "16", "ZZ"])
ENVELOPES = st.builds(
    Envelope,
    sender_qualifier=QUALIFIERS,
    sender_id=code(1, 15),
    receiver_qualifier=QUALIFIERS,
    receiver_id=code(1, 15),
    interchange_date=st.dates().map(lambda x: x.strftime("%y%m%d")),
    interchange_time=st.times().map(lambda x: x.strftime("%H%M")),
    interchange_version=st.sampled_from(["00401", "00501"]),
    interchange_control_number=st.from_regex(r"[0-9]{9}", fullmatch=True),
    usage=st.sampled_from(["P", "T"]),
    group_sender=code(2, 15),
    group_receiver=code(2, 15),
    group_control_number=st.from_regex(r"[1-9][0-9]{0,8}", fullmatch=True),
    version=st.sampled_from(["004010", "005010"]),
    set_control_number=st.from_regex(r"[0-9]{4,9}", fullmatch=True),
)
ORDERS = st.builds(
    PurchaseOrder,
    envelope=ENVELOPES,
    purpose=code(2, 2),
    order_type=code(2, 2),
    po_number=text(22, min_size=1),
    release_number=text(),
    date_raw=DATE,
    contract_number=text(),
    currency=optional(code(3, 3)),
    references=REFERENCES,
    contacts=CONTACTS,
    dates=DATES,
    parties=PARTIES,
    lines=LINES,
    totals=st.none() | st.builds(Totals, line_count_raw=COUNT.filter(bool), hash_total_raw=NUMBER),
    amounts=few(st.builds(Amount, qualifier=code(1, 2), amount_raw=NUMBER.filter(bool))),
)


def characters(value: object) -> set[str]:
    """Every character in every string of an order (or any part of one)."""
    if isinstance(value, str):
        return set(value)
    if isinstance(value, tuple):
        return set().union(*map(characters, value))
    if is_dataclass(value):
        return set().union(*(characters(getattr(value, f.name)) for f in fields(value)))
    return set()


@st.composite
def rendered(draw):
    """An order, distinct delimiters its data does not use (maybe a repetition one), a line end."""
    po = draw(ORDERS)
    free = [c for c in LEGAL_DELIMITERS if c not in characters(po)]
    count = draw(st.sampled_from([3, 4]))
    assume(len(free) >= count)
    chosen = draw(st.lists(st.sampled_from(free), min_size=count, max_size=count, unique=True))
    d = Delimiters(*chosen[:3], repetition=chosen[3] if count == 4 else None)
    return d, po, draw(st.sampled_from(LINE_ENDINGS))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rendered())
def test_an_order_rendered_and_read_back_is_the_same_order(case):
    """Any order, with any legal delimiters and line ending, reads back from to_x12 unchanged."""
    d, po, line_ending = case
    (back,) = read_back(to_x12(po, d, line_ending=line_ending))
    assert back == po
    assert back.to_json() == po.to_json()
    assert orders.idempotency_key(back) == orders.idempotency_key(po)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ORDERS)
def test_the_body_sent_read_back_gives_the_order_s_key(po):
    """The JSON an order is sent as, read back from its record, gives its
    Idempotency-Key: how a resend finds the body its key was first sent with."""
    body = json.loads(dumps(po.to_json()))
    assert orders.document_key(body) == orders.idempotency_key(po)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ORDERS, st.none() | text(max_size=8))
def test_an_order_encoded_line_by_line_is_its_json_and_key(po, group):
    """``orders.encode`` writes and hashes an order a line at a time: its text
    and key are byte for byte those of the whole document (with its GS02)."""
    document = po.to_json()
    if group is not None:
        document[orders.SENDER_GROUP] = group
    assert orders.encode(po, group) == (dumps(document), orders.document_key(document))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rendered(), st.integers(min_value=2, max_value=4))
def test_several_orders_in_one_interchange_come_back_in_order(case, count):
    """Several orders rendered into one group come back as the same orders, in order."""
    d, po, line_ending = case
    pos = [
        replace(
            po,
            po_number=f"{po.po_number[:20]}-{i}",  # BEG03 is at most 22 characters
            envelope=replace(po.envelope, set_control_number=f"{1000 + i}"),
        )
        for i in range(count)
    ]
    assert read_back(to_x12(pos, d, line_ending=line_ending)) == pos


@settings(max_examples=100, deadline=None)
@given(rendered())
def test_segment_numbers_of_a_read_back_order_point_at_its_segments(case):
    """After a round trip every part's segment number is that segment's position from the ISA."""
    d, po, line_ending = case
    data = to_x12(po, d, line_ending=line_ending)
    (back,) = read_back(data)
    tags = ["ISA", "GS"] + [s[0] for s in render.transaction_segments(po)]
    assert tags[back.set_segment_number - 1] == "ST"
    assert tags[back.beg_segment_number - 1] == "BEG"
    for line in back.lines:
        assert tags[line.segment_number - 1] == "PO1"
        assert all(tags[x.segment_number - 1] == "PID" for x in line.descriptions)
    for party in back.parties:
        assert tags[party.segment_number - 1] == "N1"
    for amount in back.amounts:
        assert tags[amount.segment_number - 1] == "AMT"


CORPUS_850S = [
    "botsplugins__850-004010-01.x12",
    "botsplugins__850-004010-02.x12",
    "botsplugins__850-004010-04.x12",
    "botsplugins__850-004010-05.x12",
    "botsplugins__850-004010-10.x12",
    "botsplugins__850-004010-12.x12",
    "botsplugins__850-004010.13.x12",
    "botsplugins__850-004010.15.x12",
    "botsplugins__850-004010VICS-01.x12",
    "botsplugins__850-004030-02.x12",
    "botsplugins__850_01.x12",
    "botsplugins__ebcdic.x12",
    "nodex12__850.edi",
    "ediengine__850.OK.edi",
    "draftedi__sample_850.edi",
    "edinet__x12.850.issue135.edi",
]


@pytest.mark.parametrize("name", CORPUS_850S)
@pytest.mark.parametrize("line_ending", LINE_ENDINGS)
def test_corpus_orders_survive_a_round_trip_with_their_own_delimiters(name, line_ending):
    """Real 850s, rendered with the delimiters they came with, read back as the same orders."""
    with (CORPUS / name).open("rb") as stream:
        sets = [ts for ts in X12Reader(stream).transaction_sets() if ts.code == "850"]
    assert sets
    for ts in sets:
        po = from_transaction(ts)
        (back,) = read_back(to_x12(po, ts.delimiters, line_ending=line_ending))
        assert back == po
