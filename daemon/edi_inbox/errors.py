"""One exception tree for the whole package.

The category of an exception decides what happens to a job: an ``X12Error`` or
``ValidationError`` fails the file for good (the partner must send it again),
``ErpUnavailable`` is worth retrying, ``ErpRejected`` is the ERP's final word.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .orders import PurchaseOrder


class EdiInboxError(Exception):
    """Base of every error edi-inbox raises on purpose."""


class ConfigError(EdiInboxError):
    """The configuration file or environment holds something unusable."""


class X12Error(EdiInboxError):
    """The bytes are not the X12 they claim to be.

    ``segment_number`` counts segments from 1 at the ISA of the interchange;
    ``element`` is the 1-based element position (``BEG03`` is element 3).
    ``code`` is the 997 code to report: an AK4 element error code when
    ``element`` is set, else an AK3 segment error code, or an AK5/AK9 code for
    set- and group-level problems (see ``x12.ack``); ``value`` is the bad
    element's text, copied into AK404.
    """

    def __init__(
        self,
        message: str,
        *,
        segment_number: int | None = None,
        segment_id: str | None = None,
        element: int | None = None,
        code: str | None = None,
        value: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.segment_number = segment_number
        self.segment_id = segment_id
        self.element = element
        self.code = code
        self.value = value  # the offending element's text, for AK404

    def where(self) -> str:
        """Where the problem is, in words: ``segment 12 (BEG), element 3``."""
        parts = []
        if self.segment_number is not None:
            seg = f"segment {self.segment_number}"
            if self.segment_id:
                seg += f" ({self.segment_id})"
            parts.append(seg)
        elif self.segment_id:
            parts.append(f"segment {self.segment_id}")
        if self.element is not None:
            parts.append(f"element {self.element}")
        return ", ".join(parts)

    def __str__(self) -> str:
        where = self.where()
        return f"{where}: {self.message}" if where else self.message

    def to_json(self) -> dict[str, object]:
        return {
            "message": self.message,
            "segment_number": self.segment_number,
            "segment_id": self.segment_id,
            "element": self.element,
            "code": self.code,
            "value": self.value,
        }


class TruncatedError(X12Error):
    """The file ends before its trailers: an upload may still be arriving."""


class TooLarge(X12Error):
    """The file passes a limit on what one file may hold (groups, sets, errors,
    segments): it is refused whole, with one error naming the limit and no 997."""


MAX_ERRORS_LISTED = 1000  # errors kept per file; a file with more is refused whole


class NotHandledError(X12Error):
    """A well-formed transaction set that edi-inbox does not process (not an 850)."""


class SetErrors(X12Error):
    """A transaction set refused for its broken segments: it reads as the
    first (its message, where), ``errors`` holds each, for the 997, and
    ``order`` the order read all the same (None when reading stopped short),
    for the rules that judge what the syntax does not."""

    def __init__(self, errors: list[X12Error], order: PurchaseOrder | None = None) -> None:
        first = errors[0]
        more = f" (and {len(errors) - 1} more broken segment(s))" if len(errors) > 1 else ""
        super().__init__(
            first.message + more,
            segment_number=first.segment_number,
            segment_id=first.segment_id,
            element=first.element,
            code=first.code,
            value=first.value,
        )
        self.errors = errors
        self.order = order


@dataclass(frozen=True)
class Problem:
    """One business-rule violation in a purchase order."""

    code: str  # stable, machine-readable: "quantity_not_positive"
    message: str  # for a partner: "line 2: quantity 0 must be greater than 0"
    po_number: str | None = None
    line_number: str | None = None
    segment_number: int | None = None
    segment_id: str | None = None
    element: int | None = None
    more: int | None = None  # problems alike left out after this one (rules.MAX_ALIKE)

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class ValidationError(EdiInboxError):
    """A purchase order breaks business rules; ``problems`` lists every one."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(p.message for p in self.problems))


class ErpError(EdiInboxError):
    """Delivery to the ERP did not succeed. ``may_hold``: whether the ERP may
    have the order all the same (a request reached it and its answer was
    lost or not a success): sent again, it is sent under the same key."""

    may_hold = False

    def __init__(self, message: str, *, status_code: int | None = None, attempts: int = 0):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.attempts = attempts


class ErpRejected(ErpError):
    """The ERP refused the order for good (a 4xx other than 408/409/429, a
    3xx). It may hold it all the same when an earlier attempt reached it and
    its answer was lost (``may_hold``, set by the client)."""


