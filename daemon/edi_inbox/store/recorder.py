"""``DatabaseRecorder``: the pipeline's ``jobs.Recorder`` on a database.

A job's records go in the units of work the protocol asks for, each committed
whole or not at all: the job row with the steps done so far and their log
lines (and the control numbers its 997s will carry) and its search keys,
just before the first ERP call; an order's ERP id the moment the ERP
gives it; the final status, summary, orders, interchanges, search keys and
rollups at the end (with the row, for a job that never reached the ERP).
Each unit sends its writes as one ``Batch``: on PostgreSQL one round trip
(``job_finished``, which reads the row's old values first, takes four;
``job_started``, which needs the new row's id for the steps, four as well,
five with control numbers).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import peewee as pw

from ..files import begins_with, display_name, recorded_path
from ..jobs import (
    COUNTED_STATUSES,
    JobResult,
    JobStatus,
    LogEntry,
    OrderResult,
    PostedOrder,
    Started,
    StepResult,
)
from ..orders import JSON_VERSION, document_key, head, record_key, same_order
from .database import Database, run_unit
from .fields import dumps, fold, utcnow
from .models import (
    Daemon,
    Job,
    JobLog,
    Order,
    po_search_key,
    po_suffixes,
    vendor_search_key,
)
from .schema import seed_control_number
from .statements import Batch, add_rollup, execute, json_or_none, read_time, stamp

# Retries of retries followed back at most this far (``held_by``).
LINEAGE_MAX = 100


class DatabaseRecorder:
    """``jobs.Recorder`` on a database: a job's records in a few short transactions.

    Each method is one unit of work (``run_unit``): it commits whole or raises
    with nothing written. A method called for a job whose row is missing (a
    job that ended before the ERP call, or whose ``job_started`` failed while
    the database was away) creates the row first.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        # Per job in flight, to skip work that would change nothing (each
        # written page costs a SQLite commit ~10 µs): the row id, whether this
        # recorder created the row, and the orders order_accepted just wrote.
        self._ids: dict[str, int] = {}
        self._fresh: set[str] = set()
        self._accepted: dict[str, tuple[Any, ...]] = {}
        self._keyed: dict[str, SearchKeys] = {}  # the search keys job_started wrote

    def _remember(self, job: JobResult, pk: int, fresh: bool) -> None:
        with self._lock:
            self._ids[job.job_id] = pk
            if fresh:
                self._fresh.add(job.job_id)
            else:
                self._fresh.discard(job.job_id)

    def _known_pk(self, job: JobResult) -> int | None:
        with self._lock:
            return self._ids.get(job.job_id)

    def _insert_job(self, job: JobResult, now: datetime, ack_numbers: str | None = None) -> Batch:
        when = stamp(now)
        return Batch(self.db).add(
            "job_insert",
            job.job_id,
            job.file_name,
            _text(job.file_path),
            job.file_sha256,
            job.file_size,
            JobStatus.RUNNING.value,
            False,
            stamp(job.started_at) if job.started_at else when,
            job.host,
            job.retry_of,
            job.partner,
            ack_numbers,
            when,
            when,
        )

    def _job_pk(self, job: JobResult) -> tuple[int, bool]:
        """The job's row id, inserting the row if it is missing (inside a unit),
        and whether it did."""
        pk = self._known_pk(job)
        if pk is not None:
            return pk, False
        row = self._insert_job(job, utcnow()).run()
        if row:
            return row[0], True
        return execute(self.db, "job_get", job.job_id).fetchone()[0], False

    def _write(self, job: JobResult, add: Callable[[Batch, int], object]) -> Any:
        """One unit of work: the statements ``add(batch, pk)`` puts in a batch
        for the job's row ``pk``; returns the first row of the last one's
        result. The row id, known from ``job_started``, is remembered only
        once a unit that had to find it has committed."""
        pk = self._known_pk(job)
        if pk is not None:
            batch = Batch(self.db)
            add(batch, pk)
            return batch.commit()

        def work() -> tuple[int, Any]:
            pk, _ = self._job_pk(job)
            batch = Batch(self.db)
            add(batch, pk)
            return pk, batch.run()

        pk, row = run_unit(self.db, work)
        self._remember(job, pk, fresh=False)
        return row

    def job_started(
        self,
        job: JobResult,
        steps: Iterable[StepResult] = (),
        logs: Iterable[LogEntry] = (),
        *,
        control_numbers: int = 0,
        seen: Collection[str] = (),
    ) -> Started:
        now = utcnow()
        accepted: dict[str, str] = {}
        reserved: list[int] = []
        inherited: list[bool] = [False]  # reserved by a run of the job that never ended
        rivals: dict[str, str] = {}  # key of an order in flight or posted -> its job
        sent: dict[str, str] = {}  # key -> the body sent under it, unanswered (Started)
        counted: set[str] = set()  # the retried job's, in its total
        taken: list[str] = []  # the retried job's, which never ended: this job's now
        posting = sorted({o.po_number for o in job.orders if o.status == "pending"})
        keys = _search_keys(job.orders)

        def work() -> tuple[int, bool]:
            accepted.clear()  # (a unit may run again on PostgreSQL)
            counted.clear()
            taken.clear()
            reserved.clear()
            rivals.clear()
            sent.clear()
            if not self.db.is_sqlite:  # in this order in every job: no deadlock
                for po_number in posting:
                    execute(self.db, "po_lock", po_search_key(po_number))
            if control_numbers:
                earlier = self._unended_numbers(job, control_numbers)
                if earlier is None:
                    earlier = reserve_control_numbers(self.db, control_numbers)
                    inherited[:] = [False]
                else:
                    inherited[:] = [True]
                reserved.append(earlier)
            for key in dict.fromkeys(o.idempotency_key for o in job.orders):
                row = execute(self.db, "order_by_key", key).fetchone()
                if row is None:
                    continue
                erp_po_id, by, status, body = row
                if erp_po_id is None:  # a job is posting it, or stopped while it did
                    if body is not None:
                        sent[key] = body
                    continue
                if by not in (job.job_id, job.retry_of):  # posted since this job's check
                    rivals[key] = by
                    continue
                accepted[key] = erp_po_id
                if by != job.job_id and status in COUNTED_STATUSES:
                    counted.add(key)
                elif by != job.job_id:
                    taken.append(key)
            in_flight, first_sent, _ = self._unanswered(job, posting, adopt=True)
            rivals.update(in_flight)
            rivals.update(self._posted_unseen(job, posting, seen))
            sent.update(first_sent)
            # The orders go in with the running row, before any is posted: an
            # order the database cannot hold (a permanent error) fails the job
            # here, with nothing posted, instead of after the ERP took it. One
            # another job is posting keeps that job's row (one row a key).
            pending = [
                replace(o, payload_json=sent[o.idempotency_key], json_version=None)
                if o.idempotency_key in sent
                else o
                for o in job.orders
                if o.idempotency_key not in accepted and o.idempotency_key not in rivals
            ]
            numbers = f"{reserved[0]} {control_numbers}" if control_numbers else None
            row = self._insert_job(job, now, numbers).run()
            if row is not None:
                pk, batch = row[0], Batch(self.db)
            else:  # resumed after a crash, or run again under the same id
                pk, status, started_at, duration, amount, partner = execute(
                    self.db, "job_get", job.job_id
                ).fetchone()
                batch = add_rollup(
                    Batch(self.db), status, started_at, duration, amount, -1, partner
                )
                batch.add(
                    "job_restart",
                    False,
                    stamp(job.started_at or now),
                    job.host,
                    _text(job.file_path),
                    stamp(now),
                    pk,
                )
                if numbers:
                    batch.add("job_ack_numbers", numbers, pk)
            _add_orders(_add_steps(batch, pk, steps), pk, pending, now)
            # Searchable by any of its PO numbers and vendors while it runs
            # (and if it stops before its final record), as by its orders.
            _add_search_keys(batch, pk, keys)
            for key in taken:
                batch.add("order_take", pk, stamp(now), key)
            _add_logs(batch, pk, logs).run()
            return pk, row is not None

        self._remember(job, *run_unit(self.db, work))
        with self._lock:
            self._keyed[job.job_id] = keys
        return Started(
            accepted,
            reserved[0] if reserved else None,
            frozenset(rivals.values()),
            frozenset(counted),
            sent,
            inherited[0],
        )

    def _unended_numbers(self, job: JobResult, count: int) -> int | None:
        """The first of the control numbers a run of this job that never
        ended reserved for as many acknowledgements (this job's own row run
        again, or the job it retries, interrupted): it may have written them
        before a crash cut its final record short; None if there is none."""
        for job_id in dict.fromkeys(j for j in (job.job_id, job.retry_of) if j):
            row = execute(self.db, "job_ack_numbers_get", job_id).fetchone()
            if row is None or row[1] is None or row[0] not in _UNENDED:
                continue
            first, reserved = (int(n) for n in str(row[1]).split())
            if reserved >= count:
                return first
        return None

    def _posted_unseen(
        self, job: JobResult, po_numbers: Iterable[str], seen: Collection[str]
    ) -> dict[str, str]:
        """Orders of ``job``'s senders with these PO numbers that another job
        posted and the job's check did not judge it against (``seen``: the
        keys it did), key -> that job's id: posted between the check and
        this record, they are judged now (``Pipeline._deduplicate`` again)."""
        senders = {o.sender for o in job.orders}
        found: dict[str, str] = {}
        for po_number in po_numbers:
            for text, _, key, job_id, _ in execute(
                self.db, "posted_by_po", po_search_key(po_number), po_number
            ):
                if key in seen or job_id in (job.job_id, job.retry_of):
                    continue
                if _sender(head(text)) in senders:
                    found[key] = job_id
        return found

    def _unanswered(
        self, job: JobResult, po_numbers: Iterable[str], *, adopt: bool = False
    ) -> tuple[dict[str, str], dict[str, str], set[str]]:
        """Orders with these PO numbers that no ERP id answers: those of
        ``job``'s senders that other running jobs are posting (idempotency
        key -> job id), the first body sent under each of ``job``'s keys
        by a job that ended without an ERP id (key -> the body), and those
        of the keys whose answer is unknown (not refused for good: the ERP
        may hold the order). That job's row has a key of its own
        (``_as_recorded``): the key is the body's.

        A pending order of a job that was interrupted counts as sent: it may
        have been cut short mid-POST, before its attempts were recorded.

        ``adopt`` (at the job's start): an order of ``job`` that is the order
        such a body is (``orders.same_order``) under another key — written
        with numbers written otherwise (``2.0`` for ``2``), or by an older
        version whose JSON had fewer fields — takes the key that body was
        sent under (``_sent_key``), and the body: the ERP may hold the order
        under that key."""
        senders = {o.sender for o in job.orders}
        keys = {o.idempotency_key for o in job.orders}
        in_flight: dict[str, str] = {}
        sent: dict[str, str] = {}
        unknown: set[str] = set()
        for po_number in po_numbers:
            for text, key, job_id, attempts, version, refused, status in execute(
                self.db, "unanswered_by_po", po_search_key(po_number), po_number
            ):
                mine = job_id in (job.job_id, job.retry_of)
                body = json.loads(text) if text else {}
                # Sent, the ERP may hold it: tried, or pending in a job cut short.
                tried = bool(attempts) or status == JobStatus.INTERRUPTED.value
                if not tried and not mine:  # another job is posting it now
                    if _sender(body) in senders:
                        in_flight[key] = job_id
                    continue
                if not body:
                    continue
                body_key = document_key(body)
                same = None
                if adopt and not {body_key, key} & keys:
                    same = _same_pending(job, body, complete=version == JSON_VERSION)
                if same is not None:
                    same.idempotency_key = self._sent_key(key, body_key, job_id)
                    keys.add(same.idempotency_key)
                # (Decided from the keys alone, so that a unit run again, its
                # orders' keys taken over already, finds the same bodies.)
                sent_as = None
                if key != body_key and key in keys:  # an older version's row, taken over
                    sent_as = key
                elif body_key in keys and (tried or mine):
                    sent_as = body_key
                if sent_as is not None:
                    sent.setdefault(sent_as, text)
                    if not refused:
                        unknown.add(sent_as)
        return in_flight, sent, unknown

    def _sent_key(self, key: str, body_key: str, job_id: str) -> str:
        """The key a row's body went to the ERP under: its body's (``key``
        is the one a job ended with, ``_as_recorded``, or the same), or the
        row's own ``key`` (a running job's, or one an older version wrote,
        whose keys hashed the JSON it had)."""
        if key == body_key:
            return key
        rows = execute(self.db, "order_count", job_id).fetchone()[0]
        if any(record_key(body_key, job_id, index) == key for index in range(rows)):
            return body_key
        return key

    def sent_unanswered(self, job: JobResult, po_number: str) -> Collection[str]:
        def work() -> Collection[str]:
            # As ``job_started`` reads them: a row of the key without an ERP id
            # (a job posting it, or one that stopped while it did), and the
            # bodies jobs that ended sent under their own keys, unless the ERP
            # refused them for good.
            keys = {o.idempotency_key for o in job.orders if o.po_number == po_number}
            rows = {k: execute(self.db, "order_by_key", k).fetchone() for k in keys}
            found = {k for k, row in rows.items() if row is not None and row[0] is None}
            return found | self._unanswered(job, [po_number])[2]

        return run_unit(self.db, work, write=False, atomic=False)

    def posted_keys(self, keys: Collection[str]) -> Collection[str]:
        def work() -> Collection[str]:
            found: set[str] = set()
            ordered = sorted(keys)
            for first in range(0, len(ordered), 500):
                rows: list[Any] = list(
                    Order.select(Order.idempotency_key)
                    .where(
                        Order.idempotency_key.in_(ordered[first : first + 500]),
                        Order.erp_po_id.is_null(False),
                    )
                    .tuples()
                )
                found.update(row[0] for row in rows)
            return found

        return run_unit(self.db, work, write=False, atomic=False)

    def held_by(self, job_id: str) -> Collection[str]:
        def work() -> Collection[str]:
            lineage: list[int] = []
            current: str | None = job_id
            while current is not None and len(lineage) < LINEAGE_MAX:
                row = Job.select(Job.id, Job.retry_of).where(Job.job_id == current).first()
                if row is None or row.id in lineage:
                    break
                lineage.append(row.id)
                current = row.retry_of
            held: set[str] = set()
            rows = Order.select(Order.idempotency_key, Order.payload).where(
                Order.job.in_(lineage),
                Order.status != "duplicate",
                Order.erp_po_id.is_null(False)
                | (Order.status == "pending")
                | ((Order.attempts > 0) & (Order.refused == False)),  # noqa: E712
            )
            found: list[Any] = list(rows.tuples())
            for key, body in found:
                held.add(key)
                if isinstance(body, dict):  # one that ended unanswered has a key of its own
                    held.add(document_key(body))
            return held

        return run_unit(self.db, work, write=False, atomic=False)

    def in_flight(self, job: JobResult, rivals: Collection[str]) -> dict[str, int]:
        po_numbers = {o.po_number for o in job.orders}

        def work() -> dict[str, int]:
            holding = set(self._unanswered(job, po_numbers)[0].values()) & set(rivals)
            return {r: execute(self.db, "pending_count", r).fetchone()[0] for r in holding}

        return run_unit(self.db, work, write=False, atomic=False)

    def ended(self, job_id: str) -> tuple[str, str | None, str | None] | None:
        def work() -> tuple[str, str | None, str | None] | None:
            row = execute(self.db, "job_ended", job_id).fetchone()
            if row is None or row[0] in (JobStatus.RUNNING, JobStatus.RECEIVED):
                return None
            return row[0], row[1], row[2]

        return run_unit(self.db, work, write=False, atomic=False)

    def recorded(self, job_id: str) -> JobResult | None:
        from ..queries import load_job  # the read side, built on the store

        return load_job(self.db, job_id)

    def order_accepted(self, job: JobResult, order: OrderResult) -> tuple[str, str] | None:
        now = utcnow()
        key = order.idempotency_key
        owner, erp_po_id = self._write(
            job, lambda batch, pk: _add_orders(batch, pk, [order], now).add("order_owner", key)
        )
        if owner != job.job_id:  # the row kept its ERP id: recorded by another job first
            return owner, erp_po_id
        with self._lock:
            self._accepted[key] = _order_fields(order)
        return None

    def _orders_changed(self, orders: Iterable[OrderResult]) -> list[OrderResult]:
        with self._lock:
            return [o for o in orders if self._accepted.get(o.idempotency_key) != _order_fields(o)]

    def job_finished(
        self, job: JobResult, logs: list[LogEntry], steps: Iterable[StepResult] = ()
    ) -> None:
        now = utcnow()
        content = job.edi_content
        if content is not None and len(content) > self.db.edi_content_max_bytes:
            content = None  # the hash and the final path are what is kept
        status = _status(job.status)
        total = job.total_amount
        recorded = [_as_recorded(job, i, o) for i, o in enumerate(job.orders)]
        rekeyed = any(r is not o for r, o in zip(recorded, job.orders, strict=True))
        orders = self._orders_changed(recorded)
        with self._lock:
            fresh = job.job_id in self._fresh
            keys = _unwritten(_search_keys(job.orders), self._keyed.get(job.job_id))

        def work() -> None:
            db = self.db
            pk, inserted = self._job_pk(job)
            old = execute(db, "job_get_pk", pk).fetchone()
            old_status, old_started, old_duration, old_amount, old_sha, old_retry, partner = old
            batch = add_rollup(
                Batch(db), old_status, old_started, old_duration, old_amount, -1, partner
            )
            old_started = read_time(old_started)
            started = job.started_at or old_started or now
            values: dict[str, Any] = {
                "status": status,
                "success": job.success,
                "completed_at": stamp(job.completed_at or now),
                "duration_seconds": job.duration_seconds,
                "file_size": job.file_size,
                "file_path": _text(job.file_path),  # in the daemon: where the file is going
                "po_number": job.po_number,
                "total_amount": total,
                "erp_po_id": job.erp_po_id,
                "vendor_name": job.vendor_name,
                "error": _text(job.error),
                "error_details": json_or_none(job.error_details),
                "host": job.host,
                "sender_id": job.sender_id,
                "partner": job.partner,
                "receiver_id": job.receiver_id,
                "interchange_control_number": job.interchange_control_number,
                "duplicate_of": job.duplicate_of,
                "acks": json_or_none(job.acks),
                "edi_content": content,
                "updated_at": stamp(now),
            }
            # Assigning an indexed column rewrites its index even when the value
            # is the same: set the ones known since job_started only if changed.
            if started != old_started:
                values["started_at"] = stamp(started)
            if job.file_sha256 != old_sha:
                values["file_sha256"] = job.file_sha256
            if job.retry_of != old_retry:
                values["retry_of"] = job.retry_of
            batch.update("jobs", pk, values)
            if rekeyed and not inserted:  # its orders never posted: under keys of their own
                batch.add("orders_unposted_delete", pk)
            _add_orders(batch, pk, orders, now)
            _add_steps(batch, pk, steps)
            _add_logs(batch, pk, logs)
            if not (fresh or inserted):
                batch.add("interchanges_delete", pk)
            interchanges = dict.fromkeys(i.key() for i in job.interchanges)
            batch.add_rows("interchange_insert", [(*key, pk) for key in interchanges])
            _add_search_keys(batch, pk, keys)
            add_rollup(batch, status, started, job.duration_seconds, total, +1, job.partner).run()
            if job.retry_of and job.file_path:
                _carried_on(job.retry_of, _text(job.file_path), job.po_number)

        run_unit(self.db, work)
        self._forget(job)

    def job_status_only(self, job: JobResult, reason: str) -> None:
        """The fallback when the full final record fails for good (a value the
        database cannot hold): the job's row alone gets its status, times,
        ERP id and ``reason`` (with each order's PO, cut short, and ERP id in
        ``error_details``), so that no job stays ``running`` and no ERP id is
        lost. One unit of work."""
        now = utcnow()
        status = _status(job.status)
        details = [{"code": "not_recorded", "message": reason}] + [
            {"po_number": o.po_number[:64], "erp_po_id": o.erp_po_id, "status": o.status}
            for o in job.orders
        ]

        def work() -> None:
            db = self.db
            pk, _ = self._job_pk(job)
            old_status, old_started, old_duration, old_amount, _, _, partner = execute(
                db, "job_get_pk", pk
            ).fetchone()
            batch = add_rollup(
                Batch(db), old_status, old_started, old_duration, old_amount, -1, partner
            )
            started = read_time(old_started) or job.started_at or now
            erp_ids = [o.erp_po_id for o in job.orders if o.erp_po_id]
            batch.update(
                "jobs",
                pk,
                {
                    "status": status,
                    "success": job.success,
                    "completed_at": stamp(job.completed_at or now),
                    "duration_seconds": job.duration_seconds,
                    "file_path": _text(job.file_path),
                    "partner": job.partner,
                    "erp_po_id": ", ".join(erp_ids)[:200] if erp_ids else None,
                    "error": _text(reason),
                    "error_details": json_or_none(details),
                    "updated_at": stamp(now),
                },
            )
            add_rollup(
                batch, status, started, job.duration_seconds, old_amount, +1, job.partner
            ).run()

        run_unit(self.db, work)
        self._forget(job)

    def _forget(self, job: JobResult) -> None:
        """The job's record is final: drop what was kept while it ran."""
        with self._lock:
            self._ids.pop(job.job_id, None)
            self._fresh.discard(job.job_id)
            self._keyed.pop(job.job_id, None)
            for order in job.orders:
                self._accepted.pop(order.idempotency_key, None)

    def find_sent(self, sender: tuple[str, str], po_number: str) -> list[PostedOrder]:
        """Orders with this PO number of this sender (``_posted``), oldest
        first: those posted, and those of jobs not ended (running, or cut
        short: to run again) sent without an answer, unless the ERP refused
        them for good (``erp_po_id`` None: tried; or pending in a job cut
        short, which may have sent it). Plain SQL (``statements``): peewee took longer to build this
        query, once per order, than SQLite takes to run it."""

        def work() -> list[PostedOrder]:
            rows = execute(self.db, "sent_by_po", po_search_key(po_number), po_number).fetchall()
            return [
                found
                for text, erp_po_id, key, job_id, version in rows
                if (found := _posted(sender, po_number, text, erp_po_id, key, job_id, version))
            ]

        return run_unit(self.db, work, write=False, atomic=False)

    def kept_content(self, job_id: str) -> bytes | None:
        query = Job.select(Job.edi_content).where(Job.job_id == job_id)
        content = run_unit(self.db, lambda: query.scalar(), write=False, atomic=False)
        return None if content is None else bytes(content)

    def interchange_seen(self, job: JobResult) -> str | None:
        def work() -> str | None:
            for key in dict.fromkeys(i.key() for i in job.interchanges):
                row = execute(self.db, "duplicate_by_interchange", *key, job.job_id).fetchone()
                if row:
                    return str(row[0])
            return None

        return run_unit(self.db, work, write=False, atomic=False)

    def processed_whole(self, job: JobResult, data: bytes) -> str | None:
        unkept: list[tuple[str, str, str]] = []  # job id, file, SHA-256: bytes not kept

        def work() -> str | None:
            unkept.clear()
            for key in dict.fromkeys(i.key() for i in job.interchanges):
                for job_id, content, path, sha256 in execute(
                    self.db, "answered_by_interchange", *key, job.job_id
                ):
                    if content is None and path and sha256:
                        unkept.append((str(job_id), path, sha256))
                    elif content is not None and bytes(content).startswith(data):
                        return str(job_id)
            return None

        found = run_unit(self.db, work, write=False, atomic=False)
        # A file over edi_content_max_bytes: its file (in done/), if it is
        # still the one the job read; read outside the unit (it may be large).
        return found or next(
            (j for j, path, sha256 in unkept if begins_with(recorded_path(path), data, sha256)),
            None,
        )

    def next_control_number(self, count: int = 1) -> int:
        return next_control_number(self.db, count)


