"""Structured logging: one structlog pipeline for our events and the stdlib's.

``configure()`` is the one global call, made once by ``cli.main``. JSON lines
when the stream is not a terminal (journald, files), a readable console when
it is. Every event of a job carries ``job_id`` and ``file`` (bound through
``structlog.contextvars``), and ``job_context`` collects those events so the
pipeline can store them as the job's log lines.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import contextvars
import errno
import json
import logging
import os
import re
import select
import stat
import sys
import threading
import time
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog

from .config import shown_url
from .jobs import LogEntry
from .terminal import shown

_job_buffer: contextvars.ContextVar[JobLogBuffer | None] = contextvars.ContextVar(
    "edi_inbox_job_buffer", default=None
)

# The processor list every configure() fills in place: a logger bound once
# keeps the list it was made with (structlog.testing.capture_logs changes it
# in place too).
_PROCESSORS: list[Any] = []

# Where JSON lines go: the handler configure() made last (its stream and its
# lock, shared with the stdlib's records).
_SINK: list[logging.Handler] = []

# Keys that never reach a log line, whatever a caller binds.
SECRET_KEYS = frozenset({"token", "authorization", "password", "secret", "api_key"})
_OMIT_FROM_DETAILS = frozenset({"event", "level", "timestamp", "job_id", "file", "logger"})


class JobLogBuffer:
    """The log lines of one job, handed out in batches (one per step)."""

    def __init__(self) -> None:
        self._entries: list[LogEntry] = []
        self._drained = 0

    def append(self, entry: LogEntry) -> None:
        self._entries.append(entry)

    def drain(self) -> list[LogEntry]:
        """The entries added since the last drain."""
        new = self._entries[self._drained :]
        self._drained = len(self._entries)
        return new

    @property
    def entries(self) -> list[LogEntry]:
        return list(self._entries)


def capture_job_logs(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Processor: copy an event into the running job's buffer, if there is one."""
    buffer = _job_buffer.get()
    if buffer is not None:
        details = {k: _jsonable(v) for k, v in event_dict.items() if k not in _OMIT_FROM_DETAILS}
        buffer.append(
            LogEntry(
                timestamp=datetime.now(UTC),
                level=str(event_dict.get("level", method_name)),
                message=str(event_dict.get("event", "")),
                details=details,
            )
        )
    return event_dict


