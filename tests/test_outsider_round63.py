"""Outside tester, round 63: the 997 and 999 after today's changes — the new
codes and structure rules (``segment_out_of_sequence`` AK304 7,
``misplaced_segment`` AK304 2, the loops of every release, exclusion notes
AK4 10), checked as an auditor on both sides: no false acceptance, no false
rejection.

Inputs are small 850s run through round 49's in-process harness (the real
Pipeline, a fresh SQLite file per input, round 17's recording HTTP ERP on
127.0.0.1), here with the settings read by ``config.load`` from a TOML file
(so ``[rules]`` and ``[partners.acme.rules]`` merge as in production: a
``PartnerSettings`` built by hand, as round 49's harness does, carries
every rule at ``error`` and hides ``[rules]``). Each
structure was checked against the release's 850 before being called valid
or invalid: bots-edi/bots-grammars ``x12/3040/850003040.py``,
``x12/3060/850003060.py``, ``x12/5010/850005010.py`` and bots'
``850004010.py`` (Ardast-Team/raspimapper's copy) (the 5010 SPI loop
is ``SPI REF DTM MTX N1(N2 N3 N4 REF G61 MTX) CB1(REF DTM LDT MTX)``; the
5010 SLN loop begins ``SLN MTX SI PID ...`` and holds SAC; the 5010 line's
``LS LDT(QTY MTX REF LM(LQ)) LE``; the heading has no SCH, no QTY outside
its LDT loop, IN2 only inside N1 loops; in 3040/3060 the heading's LDT is a
plain segment after DTM); 005010X231A1's code lists for IK304 (620), IK403
(621), IK502 (618) as ``x12/ack.py`` keeps them.

What I tried
- (a) A 5010 partner with ``ack = "999"``: each new case (out of sequence,
  a loop's segment outside its loop, a line's segment in the header, the
  5010 N4's E0207 exclusion) for its IK3/IK4/IK5 codes, AK9 and SE01.
- (b) Several problems in one set (an unknown segment, out-of-sequence
  segments, a misplaced N4, a SAC after N1, a syntax error in a PO1):
  order, positions, AK5/AK9; twelve REFs out of sequence (the limit of
  ten named); a segment both out of sequence and with an element error.
- (c) ``segment_out_of_sequence`` ``warn``/``off`` in ``[rules]`` and in
  ``[partners.acme.rules]``, ``misplaced_segment`` ``warn``/``off``, with
  997 and 999: status, AK5/AK9, what the order JSON holds.
- (d) Valid structures the new loop tables touch: the 5010 SPI loop with
  MTX, SLN with MTX then SAC, LS/LDT/MTX/REF, a line N1 loop's LDT/MAN/REF
  (4010, 5010); 3040/3060/4010 headers against bots' grammars.
- (e) ``corpus_outcomes.table()`` against ``tests/data/corpus_outcomes.txt``
  by hand: identical (173 lines); not repeated here
  (``test_corpus_outcomes.py`` does it).

What held (plain tests)
- ``test_held_the_999_codes_of_the_new_cases``: IK304 7 at an out-of-
  sequence REF, IK304 2 at an N3 with no N1 and a PO3 in the header, IK4
  7/10 at the 5010 N4's N407 beside N402, IK5 R 5, AK9 R 1 1 0, every
  IK304/IK403 in 005010X231A1's lists, SE01 right.
- ``test_held_several_problems_in_one_set`` [997, 999]: AK3s in segment
  order (P01 6, PER 7, N4 2, SAC 7, PO1 8 with its AK4), AK5 R 5, AK9 R 1 1 0.
- ``test_held_at_most_ten_out_of_sequence_are_named``.
- ``test_held_a_999_of_three_sets_counts_each`` [error, warn]: IK5 R/E, A,
  R in set order, AK9 P 3 3 1 (2 at warn), the accepted sets posted.
- ``test_held_rule_levels_from_the_config`` [global warn, global off,
  partner warn over global error, misplaced warn]: warn posts with AK5 E /
  AK9 E and the AK3 kept (the out-of-sequence REF read into the order's
  references); off posts AK5 A with no AK3.
- Seen, not followed: a segment both out of sequence and with an element
  error gets one AK3 with AK304 8 (one AK304 per AK3: the 8 is the
  useful one); ``misplaced_segment = "off"`` drops the misplaced N3
  without a word (what ``off`` means, README "Rule levels"); 3040's SAC is
  no loop and its N9 loop has no DTM (a ``SAC, CUR`` or ``N9, DTM`` in a
  3040 file is taken as a loop, accepted); the 999 writes no IK303 and no
  CTX (documented in ``x12/ack.py``); the order inside a loop and in the
  lines is not judged (``N1, N4, N3`` and ``PO1, PID, CTP`` posted AK5 A:
  the rule is the header's, README says so); a segment over its maximum
  use hides an earlier out-of-sequence one (``PER PER DTM PER PER``: only
  AK3 PER 7 5; round 49's pinned "one raised error hides the rest").

Found (strict xfails; all 4 fixed the same session, each test failing
before: MTX in the SPI, SLN and LDT loops, MAN in the LDT loop; the header's
order and loops by release (``orders.Syntax.header_order``/``header_loops``:
the LDT a loop from 004030 only); IN2 and G61 in ``IN_LOOP_ONLY``, QTY and
SCH in ``LINE_ONLY``)
1. ``test_a_5010_spi_loop_with_mtx_before_its_party_is_posted`` [MTX then
   N1, N1 G61 MTX then N1]: a valid 5010 SPI loop is refused IK304 7 at
   the SPI's N1 (not posted). Should: IK5 A, posted. Rule: 5010 850 SPI
   loop ``SPI REF DTM MTX N1(... G61 MTX) CB1(... MTX)`` (bots
   850005010). Cause: ``orders._HEADER_LOOPS["SPI"]`` lists 3060's MSG but
   not MTX: the MTX closes the loop and the SPI's N1 is judged as the
   header's N1 loop, which the header places before SPI.
2. ``test_a_sub_loops_segment_is_not_posted_as_the_lines_own``
   [5010-sln-mtx-sac, 5010-ls-ldt-mtx-ref, 4010-n1-ldt-man-ref,
   5010-n1-ldt-man-ref]: a valid MTX (or MAN) inside a sub-loop turns the
   sub-loop's next SAC or REF into the line's own, posted AK5 A: ``SLN,
   MTX, SAC`` posts the sub-line's $5.00 charge as the line's charge;
   ``LS, LDT, MTX, REF, LE`` and a line ``N1, LDT, MAN, REF`` post the
   LDT's REF as the line's reference (without the MTX/MAN the same
   segments are read as the sub-loop's). Should: the same line either
   way. Rule: 5010 ``SLN MTX SI PID ... SAC(CUR CTP)``; ``LS LDT(QTY MTX
   REF LM(LQ)) LE``; the line N1 loop's ``LDT(MAN QTY MSG/MTX REF)`` (bots
   850004010, 850005010). Cause: ``orders._LINE_LOOPS["SLN"]`` and
   ``["LDT"]`` lack MTX, ``["N1"]`` has no LDT (nor MAN): the segment
   closes the loop and what follows is read at the line's level.
3. ``test_a_4010_ref_after_ldt_is_out_of_sequence_not_dropped``: in a 4010
   header ``DTM, LDT, REF`` is posted AK5 A with the REF silently left out
   of the order. Should: AK3 REF AK304 7 (refused at the default level; at
   ``warn`` the REF read). Rule: before 004030 the header's LDT is a plain
   segment after DTM, max use 12 (bots 850003040/850003060/850004010), a
   REF after it out of sequence. Cause: ``orders._HEADER_LOOPS["LDT"]`` (a
   loop from 004030) is used for every version, and the REF swallowed
   into it is not read.
4. ``test_a_loop_or_line_segment_alone_in_the_header_is_misplaced`` [IN2,
   SCH, QTY, G61]: each, sent in the header outside its loop, is posted
   AK5 A and what it says dropped (a consumer's name, a delivery schedule,
   a quantity, a contact). Should: AK3 AK304 2 (misplaced). Rule: 5010
   heading: IN2 only in N1 loops, SCH only in the PO1 loop and its N1
   loop, QTY only in the LDT loop, G61 only in the SPI's N1 loop. Cause:
   ``orders.IN_LOOP_ONLY`` (N2 N3 N4 NX2 LQ) lacks IN2/QTY/G61 and
   ``LINE_ONLY`` lacks SCH; unlisted segments go anywhere unread.

About 2.5 s at -n0; no daemon, no timing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_outsider_round17 import RecordingErp
from test_outsider_round49 import SENDER, Outcome, interchange, order, segments_of

from edi_inbox import config, store
from edi_inbox.pipeline import Pipeline

from helpers import http_server

LINE = "PO1*1*10*EA*2.50**VP*W-1~"

# 005010X231A1: IK304 (620), IK403 (621)
IK304 = {"1", "2", "3", "4", "5", "6", "7", "8", "I4", "I6", "I7", "I8", "I9"}
IK403 = {*map(str, (*range(1, 11), 12, 13)), "I6", "I9", "I10", "I11", "I12", "I13"}


class ConfigHarness:
    """Round 49's harness, its settings read by ``config.load`` from a TOML
    file: ``[rules]`` and ``[partners.acme.rules]`` merge as in production."""

    def __init__(self, erp: RecordingErp, root: Path) -> None:
        self.erp, self.root, self.counter = erp, root, itertools.count()

    def run(
        self,
        data: bytes,
        ack: str = "997",
        rules: dict[str, str] | None = None,
        partner_rules: dict[str, str] | None = None,
    ) -> Outcome:
        n = next(self.counter)
        root = self.root / f"r{n}"
        root.mkdir()
        text = (
            f'[paths]\nroot = "{root}"\n[erp]\nurl = "{self.erp.url}"\nmax_attempts = 1\n'
            "[rules]\n"
            + "".join(f'{k} = "{v}"\n' for k, v in (rules or {}).items())
            + f'[partners.acme]\nids = ["ZZ:{SENDER}"]\nack = "{ack}"\n[partners.acme.rules]\n'
            + "".join(f'{k} = "{v}"\n' for k, v in (partner_rules or {}).items())
        )
        (root / "edi-inbox.toml").write_text(text)
        settings = config.load(root / "edi-inbox.toml", environ={})
        settings.paths.create()
        db = store.open_database(settings.database_url, settings)
        before = len(self.erp.bodies)
        try:
            store.init(db)
            with Pipeline(settings, store.DatabaseRecorder(db)) as pipeline:
                path = root / f"po{n}.edi"
                path.write_bytes(data)
                job = pipeline.run(path)
        finally:
            store.close_database(db)
        acks = [p for p in sorted(settings.paths.acks.iterdir()) if p.suffix in (".997", ".999")]
        assert len(acks) <= 1, [p.name for p in acks]
        return Outcome(
            str(getattr(job.status, "value", job.status)),
            self.erp.bodies[before:],
            segments_of(acks[0].read_bytes()) if acks else [],
            acks[0].suffix[1:] if acks else "",
            [],
        )


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Iterator[ConfigHarness]:
    with http_server() as server:
        erp = RecordingErp(server)
        yield ConfigHarness(erp, tmp_path_factory.mktemp("r63"))
        erp.gate.set()


def errors(out: Outcome) -> list[list[str]]:
    """AK3/AK4 (IK3/IK4) as written, without their segment ids' prefixes."""
    return [s[1:] for s in out.ack if s[0] in ("AK3", "AK4", "IK3", "IK4")]