class ErpUnavailable(ErpError):
    """The ERP could not be reached or kept failing after every retry. It may
    hold the order unless no attempt began sending its request (``reached``
    false: connection refused, no connection in time, TLS refused)."""

    def __init__(self, message: str, *, reached: bool, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.may_hold = reached


class ShortOfResources(EdiInboxError):
    """This process or the system is short of descriptors or memory (EMFILE,
    ENFILE, ENOMEM: ``files.short_of_resources``), or the order outbox of
    space or write access (``erp.OUTBOX_TROUBLE``): the daemon's trouble, not
    the file's nor the ERP's. The job stops posting and ends ``interrupted``:
    its file runs again."""


class UnsafeFile(EdiInboxError):
    """A path in the inbox that must not be read: link, FIFO, device, too big."""


class FileChanged(EdiInboxError):
    """The file is no longer the one that was read: it must not be filed as done."""


class ClaimLost(EdiInboxError):
    """The claimed file is no longer this host's (taken over while this host was
    paused, or removed): the job stops, posts nothing more and files nothing."""


class AlreadyRunning(EdiInboxError):
    """Another daemon holds this host's lock: one daemon per host."""


class StoreError(EdiInboxError):
    """The job records could not be read or written."""


class DatabaseUnavailable(StoreError):
    """The database cannot be reached now (server down, file missing or
    replaced, disk full, locked): worth retrying, and nothing may be posted
    meanwhile."""


def one_line(message: object) -> str:
    """``message`` with each run of whitespace as one space: a database
    driver's error spans lines (psycopg2 puts its hint on a line of its own,
    ``"\\n\\t"``), which a log line or a terminal message shows escaped."""
    return " ".join(str(message).split())


class NotRecorded(StoreError):
    """A job's record could not be written and is owed.

    ``job`` is the job as it ended (its record is owed), or, with
    ``job.status`` still ``running``, a job stopped before the ERP call
    because its running record could not be written (it must run again).
    ``posted`` says whether the ERP accepted any of its orders; ``logs`` and
    ``steps`` are what the owed record still has to carry. ``acks``, when
    not empty, are acknowledgements built but not written (their folder
    could not take them: ``reason`` says why): they are owed first, and the
    record waits for them (it says which went out). ``held``: they were not
    tried, because the database had already failed the job: they go out as
    soon as this is kept (``Claims.keep_owed``), so that a crash after they
    went out finds it and does not run the job again."""

    def __init__(
        self,
        job: Any,
        posted: bool,
        reason: str,
        logs: list[Any] | None = None,
        steps: list[Any] | None = None,
        acks: list[Any] | None = None,
        held: bool = False,
    ) -> None:
        super().__init__(reason)
        self.job = job
        self.posted = posted
        self.reason = reason
        self.logs = list(logs or [])
        self.steps = list(steps or [])
        self.acks = list(acks or [])
        self.held = held

    def __reduce__(self) -> Any:  # crosses the pipe from a worker process
        args = (self.job, self.posted, self.reason, self.logs, self.steps, self.acks, self.held)
        return (type(self), args)

    def __str__(self) -> str:
        if self.acks:
            what = f"owes {len(self.acks)} acknowledgement(s) not written yet"
        else:
            what = "posted to the ERP but not recorded" if self.posted else "not recorded"
        return f"job {self.job.job_id} {what}: {self.reason}"

    def explain(self) -> str:
        """What ``process`` and ``/api/orchestrate`` say: the file, the ERP
        ids already given (or that nothing was posted), the job and why."""
        job = self.job
        if self.posted:
            ids = ", ".join(f"PO {o.po_number} as {o.erp_po_id}" for o in job.orders if o.erp_po_id)
            return (
                f"{job.file_name}: the ERP accepted {ids}, but the database is unavailable"
                f" and the job {job.job_id} is not recorded: {self.reason}"
            )
        return (
            f"{job.file_name}: nothing was posted: the database is unavailable and the job"
            f" {job.job_id} cannot be recorded: {self.reason}"
        )


def shorten(value: str, limit: int = 40) -> str:
    """``value`` as quoted in a message: a partner's 40 KB PO number is not repeated whole.

    Short values come back as ``repr``; longer ones keep their first ``limit``
    characters and say how long they were: ``'PO-1234…' (30000 characters)``.
    """
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value)} characters)"
