"""Outside tester round 53: round 49's strict X12 checks, attacked both ways.

Each input is a small 850 built here (round 49's ``interchange``/``order``),
run through the real Pipeline in this process with a SQLite file of its own,
a partner ``acme`` (ZZ:ACME; ``ack = "999"`` for the 005010 cases) and the
real recording ERP on 127.0.0.1 (round 49's ``Harness``). The 997/999 and
TA1 are read back by splitting on the ISA's own separators. The rules relied
on: the data element dictionaries and segment directories of 003040, 003050/
003060/003070 (DTM05 century N0 2/2, DTM06 1250, DTM07 1251, R020306,
P0607), 004010 and 004040/005010 (element 127 Reference Identification AN
1/50, N4 with N407 1715 Country Subdivision Code ID 1/3, notes E0207 C0704),
the delimiters (X12.5/X12.6: a separator is never data; 723 codes 6 invalid
character, 13 too many components in 005010), the ISA's code lists (I14
usage indicator: P, T — and I in 004010), and the README ("997 and TA1": a
number's length is its digits, "leading zeros count toward a minimum only").

What I tried: real-translator variants against the new checks — 005010
N4 with N407, REF02 of 31-50 characters in 005010, PER with three numbers and
PER09; 003040 six-digit dates with the DTM05 century; 003060 DTM periods in
DTM06/DTM07; numbers with leading zeros (PO102 16 characters for the value 10,
PO104, SAC05, CTT01 ``0000001``), ``.5`` and ``5.``, negative prices; a DTM
with only its DTM05/DTM06 period; N1 with only N103/N104; SAC01 ``N``;
composites in REF04 and CTP05 (and their components too short or long);
an N103 padded to its minimum (``1 ``); lowercase AMT03; DTMs in a line's
N1 loops (11 ship-tos each with a date);
a component separator inside BEG03 (004010 and 005010); the repetition
separator inside BEG03 with a 997 and with a 999; ISA15 ``T``, ISA15 ``X``
(TA1 R 020) and the acknowledgements' own envelope (a second, valid
interchange in the same file is refused with it, AK5 R with no code: the
README's whole-file rule for envelope problems, left alone); a refused
set beside a good one (AK9 P). Cost by hand: a PO1 of 5,000 elements, a 1,000,000-digit
PO102, 100,000 DTMs in a line and 100,000 in a header N9 loop each took
under 0.2 s of the pipeline (refused at the first element or segment past
the limit; the N9's DTMs are not the order's and are neither checked nor
counted).

What held (plain tests below): the 4010 DTM period alone, N1 with only its
id, PER with several numbers, SAC ``N``, REF04 and CTP05 composites, ``.5``
and ``5.``, a padded ID, 3040 six-digit dates with the century, ISA15 ``T``
posted with ``usage`` T, a line's N1-loop DTMs not counted as the line's;
AK9 P with AK3/AK4 only on the refused set and no AK404 for a missing
element; AK4 3 on the 5,000-element PO1 with the value copied (at element
5007 then; round 57: at 26, the first position past PO1's 25, as AK401 has
two digits), AK4 5 on the huge number with a 99-character copy, AK3 DTM 5 on the
eleventh line DTM; lowercase AMT03 ``c`` refused AK4 7 (codes are
case-sensitive).

Found (strict xfails; all fixed the same session, each test failing
before: leading zeros count toward a minimum only; the element lines by
version (before 004010, from 004040, from 005010); the component separator
in a simple element is AK4 6; acks answering an invalid ISA15 go out as P;
a composite's components checked by ``orders._COMPOSITES``):

1. ``test_leading_zeros_do_not_count_toward_a_maximum`` [PO102, PO104,
   SAC05, CTT01]: ``orders._check_value`` uses a number's significant digits
   only when they themselves are over the maximum, else every digit written
   (``size = significant if significant > high else written``), so PO102
   ``0000000000000010`` (the value 10), CTT01 ``0000001`` and the others are
   refused AK4 5; the README says leading zeros count toward a minimum only.
2. ``test_a_5010_n4_with_its_country_subdivision_is_posted``: 005010's N4
   has seven elements (N407 1715 ID 1/3, notes E0207 C0704); a Canadian
   ship-to ``N4*TORONTO**M5V2T6*CA***ON`` is refused IK4 7 code 3 (too many
   elements): 4010's directory judges a 5010 set.
3. ``test_a_5010_ref02_of_50_characters_is_posted``: element 127 (REF02) is
   AN 1/50 from 004040 on (30 before); a 40-character 5010 REF02 is refused
   IK4 2 code 5.
4. ``test_a_3060_dtm_period_is_posted``: in 003050-003070 the DTM's period
   is DTM06/DTM07 (DTM05 the century); ``DTM*007*****RD8*20240101-20240131``
   in a 3060 set is refused AK4 7 code 3 (too many elements).
5. ``test_a_component_separator_inside_a_simple_element_is_refused``
   [004010 997, 005010 999]: BEG03 ``PO>49`` with ``>`` the interchange's
   component separator is posted as PO number ``PO>49`` with AK5/IK5 A,
   though a separator is never data (the 5010 repetition separator in the
   same place is refused, code 12); expected AK4 6 (or 13 in 5010).
6. ``test_the_acks_answering_an_invalid_isa15_are_valid_interchanges``:
   ISA15 ``X`` gets TA1 R 020 as documented, but the TA1's interchange and
   the 997's both go out with ISA15 ``X`` themselves, a value I14 does not
   have; expected P (or T).
7. ``test_a_composites_components_are_checked`` [CTP05, REF04]: a
   composite is allowed 99 characters whole and its components are never
   looked at: CTP05-01 (C001-01, 355 ID 2/2) ``E`` or ``EACH`` and REF04-02
   (C040-02, 127 AN 1/30) of 40 characters are accepted, AK5 A, though PO103
   ``E`` is refused AK4 4; expected AK4 4/5 on the composite (IK401 ``5:1``
   in a 999).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_outsider_round17 import RecordingErp
from test_outsider_round49 import (
    LINE,
    Harness,
    accepted,
    interchange,
    order,
    rejected_at,
)

from helpers import http_server


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Iterator[Harness]:
    """Round 49's harness, a module of its own."""
    with http_server() as server:
        erp = RecordingErp(server)
        yield Harness(erp, tmp_path_factory.mktemp("r53"))
        erp.gate.set()