def posted_clean(out: Outcome) -> dict:
    assert errors(out) == [], out.ack
    assert out.ak5 in (["AK5", "A"], ["IK5", "A"]), out.ack
    assert out.ak9[1:] == ["A", "1", "1", "1"], out.ack
    (body,) = out.bodies
    return body


def refused(out: Outcome) -> None:
    assert out.bodies == [], out.ack
    assert out.ak5[1:] == ["R", "5"], out.ack
    assert out.ak9[1:] == ["R", "1", "1", "0"], out.ack


# --- what held ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, expected",
    [
        (("DTM*002*20240110~", "REF*DP*1~", LINE), [["REF", "4", "", "7"]]),
        (("N3*1 MAIN ST~", LINE), [["N3", "3", "", "2"]]),
        (("PO3*ZZ~", LINE), [["PO3", "3", "", "2"]]),
        (
            ("N1*ST*STORE~", "N4*TORONTO*ON*M5V1A1*CA***ON~", LINE),
            [["N4", "4", "", "8"], ["7", "", "10", "ON"]],
        ),
    ],
    ids=["out-of-sequence", "n3-without-n1", "po3-in-header", "n4-e0207"],
)
def test_held_the_999_codes_of_the_new_cases(harness, body, expected):
    out = harness.run(interchange(order(*body), version="005010"), ack="999")
    assert out.kind == "999"
    refused(out)
    assert errors(out) == expected, out.ack
    assert all(s[4] in IK304 for s in out.tags("IK3")), out.ack
    assert all(s[3] in IK403 for s in out.tags("IK4")), out.ack
    assert out.tags("AK3", "AK4", "AK5") == [], out.ack  # IK names only
    se = next(s for s in out.ack if s[0] == "SE")
    assert int(se[1]) == out.ack.index(se) - 1


