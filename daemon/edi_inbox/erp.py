"""ERP delivery: post each purchase order over HTTP, or drop it as JSON into ``outbox/``.

``HttpErp`` owns one pool of keep-alive connections (urllib3) shared by every
worker thread.
Each order carries an ``Idempotency-Key`` that stays the same on every attempt,
so retrying after a timeout (when the ERP may already have taken the order) is
safe: the ERP answers the retry with the order it already has.

What is retried, and why:

- connection errors, timeouts, 408, 429 and 5xx: the ERP is busy or away;
  waiting may help. ``Retry-After`` is honoured (seconds or an HTTP date,
  capped at ``retry_after_max_seconds``); otherwise the wait doubles from
  ``backoff_initial_seconds`` up to ``backoff_max_seconds``, plus a random
  jitter so that several workers do not return in step. Failing after every
  attempt, the order is ``ErpUnavailable``: the ERP may hold it (sent again,
  under its key), unless no attempt got as far as sending its request (no
  connection, or a TLS handshake refused: ``may_hold`` false).
- 409: the IETF Idempotency-Key draft's answer to a request whose key is
  still in progress (a retry after a timeout while the ERP is still storing
  the first post). The order is not refused: it is waited out like a 5xx.
- an answer whose body is not complete within ``read_timeout_seconds`` of its
  headers (urllib3's read timeout is per read: a body trickling a byte at a
  time would never end): a timeout.
- a 2xx answer without the id field (or not JSON, or over ``ANSWER_MAX``
  bytes, which are never read): a protocol error, but the ERP may well have
  stored the order, so it is not a rejection. Asking again with the same key
  is the way to learn its id; if that never works the order is
  ``ErpUnavailable`` (worth retrying later), never ``ErpRejected``.
- any other answer (4xx, 3xx) fails at once with ``ErpRejected``: sending the
  same body again would get the same answer.

What the ERP answers stays ours: its error text goes into the job's record
(``redact`` first removes the token and anything that looks like a
credential: an ERP debug page may echo the request's headers), never to the
partner, who is told "the ERP rejected order 4711 (HTTP 422)".

``OutboxErp`` stands in when ``[erp] url`` is empty: another system picks the
files up from ``outbox/``. A partner with an ``erp_url`` of its own gets an
``HttpErp`` of its own (``partner_erps``), with ``[erp]``'s token and policy.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import errno
import http.client
import io
import json
import math
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import parse_qsl, unquote

import structlog
import tenacity
import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import LocationParseError
from urllib3.util import make_headers, parse_url

from . import __version__, config, files
from .errors import ConfigError, ErpRejected, ErpUnavailable, ShortOfResources
from .jsontext import dumps

__all__ = ["Delivery", "Erp", "HttpErp", "OutboxErp", "make_erp", "partner_erps", "redact"]

MESSAGE_MAX = 500  # characters of an ERP error body kept in messages
# Redacted before the cut, of a longer answer only this much more (a secret
# echoed across MESSAGE_MAX is found whole; a MiB of answer is not searched).
REDACT_MARGIN = 16 * 1024
# Bytes of an ERP answer read at most: an id or an error fits in far less; a
# proxy's page or a misrouted download must not fill the daemon's memory.
ANSWER_MAX = 1024 * 1024
DEFAULT_POOL_SIZE = 8
REDACTED = "[redacted]"

# A header line, or a JSON/HTML echo of one, whose whole value is secret:
# "Authorization: Bearer abc", '"authorization": "Basic abc"', "Cookie: s=1; t=2".
_SECRET_HEADER = re.compile(
    r"(?i)\b((?:proxy-)?authorization|(?:set-)?cookie|x-api-key)(\s*[\"']?\s*[:=]\s*[\"']?)"
    r"([^\"'\r\n<]+)"
)
# A credential scheme and its value wherever it stands: "<td>Bearer abc</td>".
_SCHEME = re.compile(r"(?i)\b(bearer|basic|digest)(\s+)([A-Za-z0-9._~+/=-]{4,})")
# key=value, key: value, "key": "value" for any key naming a secret:
# token, access_token, password, passwd, secret, client_secret, api_key, apikey.
_SECRET_PAIR = re.compile(  # the key's prefix bounded: linear on a long run of words
    r"(?i)\b([\w-]{0,64}(?:token|password|passwd|secret|api[_-]?key|apikey))"
    r"(\s*[\"']?\s*[:=]\s*[\"']?)([^\s\"'&,;<>}]+)"
)


@dataclass(frozen=True)
class Delivery:
    """The ERP took the order: its id, the attempts it took, the final HTTP status
    (``None`` for the outbox)."""

    erp_id: str
    attempts: int
    status_code: int | None


class Erp(Protocol):
    """What the pipeline needs of an ERP sink."""

    def deliver(
        self,
        payload: Mapping[str, Any] | str,
        idempotency_key: str,
        *,
        guard: Callable[[], None] | None = None,
    ) -> Delivery: ...

    def close(self) -> None: ...


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
        reached: bool = True,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after
        self.attempt = attempt
        self.reached = reached  # the request may have reached the ERP


class HttpErp(_Sink):
    """Posts orders to ``settings.url`` as JSON; see the module docstring for the
    retry policy.

    Thread-safe: one client, one connection pool of ``pool_size`` keep-alive
    connections, shared by every worker calling ``deliver()``. ``sleep`` waits
    between attempts (tests pass a recorder instead of waiting); ``log`` defaults
    to ``structlog.get_logger()``, whose bound context (job id, file) the
    pipeline sets through ``structlog.contextvars``. ``label`` names where
    ``settings.url`` came from, in errors (``[partners.NAME] erp_url``).
    """

    def __init__(
        self,
        settings: config.ErpSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        log: Any = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        label: str = "[erp] url",
    ) -> None:
        self.settings = settings
        self.label = label
        self._sleep = sleep
        self._log = log if log is not None else structlog.get_logger()
        try:
            url = parse_url(settings.url)
        except LocationParseError:
            shown = config.safe_url(settings.url)
            raise ConfigError(f"{label} {shown!r} is not a valid URL") from None
        if url.scheme not in ("http", "https") or not url.host:
            shown = config.safe_url(settings.url)
            raise ConfigError(f"{label} {shown!r} must be an http:// or https:// URL")
        # Shown in messages and logs: no user info, no query, no fragment
        # (each may hold secrets).
        self.display_url = config.shown_url(settings.url)
        self._target = url.request_uri
        headers = {"User-Agent": f"edi-inbox/{__version__}", "Accept": "application/json"}
        # The URL's user info as written (percent-encoded, RFC 3986), decoded:
        # "user:password" (RFC 7617; an API key as the user, the password empty).
        user, _, password = (unquote(part) for part in (url.auth or "").partition(":"))
        # What redact() removes from the ERP's answers, besides what looks secret:
        # the user info and the query's values (a signed URL's signature).
        query = [v for _, _, v in (p.partition("=") for p in (url.query or "").split("&"))]
        secrets = [user, password, *query, *(v for _, v in parse_qsl(url.query or ""))]
        if url.auth:  # the credentials written for this ERP, in place of the token
            headers.update(make_headers(basic_auth=f"{user}:{password}"))
            secrets.append(headers["authorization"].removeprefix("Basic "))  # as sent
        elif settings.token_file is not None:
            token = _read_token(settings.token_file)
            headers["Authorization"] = f"Bearer {token}"
            secrets.append(token)
        self._secrets = tuple(part for part in secrets if len(part) >= 4)
        self._headers = {**headers, "Content-Type": "application/json"}
        # A connection per worker at most (block=True: a worker waits for a free
        # one). No retries or redirects of urllib3's own: tenacity retries, and a
        # redirect would re-send the token and the order somewhere else.
        self._pool = urllib3.connection_from_url(
            url._replace(auth=None, path=None, query=None, fragment=None).url,
            maxsize=max(1, pool_size),
            block=True,
            retries=False,
            timeout=urllib3.Timeout(
                connect=settings.connect_timeout_seconds, read=settings.read_timeout_seconds
            ),
        )
        self._pool.ConnectionCls = _TlsConnection if url.scheme == "https" else _Connection

    def deliver(
        self,
        payload: Mapping[str, Any] | str,
        idempotency_key: str,
        *,
        guard: Callable[[], None] | None = None,
    ) -> Delivery:
        """Post one order; the ERP's id on success.

        Raises ``ErpRejected`` (permanent, at once) or ``ErpUnavailable`` (after
        ``max_attempts``); both carry the ERP's last message, status and attempts,
        and whether the ERP may hold the order (``may_hold``: an attempt that
        never began sending its request cannot have delivered it).
        ``guard()`` is called before each retry (the caller checks before the
        first post): whatever it raises (``ClaimLost``) ends the delivery at once.
        """
        if not idempotency_key:
            raise ValueError("idempotency_key must not be empty")
        body = (payload if isinstance(payload, str) else dumps(payload)).encode()
        headers = {**self._headers, "Idempotency-Key": idempotency_key}
        s = self.settings
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Retryable),
            stop=tenacity.stop_after_attempt(max(1, s.max_attempts)),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        reached = False
        try:
            for attempt in retrying:
                with attempt:
                    n = attempt.retry_state.attempt_number
                    if guard is not None and n > 1:  # the wait may have been long
                        guard()
                    try:
                        return self._attempt(body, headers, n)
                    except _Retryable as exc:
                        reached = reached or exc.reached
                        raise
                    except ErpRejected as exc:  # this answer is final, not the earlier ones
                        exc.may_hold = reached
                        raise
        except _Retryable as exc:
            raise ErpUnavailable(
                f"ERP at {self.display_url} unavailable after {exc.attempt} attempts: "
                f"{exc.message}",
                status_code=exc.status_code,
                attempts=exc.attempt,
                reached=reached,
            ) from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _attempt(self, body: bytes, headers: dict[str, str], n: int) -> Delivery:
        _request.begun, _request.timeout = False, self.settings.read_timeout_seconds
        try:
            response = self._pool.urlopen(
                "POST",
                self._target,
                body=body,
                headers=headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
            )
            try:
                data = self._read_answer(response, n)
            finally:
                if not response.closed:  # the rest unread: no other request may follow
                    response.close()
                response.release_conn()
        except (Urllib3Error, OSError) as exc:
            # Includes read timeouts after the body went out: the ERP may have the
            # order already, which is what the unchanged Idempotency-Key is for.
            message = _transport_message(exc, self.settings.read_timeout_seconds)
            cause = exc if isinstance(exc, OSError) else exc.__cause__ or exc.__context__
            if isinstance(cause, OSError) and files.short_of_resources(cause):  # ours
                raise ShortOfResources(message) from None
            raise _Retryable(message, attempt=n, reached=_request.begun) from None
        code = response.status
        if 200 <= code < 300:
            field = self.settings.id_field
            erp_id = _erp_id(data, field) if len(data) <= ANSWER_MAX else None
            if erp_id is None:
                what = (
                    f"with more than {ANSWER_MAX} bytes"
                    if len(data) > ANSWER_MAX
                    else f"without an {field!r} in a JSON body"
                )
                raise _Retryable(f"ERP answered {code} {what}", status_code=code, attempt=n)
            return Delivery(erp_id=erp_id, attempts=n, status_code=code)
        status = redact(f"HTTP {code} {response.reason or ''}".rstrip(), self._secrets)
        if code in (408, 409, 429) or code >= 500:
            raise _Retryable(
                f"{status}: {_erp_message(data, self._secrets)}",
                status_code=code,
                retry_after=_retry_after(
                    response.headers.get("Retry-After"),
                    # A server adding its Date before the application's: the
                    # application's, which wrote Retry-After, comes last.
                    next(reversed(response.headers.getlist("Date")), None),
                ),
                attempt=n,
            )
        if 300 <= code < 400:
            location = response.headers.get("Location")
            where = config.shown_url(location) if location else "an unnamed place"
            where = redact(where, self._secrets)
            message = f"{status}: redirected to {where}; set {self.label} to the final address"
        else:
            message = f"{status}: {_erp_message(data, self._secrets)}"
        raise ErpRejected(f"ERP rejected the order: {message}", status_code=code, attempts=n)

    def _read_answer(self, response: urllib3.BaseHTTPResponse, n: int) -> bytes:
        """The answer's body, cut after ``ANSWER_MAX + 1`` bytes (one more tells
        the caller it was longer). It must be complete within
        ``read_timeout_seconds`` of the headers, else ``_Retryable``, as for a
        timeout; checked between reads, each of which waits at most
        ``read_timeout_seconds`` for the next bytes."""
        seconds = self.settings.read_timeout_seconds
        deadline = time.monotonic() + seconds
        chunks: list[bytes] = []
        size = 0
        while size <= ANSWER_MAX:
            if time.monotonic() > deadline:
                raise _Retryable(
                    f"HTTP {response.status}: the answer's body was not complete "
                    f"within {seconds:g} s",
                    attempt=n,
                )
            chunk = response.read1(ANSWER_MAX + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)

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
        self._pool.close()


def _read_token(path: Path) -> str:
    """The bearer token, read once; its text never reaches a message or a log."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"[erp] token_file {path}: cannot be read: {exc.strerror}") from exc
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


