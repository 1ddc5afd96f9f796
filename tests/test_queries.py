"""What the CLI reads: stats, lists, one job, search, status; on SQLite and
PostgreSQL alike, checked against the jobs as they were recorded."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
from conftest import T0, make_job, record

from edi_inbox import queries, store
from edi_inbox.errors import StoreError
from edi_inbox.jobs import JobResult, JobStatus

STATUSES = [JobStatus.SUCCEEDED] * 5 + [JobStatus.FAILED, JobStatus.DUPLICATE]


@pytest.fixture
def history(db, recorder) -> list[JobResult]:
    """28 jobs over 7 hours, 20 minutes apart, with a mix of final statuses."""
    jobs = []
    for n in range(28):
        status = STATUSES[n % len(STATUSES)]
        job = make_job(
            n,
            started_at=T0 + timedelta(minutes=20 * n),
            status=status,
            amounts=(Decimal(n) + Decimal("0.05"),),
            vendor=("MÜLLER GmbH", "Acme Corp", None)[n % 3],
        )
        job.duration_seconds = 1.0 + n / 8
        record(recorder, job)
        jobs.append(job)
    return jobs


def expected_stats(jobs: list[JobResult]) -> dict:
    """The stats, computed the slow and obvious way."""
    counts = {str(s): sum(1 for j in jobs if j.status is s) for s in JobStatus}
    successful = counts["succeeded"] + counts["duplicate"]
    durations = [j.duration_seconds for j in jobs]
    return {
        "total_jobs": len(jobs),
        "successful_jobs": successful,
        "failed_jobs": counts["failed"],
        "partial_jobs": counts["partial"],
        "duplicates": counts["duplicate"],
        "success_rate": round(100.0 * successful / len(jobs), 2),
        "average_duration_seconds": round(sum(durations) / len(durations), 3),
        "total_amount_processed": str(
            sum((j.total_amount for j in jobs if j.status is JobStatus.SUCCEEDED), Decimal(0))
        ),
        "by_status": counts,
    }


@pytest.mark.parametrize("minutes", [None, 0, 25, 60, 139, 300])
def test_stats_match_the_jobs(db, history, minutes):
    """stats(since) equals a brute-force count, since on or between hour marks."""
    since = None if minutes is None else T0 + timedelta(minutes=minutes)
    chosen = [j for j in history if since is None or j.started_at >= since]
    got = queries.stats(db, since=since)
    assert got.pop("since") == (since.isoformat() if since else None)
    assert got == expected_stats(chosen)


@pytest.mark.parametrize("hours", [0, 13.5, 24, 49.25, 70])
def test_stats_over_days(db, recorder, hours):
    """Windows spanning days (partial hour, hourly and daily rollups) add up exactly."""
    jobs = []
    for n in range(30):
        job = make_job(n, started_at=T0 + timedelta(hours=2.7 * n), status=STATUSES[n % 7])
        record(recorder, job)
        jobs.append(job)
    since = T0 + timedelta(hours=hours)
    got = queries.stats(db, since=since)
    got.pop("since")
    assert got == expected_stats([j for j in jobs if j.started_at >= since])


@pytest.mark.parametrize("hours", [None, 0, 13.5, 49.25])
def test_stats_of_a_partner_match_its_jobs(db, recorder, hours):
    """stats(partner=) from the partners' rollups equals a brute-force count
    of that partner's jobs (partial hour, hours, days), a job re-recorded
    (interrupted, then run to its end) and one still running included; a
    rebuild of the rollups gives the same."""
    jobs = []
    for n in range(30):
        job = make_job(n, started_at=T0 + timedelta(hours=2.7 * n), status=STATUSES[n % 7])
        job.partner = ("acme", "bolt", None)[n % 3]
        record(recorder, job)
        jobs.append(job)
    again = jobs[3]  # acme's: ended interrupted, then succeeded
    again.status = JobStatus.SUCCEEDED
    record(recorder, again)
    running = make_job(99, started_at=T0 + timedelta(days=4))
    running.partner, running.status = "acme", JobStatus.RUNNING
    recorder.job_started(running)
    since = None if hours is None else T0 + timedelta(hours=hours)
    mine = [j for j in jobs if j.partner == "acme" and (since is None or j.started_at >= since)]
    expected = {"partner": "acme", **expected_stats(mine)}
    expected["total_jobs"] += 1  # the running job: counted, in no rate or average
    expected["by_status"]["running"] += 1
    for _ in range(2):
        got = queries.stats(db, since=since, partner="acme")
        got.pop("since")
        assert got == expected
        store.run_unit(db, lambda: store.rebuild_search_and_rollups(db))


def test_stats_of_an_empty_database(db):
    """No jobs: zeros, no rate, no average, no amount."""
    got = queries.stats(db)
    assert got["total_jobs"] == 0 and got["success_rate"] is None
    assert got["average_duration_seconds"] is None
    assert got["total_amount_processed"] == "0"


def test_stats_count_running_jobs(db, recorder, history):
    """A job still running counts in total_jobs and by_status, not in the rate."""
    job = make_job(99, started_at=T0 + timedelta(days=1))
    job.status = JobStatus.RUNNING
    recorder.job_started(job)
    got = queries.stats(db)
    assert got["total_jobs"] == len(history) + 1
    assert got["by_status"]["running"] == 1
    assert got["success_rate"] == expected_stats(history)["success_rate"]


def test_list_jobs_most_recent_first(db, history):
    """list_jobs pages through jobs newest first, optionally by status."""
    newest = sorted(history, key=lambda j: j.started_at, reverse=True)
    page = queries.list_jobs(db, limit=5, offset=2)
    assert [j["job_id"] for j in page] == [j.job_id for j in newest[2:7]]
    failed = queries.list_jobs(db, status="failed", limit=100)
    assert [j["job_id"] for j in failed] == [
        j.job_id for j in newest if j.status is JobStatus.FAILED
    ]
    first = page[0]
    assert first["total_amount"] == str(newest[2].total_amount)
    assert first["started_at"] == newest[2].started_at.isoformat()
    with pytest.raises(StoreError, match="unknown status"):
        queries.list_jobs(db, status="nope")


def test_list_jobs_before_a_job_pages_without_repeats(db, recorder, history):
    """before=JOB: the jobs listed after it (ties of started_at by id), as
    long as the list, whatever was recorded since; a job id's prefix will
    do; one that names no job is an error, not the first page."""
    newest = sorted(history, key=lambda j: j.started_at, reverse=True)
    first = queries.list_jobs(db, limit=10)
    late = make_job(700, started_at=newest[0].started_at + timedelta(hours=1))
    twin = make_job(701, started_at=newest[12].started_at)  # the same start as one later on
    for job in (late, twin):
        record(recorder, job)
    pages = [first]
    while len(pages[-1]) == 10:
        pages.append(queries.list_jobs(db, limit=10, before=pages[-1][-1]["job_id"][:13]))
    listed = [j["job_id"] for page in pages for j in page]
    assert len(listed) == len(set(listed)) == len(history) + 1  # the twin, not the late one
    assert twin.job_id in listed and late.job_id not in listed
    assert listed[:10] == [j.job_id for j in newest[:10]]
    with pytest.raises(StoreError, match="no job"):
        queries.list_jobs(db, before="ffffffff-no-such-job")


def test_show_job_by_unique_prefix(db, history):
    """show_job accepts a unique prefix of a job id (any case), refuses an ambiguous one."""
    job = history[3]
    assert queries.show_job(db, job.job_id[:13].upper()) == job.to_json()
    assert queries.show_job(db, "ffffffff-no-such-job") is None
    assert queries.show_job(db, "") is None
    with pytest.raises(StoreError, match="matches several jobs"):
        queries.show_job(db, _common_prefix(history))


def _common_prefix(jobs: list[JobResult]) -> str:
    """A one-character prefix shared by at least two of the jobs' ids."""
    firsts = [j.job_id[0] for j in jobs]
    return next(c for c in firsts if firsts.count(c) > 1)


