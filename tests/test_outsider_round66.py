"""Outside tester, round 66: the last hour's 997 changes end to end through
the real daemon.

Through the real ``edi-inbox run`` (``tests/daemons.py`` ``Daemon``, partner
acme with its own inbox and outbox, ``[partners.NAME.rules]``, uploads owned
by the partner's uid via ``uids.upload``), through ``edi-inbox process
--partner``, ``edi-inbox serve`` (the job page) and round 49's in-process
harness (the real Pipeline, the recording HTTP ERP on 127.0.0.1).

What I tried
- Two interchanges in one upload (three sets, then one): AK2/AK3 positions
  from each set's ST, AK5/AK9 per group, one 997 per interchange in the
  partner's outbox.
- 150 lines each ``PO102 0``: 997, ``jobs show --json`` error/error_details,
  ``failed/po.edi.error.json``.
- A REF02 too long beside an impossible DTM02, a CUR after its FOB and an N3
  with no N1; a CUR past its maximum use with a CUR02 too long beside a
  REF02 too long (997 via the daemon, 999 via ``process`` for a 5010
  partner asking for it), with a hostile ``<img`` value on the job page.
- LDT after TXI in 004010 and 004030; IN2/PO3 in the header; ``[rules]``
  ``segment_out_of_sequence = "error"`` with one partner ``off``; warn level
  (what the order JSON reads).
- Hostile: ten sets each with ten REF02s too long (in-process and through
  the daemon).

What held (plain tests)
- ``test_held_several_interchanges_ak3_positions_from_each_sets_st``
- ``test_held_150_broken_lines_are_listed_100_times_with_more_alike``:
  error_details 100 of the code, the last "and 50 more alike, not listed",
  the same in error.json; the 997 names 100 PO1s (AK4 2 7).
- ``test_held_a_partners_segment_out_of_sequence_off_is_its_own``
- ``test_held_ldt_after_txi_by_release`` [4010 AK304 7, 4030 accepted]
- ``test_held_ten_sets_each_broken_ten_times`` (in-process) and
  ``..._through_the_daemon``: 100 AK3s, AK9 R 10 10 0, SE01 right.
- ``test_held_process_writes_the_999_to_the_partners_outbox``: IK3 CUR 5
  with its IK4, IK3 REF with its IK4, IK5 R 5; the page escapes the value.
- ``test_held_at_warn_what_is_read_of_misplaced_and_out_of_sequence``: the
  out-of-sequence CUR read, the misplaced N3/PO3 not; AK5 E.
- Seen, not followed: a 997 of a set broken on 150 lines names 100 PO1s,
  not "up to ten" (the ten is for syntax/noted segments; the rules' cap is
  ``MAX_ALIKE`` a code).

Found (strict xfails; 2 of 3 fixed the same session, each test failing
before: each broken segment of a set is its own entry in ``error_details``
and the report (``Pipeline.transform`` extends with ``SetErrors.errors``);
the job's error counts the problems left out too (``Problem.more``,
``pipeline._summarise(total=)``). Finding 1, round 65's, fixed the next
session: a set refused for its syntax is judged by the rules too; its
expected 997 names the FOB after the DTM as well, which the 850's header
puts before it)
1. ``test_a_refused_sets_997_names_every_broken_segment``: a REF02 too long
   beside an impossible DTM02, a CUR after the FOB and an N3 with no N1:
   the 997 (partner's outbox) and error_details name the REF only. Should:
   each broken segment, in segment order (REF 3, DTM 4, CUR 6, N3 7).
   Cause: ``Pipeline.transform`` rejects the set on ``orders.SetErrors``
   and ``validate`` (dates, sequence, misplaced segments are ``rules``)
   never runs for it -- round 65's finding 1, still open. The same hides a
   first CUR after a REF when a second CUR is past its maximum use.
2. ``test_the_jobs_error_counts_every_broken_line``: 150 broken lines, the
   job's ``error`` (jobs list, stats, dashboard) ends "and 95 more". Should:
   145 more (or say more alike). Cause: ``pipeline._summarise`` counts the
   messages it is given, already capped at ``rules.MAX_ALIKE``.
3. ``test_error_details_and_error_json_list_every_broken_segment``: a CUR
   past its maximum use with a CUR02 too long, and a REF02 too long: the
   997 names both segments, but error_details and the partner's
   ``failed/po.edi.error.json`` hold one problem (the CUR02, "(and 2 more
   broken segment(s))"); ten sets with ten each give ten details for 100
   AK3s. Should: every broken segment, as the 997. Cause:
   ``Pipeline.transform`` appends the ``SetErrors`` itself (which reads as
   its first error) to ``errors`` instead of each of ``exc.errors``.

About 10 s at -n0; the daemon tests are e2e (root: uids.upload chowns).
No fixed sleeps (30 s polls as deadlines).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import Daemon, daemons, erp
from test_outsider_round17 import RecordingErp
from test_outsider_round49 import LINE, Harness, interchange, order, segments_of

import uids
from helpers import http_server, poll_until

__all__ = ["daemons", "erp"]  # the fixtures

TOO_LONG_REF = "REF*ZZ*" + "X" * 40 + "~"


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Iterator[Harness]:
    with http_server() as server:
        erp = RecordingErp(server)
        yield Harness(erp, tmp_path_factory.mktemp("r66"))
        erp.gate.set()


def folders(root: Path, name: str) -> tuple[Path, Path]:
    inbox, outbox = root / f"{name}-in", root / f"{name}-out"
    for folder in (inbox, outbox):
        folder.mkdir()
        os.chmod(folder, 0o777)
    return inbox, outbox


def partner(name: str, inbox: Path, outbox: Path, rules: str = "", ack: str = "") -> str:
    return (
        f'[partners.{name}]\nids = ["ZZ:{name.upper()}"]\ninbox = "{inbox}"\noutbox = "{outbox}"\n'
        + (f'ack = "{ack}"\n' if ack else "")
        + (f"[partners.{name}.rules]\n{rules}" if rules else "")
    )


def partner_daemon(tmp_path: Path, erp_url: str, ack: str = "") -> tuple[Daemon, Path, Path]:
    root = tmp_path / "root"
    root.mkdir()
    inbox, outbox = folders(root, "acme")
    daemon = Daemon(root, erp_url, extra=partner("acme", inbox, outbox, ack=ack))
    daemon.start()
    return daemon, inbox, outbox


def acks_in(outbox: Path) -> list[Path]:
    return sorted(p for p in outbox.iterdir() if p.suffix in (".997", ".999"))


def show(daemon: Daemon, job_id: str) -> dict:
    done = daemon.cli("jobs", "show", str(job_id), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def sent_by(data: bytes, name: str) -> bytes:
    return data.replace(b"ZZ*ACME           ", f"ZZ*{name.upper():<15}".encode())


def finished(daemon: Daemon, count: int = 1) -> list[dict]:
    poll_until(
        lambda: (
            len(daemon.jobs()) >= count
            and all(j["status"] not in ("running", "pending") for j in daemon.jobs())
        ),
        timeout=30,
        what="jobs finished",
    )
    return daemon.jobs()


def ack_of(outbox: Path) -> list[list[str]]:
    poll_until(lambda: acks_in(outbox), timeout=30, what="the ack")
    return segments_of(acks_in(outbox)[0].read_bytes())


def tags(ack: list[list[str]], *names: str) -> list[list[str]]:
    return [s for s in ack if s[0] in names]


# --- what held ----------------------------------------------------------------------


@pytest.mark.e2e
def test_held_several_interchanges_ak3_positions_from_each_sets_st(tmp_path, erp):
    """Two interchanges in one upload (owned by the partner's uid, in its own
    folder): one 997 each in the partner's outbox; AK3 positions count from
    each set's own ST; AK5/AK9 per group; the job partial."""
    daemon, inbox, outbox = partner_daemon(tmp_path, erp.url)
    try:
        data = interchange(
            order(),
            order(TOO_LONG_REF, *(f"PER*BD*{c}~" for c in "XYZW"), LINE, st="0002"),
            order("N3*X~", LINE, st="0003"),
        ) + interchange(order("FOB*CC~", "CUR*BY*USD~", LINE, st="0004"), icn="000000050")
        uids.upload(inbox / "po.edi", data)
        (job,) = finished(daemon)
        assert job["status"] == "partial", job["error"]
        poll_until(lambda: len(acks_in(outbox)) == 2, timeout=30, what="two 997s")
        first, second = (segments_of(p.read_bytes()) for p in acks_in(outbox))
        if tags(first, "AK2")[0][2] == "0004":
            first, second = second, first
        assert tags(first, "AK2", "AK3", "AK5", "AK9") == [
            ["AK2", "850", "0001"], ["AK5", "A"],
            ["AK2", "850", "0002"], [
            "AK3", "REF", "3", "", "8"], ["AK3", "PER", "7", "", "5"], ["AK5", "R", "5"],
            ["AK2", "850", "0003"], ["AK3", "N3", "3", "", "2"], ["AK5", "R", "5"],
            ["AK9", "P", "3", "3", "1"],
        ]  # fmt: skip
        assert tags(second, "AK2", "AK3", "AK5", "AK9") == [
            ["AK2", "850", "0004"], [
            "AK3", "CUR", "4", "", "7"], ["AK5", "R", "5"], ["AK9", "R", "1", "1", "0"],
        ]  # fmt: skip
    finally:
        daemon.close()