# --- what held ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        ("DTM*007****RD8*20240101-20240131~", LINE),  # DTM05/06 period alone
        ("N1*ST**92*STORE1~", LINE),  # N1 naming by its id only
        ("PER*BD*JOHN*TE*5551234*EM*J@X.COM*FX*5559999*EXT~", LINE),  # three numbers, PER09
        ("SAC*N*D240***0~", LINE),  # SAC01 N
        ("REF*ZZ*1**PO>123>VN>9~", LINE),  # REF04 composite
        (LINE, "CTP**UCP*2.50*10*EA>1.5~"),  # CTP05 composite
        ("PO1*1*.5*EA*5.**VP*W-1~",),  # .5 and 5.
        ("N1*ST*STORE*1 *12~", LINE),  # ID padded to its minimum
        (LINE, *[s for i in range(11) for s in (f"N1*ST*S{i}*92*S{i}0~", "DTM*002*20240110~")]),
    ],
    ids=[
        "dtm-period",
        "n1-id-only",
        "per-numbers",
        "sac-n",
        "ref04",
        "ctp05",
        "dot5",
        "pad",
        "line-n1-dtms",
    ],
)
def test_held_valid_variants_are_posted(harness, body):
    accepted(harness.run(interchange(order(*body))))


def test_held_a_3040_order_with_six_digit_dates_and_the_century(harness):
    data = interchange(
        order("DTM*002*240102***20~", LINE, beg="BEG*00*SA*PO49**240102~"), version="003040"
    )
    accepted(harness.run(data))


def test_held_a_test_interchange_is_posted_as_a_test(harness):
    body = accepted(harness.run(interchange(order()).replace(b"*0*P*>~", b"*0*T*>~")))
    assert body["usage"] == "T"


def test_held_a_refused_set_beside_a_good_one(harness):
    bad = order(st="0002", beg="BEG**SA*PO50**20240102~")
    out = harness.run(interchange(order(st="0001"), bad))
    assert [b["po_number"] for b in out.bodies] == ["PO49"]
    assert out.tags("AK2", "AK3", "AK4", "AK5", "AK9") == [
        ["AK2", "850", "0001"],
        ["AK5", "A"],
        ["AK2", "850", "0002"],
        ["AK3", "BEG", "2", "", "8"],
        ["AK4", "1", "", "1"],  # no AK404 for an element that is missing
        ["AK5", "R", "5"],
        ["AK9", "P", "2", "2", "1"],
    ]