@pytest.mark.parametrize("version, ack", [("004010", "997"), ("005010", "999")])
def test_held_several_problems_in_one_set(harness, version, ack):
    """An unknown segment, out-of-sequence PER and SAC, an N4 with no N1 and a
    bad PO102: every one named, in the set's order, counted once."""
    body = (
        "CUR*BY*USD~",
        "DTM*002*20240110~",
        "P01*X~",
        "PER*BD*J~",
        "N4*X*Y*Z~",
        "N1*ST*S~",
        "SAC*A*C310***5000~",
        "PO1*1*X*EA*2.50**VP*W-1~",
    )
    out = harness.run(interchange(order(*body), version=version), ack=ack)
    assert out.kind == ack
    refused(out)
    assert errors(out) == [
        ["P01", "5", "", "6"],
        ["PER", "6", "", "7"],
        ["N4", "7", "", "2"],
        ["SAC", "9", "", "7"],
        ["PO1", "10", "", "8"],
        ["2", "", "6"],
    ], out.ack


def test_held_at_most_ten_out_of_sequence_are_named(harness):
    refs = [f"REF*DP*{i}~" for i in range(12)]
    out = harness.run(interchange(order("DTM*002*20240110~", *refs, LINE)))
    refused(out)
    assert [e[:4] for e in errors(out)] == [["REF", str(n), "", "7"] for n in range(4, 14)]