def _transport_message(exc: BaseException, read_timeout: float) -> str:
    """What went wrong on the wire, as the socket said it: "ConnectionRefusedError:
    [Errno 111] Connection refused", "ReadTimeoutError: no answer within 5.0 s"."""
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return f"ReadTimeoutError: no answer within {read_timeout:g} s"
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, Urllib3Error) and isinstance(cause, OSError):
        exc = cause  # the socket's own error, not urllib3's wrapping of it
    return f"{type(exc).__name__}: {str(exc) or 'no detail'}"


def _json(data: bytes) -> Any:
    """The body as JSON; ``None`` when it is not JSON (or not UTF-8)."""
    try:
        return json.loads(data)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return None


def _erp_id(data: bytes, field: str) -> str | None:
    """The order's id from a 2xx body, as text; ``None`` if there is none."""
    body = _json(data)
    value = body.get(field) if isinstance(body, dict) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and math.isfinite(value):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


# HTML's escapes of the characters an error page escapes.
_ENTITIES = {"&": ("&amp;",), "<": ("&lt;",), ">": ("&gt;",), '"': ("&quot;",), "'": ("&#39;",)}


def _echoed(secret: str) -> str:
    """A pattern of ``secret`` as an answer may echo it: each character that
    is not an ASCII letter or digit as it is, JSON-escaped (PHP writes "/"
    as "\\/" and "é" as "\\u00e9", ASP.NET Core "+" as "\\u002B"),
    percent-encoded as UTF-8 (either case of hex: .NET writes "%2b") or
    HTML-escaped (``&amp;``), character by character."""
    parts = []
    for c in secret:
        if c.isascii() and c.isalnum():
            parts.append(re.escape(c))
            continue
        utf8 = c.encode("utf-8", "surrogatepass")
        forms = [re.escape(c), "".join(f"%(?i:{b:02x})" for b in utf8)]
        if ord(c) <= 0xFFFF:
            forms.append(f"\\\\u(?i:{ord(c):04x})")
        if c in '/"':  # (a backslash's own escape left out: a run of them would
            forms.append(re.escape("\\" + c))  # match two ways a character, 2^n)
        forms += [re.escape(e) for e in _ENTITIES.get(c, ())]
        parts.append("(?:" + "|".join(forms) + ")")
    return "".join(parts)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without credentials: each of ``secrets`` (the bearer token, the
    URL's password) wherever it appears, and the value of anything that looks
    like one — an ``Authorization:`` or ``Cookie:`` header, ``Bearer xxx``,
    ``token=``, ``password=``, ``api_key=``, ``client_secret:`` — replaced by
    ``[redacted]``. For the ERP's answers, before they reach a record or a log."""
    patterns = sorted((_echoed(secret) for secret in secrets if secret), key=len, reverse=True)
    if patterns:
        text = re.sub("|".join(patterns), REDACTED, text)
    text = _SECRET_HEADER.sub(lambda m: m[1] + m[2] + REDACTED, text)
    text = _SCHEME.sub(lambda m: m[1] + m[2] + REDACTED, text)
    return _SECRET_PAIR.sub(lambda m: m[1] + m[2] + REDACTED, text)


def _erp_message(data: bytes, secrets: Iterable[str] = ()) -> str:
    """What the ERP said: its JSON ``error``/``message``/``detail``, else the body
    text, redacted, then cut to ``MESSAGE_MAX`` characters (redacted first: a
    token cut in half would no longer be found)."""
    body = _json(data)
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            value = body.get(key)
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                value = value["message"]  # {"error": {"code": …, "message": …}}
            if isinstance(value, str) and value.strip():
                return _cut(value.strip(), secrets)
            if value not in (None, "", [], {}):
                return _cut(json.dumps(value, ensure_ascii=False), secrets)
    text = data.decode("utf-8", "replace").strip()
    return _cut(text, secrets) if text else "(empty body)"


def _cut(text: str, secrets: Iterable[str]) -> str:
    """``text`` redacted, then cut to ``MESSAGE_MAX`` characters; only its
    first ``MESSAGE_MAX + REDACT_MARGIN`` are searched."""
    text = redact(text[: MESSAGE_MAX + REDACT_MARGIN], secrets)
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 1] + "…"


