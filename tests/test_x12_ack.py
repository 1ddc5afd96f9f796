"""The 997 writer: envelope, AK segments, codes, and that our own reader reads it back clean."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import pytest

from edi_inbox.errors import X12Error
from edi_inbox.x12 import X12Reader, build_997
from edi_inbox.x12.ack import ISA_LENGTH, Unaddressable

CORPUS = Path(__file__).parent / "data" / "corpus"
NOW = datetime(2024, 5, 6, 7, 8)
ISA = (
    "ISA*00*          *00*          *ZZ*ACME           *01*123456789      "
    "*240102*1200*U*00401*000000321*0*T*>~"
)


def order(n: int, lines: int = 1) -> str:
    po1 = "".join(f"PO1*{i}*2*EA*3.50**VP*X{i}~" for i in range(1, lines + 1))
    return f"ST*850*{n:04d}~BEG*00*SA*PO-{n}**20240102~{po1}SE*{lines + 3}*{n:04d}~"


def doc(*sets: str, isa: str = ISA, ge: str | None = None) -> bytes:
    ge = ge or f"GE*{len(sets)}*77~"
    gs = "GS*PO*ACMEAPP*OURAPP*20240102*1200*77*X*004010~"
    return (isa + gs + "".join(sets) + ge + "IEA*1*000000321~").encode()


def read(data: bytes) -> X12Reader:
    reader = X12Reader(io.BytesIO(data))
    for _ in reader.transaction_sets():
        pass
    return reader


def ack(data: bytes, **kwargs) -> tuple[bytes, list[list[str]]]:
    """The 997 for the first group of ``data``, and its segments as read back."""
    reader = read(data)
    ic = reader.interchanges[0]
    out = build_997(
        ic, ic.groups[0], control_number=kwargs.pop("control_number", 42), now=NOW, **kwargs
    )
    back = X12Reader(io.BytesIO(out))
    segments = [s.elements for s in back.scanner]
    return out, segments


def body(segments: list[list[str]]) -> list[str]:
    """The AK segments, one string each, for readable assertions."""
    return ["*".join(s) for s in segments if s[0].startswith("AK")]


def test_accepting_997():
    """A clean group gets AK1, an AK2/AK5 A per set and AK9 A with the counts."""
    out, segs = ack(doc(order(1), order(2)))
    assert body(segs) == [
        "AK1*PO*77",
        "AK2*850*0001",
        "AK5*A",
        "AK2*850*0002",
        "AK5*A",
        "AK9*A*2*2*2",
    ]
    assert out.endswith(b"IEA*1*000000042~\n")


def test_envelope_is_swapped_and_numbered():
    """Sender and receiver swap; ISA13 padded, GS06/ST02/GE02/IEA02 from control_number."""
    _, segs = ack(doc(order(1)), control_number=42)
    isa, gs, st = segs[0], segs[1], segs[2]
    assert (isa[5], isa[6], isa[7], isa[8]) == ("01", "123456789      ", "ZZ", "ACME           ")
    assert (isa[9], isa[10], isa[12], isa[13], isa[14], isa[15]) == (
        "240506",
        "0708",
        "00401",
        "000000042",
        "0",
        "T",
    )
    assert gs == ["GS", "FA", "OURAPP", "ACMEAPP", "20240506", "0708", "42", "X", "004010"]
    assert st == ["ST", "997", "0042"]
    assert segs[-2] == ["GE", "1", "42"] and segs[-1] == ["IEA", "1", "000000042"]
    assert segs[-3] == ["SE", str(len(segs) - 4), "0042"]


@pytest.mark.parametrize(
    "received, expected_tail",
    [
        ("~", b"IEA*1*000000042~\n"),
        ("~\r\n", b"IEA*1*000000042~\n"),
        ("\n", b"IEA*1*000000042\n"),
        ("\r", b"IEA*1*000000042\r"),
        ("\x15", b"IEA*1*000000042\x15\n"),
    ],
)
def test_delimiters_follow_the_received_interchange(received, expected_tail):
    """Same terminator; a newline after it only when it is not a line break itself."""
    data = doc(order(1)).replace(b"~", received.encode()).replace(b"*", b"|")
    out, _ = ack(data)
    assert out.endswith(expected_tail.replace(b"*", b"|"))
    assert out.startswith(b"ISA|00|")


def test_version_follows_the_received_one():
    """ISA12 and GS08 are as received; GS04 is CCYYMMDD from 4010, YYMMDD before."""
    data = doc(order(1)).replace(b"*00401*", b"*00300*").replace(b"*004010~", b"*003040~")
    _, segs = ack(data)
    assert segs[0][12] == "00300" and segs[0][11] == "U"
    assert segs[1][4] == "240506" and segs[1][8] == "003040"


def test_repetition_separator_from_00402():
    """From ISA12 00402 on, ISA11 carries the received repetition separator."""
    data = doc(order(1)).replace(b"*U*00401*", b"*^*00501*").replace(b"*004010~", b"*005010~")
    _, segs = ack(data)
    assert segs[0][11] == "^" and segs[0][12] == "00501" and segs[1][8] == "005010"


def test_set_with_structure_errors_is_rejected():
    """A set with SE01 wrong gets AK5 R 4; the group is rejected when no set is accepted."""
    _, segs = ack((CORPUS / "draftedi__sample_850.edi").read_bytes())
    assert body(segs) == ["AK1*PO*000000001", "AK2*850*0001", "AK5*R*4", "AK9*R*1*1*0"]


def test_rejected_problems_become_ak3_ak4_and_partial_acceptance():
    """Problems from later steps point at the segment (position from ST) and element."""
    data = doc(order(1), order(2, lines=3))
    # ISA=1, GS=2, set 1 = 3..6; set 2: ST=7, BEG=8, PO1=9..11, SE=12
    late = X12Error("PO1 line 3 has no price", segment_number=11, segment_id="PO1")
    problem = X12Error("quantity 0", segment_number=9, segment_id="PO1", element=2, code="7")
    problem.value = "0"  # type: ignore[attr-defined]
    _, segs = ack(data, rejected={"0002": [late, problem]})
    assert body(segs) == [
        "AK1*PO*77",
        "AK2*850*0001",
        "AK5*A",
        "AK2*850*0002",
        "AK3*PO1*3**8",
        "AK4*2**7*0",
        "AK3*PO1*5",
        "AK5*R*5",
        "AK9*P*2*2*1",
    ]


def test_segment_error_without_element_keeps_its_code():
    """A reader segment error (bad segment id, AK3 code 1) is reported with a valid AK301."""
    data = doc(order(1).replace("BEG*", "b!g*"))
    _, segs = ack(data)
    assert body(segs)[1:4] == ["AK2*850*0001", "AK3*BG*2**1", "AK5*R*5"]


def test_group_envelope_errors_go_to_ak9():
    """GE errors: AK9 codes; E when every set is accepted anyway, R when none is."""
    _, segs = ack(doc(order(1), ge="GE*2*78~"))
    assert body(segs)[-1] == "AK9*E*2*1*1*5*4"
    _, segs = ack((CORPUS / "badx12__error_validation.edi").read_bytes())
    assert body(segs) == ["AK1*HPO*20413", "AK2*835*112233", "AK5*R*4*3", "AK9*R*2*1*0*5*4"]


def test_at_most_five_codes_and_no_duplicates():
    """AK5 carries at most five distinct codes."""
    errors = [X12Error(f"e{c}", segment_id="SE", code=c) for c in "1234567" + "1"]
    _, segs = ack(doc(order(1)), rejected={"0001": errors})
    assert body(segs)[2] == "AK5*R*1*2*3*4*5"


def test_bad_value_copy_cannot_break_the_997():
    """AK404 loses any delimiter characters of the interchange."""
    problem = X12Error("bad", segment_number=5, segment_id="PO1", element=4, code="6")
    problem.value = "3*5~>x"  # type: ignore[attr-defined]
    _, segs = ack(doc(order(1)), rejected={"0001": [problem]})
    assert "AK4*4**6*35x" in body(segs)


def test_ebcdic_997_is_ebcdic():
    """An EBCDIC interchange is acknowledged in EBCDIC with its NL terminator."""
    out, segs = ack((CORPUS / "botsplugins__ebcdic.x12").read_bytes())
    assert out.startswith("ISA*".encode("cp500")) and out.endswith(b"\x15")
    assert body(segs)[-1] == "AK9*A*1*1*1"


def test_control_number_must_fit_isa13():
    """A control number outside 1..999999999 is refused."""
    with pytest.raises(ValueError):
        ack(doc(order(1)), control_number=1_000_000_000)


def corpus_groups() -> list[tuple[str, int, int]]:
    """(file, interchange index, group index) of every group the reader finds in the corpus."""
    out = []
    for path in sorted(CORPUS.iterdir()):
        if path.name == "SOURCES.md":
            continue
        reader = X12Reader(io.BytesIO(path.read_bytes()))
        try:
            for _ in reader.transaction_sets():
                pass
        except X12Error:
            pass
        for i, ic in enumerate(reader.interchanges):
            out += [(path.name, i, j) for j in range(len(ic.groups))]
    return out


@pytest.mark.parametrize("name, i, j", corpus_groups())
def test_997_for_every_corpus_group_reads_back_clean(name, i, j):
    """Every group in the corpus gets a 997 that our reader reads without error or warning."""
    reader = X12Reader(io.BytesIO((CORPUS / name).read_bytes()))
    try:
        for _ in reader.transaction_sets():
            pass
    except X12Error:
        pass
    ic = reader.interchanges[i]
    group = ic.groups[j]
    out = build_997(ic, group, control_number=7, now=NOW)
    text = out.decode(ic.encoding if ic.encoding != "ascii" else "latin-1")
    isa = text[:ISA_LENGTH]
    assert isa.count(ic.delimiters.element) == 16 and isa.index(ic.delimiters.segment) == 105
    back = X12Reader(io.BytesIO(out))
    (ts,) = list(back.transaction_sets())
    assert back.errors == [] and back.warnings == []
    received = back.interchanges[0]
    assert received.delimiters.element == ic.delimiters.element
    assert received.delimiters.segment == ic.delimiters.segment
    assert received.encoding in (ic.encoding, "ascii")
    ak9 = ts.segments[-2].elements
    assert ak9[0] == "AK9" and ak9[3] == str(len(group.sets))
    assert sum(s.tag == "AK2" for s in ts.segments) == len(group.sets)


def test_repetition_separator_chosen_when_received_had_none():
    """From 00402 on, a 997 needs a repetition separator that is no other delimiter."""
    data = doc(order(1)).replace(b"*U*00401*", b"*U*00501*").replace(b"~", b"^")
    data = data.replace(b"*", b"{")
    _, segs = ack(data)
    assert segs[0][11] == "!" and segs[0][12] == "00501"


@pytest.mark.parametrize(
    "old, new, element",
    [
        ("*ACME           *", "*ACMECORPORATIONLTD*", "ISA06"),  # 18 characters: a 109-char ISA
        ("*ACME           *", "*ACME~IEA~EVIL  *", "ISA06"),  # 15 wide, but "~" ends a segment
        ("*123456789      *", "*12345>789      *", "ISA08"),  # the component separator
        ("*ACME           *", "*ACME\x1b[2J      *", "ISA06"),  # a control character
        ("*ZZ*ACME", "*ZZZ*ACME", "ISA05"),  # a qualifier of three
        ("*U*00401*", "*U*004010*", "ISA12"),  # a version of six digits
    ],
)
def test_hostile_envelope_gets_no_997(old, new, element):
    """A partner value that would break the 997's envelope is refused by name, not copied."""
    isa = ISA.replace(old, new)
    assert isa != ISA
    reader = read(doc(order(1), isa=isa))
    ic = reader.interchanges[0]
    with pytest.raises(Unaddressable, match=element):
        build_997(ic, ic.groups[0], control_number=1, now=NOW)


def test_hostile_group_sender_gets_no_997():
    """GS02 goes back as GS03: a component separator inside it is refused too."""
    data = doc(order(1)).replace(b"GS*PO*ACMEAPP*", b"GS*PO*ACME>APP*")
    reader = read(data)
    ic = reader.interchanges[0]
    with pytest.raises(Unaddressable, match="GS02"):
        build_997(ic, ic.groups[0], control_number=1, now=NOW)
