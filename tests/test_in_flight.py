"""The same order twice at once: a partner resends a file while the first is
still at the ERP (no 997 yet), or sends a second version of an order before
the first is answered. The duplicate check by content used to see only
orders already accepted, so both were posted. Now a job whose order another
running job is posting waits for that one, then is judged against it: the
same order a duplicate, other content rejected, and posted itself only if
the first was not. Real daemons, a real HTTP ERP holding the first POST, real
uploads by the partner's uid; SQLite (threads and worker processes) and two
hosts on one PostgreSQL."""

from __future__ import annotations

import io
import json
import threading
from decimal import Decimal

import pytest
from daemons import Daemon, daemons, erp
from test_outsider_round3 import failed_files
from test_pipeline import GOOD, copy, settings_for

from edi_inbox import queries, store
from edi_inbox.jobs import JobStatus, NullRecorder
from edi_inbox.pipeline import Pipeline
from edi_inbox.x12 import X12Reader

import uids
from helpers import make_po, poll_until

__all__ = ["daemons", "erp"]  # fixtures

FIRST = make_po(7901)
# The same order (sender, PO number, BEG01) with another quantity on its first line.
CHANGED = FIRST.replace(b"PO1**6*EA*12**CB*17920108", b"PO1**7*EA*12**CB*17920108", 1)


def ak5(daemon: Daemon, name: str) -> list[str]:
    """The AK5 segments of the 997 written for upload ``name``."""
    (ack,) = (daemon.root / "acks").glob(f"{name}.*.997")
    reader = X12Reader(io.BytesIO(ack.read_bytes()))
    return ["*".join(s.elements) for s in reader.scanner if s.elements[0] == "AK5"]


def by_file(daemon: Daemon) -> dict[str, dict]:
    rows = json.loads(daemon.cli("jobs", "list", "--json").stdout)
    return {r["file_name"]: r for r in rows}


def second_while_first_held(daemon: Daemon, erp, second: bytes) -> None:
    """a.edi (FIRST) held at the ERP, then b.edi (``second``) uploaded and
    claimed; b's order is not posted while a's is held; then the ERP answers
    and both are filed."""
    inbox = daemon.inbox
    erp.gate.clear()
    try:
        uids.upload(inbox / "a.edi", FIRST)
        poll_until(lambda: erp.requests, what="a's POST held")
        uids.upload(inbox / "b.edi", second)
        poll_until(lambda: not daemon.listing(inbox), what="b claimed")
        poll_until(
            lambda: daemon.events("order_in_flight_elsewhere"),
            what="b waiting for a",
        )
        assert len(erp.requests) == 1
    finally:
        erp.gate.set()
    poll_until(
        lambda: len(daemon.listing(daemon.done)) + len(failed_files(daemon)) == 2,
        timeout=30,
        what="both filed",
    )


@pytest.mark.parametrize("processes", [1, 2])
def test_the_same_file_sent_again_while_the_first_is_at_the_erp_is_a_duplicate(
    tmp_path, erp, daemons, processes
):
    daemon = daemons(erp.url, workers=4, processes=processes)
    daemon.start()
    second_while_first_held(daemon, erp, FIRST)
    assert list(erp.posts_per_key().values()) == [1]
    jobs = by_file(daemon)
    assert jobs["a.edi"]["status"] == "succeeded"
    assert jobs["b.edi"]["status"] == "duplicate"
    assert jobs["b.edi"]["duplicate_of"] == jobs["a.edi"]["job_id"]
    assert jobs["b.edi"]["erp_po_id"] == jobs["a.edi"]["erp_po_id"]
    assert ak5(daemon, "a.edi") == ak5(daemon, "b.edi") == ["AK5*A"]
    assert daemon.listing(daemon.done) == ["a.edi", "b.edi"]
    assert daemon.terminate(15) == 0


def test_another_version_of_an_order_at_the_erp_is_rejected_not_posted_beside_it(
    tmp_path, erp, daemons
):
    daemon = daemons(erp.url, workers=4)
    daemon.start()
    second_while_first_held(daemon, erp, CHANGED)
    assert len(erp.requests) == 1
    jobs = by_file(daemon)
    assert jobs["a.edi"]["status"] == "succeeded"
    assert jobs["b.edi"]["status"] == "failed"
    assert ak5(daemon, "b.edi")[0].startswith("AK5*R")
    report = json.loads((daemon.failed / "b.edi.error.json").read_text())
    assert f"was posted by job {jobs['a.edi']['job_id']} with other content" in report["error"]
    assert daemon.terminate(15) == 0


def test_an_order_the_erp_refused_the_first_time_is_posted_by_the_one_that_waited(
    tmp_path, erp, daemons
):
    """The first POST refused (422): the second job, which waited for it,
    posts its own order and succeeds; the first fails."""
    daemon = daemons(erp.url, workers=4)
    daemon.start()
    erp.answers = [422]
    second_while_first_held(daemon, erp, FIRST)
    assert list(erp.posts_per_key().values()) == [2]  # one refused, one accepted
    jobs = by_file(daemon)
    assert jobs["a.edi"]["status"] == "failed"
    assert jobs["b.edi"]["status"] == "succeeded"
    assert ak5(daemon, "b.edi") == ["AK5*A"]
    assert daemon.terminate(15) == 0