_UNENDED = (JobStatus.RUNNING.value, JobStatus.INTERRUPTED.value)


def _text(value: str | None) -> str | None:
    """Text the database can hold: a path with a byte that is not UTF-8 (a
    partner's file name) is kept escaped, as logs show it, not refused
    (``files.recorded_path`` reads such a path back)."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return display_name(value)
    return value


def _same_pending(job: JobResult, body: dict[str, Any], *, complete: bool) -> OrderResult | None:
    """The pending order of ``job`` that is the order ``body`` is, if any
    (``complete``: the body is this version's JSON, ``orders.same_content``)."""
    return next(
        (
            o
            for o in job.orders
            if o.status == "pending" and same_order(o.fields(), body, complete=complete)
        ),
        None,
    )


def _sender(payload: dict[str, Any]) -> tuple[Any, Any]:
    """ISA05, ISA06 as an order's payload holds them (``OrderResult.sender``)."""
    return payload.get("sender_qualifier"), payload.get("sender_id")


def _status(value: Any) -> str:
    return str(value.value if isinstance(value, JobStatus) else value)


def _add_steps(batch: Batch, pk: int, steps: Iterable[StepResult]) -> Batch:
    now = stamp(utcnow())
    for step in steps:
        batch.add(
            "step_upsert",
            pk,
            step.step_name,
            str(step.status),
            json_or_none(step.data),
            step.error,
            step.attempts,
            stamp(step.started_at),
            step.duration_seconds,
            now,
        )
    return batch


def _add_logs(batch: Batch, pk: int, logs: Iterable[LogEntry]) -> Batch:
    rows = [(pk, stamp(e.timestamp), e.level, e.message, json_or_none(e.details)) for e in logs]
    return batch.add_rows("log_insert", rows)


def _order_fields(order: OrderResult) -> tuple[Any, ...]:
    return (
        order.po_number,
        order.line_count,
        order.total_amount,
        order.vendor_name,
        order.erp_po_id,
        order.status,
        order.error,
        order.attempts,
        _payload(order),
    )


def _payload(order: OrderResult) -> str | None:
    if order.payload_json is not None:
        return order.payload_json
    return None if order.payload is None else dumps(order.payload)


def _as_recorded(job: JobResult, index: int, order: OrderResult) -> OrderResult:
    """An order a job ended without posting keeps a row of its own: the row
    of its Idempotency-Key is for the job that posts it (a resend, a retry),
    and would take it from this job's record."""
    if order.status in ("posted", "duplicate"):  # a duplicate has a key of its own already
        return order
    return replace(order, idempotency_key=record_key(order.idempotency_key, job.job_id, index))


SearchKeys = tuple[list[str], list[str]]


def _search_keys(orders: Sequence[OrderResult]) -> SearchKeys:
    """The ``po_search`` suffixes and ``vendor_search`` names of a job's orders."""
    suffixes = {s for o in orders for s in po_suffixes(fold(o.po_number))}
    vendors = {v for o in orders if (v := vendor_search_key(o.vendor_name))}
    return sorted(suffixes), sorted(vendors)


def _unwritten(keys: SearchKeys, written: SearchKeys | None) -> SearchKeys:
    """``keys`` less those ``written`` already (by the job's ``job_started``)."""
    if written is None:
        return keys
    suffixes, vendors = set(written[0]), set(written[1])
    return [k for k in keys[0] if k not in suffixes], [k for k in keys[1] if k not in vendors]


def _add_search_keys(batch: Batch, pk: int, keys: SearchKeys) -> Batch:
    """Insert a job's search keys (those already there stay)."""
    suffixes, vendors = keys
    batch.add_rows("po_search_insert", [(s, pk) for s in suffixes])
    return batch.add_rows("vendor_search_insert", [(v, pk) for v in vendors])


def _add_orders(batch: Batch, pk: int, orders: Sequence[OrderResult], now: datetime) -> Batch:
    """Insert or update orders by idempotency key (the last one of a key wins)."""
    when = stamp(now)
    rows = [
        (
            pk,
            o.po_number,
            po_search_key(o.po_number),
            o.line_count,
            o.total_amount,
            o.vendor_name,
            o.erp_po_id,
            o.idempotency_key,
            o.status,
            o.error,
            o.attempts,
            _payload(o),
            o.json_version,
            o.refused,
            when,
            when,
        )
        for o in {o.idempotency_key: o for o in orders}.values()
    ]
    return batch.add_rows("order_upsert", rows)


# --- the service's writes -------------------------------------------------


def _posted(
    sender: tuple[str, str],
    po_number: str,
    text: str | None,
    erp_po_id: str | None,
    key: str,
    job_id: str,
    version: int | None,
) -> PostedOrder | None:
    """An order's row as ``find_sent`` gives it, if its payload names this
    sender and this very PO number (the payload holds ISA05/ISA06, BEG01 and
    BEG03 as sent; the column holds a NUL as U+FFFD on PostgreSQL,
    ``database.pg_cursor``)."""
    payload = head(text)
    if _sender(payload) != sender or payload.get("po_number") != po_number:
        return None
    purpose = str(payload.get("purpose", ""))  # BEG01
    release = str(payload.get("release_number", ""))  # BEG04
    usage = str(payload.get("usage", "P"))  # ISA15
    return PostedOrder(job_id, erp_po_id, key, purpose, release, usage, text or "", version)


def next_control_number(db: Database, count: int = 1) -> int:
    """The next ISA13 for a 997 or TA1: 1…999999999, wrapping, increasing across
    restarts. ``count`` numbers are reserved in one write: the first is returned,
    the others follow it (a job's TA1s and 997s take theirs at once)."""
    return run_unit(db, lambda: reserve_control_numbers(db, count))


def reserve_control_numbers(db: Database, count: int) -> int:
    """``next_control_number`` inside the caller's unit of work."""
    params = (count, count, count, "isa13")
    row = execute(db, "control_next", *params).fetchone()
    if row is None:  # a database initialised before the row existed
        seed_control_number()
        row = execute(db, "control_next", *params).fetchone()
    return int(row[0]) - count + 1


def heartbeat(
    db: Database,
    daemon_id: str,
    *,
    host: str,
    pid: int,
    version: str,
    started_at: datetime,
    counters: dict[str, Any] | None = None,
    last_error: str | None = None,
    heartbeat_seconds: float | None = None,
    now: datetime | None = None,
) -> None:
    """Record that daemon ``daemon_id`` is alive (one row per daemon,
    upserted), dated by the database's clock (``Database.clock``) unless
    ``now`` is given, beating every ``heartbeat_seconds``."""

    def work() -> None:
        row = {
            Daemon.daemon_id: daemon_id,
            Daemon.host: host,
            Daemon.pid: pid,
            Daemon.version: version,
            Daemon.started_at: started_at,
            Daemon.heartbeat_at: now or db.clock(),
            Daemon.heartbeat_seconds: heartbeat_seconds,
            Daemon.counters: counters or {},
            Daemon.last_error: last_error,
        }
        preserve = [f for f in row if f is not Daemon.daemon_id]
        Daemon.insert(row).on_conflict(
            conflict_target=[Daemon.daemon_id], preserve=preserve
        ).execute()

    run_unit(db, work)


def remove_daemon(db: Database, daemon_id: str) -> None:
    """Forget a daemon's heartbeat row (on clean shutdown)."""
    run_unit(db, Daemon.delete().where(Daemon.daemon_id == daemon_id).execute)


def died(counters: dict[str, Any] | None) -> bool:
    """Whether a heartbeat row left behind (a clean stop removes its own)
    tells a death: killed, out of memory, a worker process killed (``exited``
    with ``crashed`` 1), rather than an exit on the daemon's own failure (an
    inbox gone: ``crashed`` 0), which no file in flight caused. A row that
    says ``exited`` without ``crashed`` (versions before it told the two
    apart) is a death, as those versions counted it."""
    counters = counters or {}
    return "exited" not in counters or counters.get("crashed") != 0


def take_left_behind(db: Database, host: str) -> dict[str, bool]:
    """Forget the heartbeat rows ``host``'s earlier daemons left: by daemon
    id, whether each ``died``."""

    def work() -> dict[str, bool]:
        rows = Daemon.select(Daemon.daemon_id, Daemon.counters).where(Daemon.host == host)
        left = {row.daemon_id: died(row.counters) for row in rows}
        Daemon.delete().where(Daemon.host == host).execute()
        return left

    return run_unit(db, work)


def mark_interrupted(
    db: Database,
    host: str,
    *,
    job_ids: Collection[str] | None = None,
    claimed_only: bool = False,
    owed: Collection[str] = (),
    now: datetime | None = None,
    reason: str | None = None,
) -> list[dict[str, Any]]:
    """Crash recovery: jobs this ``host`` left ``running`` become ``interrupted``
    (with ``claimed_only``, those of a daemon: their file is claimed, named
    ``NAME.<job_id>`` after the job, or none; not the job of an ``edi-inbox
    process FILE`` run under the same host name), but those in ``owed``
    (their records kept to be written as those jobs: ``claims.owed_jobs``);
    with ``job_ids`` instead, those jobs of other hosts whose files this
    ``host`` took over. Dated by the database's clock (``Database.clock``),
    as heartbeats are: another host's clock ahead must not make the job
    an hour long.

    Call at start-up, before any worker runs, and at a stop, once none
    runs. Returns each such job as
    ``{job_id, file_name, file_path, started_at}`` so the service can resume
    its file from ``processing/``. A job another host finished meanwhile is
    left alone (compare-and-set on the status)."""
    if reason is None:
        reason = f"interrupted: the daemon on {host} stopped while this job ran"
        if job_ids is not None:
            reason = f"interrupted: its host went quiet and {host} took the file over"
    running = JobStatus.RUNNING.value
    interrupted = JobStatus.INTERRUPTED.value
    which = Job.host == host if job_ids is None else Job.job_id.in_(list(job_ids))

    def work() -> list[dict[str, Any]]:
        at = now or db.clock()
        rows = list(
            Job.select(
                Job.id,
                Job.started_at,
                Job.total_amount,
                Job.job_id,
                Job.file_name,
                Job.file_path,
                Job.partner,
                Job.po_number,
            ).where((Job.status == running) & which)
        )
        done = []
        for row in rows:
            if row.job_id in owed or (claimed_only and not _claimed(row.file_path, row.job_id)):
                continue
            duration = (at - row.started_at).total_seconds() if row.started_at else None
            values = {
                Job.status: interrupted,
                Job.success: False,
                Job.completed_at: at,
                Job.duration_seconds: duration,
                Job.error: reason,
                Job.updated_at: at,
            }
            if row.po_number is None:  # its first order's, as a job's that ended shows
                first = Order.select(Order.po_number).where(Order.job == row.id).order_by(Order.id)
                values[Job.po_number] = first.scalar()
            cas = (Job.id == row.id) & (Job.status == running)
            changed = Job.update(values).where(cas).execute()
            if not changed:
                continue
            add_rollup(
                Batch(db), interrupted, row.started_at, duration, row.total_amount, +1, row.partner
            ).run()
            started = row.started_at.isoformat() if row.started_at else None
            done.append(
                {
                    "job_id": row.job_id,
                    "file_name": row.file_name,
                    "file_path": row.file_path,
                    "started_at": started,
                }
            )
        return done

    return run_unit(db, work)


def _claimed(path: str | None, job_id: str) -> bool:
    """Whether a running job's file is a daemon's claim: ``NAME.<job_id>``,
    named after the job (a claim runs under its job's name, in whichever
    processing folder: a partner's outside ``[paths] processing``, one a
    reload added or dropped), or none."""
    return path is None or path.endswith("." + job_id)


def _carried_on(job_id: str, path: str | None, po_number: str | None) -> None:
    """The interrupted runs a job carried on (``job_id``, its ``retry_of``,
    and theirs): their file is at ``path`` now, not in the ``processing/``
    of a host that stopped or died (a job's ``file_path`` is where its file
    is); one that shows no PO number shows the job's (its orders went on
    with it)."""
    current: str | None = job_id
    for _ in range(LINEAGE_MAX):
        row = Job.select(Job.id, Job.retry_of, Job.status).where(Job.job_id == current).first()
        if row is None or row.status != JobStatus.INTERRUPTED.value:
            return
        po = pw.fn.COALESCE(Job.po_number, po_number)
        Job.update(file_path=path, po_number=po).where(Job.id == row.id).execute()
        current = row.retry_of
        if current is None:
            return


def record_final_path(db: Database, job_id: str, path: str | None, note: str | None = None) -> None:
    """Where the job's file is now, when that is not the path its final record
    foresaw: another name in ``done/``, still claimed after a move that failed,
    or nowhere (``None``: it vanished). ``note`` says why, in the job's log.
    The interrupted runs it carried on are told the same (``_carried_on``)."""

    def work() -> None:
        now = utcnow()
        Job.update(file_path=_text(path), updated_at=now).where(Job.job_id == job_id).execute()
        row = Job.select(Job.id, Job.retry_of).where(Job.job_id == job_id).first()
        if row is None:
            return
        if note:
            JobLog.insert(job=row.id, timestamp=now, level="warning", message=note).execute()
        if row.retry_of:
            _carried_on(row.retry_of, _text(path), None)

    run_unit(db, work)


def job_brief(db: Database, job_id: str) -> dict[str, Any] | None:
    """``{host, status, file_name}`` of a job, or None if there is no such job:
    what the service checks before it touches a file a job may own."""
    query = Job.select(Job.host, Job.status, Job.file_name).where(Job.job_id == job_id)
    return run_unit(db, lambda: query.dicts().first(), write=False)