@pytest.mark.parametrize(
    "body, rules, partner_rules, ak5, named",
    [
        (
            ("DTM*002*20240110~", "REF*DP*1~", LINE),
            {"segment_out_of_sequence": "warn"},
            {},
            "E",
            [["REF", "4", "", "7"]],
        ),
        (("DTM*002*20240110~", "REF*DP*1~", LINE), {"segment_out_of_sequence": "off"}, {}, "A", []),
        (
            ("DTM*002*20240110~", "REF*DP*1~", LINE),
            {},
            {"segment_out_of_sequence": "warn"},
            "E",
            [["REF", "4", "", "7"]],
        ),
        (("N3*1 MAIN ST~", LINE), {"misplaced_segment": "warn"}, {}, "E", [["N3", "3", "", "2"]]),
    ],
    ids=["global-warn", "global-off", "partner-warn", "misplaced-warn"],
)
@pytest.mark.parametrize("version, ack", [("004010", "997"), ("005010", "999")])
def test_held_rule_levels_from_the_config(
    harness, body, rules, partner_rules, ak5, named, version, ack
):
    out = harness.run(
        interchange(order(*body), version=version),
        ack=ack,
        rules=rules,
        partner_rules=partner_rules,
    )
    assert out.status == "succeeded", out.ack
    assert out.ak5[1:] == [ak5], out.ack
    assert out.ak9[1:] == [ak5, "1", "1", "1"], out.ack
    assert errors(out) == named, out.ack
    (posted,) = out.bodies
    if "REF*DP*1~" in body:  # out of sequence, read all the same
        assert posted["references"] == [{"qualifier": "DP", "value": "1", "description": ""}]


