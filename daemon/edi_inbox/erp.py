"""ERP delivery: post each purchase order over HTTP, or drop it as JSON into ``outbox/``.

``HttpErp`` owns one keep-alive ``httpx.Client`` shared by every worker thread.
Each order carries an ``Idempotency-Key`` that stays the same on every attempt,
so retrying after a timeout (when the ERP may already have taken the order) is
safe: the ERP answers the retry with the order it already has.

What is retried, and why:

- connection errors, timeouts, 408, 429 and 5xx: the ERP is busy or away;
  waiting may help. ``Retry-After`` is honoured (seconds or an HTTP date,
  capped at ``retry_after_max_seconds``); otherwise the wait doubles from
  ``backoff_initial_seconds`` up to ``backoff_max_seconds``, plus a random
  jitter so that several workers do not return in step.
- a 2xx answer without the id field (or not JSON): a protocol error, but the
  ERP may well have stored the order, so it is not a rejection. Asking again
  with the same key is the way to learn its id; if that never works the order
  is ``ErpUnavailable`` (worth retrying later), never ``ErpRejected``.
- any other answer (4xx, 3xx) fails at once with ``ErpRejected``: sending the
  same body again would get the same answer.

``OutboxErp`` stands in when ``[erp] url`` is empty: another system picks the
files up from ``outbox/``.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import httpx
import structlog
import tenacity

from . import __version__, config, files
from .errors import ConfigError, ErpRejected, ErpUnavailable

__all__ = ["Delivery", "Erp", "HttpErp", "OutboxErp", "make_erp"]

MESSAGE_MAX = 500  # characters of an ERP error body kept in messages
DEFAULT_POOL_SIZE = 8


@dataclass(frozen=True)
class Delivery:
    """The ERP took the order: its id, the attempts it took, the final HTTP status
    (``None`` for the outbox)."""

    erp_id: str
    attempts: int
    status_code: int | None


class Erp(Protocol):
    """What the pipeline needs of an ERP sink."""

    def deliver(self, payload: dict[str, Any], idempotency_key: str) -> Delivery: ...

    def close(self) -> None: ...


def _json_default(value: object) -> object:
    # Money is Decimal; a float would lose cents in the ERP, a string keeps them exact.
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _dumps(payload: dict[str, Any], **kwargs: Any) -> bytes:
    return json.dumps(payload, default=_json_default, ensure_ascii=False, **kwargs).encode()


class _Sink:
    """What both sinks share: ``with sink:`` closes it."""

    def close(self) -> None:
        """Release what the sink holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Retryable(Exception):
    """One attempt failed in a way that another attempt may fix."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        attempt: int,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after
        self.attempt = attempt


class HttpErp(_Sink):
    """Posts orders to ``settings.url`` as JSON; see the module docstring for the
    retry policy.

    Thread-safe: one client, one connection pool of ``pool_size`` keep-alive
    connections, shared by every worker calling ``deliver()``. ``sleep`` waits
    between attempts (tests pass a recorder instead of waiting); ``log`` defaults
    to ``structlog.get_logger()``, whose bound context (job id, file) the
    pipeline sets through ``structlog.contextvars``.
    """

    def __init__(
        self,
        settings: config.ErpSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        log: Any = None,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self._log = log if log is not None else structlog.get_logger()
        try:
            url = httpx.URL(settings.url)
        except httpx.InvalidURL as exc:
            raise ConfigError(f"[erp] url {settings.url!r} is not a valid URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(f"[erp] url {settings.url!r} must be an http:// or https:// URL")
        # Shown in messages and logs: no user info, no query (either may hold secrets).
        self.display_url = str(url.copy_with(username=None, password=None, query=None))
        headers = {"User-Agent": f"edi-inbox/{__version__}", "Accept": "application/json"}
        if settings.token_file is not None:
            headers["Authorization"] = f"Bearer {_read_token(settings.token_file)}"
        pool_size = max(1, pool_size)
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(
                connect=settings.connect_timeout_seconds,
                read=settings.read_timeout_seconds,
                write=settings.read_timeout_seconds,
                # Waiting for a free connection is bounded by the requests holding them.
                pool=None,
            ),
            limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
            # A redirect would re-send the token and the order somewhere else: report it.
            follow_redirects=False,
        )

    def deliver(self, payload: dict[str, Any], idempotency_key: str) -> Delivery:
        """Post one order; the ERP's id on success.

        Raises ``ErpRejected`` (permanent, at once) or ``ErpUnavailable`` (after
        ``max_attempts``); both carry the ERP's last message, status and attempts.
        """
        if not idempotency_key:
            raise ValueError("idempotency_key must not be empty")
        body = _dumps(payload, separators=(",", ":"))
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
        s = self.settings
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Retryable),
            stop=tenacity.stop_after_attempt(max(1, s.max_attempts)),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._attempt(body, headers, attempt.retry_state.attempt_number)
        except _Retryable as exc:
            raise ErpUnavailable(
                f"ERP at {self.display_url} unavailable after {exc.attempt} attempts: "
                f"{exc.message}",
                status_code=exc.status_code,
                attempts=exc.attempt,
            ) from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _attempt(self, body: bytes, headers: dict[str, str], n: int) -> Delivery:
        try:
            response = self._client.post(self.settings.url, content=body, headers=headers)
        except (httpx.TransportError, httpx.DecodingError) as exc:
            # Includes read timeouts after the body went out: the ERP may have the
            # order already, which is what the unchanged Idempotency-Key is for.
            detail = str(exc) or "no detail"
            raise _Retryable(f"{type(exc).__name__}: {detail}", attempt=n) from None
        code = response.status_code
        if 200 <= code < 300:
            erp_id = _erp_id(response, self.settings.id_field)
            if erp_id is None:
                raise _Retryable(
                    f"ERP answered {code} without an {self.settings.id_field!r} in a JSON body",
                    status_code=code,
                    attempt=n,
                )
            return Delivery(erp_id=erp_id, attempts=n, status_code=code)
        status = f"HTTP {code} {response.reason_phrase}".rstrip()
        if code in (408, 429) or code >= 500:
            raise _Retryable(
                f"{status}: {_erp_message(response)}",
                status_code=code,
                retry_after=_retry_after(response.headers.get("Retry-After")),
                attempt=n,
            )
        if 300 <= code < 400:
            where = response.headers.get("Location", "an unnamed place")
            message = f"{status}: redirected to {where}; set [erp] url to the final address"
        else:
            message = f"{status}: {_erp_message(response)}"
        raise ErpRejected(f"ERP rejected the order: {message}", status_code=code, attempts=n)

    def _wait(self, retry_state: tenacity.RetryCallState) -> float:
        """Seconds before the next attempt: ``Retry-After`` if the ERP sent one,
        else exponential backoff; jitter on top of either."""
        s = self.settings
        jitter = random.uniform(0, s.backoff_jitter_seconds) if s.backoff_jitter_seconds else 0.0
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, s.retry_after_max_seconds) + jitter
        backoff = s.backoff_initial_seconds * 2 ** (retry_state.attempt_number - 1)
        return min(backoff, s.backoff_max_seconds) + jitter

    def _log_retry(self, retry_state: tenacity.RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        fields: dict[str, object] = {
            "attempt": retry_state.attempt_number,
            "max_attempts": self.settings.max_attempts,
            "wait_seconds": round(retry_state.upcoming_sleep, 3),
        }
        if isinstance(exc, _Retryable):
            if exc.status_code is not None:
                fields["status_code"] = exc.status_code
            fields["error"] = exc.message
        # Never the headers: they hold the bearer token.
        self._log.warning("erp_retry", **fields)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


def _read_token(path: Path) -> str:
    """The bearer token, read once; its text never reaches a message or a log."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"[erp] token_file {path}: cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"[erp] token_file {path}: is not UTF-8 text") from None
    if not token:
        raise ConfigError(f"[erp] token_file {path}: is empty")
    if not all(0x21 <= ord(ch) <= 0x7E for ch in token):
        raise ConfigError(
            f"[erp] token_file {path}: the token holds spaces, line breaks or characters "
            "an HTTP header cannot carry"
        )
    return token


