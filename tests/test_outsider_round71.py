"""Outside tester, round 71: scale and size hostility.

Real parts only: the real Pipeline in this process (round 49's ``Harness``,
with ``[daemon]`` limits of the test's own where it needs them) posting to a real HTTP
ERP on 127.0.0.1, ``edi-inbox process`` as a real process, and a real
``edi-inbox run`` daemon (``daemons.Daemon``) fed by uploads owned by a
partner's uid and renamed into place as SFTP servers do. No mocks, no fixed
sleeps (every wait polls a condition up to a deadline).

What I tried
- Orders of 1,000 to 200,000 PO1 lines (6.5 MB, by hand: ``process`` to
  a real HTTP ERP in 25 s, peak RSS 305 MB over 55 MB for a tiny file:
  ~40x, 100,000 lines ~45x, within README's 35-45x), the same order sent
  again under a new ISA13 and written otherwise (``3.0`` for ``3``).
- Envelope segments (GS, ST, SE, GE, IEA) of 100,000 extra elements: read
  past without a word (posted, 997 A); not pinned (README lists no check).
- Numbers at the edges: 15-digit quantities times 17-digit prices (the
  amount and total beyond Python's 28 default digits), 1,000-digit
  quantities, prices and line numbers, exponents (``1E2``,
  ``1E999999999``, ``1E-999999999``), ``NaN``, ``Infinity``, ``+3``,
  ``.5``, ``2.``, leading zeros, Arabic-Indic and full-width digits.
- The limits at their edges, each set low: ``max_file_bytes``,
  ``max_segments_per_file`` (with CRLF after each segment, and the
  terminator written twice), ``max_sets_per_file``, ``max_groups_per_file``.
- 10,000 sets in one group (one in a thousand an 850, the rest 810s).
- Counts of repeated segments: 10,000 REF, PER, TD5 in the header; 10,000
  REF, MSG, SCH and 11 DTM in a line; 1,000 and 1,001 N9 loops; 1,001 MSG
  in one N9; 201 N1 loops.
- A burst of uploads renamed in at once through the daemon: names at the
  file system's 255-byte limit in four-byte UTF-8, names alike but for
  case or Unicode normalization (NFC/NFD), a fifth of them refused.

What held
- Exact money: a line of 999999999999999 at 9999999999.999999 is
  ``9999999999999989000000000.000001`` in the ERP body, the job, ``jobs
  show`` and ``status``; every number in the body is a decimal string.
- A 50,000-line order is posted whole (``line_count``, the lines, the
  exact total, AMT*TT); sent again under a new ISA13, or with its numbers
  written otherwise, it is a duplicate, not posted.
- Hostile numbers are refused with AK4 on their element, never posted,
  nothing crashes, the reason naming the element and its length; leading
  zeros of R elements are read by value; PO105 ``TP``/``HP`` and CTP09
  bases on 32-digit amounts exact.
- Each limit is exact: a file at the limit runs, one more refused naming
  the key; line breaks and doubled terminators do not count as segments.
- 10,000 sets: one AK2 and AK5 a set, AK9 ``P 10000 10000 10``, in 0.9 s.
- Maximum uses of what an order reads (PER, line DTM, N1 loops) refused.
- A file growing past ``max_file_bytes`` while its writer holds it open:
  refused once, naming the key, nothing posted.
- 40 partners' folders uploading the same 25 names at once: 1,000 files
  filed once each in done/ (none overwritten), each 997 in its partner's
  outbox; 809 uploads with 255-byte four-byte UTF-8 names, NFC/NFD and
  case twins, a fifth refused: filed once each, one 997 each.
- A 40,000-line order the ERP answered 503, resent under a new ISA13 and
  GS06: posted under the first key with the first body.
- Money beyond 28 digits exact end to end; ``jobs show``, ``status`` and
  ``stats`` on a job of 5,000 and 20,000 orders (by hand) in 0.4-3 s; one
  file of 20,000 orders recorded in 31 s (5,000: 13 s), on PostgreSQL
  1,000 in 12 s and 4,000 in 37 s: linear; 50,000 sets refused but ten:
  the job's error lists five and "and 49985 more".
- ``max_bytes_in_flight`` of 100 kB with a 640 kB order in flight: it
  runs alone, 20 small uploads after it wait and are posted after it.
- One order uploaded 300 times at once and 300 times more under new
  ISA13s: one POST, 600 files in done/, 600 997s; a resumed upload (held
  for its trailer, then appended to) past the cap refused once, inotify
  and polling; 100 interchanges with one ISA13 asking for TA1s: 100 TA1s,
  each its own number; ``process`` of 1,000 files with 245-byte names.

Found (strict xfails; all 9 fixed the same session, the tests now plain)
1. ``test_a_997_never_echoes_a_gs08_over_its_twelve_characters``: a GS08 of
   106 characters (1 MB by hand) is copied whole into the 997's (999's)
   GS08, AN 1/12: an invalid acknowledgement (1 MB long); ``check_address``
   checks GS01/02/03/06 only. Should: cut to its width, or no 997 saying why.
2. ``test_a_count_padded_with_leading_zeros_is_read_by_its_value``: SE01,
   GE01, IEA01 padded past 18 characters, CTT01 and SAC05 past 20, are
   refused ("SE01 says '0…05' segments, the set has 5", "CTT01 … is not a
   number") though their value is right; R elements (PO102, PO104, AMT02,
   CTP03, CUR03) take any leading zeros.
3. ``test_the_997_never_writes_an_ak302_over_six_digits``: an error past
   segment 999,999 of a set is named with a seven-digit AK302 (N0 1/6).
4. ``test_the_ack_never_writes_an_ak902_over_six_digits``: a GE01 of 7 to 18
   digits is echoed into AK902 (N0 1/6) in the 997 and the 999.
5. ``test_a_ta1_never_names_another_interchange``: an ISA13 over nine
   characters (a width warning only) is echoed in TA101 cut to its last nine
   digits: ``111111111111`` as ``111111111`` (another interchange's number,
   TA104 E), ``0…049`` as ``000000000``.
6. ``test_an_overlong_isa_is_refused_for_its_length_not_a_missing_element``:
   an ISA over 512 characters is refused as "does not have 16 elements".
7. ``test_a_megabyte_gs02_is_refused_not_posted``: a GS02 of 1,000,000
   characters (AN 2/15) is taken: the order posted with the megabyte as its
   ``group_sender`` (and ``sender_group``, part of its identity, under a
   partner claiming ISA id and GS02; SQLite and PostgreSQL alike), the job
   ``succeeded`` with no 997. Should: refused naming GS02, nothing posted.
8. ``test_the_999_never_echoes_a_cut_st03``: a 005010 ST03 of 100 characters
   (AN 1/35) is taken (IK5 A) and the 999's AK203 echoes its first 35
   characters: a convention reference the partner never sent (the 999's
   AK103 cuts a long GS08 to 12 the same way).
9. ``test_an_ak3_never_names_a_segment_id_cut_to_another``: a segment id of
   four or more characters (``PO1X``, 100,000 characters) is named in AK301
   cut to three (``PO1``, ``AAA``, AK304 1): "segment 3 is an unknown PO1".
Observed, not pinned: an ISA09 that is no date gets a TA1 whose TA102 is
today's date; envelope segments of 100,000 extra elements read past.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Iterator
from decimal import Decimal

import pytest
from daemons import Daemon, Erp, daemons, erp
from test_outsider_round17 import RecordingErp
from test_outsider_round49 import LINE, Harness, interchange, order, segments_of
from test_outsider_round61 import claimed

from edi_inbox import store
from edi_inbox.config import (
    DaemonSettings,
    ErpSettings,
    PathSettings,
    Settings,
)
from edi_inbox.pipeline import Pipeline

import uids
from helpers import BAD, http_server, make_po, poll_until

__all__ = ["daemons", "erp"]  # the fixtures


def limited(harness: Harness, data: bytes, **daemon) -> tuple[object, list[str]]:
    """``data`` run under ``[daemon]`` settings of the test's own: its job and acks."""
    job, settings = harness.job(data, daemon=DaemonSettings(**daemon))
    return job, sorted(p.name for p in settings.paths.acks.iterdir())


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Iterator[Harness]:
    with http_server() as server:
        erp = RecordingErp(server)
        yield Harness(erp, tmp_path_factory.mktemp("r71"))
        erp.gate.set()