@pytest.mark.e2e
def test_held_150_broken_lines_are_listed_100_times_with_more_alike(tmp_path, erp):
    """150 lines each ``PO102 0``: ``jobs show --json`` error_details holds
    100 of the code, the last saying "and 50 more alike, not listed"; the
    error.json in failed/ says the same; the 997 in the partner's outbox
    names the 100 PO1s (AK4 2 7)."""
    daemon, inbox, outbox = partner_daemon(tmp_path, erp.url)
    try:
        lines = [f"PO1*{i}*0*EA*2.50**VP*W-{i}~" for i in range(1, 151)]
        uids.upload(inbox / "po.edi", interchange(order(*lines)))
        (job,) = finished(daemon)
        details = show(daemon, job["job_id"])["error_details"]
        alike = [d for d in details if d["code"] == "quantity_not_positive"]
        assert len(alike) == 100
        assert alike[-1]["message"].endswith("and 50 more alike, not listed")
        report = json.loads((daemon.failed / "po.edi.error.json").read_text())
        assert "and 50 more alike, not listed" in json.dumps(report)
        ack = ack_of(outbox)
        assert len(tags(ack, "AK3")) == 100
        assert {tuple(s[1:4]) for s in tags(ack, "AK4")} == {("2", "", "7")}
        assert tags(ack, "AK9") == [["AK9", "R", "1", "1", "0"]]
    finally:
        daemon.close()


