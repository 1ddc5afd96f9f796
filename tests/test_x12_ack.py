"""The 997 and 999 writers: envelope, AK/IK segments, codes, and that our own
reader reads them back clean."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import pytest

from edi_inbox.errors import X12Error
from edi_inbox.x12 import X12Reader, build_997
from edi_inbox.x12.ack import (
    ACK_999,
    ISA_LENGTH,
    SetAnswer,
    Unaddressable,
    ack_kind,
    build_ack,
    check_address,
    is_acknowledgement,
)

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


def late_problems(code: str | None = None) -> dict[str, list[X12Error]]:
    """Problems found after parsing in set 0002 of ``doc(order(1), order(2, lines=3))``:
    a PO1 without a price (segment level, ``code``) and a PO102 of 0."""
    # ISA=1, GS=2, set 1 = 3..6; set 2: ST=7, BEG=8, PO1=9..11, SE=12
    late = X12Error("PO1 line 3 has no price", segment_number=11, segment_id="PO1", code=code)
    problem = X12Error("quantity 0", segment_number=9, segment_id="PO1", element=2, code="7")
    problem.value = "0"  # type: ignore[attr-defined]
    return {"0002": [late, problem]}


def test_rejected_problems_become_ak3_ak4_and_partial_acceptance():
    """Problems from later steps point at the segment (position from ST) and element."""
    _, segs = ack(doc(order(1), order(2, lines=3)), rejected=late_problems())
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


@pytest.mark.parametrize("bad", ["b!g*", "bg*", "BEGX*"])
def test_a_segment_id_no_ak301_can_echo_gets_no_ak3(bad):
    """A reader segment error for an id that is no X12 id (AK3 code 1): AK301
    (ID 2/3) could only name another id than the one received (``BG`` for
    ``b!g``, ``BEG`` for ``BEGX``: round 71), so there is no AK3; the set is
    refused, AK5 R 5 (segments in error)."""
    data = doc(order(1).replace("BEG*", bad))
    _, segs = ack(data)
    assert body(segs)[1:3] == ["AK2*850*0001", "AK5*R*5"]


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
    """A bad value holding the interchange's delimiters gets no AK404: a
    copy without them would be another value (outsider round 57)."""
    problem = X12Error("bad", segment_number=5, segment_id="PO1", element=4, code="6")
    problem.value = "3*5~>x"  # type: ignore[attr-defined]
    _, segs = ack(doc(order(1)), rejected={"0001": [problem]})
    assert "AK4*4**6" in body(segs)


def test_ebcdic_997_is_ebcdic():
    """An EBCDIC interchange is acknowledged in EBCDIC with its NL terminator."""
    out, segs = ack((CORPUS / "botsplugins__ebcdic.x12").read_bytes())
    assert out.startswith("ISA*".encode("cp500")) and out.endswith(b"\x15")
    assert body(segs)[-1] == "AK9*A*1*1*1"


def test_control_number_must_fit_isa13():
    """A control number outside 1..999999999 is refused."""
    with pytest.raises(ValueError):
        ack(doc(order(1)), control_number=1_000_000_000)


def read_corpus(name: str) -> X12Reader:
    """A corpus file read to its end, or to the error that stops the reader."""
    reader = X12Reader(io.BytesIO((CORPUS / name).read_bytes()))
    try:
        for _ in reader.transaction_sets():
            pass
    except X12Error:
        pass
    return reader


def corpus_groups() -> list[tuple[str, int, int]]:
    """(file, interchange index, group index) of every group the reader finds in the corpus."""
    out = []
    for path in sorted(CORPUS.iterdir()):
        if path.name == "SOURCES.md":
            continue
        for i, ic in enumerate(read_corpus(path.name).interchanges):
            out += [(path.name, i, j) for j in range(len(ic.groups))]
    return out


@pytest.mark.parametrize("name, i, j", corpus_groups())
def test_997_for_every_corpus_group_reads_back_clean(name, i, j):
    """Every group in the corpus gets a 997 that our reader reads without error or warning."""
    ic = read_corpus(name).interchanges[i]
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
    # no 997 answers a 997: a 997 in an FA group gets no AK2
    answered = [s for s in group.sets if not is_acknowledgement(group, s.code)]
    assert sum(s.tag == "AK2" for s in ts.segments) == len(answered)


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


@pytest.mark.parametrize(
    "old, new, element",
    [
        ("ST*850*0002~", "ST**0002~", "ST01"),
        ("*1200*77*X*", "*1200**X*", "GS06"),
        ("GS*PO*", "GS**", "GS01"),
        ("*ACMEAPP*", "**", "GS02"),  # the 997's GS03
        ("*OURAPP*", "**", "GS03"),  # the 997's GS02
    ],
)
def test_a_group_missing_a_control_value_the_997_echoes_gets_no_997(old, new, element):
    """AK101/AK102, AK201 and the 997's GS02/GS03 are mandatory: a group
    whose GS01, GS02, GS03 or GS06, or one of whose sets' ST01, is empty gets
    no 997 rather than one with an empty element (``AK2**0002``, ``AK1*PO``),
    which the partner's translator rejects whole."""
    data = doc(order(1), order(2)).replace(old.encode(), new.encode(), 1)
    assert data != doc(order(1), order(2))
    ic = read(data).interchanges[0]
    with pytest.raises(Unaddressable, match=element):
        check_address(ic, ic.groups[0])
    with pytest.raises(Unaddressable, match=element):
        build_997(ic, ic.groups[0], control_number=1, now=NOW)