def lines(count: int, quantity: str = "3", price: str = "1.015") -> list[str]:
    return [f"PO1*{i}*{quantity}*EA*{price}**VP*W{i}~" for i in range(1, count + 1)]


def status_of(job) -> str:
    return str(getattr(job.status, "value", job.status))


# --- what held ----------------------------------------------------------------------


def test_held_fifty_thousand_lines_posted_whole_and_exact(harness):
    count = 50_000
    total = Decimal("3.045") * count
    out = harness.run(interchange(order(*lines(count), summary=(f"AMT*TT*{total:.2f}~",))))
    assert out.status == "succeeded", out.ack
    (body,) = out.bodies
    assert body["line_count"] == count == len(body["lines"])
    assert body["totals"]["line_count"] == count
    assert body["total_amount"] == "152250.000"
    assert {line["amount"] for line in body["lines"]} == {"3.045"}
    assert [line["line_number"] for line in body["lines"][-2:]] == ["49999", "50000"]
    assert out.ak9[1:] == ["A", "1", "1", "1"]


def test_held_money_beyond_28_digits_is_exact(harness):
    quantity, price = "999999999999999", "9999999999.999999"
    out = harness.run(interchange(order(*lines(3, quantity, price))))
    (body,) = out.bodies
    assert body["lines"][0]["amount"] == "9999999999999989000000000.000001"
    assert body["total_amount"] == "29999999999999967000000000.000003"