@pytest.mark.e2e
def test_held_a_partners_segment_out_of_sequence_off_is_its_own(tmp_path, erp):
    """``[rules] segment_out_of_sequence = "error"`` shared, partner acme's
    own rules ``off``: acme's CUR after its FOB is posted (AK5 A), beta's
    same order refused AK304 7 in beta's outbox."""
    root = tmp_path / "root"
    root.mkdir()
    a_in, a_out = folders(root, "acme")
    b_in, b_out = folders(root, "beta")
    extra = (
        '[rules]\nsegment_out_of_sequence = "error"\n'
        + partner("acme", a_in, a_out, rules='segment_out_of_sequence = "off"\n')
        + partner("beta", b_in, b_out)
    )
    daemon = Daemon(root, erp.url, extra=extra)
    daemon.start()
    try:
        data = interchange(order("FOB*CC~", "CUR*BY*USD~", LINE))
        uids.upload(a_in / "a.edi", data)
        uids.upload(b_in / "b.edi", sent_by(data, "beta"))
        jobs = {j["file_name"]: j for j in finished(daemon, 2)}
        assert jobs["a.edi"]["status"] == "succeeded", jobs["a.edi"]["error"]
        assert jobs["b.edi"]["status"] == "failed"
        assert tags(ack_of(a_out), "AK5") == [["AK5", "A"]]
        assert tags(ack_of(b_out), "AK3", "AK5") == [
            ["AK3", "CUR", "4", "", "7"],
            ["AK5", "R", "5"],
        ]
    finally:
        daemon.close()


