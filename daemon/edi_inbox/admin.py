"""Operator functions the CLI calls: ``retry`` failed files, ``status`` of the daemons.

They work on the folders and the database directly, with or without a daemon
running; nothing here is on the daemon's hot path except ``live_hosts``,
which the daemon asks before it takes over another host's claims.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from . import files, outcomes
from .claims import (
    host_folder,
    host_locked,
    os_message,
    processing_folders,
    write_retry_marker,
)
from .config import Settings
from .errors import EdiInboxError
from .watch import is_ignored, refusal

logger = structlog.get_logger("edi_inbox.admin")


# -- liveness ------------------------------------------------------------------------


def fresh_seconds(heartbeat_seconds: float) -> float:
    """How old a heartbeat may be for its daemon to count as alive: three
    heartbeat intervals, at least 15 s."""
    return max(3 * heartbeat_seconds, 15.0)


# The heartbeat's counters of what waits (``Service.snapshot``): a daemon no
# longer running waits for nothing (another host may have taken its claims).
BACKLOG = frozenset(
    [
        "queue",
        "held",
        "in_flight",
        "parked",
        "acks_owed",
        "halted",
        "tracked",
        "open",
        "pending_moves",
        "waiting_for_memory",
        "run_apart",
        "waiting_for_apart",
        "bytes_in_flight",
    ]
)


def shown_counters(daemon: Mapping[str, Any], running: bool) -> dict[str, Any]:
    """A daemon's last counters as ``status``, the dashboard and ``/metrics``
    show them: without its backlog unless it is ``running``."""
    counters = daemon.get("counters") or {}
    return dict(counters) if running else {k: v for k, v in counters.items() if k not in BACKLOG}


def alive(daemon: Mapping[str, Any], settings: Settings) -> bool:
    """A daemon's heartbeat row (``queries.list_daemons``) is fresh, by the
    interval it beats at (its own configuration's, recorded with it; an older
    version's, not recorded: ours), and does not say it exited (a daemon
    that stopped on a failure marks its row so). A daemon of this machine
    (its host name) whose process is gone is gone, however fresh its last
    beat: killed a moment ago (a pid reused since says alive, as the beat
    did); one whose process runs and holds the host's lock lives, however
    old its last beat (paused: the database locked or away, its beats
    cannot land)."""
    if (daemon.get("counters") or {}).get("exited"):
        return False
    mine = daemon["host"] == socket.gethostname()
    interval = daemon.get("heartbeat_seconds") or settings.daemon.heartbeat_seconds
    if daemon["heartbeat_age_seconds"] > fresh_seconds(interval):
        processing = settings.paths.processing
        return (
            mine
            and processing is not None
            and _runs(daemon.get("pid"))
            and host_locked(processing, daemon["host"])
        )
    return not mine or _runs(daemon.get("pid"))


def _runs(pid: int | None) -> bool:
    """Whether process ``pid`` of this machine runs (a zombie does not;
    unknown: yes). By ``kill(pid, 0)``, which sees another user's process
    where ``/proc`` may hide it (``hidepid``)."""
    if not pid:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's: it exists
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rpartition(b")")[2].split()[:1] != [b"Z"]
    except OSError:
        return True


def recorded_hosts(db: Any) -> set[str]:
    """The ``processing/`` folder names of the hosts whose heartbeat row
    tells a death (``store.died``): a host without one stopped cleanly (a
    clean stop removes its row) or exited on its own failure."""
    from . import queries, store

    return {
        host_folder(d["host"]) for d in queries.list_daemons(db) if store.died(d.get("counters"))
    }


def live_hosts(settings: Settings, db: Any, *, now: datetime | None = None) -> set[str]:
    """The ``processing/`` folder names of the hosts with a fresh heartbeat."""
    from . import queries

    daemons = queries.list_daemons(db, now=now)
    return {host_folder(d["host"]) for d in daemons if alive(d, settings)}


# -- retry ---------------------------------------------------------------------------


def retry(
    settings: Settings, job_id: str | None = None, *, all_failed: bool = False, db: Any = None
) -> list[dict[str, Any]]:
    """``edi-inbox retry JOB_ID|--all-failed``: put failed files back into the inbox.

    The file goes back under its original name (a suffix if that name is
    taken; nothing is overwritten) into the inbox it came from (a partner's
    own, ``[partners.NAME] inbox``, when the job was that partner's: its
    folder keeps vouching for the sender) and its error.json is removed; a
    marker in that inbox's ``processing/.retry/`` makes the next job for it
    record ``retry_of``.
    Returns one dict per file: job_id, file (in failed/), inbox_name, retried
    (bool), reason (when not retried). Raises EdiInboxError when JOB_ID has
    no file in failed/.

    With ``db``, a JOB_ID's report is looked for where its record says its
    file was filed: one look, however many reports failed/ holds. Without
    (or when the record does not lead to it), failed/'s reports are read
    for it: a retry works while the database is away.
    """
    paths = settings.paths
    assert paths.failed and paths.inbox and paths.processing
    wanted = (job_id or "").strip().lower()
    if not all_failed and not wanted:
        raise EdiInboxError("give a job id or --all-failed")
    recorded = None if all_failed or db is None else _recorded_report(settings, db, wanted)
    if recorded is not None:
        return _retried([_retry_one(settings, *recorded)], job_id)
    reports = []
    for report_path in sorted(paths.failed.glob("*" + outcomes.REPORT)):
        try:
            report = json.loads(report_path.read_bytes())
        except (OSError, ValueError):
            continue
        if not isinstance(report, dict):
            continue
        if not all_failed and not str(report.get("job_id")).startswith(wanted):
            continue  # the job id, or a prefix of it (as `jobs show` takes)
        reports.append((report_path, report))
    if not reports and not all_failed:
        raise EdiInboxError(f"no failed file for job {job_id} in {paths.failed}")
    if not all_failed and len({str(r.get("job_id")) for _, r in reports}) > 1:
        raise EdiInboxError(f"job id prefix {job_id} matches several failed jobs: give more of it")
    return _retried([_retry_one(settings, path, report) for path, report in reports], job_id)


def _retried(results: list[dict[str, Any]], job_id: str | None) -> list[dict[str, Any]]:
    if job_id and not any(r["retried"] for r in results):
        raise EdiInboxError(f"job {job_id} was not retried: {results[0]['reason']}")
    return results


def _recorded_report(
    settings: Settings, db: Any, wanted: str
) -> tuple[Path, dict[str, Any]] | None:
    """The report of job ``wanted`` (an id or a unique prefix) in failed/,
    where its record says its file was filed; None when the database cannot
    tell (unavailable, no such job, a prefix of several) or the file is not
    there under that name: then failed/ is searched."""
    from . import queries

    try:
        found = queries.filed_at(db, wanted)
    except Exception as exc:  # the search of failed/ answers, and says what it must
        logger.debug("retry_record_unread", job_id=wanted, error=repr(exc))
        return None
    if found is None:
        return None
    return outcomes.filed_report(settings.paths.failed, *found)


def _retry_one(settings: Settings, report_path: Path, report: dict[str, Any]) -> dict[str, Any]:
    paths = settings.paths
    assert paths.failed and paths.inbox and paths.processing
    old_job = str(report.get("job_id"))
    failed_name = outcomes.reported_file(paths.failed, report_path.name, report)
    result: dict[str, Any] = {
        "job_id": old_job,
        "file": files.display_name(failed_name or report_path.name),
        "retried": False,
    }
    if failed_name is None:
        result["reason"] = "its report names no file"
        return result
    target = _retry_target(settings, report)
    if isinstance(target, str):
        result["reason"] = target
        return result
    inbox, processing, max_bytes = target
    # A retry across file systems copies the file here first; one cut short
    # (the command killed) left it there, maybe as the only copy.
    hidden = inbox / f".{old_job}.retry"
    copied = _own_file(hidden)
    source = paths.failed / failed_name
    try:
        st = os.stat(source, follow_symlinks=False)
    except FileNotFoundError:
        if copied is None:
            result["reason"] = f"{files.display_name(failed_name)} is no longer in failed/"
            return result
        source, st = hidden, copied
    else:
        if copied is not None:  # a copy of a file failed/ still holds: ours, spare
            hidden.unlink()
    problem = refusal(st, max_bytes)
    if problem is not None:
        result["reason"] = f"not retried: {problem.reason}"
        return result
    original = _original_name(failed_name, report)
    try:
        if st.st_dev != os.stat(inbox).st_dev:
            # Across file systems the file is copied, a new inode: first under
            # a hidden name (the daemon ignores it), so its marker is the copy's.
            source = files.move_new(source, inbox, f".{old_job}.retry")
            st = os.stat(source)
    except OSError as exc:
        result["reason"] = f"cannot move it back: {os_message(exc)}"
        return result
    # The marker exists before the file reaches the inbox under its name.
    marker = write_retry_marker(processing, st, old_job)
    try:
        back = files.move_new(source, inbox, original)
    except OSError as exc:
        marker.unlink(missing_ok=True)
        if source.parent == inbox:  # the hidden copy goes back where it was
            with contextlib.suppress(OSError):
                files.move_new(source, paths.failed, failed_name)
        result["reason"] = f"cannot move it back: {os_message(exc)}"
        return result
    report_path.unlink(missing_ok=True)
    result.update(retried=True, inbox_name=files.display_name(back.name), inbox=str(inbox))
    logger.info("retry_queued", job_id=old_job, file=files.display_name(back.name))
    return result


def _retry_target(settings: Settings, report: dict[str, Any]) -> tuple[Path, Path, int] | str:
    """Where a failed file goes back to, so that the folder it came from
    still vouches for its sender: (inbox, processing folder, max_file_bytes),
    or why nowhere. A file of the shared inbox (whatever sender it bore, and
    wherever that inbox was then) goes back there; a partner's into its
    folder (moved with its ``inbox``), or the folder's if the partner was
    renamed; one from a folder no longer watched, nowhere (a partner's file
    recorded elsewhere than the shared inbox is taken to come from its own
    folder: the shared inbox would go by its sender alone)."""
    paths = settings.paths
    assert paths.inbox and paths.processing
    shared = (paths.inbox, paths.processing, settings.daemon.max_file_bytes)
    came_from = report.get("inbox")
    came = Path(str(came_from)) if came_from is not None else None
    if came == paths.inbox or report.get("shared_inbox") is True:
        return shared
    named = settings.partners.get(str(report.get("partner")))
    if named is None and came is not None:  # renamed: who watches that folder now
        named = next((p for p in settings.partners.partners if p.inbox == came), None)
    # A report written before ``shared_inbox`` existed does not say which
    # folder it came from: only the partner's folder where it still is vouches.
    moved = report.get("shared_inbox") is False or came is None
    if named is not None and named.inbox is not None and named.processing is not None:
        if moved or named.inbox == came:
            return named.inbox, named.processing, named.max_file_bytes
        return (
            f"it came from {files.display_name(str(came))}, neither the shared inbox nor"
            f" partner {named.name}'s folder now (its report is older than this version);"
            " put it back by hand"
        )
    if came is None or report.get("partner") is None:
        return shared  # no partner's file comes from a partner's folder: the shared inbox moved
    # From a partner's folder no longer watched: the shared inbox would go by
    # the sender alone, and a file that folder refused could pass there.
    return (
        f"it came from {files.display_name(str(came))}, a partner's inbox no longer"
        " watched; put it back by hand (edi-inbox process --partner NAME runs it as"
        " that partner's)"
    )


def _own_file(path: Path) -> os.stat_result | None:
    """``path``'s status if it is a regular file of this user's (a copy a
    retry made), else None: what a partner put in its inbox is not ours."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() else None