@pytest.mark.parametrize(
    "po1",
    [
        "PO1*1*" + "9" * 1000 + "*EA*2.50**VP*W1~",
        "PO1*1*3*EA*1E-999999999**VP*W1~",
        "PO1*1*NaN*EA*2.50**VP*W1~",
        "PO1*1*３*EA*2.50**VP*W1~",
    ],
    ids=["q1000", "pexp", "nan", "fullwidth"],
)
def test_held_hostile_numbers_are_refused_at_their_element(harness, po1):
    out = harness.run(interchange(order(po1)))
    assert out.bodies == []
    assert out.ak5[:2] == ["AK5", "R"]
    assert [s[1:3] for s in out.ak3] == [["PO1", "3"]]


@pytest.mark.parametrize("limit", ["max_segments_per_file", "max_file_bytes"])
def test_held_a_file_at_each_limit_runs_one_more_is_refused(harness, limit):
    data = interchange(order())
    size = data.count(b"~") if limit == "max_segments_per_file" else len(data)
    job, acks = limited(harness, data, **{limit: size})
    assert status_of(job) == "succeeded", job.error
    job, acks = limited(harness, data, **{limit: size - 1})
    assert status_of(job) == "failed" and acks == []
    assert limit in job.error


def test_held_ten_thousand_sets_each_answered(harness):
    sets = [
        order(st=f"{i:04d}", beg=f"BEG*00*SA*PO{i}**20240102~")
        if i % 1000 == 0
        else f"ST*810*{i:04d}~BIG*20240102*INV{i}~SE*3*{i:04d}~"
        for i in range(1, 10_001)
    ]
    out = harness.run(interchange(*sets))
    assert len(out.bodies) == 10
    assert [s[2] for s in out.tags("AK2")] == [f"{i:04d}" for i in range(1, 10_001)]
    assert len(out.tags("AK5")) == 10_000
    assert out.ak9[1:] == ["P", "10000", "10000", "10"]


class KeepingErp(Erp):
    """The suite's ERP keeping, per request, its key, envelope numbers,
    answer and line count."""

    def __init__(self, server) -> None:
        super().__init__(server)
        self.seen: list[tuple] = []

    def answered(self, key: str, order: dict, status: int) -> None:
        self.seen.append((key, order["interchange_control_number"], status, len(order["lines"])))