@pytest.mark.parametrize(
    "version, ok", [("004010", False), ("004030", True)], ids=["4010-plain-ldt", "4030-ldt-loop"]
)
def test_held_ldt_after_txi_by_release(harness, version, ok):
    out = harness.run(interchange(order("TXI*ST*1~", "LDT*AE*5~", LINE), version=version))
    if ok:
        assert out.ak5 == ["AK5", "A"], out.ack
    else:
        assert [s[1:] for s in out.ak3] == [["LDT", "4", "", "7"]], out.ack


def test_held_ten_sets_each_broken_ten_times(harness):
    """Hostile: ten sets, each with ten REF02s too long: 100 AK3/AK4 5,
    each AK5 R 5, AK9 R 10 10 0, SE01 right."""
    sets = [order(*([TOO_LONG_REF] * 10), LINE, st=f"{n:04d}") for n in range(1, 11)]
    out = harness.run(interchange(*sets))
    assert len(out.ak3) == 100 and len(out.ak4) == 100
    assert [s[1:3] for s in out.ak3[:10]] == [["REF", str(p)] for p in range(3, 13)]
    assert out.tags("AK5") == [["AK5", "R", "5"]] * 10
    assert out.ak9 == ["AK9", "R", "10", "10", "0"]
    st = next(i for i, s in enumerate(out.ack) if s[0] == "ST")
    se = next(i for i, s in enumerate(out.ack) if s[0] == "SE")
    assert int(out.ack[se][1]) == se - st + 1


# --- found --------------------------------------------------------------------------


FOUR = (TOO_LONG_REF, "DTM*002*20240231~", "FOB*CC~", "CUR*BY*USD~", "N3*X~", LINE)


@pytest.mark.e2e
def test_a_refused_sets_997_names_every_broken_segment(tmp_path, erp):
    daemon, inbox, outbox = partner_daemon(tmp_path, erp.url)
    try:
        uids.upload(inbox / "po.edi", interchange(order(*FOUR)))
        (job,) = finished(daemon)
        assert job["status"] == "failed"
        ack = ack_of(outbox)
        assert [s[1:3] for s in tags(ack, "AK3")] == [
            ["REF", "3"],
            ["DTM", "4"],
            ["FOB", "5"],  # after the DTM, which the 850's header puts after it
            ["CUR", "6"],
            ["N3", "7"],
        ]
        details = show(daemon, job["job_id"])["error_details"]
        assert {d.get("segment_id") for d in details} >= {"REF", "DTM", "FOB", "CUR", "N3"}
    finally:
        daemon.close()


@pytest.mark.e2e
def test_the_jobs_error_counts_every_broken_line(tmp_path, erp):
    daemon, inbox, _outbox = partner_daemon(tmp_path, erp.url)
    try:
        lines = [f"PO1*{i}*0*EA*2.50**VP*W-{i}~" for i in range(1, 151)]
        uids.upload(inbox / "po.edi", interchange(order(*lines)))
        (job,) = finished(daemon)
        assert "145 more" in job["error"] or "more alike" in job["error"], job["error"]
    finally:
        daemon.close()


HOSTILE = "<img src=x onerror=alert(1)"  # no delimiter of the interchange


@pytest.mark.e2e
def test_held_process_writes_the_999_to_the_partners_outbox(tmp_path, erp):
    """``edi-inbox process --partner acme`` (a 5010 partner asking for the
    999) on a set with a CUR over its maximum use whose CUR02 is too long,
    beside a REF02 too long: IK3 CUR 4 (code 5), its elements not judged (a
    second CUR is not read, as a second BEG is not: round 70), IK3 REF with
    IK4 2 5 (hostile text and all), IK5 R 5, AK9 R 1 1 0; the job page
    shows the messages escaped; ``stats`` runs."""
    from web_site import server

    root = tmp_path / "root"
    root.mkdir()
    inbox, outbox = folders(root, "acme")
    daemon = Daemon(root, erp.url, extra=partner("acme", inbox, outbox, ack="999"))
    ref = "REF*ZZ*" + HOSTILE + "X" * 40 + "~"
    path = tmp_path / "po.edi"
    path.write_bytes(
        interchange(order("CUR*BY*USD~", "CUR*BY*USDXX~", ref, LINE), version="005010")
    )
    done = daemon.cli("process", "--partner", "acme", str(path), "--json")
    assert done.returncode == 1, done.stderr
    ack = ack_of(outbox)
    assert acks_in(outbox)[0].suffix == ".999"
    assert [s[:4] if s[0] == "IK4" else s for s in tags(ack, "IK3", "IK4", "IK5")] == [
        ["IK3", "CUR", "4", "", "5"],
        ["IK3", "REF", "5", "", "8"], ["IK4", "2", "", "5"],
        ["IK5", "R", "5"],
    ]  # fmt: skip
    assert tags(ack, "AK9") == [["AK9", "R", "1", "1", "0"]]
    (job,) = daemon.jobs()
    with server(daemon.config, root) as (port, _process):
        import urllib.request

        page = (
            urllib.request.urlopen(f"http://127.0.0.1:{port}/jobs/{job['job_id']}", timeout=30)
            .read()
            .decode()
        )
    assert HOSTILE not in page
    assert "&lt;img src=x" in page
    assert "IK4*2**5*&lt;img src=x onerror=alert(1)" in page  # the 999 shown, escaped
    assert daemon.cli("stats").returncode == 0