def _original_name(failed_name: str, report: Mapping[str, Any]) -> str:
    """The name the partner used: the name in failed/ without the ``.N`` a
    taken name got there, as the report's file_name says (shown as
    ``display_name`` shows it, or as it is by an older version)."""
    shown = report.get("file_name")
    if isinstance(shown, str):
        for original in (files.real_name(shown), shown):
            if original and "/" not in original and files.is_candidate(failed_name, original):
                return original
    return failed_name


# -- status --------------------------------------------------------------------------


def status(settings: Settings, db: Any, *, now: datetime | None = None) -> dict[str, Any]:
    """``edi-inbox status``: every daemon's heartbeat (``alive`` when younger than
    ``fresh_seconds``), ``running`` (any alive), the inbox backlog, folder
    counts, the claimed files per host folder (``claimed``; a dead host's stay
    until a live daemon takes them over), the store's 24-hour summary and
    last error (``jobs_running``: jobs in state running), and per configured
    partner its files and failures in the last 24 hours and last error
    (``partners``)."""
    from . import queries

    now = now or datetime.now(UTC)
    doc = queries.status_summary(db, now=now)
    doc["jobs_running"] = doc.pop("running", 0)
    for daemon in doc.get("daemons", []):
        daemon["alive"] = alive(daemon, settings)
        daemon["counters"] = shown_counters(daemon, daemon["alive"])
    doc["running"] = any(d["alive"] for d in doc.get("daemons", []))
    doc["inbox"] = inbox_backlog(settings, now=now.timestamp())
    doc["claimed"] = claimed_counts(settings)
    doc["folders"] = folder_counts(settings, claimed=doc["claimed"])
    doc["partners"] = partner_status(settings, db, now=now)
    return doc