@pytest.mark.parametrize(
    "st02",
    ["", ">", "00>2", "00\x1f2", "0000000002"],
    ids=["empty", "separator", "in", "control", "ten"],
)
def test_a_set_whose_st02_the_997_cannot_echo_gets_no_ak2_loop(st02):
    """An ST02 the 997 cannot echo as it is (empty, a separator or a control
    character in it, over 9 characters): the reader refuses the set, and the
    997 answers the group without an AK2 loop for it — an altered number
    would name another set (``00>2`` as ``002``) or none. AK9 counts it
    received, not accepted."""
    data = doc(order(1), order(2)).replace(b"ST*850*0002~", f"ST*850*{st02}~".encode(), 1)
    ic = read(data).interchanges[0]
    check_address(ic, ic.groups[0])
    text = build_997(ic, ic.groups[0], control_number=1, now=NOW).decode()
    segments = [seg.strip() for seg in text.split("~") if seg.strip()]
    assert [seg for seg in segments if seg.startswith("AK2")] == ["AK2*850*0001"]
    (ak9,) = [seg for seg in segments if seg.startswith("AK9")]
    assert ak9.split("*")[1:5] == ["P", "2", "2", "1"], ak9


def test_an_interchange_alone_is_addressed_without_a_group():
    """The TA1 answers the interchange alone: a group with an empty GS06
    gets no 997, but the interchange still gets its TA1."""
    ic = read(doc(order(1)).replace(b"*77*X*", b"**X*", 1)).interchanges[0]
    with pytest.raises(Unaddressable, match="GS06"):
        check_address(ic, ic.groups[0])
    check_address(ic)


# --- the 999 (005010X231A1): the same truth, for 5010 groups --------------------


def doc5010(*sets: str, ge: str | None = None) -> bytes:
    """``doc`` as a 5010 interchange: ISA12 00501 (ISA11 ^), GS08 005010."""
    data = doc(*sets, ge=ge).replace(b"*U*00401*", b"*^*00501*")
    return data.replace(b"*004010~", b"*005010~")


