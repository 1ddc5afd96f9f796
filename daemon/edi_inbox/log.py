"""Structured logging: one structlog pipeline for our events and the stdlib's.

``configure()`` is the one global call, made once by ``cli.main``. JSON lines
when the stream is not a terminal (journald, files), a readable console when
it is. Every event of a job carries ``job_id`` and ``file`` (bound through
``structlog.contextvars``), and ``job_context`` collects those events so the
pipeline can store them as the job's log lines.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
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
        renderer = structlog.processors.JSONRenderer(default=str)
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
    handler = logging.StreamHandler(stream)
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