@pytest.mark.parametrize(
    "level, ak9", [("error", ["P", "3", "3", "1"]), ("warn", ["P", "3", "3", "2"])]
)
def test_held_a_999_of_three_sets_counts_each(harness, level, ak9):
    """An out-of-sequence set (its level), a clean one, a misplaced N3: IK5 per
    set in order, AK9 P with the sets accepted counted."""
    sets = (
        order("DTM*002*20240110~", "REF*DP*1~", LINE, st="0001"),
        order(LINE, st="0002", beg="BEG*00*SA*PO50**20240102~"),
        order("N3*X~", LINE, st="0003", beg="BEG*00*SA*PO51**20240102~"),
    )
    out = harness.run(
        interchange(*sets, version="005010"),
        ack="999",
        rules={"segment_out_of_sequence": level},
    )
    first = ["R", "5"] if level == "error" else ["E"]
    assert [s[1:] for s in out.ack if s[0] in ("AK2", "IK3", "IK5")] == [
        ["850", "0001"],
        ["REF", "4", "", "7"],
        first,
        ["850", "0002"],
        ["A"],
        ["850", "0003"],
        ["N3", "3", "", "2"],
        ["R", "5"],
    ], out.ack
    assert out.ak9[1:] == ak9, out.ack
    assert len(out.bodies) == int(ak9[3])


# --- found --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spi",
    [
        ("SPI*00~", "MTX*AAI*NOTE~", "N1*SE*SELLER~", "N3*1 MAIN~"),
        ("SPI*00~", "N1*BY*X~", "G61*BD*JOHN~", "MTX*AAI*NOTE~", "N1*SE*Y~", "N3*1 MAIN~"),
    ],
    ids=["mtx-then-n1", "n1-g61-mtx-then-n1"],
)
def test_a_5010_spi_loop_with_mtx_before_its_party_is_posted(harness, spi):
    out = harness.run(interchange(order("N1*ST*STORE~", *spi, LINE), version="005010"), ack="999")
    posted_clean(out)


@pytest.mark.parametrize(
    "version, before, extra, after",
    [
        ("005010", ("SLN*1**I*5*EA*1~",), "MTX*AAI*SUBLINE NOTE~", ("SAC*C*D240***500~",)),
        ("005010", ("LS*1~", "LDT*AA*5~"), "MTX*AAI*X~", ("REF*DP*77~", "LE*1~")),
        ("004010", ("N1*ST*STORE~", "LDT*AA*5~"), "MAN*GM*123~", ("REF*DP*77~",)),
        ("005010", ("N1*ST*STORE~", "LDT*AA*5~"), "MAN*GM*123~", ("REF*DP*77~",)),
    ],
    ids=["5010-sln-mtx-sac", "5010-ls-ldt-mtx-ref", "4010-n1-ldt-man-ref", "5010-n1-ldt-man-ref"],
)
def test_a_sub_loops_segment_is_not_posted_as_the_lines_own(harness, version, before, extra, after):
    """The same line with or without a valid MTX/MAN inside a sub-loop: the
    sub-loop's SAC or REF is not the line's either way."""
    plain = posted_clean(harness.run(interchange(order(LINE, *before, *after), version=version)))
    assert plain["lines"][0]["references"] == []
    assert plain["lines"][0].get("charges") in (None, [])
    full = posted_clean(
        harness.run(interchange(order(LINE, *before, extra, *after), version=version))
    )
    assert full["lines"] == plain["lines"]


def test_a_4010_ref_after_ldt_is_out_of_sequence_not_dropped(harness):
    data = interchange(order("DTM*002*20240110~", "LDT*AA*5~", "REF*DP*1~", LINE))
    out = harness.run(data)
    refused(out)
    assert errors(out) == [["REF", "5", "", "7"]], out.ack
    warned = harness.run(data, rules={"segment_out_of_sequence": "warn"})
    (body,) = warned.bodies
    assert body["references"] == [{"qualifier": "DP", "value": "1", "description": ""}]


@pytest.mark.parametrize(
    "segment",
    ["IN2*01*JOHN~", "SCH*10*EA****002*20240115~", "QTY*01*5~", "G61*BD*JOHN*TE*5551234~"],
    ids=["IN2", "SCH", "QTY", "G61"],
)
def test_a_loop_or_line_segment_alone_in_the_header_is_misplaced(harness, segment):
    out = harness.run(interchange(order(segment, LINE), version="005010"), ack="999")
    refused(out)
    assert errors(out) == [[segment[:3], "3", "", "2"]], out.ack