def ack999(data: bytes, **kwargs) -> tuple[bytes, list[list[str]]]:
    """The 999 for the first group of ``data``, and its segments as read back."""
    reader = read(data)
    ic = reader.interchanges[0]
    number = kwargs.pop("control_number", 42)
    out = build_ack(ic, ic.groups[0], kind=ACK_999, control_number=number, now=NOW, **kwargs)
    back = X12Reader(io.BytesIO(out))
    (ts,) = list(back.transaction_sets())
    assert back.errors == [] and back.warnings == [], back.errors
    assert ts.code == "999"
    return out, [s.elements for s in X12Reader(io.BytesIO(out)).scanner]


def body999(segments: list[list[str]]) -> list[str]:
    """The AK1, AK2, IK3, IK4, IK5 and AK9 segments, one string each."""
    return ["*".join(s) for s in segments if s[0][:2] in ("AK", "IK")]


def test_accepting_999():
    """A clean 5010 group gets ST*999 with the convention, AK1 echoing GS08,
    AK2 echoing ST03 (when the set had one), IK5 A per set and AK9 A; the GS
    is an FA group of 005010X231A1 with sender and receiver swapped."""
    with_st03 = order(2).replace("ST*850*0002~", "ST*850*0002*005010X220A1~")
    out, segs = ack999(doc5010(order(1), with_st03))
    assert body999(segs) == [
        "AK1*PO*77*005010",
        "AK2*850*0001",
        "IK5*A",
        "AK2*850*0002*005010X220A1",
        "IK5*A",
        "AK9*A*2*2*2",
    ]
    isa, gs, st = segs[0], segs[1], segs[2]
    assert (isa[11], isa[12], isa[13]) == ("^", "00501", "000000042")
    assert gs == ["GS", "FA", "OURAPP", "ACMEAPP", "20240506", "0708", "42", "X", "005010X231A1"]
    assert st == ["ST", "999", "0042", "005010X231A1"]
    assert segs[-3] == ["SE", str(len(segs) - 4), "0042"]
    assert out.endswith(b"GE*1*42~\nIEA*1*000000042~\n")


def test_999_partial_acceptance_with_ik3_ik4():
    """A bad element in the second set: IK3 (segment id, position from ST,
    no loop id, 8) and IK4 (position, no element reference, code, a copy of
    the bad value), IK5 R 5 for that set, and AK9 P because one is accepted."""
    _, segs = ack999(doc5010(order(1), order(2, lines=3)), rejected=late_problems("3"))
    assert body999(segs) == [
        "AK1*PO*77*005010",
        "AK2*850*0001",
        "IK5*A",
        "AK2*850*0002",
        "IK3*PO1*3**8",
        "IK4*2**7*0",
        "IK3*PO1*5**3",
        "IK5*R*5",
        "AK9*P*2*2*1",
    ]


def test_999_rejects_a_real_5010_file_with_a_wrong_se01():
    """draftedi's 5010 850 (SE01 9, 8 segments): IK5 R 4 and AK9 R."""
    _, segs = ack999((CORPUS / "draftedi__sample_850.edi").read_bytes())
    assert body999(segs) == [
        "AK1*PO*000000001*005010",
        "AK2*850*0001",
        "IK5*R*4",
        "AK9*R*1*1*0",
    ]
    assert segs[1][2:4] == ["TESTRECEIVER", "TESTSENDER"]


def test_999_accepts_only_what_was_posted():
    """With answers (what the application did), a well-formed set that was not
    posted is rejected, a posted one with warnings is E; AK9 P."""
    reader = read(doc5010(order(1), order(2)))
    ic = reader.interchanges[0]
    group = ic.groups[0]
    noted = X12Error("CTT01 is 2", segment_number=4, segment_id="PO1", element=1, code="7")
    answers = {id(group.sets[0]): SetAnswer(posted=True, errors=(noted,), warnings=True)}
    out = build_ack(ic, group, kind=ACK_999, control_number=5, answers=answers, now=NOW)
    segs = [s.elements for s in X12Reader(io.BytesIO(out)).scanner]
    assert body999(segs) == [
        "AK1*PO*77*005010",
        "AK2*850*0001",
        "IK3*PO1*2**8",
        "IK4*1**7",
        "IK5*E",
        "AK2*850*0002",
        "IK5*R",
        "AK9*P*2*2*1",
    ]


