"""``GET /metrics``: the job records as Prometheus metrics, read at scrape time.

A custom collector (prometheus_client's pattern for "a snapshot of another
system") so that every ``serve`` reports the shared database, every host's
daemons included, rather than what it saw itself. Each scrape reads small
tables and indexes only, as ``queries.stats`` does:

- jobs by status, amount posted and the job duration summary from
  ``job_rollups`` (one row per day and status);
- orders posted, ERP attempts and failures, and (with partners configured)
  jobs by partner and final status: a pass over every order and every job,
  too slow for a scrape at a million jobs, so ``SlowFigures`` counts them in
  a thread of its own every ``REFRESH_SECONDS`` and the scrape reports its
  last count (absent until the first one is done);
- the last success from the ``(status, started_at)`` index, and each
  configured partner's last activity from ``(partner, started_at)``;
- per host, from the newest heartbeat: daemon up, heartbeat age, the
  daemon's queue, in flight and held files (its backlog);
- the inbox backlog and oldest file's age as this host sees the inbox, and
  each partner's own inbox's (``status`` measures them the same way), and
  the files in failed/.

The ``partner`` label is a ``[partners.NAME]`` (names come from the
configuration, so there are few), or ``""`` for jobs from senders no partner
claims (an empty value cannot be mistaken for a partner's name). The per
partner figures are new metrics: the label-less ones the alert rules use keep
their names and their series.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import peewee as pw
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from .. import admin
from ..jobs import COUNTED_STATUSES, JobStatus
from ..money import exact_sum
from ..store import FINAL_STATUSES, as_utc, run_unit
from ..store.models import Job, JobRollup, Order

router = APIRouter()
REFRESH_SECONDS = 60.0  # a pass takes ~1 s at a million orders (SQLite)
NO_PARTNER = ""  # the partner label of jobs from senders no partner claims


def _rows(query: Any) -> Iterator[Any]:
    """The rows of a ``.tuples()`` query (peewee's stubs call them model instances)."""
    return iter(query)


class RecordsCollector(Collector):
    """Reads the database and the folders each time Prometheus scrapes."""

    def __init__(self, web: Any) -> None:
        self.web = web

    def collect(self) -> Iterator[Metric]:
        web = self.web
        db = web.db
        rollups, running_jobs, last_success = run_unit(db, lambda: _read(db), write=False)
        jobs = CounterMetricFamily(
            "edi_inbox_jobs",
            "Jobs that reached a final status (one interrupted, then run to its end,"
            " counts in both: a counter never goes down).",
            labels=["status"],
        )
        duration = SummaryMetricFamily(
            "edi_inbox_job_duration_seconds",
            "Time from a job's start to its end, by final status.",
            labels=["status"],
        )
        amount = CounterMetricFamily(
            "edi_inbox_amount_posted",
            "Sum of the totals of the orders posted, each once (stats' total_amount_processed).",
        )
        posted = []
        for status in FINAL_STATUSES:
            n, nd, total, money = rollups.get(str(status), (0, 0, 0.0, 0))
            jobs.add_metric([str(status)], n)
            duration.add_metric([str(status)], count_value=nd, sum_value=total)
            if status in COUNTED_STATUSES:
                posted.append(money)
        amount.add_metric([], float(exact_sum(posted)))  # summed exactly; a sample is a float
        yield jobs
        yield duration
        yield amount
        running = GaugeMetricFamily("edi_inbox_jobs_running", "Jobs being processed now.")
        running.add_metric([], running_jobs)
        yield running
        figures = web.slow_figures.latest() if web.slow_figures is not None else None
        orders = figures.orders if figures is not None else None
        if orders is not None:
            yield CounterMetricFamily(
                "edi_inbox_orders_posted", "Orders the ERP accepted.", value=orders["posted"]
            )
            yield CounterMetricFamily(
                "edi_inbox_erp_attempts",
                "ERP posts tried, retries included.",
                value=orders["attempts"],
            )
            yield CounterMetricFamily(
                "edi_inbox_erp_failures",
                "Orders the ERP refused or never answered for.",
                value=orders["failed"],
            )
        last = GaugeMetricFamily(
            "edi_inbox_last_success_timestamp_seconds",
            "When the last succeeded job ended (Unix time); absent before the first.",
        )
        if last_success is not None:
            last.add_metric([], last_success.timestamp())
        yield last
        if figures is not None and figures.partner_jobs is not None:
            yield _partner_jobs(web, figures.partner_jobs)
        yield _partner_activity(web)
        yield from _hosts(web)
        yield from _folders(web)


def _read(db: Any) -> tuple[dict[str, tuple[int, int, float, Any]], int, Any]:
    money = pw.fn.dec_sum(JobRollup.amount) if db.is_sqlite else pw.fn.SUM(JobRollup.amount)
    query = (
        JobRollup.select(
            JobRollup.status,
            pw.fn.SUM(JobRollup.reached),
            pw.fn.SUM(JobRollup.durations),
            pw.fn.SUM(JobRollup.duration_total),
            money,
        )
        .where(JobRollup.period == "day")
        .group_by(JobRollup.status)
    )
    rollups = {
        status: (int(n or 0), int(nd or 0), float(total or 0.0), amount)
        for status, n, nd, total, amount in _rows(query.tuples())
    }
    running = Job.select().where(Job.status == JobStatus.RUNNING.value).count()
    last = (
        Job.select(Job.completed_at)
        .where(Job.status == JobStatus.SUCCEEDED.value)
        .order_by(Job.started_at.desc(), Job.id.desc())
        .limit(1)
        .scalar()
    )
    return rollups, running, last


def count_orders(db: Any) -> dict[str, int]:
    """Orders posted, orders the ERP refused or never answered for (failed or
    rejected after at least one attempt: one the rules or the file rejected
    never reached it), and ERP attempts in all: one pass over ``orders``."""

    def work() -> dict[str, int]:
        orders = {"posted": 0, "failed": 0, "attempts": 0}
        tried = pw.fn.SUM(pw.Case(None, [(Order.attempts > 0, 1)], 0))
        by_status = Order.select(
            Order.status, pw.fn.COUNT(Order.id), pw.fn.SUM(Order.attempts), tried
        )
        for status, n, attempts, at_erp in _rows(by_status.group_by(Order.status).tuples()):
            orders["attempts"] += int(attempts or 0)
            if status == "posted":
                orders["posted"] += int(n or 0)
            elif status in ("failed", "rejected"):
                orders["failed"] += int(at_erp or 0)
        return orders

    result: dict[str, int] = run_unit(db, work, write=False)
    return result


def count_partner_jobs(db: Any) -> dict[tuple[str, str], int]:
    """Jobs that reached a final status, by (partner, status): one pass over
    ``jobs`` (the rollups are not kept per partner). No partner is ``""``.

    A plain scan of the table, every status grouped and the final ones kept
    here: twice as fast on SQLite as a ``status IN (…)`` through the status
    index, which then looks each row up (the bare queries at 300,000 jobs:
    0.6 s against 1.0 s; 0.7 to 1.0 s for this function on a busy machine)."""
    final = {str(s) for s in FINAL_STATUSES}

    def work() -> dict[tuple[str, str], int]:
        query = Job.select(Job.partner, Job.status, pw.fn.COUNT(Job.id)).group_by(
            Job.partner, Job.status
        )
        counts: dict[tuple[str, str], int] = {}
        for partner, status, n in _rows(query.tuples()):
            if status in final:
                key = (partner or NO_PARTNER, status)
                counts[key] = counts.get(key, 0) + int(n or 0)
        return counts

    result: dict[tuple[str, str], int] = run_unit(db, work, write=False)
    return result


@dataclass(frozen=True)
class Figures:
    """One count of what is too slow to count at scrape time."""

    orders: dict[str, int]
    partner_jobs: dict[tuple[str, str], int] | None  # None: no partner is configured


def _partner_jobs(web: Any, counts: dict[tuple[str, str], int]) -> Metric:
    """Every configured partner (and no partner) with every final status, 0
    included, so that a rate over a new partner's first failure works; then
    any other name jobs recorded (a partner since removed from the config)."""
    jobs = CounterMetricFamily(
        "edi_inbox_partner_jobs",
        "Jobs that reached a final status, by trading partner ([partners.NAME];"
        ' partner="" for senders no partner claims). Counted every'
        f" {REFRESH_SECONDS:.0f} s.",
        labels=["partner", "status"],
    )
    names = [p.name for p in web.settings.partners.partners] + [NO_PARTNER]
    names += sorted({partner for partner, _ in counts} - set(names))
    for name in names:
        for status in FINAL_STATUSES:
            jobs.add_metric([name, str(status)], counts.get((name, str(status)), 0))
    return jobs


def _partner_activity(web: Any) -> Metric:
    """Per configured partner, its latest job's start: one index seek each."""
    last = GaugeMetricFamily(
        "edi_inbox_partner_last_activity_timestamp_seconds",
        "When the trading partner's latest file was taken in (Unix time); absent before its first.",
        labels=["partner"],
    )
    names = [p.name for p in web.settings.partners.partners]

    def work() -> dict[str, Any]:
        return {
            name: Job.select(pw.fn.MAX(Job.started_at)).where(Job.partner == name).scalar()
            for name in names
        }

    for name, moment in run_unit(web.db, work, write=False).items():
        if isinstance(moment, str):  # in case a driver hands MAX() back unconverted
            moment = datetime.fromisoformat(moment)
        if isinstance(moment, datetime):
            last.add_metric([name], as_utc(moment).timestamp())
    return last


class SlowFigures:
    """``count_orders`` and ``count_partner_jobs`` every ``every`` seconds in a
    thread, so that a scrape reads the last count instead of waiting for a
    pass over every order and job. Without partners configured the jobs are
    not counted (every job would be partner="": ``edi_inbox_jobs`` says it)."""

    def __init__(self, db: Any, every: float = REFRESH_SECONDS, *, partners: bool = True) -> None:
        self.db = db
        self.every = every
        self.partners = partners
        self._latest: Figures | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="slow-figures", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def latest(self) -> Figures | None:
        return self._latest

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                by_partner = count_partner_jobs(self.db) if self.partners else None
                self._latest = Figures(count_orders(self.db), by_partner)
            except Exception as exc:  # the database may be away for a moment
                structlog.get_logger("edi_inbox.web").error("slow_figures_failed", error=repr(exc))
            self._stop.wait(self.every)


def _hosts(web: Any) -> Iterator[Metric]:
    """Per host, from its newest heartbeat (older rows are earlier runs)."""
    from .. import queries

    up = GaugeMetricFamily(
        "edi_inbox_daemon_up", "1 when the host's daemon beats.", labels=["host"]
    )
    age = GaugeMetricFamily(
        "edi_inbox_daemon_heartbeat_age_seconds", "Age of the last heartbeat.", labels=["host"]
    )
    backlog = GaugeMetricFamily(
        "edi_inbox_daemon_backlog",
        "Files the host's running daemon has seen and not finished (queued, held, in"
        " flight; parked: waiting for the database; acks_owed: for their acknowledgements'"
        " folder; halted: cut short by the daemon's trouble, to run again; run_apart: in"
        " flight beside others at max_crashes deaths, run one at a time); 0 for a daemon"
        " no longer running.",
        labels=["host", "state"],
    )
    seen: set[str] = set()
    for daemon in queries.list_daemons(web.db):
        host = daemon["host"]
        if host in seen:
            continue
        seen.add(host)
        stopping = (daemon.get("counters") or {}).get("stopping")
        alive = admin.alive(daemon, web.settings) and not stopping
        up.add_metric([host], 1.0 if alive else 0.0)
        age.add_metric([host], daemon["heartbeat_age_seconds"])
        counters = admin.shown_counters(daemon, alive)
        for state in ("queue", "held", "in_flight", "parked", "acks_owed", "halted", "run_apart"):
            backlog.add_metric([host, state], float(counters.get(state, 0) or 0))
    yield up
    yield age
    yield backlog


def _folders(web: Any) -> Iterator[Metric]:
    inbox = admin.inbox_backlog(web.settings)
    host = web.host
    waiting = GaugeMetricFamily(
        "edi_inbox_inbox_waiting", "Files waiting in the inbox.", labels=["host"]
    )
    oldest = GaugeMetricFamily(
        "edi_inbox_inbox_oldest_age_seconds",
        "Age of the oldest file waiting in the inbox (0 when empty).",
        labels=["host"],
    )
    if inbox["waiting"] is not None:
        waiting.add_metric([host], inbox["waiting"])
        oldest.add_metric([host], inbox["oldest_age_seconds"] or 0.0)
    yield waiting
    yield oldest
    partner_waiting = GaugeMetricFamily(
        "edi_inbox_partner_inbox_waiting",
        "Files waiting in a partner's own inbox ([partners.NAME] inbox).",
        labels=["host", "partner"],
    )
    partner_oldest = GaugeMetricFamily(
        "edi_inbox_partner_inbox_oldest_age_seconds",
        "Age of the oldest file waiting in a partner's own inbox (0 when empty).",
        labels=["host", "partner"],
    )
    for partner in web.settings.partners.partners:
        if partner.inbox is None:
            continue
        backlog = admin.inbox_backlog(web.settings, inbox=partner.inbox)
        if backlog["waiting"] is not None:
            partner_waiting.add_metric([host, partner.name], backlog["waiting"])
            partner_oldest.add_metric([host, partner.name], backlog["oldest_age_seconds"] or 0.0)
    yield partner_waiting
    yield partner_oldest
    failed = GaugeMetricFamily(
        "edi_inbox_failed_files", "Files in failed/ waiting for a retry.", labels=["host"]
    )
    count = admin.folder_counts(web.settings, claimed={}).get("failed")
    if count is not None:
        failed.add_metric([host], count)
    yield failed


@router.get("/metrics", tags=["health"], response_class=Response)
def metrics(request: Request) -> Response:
    """The Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RecordsCollector(request.app.state.web))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
