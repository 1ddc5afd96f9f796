"""Unit tests of the X12 reader: each tolerance, each envelope check, streaming.

Documents are built as text here, so each test shows the bytes it is about.
"""

from __future__ import annotations

import io
import tracemalloc
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edi_inbox.errors import TruncatedError, X12Error
from edi_inbox.x12 import (
    Delimiters,
    SegmentScanner,
    X12Reader,
    read_segments,
    render,
    trailer_present,
)
from edi_inbox.x12.ack import isa_elements
from edi_inbox.x12.reader import MAX_PREFIXES
from edi_inbox.x12.scan import MAX_SEGMENT

ISA = (
    "ISA*00*          *00*          *ZZ*SENDER         *ZZ*RECEIVER       "
    "*240102*1200*U*00401*000000001*0*P*>~"
)
GROUP = (
    "GS*PO*SENDER*RECEIVER*20240102*1200*1*X*004010~"
    "ST*850*0001~BEG*00*SA*PO-1**20240102~PO1*1*2*EA*3.50**VP*X1~CTT*1~SE*5*0001~"
    "GE*1*1~"
)
GOOD = ISA + GROUP + "IEA*1*000000001~"


def read(data: bytes | str, chunk_size: int = 65536):
    """Read everything; return (reader, sets, fatal error or None)."""
    if isinstance(data, str):
        data = data.encode("latin-1")
    reader = X12Reader(io.BytesIO(data), chunk_size=chunk_size)
    sets = []
    try:
        for ts in reader.transaction_sets():
            sets.append(ts)
    except X12Error as err:
        return reader, sets, err
    return reader, sets, None


def tags(ts) -> list[str]:
    return [seg.tag for seg in ts.segments]


def codes(reader) -> list[tuple[str | None, int | None, str | None, int | None]]:
    return [(e.code, e.segment_number, e.segment_id, e.element) for e in reader.errors]


def test_good_interchange_reads_clean():
    """A plain interchange gives one set with its own segments and no errors."""
    reader, sets, fatal = read(GOOD)
    assert fatal is None and reader.errors == [] and reader.warnings == []
    (ts,) = sets
    assert (ts.code, ts.control_number) == ("850", "0001")
    assert tags(ts) == ["ST", "BEG", "PO1", "CTT", "SE"]
    assert [seg.number for seg in ts.segments] == [3, 4, 5, 6, 7]
    assert ts.segments[1].get(3) == "PO-1"
    (ic,) = reader.interchanges
    assert (ic.sender_id, ic.receiver_id, ic.control_number, ic.version) == (
        "SENDER",
        "RECEIVER",
        "000000001",
        "00401",
    )
    assert ic.delimiters == Delimiters("*", ">", "~", None)
    assert ic.encoding == "ascii"
    assert [
        (g.control_number, g.included, [s.segment_number for s in g.sets]) for g in ic.groups
    ] == [("1", 1, [3])]


def test_sets_are_yielded_one_at_a_time():
    """The generator hands out a set before the next one is read."""
    two = GROUP.replace("GE*1*1~", "ST*850*0002~BEG*00*SA*PO-2**20240102~SE*3*0002~GE*2*1~")
    reader = X12Reader(io.BytesIO((ISA + two + "IEA*1*000000001~").encode()))
    it = reader.transaction_sets()
    first = next(it)
    assert first.control_number == "0001" and reader.interchanges[0].groups[0].included is None
    second = next(it)
    assert second.control_number == "0002" and tags(second) == ["ST", "BEG", "SE"]
    assert list(it) == [] and reader.errors == []


# -- line breaks, padding, encodings ---------------------------------------------------


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r", "\n\n"])
def test_line_breaks_after_terminators_are_dropped(eol):
    """CR, LF or CRLF after each terminator do not reach the segments."""
    reader, sets, fatal = read(GOOD.replace("~", "~" + eol))
    assert fatal is None and reader.errors == []
    assert sets[0].segments[1].elements == ["BEG", "00", "SA", "PO-1", "", "20240102"]


@pytest.mark.parametrize("term, eol", [("\n", ""), ("\r", ""), ("\r", "\n")])
def test_line_break_as_terminator(term, eol):
    """LF, CR, or CR followed by LF can be the segment terminator itself."""
    reader, sets, fatal = read(GOOD.replace("~", term + eol))
    assert fatal is None and reader.errors == []
    assert reader.interchanges[0].delimiters.segment == term
    assert tags(sets[0]) == ["ST", "BEG", "PO1", "CTT", "SE"]


