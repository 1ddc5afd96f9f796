"""rules.validate: each business rule on its own, and every problem reported at once."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from edi_inbox import rules
from edi_inbox.errors import Problem
from edi_inbox.orders import (
    Amount,
    Charge,
    DateReference,
    Line,
    PurchaseOrder,
    Totals,
    from_transaction,
)
from edi_inbox.x12.model import (
    Delimiters,
    GroupSummary,
    InterchangeSummary,
    Segment,
    TransactionSet,
)


def line(number: str, quantity: str = "2", price: str = "1.50", segment: int = 10) -> Line:
    return Line(number=number, quantity_raw=quantity, unit_price_raw=price, segment_number=segment)


def good_order(**changes) -> PurchaseOrder:
    """An order that breaks no rule: 2 × 1.50 + 3 × 4.25 = 15.75, CTT*2, AMT*TT*15.75."""
    po = PurchaseOrder(
        po_number="4711",
        purpose="00",
        order_type="SA",
        date_raw="20240102",
        set_segment_number=3,
        beg_segment_number=4,
        summary_segment_number=12,
        dates=(DateReference(qualifier="002", date_raw="20240115", segment_number=5),),
        lines=(line("1", "2", "1.50", 10), line("2", "3", "4.25", 11)),
        totals=Totals(line_count_raw="2", segment_number=12),
        amounts=(Amount(qualifier="TT", amount_raw="15.75", segment_number=13),),
    )
    return replace(po, **changes)


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [p.message for p in problems]
    return problems[0]


def test_a_good_order_has_no_problems():
    """The baseline order breaks no rule (so each test below breaks exactly one)."""
    assert rules.validate(good_order()) == []


def test_missing_beg():
    """An order without a BEG is reported as missing_beg, where it belonged: after the ST."""
    p = only(rules.validate(good_order(beg_segment_number=None, po_number="", date_raw="")))
    assert (p.code, p.segment_id, p.segment_number, p.element) == ("missing_beg", "BEG", 4, None)
    assert "no BEG segment" in p.message


@pytest.mark.parametrize("po_number", ["", "   "])
def test_missing_po_number(po_number):
    """An empty (or blank) BEG03 is missing_po_number, pointing at BEG03."""
    p = only(rules.validate(good_order(po_number=po_number)))
    assert (p.code, p.segment_number, p.segment_id, p.element) == ("missing_po_number", 4, "BEG", 3)
    assert p.message == "BEG03 (purchase order number) is empty"


def test_missing_order_date():
    """An empty BEG05 is missing_date, pointing at BEG05."""
    p = only(rules.validate(good_order(date_raw="")))
    assert (p.code, p.segment_number, p.element) == ("missing_date", 4, 5)


@pytest.mark.parametrize("raw", ["20230229", "20241301", "2024-01-02", "0102", "YESTERDAY"])
def test_order_date_must_be_a_real_date(raw):
    """A BEG05 that is not a real CCYYMMDD/YYMMDD date is invalid_date at BEG05."""
    p = only(rules.validate(good_order(date_raw=raw)))
    assert (p.code, p.segment_id, p.element, p.po_number) == ("invalid_date", "BEG", 5, "4711")
    assert repr(raw) in p.message


def test_six_digit_order_date_is_accepted():
    """A pre-4010 YYMMDD BEG05 is a real date."""
    assert rules.validate(good_order(date_raw="971107")) == []


def test_header_dtm_must_be_a_real_date():
    """A header DTM02 that is no date is invalid_date at that DTM, element 2."""
    dates = (DateReference(qualifier="002", date_raw="20240231", segment_number=5),)
    p = only(rules.validate(good_order(dates=dates)))
    assert (p.code, p.segment_number, p.segment_id, p.element) == ("invalid_date", 5, "DTM", 2)
    assert p.message == "DTM 002 date '20240231' is not a real date (CCYYMMDD)"


def test_empty_dtm_date_is_not_judged():
    """A DTM with only a time (DTM02 empty) is not a date problem."""
    dates = (DateReference(qualifier="002", date_raw="", time="1200", segment_number=5),)
    assert rules.validate(good_order(dates=dates)) == []


@pytest.mark.parametrize("time", ["2460", "2400", "235960", "1299", "12a0"])
def test_a_dtm_time_must_be_a_real_time(time):
    """DTM03 (TM) is HHMM[SS[D[D]]] with hours 00-23, minutes and seconds 00-59:
    invalid_time at element 3 (the 997's AK4 9)."""
    dates = (DateReference(qualifier="002", date_raw="20240110", time=time, segment_number=5),)
    p = only(rules.validate(good_order(dates=dates)))
    assert (p.code, p.segment_number, p.segment_id, p.element) == ("invalid_time", 5, "DTM", 3)
    assert p.message.startswith(f"DTM 002 time {time!r} is not a real time")


@pytest.mark.parametrize("time", ["0000", "2359", "235959", "2359599", "23595999"])
def test_real_dtm_times_pass(time):
    dates = (DateReference(qualifier="002", date_raw="20240110", time=time, segment_number=5),)
    assert rules.validate(good_order(dates=dates)) == []


def test_line_dtm_must_be_a_real_date():
    """A line's DTM02 that is no date is reported with the line number."""
    bad = replace(
        line("2", "3", "4.25", 11), dates=(DateReference(date_raw="2024", segment_number=12),)
    )
    p = only(rules.validate(good_order(lines=(line("1"), bad), totals=None, amounts=())))
    assert (p.code, p.line_number, p.segment_id, p.element) == ("invalid_date", "2", "DTM", 2)
    assert p.message.startswith("line 2: DTM")


def test_no_lines():
    """An order without PO1 segments is no_lines, where they belonged: before the CTT or SE."""
    p = only(rules.validate(good_order(lines=(), totals=None, amounts=())))
    assert (p.code, p.segment_id, p.segment_number) == ("no_lines", "PO1", 12)


def test_missing_quantity():
    """An empty PO102 is missing_quantity at PO102."""
    p = only(rules.validate(good_order(lines=(line("1", ""),), totals=None, amounts=())))
    assert (p.code, p.line_number, p.segment_number, p.element) == ("missing_quantity", "1", 10, 2)
    assert p.message == "line 1: quantity (PO102) is missing"


@pytest.mark.parametrize("raw", ["two", "1e3", "NaN", "1,5", "+2"])
def test_quantity_must_be_numeric(raw):
    """A PO102 that is not an X12 number is not_numeric at PO102."""
    p = only(rules.validate(good_order(lines=(line("1", raw),), totals=None, amounts=())))
    assert (p.code, p.segment_id, p.element) == ("not_numeric", "PO1", 2)
    assert p.message == f"line 1: quantity {raw!r} is not a number"


@pytest.mark.parametrize("raw", ["0", "0.00", "-1", "-0"])
def test_quantity_must_be_greater_than_zero(raw):
    """A zero or negative PO102 is quantity_not_positive."""
    p = only(rules.validate(good_order(lines=(line("2", raw),), totals=None, amounts=())))
    assert (p.code, p.line_number, p.element) == ("quantity_not_positive", "2", 2)
    assert p.message == f"line 2: quantity {raw!r} must be greater than 0"


@pytest.mark.parametrize("raw", ["12,50", "$3", "Infinity", "1.2.3"])
def test_unit_price_must_be_numeric(raw):
    """A PO104 that is present and not an X12 number is not_numeric at PO104."""
    p = only(rules.validate(good_order(lines=(line("1", "1", raw),), totals=None, amounts=())))
    assert (p.code, p.element) == ("not_numeric", 4)
    assert p.message == f"line 1: unit price {raw!r} is not a number"


def test_unit_price_must_not_be_negative():
    """A negative PO104 is negative_unit_price."""
    p = only(rules.validate(good_order(lines=(line("1", "1", "-0.01"),), totals=None, amounts=())))
    assert (p.code, p.element) == ("negative_unit_price", 4)


def test_zero_and_missing_unit_prices_are_allowed():
    """A free line (0) and an unpriced line (empty PO104, priced by the ERP) pass."""
    lines = (line("1", "1", "0"), line("2", "1", ""))
    assert rules.validate(good_order(lines=lines, totals=None, amounts=())) == []


def test_line_numbers_must_be_unique():
    """A PO101 used again is duplicate_line_number, reported at the later PO1."""
    lines = (line("1", segment=10), line("2", segment=11), line("1", segment=12))
    p = only(rules.validate(good_order(lines=lines, totals=None, amounts=())))
    assert (p.code, p.line_number, p.segment_number, p.element) == (
        "duplicate_line_number",
        "1",
        12,
        1,
    )


def test_blank_line_numbers_are_not_compared():
    """PO1s without PO101 (optional in X12) are not duplicates of each other."""
    lines = (line("", segment=10), line("", segment=11))
    assert rules.validate(good_order(lines=lines, totals=None, amounts=())) == []


def test_unnumbered_line_is_named_by_position():
    """A problem on a line without PO101 names it by its position ("PO1 #2")."""
    lines = (line("", segment=10), line("", "0", segment=11))
    p = only(rules.validate(good_order(lines=lines, totals=None, amounts=())))
    assert p.line_number is None and p.segment_number == 11
    assert p.message == "PO1 #2: quantity '0' must be greater than 0"


@pytest.mark.parametrize("count", ["1", "3", "0"])
def test_ctt_line_count_must_match_the_po1_segments(count):
    """CTT01 other than the number of PO1 segments is line_count_mismatch at CTT01."""
    p = only(rules.validate(good_order(totals=Totals(line_count_raw=count, segment_number=12))))
    assert (p.code, p.segment_number, p.segment_id, p.element) == (
        "line_count_mismatch",
        12,
        "CTT",
        1,
    )
    assert p.message == f"CTT01 says {count} line items but the order has 2 PO1 segments"


def test_ctt_line_count_must_be_numeric():
    """A CTT01 that is not an integer is not_numeric at CTT01."""
    p = only(rules.validate(good_order(totals=Totals(line_count_raw="2.0", segment_number=12))))
    assert (p.code, p.segment_id, p.element) == ("not_numeric", "CTT", 1)


def test_order_without_ctt_or_amt_is_fine():
    """CTT and AMT are optional: without them nothing is compared."""
    assert rules.validate(good_order(totals=None, amounts=())) == []


@pytest.mark.parametrize("declared", ["15.75", "15.750", "15.7500001", "15.754", "15.745"])
def test_amt_tt_equal_to_the_cent_passes(declared):
    """AMT*TT equal to Σ qty × price after rounding both half-up to the cent passes."""
    amounts = (Amount(qualifier="TT", amount_raw=declared, segment_number=13),)
    assert rules.validate(good_order(amounts=amounts)) == []


@pytest.mark.parametrize("declared", ["15.76", "15.74", "15.755", "157.5", "-15.75"])
def test_amt_tt_must_equal_the_computed_total(declared):
    """AMT*TT that differs from the computed total to the cent is total_mismatch at AMT02."""
    amounts = (Amount(qualifier="TT", amount_raw=declared, segment_number=13),)
    p = only(rules.validate(good_order(amounts=amounts)))
    assert (p.code, p.segment_number, p.segment_id, p.element) == ("total_mismatch", 13, "AMT", 2)
    assert p.message == (
        f"AMT*TT total {declared} does not match the lines' total 15.75"
        " (sum of quantity × unit price)"
    )


def test_amt_tt_rounds_the_computed_total_half_up():
    """A computed total of x.xx5 rounds up: 3 × 0.335 = 1.005 matches AMT*TT 1.01, not 1.00."""
    lines = (line("1", "3", "0.335"),)
    for declared, ok in (("1.01", True), ("1.00", False)):
        amounts = (Amount(qualifier="TT", amount_raw=declared),)
        found = rules.validate(good_order(lines=lines, totals=None, amounts=amounts))
        assert (found == []) is ok


def test_amt_tt_may_be_summed_from_line_amounts_rounded_to_the_cent():
    """Seven lines of 3 × 1.2345 (3.7035 each): 25.92 summed then rounded,
    25.90 with each line rounded to the cent first (half-up, as invoices do).
    AMT*TT may be either; anything else is total_mismatch, naming both."""
    lines = tuple(line(str(i), "3", "1.2345") for i in range(1, 8))
    for declared, ok in (("25.92", True), ("25.90", True), ("25.9", True), ("25.91", False)):
        amounts = (Amount(qualifier="TT", amount_raw=declared),)
        found = rules.validate(good_order(lines=lines, totals=None, amounts=amounts))
        assert (found == []) is ok, (declared, [p.message for p in found])
    amounts = (Amount(qualifier="TT", amount_raw="25.91"),)
    p = only(rules.validate(good_order(lines=lines, totals=None, amounts=amounts)))
    assert p.message == (
        "AMT*TT total 25.91 does not match the lines' total 25.92 (25.90 line by line)"
        " (sum of quantity × unit price)"
    )


def test_amt_tt_may_include_the_order_s_allowances_and_charges():
    """15.75 of lines, 50.00 freight (header SAC) and 0.75 off a line (its
    SAC): AMT*TT may be 65.00 (with them) or 15.75 (the lines alone); any
    other amount is total_mismatch, naming both. A SAC05 that is not a
    number is not_numeric at SAC05."""
    freight = Charge(indicator="C", code="D240", amount_raw="5000", segment_number=5)
    off = Charge(indicator="A", code="C310", amount_raw="75", segment_number=12)
    po = good_order(charges=(freight,))
    po = replace(po, lines=(po.lines[0], replace(po.lines[1], charges=(off,))))
    for declared, ok in (("65.00", True), ("15.75", True), ("65.75", False), ("50", False)):
        amounts = (Amount(qualifier="TT", amount_raw=declared, segment_number=13),)
        found = rules.validate(replace(po, amounts=amounts))
        assert (found == []) is ok, (declared, [p.message for p in found])
    amounts = (Amount(qualifier="TT", amount_raw="65.75", segment_number=13),)
    p = only(rules.validate(replace(po, amounts=amounts)))
    assert p.message == (
        "AMT*TT total 65.75 does not match the lines' total 15.75 (sum of quantity × unit"
        " price), nor 65.00 with its allowances and charges (SAC)"
    )
    junk = replace(off, amount_raw="7,5")
    po = replace(po, lines=(po.lines[0], replace(po.lines[1], charges=(junk,))))
    p = only(rules.validate(po))
    assert (p.code, p.segment_id, p.segment_number, p.element) == ("not_numeric", "SAC", 12, 5)
    assert p.message == "line 2: SAC05 (allowance or charge amount) '7,5' is not a number"


def test_amt_tt_is_not_judged_while_a_line_is_left_for_the_erp_to_price():
    """A line without PO104 or a counted CTP is priced by the ERP: the priced
    lines' 3.00 is no total to hold AMT*TT 20 against (a price that is there
    and not a number is not_numeric, and the total is still judged)."""
    lines = (line("1", "2", "1.50", 10), line("2", "3", "", 11))
    amounts = (Amount(qualifier="TT", amount_raw="20", segment_number=13),)
    assert rules.validate(good_order(lines=lines, amounts=amounts)) == []
    junk = (line("1", "2", "1.50", 10), line("2", "3", "abc", 11))
    found = rules.validate(good_order(lines=junk, amounts=amounts))
    assert [p.code for p in found] == ["not_numeric", "total_mismatch"]


def test_line_rounding_is_half_up_and_exact_past_28_digits():
    """Each line's cents round half-up (0.005 up), and the line-by-line sum
    loses no digit where plain ``sum`` would round to 28."""
    big = "1" * 40
    lines = (line("1", "1", "0.005"), line("2", "1", "0.005"), line("3", "1", big))
    for declared, ok in ((big + ".02", True), (big + ".01", True), (big + ".00", False)):
        amounts = (Amount(qualifier="TT", amount_raw=declared),)
        found = rules.validate(good_order(lines=lines, totals=None, amounts=amounts))
        assert (found == []) is ok, declared


def test_amt_tt_is_compared_with_prices_per_hundred_and_thousand():
    """A PO104 per thousand (PO105 TP) or hundred (HP) counts as such in the
    total: 2,000 at 15.00 per thousand and 500 at 4.00 per hundred are 50.00."""
    lines = (
        replace(line("1", "2000", "15.00"), price_basis="TP"),
        replace(line("2", "500", "4.00"), price_basis="HP"),
    )
    for declared, ok in (("50.00", True), ("30020.00", False), ("32000.00", False)):
        amounts = (Amount(qualifier="TT", amount_raw=declared),)
        found = rules.validate(good_order(lines=lines, totals=None, amounts=amounts))
        assert (found == []) is ok, declared


def test_amt_tt_must_be_numeric():
    """An AMT*TT amount that is not a number is not_numeric at AMT02."""
    amounts = (Amount(qualifier="TT", amount_raw="15.75USD", segment_number=13),)
    p = only(rules.validate(good_order(amounts=amounts)))
    assert (p.code, p.segment_id, p.element) == ("not_numeric", "AMT", 2)


def test_other_amt_qualifiers_are_not_compared():
    """Only AMT*TT is the order total; an AMT*1 with another value is not judged."""
    amounts = (Amount(qualifier="1", amount_raw="99999"),)
    assert rules.validate(good_order(amounts=amounts)) == []


def test_cents_rounds_half_up_without_losing_digits():
    """cents() rounds half-up to two places, also for numbers past 28 digits."""
    assert rules.cents(Decimal("2.345")) == Decimal("2.35")
    assert rules.cents(Decimal("-2.345")) == Decimal("-2.35")
    big = Decimal("1" * 40 + ".005")
    assert rules.cents(big) == Decimal("1" * 40 + ".01")


def test_every_problem_is_reported_at_once_in_document_order():
    """One order breaking every rule gets every problem, header first, each with its PO number."""
    po = good_order(
        po_number="4711",
        date_raw="20241340",
        dates=(DateReference(qualifier="002", date_raw="x", segment_number=5),),
        lines=(
            line("1", "0", "1", 10),
            line("1", "many", "-1", 11),
            line("3", "", "abc", 12),
        ),
        totals=Totals(line_count_raw="5", segment_number=13),
        amounts=(Amount(qualifier="TT", amount_raw="1.00", segment_number=14),),
    )
    found = rules.validate(po)
    assert [(p.code, p.line_number, p.segment_number) for p in found] == [
        ("invalid_date", None, 4),
        ("invalid_date", None, 5),
        ("quantity_not_positive", "1", 10),
        ("duplicate_line_number", "1", 11),
        ("not_numeric", "1", 11),
        ("negative_unit_price", "1", 11),
        ("missing_quantity", "3", 12),
        ("not_numeric", "3", 12),
        ("line_count_mismatch", None, 13),
        ("total_mismatch", None, 14),
    ]
    assert {p.po_number for p in found} == {"4711"}
    assert all(p.message and p.code for p in found)


def test_problems_point_at_segments_of_a_real_transaction_set():
    """Read from segments, a bad quantity points at that PO1's number (counted from the ISA)."""
    d = Delimiters()
    text = (
        "ST*850*0001~BEG*00*SA*PO9**20240102~PO1*1*5*EA*2~PID*F****A~PO1*2*0*EA*2~CTT*2~SE*7*0001~"
    )
    segments = [
        Segment(s.split("*"), n) for n, s in enumerate(filter(None, text.split("~")), start=3)
    ]
    ic = InterchangeSummary("ZZ", "S", "ZZ", "R", "240102", "1200", "00401", "1", "P", d, "ascii")
    ts = TransactionSet(
        "850", "0001", segments, d, ic, GroupSummary("PO", "S", "R", "1", "004010", 2)
    )
    p = only(rules.validate(from_transaction(ts)))
    assert (p.code, p.po_number, p.line_number, p.segment_number, p.segment_id, p.element) == (
        "quantity_not_positive",
        "PO9",
        "2",
        7,
        "PO1",
        2,
    )
    assert p.to_json()["segment_number"] == 7


def test_a_line_priced_in_another_currency_than_the_order_is_refused():
    """One order's total adds its lines: a line whose CUR (or its pricing
    CTP's) names another currency than the header CUR, or, without one, than
    an earlier line, is ``currency_mismatch`` at its CUR02. Lines that all
    name the order's currency (a real partner sends CUR*BY*USD after each
    PO1 and none in the header) break nothing."""
    eur = replace(line("2", "3", "4.25"), currency="EUR", currency_segment_number=11)
    usd = replace(line("1"), currency="USD")
    p = only(rules.validate(good_order(currency="USD", lines=(usd, eur))))
    assert (p.code, p.segment_id, p.segment_number, p.element, p.line_number) == (
        "currency_mismatch", "CUR", 11, 2, "2",
    )  # fmt: skip
    assert "priced in 'EUR' (CUR), the order's (CUR) in 'USD'" in p.message
    p = only(rules.validate(good_order(lines=(usd, eur))))
    assert "an earlier line's in 'USD'" in p.message
    plain = replace(line("2", "3", "4.25"), currency="USD")
    assert rules.validate(good_order(lines=(usd, plain))) == []
    assert rules.validate(good_order(currency="USD", lines=(usd, line("2", "3", "4.25")))) == []
    assert "currency_mismatch" in rules.LEVELLED


def test_a_ctp_price_in_another_unit_than_the_line_is_refused():
    """48.00 per CA (CTP05) on a line of 24 EA: the price of one EA is not
    known, and an ERP would take 48.00 per EA; always an error, at CTP05.
    A CTP in the line's own unit (any case or padding), or none, is fine."""
    per_case = Line(
        number="1", quantity_raw="24", unit="EA", ctp_code="UCP", ctp_price_raw="48.00",
        ctp_unit="CA", ctp_segment_number=12, segment_number=11,
    )  # fmt: skip
    po = good_order(lines=(per_case,), totals=None, amounts=())
    p = only(rules.validate(po))
    assert (p.code, p.segment_id, p.segment_number, p.element) == (
        "price_unit_mismatch", "CTP", 12, 5,
    )  # fmt: skip
    assert "the price 48.00 (CTP03) is per CA (CTP05), the line orders EA (PO103)" in p.message
    assert "price_unit_mismatch" not in rules.LEVELLED
    for unit in ("EA", "ea ", ""):
        same = replace(per_case, ctp_unit=unit)
        assert rules.validate(replace(po, lines=(same,))) == []


def test_a_segment_after_the_ctt_is_misplaced():
    """Only AMT follows the CTT in an 850: anything else is read past, so it is
    ``misplaced_segment`` (levelled, error by default)."""
    po = good_order(misplaced_segments=(("CUR", 14),))
    p = only(rules.validate(po))
    assert (p.code, p.segment_id, p.segment_number, p.element) == (
        "misplaced_segment", "CUR", 14, None,
    )  # fmt: skip
    assert "is out of place (after the CTT an 850 has only AMT)" in p.message
    # one before the CTT is a line's CUR after the line's loops
    (late,) = rules.validate(good_order(misplaced_segments=(("CUR", 9),)))
    assert "is out of place (a line's CUR comes before its loops)" in late.message
    assert "misplaced_segment" in rules.LEVELLED
    # a few: each named, none saying more follow; past the tenth, the tenth says so
    two = rules.validate(good_order(unknown_segments=(("ZZ", 7), ("YY", 8))))
    assert [p.segment_id for p in two] == ["ZZ", "YY"]
    assert not any("more such segments" in p.message for p in two)
    many = rules.validate(good_order(unknown_segments=tuple(("ZZ", n) for n in range(5, 16))))
    assert len(many) == 10 and "more such segments follow" in many[-1].message
    assert not any("more such" in p.message for p in many[:-1])


def test_a_rule_broken_on_every_line_is_listed_at_most_max_alike_times():
    """10,000 lines of quantity 0: the order is refused all the same, with
    ``MAX_ALIKE`` problems of the code, the last saying how many more (a
    problem, its AK3 and its report entry each for 10,000 lines cost ~2x
    the order's memory: outsider round 65)."""
    lines = tuple(line(str(n), quantity="0", segment=10 + n) for n in range(1, 10_001))
    found = rules.validate(good_order(lines=lines))
    zero = [p for p in found if p.code == "quantity_not_positive"]
    assert len(zero) == rules.MAX_ALIKE
    assert zero[-1].message.endswith(f"; and {10_000 - rules.MAX_ALIKE} more alike, not listed")
    errors, _ = rules.split(found, {"quantity_not_positive": "error"})
    assert errors
