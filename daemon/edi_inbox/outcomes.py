"""Outcomes: a finished job's file moved to ``done/`` or ``failed/`` (+ ``NAME.error.json``).

Nothing is ever overwritten (``files.move_new``, ``files.write_new``). A
failed file's ``NAME.error.json`` is in ``failed/`` before the file itself:
whoever sees the file there can read why at once. A move
that fails (a full disk, a folder gone) leaves the file claimed: the
``Mover`` keeps it as a ``PendingMove`` and tries again with backoff, from the
main thread, until it succeeds or the file is gone (resumed elsewhere or
removed by hand). After a restart such a file is resumed like any claim left
behind. The job's record always says where the file is: the final record
foresees ``done/`` or ``failed/``; a move that fails puts the claimed path
and the reason in the record, a file that vanished leaves no path and a note.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from . import files
from .claims import drop_marker, names_marker, os_message
from .config import PathSettings
from .jobs import JobResult

logger = structlog.get_logger("edi_inbox.outcomes")

_FIRST_KEY = re.compile(rb'\{\s*"job_id": "([0-9a-f-]+)"')  # error_report's first
REPORT = ".error.json"  # failed/NAME's report: NAME.error.json (``report_name``)
_JOB_REPORT = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.error\.json"
)
FIRST_RETRY = 0.5  # seconds after a failed move; doubled per attempt
MAX_RETRY = 60.0


def error_report(
    result: JobResult, file: str, inbox: Path | None = None, *, shared: bool | None = None
) -> dict[str, Any]:
    """What ``failed/NAME.error.json`` holds: the reasons, in words a partner can
    act on, and the inbox the file came from (``retry`` puts it back there):
    ``shared_inbox`` says whether that was the shared inbox (``[paths]
    inbox``) or a partner's own folder, wherever either is later."""
    return {
        "job_id": result.job_id,
        "file_name": result.file_name,
        "file": files.display_name(file),
        "status": str(result.status),
        "error": result.error,
        "error_details": result.error_details,
        "po_number": result.po_number,
        "sender_id": result.sender_id,
        "partner": result.partner,
        "inbox": str(inbox) if inbox is not None else None,
        "shared_inbox": shared,
        "interchange_control_number": result.interchange_control_number,
        "retry_of": result.retry_of,
        "completed_at": result.completed_at.isoformat() if result.completed_at else None,
        "steps": [
            {"step_name": s.step_name, "status": str(s.status), "error": s.error}
            for s in result.steps
        ],
        # Each transaction set received: posted (with the ERP's id), a
        # duplicate of one posted before, or rejected, with why.
        "orders": result.sets,
    }


def recorded_sets(job: JobResult) -> list[dict[str, Any]]:
    """``job.sets`` of a job read back from its record (``error_report``'s
    "orders"), rebuilt from its orders: for a job filed after a restart. A
    set that never became an order is not on record (the job's error says
    why)."""
    sets = []
    for order in job.orders:
        fields = order.fields()
        posted = order.status in ("posted", "duplicate")
        sets.append(
            {
                "interchange_control_number": fields.get("interchange_control_number"),
                "group_control_number": fields.get("group_control_number"),
                "transaction_set": "850",
                "control_number": fields.get("set_control_number"),
                "po_number": order.po_number,
                "status": order.status,
                "erp_po_id": order.erp_po_id,
                "reason": None if posted else order.error,
            }
        )
    return sets


def report_name(name: str, job_id: str) -> str:
    """The name of the report beside ``failed/NAME``: ``NAME.error.json``, or
    ``JOB_ID.error.json`` when that would be too long for a file name."""
    json_name = name + REPORT
    if len(os.fsencode(json_name)) > files.MAX_NAME_BYTES:
        return job_id + REPORT
    return json_name