def test_999_codes_come_from_its_own_lists():
    """A code the 999's lists lack is replaced as an invalid one is in the 997:
    IK403 11 (no such 621 code) becomes 7, IK502 20 (no such 618 code) is
    left out; the 997 keeps both (its lists are not checked)."""
    element = X12Error("odd", segment_number=4, segment_id="PO1", element=3, code="11")
    whole = X12Error("odd set", segment_id="SE", code="20")
    rejected = {"0001": [element, whole]}
    _, segs = ack999(doc5010(order(1)), rejected=rejected)
    assert body999(segs)[1:5] == ["AK2*850*0001", "IK3*PO1*2**8", "IK4*3**7", "IK5*R*5"]
    _, segs = ack(doc(order(1)), rejected=rejected)
    assert body(segs)[1:5] == ["AK2*850*0001", "AK3*PO1*2**8", "AK4*3**11", "AK5*R*20*5"]


@pytest.mark.parametrize(
    ("isa12", "gs08", "wanted", "expected"),
    [
        ("00501", "005010", "999", "999"),
        ("00501", "005010X222A1", "999", "999"),
        ("00601", "006020", "999", "999"),
        ("00401", "004010", "999", "997"),  # no 999 before 5010
        ("00501", "004010", "999", "997"),  # the group's version decides
        ("00501", "", "999", "999"),  # no GS08: ISA12
        ("00501", "005010", "997", "997"),
    ],
)
def test_ack_kind_follows_the_groups_version(isa12, gs08, wanted, expected):
    """A 999 only for groups of 005010 and later, and only when one is wanted."""
    data = doc(order(1)).replace(b"*U*00401*", f"*^*{isa12}*".encode())
    data = data.replace(b"*004010~", f"*{gs08}~".encode())
    ic = read(data).interchanges[0]
    assert ack_kind(wanted, ic, ic.groups[0]).code == expected


def test_999_for_a_set_that_failed_at_the_se():
    """A set-level problem (segment id SE) goes into IK5, not an IK3."""
    cut = X12Error("the file ends inside this transaction set", segment_id="SE", code="2")
    _, segs = ack999(doc5010(order(1)), rejected={"0001": [cut]})
    assert body999(segs)[1:] == ["AK2*850*0001", "IK5*R*2", "AK9*R*1*1*0"]


def corpus_5010_groups() -> list[tuple[str, int, int]]:
    """The corpus groups of version 005010 or later (those a 999 answers)."""
    out = []
    for name, i, j in corpus_groups():
        ic = read_corpus(name).interchanges[i]
        if ack_kind("999", ic, ic.groups[j]).code == "999":
            out.append((name, i, j))
    return out


@pytest.mark.parametrize("name, i, j", corpus_5010_groups())
def test_999_for_every_5010_corpus_group_reads_back_clean(name, i, j):
    """Every 5010 group in the corpus gets a 999 our reader reads without
    error or warning, with an AK2 per set and the counts in AK9."""
    ic = read_corpus(name).interchanges[i]
    group = ic.groups[j]
    out = build_ack(ic, group, kind=ACK_999, control_number=7, now=NOW)
    back = X12Reader(io.BytesIO(out))
    (ts,) = list(back.transaction_sets())
    assert back.errors == [] and back.warnings == []
    assert ts.segments[0].elements == ["ST", "999", "0007", "005010X231A1"]
    ak9 = ts.segments[-2].elements
    assert ak9[0] == "AK9" and ak9[3] == str(len(group.sets))
    # no 997 answers a 997: a 997 in an FA group gets no AK2
    answered = [s for s in group.sets if not is_acknowledgement(group, s.code)]
    assert sum(s.tag == "AK2" for s in ts.segments) == len(answered)
    assert not any(s.tag in ("AK3", "AK4", "AK5") for s in ts.segments)