def _erp_id(response: httpx.Response, field: str) -> str | None:
    """The order's id from a 2xx body, as text; ``None`` if there is none."""
    try:
        data = response.json()
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return None
    value = data.get(field) if isinstance(data, dict) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and math.isfinite(value):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _erp_message(response: httpx.Response) -> str:
    """What the ERP said: its JSON ``error``/``message``/``detail``, else the body
    text, cut to ``MESSAGE_MAX`` characters."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("error", "message", "detail"):
            value = data.get(key)
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                value = value["message"]  # {"error": {"code": …, "message": …}}
            if isinstance(value, str) and value.strip():
                return _cut(value.strip())
            if value not in (None, "", [], {}):
                return _cut(json.dumps(value, ensure_ascii=False))
    try:
        text = response.text.strip()
    except (UnicodeDecodeError, LookupError):
        text = ""
    return _cut(text) if text else "(empty body)"


def _cut(text: str) -> str:
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 1] + "…"


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; ``None``
    if absent or unreadable (the backoff applies then)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" parses naive; HTTP dates are GMT
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


class OutboxErp(_Sink):
    """Writes each order as pretty JSON into ``outbox_dir`` for another system
    to collect, as ``<po_number>.<key[:12]>.json``.

    Idempotent per key: an order whose key already has a file is not written
    again (a resumed job must not leave two files for one order). Two orders
    with the same PO number have different keys, hence different files; and
    ``files.write_new`` never replaces a file in any case.
    """

    def __init__(self, outbox_dir: Path) -> None:
        self.outbox_dir = Path(outbox_dir)
        # The look-then-write below must not interleave between worker threads.
        self._lock = threading.Lock()

    def deliver(self, payload: dict[str, Any], idempotency_key: str) -> Delivery:
        """Write the order (or find it written); ``erp_id`` is ``outbox:<file name>``."""
        if not idempotency_key:
            raise ValueError("idempotency_key must not be empty")
        tag = files.safe_name(idempotency_key[:12], fallback="key")
        po_number = files.safe_name(str(payload.get("po_number") or ""), fallback="order")
        data = _dumps(payload, indent=2) + b"\n"
        with self._lock:
            self.outbox_dir.mkdir(parents=True, exist_ok=True)
            existing = sorted(self.outbox_dir.glob(f"*.{tag}.json"))
            if existing:
                return Delivery(f"outbox:{existing[0].name}", attempts=1, status_code=None)
            path = files.write_new(self.outbox_dir, f"{po_number}.{tag}.json", data)
        return Delivery(f"outbox:{path.name}", attempts=1, status_code=None)

    def close(self) -> None:
        """Nothing to release; here so both sinks are used alike."""


def make_erp(settings: config.Settings) -> HttpErp | OutboxErp:
    """The sink the settings ask for: ``HttpErp`` for an ``[erp] url``, else
    ``OutboxErp`` on ``[paths] outbox``. The pool has a connection per worker."""
    if settings.erp.url.strip():
        return HttpErp(settings.erp, pool_size=max(settings.daemon.workers, DEFAULT_POOL_SIZE))
    assert settings.paths.outbox is not None  # PathSettings fills it in
    return OutboxErp(settings.paths.outbox)