def test_search_by_po_prefix_and_substring(db, recorder, history):
    """A PO term matches any order, case-insensitively, as substring or prefix (short: prefix)."""
    multi = make_job(
        200,
        started_at=T0 + timedelta(days=2),
        po_numbers=("4500004711", "ab-Sonder-99"),
        amounts=(Decimal(1), Decimal(2)),
    )
    record(recorder, multi)

    def ids(**kw):
        return [j["job_id"] for j in queries.search_jobs(db, **kw)]

    assert ids(po_number="0047") == [multi.job_id]
    assert ids(po_number="SONDER") == [multi.job_id]  # second order, other case
    assert ids(po_number="AB-so", match="prefix") == [multi.job_id]
    assert ids(po_number="sonder", match="prefix") == []
    assert ids(po_number="45") == [multi.job_id]  # short: a prefix
    assert ids(po_number="PO-00001") == [
        j.job_id
        for j in sorted(history, key=lambda j: j.started_at, reverse=True)
        if "po-00001" in j.po_number.lower()
    ]
    assert ids(po_number="no-such-po") == []


@pytest.mark.parametrize("floor", [0, 1000])
def test_search_with_many_candidates(db, history, monkeypatch, floor):
    """Many candidates (EXISTS, newest first) answer the same as few (looked up, sorted)."""
    monkeypatch.setattr(queries, "MATERIALIZE_AT_LEAST", floor)
    newest = sorted(history, key=lambda j: j.started_at, reverse=True)
    for kw in ({"po_number": "po-0000"}, {"po_number": "PO", "match": "prefix"}):
        got = queries.search_jobs(db, limit=3, success=True, **kw)
        assert [j["job_id"] for j in got] == [j.job_id for j in newest if j.success][:3]