@pytest.mark.e2e
def test_error_details_and_error_json_list_every_broken_segment(tmp_path, erp):
    daemon, inbox, outbox = partner_daemon(tmp_path, erp.url)
    try:
        data = interchange(order("CUR*BY*USD~", "CUR*BY*USDXX~", TOO_LONG_REF, LINE))
        uids.upload(inbox / "po.edi", data)
        (job,) = finished(daemon)
        ack = ack_of(outbox)
        assert [s[1:3] for s in tags(ack, "AK3")] == [["CUR", "4"], ["REF", "5"]]
        details = show(daemon, job["job_id"])["error_details"]
        report = json.dumps(json.loads((daemon.failed / "po.edi.error.json").read_text()))
        # the second CUR once: over its maximum use, not read (round 70)
        assert [d.get("segment_id") for d in details] == ["CUR", "REF"], details
        assert "appears a second time" in report and "REF02" in report, report
    finally:
        daemon.close()


@pytest.mark.e2e
def test_held_ten_sets_each_broken_ten_times_through_the_daemon(tmp_path, erp):
    """Hostile, through ``edi-inbox run``: ten sets each with ten REF02s too
    long: the partner's 997 holds 100 AK3s (AK302 3..12 in each set), AK9 R
    10 10 0. (``error_details`` holds ten, one a set: finding 3.)"""
    daemon, inbox, outbox = partner_daemon(tmp_path, erp.url)
    try:
        sets = [order(*([TOO_LONG_REF] * 10), LINE, st=f"{n:04d}") for n in range(1, 11)]
        uids.upload(inbox / "po.edi", interchange(*sets))
        (job,) = finished(daemon)
        assert job["status"] == "failed"
        ack = ack_of(outbox)
        assert [s[2] for s in tags(ack, "AK3")] == [str(p) for p in range(3, 13)] * 10
        assert tags(ack, "AK9") == [["AK9", "R", "10", "10", "0"]]
        assert erp.keys_by_po() == {}  # nothing posted
    finally:
        daemon.close()


def test_held_at_warn_what_is_read_of_misplaced_and_out_of_sequence(tmp_path):
    """``[rules]`` at warn (read by ``config.load``): a CUR after the FOB is
    read (currency USD), an N3 with no N1 and a header PO3 are not (no
    parties); AK3 CUR 7, N3 2, PO3 2, AK5 E, the order posted."""
    from test_outsider_round63 import ConfigHarness

    with http_server() as server:
        erp = RecordingErp(server)
        try:
            out = ConfigHarness(erp, tmp_path).run(
                interchange(order("FOB*CC~", "CUR*BY*USD~", "N3*X~", "PO3*GR*20240101~", LINE)),
                rules={"segment_out_of_sequence": "warn", "misplaced_segment": "warn"},
            )
        finally:
            erp.gate.set()
    assert [s[1:] for s in out.ak3] == [
        ["CUR", "4", "", "7"],
        ["N3", "5", "", "2"],
        ["PO3", "6", "", "2"],
    ]
    assert out.ak5 == ["AK5", "E"]
    (body,) = out.bodies
    assert body["currency"] == "USD" and body["parties"] == []