def partner_status(settings: Settings, db: Any, *, now: datetime) -> list[dict[str, Any]]:
    """Per configured partner: files, failures and partial files in the 24
    hours before ``now``, its last activity, its latest failed job, and the
    backlog in its own inbox (``inbox``; None: it uploads to ``[paths] inbox``)."""
    from . import queries

    names = [p.name for p in settings.partners.partners]
    if not names:
        return []
    activity = queries.partner_activity(db, names, now - timedelta(hours=24))
    out = []
    for partner in settings.partners.partners:
        name = partner.name
        backlog = None
        if partner.inbox is not None:
            backlog = {
                "path": str(partner.inbox),
                **inbox_backlog(settings, now=now.timestamp(), inbox=partner.inbox),
            }
        latest = queries.list_jobs(db, limit=1, status="failed", partner=name)
        last_error = (
            {key: latest[0][key] for key in ("job_id", "file_name", "error", "completed_at")}
            if latest
            else None
        )
        seen = activity[name]
        out.append(
            {
                "name": name,
                "files_24h": seen["files"],
                "failures_24h": seen["failures"],
                "partial_24h": seen["partial"],
                "last_activity": seen["last_activity"],
                "last_error": last_error,
                "inbox": backlog,
            }
        )
    return out


def partners(settings: Settings, db: Any, *, now: datetime | None = None) -> dict[str, Any]:
    """``edi-inbox partners``: the ``[partners] unknown`` policy and each
    configured partner's settings (``partners.describe``) with its files and
    failures in the 24 hours before ``now`` and its last activity."""
    from . import partners as partner_rules
    from . import queries

    now = now or datetime.now(UTC)
    configured = settings.partners.partners
    activity = queries.partner_activity(db, [p.name for p in configured], now - timedelta(hours=24))
    listed = [{**partner_rules.describe(p, settings.rules), **activity[p.name]} for p in configured]
    return {"unknown": settings.partners.unknown, "partners": listed}