def redact_secrets(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Processor: drop values whose key names a secret."""
    for key in list(event_dict):
        if key.lower() in SECRET_KEYS:
            event_dict[key] = "[redacted]"
    return event_dict


# A URL in a library's message (urllib3: "Failed to parse headers (url=…)").
# To the next space: a query may hold any sub-delimiter ("(", "'"), and what
# follows the URL is dropped with its query.
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://\S+")


def hide_urls(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Processor: a library's line (a stdlib record) with each URL as
    ``config.shown_url`` shows it, no user info or query: urllib3 quotes
    the ERP's URL whole. The daemon's own events name URLs so already."""
    if "_record" in event_dict and isinstance(event_dict.get("event"), str):
        event_dict["event"] = _URL.sub(lambda m: shown_url(m[0]), event_dict["event"])
    return event_dict


def escape_text(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Processor (console format): text values shown escaped, as ``terminal.shown``
    does. The console renderer prints strings raw, and a PO number is the
    partner's text; JSON lines escape control characters already."""
    return {k: shown(v) if isinstance(v, str) else v for k, v in event_dict.items()}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


@contextlib.contextmanager
def job_context(job_id: str, file: str) -> Iterator[JobLogBuffer]:
    """Bind ``job_id`` and ``file`` to every event in this thread, and collect them."""
    buffer = JobLogBuffer()
    token = _job_buffer.set(buffer)
    with structlog.contextvars.bound_contextvars(job_id=job_id, file=file):
        try:
            yield buffer
        finally:
            _job_buffer.reset(token)


class BoundLogger(structlog.stdlib.BoundLogger):
    """structlog's stdlib logger, but an event below the logger's level costs
    one level check instead of a trip through the processors to
    ``filter_by_level`` (the daemon makes a dozen debug and info events a job)."""

    def debug(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if not self._logger.isEnabledFor(logging.DEBUG):
            return None
        return self._proxy_to_logger("debug", event, *args, **kw)

    def info(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if not self._logger.isEnabledFor(logging.INFO):
            return None
        return self._proxy_to_logger("info", event, *args, **kw)


class _Logger:
    """What a bound logger writes to: a stdlib logger's name and level, and a
    fast path for our JSON lines. A line rendered by structlog (a ``str``) is
    written to the handler's stream at once, under the handler's lock: no
    ``LogRecord`` is made, copied and formatted for it (that was ~2/3 of an
    info line's cost). Anything else (the console format's event dicts) goes
    to the stdlib logger as before. The sink is looked up per line, so a
    logger bound before a later ``configure()`` writes where that one says."""

    def __init__(self, std: logging.Logger) -> None:
        self._std = std
        self.name = std.name

    def isEnabledFor(self, level: int) -> bool:
        return self._std.isEnabledFor(level)

    def __getattr__(self, name: str) -> Any:  # level, disabled, handlers…: the stdlib's
        return getattr(self._std, name)


def _emit(name: str) -> Any:
    def emit(self: _Logger, *args: Any, **kw: Any) -> Any:
        if kw or len(args) != 1 or not isinstance(args[0], str) or not _SINK:
            return getattr(self._std, name)(*args, **kw)
        handler = _SINK[0]
        stream = getattr(handler, "stream", None)
        if stream is None:
            return getattr(self._std, name)(*args, **kw)
        with handler.lock or contextlib.nullcontext():
            try:  # as the stdlib's handler: a log line that cannot be written fails nothing
                stream.write(args[0] + "\n")
                stream.flush()
            except (OSError, ValueError):
                pass
        return None

    emit.__name__ = name
    return emit


for _name in ("debug", "info", "warning", "error", "critical", "exception", "msg"):
    setattr(_Logger, _name, _emit(_name))


def _logger_factory(*args: Any) -> _Logger:
    return _Logger(_STDLIB_FACTORY(*args))


_STDLIB_FACTORY = structlog.stdlib.LoggerFactory(ignore_frame_names=["edi_inbox.log"])


# A line of at most PIPE_BUF bytes reaches a pipe whole, whoever else writes
# to it (the worker processes share the daemon's stdout): a longer event is
# written with its long values cut (the job's record keeps them whole).
LINE_MAX = 4096
_VALUE_MAX = 300  # characters of a value kept in a line that was too long
_KEPT = ("timestamp", "level", "logger", "event", "job_id", "file")  # when even that is too long


class BoundedJSON:
    """structlog's JSON lines, each at most ``LINE_MAX`` bytes with its newline."""

    def __init__(self) -> None:
        self._render = structlog.processors.JSONRenderer(default=str)

    def __call__(self, logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> str:
        line = self._json(logger, name, event_dict)
        if len(line) < LINE_MAX // 4 or len(line.encode()) < LINE_MAX:
            return line
        cut = {}
        for key, value in event_dict.items():
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            if len(text) > _VALUE_MAX:
                value = f"{text[:_VALUE_MAX]}… ({len(text)} characters; cut in the log line)"
            cut[key] = value
        line = self._json(logger, name, cut)
        if len(line.encode()) < LINE_MAX:
            return line
        kept = {k: cut[k] for k in _KEPT if k in cut}
        return self._json(logger, name, {**kept, "cut": sorted(set(cut) - set(kept))})

    def _json(self, logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> str:
        line = self._render(logger, name, event_dict)
        assert isinstance(line, str)  # json.dumps's
        return line


class LineWriter:
    """A log stream written by a thread of its own: a stalled reader (journald
    behind, a pipe nobody reads) holds no job and no stop. Lines wait in a
    queue of at most ``MAX_QUEUED``; past that they are dropped and counted,
    and a ``log_lines_dropped`` line says how many once the stream takes
    lines again. A line the stream took only in part is completed (a pipe)
    or taken back (a file out of space): every line in the stream is whole."""

    MAX_QUEUED = 10_000
    EXIT_WAIT = 1.0  # seconds the queue may take to drain at exit

    def __init__(self, fd: int) -> None:
        self.fd = fd  # the stream's (no descriptor of its own: serve counts them)
        self.regular = stat.S_ISREG(os.fstat(fd).st_mode)
        self._lines: collections.deque[bytes] = collections.deque()
        self._ready = threading.Condition()
        self._dropped = 0
        self._busy = False
        threading.Thread(target=self._run, name="edi-inbox-log", daemon=True).start()

    def write(self, text: str) -> int:
        data = text.encode("utf-8", "backslashreplace")
        with self._ready:
            if not (self._lines or self._busy or self._dropped) and self._ready_now():
                # Nothing waiting and the stream takes a line now (a file, or a
                # pipe with room for one: lines are at most PIPE_BUF): written
                # here, in order, as the event happens.
                if not self._write(data):
                    self._dropped += 1
                return len(text)
            if len(self._lines) >= self.MAX_QUEUED:
                self._dropped += 1
            else:
                self._lines.append(data)
                self._ready.notify()
        return len(text)

    def flush(self) -> None:
        """Nothing: the thread writes each line as soon as the stream takes it."""

    def _ready_now(self) -> bool:
        """Whether a line can be written without waiting."""
        if self.regular:
            return True
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        try:
            return bool(poller.poll(0))
        except OSError:
            return False

    def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the queue to be written."""
        deadline = time.monotonic() + timeout
        with self._ready:
            while (self._lines or self._busy) and (left := deadline - time.monotonic()) > 0:
                self._ready.wait(min(left, 0.05))

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._lines:
                    self._busy = False
                    self._ready.notify_all()
                    self._ready.wait()
                line, self._busy = self._lines.popleft(), True
                dropped, self._dropped = self._dropped, 0
            if dropped and not self._write(_dropped_line(dropped)):
                lost = dropped + 1  # the count kept for the next line that gets through
            else:
                lost = 0 if self._write(line) else 1
            if lost:
                with self._ready:
                    self._dropped += lost

    def _write(self, data: bytes) -> bool:
        """``data`` written whole, or not at all (False)."""
        done = 0
        while done < len(data):
            try:
                done += os.write(self.fd, data[done:])
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    time.sleep(0.01)  # a non-blocking pipe, full: wait for its reader
                    continue
                break
        if done == len(data):
            return True
        if done and self.regular:  # out of space midway: the part taken back
            with contextlib.suppress(OSError):
                end = os.fstat(self.fd).st_size - done
                os.ftruncate(self.fd, end)
                os.lseek(self.fd, end, os.SEEK_SET)  # no hole where it was (no O_APPEND)
        return False


def _dropped_line(count: int) -> bytes:
    event = {
        "count": count,
        "event": "log_lines_dropped",
        "level": "warning",
        "logger": "edi_inbox.log",
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    return (json.dumps(event) + "\n").encode()


# By descriptor and the file it is (device, inode): one thread each; a stream
# closed and its number reused for another file gets its own (``configure``
# drains the one it leaves first).
_WRITERS: dict[tuple[int, int, int], LineWriter] = {}
os.register_at_fork(after_in_child=_WRITERS.clear)  # a forked child has none of their threads


def _line_writer(stream: TextIO) -> LineWriter | TextIO:
    """The ``LineWriter`` of ``stream``'s descriptor; ``stream`` itself if it
    has none (a test's ``StringIO``) or is a terminal (the console format)."""
    try:
        fd = stream.fileno()
    except (AttributeError, ValueError, OSError):
        return stream
    if _isatty(stream):
        return stream
    try:
        st = os.fstat(fd)
    except OSError:
        return stream
    key = (fd, st.st_dev, st.st_ino)
    writer = _WRITERS.get(key)
    if writer is None:
        with contextlib.suppress(OSError, ValueError):
            stream.flush()  # what the stream holds goes out first
        if not _WRITERS:
            atexit.register(drain)
        writer = _WRITERS[key] = LineWriter(fd)
    return writer


def drain(timeout: float = LineWriter.EXIT_WAIT) -> None:
    """Let the log threads write what is queued, for up to ``timeout`` seconds
    in all (at exit: a stalled stream keeps no stop waiting)."""
    deadline = time.monotonic() + timeout
    for writer in list(_WRITERS.values()):
        writer.drain(max(0.0, deadline - time.monotonic()))


def shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        redact_secrets,
        hide_urls,
        capture_job_logs,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to ``stream`` (default stderr) as
    JSON lines or console text, at ``level``."""
    stream = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "console" if _isatty(stream) else "json"
    renderer: Any
    if fmt == "json":
        renderer = BoundedJSON()
        final = [structlog.processors.format_exc_info, renderer]
        # Our own events are rendered here and written by _Logger directly.
        last = final
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(stream))
        final = [escape_text, renderer]
        last = [structlog.stdlib.ProcessorFormatter.wrap_for_formatter]

    shared = shared_processors()
    # Loggers are bound once, at their first use after this call (a dozen
    # events a job otherwise each rebuild their bound logger).
    _PROCESSORS[:] = [
        structlog.stdlib.filter_by_level,
        *shared,
        structlog.processors.StackInfoRenderer(),
        *last,
    ]
    structlog.configure(
        processors=_PROCESSORS,
        logger_factory=_logger_factory,
        wrapper_class=BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    previous = getattr(_SINK[0], "stream", None) if _SINK else None
    if isinstance(previous, LineWriter):
        previous.drain(LineWriter.EXIT_WAIT)  # its lines out before its stream may close
    handler = logging.StreamHandler(_line_writer(stream))
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_edi_inbox", False):
            root.removeHandler(old)
    handler._edi_inbox = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    _SINK[:] = [handler]
    root.setLevel(level.upper())
    # Libraries talk a lot at DEBUG (peewee's lines hold the SQL parameters);
    # urllib3 logs every request at DEBUG and a discarded connection at WARNING.
    for noisy in ("peewee", "watchdog", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