def test_search_by_vendor_non_ascii(db, history):
    """'MÜLLER' is found by 'müller' (and 'Müller GMBH'), substring or prefix."""
    muller = [
        j.job_id
        for j in sorted(history, key=lambda j: j.started_at, reverse=True)
        if j.vendor_name == "MÜLLER GmbH"
    ]
    assert muller
    for term, match in (
        ("müller", "substring"),
        ("ÜLLER g", "substring"),
        ("Müller GMBH", "prefix"),
        ("mü", "prefix"),
    ):
        got = queries.search_jobs(db, vendor=term, match=match, limit=100)
        assert [j["job_id"] for j in got] == muller, (term, match)
    assert queries.search_jobs(db, vendor="gmbh", match="prefix") == []
    assert queries.search_jobs(db, vendor="nobody") == []


def test_search_by_vendor_matches_every_order(db, recorder, history):
    """A vendor term matches any order of a file, not only its first one."""
    two = make_job(400, started_at=T0 + timedelta(days=3), po_numbers=("VEN-1", "VEN-2"))
    two.orders[1] = replace(two.orders[1], vendor_name="Beta Supply Co")
    record(recorder, two)
    for term, match in (("beta supply", "substring"), ("SUPPLY", "substring"), ("beta", "prefix")):
        got = queries.search_jobs(db, vendor=term, match=match)
        assert [j["job_id"] for j in got] == [two.job_id], (term, match)
    acme = queries.search_jobs(db, vendor="acme", limit=100)  # its first order's, as before
    assert acme[0]["job_id"] == two.job_id and len(acme) == 1 + len(history) // 3


def test_a_40kb_vendor_is_recorded_and_found_by_its_first_characters(db, recorder):
    """A partner's 40 KB vendor name costs one ``vendor_search`` key of
    ``VENDOR_SEARCH_CHARS`` (within PostgreSQL's index row limit), found by a
    prefix or a substring of it."""
    job = make_job(600, vendor="Ab" * 20_000)
    record(recorder, job)
    keys = store.VendorSearch.select(store.VendorSearch.vendor).tuples()
    assert [len(key) for (key,) in keys] == [200]
    for term, match in (("ab" * 40, "prefix"), ("BAB", "substring")):
        got = queries.search_jobs(db, vendor=term, match=match)
        assert [j["job_id"] for j in got] == [job.job_id], term


def test_a_running_or_interrupted_job_is_found_by_po_and_vendor(db, recorder):
    """From its running row on (``job_started``), a job is found by any of its
    PO numbers, a term of 3+ characters as well as a short one, and by its
    vendor; still so once it ended ``interrupted`` between two orders."""
    job = make_job(500, po_numbers=("HB-1", "HB-2"), vendor="Hanse Bau")
    job.status = JobStatus.RUNNING
    recorder.job_started(job, job.steps[:3], job.logs[:3])
    recorder.order_accepted(job, job.orders[0])
    terms = (
        {"po_number": "HB"},
        {"po_number": "hb-1"},
        {"po_number": "B-2"},
        {"vendor": "bau"},
        {"vendor": "HANSE B", "match": "prefix"},
    )
    for kw in terms:
        assert [j["job_id"] for j in queries.search_jobs(db, **kw)] == [job.job_id], kw
    assert [j["job_id"] for j in store.mark_interrupted(db, "host-a")] == [job.job_id]
    for kw in terms:
        assert [j["job_id"] for j in queries.search_jobs(db, **kw)] == [job.job_id], kw