def inbox_backlog(
    settings: Settings, *, now: float | None = None, inbox: Path | None = None
) -> dict[str, Any]:
    """Names waiting in the inbox (``[paths] inbox``, or ``inbox``: a partner's),
    temporaries and directories aside (a directory is left in place, never
    an upload), and the oldest one's age, by ctime (a rename into the inbox
    sets it; clients often preserve mtime)."""
    now = time.time() if now is None else now
    waiting, oldest = 0, None
    try:
        with os.scandir(inbox or settings.paths.folders()["inbox"]) as entries:
            for entry in entries:
                if is_ignored(entry.name, settings.daemon.ignore_patterns):
                    continue
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        continue
                waiting += 1
                with contextlib.suppress(OSError):
                    ctime = entry.stat(follow_symlinks=False).st_ctime
                    oldest = ctime if oldest is None else min(oldest, ctime)
    except OSError:
        return {"waiting": None, "oldest_age_seconds": None}
    age = None if oldest is None else round(max(0.0, now - oldest), 3)
    return {"waiting": waiting, "oldest_age_seconds": age}


def _count(path: Path, *, reports: bool = False) -> int | None:
    """Files in a folder, hidden ones aside, and with ``reports`` (failed/)
    their error reports (None: no such folder)."""
    try:
        names = os.listdir(path)
    except OSError:
        return None
    if reports:
        return len(outcomes.failed_files(path, names))
    return sum(1 for name in names if not name.startswith("."))


def claimed_counts(settings: Settings) -> dict[str, int]:
    """Claimed files per host, in every processing folder (``[paths]``'s, the
    partners', one a removed partner left); ``""``: the flat layout of earlier
    versions. Empty folders left out."""
    counts: dict[str, int] = {}
    for processing in processing_folders(settings):
        with contextlib.suppress(OSError), os.scandir(processing) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                host = entry.name if entry.is_dir(follow_symlinks=False) else ""
                n = (_count(Path(entry.path)) or 0) if host else 1
                if n:
                    counts[host] = counts.get(host, 0) + n
    return counts


def folder_counts(
    settings: Settings, *, claimed: Mapping[str, int] | None = None
) -> dict[str, int | None]:
    """Files in inbox/, processing/ (claimed, every host's), done/, failed/ (None:
    folder missing), error.json and markers aside, for status."""
    folders = settings.paths.folders()
    counts = {name: _count(folders[name]) for name in ("inbox", "processing", "done")}
    counts["failed"] = _count(folders["failed"], reports=True)
    if counts["processing"] is not None:
        claimed = claimed_counts(settings) if claimed is None else claimed
        counts["processing"] = sum(claimed.values())
    return counts