@pytest.mark.postgres
def test_two_hosts_on_one_postgresql_post_an_order_sent_twice_once(tmp_path, erp, daemons, pg_url):
    """Two daemons of two hosts on one inbox and one PostgreSQL: a.edi and
    b.edi (the same bytes) uploaded together, ten times over, the ERP slow:
    whichever host claims which, each order is posted once."""
    one = daemons(erp.url, workers=4)
    one.base_config = one.base_config.replace(
        f'url = "sqlite:///{tmp_path / "edi-inbox.db"}"', f"url = {json.dumps(pg_url)}", 1
    )
    one.config.write_text(one.base_config)
    two = daemons(erp.url, workers=4, host="second-host")
    two.base_config = one.base_config
    two.config.write_text(two.base_config)
    one.start()
    two.start()
    erp.delay = 0.2
    for n in range(10):
        order = make_po(8000 + n)
        uids.upload(one.inbox / f"a{n}.edi", order)
        uids.upload(one.inbox / f"b{n}.edi", order)
    poll_until(lambda: len(one.listing(one.done)) == 20, timeout=60, what="all filed")
    posts = erp.posts_per_key()
    assert len(posts) == 10 and set(posts.values()) == {1}
    statuses = sorted(r["status"] for r in by_file(one).values())
    assert statuses == ["duplicate"] * 10 + ["succeeded"] * 10
    assert one.terminate(15) == 0 and two.terminate(15) == 0


def _paused(base: type, name: str, reached: threading.Event, go: threading.Event) -> type:
    """``base`` (a real recorder) whose ``job_started`` for file ``name``
    waits for ``go``: the moment between a job's duplicate check and its
    running record, held open."""

    class Paused(base):  # type: ignore[misc, valid-type]
        def job_started(self, job, *args, **kwargs):
            if job.file_name == name:
                reached.set()
                assert go.wait(30)
            return super().job_started(job, *args, **kwargs)

    return Paused


def _posted_after_check(tmp_path, httpserver, recorder, edit=None):
    """a.edi (GOOD) posted and ended while b.edi (GOOD, or ``edit(GOOD)``) is
    held between its duplicate check and its running record: (a, b, the
    settings, the database or None)."""
    httpserver.expect_request("/orders", method="POST").respond_with_json({"id": "E1"}, 201)
    settings = settings_for(tmp_path, httpserver.url_for("/orders"))
    reached, go = threading.Event(), threading.Event()
    db = None
    if recorder == "database":
        db = store.open_database(f"sqlite:///{tmp_path / 'jobs.db'}", settings)
        store.init(db)
        held = _paused(store.DatabaseRecorder, "b.edi", reached, go)(db)
    else:
        held = _paused(NullRecorder, "b.edi", reached, go)()
    jobs = {}
    with Pipeline(settings, held) as pipeline:
        late_file = copy(tmp_path, GOOD, "b.edi", edit=edit)
        late = threading.Thread(target=lambda: jobs.update(b=pipeline.run(late_file)))
        late.start()
        try:
            assert reached.wait(30)
            jobs["a"] = pipeline.run(copy(tmp_path, GOOD, "a.edi"))
        finally:
            go.set()
            late.join(30)
    return jobs["a"], jobs["b"], settings, db


@pytest.mark.parametrize("recorder", ["database", "memory"])
def test_an_order_posted_after_a_job_s_duplicate_check_is_its_duplicate(
    tmp_path, httpserver, recorder
):
    """b.edi checks for duplicates (nothing posted yet), then a.edi, the same
    order, is posted and ends before b.edi writes its running record. b.edi
    used to take a's ERP id as its own order's: not posted again, but both
    jobs succeeded with the order, its amount counted twice in ``stats`` (the
    public corpus uploaded at once: mailbag01 and 850-004010-01 share an
    order). It is a duplicate of a's now: one POST, the amount counted once,
    both 997s accepting."""
    a, b, settings, db = _posted_after_check(tmp_path, httpserver, recorder)
    assert len(httpserver.log) == 1
    assert a.status is JobStatus.SUCCEEDED and a.total_amount == Decimal("13045.94")
    assert b.status is JobStatus.DUPLICATE and b.total_amount is None
    assert b.orders[0].duplicate_of == a.job_id and b.orders[0].erp_po_id == "E1"
    acks = [p.read_bytes() for p in settings.paths.acks.iterdir() if p.suffix == ".997"]
    assert len(acks) == 2 and all(b"\nAK5*A\n" in ack for ack in acks)
    if db is not None:
        assert queries.stats(db)["total_amount_processed"] == "13045.94"
        assert queries.show_job(db, b.job_id)["status"] == "duplicate"


def _changed(data: bytes) -> bytes:
    """GOOD's order changed (another delivery date) under a new ISA13."""
    changed = data.replace(b"DTM*002*20101214", b"DTM*002*20101215")
    return changed.replace(b"000003438", b"000003439")


@pytest.mark.parametrize("recorder", ["database", "memory"])
def test_a_changed_version_posted_after_a_job_s_check_is_judged_against(
    tmp_path, httpserver, recorder
):
    """b.edi, a changed version of a.edi's order, checks for duplicates
    (nothing posted yet); a.edi is posted and ends before b.edi writes its
    running record. b.edi is rejected as other content, not posted beside
    it (round 25 found both versions at the ERP: a changed version has
    another key, and its running record looked at its own keys only)."""
    a, b, _, _ = _posted_after_check(tmp_path, httpserver, recorder, edit=_changed)
    assert len(httpserver.log) == 1, "both versions of the order at the ERP"
    assert a.status is JobStatus.SUCCEEDED
    assert b.status is JobStatus.FAILED and b.orders[0].status == "rejected"
    assert f"posted by job {a.job_id} with other content" in (b.orders[0].error or "")