def test_bom_whitespace_and_ctrl_z_around_the_interchange():
    """A UTF-8 BOM, blank lines before, spaces and Ctrl-Z after are padding."""
    data = b"\xef\xbb\xbf\r\n  " + GOOD.encode() + b"\r\n   \x1a\x00"
    reader, sets, fatal = read(data)
    assert fatal is None and reader.errors == [] and len(sets) == 1


def test_indented_segments_are_read():
    """Tabs or spaces in front of segments (pretty-printed files) are dropped."""
    data = GOOD.replace("~", "~\r\n\t  ")
    reader, sets, fatal = read(data)
    assert fatal is None and reader.errors == []
    assert tags(sets[0]) == ["ST", "BEG", "PO1", "CTT", "SE"]


@pytest.mark.parametrize(
    "elem, term",
    [(e, t) for e in "\x1c\x1d\x1f\x7f" for t in "\x15\x1e\x1d" if e != t],
)
def test_control_character_delimiters(elem, term):
    """Control characters that Python calls whitespace work as delimiters."""
    data = GOOD.replace("*", elem).replace("~", term)
    reader, sets, fatal = read(data.encode("latin-1"))
    assert fatal is None and reader.errors == []
    assert reader.interchanges[0].delimiters == Delimiters(elem, ">", term)
    assert sets[0].segments[1].elements == ["BEG", "00", "SA", "PO-1", "", "20240102"]


def test_no_whitespace_stripping_of_values():
    """Values keep 0x1C-0x1F and U+0085 and spaces: only delimiters cut them."""
    d = "\x1d"  # element separator; the component separator is 0x1F
    body = "N1*BY*\x1c A\x85B \x1fC *92~".replace("*", d)
    data = GOOD.replace("*", d).replace(">~", "\x1f~").replace("CTT", body + "CTT")
    data = data.replace("SE*5".replace("*", d), "SE*6".replace("*", d))
    reader, sets, fatal = read(data.encode("utf-8"))
    assert fatal is None and reader.errors == []
    n1 = sets[0].segments[3]
    assert n1.elements == ["N1", "BY", "\x1c A\x85B \x1fC ", "92"]
    assert n1.components(2, reader.interchanges[0].delimiters) == ["\x1c A\x85B ", "C "]


@pytest.mark.parametrize("width", range(40, 112, 3))
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_hard_wrapped_lines(width, newline):
    """A file wrapped at any column (even inside the ISA or the IEA) reads as if unwrapped."""
    flat = GOOD
    data = newline.join(flat[i : i + width] for i in range(0, len(flat), width)) + newline
    reader, sets, fatal = read(data)
    assert fatal is None and reader.errors == []
    assert sets[0].segments[1].elements == ["BEG", "00", "SA", "PO-1", "", "20240102"]


@pytest.mark.parametrize("cut", [102, 103, 104, 105])
def test_wrap_right_before_isa16_or_terminator(cut):
    """A line break just before ISA16 or the terminator is not taken for either."""
    data = GOOD[:cut] + "\n" + GOOD[cut:]
    reader, _, fatal = read(data)
    assert fatal is None and reader.errors == []
    assert reader.interchanges[0].delimiters == Delimiters("*", ">", "~")


def test_wrapped_iea_split_across_lines():
    """An IEA cut by the wrap ("I" / "EA*1*...") is still found."""
    data = GOOD.replace("~IEA", "~I\r\nEA").replace("~GS", "\n~GS")
    reader, sets, fatal = read(data, chunk_size=7)
    assert fatal is None and reader.errors == [] and len(sets) == 1


