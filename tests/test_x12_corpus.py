"""The reader over every real X12 file in tests/data/corpus, against what SOURCES.md says.

Each row: interchanges/groups/sets, the ST01 codes, the first ISA's element,
component and terminator characters, the encoding, and the outcome — OK, the
exact errors (997/TA1 code, segment number from the ISA, segment id, element),
TRUNCATED or NOT_X12 — plus the warnings (what was read leniently).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edi_inbox.errors import TruncatedError, X12Error
from edi_inbox.x12 import X12Reader

CORPUS = Path(__file__).parent / "data" / "corpus"
OK: list = []
TRUNCATED = "TRUNCATED"
NOT_X12 = "NOT_X12"

# fmt: off
EXPECTED = {
    # file: (ISA/GS/ST, ST01, (element, component, terminator), encoding, outcome, warnings)
    "badx12__error_validation.edi": ("1/1/1", "835", ("*", ":", "~"), "ascii", [
        ("4", 29, "SE", 1), ("3", 29, "SE", 2),  # SE01 30 for 27 segments; SE02 != ST02
        ("5", 30, "GE", 1), ("4", 30, "GE", 2),  # GE01 2 for 1 set; GE02 != GS06
        ("021", 31, "IEA", 1), ("001", 31, "IEA", 2),  # IEA01 2 for 1 group; IEA02 != ISA13
    ], []),
    "badx12__segment_terminator.edi": ("1/0/0", "-", ("*", ":", "\n"), "ascii", TRUNCATED, []),
    "botsplugins__810-004010-01.x12": ("1/1/2", "810", ("*", ":", "~"), "ascii", OK, []),
    "botsplugins__850-004010-01.x12": ("1/1/1", "850", ("*", "@", "\n"), "ascii", OK, []),
    "botsplugins__850-004010-02.x12": ("1/2/4", "850", ("*", "+", "~"), "ascii", OK, []),
    "botsplugins__850-004010-03.x12": ("1/1/1", "850", ("*", ">", "~"), "ascii", OK, []),
    "botsplugins__850-004010-04.x12": ("1/1/1", "850", ("*", ">", "~"), "ascii", OK, []),
    "botsplugins__850-004010-05.x12": ("1/1/2", "850", ("*", ">", "~"), "ascii", OK, []),
    "botsplugins__850-004010-06.x12": ("1/1/1", "850", ("*", "^", "~"), "ascii", OK, []),
    "botsplugins__850-004010-07.x12": ("1/1/2", "850", ("*", ">", "~"), "ascii", OK, []),
    # hard-wrapped at 80 columns (LF, then CRLF): read as Bots does
    "botsplugins__850-004010-08.x12": ("1/1/2", "850", ("*", ">", "~"), "ascii", OK, []),
    "botsplugins__850-004010.16.x12": ("1/1/2", "850", ("*", ">", "~"), "ascii", OK, []),
    "botsplugins__850-004010-10.x12": ("1/1/2", "850", ("*", "}", "\x15"), "ascii", OK, []),
    "botsplugins__850-004010-12.x12": ("3/3/3", "850", ("*", ">", "~"), "ascii", OK, []),
    "botsplugins__850-004010-ascii-lf.x12": ("1/1/1", "850", ("*", ">", "\n"), "ascii", OK, []),
    "botsplugins__850-004010.13.x12": ("1/1/1", "850", ("*", ">", "\r"), "ascii", OK, []),
    "botsplugins__850-004010.14.x12": ("3/3/3", "850", ("*", ">", "\r"), "ascii", OK, []),
    "botsplugins__850-004010.15.x12": ("1/1/4", "850", ("|", ">", "~"), "ascii", OK, []),
    "botsplugins__850-004010VICS-01.x12": ("1/1/4", "850", ("\x7f", ">", "\x15"), "ascii", OK, []),
    "botsplugins__850-004030-02.x12": ("1/1/3", "850", ("*", ":", "\x15"), "ascii", OK, []),
    "botsplugins__850_01.x12": ("1/1/1", "850", ("~", "|", "\n"), "ascii", OK, []),
    "botsplugins__855-004010UCS-01.x12": ("1/1/6", "855", ("*", ">", "~"), "ascii", OK, []),
    "botsplugins__856_1.x12": ("1/1/1", "856", ("*", ">", "~"), "ascii", OK, []),
    "botsplugins__997-004010VICS-01.x12": ("1/1/1", "997", ("*", ">", "\x15"), "ascii", OK, []),
    "botsplugins__997_11.x12": ("1/1/3", "997", ("*", ">", "~"), "ascii", OK, []),
    "botsplugins__PARTNER2_20130123_1.x12": ("1/1/2", "856", ("+", ":", "'"), "ascii", OK, []),
    "botsplugins__ebcdic.x12": ("1/1/1", "850", ("*", ">", "\x85"), "cp500", OK, []),
    # SOURCES.md's count column says 4/4/6, its note says 8 ISAs: the file holds 8/9/14
    "botsplugins__mailbag01.x12": ("8/9/14", "820,850,997", ("*", ">", "\x15"), "ascii", OK, []),
    "botsplugins__testx12020.x12.txt": ("2/8/12", "278,835,837", ("*", ":", "~"), "ascii", OK, []),
    "draftedi__malformed_isa.edi": ("0/0/0", "-", None, None, TRUNCATED, []),
    "draftedi__missing_gs.edi": ("1/0/0", "-", ("*", ">", "~"), "ascii", OK, [("IEA", None)]),
    "draftedi__sample_850.edi": ("1/1/1", "850", ("*", ">", "~"), "ascii", [
        ("4", 10, "SE", 1),  # SE01 9, the set has 8 segments
    ], []),
    "draftedi__sample_997.edi": ("1/1/1", "997", ("*", ">", "~"), "ascii", OK, []),
    "draftedi__truncated_file.edi": ("1/1/0", "-", ("*", ">", "~"), "ascii", TRUNCATED, []),
    "ediengine__850.Composite.SLN.OK.edi": ("1/1/1", "850", ("*", ">", "\n"), "ascii", OK, []),
    "ediengine__850.OK.edi": ("1/1/1", "850", ("*", ">", "\n"), "ascii", OK, []),
    "ediengine__850.SyntaxNotes.ERR.edi": ("1/1/1", "850", ("*", ">", "\n"), "ascii", OK, []),
    "ediengine__856.Crossdock.OK.edi": ("1/1/1", "856", ("*", ">", "\n"), "ascii", OK, []),
    "ediengine__ControlNumbersMismatch.edi": ("1/1/1", "940", ("*", ">", "\n"), "ascii", [
        ("3", 7, "SE", 2), ("4", 8, "GE", 2), ("001", 9, "IEA", 2),
    ], []),
    # IEA02 "3438" for ISA13 "000003438" is accepted; the last IEA has no terminator
    "ediengine__MultipleInterchangesAndGroups.edi": ("2/4/6", "940", ("*", ">", "\n"), "ascii",
        OK, [("IEA", 2), ("IEA", 2), ("IEA", None)]),
    "ediengine__NonEdi.edi": ("0/0/0", "-", None, None, NOT_X12, []),
    "ediengine__WrongGroupsAndTranCount.edi": ("1/1/1", "940", ("*", ">", "\n"), "ascii", [
        ("5", 8, "GE", 1), ("021", 9, "IEA", 1),
    ], [("IEA", 2)]),
    # BOM, NBSP padding; also IEA02 000000001 for ISA13 000000055 (not in SOURCES.md)
    "edinet__x12.850.edi": ("1/1/1", "850", ("*", ">", "~"), "utf-8", [
        ("001", 15, "IEA", 2),
    ], [("ISA", None)]),
    # "~" in ISA16's place, "~" + LF after each segment: LF terminates, "~" dropped
    "edinet__x12.850.issue135.edi": ("1/1/2", "850", ("*", "~", "\n"), "ascii", OK,
        [("ISA", 16), ("IEA", None)]),
    # TAB-indented, NBSP in the ISA (ISA08 one short), SE01 and IEA02 wrong
    "edinet__x12.Issue172.edi": ("1/1/1", "850", ("*", ">", "~"), "utf-8", [
        ("4", 12, "SE", 1), ("001", 14, "IEA", 2),
    ], [("ISA", None), ("ISA", 8)]),
    "fifoa__sample_message": ("1/1/2", "322", ("*", ">", "\r"), "ascii", OK, []),
    "nodex12__850.edi": ("1/1/1", "850", ("*", ">", "~"), "ascii", OK, []),
    "nodex12__850_fat.edi": ("2/2/2", "850", ("*", ">", "~"), "ascii", OK, []),
    "nodex12__855.edi": ("1/1/1", "855", ("*", ">", "~"), "ascii", OK, []),
    "nodex12__856.edi": ("1/1/1", "856", ("*", ">", "~"), "ascii", OK, []),
    "omniparser__2_ups_edi_210.input.txt": ("1/1/5", "210", ("*", ">", "|"), "utf-8", [
        ("4", 50, "SE", 1),
    ], []),
    "oopx12__Example1_IG_0x1D.txt": ("1/1/1", "270", ("*", ":", "\x1d"), "ascii", OK, []),
    "oopx12__TechnicalAcknowledgment_Sample1.txt": ("1/0/0", "-", ("*", "^", "~"), "ascii", OK, []),
    "pyx12__834_lui_id_5010.999.txt": ("1/2/4", "999", ("*", ":", "~"), "ascii", OK, []),
    "stedi__inbound.edi": ("1/1/1", "855", ("*", ">", "~"), "ascii", OK, []),
    "vscodex12__odd-separator.edi": ("1/1/0", "-", ("|", "!", "~"), "ascii", TRUNCATED, []),
    "vscodex12__old.edi": ("1/1/1", "856", ("|", ">", "~"), "ascii", OK, []),
}
# fmt: on

FILES = sorted(p.name for p in CORPUS.iterdir() if p.name != "SOURCES.md")


def read(path: Path, chunk_size: int = 65536):
    """Read the whole file; return (reader, sets, fatal error or None)."""
    sets, fatal = [], None
    with path.open("rb") as stream:
        reader = X12Reader(stream, chunk_size=chunk_size)
        try:
            for ts in reader.transaction_sets():
                sets.append(ts)
        except X12Error as err:
            fatal = err
    return reader, sets, fatal


def test_every_corpus_file_has_a_row():
    """The table covers exactly the files in the corpus."""
    assert sorted(EXPECTED) == FILES


@pytest.mark.parametrize("name", FILES)
def test_corpus_file(name):
    """The file reads as SOURCES.md describes: counts, codes, delimiters, errors."""
    counts, st01, delimiters, encoding, outcome, warnings = EXPECTED[name]
    reader, sets, fatal = read(CORPUS / name)
    ics = reader.interchanges
    groups = [g for ic in ics for g in ic.groups]
    assert f"{len(ics)}/{len(groups)}/{len(sets)}" == counts
    assert (",".join(sorted({ts.code for ts in sets})) or "-") == st01
    if delimiters is None:
        assert ics == []
    else:
        d = ics[0].delimiters
        assert (d.element, d.component, d.segment) == delimiters
        assert ics[0].encoding == encoding
    if outcome is TRUNCATED:
        assert isinstance(fatal, TruncatedError)
    elif outcome is NOT_X12:
        assert type(fatal) is X12Error and fatal.message.startswith("not X12")
    else:
        assert fatal is None
        got = [(e.code, e.segment_number, e.segment_id, e.element) for e in reader.errors]
        assert got == outcome
    assert [(w.segment_id, w.element) for w in reader.warnings] == warnings


@pytest.mark.parametrize("name", FILES)
def test_corpus_file_at_any_chunk_size(name):
    """Chunk boundaries change nothing: 1-byte and 13-byte reads give the same result."""
    _, whole, whole_fatal = read(CORPUS / name)
    for size in (1, 13):
        _, sets, fatal = read(CORPUS / name, chunk_size=size)
        assert [[s.elements for s in ts.segments] for ts in sets] == [
            [s.elements for s in ts.segments] for ts in whole
        ]
        assert repr(fatal) == repr(whole_fatal)


@pytest.mark.parametrize("name", [n for n in FILES if EXPECTED[n][4] is OK])
def test_well_formed_sets_have_matching_counts(name):
    """In a clean file each set's SE01 equals its segment count and ST02 equals SE02."""
    _, sets, _ = read(CORPUS / name)
    for ts in sets:
        assert int(ts.segments[-1].get(1)) == len(ts.segments)
        assert ts.segments[-1].get(2) == ts.control_number
        assert ts.errors == []