def _retry_after(value: str | None, date: str | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; ``None``
    if absent or unreadable (the backoff applies then). An HTTP date is read
    against the answer's own ``Date`` when it has one (RFC 9110: both are the
    server's clock), so an ERP whose clock is off ours is waited for as long
    as it asked; without one, against ours."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    when = _http_date(value)
    if when is None:
        return None
    now = _http_date(date) if date else None
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


def _http_date(value: str) -> dt.datetime | None:
    """An HTTP date (GMT), or None if it is not one."""
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)  # "-0000": naive


OUTBOX_PART_CHARS = 64  # of the PO number and of the key in an outbox file's name
# An outbox out of space or inodes, over quota, read-only: the order is not
# refused; its file runs again (``ShortOfResources``) until the outbox takes it.
OUTBOX_TROUBLE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class OutboxErp(_Sink):
    """Writes each order's JSON — the body an ERP would be posted, byte for
    byte, and a newline — into ``outbox_dir`` for another system
    to collect, as ``<po_number>.<key>.json`` (each sanitised by
    ``files.safe_name`` and cut to ``OUTBOX_PART_CHARS`` characters and bytes:
    partner bytes never reach a path as they are).

    Idempotent per key: the name follows from the order alone, so whether it
    was written is one ``stat``, however full the outbox (a glob per order
    took 234 s for 20,000 orders). The key covers the PO number, so one key
    never has two names. Two orders with the same PO number have different
    keys, hence different files; ``files.write_new`` never replaces a file,
    and a name another process took first means that process wrote the order.
    """

    def __init__(self, outbox_dir: Path) -> None:
        self.outbox_dir = Path(outbox_dir)
        # The look-then-write below must not interleave between worker threads.
        self._lock = threading.Lock()

    @staticmethod
    def file_name(po_number: str, idempotency_key: str) -> str:
        """``<po[:64]>.<key[:64]>.json``, both sanitised, at most 64 bytes each:
        the order's one name."""
        # Cut to 64 characters first, then held to 64 bytes: an ASCII name is
        # the one earlier versions gave (a written order is found again).
        po = files.safe_name(
            po_number[:OUTBOX_PART_CHARS], fallback="order", max_bytes=OUTBOX_PART_CHARS
        )
        tag = files.safe_name(
            idempotency_key[:OUTBOX_PART_CHARS], fallback="key", max_bytes=OUTBOX_PART_CHARS
        )
        return f"{po}.{tag}.json"

    def deliver(
        self,
        payload: Mapping[str, Any] | str,
        idempotency_key: str,
        *,
        guard: Callable[[], None] | None = None,
    ) -> Delivery:
        """Write the order (or find it written); ``erp_id`` is ``outbox:<file name>``.
        One attempt, so no ``guard``: the caller's check before it is the check."""
        if not idempotency_key:
            raise ValueError("idempotency_key must not be empty")
        text = payload if isinstance(payload, str) else dumps(payload)
        name = self.file_name(_po_number(text), idempotency_key)
        delivered = Delivery(f"outbox:{name}", attempts=1, status_code=None)
        with self._lock:
            try:
                self.outbox_dir.mkdir(parents=True, exist_ok=True)
                if (self.outbox_dir / name).exists():
                    return delivered
                data = bytearray(text, "utf-8")  # one copy of a large order's text, not two
                data += b"\n"
                path = files.write_new(self.outbox_dir, name, data)
            except OSError as exc:  # the outbox's trouble, not the order's: it runs again
                if exc.errno in OUTBOX_TROUBLE or files.short_of_resources(exc):
                    raise ShortOfResources(
                        f"the outbox {self.outbox_dir} cannot take the order: {exc.strerror or exc}"
                    ) from None
                raise
        if path.name != name:  # another process wrote this order in between: keep one
            path.unlink()
        return delivered

    def close(self) -> None:
        """Nothing to release; here so both sinks are used alike."""