def ebcdic(text: str) -> bytes:
    """Text as an EBCDIC mainframe sends it: cp500, NL terminators, 80-byte records."""
    out = []
    for seg in text.split("~")[:-1]:
        record = seg + "\x85"
        out.append(record.ljust(-(-len(record) // 80) * 80))
    return "".join(out).encode("cp500")


def test_ebcdic_file():
    """EBCDIC is detected and decoded as cp500; NL ends segments, record padding goes."""
    reader, sets, fatal = read(ebcdic(GOOD))
    assert fatal is None and reader.errors == []
    ic = reader.interchanges[0]
    assert ic.encoding == "cp500" and ic.delimiters.segment == "\x85"
    assert sets[0].segments[1].elements == ["BEG", "00", "SA", "PO-1", "", "20240102"]


@pytest.mark.parametrize(
    "raw, encoding, name",
    [
        ("Müller & Söhne".encode("cp1252"), "cp1252", "Müller & Söhne"),
        ("Müller “Söhne”".encode(), "utf-8", "Müller “Söhne”"),
        # cp1252's gap 0x81 read as latin-1 reads it
        ("Caf\xe9 \x81".encode("latin-1"), "cp1252", "Caf\xe9 \x81"),
    ],
)
def test_non_ascii_names_are_decoded_not_mangled(raw, encoding, name):
    """UTF-8 is tried first, then cp1252 (its gaps as latin-1); the encoding is recorded."""
    head, tail = GOOD.encode().split(b"CTT")
    data = head + b"N1*BY*" + raw + b"~CTT" + tail.replace(b"SE*5", b"SE*6")
    reader, sets, fatal = read(data, chunk_size=97)
    assert fatal is None and reader.errors == []
    assert reader.interchanges[0].encoding == encoding
    assert sets[0].segments[3].elements == ["N1", "BY", name]


@pytest.mark.parametrize("chunk_size", [97, 65536])
def test_each_interchange_of_a_mailbag_is_decoded_as_its_partner_wrote_it(chunk_size):
    """A UTF-8 interchange, a cp1252 one and a UTF-8 one again (a UTF-8 BOM
    in front of it) in one file: each name as written, each interchange's
    encoding its own, however the file falls into chunks."""
    head, tail = GOOD.encode().split(b"CTT")

    def interchange(name: bytes) -> bytes:
        return head + b"N1*BY*" + name + b"~CTT" + tail.replace(b"SE*5", b"SE*6")

    names = ["Müller “Söhne”", "Gärtner AG", "Ærø Øl"]
    data = (
        interchange(names[0].encode())
        + b"\r\n"
        + interchange(names[1].encode("cp1252"))
        + b"\xef\xbb\xbf"
        + interchange(names[2].encode())
    )
    reader, sets, fatal = read(data, chunk_size=chunk_size)
    assert fatal is None and reader.errors == []
    assert [ic.encoding for ic in reader.interchanges] == ["utf-8", "cp1252", "utf-8"]
    assert [ts.segments[3].elements[2] for ts in sets] == names


def test_utf8_character_split_between_chunks():
    """A multi-byte character cut by the chunk boundary decodes whole."""
    data = GOOD.replace("PO-1", "PÖ-€").encode()
    for size in range(1, 12):
        _, sets, fatal = read(data, chunk_size=size)
        assert fatal is None and sets[0].segments[1].get(3) == "PÖ-€", size


# -- lenient readings that are reported ---------------------------------------------


def test_nbsp_padding_in_isa_is_read_and_warned():
    """Non-breaking spaces padding the ISA are read as spaces, with a warning."""
    data = GOOD.replace("SENDER         ", "SENDER" + " \xa0" * 4 + " ")
    reader, sets, fatal = read(data.encode())
    assert fatal is None and reader.errors == [] and len(sets) == 1
    assert reader.interchanges[0].sender_id == "SENDER"
    assert ["non-breaking" in w.message for w in reader.warnings] == [True]


def test_missing_isa16_with_line_breaks():
    """'~' in the ISA16 place and '~' + LF after every segment: LF is the terminator."""
    data = GOOD.replace("*P*>~", "*P*~").replace("~", "~\n")
    data = data.replace("CTT*1~\n", "CTT*1\n")  # one segment even lacks its '~'
    reader, sets, fatal = read(data)
    assert fatal is None and reader.errors == []
    assert reader.interchanges[0].delimiters == Delimiters("*", "~", "\n")
    assert sets[0].segments[1].elements == ["BEG", "00", "SA", "PO-1", "", "20240102"]
    assert sets[0].segments[3].elements == ["CTT", "1"]
    assert [(w.segment_id, w.element, w.code) for w in reader.warnings] == [("ISA", 16, "027")]


def test_missing_isa16_terminator_moved_up():
    """'*P*~GS': ISA16 left out; '~' still terminates and a component separator is assumed."""
    reader, sets, fatal = read(GOOD.replace("*P*>~", "*P*~"))
    assert fatal is None and reader.errors == [] and len(sets) == 1
    assert reader.interchanges[0].delimiters == Delimiters("*", ">", "~")
    assert reader.warnings[0].code == "027"


def test_unterminated_last_segment_is_warned():
    """An IEA without terminator at the very end is accepted with a warning."""
    reader, sets, fatal = read(GOOD.removesuffix("~") + "\n")
    assert fatal is None and reader.errors == [] and len(sets) == 1
    assert [w.message for w in reader.warnings] == ["the last segment has no segment terminator"]


def test_unpadded_iea02_is_accepted():
    """IEA02 '1' for ISA13 '000000001' is the same number: a warning, not an error."""
    reader, _, fatal = read(GOOD.replace("IEA*1*000000001", "IEA*1*1"))
    assert fatal is None and reader.errors == []
    assert [(w.segment_id, w.element) for w in reader.warnings] == [("IEA", 2)]


def test_repetition_separator_only_from_00402():
    """ISA11 is a repetition separator from version 00402 on, and only if not a letter."""
    for version, isa11, expected in [
        ("00401", "^", None),
        ("00402", "^", "^"),
        ("00501", "U", None),
        ("00501", "!", "!"),
    ]:
        data = GOOD.replace("*U*00401*", f"*{isa11}*{version}*")
        reader, _, fatal = read(data)
        assert fatal is None
        assert reader.interchanges[0].delimiters.repetition == expected, (version, isa11)


def test_mailbag_each_interchange_sniffed_afresh():
    """Interchanges with different delimiters in one file each read with their own."""
    second = GOOD.replace("*", "|").replace("~", "\x15\r\n").replace(">\x15", "}\x15")
    second = second.replace("000000001", "000000002")
    third = GOOD.replace("~", "\n").replace("000000001", "000000003")
    reader, sets, fatal = read(GOOD + "\r\n" + second + third, chunk_size=50)
    assert fatal is None and reader.errors == []
    assert [ic.delimiters for ic in reader.interchanges] == [
        Delimiters("*", ">", "~"),
        Delimiters("|", "}", "\x15"),
        Delimiters("*", ">", "\n"),
    ]
    assert [ts.interchange.control_number for ts in sets] == ["000000001", "000000002", "000000003"]
    assert all(tags(ts) == ["ST", "BEG", "PO1", "CTT", "SE"] for ts in sets)


def test_segment_numbers_restart_with_each_isa():
    """read_segments numbers segments from 1 at every ISA."""
    numbers = [(s.tag, s.number) for s in read_segments(io.BytesIO((GOOD + GOOD).encode()))]
    assert numbers[:3] == [("ISA", 1), ("GS", 2), ("ST", 3)]
    assert numbers[8:11] == [("IEA", 9), ("ISA", 1), ("GS", 2)]


def test_scanner_tells_the_delimiters_of_the_current_interchange():
    """SegmentScanner exposes the delimiters while its segments are read."""
    scanner = SegmentScanner(io.BytesIO(GOOD.replace("*", "|").encode()))
    first = next(iter(scanner))
    assert first.tag == "ISA" and scanner.delimiters == Delimiters("|", ">", "~")


# -- envelope checks --------------------------------------------------------------------


def test_isa_with_15_elements_is_fatal():
    """An ISA missing an element is not guessed at."""
    _, _, fatal = read(GOOD.replace("*0*P*>~", "*P*>~"))
    assert isinstance(fatal, X12Error) and not isinstance(fatal, TruncatedError)
    assert fatal.segment_id == "ISA" and "16" in fatal.message


def test_isa_with_17_elements_is_fatal():
    """An ISA with an element too many is refused."""
    _, _, fatal = read(GOOD.replace("*P*>~", "*P*>*X~"))
    assert isinstance(fatal, X12Error) and fatal.segment_id == "ISA"


def test_isa13_must_match_iea02():
    """IEA02 different from ISA13: TA1 code 001 at the IEA, element 2."""
    reader, sets, fatal = read(GOOD.replace("IEA*1*000000001", "IEA*1*000000002"))
    assert fatal is None and len(sets) == 1
    assert codes(reader) == [("001", 9, "IEA", 2)]
    assert reader.interchanges[0].errors == reader.errors


def test_iea01_counts_groups():
    """IEA01 must be the number of groups: TA1 code 021."""
    reader, _, _ = read(GOOD.replace("IEA*1*", "IEA*2*"))
    assert codes(reader) == [("021", 9, "IEA", 1)]


def test_gs06_must_match_ge02():
    """GE02 different from GS06: AK9 code 4 on the group."""
    reader, _, _ = read(GOOD.replace("GE*1*1~", "GE*1*2~"))
    assert codes(reader) == [("4", 8, "GE", 2)]
    assert reader.interchanges[0].groups[0].errors == reader.errors


def test_ge01_counts_sets():
    """GE01 must be the number of sets: AK9 code 5."""
    reader, _, _ = read(GOOD.replace("GE*1*1~", "GE*3*1~"))
    assert codes(reader) == [("5", 8, "GE", 1)]
    assert reader.interchanges[0].groups[0].included == 3


def test_st02_must_match_se02():
    """SE02 different from ST02: AK5 code 3 on the set."""
    reader, sets, _ = read(GOOD.replace("SE*5*0001", "SE*5*0002"))
    assert codes(reader) == [("3", 7, "SE", 2)]
    assert sets[0].errors == reader.errors
    assert reader.interchanges[0].groups[0].sets[0].errors == reader.errors


@pytest.mark.parametrize("se01", ["4", "6", "", "five"])
def test_se01_counts_segments(se01):
    """SE01 must count ST to SE: AK5 code 4 at the SE, element 1."""
    reader, _, _ = read(GOOD.replace("SE*5*", f"SE*{se01}*"))
    assert codes(reader) == [("4", 7, "SE", 1)]


def test_missing_se_before_next_st():
    """An ST while a set is open: the open set is handed out with AK5 code 2."""
    data = GOOD.replace("SE*5*0001~GE*1*1", "ST*850*0002~BEG*00*SA*P2**20240102~SE*3*0002~GE*2*1")
    _, sets, fatal = read(data)
    assert fatal is None and [ts.control_number for ts in sets] == ["0001", "0002"]
    assert [(e.code, e.segment_id) for e in sets[0].errors] == [("2", "SE")]
    assert tags(sets[0]) == ["ST", "BEG", "PO1", "CTT"] and sets[1].errors == []


def test_missing_ge_before_iea():
    """An IEA while a group is open: AK9 code 3 on the group."""
    reader, _, fatal = read(GOOD.replace("GE*1*1~", ""))
    assert fatal is None
    assert codes(reader) == [("3", 8, "GE", None)]


def test_missing_iea_before_next_isa():
    """A new ISA while an interchange is open: TA1 023 on the first one."""
    reader, sets, fatal = read(GOOD.replace("IEA*1*000000001~", "") + GOOD)
    assert fatal is None and len(sets) == 2
    assert codes(reader) == [("023", 9, "IEA", None)]
    assert reader.interchanges[0].errors == reader.errors


def test_st_outside_a_group():
    """An ST with no GS before it is reported (TA1 022) and its segments skipped."""
    data = ISA + "ST*850*0001~BEG*00~SE*3*0001~" + GROUP + "IEA*1*000000001~"
    reader, sets, fatal = read(data)
    assert fatal is None and len(sets) == 1
    assert codes(reader) == [("022", 2, "ST", None)]


def test_segments_outside_a_set_are_reported_once():
    """A run of segments between SE and GE is one error on the group."""
    reader, _, _ = read(GOOD.replace("GE*1*1", "N1*XX~N1*YY~GE*1*1"))
    assert codes(reader) == [(None, 8, "N1", None)]
    assert reader.interchanges[0].groups[0].errors == reader.errors


def test_known_segments_outside_a_set_are_reported_once():
    """Strays of an ID already read inside a set take the same way as new ones."""
    reader, _, _ = read(GOOD.replace("GE*1*1", "PO1*9~CTT*2~BEG*00~GE*1*1"))
    assert codes(reader) == [(None, 8, "PO1", None)]


@pytest.mark.parametrize("chunk_size", [16, 65536])
def test_many_segment_ids_and_bare_ids_are_kept(chunk_size):
    """More data IDs than the hot path tests for (MAX_PREFIXES), and IDs with no
    element: every segment kept, in order, with its number."""
    ids = [f"Z{i:02d}" for i in range(MAX_PREFIXES + 8)]
    body = [f"{tag}*{n}" for n in range(2) for tag in ids] + ["CTT", "PO1*1", "CTT"]
    st = ["ST*850*0001", *body, f"SE*{len(body) + 2}*0001"]
    gs = GROUP.split("~")[0]
    data = ISA + gs + "~" + "~".join(st) + "~GE*1*1~IEA*1*000000001~"
    reader, sets, fatal = read(data, chunk_size=chunk_size)
    assert fatal is None and reader.errors == []
    (ts,) = sets
    assert [seg.elements for seg in ts.segments] == [s.split("*") for s in st]
    assert [seg.number for seg in ts.segments] == list(range(3, 3 + len(st)))


def test_ta1_between_isa_and_gs_is_allowed():
    """A TA1 before the first GS is part of the interchange, not an error."""
    reader, _, fatal = read(GOOD.replace("~GS*", "~TA1*000000001*240102*1200*A*000~GS*"))
    assert fatal is None and reader.errors == []


def test_bad_segment_id_is_an_ak3_error():
    """A segment ID that is not 2-3 upper-case characters gets AK3 code 1."""
    reader, _, _ = read(GOOD.replace("CTT*1", "ctt*1"))
    assert codes(reader) == [("1", 6, "ctt", None)]


def test_every_error_is_collected_in_file_order():
    """Several problems: all reported, in the order of the file."""
    data = GOOD.replace("SE*5*0001", "SE*4*0002").replace("GE*1*1", "GE*2*9")
    data = data.replace("IEA*1*000000001", "IEA*3*000000007")
    reader, _, fatal = read(data)
    assert fatal is None
    assert [e.code for e in reader.errors] == ["4", "3", "5", "4", "021", "001"]


# -- fatal problems -----------------------------------------------------------------------


def test_not_x12():
    """Anything not starting with an ISA is refused with a clear message."""
    _, _, fatal = read(b"Tk9OIEVESSBGSUxFISAasadsdfs")
    assert type(fatal) is X12Error
    assert fatal.message.startswith("not X12: the file does not start with an ISA segment")


@pytest.mark.parametrize("data", [b"", b"  \r\n\x1a"])
def test_empty_file_is_truncated(data):
    """A file without any content may be an upload that has not begun."""
    _, _, fatal = read(data)
    assert isinstance(fatal, TruncatedError)


@pytest.mark.parametrize(
    "cut, missing",
    [
        ("BEG", "SE"),  # inside the set
        ("GE*", "GE"),  # after the SE
        ("IEA", "IEA"),  # after the GE
    ],
)
def test_truncated_before_trailers(cut, missing):
    """A file that stops before SE/GE/IEA raises TruncatedError, never a partial read."""
    data = GOOD[: GOOD.index(cut)]
    reader, _, fatal = read(data)
    assert isinstance(fatal, TruncatedError)
    assert fatal.segment_id == missing and fatal in reader.errors


def test_truncated_inside_the_isa():
    """A file that ends inside the ISA is truncated, not malformed."""
    _, _, fatal = read(GOOD[:35])
    assert isinstance(fatal, TruncatedError) and fatal.segment_id == "ISA"


def test_truncated_inside_the_iea():
    """'IEA*1*0000' at the end is a cut upload, not a control number mismatch."""
    _, _, fatal = read(GOOD[:-6])
    assert isinstance(fatal, TruncatedError)


def test_junk_after_the_iea():
    """Something other than an ISA after an IEA is refused."""
    _, sets, fatal = read(GOOD + "hello")
    assert type(fatal) is X12Error and "not another ISA" in fatal.message
    assert len(sets) == 1


def test_missing_terminator_does_not_eat_memory():
    """Megabytes without the terminator end in an error, not an ever-growing buffer."""
    data = ISA + "GS*" + "A" * (MAX_SEGMENT + 10)
    _, _, fatal = read(data)
    assert isinstance(fatal, X12Error) and "terminator" in fatal.message


# -- streaming ------------------------------------------------------------------------------


class Orders(io.RawIOBase):
    """A stream of one interchange with ``count`` 850s, made on the fly (never all in memory)."""

    def __init__(self, count: int) -> None:
        self._parts = self._generate(count)
        self._buf = b""

    @staticmethod
    def _generate(count):
        yield ISA.encode() + b"GS*PO*S*R*20240102*1200*1*X*004010~\n"
        for i in range(count):
            lines = b"".join(b"PO1*%d*2*EA*3.50**VP*ITEM-%d~\n" % (n, n) for n in range(20))
            yield b"ST*850*%04d~\nBEG*00*SA*PO%d**20240102~\n%sSE*23*%04d~\n" % (i, i, lines, i)
        yield b"GE*%d*1~\nIEA*1*000000001~\n" % count

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while len(self._buf) < len(b):
            part = next(self._parts, None)
            if part is None:
                break
            self._buf += part
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def test_memory_stays_bounded():
    """Reading ~12 MB of orders needs < 4 MB working memory; only set summaries accumulate."""
    reader = X12Reader(io.BufferedReader(Orders(20_000)))
    tracemalloc.start()
    try:
        count = sum(1 for _ in reader.transaction_sets())
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000 and reader.errors == []
    assert peak - kept < 4 * 1024 * 1024  # chunks, batches, the set being read
    assert kept < 20_000 * 300  # the SetSummary of each set, for the 997


# -- round trip -------------------------------------------------------------------------------

ELEMENTS = "*|^~+!\x1c\x1d\x1f\x7f"
COMPONENTS = ">:^\\}@\x1e\x1f"
TERMINATORS = "~'|\n\r\x15\x1d\x1e"
VALUE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZIEAS0123456789 .-/#&,()éü"


@st.composite
def documents(draw):
    """A random well-formed interchange: legal delimiters, line ends, indentation or wraps."""
    elem = draw(st.sampled_from(ELEMENTS))
    comp = draw(st.sampled_from([c for c in COMPONENTS if c != elem]))
    term = draw(st.sampled_from([c for c in TERMINATORS if c not in (elem, comp)]))
    version, rep = draw(st.sampled_from([("00401", None), ("00501", "{"), ("00403", "`")]))
    d = Delimiters(elem, comp, term, rep)
    value = st.text(st.sampled_from(VALUE_CHARS), max_size=12)
    tag = st.sampled_from(["BEG", "N1", "PO1", "REF", "N9"])
    segment = st.tuples(tag, st.lists(value, min_size=0, max_size=6))
    sets = draw(st.lists(st.lists(segment, min_size=0, max_size=6), min_size=1, max_size=3))
    body = []
    for i, segs in enumerate(sets, 1):
        lines = [[tag, *values] for tag, values in segs]
        body += [["ST", "850", f"{i:04d}"], *lines, ["SE", str(len(lines) + 2), f"{i:04d}"]]
    isa = isa_elements(
        sender=("ZZ", "S"),
        receiver=("ZZ", "R"),
        control_number=7,
        version=version,
        delimiters=d,
        now=datetime(2024, 1, 2, 3, 4),
    )
    gs = ["GS", "PO", "S", "R", "20240102", "0304", "7", "X", version + "0"]
    segments = [isa, gs, *body, ["GE", str(len(sets)), "7"], ["IEA", "1", "000000007"]]
    eol = "" if term in "\r\n" else draw(st.sampled_from(["", "\n", "\r\n"]))
    if term == "\r":
        eol = draw(st.sampled_from(["", "\n"]))
    indent = draw(st.sampled_from(["", "", " ", "\t", "  \t"]))
    text = render(segments, d, eol + indent)
    if term not in "\r\n" and not eol and not indent and draw(st.booleans()):
        width = draw(st.integers(20, 120))
        wrap = draw(st.sampled_from(["\n", "\r\n"]))
        text = wrap.join(text[i : i + width] for i in range(0, len(text), width))
    return text.encode("utf-8"), d, segments


@settings(max_examples=300, deadline=None)
@given(documents(), st.sampled_from([1, 2, 5, 17, 64, 4096]))
def test_round_trip_any_delimiters(doc, chunk_size):
    """Any legal delimiters, line ends, indentation, wraps, chunk size: same segments back."""
    data, d, segments = doc
    reader, sets, fatal = read(data, chunk_size=chunk_size)
    assert fatal is None, fatal
    assert reader.errors == [] and reader.warnings == []
    assert reader.interchanges[0].delimiters == d
    got = [seg.elements for ts in sets for seg in ts.segments]
    want = [list(seg) for seg in segments if seg[0] not in ("ISA", "GS", "GE", "IEA")]
    assert got == want


@settings(max_examples=150, deadline=None)
@given(
    st.lists(documents(), min_size=2, max_size=4),
    st.lists(st.sampled_from(["", "\r\n", "\n", "  "]), min_size=4, max_size=4),
    st.sampled_from([1, 3, 29, 4096]),
)
def test_round_trip_mailbag(docs, gaps, chunk_size):
    """Interchanges with different delimiters in one file each come back with their own."""
    data = b"".join(doc[0] + gap.encode() for doc, gap in zip(docs, gaps, strict=False))
    reader, sets, fatal = read(data, chunk_size=chunk_size)
    assert fatal is None, fatal
    assert reader.errors == []
    assert [ic.delimiters for ic in reader.interchanges] == [d for _, d, _ in docs]
    got = [seg.elements for ts in sets for seg in ts.segments]
    want = [
        list(seg)
        for _, _, segments in docs
        for seg in segments
        if seg[0] not in ("ISA", "GS", "GE", "IEA")
    ]
    assert got == want


# -- trailer_present -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tail",
    [
        b"GE*1*1~IEA*1*000000001~",
        b"GE*1*1~\r\nIEA*1*000000001~\r\n",
        b"GE*1*1\nIEA*1*000000001\n",
        b"IEA*1*000000001\x15\r\n  \x1a",
        b"IEA*1*000000001~" + b" " * 60 + b"\n\x00\x00",
        b"IEA*2*3438",  # no terminator at the very end (ediengine)
        b"IEA*1*000000730*~",  # every element written, the last one empty
        b"IEA*1*000000730**~\r\n",
        b"IEA*1*00000\r\n0001~",  # wrapped at 80 columns
        b"IEA\x7f1\x7f000000001\x15",
        b"GE\x1d1\x1d1\x1cIEA\x1d1\x1d000000001\x1c",  # control characters as delimiters
        ebcdic("GE*1*1~IEA*1*000000183~"),
    ],
)
def test_trailer_present(tail):
    """A tail ending with an IEA (any padding, EBCDIC, wrapped) is complete."""
    assert trailer_present(tail)


def test_an_iea_ending_with_a_separator_is_complete_for_reader_and_watcher():
    """A file the reader takes whole is one the watcher does not hold as unfinished."""
    data = GOOD.replace("IEA*1*000000001~", "IEA*1*000000001*~")
    reader, sets, fatal = read(data)
    assert fatal is None and reader.errors == [] and len(sets) == 1
    assert trailer_present(data.encode()[-4096:])


@pytest.mark.parametrize(
    "tail",
    [
        b"",
        b"ST*850*0001~BEG*00*SA*PO1~PO1*1*10*EA*25.00**BP*ITEM001~",
        b"SE*5*0001~GE*1*1~",
        b"IEA*1*000000001~ISA*00*     ",  # a second interchange still arriving
        b"IEA*1*",
        b"IEA*1**~",  # IEA02 not there yet: separators alone do not finish the IEA
        ebcdic("SE*5*0001~GE*1*1~"),
    ],
)
def test_trailer_absent(tail):
    """A tail that stops anywhere else is still arriving."""
    assert not trailer_present(tail)


def test_segments_after_an_iea_hidden_in_a_wrap_are_fatal():
    """Data after an IEA that only the reader recognises is refused, not asserted on."""
    # the ISA is not wrapped, so the scanner does not look for an IEA cut by a line break
    data = GOOD.replace("~IEA*1*000000001~", "~I\nEA*1*000000001~N1*XX~")
    _, sets, fatal = read(data)
    assert type(fatal) is X12Error and "after the IEA" in fatal.message
    assert len(sets) == 1


# -- regression samples (tests/data/regress, named after what they caught) ------------

REGRESS = Path(__file__).parent / "data" / "regress"
REGRESSIONS = {
    # file: (sets read, fatal error type or None, [(code, segment number, id, element)])
    "isa-15-elements-not-missing-isa16.x12": (0, X12Error, [("022", 1, "ISA", None)]),
    "isa16-missing-terminator-moved-up.x12": (1, None, []),
    "wrapped-iea-split-across-lines.x12": (1, None, []),
    "truncated-inside-iea.x12": (1, TruncatedError, [("023", 9, "IEA", None)]),
    "missing-iea-then-other-delimiters.x12": (2, None, [("023", 9, "IEA", None)]),
    "isa-and-iea-inside-data.x12": (1, None, []),
}


def test_every_regression_sample_has_a_row():
    """The table covers exactly the files in tests/data/regress."""
    assert sorted(REGRESSIONS) == sorted(p.name for p in REGRESS.iterdir())


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regression_sample(name):
    """Each sample reads as it should since the bug it is named after was fixed."""
    count, fatal_type, errors = REGRESSIONS[name]
    reader, sets, fatal = read((REGRESS / name).read_bytes())
    assert len(sets) == count
    assert type(fatal) is fatal_type if fatal_type else fatal is None
    assert codes(reader) == errors
    for size in (1, 7):  # and at any chunk size
        _, again, _ = read((REGRESS / name).read_bytes(), chunk_size=size)
        assert [[s.elements for s in ts.segments] for ts in again] == [
            [s.elements for s in ts.segments] for ts in sets
        ]