def filed_report(
    folder: Path | None, job_id: str, file_path: str | None
) -> tuple[Path, dict[str, Any]] | None:
    """The error.json beside a job's file in ``folder`` (failed/), and what it
    holds, if the file waits there: the job records the path it was filed
    under (``file_path``), so one look finds it, however full the folder."""
    if folder is None or not file_path:
        return None
    path = files.recorded_path(file_path)
    if path.parent != folder:
        return None
    report_path = folder / report_name(path.name, job_id)
    try:
        if not path.exists():
            return None
        report = json.loads(report_path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or report.get("job_id") != job_id:
        return None
    return report_path, report


def reported_file(folder: Path, json_name: str, report: Mapping[str, Any]) -> str | None:
    """The name in ``folder`` (failed/) of the file the report ``json_name``
    (holding ``report``) is about: NAME of NAME.error.json, or, for a report
    named after its job (``report_name``), the one it names that is there
    (shown as ``display_name`` shows it, or as it is by an older version);
    None if none."""
    if json_name != f"{report.get('job_id')}{REPORT}":
        return json_name[: -len(REPORT)]
    named = report.get("file")
    if isinstance(named, str):
        for name in (files.real_name(named), named):
            if name and "/" not in name and name not in (".", "..") and (folder / name).exists():
                return name
    return None


def failed_files(folder: Path, names: Collection[str]) -> list[str]:
    """Of the ``names`` in ``folder`` (failed/), the files: not the reports,
    nor hidden temporaries. A name like a report is a file when its own
    report is beside it, or a report named after its job names it."""
    present, named = set(names), set()
    for name in present:
        if _JOB_REPORT.fullmatch(name):
            with contextlib.suppress(OSError, ValueError):
                report = json.loads((folder / name).read_bytes())
                if isinstance(report, dict):
                    named.add(reported_file(folder, name, report))
    return [
        n
        for n in names
        if not n.startswith(".") and (not n.endswith(REPORT) or n + REPORT in present or n in named)
    ]


def _report_job(path: Path) -> str | None:
    """The job id an ``error.json`` names, its first key (None: none there,
    or not one of ours)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        found = _FIRST_KEY.match(os.read(fd, 4096))
    except OSError:
        return None
    finally:
        os.close(fd)
    return found.group(1).decode() if found else None


@dataclass
class PendingMove:
    """A finished job whose file could not be moved yet (disk full…)."""

    claimed: Path  # the file in a processing folder
    name: str
    result: JobResult
    attempts: int = 0
    next_at: float = 0.0
    inbox: Path | None = None  # the inbox it came from
    last_error: str = ""


class Mover:
    """Moves finished files out of this host's folders of ``processing/``.

    ``finish`` runs on worker threads; ``pending``, ``add``, ``retry_due`` and
    ``flush`` belong to the main thread."""

    def __init__(
        self,
        paths: PathSettings,
        *,
        clock: Callable[[], float],
        final_path: Callable[[str, str | None, str | None], None] | None = None,
        on_error: Callable[[str], None] = lambda message: None,
        outboxes: Mapping[str, Path] | None = None,
    ) -> None:
        self.paths = paths
        self.outboxes = dict(outboxes or {})  # partner name -> its [partners.NAME] outbox
        self.clock = clock
        self.final_path = final_path
        self.on_error = on_error
        self.pending: list[PendingMove] = []

    def finish(
        self, claimed: Path, name: str, result: JobResult, inbox: Path | None = None
    ) -> PendingMove | None:
        """Move the file (from ``inbox``); on OSError return it as a pending move, due shortly."""
        move = PendingMove(claimed, name, result, inbox=inbox)
        try:
            self.complete(move)
        except OSError as exc:
            move.attempts = 1
            move.next_at = self.clock() + FIRST_RETRY
            self._failed(move, exc, FIRST_RETRY)
            return move
        return None

    def destination(self, name: str, result: JobResult) -> str:
        """Where ``complete`` will move the file of this finished job, as things
        stand: the job's final record carries it (``Pipeline.run(destination=)``)."""
        assert self.paths.done and self.paths.failed
        if result.success:
            return str(files.free_path(self.paths.done, name))
        failed = self.paths.failed
        for candidate in files.candidates(name, failed):  # as _fail chooses
            if not os.path.lexists(failed / candidate) and not os.path.lexists(
                failed / report_name(candidate, result.job_id)
            ):
                return str(failed / candidate)
        raise FileExistsError(f"no free name for {name} in {failed}")

    def complete(self, move: PendingMove) -> None:
        """The move (and error.json) of a finished job; raises OSError to retry later.
        The job's record learns the new path unless it foresaw it already."""
        assert self.paths.done
        marker = names_marker(move.claimed)  # a cut name's, needed no more once filed
        if move.result.success:
            final = files.move_new(move.claimed, self.paths.done, move.name)
        else:
            final = self._fail(move)
        drop_marker(marker)
        foreseen = move.result.file_path == str(final)
        if not foreseen:
            self._record(move, str(final))
        # The job's job_finished line named where the file was going: a move
        # that went there is a debug line, one that went elsewhere is news.
        (logger.debug if foreseen else logger.info)(
            "job_done",
            file=files.display_name(move.name),
            job_id=move.result.job_id,
            status=str(move.result.status),
            moved_to=files.display_name(str(final)),
            error=move.result.error,
        )

    def _fail(self, move: PendingMove) -> Path:
        """Move the file into ``failed/`` under the first free name whose
        ``.error.json`` name is free too, the report written first (taken
        back if the name goes meanwhile); a copy of it to the partner's
        outbox. Returns where the file is now."""
        failed = self.paths.failed
        assert failed
        for candidate in files.candidates(move.name, failed):
            if os.path.lexists(failed / candidate):  # no report beside another's file
                continue
            shared = None if move.inbox is None else move.inbox == self.paths.inbox
            said = error_report(move.result, candidate, move.inbox, shared=shared)
            data = json.dumps(said, indent=2, default=str).encode("utf-8", "surrogateescape")
            json_name = report_name(candidate, move.result.job_id)
            retried = move.result.retry_of
            if retried and _report_job(failed / json_name) == retried:
                # The run this one repeats wrote it, and a crash came before
                # its file followed: the name is this job's.
                with contextlib.suppress(OSError):
                    os.unlink(failed / json_name)
            try:
                report = files.write_new(failed, json_name, data, suffix=False)
            except FileExistsError:
                continue
            try:
                files.move_to(move.claimed, failed / candidate)
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    report.unlink()
                if isinstance(exc, FileExistsError):
                    continue
                raise
            self._copy_to_outbox(move.result, move.name, data)
            return failed / candidate
        raise FileExistsError(f"no free name for {move.name} in {failed}")

    def _copy_to_outbox(self, result: JobResult, name: str, data: bytes) -> None:
        """A copy of the error report for the partner to download (its outbox,
        moded 0640), named after the partner's file ``name`` as its 997 and
        TA1 are (``NAME.error.json``, then ``NAME.1.error.json``…), never
        after the name failed/ had free. Best effort: failed/ holds the
        report that counts, and retrying the move would write that one twice."""
        outbox = self.outboxes.get(result.partner or "")
        if outbox is None:
            return
        try:
            outbox.mkdir(parents=True, exist_ok=True)
            for candidate in files.candidates(files.safe_name(name), outbox, tail=REPORT):
                with contextlib.suppress(FileExistsError):
                    files.write_new(outbox, candidate, data, mode=0o640, suffix=False)
                    return
        except OSError as exc:
            logger.warning(
                "outbox_report_not_written",
                file=result.file_name,
                job_id=result.job_id,
                outbox=str(outbox),
                error=os_message(exc),
            )

    def add(self, move: PendingMove) -> None:
        self.pending.append(move)

    def next_due(self) -> float | None:
        return min((m.next_at for m in self.pending), default=None)

    def retry_due(self, now: float) -> None:
        """Try the moves that are due; back off the ones that fail again."""
        for move in [m for m in self.pending if m.next_at <= now]:
            try:
                self.complete(move)
            except OSError as exc:
                if not os.path.lexists(move.claimed):
                    self.pending.remove(move)
                    self._vanished(move)
                    continue
                move.attempts += 1
                delay = min(MAX_RETRY, FIRST_RETRY * 2**move.attempts)
                move.next_at = now + delay
                if os_message(exc) != move.last_error or move.attempts % 10 == 0:
                    self._failed(move, exc, delay)
                move.last_error = os_message(exc)
            else:
                self.pending.remove(move)

    def flush(self) -> None:
        """One last try of every pending move (at shutdown); the rest wait for a restart."""
        for move in list(self.pending):
            try:
                self.complete(move)
            except OSError:
                continue
            self.pending.remove(move)

    def _record(self, move: PendingMove, path: str | None, note: str | None = None) -> None:
        """Tell the job's record where its file is (and why, when that is not
        where it belongs). A failure is logged: the file is safe either way."""
        if self.final_path is None:
            return
        try:
            self.final_path(move.result.job_id, path, note)
        except Exception as exc:
            logger.error(
                "record_final_path_failed",
                file=files.display_name(move.name),
                job_id=move.result.job_id,
                error=repr(exc),
            )
        else:
            move.result.file_path = path

    def _vanished(self, move: PendingMove) -> None:
        note = (
            f"{files.display_name(move.name)} left processing/ before it was filed "
            "(removed by hand, or taken over by another host); it is not in done/ or failed/"
        )
        logger.warning("claimed_file_gone", file=files.display_name(move.name),
                       job_id=move.result.job_id)  # fmt: skip
        self._record(move, None, note)

    def _failed(self, move: PendingMove, exc: OSError, delay: float) -> None:
        if move.attempts == 1:  # the record foresaw done/ or failed/: say where it is
            folder = "done/" if move.result.success else "failed/"
            note = f"cannot move the file to {folder}: {os_message(exc)}; retrying"
            self._record(move, str(move.claimed), note)
        move.last_error = os_message(exc)
        logger.error(
            "move_failed",
            file=files.display_name(move.name),
            job_id=move.result.job_id,
            error=move.last_error,
            attempts=move.attempts,
            retry_in_seconds=delay,
        )
        self.on_error(f"cannot move a finished file: {move.last_error}")