def test_search_filters_combine(db, recorder, history):
    """Sender, success and the started_at window narrow a search; limit caps it."""
    other = make_job(300, started_at=T0 + timedelta(minutes=30), sender="OTHERSENDER")
    record(recorder, other)
    assert [j["job_id"] for j in queries.search_jobs(db, sender="OTHERSENDER")] == [other.job_id]
    window = queries.search_jobs(
        db,
        vendor="acme",
        success=False,
        since=T0,
        until=T0 + timedelta(hours=5),
        limit=100,
    )
    expected = [
        j.job_id
        for j in sorted(history, key=lambda j: j.started_at, reverse=True)
        if j.vendor_name == "Acme Corp" and not j.success and j.started_at < T0 + timedelta(hours=5)
    ]
    assert [j["job_id"] for j in window] == expected
    assert len(queries.search_jobs(db, limit=3)) == 3
    with pytest.raises(StoreError, match="match must be"):
        queries.search_jobs(db, po_number="x", match="regex")


def test_search_by_status_pages_in_the_database(db, history):
    """``status`` and ``offset`` narrow and page a search in SQL, as
    ``list_jobs`` does (the dashboard read 10,000 matches and cut them: the
    older ones were never found, round 33)."""
    newest = sorted(history, key=lambda j: j.started_at, reverse=True)
    failed = [j.job_id for j in newest if j.status is JobStatus.FAILED]
    assert len(failed) > 3
    found = queries.search_jobs(db, vendor="", status="failed", limit=2, offset=1)
    assert [j["job_id"] for j in found] == failed[1:3]
    assert [j["job_id"] for j in queries.search_jobs(db, limit=100, offset=3)] == [
        j.job_id for j in newest[3:]
    ]


def test_the_last_day_is_summed_per_currency(db, recorder):
    """``status``' last 24 hours: the posted orders' amounts per currency
    (their CUR; "" for none), never one sum of euros and dollars (round 33),
    on SQLite and PostgreSQL alike."""
    for n, currency in ((1, "EUR"), (2, "USD"), (3, "EUR"), (4, None)):
        job = make_job(n, amounts=(Decimal("100.10"),))
        order = job.orders[0]
        job.orders[0] = replace(order, payload={**order.payload, "currency": currency})
        record(recorder, job)
    day = queries.status_summary(db, now=T0 + timedelta(hours=1))["last_24h"]
    assert day["amounts_by_currency"] == {"": "100.10", "EUR": "200.20", "USD": "100.10"}


def test_status_summary(db, recorder, history):
    """status: the last 24 h by status, running jobs, the latest failure, daemons."""
    now = T0 + timedelta(hours=10)
    running = make_job(400, started_at=now - timedelta(minutes=1))
    running.status = JobStatus.RUNNING
    recorder.job_started(running)
    store.heartbeat(db, "d1", host="h", pid=1, version="1", started_at=T0, now=now)
    got = queries.status_summary(db, now=now)
    counts = expected_stats(history)["by_status"]
    assert got["last_24h"]["succeeded"] == counts["succeeded"]
    assert got["last_24h"]["failed"] == counts["failed"]
    assert got["last_24h"]["duplicate"] == counts["duplicate"]
    assert got["running"] == 1
    last_failed = max(
        (j for j in history if j.status is JobStatus.FAILED), key=lambda j: j.started_at
    )
    assert got["last_error"]["job_id"] == last_failed.job_id
    assert got["last_error"]["error"] == "validation failed"
    assert got["daemons"][0]["heartbeat_age_seconds"] == 0.0
    json.dumps(got)


def test_failed_jobs_for_retry(db, recorder, history):
    """failed_jobs lists failures not yet retried successfully, newest
    first, with has_content."""
    failed = sorted(
        (j for j in history if j.status is JobStatus.FAILED), key=lambda j: j.started_at
    )[::-1]
    listed = queries.failed_jobs(db)
    assert [j["job_id"] for j in listed] == [j.job_id for j in failed]
    assert all(j["has_content"] for j in listed)
    retry = make_job(500, started_at=T0 + timedelta(days=3))
    retry.retry_of = failed[-1].job_id
    record(recorder, retry)
    assert [j["job_id"] for j in queries.failed_jobs(db)] == [j.job_id for j in failed[:-1]]
    assert [j["job_id"] for j in queries.failed_jobs(db, limit=1)] == [failed[0].job_id]
    assert queries.show_job(db, retry.job_id)["retry_of"] == failed[-1].job_id
    source = queries.load_job(db, failed[1].job_id, with_content=True)
    assert source.edi_content == failed[1].edi_content


def test_everything_is_json_ready(db, history):
    """Every query's answer goes through json.dumps as it is (no Decimal, no datetime)."""
    for answer in (
        queries.stats(db),
        queries.list_jobs(db),
        queries.show_job(db, history[0].job_id),
        queries.search_jobs(db, vendor="acme"),
        queries.failed_jobs(db),
        queries.list_daemons(db),
    ):
        json.dumps(answer)