def test_held_lowercase_amt03_is_an_invalid_code(harness):
    rejected_at(harness.run(interchange(order(summary=("AMT*TT*25*c~",)))), "AMT", 5, 3, "7")


def test_held_hostile_inputs_are_refused_at_the_first_excess(harness):
    many = harness.run(interchange(order("PO1*1*10*EA*2.50**VP*W-1" + "*" * 5000 + "X~")))
    rejected_at(many, "PO1", 3, 26, "3")  # AK401 has two digits: the first position past
    assert many.ak4[0][4] == "X"
    huge = harness.run(interchange(order("PO1*1*" + "1" * 1_000_000 + "*EA*2.50**VP*W-1~")))
    rejected_at(huge, "PO1", 3, 2, "5")
    assert huge.ak4[0][4] == "1" * 99
    dtms = harness.run(interchange(order(LINE, *(["DTM*002*20240110~"] * 100_000))))
    assert dtms.bodies == []
    assert dtms.ak3 == [["AK3", "DTM", "14", "", "5"]], dtms.ack
    noted = harness.run(interchange(order("N9*ZZ*1~", *(["DTM*002*20240110~"] * 100_000), LINE)))
    accepted(noted)


# --- found --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, ctt, value",
    [
        (("PO1*1*0000000000000010*EA*2.50**VP*W-1~",), None, "10"),
        (("PO1*1*10*EA*000000000000000002.50**VP*W-1~",), None, "2.50"),
        (("SAC*C*D240***000000000000001500~", LINE), None, None),
        ((LINE,), "CTT*0000001~", None),
    ],
    ids=["PO102", "PO104", "SAC05", "CTT01"],
)
def test_leading_zeros_do_not_count_toward_a_maximum(harness, body, ctt, value):
    body_ = accepted(harness.run(interchange(order(*body, ctt=ctt))))
    if value == "10":
        assert body_["lines"][0]["quantity"] == "10"


def test_a_5010_n4_with_its_country_subdivision_is_posted(harness):
    party = ("N1*ST*STORE*92*1234~", "N3*1 MAIN ST~", "N4*TORONTO**M5V2T6*CA***ON~")
    out = harness.run(interchange(order(*party, LINE), version="005010X"), ack="999")
    assert out.kind == "999"
    accepted(out)


def test_a_5010_ref02_of_50_characters_is_posted(harness):
    out = harness.run(
        interchange(order("REF*DP*" + "A" * 40 + "~", LINE), version="005010X"), "999"
    )
    accepted(out)


def test_a_3060_dtm_period_is_posted(harness):
    data = interchange(order("DTM*007*****RD8*20240101-20240131~", LINE), version="003060")
    accepted(harness.run(data))


@pytest.mark.parametrize("version, ack", [("004010", "997"), ("005010X", "999")])
def test_a_component_separator_inside_a_simple_element_is_refused(harness, version, ack):
    data = interchange(order(beg="BEG*00*SA*PO>49**20240102~"), version=version)
    out = harness.run(data, ack=ack)
    assert out.bodies == [], [b["po_number"] for b in out.bodies]
    assert out.ak5[1] == "R", out.ack
    assert [s[1] for s in out.ak3] == ["BEG"], out.ack
    assert [s[3] for s in out.ak4] in (["6"], ["13"]), out.ack


def test_the_acks_answering_an_invalid_isa15_are_valid_interchanges(harness):
    out = harness.run(interchange(order()).replace(b"*0*P*>~", b"*0*X*>~"))
    assert out.bodies == []
    assert [t[1][4:6] for t in out.ta1] == [["R", "020"]], out.ta1  # as documented
    envelopes = [t[0] for t in out.ta1] + [out.ack[0]]
    assert [isa[15] for isa in envelopes] == ["P"] * len(envelopes), envelopes


@pytest.mark.parametrize(
    "body, segment, position, element, code",
    [
        ((LINE, "CTP**UCP*2.50*10*E~"), "CTP", 4, 5, "4"),  # C001-01 355 ID 2/2
        ((LINE, "CTP**UCP*2.50*10*EACH~"), "CTP", 4, 5, "5"),
        (("REF*ZZ*1**PO>" + "1" * 40 + "~", LINE), "REF", 3, 4, "5"),  # C040-02 127 AN 1/30
    ],
    ids=["CTP05-short", "CTP05-long", "REF04-long"],
)
def test_a_composites_components_are_checked(harness, body, segment, position, element, code):
    out = harness.run(interchange(order(*body)))
    rejected_at(out, segment, position, element, code)