def test_held_a_large_order_unanswered_then_resent_under_a_new_isa13_keeps_key_and_body(
    tmp_path,
):
    """40,000 lines (1.2 MB, over ``edi_content_max_bytes``): the ERP answers
    503, the partner sends the file again under a new ISA13 and GS06: the
    same key, with the body first sent (its ISA13), is posted."""
    count = 40_000
    with http_server() as server:
        keeping = KeepingErp(server)
        keeping.answers = [503]
        settings = Settings(
            paths=PathSettings(root=tmp_path), erp=ErpSettings(url=keeping.url, max_attempts=1)
        )
        settings.paths.create()
        db = store.open_database(settings.database_url, settings)
        try:
            store.init(db)
            with Pipeline(settings, store.DatabaseRecorder(db)) as pipeline:
                statuses = []
                for n, icn in enumerate(["000000049", "000000050"]):
                    data = interchange(order(*lines(count)), icn=icn)
                    if n:
                        data = data.replace(b"*49*X*", b"*77*X*").replace(b"GE*1*49", b"GE*1*77")
                    path = tmp_path / f"po{n}.edi"
                    path.write_bytes(data)
                    statuses.append(status_of(pipeline.run(path)))
        finally:
            store.close_database(db)
            keeping.gate.set()
    assert statuses == ["failed", "succeeded"]
    (first, second) = keeping.seen
    assert first[0] == second[0]
    assert first[1:] == ("000000049", 503, count) and second[1:] == ("000000049", 201, count)


# --- the daemon: a burst of hostile names --------------------------------------------

EMOJI = "\U0001f4e6"  # four bytes of UTF-8


def hostile_names() -> list[str]:
    cafe = "café-order.edi"
    names = [
        unicodedata.normalize("NFC", cafe),
        unicodedata.normalize("NFD", cafe),
        "Order.EDI",
        "order.edi",
        "ORDER.edi",
        EMOJI * 62 + "a-1.edi",  # 255 bytes
        EMOJI * 62 + "a-2.edi",  # the same first 248 bytes
        "é" * 125 + "1.edi",  # 255 bytes of two-byte letters
        "é" * 125 + "2.edi",
    ]
    assert all(len(n.encode()) <= 255 for n in names)
    return names


@pytest.mark.e2e
def test_held_a_burst_of_uploads_with_hostile_names_filed_and_answered_once_each(daemons, erp):
    daemon: Daemon = daemons(erp.url)
    special = hostile_names()
    names = special + [f"po-{i:04d}.edi" for i in range(800)]
    bad = {n for i, n in enumerate(names) if i % 5 == 1}
    stage = daemon.root / "stage"
    stage.mkdir()
    for i, name in enumerate(names):
        data = BAD if name in bad else make_po(710_000 + i)
        uids.upload(stage / name, data)
    daemon.start()
    for name in names:
        os.rename(stage / name, daemon.inbox / name)

    def filed() -> list[str]:
        return daemon.listing(daemon.done) + [
            n for n in daemon.listing(daemon.failed) if not n.endswith(".error.json")
        ]

    poll_until(
        lambda: len(filed()) >= len(names) and not claimed(daemon),
        timeout=90,
        interval=0.2,
        what="every upload filed",
    )
    assert sorted(filed()) == sorted(names)
    assert sorted(daemon.listing(daemon.failed)) == sorted(
        [*bad, *(n for n in daemon.listing(daemon.failed) if n.endswith(".error.json"))]
    )
    reports = [n for n in daemon.listing(daemon.failed) if n.endswith(".error.json")]
    assert len(reports) == len(bad)
    assert all(count == 1 for count in erp.posts_per_key().values())
    acks = [n for n in os.listdir(daemon.root / "acks") if n.endswith(".997")]
    assert len(acks) == len(names), len(acks)
    jobs = daemon.jobs()
    assert len(jobs) == len(names)
    assert {j["file_name"] for j in jobs} == set(names)