# An order's PO number as its JSON text (``jsontext.dumps``) writes it: the first
# ``"po_number":`` is the order's own (the envelope's strings come before it,
# and a quote inside a string is escaped, so none can hold this).
_PO_NUMBER = re.compile(r'"po_number":("(?:[^"\\]|\\.)*")')


def _po_number(text: str) -> str:
    """The PO number of an order's JSON text, read without decoding the rest
    (the dicts of an order of 20,000 lines took ~6x its text); "" if none."""
    found = _PO_NUMBER.search(text)
    if found is None:
        return ""
    value = json.loads(found.group(1))
    return value if isinstance(value, str) else ""


class _Deadline(io.RawIOBase):
    """A socket's bytes (through its own ``makefile``: the socket stays open
    while they are read). Between ``start()`` and ``stop()`` no read waits
    past the socket's timeout from ``start()`` on, in all: a timeout per
    read lets an answer a byte at a time last for ever."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)
        self._timeout = sock.gettimeout()  # urllib3's read timeout, set before the answer
        self._deadline: float | None = None

    def start(self) -> None:
        if self._timeout:
            self._deadline = time.monotonic() + self._timeout

    def stop(self) -> None:
        self._deadline = None
        self._sock.settimeout(self._timeout)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        if self._deadline is not None:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the answer's status and headers took too long")
            self._sock.settimeout(left)
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _FinalAnswer(http.client.HTTPResponse):
    """The ERP's final answer, past any interim ones. http.client skips a
    ``100 Continue`` only; RFC 9110 (15.2) lets any number of 1xx come first:
    a ``103 Early Hints`` (from the ERP or a proxy before it) was taken for
    the answer, and the 201 after it left on the connection for the next
    order to read as its own. Its status line, any interim answers and its
    headers must all come within the read timeout (the socket's when the
    answer is awaited: urllib3 sets it), not each read within it."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp.close()  # http.client's own reader: ours, with the deadline, instead
        self._head = _Deadline(sock)
        self.fp = io.BufferedReader(self._head)

    def begin(self) -> None:
        self._head.start()
        try:
            super().begin()
        finally:  # the body: each read within the timeout (``_read_answer``: all of it)
            self._head.stop()

    def _read_status(self) -> tuple[str, int, str]:
        while True:
            version, status, reason = super()._read_status()  # type: ignore[misc]
            if not 102 <= status < 200:  # 100: begin() skips it; 101: never asked for
                return version, status, reason
            http.client._read_headers(self.fp)  # type: ignore[attr-defined]


