"""One watched inbox: its observer, its readiness tracker, its path followed.

The daemon watches ``[paths] inbox`` and the inbox of every partner that has
one (``[partners.NAME] inbox``); each is a lane (``claims.lanes``) with a
``WatchedInbox`` in the main thread. Its observer thread only enqueues
``("fs", Event, name, lane)``; the service hands each event to the lane's
tracker, polls the trackers for files that are ready and queues them with
the lane's name, so a worker claims the file into that lane's processing
folder and runs it as that partner's.

``follow`` looks at the inbox's path: an inbox deleted and re-created is
opened, watched and scanned again (``inbox_replaced``); one missing for
``INBOX_GONE_AFTER`` seconds is reported once (the shared inbox: the daemon
exits 1; a partner's: that partner waits, the others go on).
``check_observer`` restarts a dead observer, up to ``MAX_OBSERVER_RESTARTS``
within ``OBSERVER_RESTART_WINDOW`` seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import structlog

from . import files
from .claims import Claims, Inbox, os_message
from .config import DaemonSettings, PartnerSettings
from .watch import (
    InboxHandler,
    Ticket,
    Tracker,
    Verdict,
    WatchError,
    names_oldest_first,
    observer_alive,
    start_observer,
    stop_observer,
)

logger = structlog.get_logger("edi_inbox.inboxes")

# The observer is restarted when it dies; this many restarts within
# OBSERVER_RESTART_WINDOW seconds (or this many failed starts in a row) mean
# something is broken for good: exit non-zero and let systemd decide.
MAX_OBSERVER_RESTARTS = 5
OBSERVER_RESTART_WINDOW = 60.0
INBOX_GONE_AFTER = 5.0  # seconds an inbox may be missing (being re-created) before exit 1


class WatchedInbox:
    """A lane's inbox as the main thread sees it. ``on_error`` gets what the
    daemon's last error should say."""

    def __init__(
        self,
        claims: Claims,
        daemon: DaemonSettings,
        partner: PartnerSettings | None,
        sink: Callable[[Any], None],
        *,
        clock: Callable[[], float],
        on_error: Callable[[str], None],
        inotify_factory: Callable[[], Any] | None = None,
    ) -> None:
        assert claims.paths.inbox is not None
        self.claims = claims
        self.lane = claims.partner or ""
        self.path = claims.paths.inbox
        if partner is not None:  # its own size cap for what the tracker refuses unread
            daemon = dataclasses.replace(daemon, max_file_bytes=partner.max_file_bytes)
        self.daemon = daemon
        self.sink = sink
        self.on_error = on_error
        self.inotify_factory = inotify_factory
        self.tracker = Tracker(claims.inbox_fd, daemon, clock)
        self.observer: Any = None
        self.observer_kind: str | None = None
        self.restarts = 0
        self.reported: set[tuple[str, int]] = set()  # (name, inode) left in place, logged once
        self.missing_since: float | None = None
        self.gone = False  # missing for INBOX_GONE_AFTER seconds, and told
        self._restart_times: list[float] = []
        self._failed_starts = 0
        self._next_observer_try = 0.0

    def start_observer(self) -> None:
        """Watch the inbox (WatchError if it cannot be)."""
        handler = InboxHandler(self.path, self.sink, self.daemon.ignore_patterns, lane=self.lane)
        self.observer, self.observer_kind = start_observer(
            self.daemon, self.path, handler, inotify_factory=self.inotify_factory
        )
        self.tracker.sees_opens = self.observer_kind == "inotify"

    def stop_observer(self, timeout: float = 2.0) -> None:
        self.tracker.sees_opens = False
        if self.observer is not None:
            stop_observer(self.observer, timeout=timeout)
            self.observer = None

    def alive(self) -> bool:
        return self.observer is None or observer_alive(self.observer)

    def rescan(self) -> None:
        """Feed every name in the inbox to the tracker, oldest first (start-up,
        overflow, polling): it looks at a window of them at once, the rest
        wait as names."""
        try:
            names = names_oldest_first(self.claims.inbox_fd)
        except OSError as exc:
            logger.error("scan_failed", inbox=str(self.path), error=os_message(exc))
            self.on_error(f"cannot scan the inbox {self.path}: {os_message(exc)}")
            return
        # A scan finds files the daemon has not seen change: their ctimes date
        # them, on the clock of the inbox's file system (a share's may be off).
        self.tracker.wall_clock = files.share_clock(self.claims.fd)
        self.tracker.scanned(names)
        if self.reported:
            present = set(names)
            self.reported = {r for r in self.reported if r[0] in present}

    def left_in_place(self, ticket: Ticket) -> bool:
        """A REPORT ticket: logged once per name and inode; True if it was one."""
        if ticket.verdict is not Verdict.REPORT:
            return False
        key = (ticket.name, ticket.fingerprint.ino if ticket.fingerprint else 0)
        if key not in self.reported:
            self.reported.add(key)
            logger.warning(
                "inbox_entry_left",
                file=files.display_name(ticket.name),
                inbox=str(self.path),
                reason=f"{ticket.reason}; it cannot be moved safely and is left in place",
            )
        return True

    def follow(self, now: float) -> str | None:
        """Notice the inbox deleted and re-created: watch and scan the new one.
        Returns, once, what to tell when it has been missing for
        ``INBOX_GONE_AFTER`` seconds; else None."""
        inbox = str(self.path)
        state = self.claims.follow_inbox()
        if state is Inbox.MISSING:
            if self.missing_since is None:
                self.missing_since = now
                logger.warning("inbox_missing", inbox=inbox, partner=self.lane or None)
            elif now - self.missing_since >= INBOX_GONE_AFTER and not self.gone:
                self.gone = True
                whose = f" of partner {self.lane}" if self.lane else ""
                return f"the inbox {inbox}{whose} has been missing for {INBOX_GONE_AFTER:.0f} s"
            return None
        if self.gone:
            logger.info("inbox_back", inbox=inbox, partner=self.lane or None)
        self.missing_since, self.gone = None, False
        if state is Inbox.REPLACED:
            logger.warning("inbox_replaced", inbox=inbox)
            self.stop_observer(timeout=0.5)  # it watches the old directory
            try:
                self.start_observer()
            except WatchError as exc:  # check_observer tries again
                logger.error("observer_restart_failed", error=str(exc))
                self.on_error(str(exc))
            self.rescan()
        return None

    def check_observer(self, now: float) -> bool:
        """Restart a dead observer (and rescan: its events are lost). False: give up."""
        if self.missing_since is not None or (self.observer is not None and self.alive()):
            return True
        if now < self._next_observer_try:
            return True
        if self.observer is not None:
            logger.error("observer_died", observer=self.observer_kind, inbox=str(self.path))
            self.on_error("the watchdog observer thread died")
            self.stop_observer(timeout=0.5)
        self._restart_times = [t for t in self._restart_times if now - t < OBSERVER_RESTART_WINDOW]
        if len(self._restart_times) >= MAX_OBSERVER_RESTARTS:
            logger.error("observer_keeps_dying", restarts=len(self._restart_times))
            return False
        self._restart_times.append(now)
        try:
            self.start_observer()
        except WatchError as exc:
            self._failed_starts += 1
            self.on_error(str(exc))
            logger.error("observer_restart_failed", error=str(exc), attempt=self._failed_starts)
            if self._failed_starts >= MAX_OBSERVER_RESTARTS:
                return False
            self._next_observer_try = now + min(30.0, 2.0**self._failed_starts)
            return True
        self._failed_starts = 0
        self.restarts += 1
        logger.warning("observer_restarted", restarts=self.restarts, inbox=str(self.path))
        self.rescan()
        return True