@pytest.mark.e2e
def test_held_an_upload_growing_past_the_cap_while_it_settles_is_refused_once(daemons, erp):
    """An upload under ``max_file_bytes`` held open by its writer (an SFTP
    upload in progress), seen waiting, then written on past the cap and
    closed: refused unread, once, the reason naming the size and the key."""
    daemon: Daemon = daemons(erp.url, max_file_bytes=4000)
    daemon.start()
    first, second = make_po(711_001), make_po(711_002)
    assert len(first) < 4000 < len(first) + len(second) * 3
    path = daemon.inbox / "growing.edi"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.fchown(fd, uids.PARTNER, uids.PARTNER)
        os.write(fd, first[: len(first) // 2])

        def waiting() -> bool:
            status = json.loads(daemon.cli("status", "--json").stdout)
            return '"waiting": 1' in json.dumps(status)

        poll_until(waiting, timeout=30, interval=0.2, what="the upload seen waiting")
        os.write(fd, first[len(first) // 2 :] + second * 3)
    finally:
        os.close(fd)
    refused_once(daemon, erp, "growing.edi")


def refused_once(daemon: Daemon, erp: Erp, name: str) -> None:
    """``name`` refused for ``max_file_bytes``: in failed/, its one job, nothing posted."""
    poll_until(
        lambda: name in daemon.listing(daemon.failed) and not claimed(daemon),
        timeout=30,
        interval=0.1,
        what="the upload refused",
    )
    report = json.loads((daemon.failed / f"{name}.error.json").read_text())
    assert "max_file_bytes" in json.dumps(report)
    assert erp.requests == []
    assert [j["file_name"] for j in daemon.jobs()] == [name]


def as_partner(data: bytes, sender: str) -> bytes:
    """``data`` (a corpus 850 renumbered) sent by ISA05:ISA06 ``08:sender``."""
    return data.replace(b"*08*AAAAAAAAAA     *", f"*08*{sender:<15}*".encode(), 1)


@pytest.mark.e2e
def test_held_many_partners_folders_with_the_same_names_at_once(tmp_path, daemons, erp):
    """40 partners, each with its own inbox and outbox, each uploading the
    same 25 names at once (1,000 files): each filed once in the shared
    done/ (none overwritten), each 997 in its partner's outbox, each order
    posted once."""
    partners, per = 40, 25
    extra = ""
    for p in range(partners):
        for folder in ("in", "out"):
            (tmp_path / f"p{p}-{folder}").mkdir()
        extra += (
            f'[partners.p{p}]\nids = ["08:P{p:09d}"]\n'
            f'inbox = "{tmp_path / f"p{p}-in"}"\noutbox = "{tmp_path / f"p{p}-out"}"\n'
        )
    daemon: Daemon = daemons(erp.url, extra=extra)
    stage = tmp_path / "stage"
    stage.mkdir()
    moves = []
    for p in range(partners):
        for i in range(per):
            (stage / f"p{p}").mkdir(exist_ok=True)
            staged = uids.upload(
                stage / f"p{p}" / f"po-{i:02d}.edi",
                as_partner(make_po(712_000 + p * per + i), f"P{p:09d}"),
            )
            moves.append((staged, tmp_path / f"p{p}-in" / staged.name))
    daemon.start()
    for staged, target in moves:
        os.rename(staged, target)
    total = partners * per
    poll_until(
        lambda: len(daemon.listing(daemon.done)) >= total and not claimed(daemon),
        timeout=120,
        interval=0.2,
        what="every upload filed",
    )
    assert len(daemon.listing(daemon.done)) == total
    assert daemon.listing(daemon.failed) == []
    assert all(n == 1 for n in erp.posts_per_key().values())
    assert len(erp.keys_by_po()) == total
    for p in range(partners):
        acks = [n for n in os.listdir(tmp_path / f"p{p}-out") if n.endswith(".997")]
        assert sorted(a.split(".edi.")[0] for a in acks) == [f"po-{i:02d}" for i in range(per)]
    assert not (daemon.root / "acks").exists() or not os.listdir(daemon.root / "acks")


@pytest.mark.e2e
def test_held_one_order_uploaded_300_times_at_once_is_posted_once(daemons, erp):
    """The same file under 300 names renamed in at once (a partner's script
    gone wrong), and 300 copies each under a new ISA13: one POST; every
    file filed in done/ with its 997 accepting the set."""
    daemon: Daemon = daemons(erp.url, workers=8)
    stage = daemon.root / "stage"
    stage.mkdir()
    same = make_po(713_001)
    names = []
    for i in range(300):
        names.append(uids.upload(stage / f"same-{i:03d}.edi", same).name)
        renumbered = same.replace(b"000713001", f"{713_100 + i:09d}".encode())
        names.append(uids.upload(stage / f"again-{i:03d}.edi", renumbered).name)
    daemon.start()
    for name in names:
        os.rename(stage / name, daemon.inbox / name)
    poll_until(
        lambda: (
            len(daemon.listing(daemon.done)) + len(daemon.listing(daemon.failed)) >= 600
            and not claimed(daemon)
        ),
        timeout=90,
        interval=0.2,
        what="every upload filed",
    )
    assert sorted(daemon.listing(daemon.done)) == sorted(names)
    assert len(erp.requests) == 1, erp.requests[:3]
    acks = sorted((daemon.root / "acks").glob("*.997"))
    assert len(acks) == 600
    assert all(b"AK5*A" in a.read_bytes() or b"AK5@A" in a.read_bytes() for a in acks[:5])


@pytest.mark.e2e
@pytest.mark.parametrize("observer", ["inotify", "polling"])
def test_held_a_resumed_upload_growing_past_the_cap_is_refused_once(daemons, erp, observer):
    """An upload cut short (no IEA yet), held for its trailer, then resumed
    by the partner (opened again and appended to) past ``max_file_bytes``:
    refused once, naming the key, nothing posted."""
    daemon: Daemon = daemons(erp.url, max_file_bytes=4000, observer=observer)
    daemon.start()
    first, second = make_po(714_001), make_po(714_002)
    path = uids.upload(daemon.inbox / "resumed.edi", first[: len(first) // 2])

    def held() -> bool:
        status = json.loads(daemon.cli("status", "--json").stdout)
        return '"held": 1' in json.dumps(status)

    poll_until(held, timeout=30, interval=0.2, what="the upload held for its trailer")
    with open(path, "ab") as f:
        f.write(first[len(first) // 2 :] + second * 3)
    refused_once(daemon, erp, "resumed.edi")


@pytest.mark.e2e
def test_held_a_large_file_over_the_budget_runs_alone_and_none_jumps_it(daemons, erp):
    """``max_bytes_in_flight`` of 100 kB, a 20,000-line order (640 kB) in
    flight, then 20 small uploads: the large one is taken (alone), each
    small one waits for it and is posted after it."""
    daemon: Daemon = daemons(erp.url, max_bytes_in_flight=100_000, workers=8)
    daemon.start()
    big = interchange(order(*lines(20_000), beg="BEG*00*SA*BIG71**20240102~"))
    uids.upload(daemon.inbox / "big.edi", big)
    poll_until(lambda: not daemon.listing(daemon.inbox), timeout=30, what="big.edi claimed")
    for i in range(20):
        uids.upload(daemon.inbox / f"small-{i:02d}.edi", make_po(715_000 + i))
    poll_until(
        lambda: len(daemon.listing(daemon.done)) >= 21 and not claimed(daemon),
        timeout=90,
        interval=0.2,
        what="every upload filed",
    )
    pos = [po for _, po in erp.requests]
    assert pos[0] == "BIG71" and len(pos) == 21, pos[:3]
    assert len(daemon.listing(daemon.done)) == 21


# --- found ----------------------------------------------------------------------------


def gs08(ack: list[list[str]]) -> list[str]:
    return [s[8] for s in ack if s[0] == "GS"]


@pytest.mark.parametrize("version", ["004010", "005010"])
def test_a_997_never_echoes_a_gs08_over_its_twelve_characters(harness, version):
    data = interchange(order(), version=version)
    data = data.replace(f"*X*{version}~".encode(), f"*X*{version}{'A' * 100}~".encode())
    job, settings = harness.job(data)
    acks = [p for p in settings.paths.acks.iterdir() if p.suffix in (".997", ".999")]
    written = [v for p in acks for v in gs08(segments_of(p.read_bytes()))]
    assert all(len(v) <= 12 for v in written), [len(v) for v in written]
    if not acks:  # none written: the acknowledge step says why
        step = next(s for s in job.steps if s.step_name == "acknowledge")
        assert "GS08" in json.dumps(step.data, default=str)


PADDED = "0" * 24  # leading zeros: 25 characters with the digit after them
SAC = "SAC*C*D240***5000~"  # a line's freight charge of 50.00 (SAC05: N2)


@pytest.mark.parametrize(
    "body, old, new",
    [
        ((), "SE*5*", f"SE*{PADDED}5*"),
        ((), "GE*1*", f"GE*{PADDED}1*"),
        ((), "IEA*1*", f"IEA*{PADDED}1*"),
        ((), "CTT*1~", f"CTT*{PADDED}1~"),
        ((LINE, SAC), "***5000~", f"***{PADDED}5000~"),
    ],
    ids=["SE01", "GE01", "IEA01", "CTT01", "SAC05"],
)
def test_a_count_padded_with_leading_zeros_is_read_by_its_value(harness, body, old, new):
    plain = interchange(order(*body))
    assert old.encode() in plain
    out = harness.run(plain.replace(old.encode(), new.encode()))
    assert out.status == "succeeded", out.ack
    assert len(out.bodies) == 1


def test_the_997_never_writes_an_ak302_over_six_digits(harness):
    body = [LINE, *["N9*ZZ*1~"] * 1_000_000, "ZZZ*1~"]
    out = harness.run(interchange(order(*body)))
    assert out.bodies == [] and out.ak5[:2] == ["AK5", "R"]
    assert all(len(s[2]) <= 6 for s in out.ak3), [s[:3] for s in out.ak3]


@pytest.mark.parametrize("count", ["1000000", "999999999999999999"])
@pytest.mark.parametrize("version, ack", [("004010", "997"), ("005010", "999")])
def test_the_ack_never_writes_an_ak902_over_six_digits(harness, count, version, ack):
    data = interchange(order(), version=version).replace(b"GE*1*", f"GE*{count}*".encode())
    out = harness.run(data, ack=ack)
    assert out.bodies == []
    assert out.ak9[1] == "R" and "5" in out.ak9[5:], out.ak9
    assert len(out.ak9[2]) <= 6, out.ak9


@pytest.mark.parametrize("isa13", ["111111111111", "0" * 100 + "49"], ids=["12-digits", "padded"])
def test_a_ta1_never_names_another_interchange(harness, isa13):
    data = interchange(order()).replace(b"*000000049*0*", f"*{isa13}*1*".encode())
    data = data.replace(b"IEA*1*000000049", f"IEA*1*{isa13}".encode())
    out = harness.run(data)
    numbers = [ta1[1][1] for ta1 in out.ta1]
    assert all(int(n) == int(isa13) for n in numbers), numbers


def test_an_overlong_isa_is_refused_for_its_length_not_a_missing_element(harness):
    data = interchange(order()).replace(b"*ZZ*ACME           *", b"*ZZ*ACME" + b"Z" * 592 + b"*")
    job, _ = harness.job(data)
    assert status_of(job) == "failed"
    assert "does not have 16 elements" not in job.error, job.error
    assert "ISA06" in job.error or "long" in job.error, job.error


def test_a_megabyte_gs02_is_refused_not_posted(harness):
    data = interchange(order()).replace(b"*ACMEAPP*", b"*" + b"B" * 1_000_000 + b"*")
    before = len(harness.erp.bodies)
    job, _ = harness.job(data)
    posted = harness.erp.bodies[before:]
    assert [len(b["group_sender"]) for b in posted] == []
    assert status_of(job) == "failed" and "GS02" in (job.error or ""), job.error


def test_the_999_never_echoes_a_cut_st03(harness):
    st03 = "005010X220A1" + "A" * 88
    data = interchange(order(), version="005010")
    data = data.replace(b"ST*850*0001~", f"ST*850*0001*{st03}~".encode())
    out = harness.run(data, ack="999")
    ak2 = out.tags("AK2")
    assert ak2, out.ack
    assert all(len(a) < 4 or a[3] == st03 for a in ak2), [a[3:] for a in ak2]


@pytest.mark.parametrize("tag", ["PO1X", "A" * 100_000], ids=["PO1X", "100000"])
def test_an_ak3_never_names_a_segment_id_cut_to_another(harness, tag):
    out = harness.run(interchange(order(f"{tag}*1*10*EA*2.50**VP*W1~", LINE)))
    assert out.bodies == [] and out.ak5[:2] == ["AK5", "R"]
    ids = ["ST", "BEG", tag, "PO1", "CTT", "SE"]
    assert all(ids[int(s[2]) - 1] == s[1] for s in out.ak3), [s[:3] for s in out.ak3]