class _Request(threading.local):
    """Whether this thread's attempt has begun sending its request: one that
    failed before (no connection, refused, timed out connecting, a TLS
    handshake or certificate refused) cannot have delivered the order."""

    begun = False
    timeout: float | None = None  # for each piece of the request: the read timeout


_request = _Request()
SEND_PIECE = 64 * 1024


class _Sending:
    """http.client connects on its first ``send`` (a pooled connection is
    connected already): connected, and past TLS, the request goes out, in
    pieces of ``SEND_PIECE`` bytes, each to be taken within the read timeout
    (``_request.timeout``; urllib3 would send it under the connect timeout,
    and a socket's timeout bounds a whole ``sendall``: a large order to an
    ERP that reads it slowly would never go through)."""

    def send(self: Any, data: Any) -> None:
        if self.sock is None:
            self.connect()
        _request.begun = True
        self.sock.settimeout(_request.timeout)
        if not isinstance(data, bytes | bytearray | memoryview):
            super().send(data)  # type: ignore[misc]
            return
        view = memoryview(data)
        for start in range(0, len(view), SEND_PIECE):
            super().send(view[start : start + SEND_PIECE])  # type: ignore[misc]


class _Connection(_Sending, urllib3.connection.HTTPConnection):
    response_class = _FinalAnswer


class _TlsConnection(_Sending, urllib3.connection.HTTPSConnection):
    response_class = _FinalAnswer


def longest_delivery(s: config.ErpSettings) -> float:
    """Seconds an order's delivery can take at most: every attempt timing out
    and every wait the longest ``HttpErp._wait`` gives. An attempt is a connect
    timeout, a read timeout for the headers, and one for the body plus the
    last read's (``HttpErp._read_answer``)."""
    attempts = max(1, s.max_attempts)
    wait = max(s.backoff_max_seconds, s.retry_after_max_seconds) + s.backoff_jitter_seconds
    attempt = s.connect_timeout_seconds + 3 * s.read_timeout_seconds
    return attempts * attempt + (attempts - 1) * wait


def make_erp(settings: config.Settings) -> HttpErp | OutboxErp:
    """The sink the settings ask for: ``HttpErp`` for an ``[erp] url``, else
    ``OutboxErp`` on ``[paths] outbox``. The pool has a connection per worker."""
    if settings.erp.url.strip():
        return HttpErp(settings.erp, pool_size=max(settings.daemon.workers, DEFAULT_POOL_SIZE))
    assert settings.paths.outbox is not None  # PathSettings fills it in
    return OutboxErp(settings.paths.outbox)


def partner_erps(settings: config.Settings) -> dict[str, HttpErp]:
    """Partner name -> the ``HttpErp`` for its ``erp_url``, for the partners
    that have one: ``[erp]``'s token, timeouts and retry policy, the URL
    checked as ``[erp] url`` is (a bad one is a ``ConfigError`` naming the
    partner). Built together, so that none is left open when one is refused."""
    built: dict[str, HttpErp] = {}
    try:
        for partner in settings.partners.partners:
            if partner.erp_url is not None:
                built[partner.name] = HttpErp(
                    replace(settings.erp, url=partner.erp_url),
                    pool_size=max(settings.daemon.workers, DEFAULT_POOL_SIZE),
                    label=f"[partners.{partner.name}] erp_url",
                )
    except BaseException:
        for erp in built.values():
            erp.close()
        raise
    return built
