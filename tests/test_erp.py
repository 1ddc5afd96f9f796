"""ERP delivery against a real HTTP server on 127.0.0.1, and the outbox sink on real files."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from structlog.testing import capture_logs
from werkzeug import Request, Response

from edi_inbox import __version__
from edi_inbox.config import DaemonSettings, ErpSettings, PathSettings, Settings
from edi_inbox.erp import ANSWER_MAX, Delivery, HttpErp, OutboxErp, make_erp, redact
from edi_inbox.errors import ConfigError, ErpRejected, ErpUnavailable
from edi_inbox.jsontext import dumps

from helpers import poll_until

PATH = "/orders"
KEY = "3f2a9c0d1e8b7a6f5e4d3c2b1a09f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1"
PAYLOAD = {"po_number": "4711", "total_amount": Decimal("1234.50"), "lines": [{"qty": "2"}]}


@pytest.fixture(scope="module")
def _server() -> Iterator[HTTPServer]:
    # Threaded, unlike the plugin's default: a request the client gave up on (the
    # timeout test) must not hold up its retry, and the concurrency test needs
    # eight requests in flight at once.
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def httpserver(_server: HTTPServer) -> Iterator[HTTPServer]:
    """pytest-httpserver's server, threaded, on 127.0.0.1, checked after each test."""
    _server.clear()
    yield _server
    _server.check_handler_errors()
    _server.clear()


def settings(url: str, **overrides: object) -> ErpSettings:
    base: dict[str, object] = {
        "connect_timeout_seconds": 2.0,
        "read_timeout_seconds": 5.0,
        "max_attempts": 5,
        "backoff_initial_seconds": 0.5,
        "backoff_max_seconds": 30.0,
        "backoff_jitter_seconds": 0.0,
        "retry_after_max_seconds": 120.0,
    }
    base.update(overrides)
    return ErpSettings(url=url, **base)  # type: ignore[arg-type]


def http_erp(
    server: HTTPServer, waits: list[float], pool_size: int = 8, **overrides: object
) -> HttpErp:
    return HttpErp(
        settings(server.url_for(PATH), **overrides), sleep=waits.append, pool_size=pool_size
    )


def sent_keys(server: HTTPServer) -> list[str | None]:
    return [request.headers.get("Idempotency-Key") for request, _ in server.log]


def test_retries_503_then_takes_id_from_201(httpserver: HTTPServer) -> None:
    """503, 503, 201: three attempts, one Idempotency-Key, doubling backoff, id from the body."""
    for _ in range(2):
        httpserver.expect_ordered_request(PATH, method="POST").respond_with_json(
            {"message": "busy"}, status=503
        )
    httpserver.expect_ordered_request(PATH, method="POST").respond_with_json(
        {"id": "SO-981"}, status=201
    )
    waits: list[float] = []
    with http_erp(httpserver, waits) as erp:
        delivery = erp.deliver(PAYLOAD, KEY)

    assert delivery == Delivery(erp_id="SO-981", attempts=3, status_code=201)
    assert sent_keys(httpserver) == [KEY, KEY, KEY]
    assert waits == [0.5, 1.0]
    request = httpserver.log[-1][0]
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == f"edi-inbox/{__version__}"
    assert "Authorization" not in request.headers
    assert json.loads(request.get_data())["total_amount"] == "1234.50"  # Decimal as text


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, {"error": "unknown buyer"}, "unknown buyer"),
        (422, {"detail": "po_number is missing"}, "po_number is missing"),
        (403, {"error": {"code": "denied", "message": "buyer not allowed"}}, "buyer not allowed"),
        (404, "x" * 2000, "x" * 400),
    ],
)
def test_4xx_rejected_at_once_keeping_erp_message(
    httpserver: HTTPServer, status: int, body: object, expected: str
) -> None:
    """A 4xx other than 408/409/429 is one attempt and ErpRejected with the ERP's own words."""
    if isinstance(body, str):
        httpserver.expect_request(PATH).respond_with_data(body, status=status)
    else:
        httpserver.expect_request(PATH).respond_with_json(body, status=status)
    waits: list[float] = []
    with http_erp(httpserver, waits) as erp, pytest.raises(ErpRejected) as caught:
        erp.deliver(PAYLOAD, KEY)

    assert expected in caught.value.message
    assert len(caught.value.message) < 600  # a long body is cut, not copied whole
    assert (caught.value.status_code, caught.value.attempts) == (status, 1)
    assert waits == []
    assert len(httpserver.log) == 1


@pytest.mark.parametrize("status", [408, 500, 502, 504])
def test_408_and_5xx_are_retried(httpserver: HTTPServer, status: int) -> None:
    """408 and any 5xx count as transient: the next attempt's success is the result."""
    httpserver.expect_ordered_request(PATH).respond_with_data("later", status=status)
    httpserver.expect_ordered_request(PATH).respond_with_json({"id": "A1"}, status=200)
    with http_erp(httpserver, []) as erp:
        assert erp.deliver(PAYLOAD, KEY) == Delivery("A1", attempts=2, status_code=200)


def test_exhausted_retries_raise_unavailable_with_last_message(httpserver: HTTPServer) -> None:
    """Only 503s: ErpUnavailable after max_attempts, last status and message kept, waits capped."""
    httpserver.expect_request(PATH).respond_with_json({"message": "maintenance"}, status=503)
    waits: list[float] = []
    erp = http_erp(
        httpserver, waits, backoff_initial_seconds=1.0, backoff_max_seconds=3.0, max_attempts=5
    )
    with erp, pytest.raises(ErpUnavailable) as caught:
        erp.deliver(PAYLOAD, KEY)

    assert (caught.value.status_code, caught.value.attempts) == (503, 5)
    assert "maintenance" in caught.value.message
    assert waits == [1.0, 2.0, 3.0, 3.0]
    assert sent_keys(httpserver) == [KEY] * 5
    assert caught.value.may_hold  # each request reached it


def test_jitter_stays_within_its_bound(httpserver: HTTPServer) -> None:
    """Each wait is the backoff plus a random 0..backoff_jitter_seconds, never more."""
    httpserver.expect_request(PATH).respond_with_data("down", status=500)
    waits: list[float] = []
    erp = http_erp(httpserver, waits, backoff_jitter_seconds=0.25, max_attempts=4)
    with erp, pytest.raises(ErpUnavailable):
        erp.deliver(PAYLOAD, KEY)

    for wait, backoff in zip(waits, [0.5, 1.0, 2.0], strict=True):
        assert backoff <= wait <= backoff + 0.25


def test_429_retry_after_seconds_honoured_and_logged(httpserver: HTTPServer) -> None:
    """429 with Retry-After: 2 waits at least 2 s (not the shorter backoff) and logs erp_retry."""
    httpserver.expect_ordered_request(PATH).respond_with_json(
        {"error": "slow down"}, status=429, headers={"Retry-After": "2"}
    )
    httpserver.expect_ordered_request(PATH).respond_with_json({"id": 7}, status=201)
    waits: list[float] = []
    with http_erp(httpserver, waits, backoff_initial_seconds=0.1) as erp, capture_logs() as logs:
        delivery = erp.deliver(PAYLOAD, KEY)

    assert delivery == Delivery("7", attempts=2, status_code=201)
    assert len(waits) == 1 and waits[0] >= 2
    [event] = [e for e in logs if e["event"] == "erp_retry"]
    assert event["attempt"] == 1
    assert event["status_code"] == 429
    assert event["wait_seconds"] == 2
    assert "slow down" in event["error"]


def test_429_retry_after_http_date_honoured_and_capped(httpserver: HTTPServer) -> None:
    """Retry-After as an HTTP date waits until then; a date too far off is cut to the cap."""
    now = datetime.now(UTC)
    for later in (timedelta(seconds=30), timedelta(hours=1)):
        httpserver.expect_ordered_request(PATH).respond_with_data(
            "", status=429, headers={"Retry-After": format_datetime(now + later, usegmt=True)}
        )
    httpserver.expect_ordered_request(PATH).respond_with_json({"id": "Z9"}, status=201)
    waits: list[float] = []
    with http_erp(httpserver, waits, retry_after_max_seconds=60.0) as erp:
        assert erp.deliver(PAYLOAD, KEY).attempts == 3

    assert 20 <= waits[0] <= 30  # whole seconds in the header, and a little time passed
    assert waits[1] == 60.0


def test_read_timeout_is_retried_with_same_key(httpserver: HTTPServer) -> None:
    """A request that outlives read_timeout is retried (same key) and the retry's answer wins."""
    release = threading.Event()
    calls = []
    lock = threading.Lock()

    def handler(request: Request) -> Response:
        with lock:
            calls.append(request.headers.get("Idempotency-Key"))
            first = len(calls) == 1
        if first:  # hold the answer until the client has given up and succeeded
            release.wait(10)
        return Response(json.dumps({"id": f"T{len(calls)}"}), 201, content_type="application/json")

    httpserver.expect_request(PATH).respond_with_handler(handler)
    waits: list[float] = []
    try:
        with http_erp(httpserver, waits, read_timeout_seconds=0.2) as erp:
            delivery = erp.deliver(PAYLOAD, KEY)
    finally:
        release.set()
    # the held request is logged once answered: here, not in the next test's log
    poll_until(lambda: len(httpserver.log) == 2, timeout=10, what="the held request answered")

    assert delivery == Delivery("T2", attempts=2, status_code=201)
    assert calls == [KEY, KEY]
    assert waits == [0.5]


def test_409_for_a_key_in_progress_is_waited_out(httpserver: HTTPServer) -> None:
    """409 (the key's first post still in progress at the ERP) is retried under the
    same key after its Retry-After, and the retry's 201 is the result."""
    httpserver.expect_ordered_request(PATH).respond_with_json(
        {"error": "a request with this Idempotency-Key is in progress"},
        status=409,
        headers={"Retry-After": "3"},
    )
    httpserver.expect_ordered_request(PATH).respond_with_json({"id": "C1"}, status=201)
    waits: list[float] = []
    with http_erp(httpserver, waits) as erp:
        assert erp.deliver(PAYLOAD, KEY) == Delivery("C1", attempts=2, status_code=201)
    assert sent_keys(httpserver) == [KEY, KEY]
    assert waits == [3.0]


def test_409_on_every_attempt_ends_unavailable_not_rejected(httpserver: HTTPServer) -> None:
    """A key still in progress after max_attempts: ErpUnavailable (as 5xx), never ErpRejected."""
    httpserver.expect_request(PATH).respond_with_json({"error": "in progress"}, status=409)
    waits: list[float] = []
    erp = http_erp(httpserver, waits, max_attempts=3)
    with erp, pytest.raises(ErpUnavailable) as caught:
        erp.deliver(PAYLOAD, KEY)
    assert (caught.value.status_code, caught.value.attempts) == (409, 3)
    assert "in progress" in caught.value.message
    assert waits == [0.5, 1.0]


def test_a_body_that_never_ends_is_a_timeout_retried_with_same_key(
    httpserver: HTTPServer,
) -> None:
    """201 then a byte at a time, each within the read timeout but never done: the
    attempt ends read_timeout after the headers and the retry's answer wins (through
    a one-connection pool: the abandoned connection was given back)."""
    stop = threading.Event()
    calls: list[str | None] = []
    lock = threading.Lock()

    def trickle() -> Iterator[bytes]:
        yield b'{"id": "T1"'
        # Paced by the test's end, not by the client: only the fix stops reading.
        # Bounded, so that without the fix the body ends (and the test fails).
        for _ in range(200):
            if stop.wait(0.05):
                return
            yield b" "
        yield b"}"

    def handler(request: Request) -> Response:
        with lock:
            calls.append(request.headers.get("Idempotency-Key"))
            first = len(calls) == 1
        if first:
            return Response(trickle(), 201, content_type="application/json")
        return Response(json.dumps({"id": "T2"}), 201, content_type="application/json")

    httpserver.expect_request(PATH).respond_with_handler(handler)
    waits: list[float] = []
    try:
        erp = http_erp(httpserver, waits, pool_size=1, read_timeout_seconds=0.5)
        with erp, capture_logs() as logs:
            delivery = erp.deliver(PAYLOAD, KEY)
    finally:
        stop.set()

    assert delivery == Delivery("T2", attempts=2, status_code=201)
    assert calls == [KEY, KEY]
    [event] = [e for e in logs if e["event"] == "erp_retry"]
    assert "not complete within 0.5 s" in event["error"]


def test_a_huge_answer_is_malformed_and_never_read_whole(httpserver: HTTPServer) -> None:
    """A 201 with the id padded to 64 MiB: read no further than ANSWER_MAX (the ERP
    could not send it all), taken as a malformed answer and asked again, same key,
    through a one-connection pool (the abandoned connection was given back)."""
    size = 64 * ANSWER_MAX
    sent: list[int] = []
    done = threading.Event()

    def huge() -> Iterator[bytes]:
        try:
            yield b'{"id": "H1", "pad": "'
            piece = b" " * 65536
            for _ in range(size // len(piece)):
                yield piece
                sent.append(len(piece))
            yield b'"}'
        finally:
            done.set()

    httpserver.expect_ordered_request(PATH).respond_with_handler(
        lambda request: Response(huge(), 201, content_type="application/json")
    )
    httpserver.expect_ordered_request(PATH).respond_with_json({"id": "H2"}, status=201)
    waits: list[float] = []
    with http_erp(httpserver, waits, pool_size=1) as erp, capture_logs() as logs:
        delivery = erp.deliver(PAYLOAD, KEY)

    assert delivery == Delivery("H2", attempts=2, status_code=201)
    assert sent_keys(httpserver) == [KEY, KEY]
    [event] = [e for e in logs if e["event"] == "erp_retry"]
    assert event["error"] == f"ERP answered 201 with more than {ANSWER_MAX} bytes"
    assert done.wait(10), "the ERP's writer was not released"
    assert sum(sent) < 16 * ANSWER_MAX  # the cap and the sockets' buffers, not 64 MiB


def test_connection_refused_retried_then_unavailable() -> None:
    """A port nobody listens on: every attempt is made, then ErpUnavailable without a status."""
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}{PATH}"
        waits: list[float] = []
        erp = HttpErp(settings(url, max_attempts=3), sleep=waits.append)
        with erp, pytest.raises(ErpUnavailable) as caught:
            erp.deliver(PAYLOAD, KEY)

    assert caught.value.attempts == 3
    assert caught.value.status_code is None
    assert "ConnectionRefusedError: [Errno 111] Connection refused" in caught.value.message
    assert len(waits) == 2
    assert not caught.value.may_hold, "never connected: the ERP cannot hold the order"


TLS = Path(__file__).parent / "data" / "tls"  # a certificate for 127.0.0.1 no system trusts


@pytest.fixture
def tls_listener() -> Iterator[tuple[ssl.SSLContext, socket.socket, int]]:
    """A server context with that certificate, and a listening socket on
    127.0.0.1 (its port): an https ERP's parts, for the test to script."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(TLS / "untrusted.pem", TLS / "untrusted.key")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        yield context, listener, listener.getsockname()[1]


def test_an_erp_whose_certificate_is_refused_never_got_the_order(tls_listener) -> None:
    """An https ERP whose certificate the system does not trust: every
    attempt fails in the TLS handshake, before the request is sent, so the
    ERP cannot hold the order (``may_hold`` false) and nothing reached it."""
    context, listener, port = tls_listener
    requests: list[bytes] = []

    def serve(attempts: int) -> None:
        for _ in range(attempts):
            conn, _ = listener.accept()
            try:
                with context.wrap_socket(conn, server_side=True) as tls_conn:
                    requests.append(tls_conn.recv(65536))
            except (ssl.SSLError, OSError):
                pass  # the client gave up in the handshake

    server = threading.Thread(target=serve, args=(2,))
    server.start()
    erp = HttpErp(settings(f"https://127.0.0.1:{port}{PATH}", max_attempts=2), sleep=lambda s: None)
    with erp, pytest.raises(ErpUnavailable) as caught:
        erp.deliver(PAYLOAD, KEY)
    server.join(10)
    assert "CERTIFICATE_VERIFY_FAILED" in caught.value.message, caught.value.message
    assert not caught.value.may_hold and requests == []


def test_an_https_erp_whose_certificate_is_trusted_takes_orders(
    monkeypatch: pytest.MonkeyPatch, tls_listener
) -> None:
    """The same ERP, its certificate trusted (``SSL_CERT_FILE``, as OpenSSL
    reads it): orders go through TLS, on one kept-alive connection, the
    answers read through the answer's deadline (``erp._Deadline``)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(TLS / "untrusted.pem"))
    context, listener, port = tls_listener
    connections: list[int] = []

    def serve() -> None:
        conn, _ = listener.accept()
        connections.append(1)
        with context.wrap_socket(conn, server_side=True) as tls_conn:
            reader = tls_conn.makefile("rb")
            for n in (1, 2):
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                reader.read(length)
                body = json.dumps({"id": f"T{n}"}).encode()
                tls_conn.sendall(
                    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )

    server = threading.Thread(target=serve)
    server.start()
    with HttpErp(settings(f"https://127.0.0.1:{port}{PATH}", max_attempts=1)) as erp:
        assert erp.deliver(PAYLOAD, KEY).erp_id == "T1"
        assert erp.deliver(PAYLOAD, "another-key").erp_id == "T2"
    server.join(10)
    assert connections == [1]


def test_an_erp_reached_once_may_hold_the_order() -> None:
    """A 503, then connections refused (the ERP went down): the first request
    reached it, so the order may be there; ErpUnavailable says so."""
    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}{PATH}"

    def answer_once() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    server = threading.Thread(target=answer_once)
    server.start()
    erp = HttpErp(settings(url, max_attempts=3), sleep=lambda seconds: listener.close())
    with erp, pytest.raises(ErpUnavailable) as caught:
        erp.deliver(PAYLOAD, KEY)
    server.join(10)
    assert "Connection refused" in caught.value.message and caught.value.attempts == 3
    assert caught.value.may_hold


def test_bearer_token_sent_and_never_logged(httpserver: HTTPServer, tmp_path: Path) -> None:
    """The token file's content (newline stripped) goes out as a Bearer header and into no log."""
    token_file = tmp_path / "erp.token"
    token_file.write_text("s3cret-T0ken\n")
    token_file.chmod(0o600)
    httpserver.expect_ordered_request(
        PATH, headers={"Authorization": "Bearer s3cret-T0ken"}
    ).respond_with_data("oops", status=500)
    httpserver.expect_ordered_request(
        PATH, headers={"Authorization": "Bearer s3cret-T0ken"}
    ).respond_with_json({"id": "B1"})
    with http_erp(httpserver, [], token_file=token_file) as erp, capture_logs() as logs:
        assert erp.deliver(PAYLOAD, KEY).erp_id == "B1"

    assert logs and "s3cret" not in repr(logs)


def test_unreadable_token_file_is_config_error(tmp_path: Path) -> None:
    """A missing token file stops start-up with a ConfigError naming the file."""
    missing = tmp_path / "nope.token"
    with pytest.raises(ConfigError, match=r"nope\.token"):
        HttpErp(settings("http://127.0.0.1:9/orders", token_file=missing))


def test_url_must_be_http(tmp_path: Path) -> None:
    """A non-HTTP [erp] url is a ConfigError at construction, not a failure per order."""
    with pytest.raises(ConfigError, match=r"\[erp\] url"):
        HttpErp(settings("ftp://erp.example/orders"))


def test_custom_id_field_and_numeric_id(httpserver: HTTPServer) -> None:
    """id_field picks the body's field; a numeric id becomes text."""
    httpserver.expect_request(PATH).respond_with_json({"id": "wrong", "orderNumber": 4711})
    with http_erp(httpserver, [], id_field="orderNumber") as erp:
        assert erp.deliver(PAYLOAD, KEY) == Delivery("4711", attempts=1, status_code=200)


def test_2xx_without_id_is_retried_with_same_key(httpserver: HTTPServer) -> None:
    """A 2xx without an id may still have stored the order: ask again, same key, take the id."""
    httpserver.expect_ordered_request(PATH).respond_with_data("accepted", status=202)
    httpserver.expect_ordered_request(PATH).respond_with_json({"id": "L5"}, status=200)
    with http_erp(httpserver, []) as erp:
        assert erp.deliver(PAYLOAD, KEY) == Delivery("L5", attempts=2, status_code=200)
    assert sent_keys(httpserver) == [KEY, KEY]


def test_2xx_never_with_id_ends_unavailable(httpserver: HTTPServer) -> None:
    """If no attempt yields an id, the order is ErpUnavailable (not rejected), saying why."""
    httpserver.expect_request(PATH).respond_with_json({"status": "ok"}, status=201)
    erp = http_erp(httpserver, [], max_attempts=2)
    with erp, pytest.raises(ErpUnavailable) as caught:
        erp.deliver(PAYLOAD, KEY)
    assert (caught.value.status_code, caught.value.attempts) == (201, 2)
    assert "201 without an 'id'" in caught.value.message


def test_redirect_is_rejected_not_followed(httpserver: HTTPServer) -> None:
    """A 3xx is not followed (it would carry the order and token elsewhere) and fails at once."""
    httpserver.expect_request(PATH).respond_with_data(
        "", status=308, headers={"Location": "https://elsewhere.example/orders"}
    )
    with http_erp(httpserver, []) as erp, pytest.raises(ErpRejected) as caught:
        erp.deliver(PAYLOAD, KEY)
    assert "elsewhere.example" in caught.value.message
    assert len(httpserver.log) == 1


def test_eight_threads_deliver_at_once_through_one_client(httpserver: HTTPServer) -> None:
    """Eight threads share one HttpErp: all eight requests are in flight at once and succeed."""
    together = threading.Barrier(8)

    def handler(request: Request) -> Response:
        together.wait(10)  # only passes once all eight requests have arrived
        key = request.headers["Idempotency-Key"]
        return Response(json.dumps({"id": f"id-{key}"}), 201, content_type="application/json")

    httpserver.expect_request(PATH).respond_with_handler(handler)
    with http_erp(httpserver, [], max_attempts=1) as erp, ThreadPoolExecutor(8) as pool:
        keys = [f"key-{n}" for n in range(8)]
        deliveries = list(pool.map(lambda k: erp.deliver({"po_number": k}, k), keys))

    assert deliveries == [Delivery(f"id-{k}", attempts=1, status_code=201) for k in keys]


def test_outbox_writes_the_body_an_erp_is_posted_atomically(tmp_path: Path) -> None:
    """The outbox file is the JSON an ERP would be posted, byte for byte
    (Decimal as text), and a newline; no temporary file is left."""
    outbox = tmp_path / "outbox"
    with OutboxErp(outbox) as erp:
        delivery = erp.deliver(PAYLOAD, KEY)

    name = f"4711.{KEY}.json"
    assert delivery == Delivery(f"outbox:{name}", attempts=1, status_code=None)
    assert [p.name for p in outbox.iterdir()] == [name]
    text = (outbox / name).read_text()
    assert text == dumps(PAYLOAD) + "\n"
    assert json.loads(text)["total_amount"] == "1234.50"


@pytest.mark.parametrize("po_number", ["4711", 'A"B', "C\\", '"po_number":"X"', "注文", ""])
def test_an_outbox_name_takes_the_order_s_own_po_number_from_its_text(tmp_path, po_number):
    """The PO number is read from the order's JSON text without decoding the
    rest: the order's own, whatever its envelope's strings or its lines hold."""
    body = dumps(
        {
            "sender_id": '"po_number":"ENVELOPE"',
            "set_control_number": "\\",
            "po_number": po_number,
            "lines": [{"po_number": "LINE"}],
        }
    )
    delivery = OutboxErp(tmp_path).deliver(body, KEY)
    assert delivery.erp_id == f"outbox:{OutboxErp.file_name(po_number, KEY)}"
    assert (tmp_path / OutboxErp.file_name(po_number, KEY)).read_text() == body + "\n"


def test_outbox_is_idempotent_per_key(tmp_path: Path) -> None:
    """Delivering the same key again returns the first file's id and writes nothing."""
    erp = OutboxErp(tmp_path)
    first = erp.deliver(PAYLOAD, KEY)
    again = erp.deliver({**PAYLOAD, "total_amount": "0"}, KEY)

    assert again == first
    [written] = tmp_path.iterdir()
    assert first.erp_id == f"outbox:{written.name}"
    assert json.loads(written.read_text())["total_amount"] == "1234.50"  # the first payload


def test_outbox_keeps_orders_with_same_po_number_apart(tmp_path: Path) -> None:
    """Two orders sharing a PO number (different keys) get two files; neither is overwritten."""
    erp = OutboxErp(tmp_path)
    a = erp.deliver({"po_number": "../4711", "buyer": "A"}, "a" * 64)
    b = erp.deliver({"po_number": "../4711", "buyer": "B"}, "b" * 64)

    assert a.erp_id != b.erp_id
    files = sorted(tmp_path.iterdir())
    assert [p.name for p in files] == [f"4711.{'a' * 64}.json", f"4711.{'b' * 64}.json"]
    assert [json.loads(p.read_text())["buyer"] for p in files] == ["A", "B"]


def test_an_outbox_name_keeps_a_po_number_in_any_script_and_fits(tmp_path: Path) -> None:
    """A PO number's letters of any script are kept, 64 bytes of them at most:
    64 CJK characters (192 bytes) and a 64-character key still fit a file name."""
    erp = OutboxErp(tmp_path)
    delivery = erp.deliver({"po_number": "注" * 64}, "k" * 64)

    assert delivery.erp_id == f"outbox:{'注' * 21}.{'k' * 64}.json"
    assert OutboxErp.file_name("PO 4711", "k") == "PO_4711.k.json"  # an ASCII name as before


def test_make_erp_picks_the_sink(tmp_path: Path) -> None:
    """An empty [erp] url gives the outbox under [paths]; a URL gives the HTTP client."""
    base = Settings(paths=PathSettings(root=tmp_path), daemon=DaemonSettings(workers=2))
    with make_erp(base) as outbox:
        assert isinstance(outbox, OutboxErp)
        assert outbox.outbox_dir == tmp_path / "outbox"
    with make_erp(base.replace(erp=ErpSettings(url="http://127.0.0.1:9/orders"))) as http:
        assert isinstance(http, HttpErp)


def test_user_info_in_url_is_basic_auth_and_never_shown(httpserver: HTTPServer) -> None:
    """user:password@ in [erp] url goes out as Basic auth; messages show the URL without it."""
    httpserver.expect_request(
        PATH, headers={"Authorization": "Basic ZXJwOnMzY3JldA=="}
    ).respond_with_data("down", status=503)
    url = httpserver.url_for(PATH).replace("http://", "http://erp:s3cret@") + "?tenant=7"
    erp = HttpErp(settings(url, max_attempts=1), sleep=lambda s: None)
    with erp, pytest.raises(ErpUnavailable) as caught:
        erp.deliver(PAYLOAD, KEY)
    assert caught.value.status_code == 503
    assert httpserver.log[0][0].args.get("tenant") == "7"
    assert erp.display_url == httpserver.url_for(PATH)
    assert "s3cret" not in str(caught.value)


def echo_headers(request: Request) -> Response:
    """An ERP debug page: a 422 whose body echoes every request header."""
    lines = "\n".join(f"{name}: {value}" for name, value in request.headers.items())
    return Response(f"Unprocessable order\n\nRequest headers:\n{lines}\n", status=422)


def test_erp_error_echoing_the_token_is_redacted(httpserver: HTTPServer, tmp_path: Path) -> None:
    """An ERP body that echoes the Authorization header keeps its words but loses the token."""
    token_file = tmp_path / "erp.token"
    token_file.write_text("s3cret-T0ken-4711\n")
    token_file.chmod(0o600)
    httpserver.expect_request(PATH).respond_with_handler(echo_headers)
    with http_erp(httpserver, [], token_file=token_file) as erp, pytest.raises(ErpRejected) as info:
        erp.deliver(PAYLOAD, KEY)
    message = str(info.value)
    assert "Unprocessable order" in message and "Authorization: [redacted]" in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    "said, kept",
    [
        ("Authorization: Bearer abc.DEF-123\nHost: erp", "Authorization: [redacted]\nHost: erp"),
        ('{"authorization": "Basic dXNlcjpw"}', '{"authorization": "[redacted]"}'),
        ("<td>Bearer abcdefgh</td>", "<td>Bearer [redacted]</td>"),
        ("retry with token=abc123&user=me", "retry with token=[redacted]&user=me"),
        ("password: hunter2, then", "password: [redacted], then"),
        (
            '{"api_key": "k-1", "client_secret":"x"}',
            '{"api_key": "[redacted]", "client_secret":"[redacted]"}',
        ),
        ("session THE-TOKEN-ITSELF seen", "session [redacted] seen"),
        ("unknown buyer 4711: the token expired", "unknown buyer 4711: the token expired"),
    ],
)
def test_redact_removes_what_looks_like_a_credential(said: str, kept: str) -> None:
    """The configured token anywhere, and any header, scheme or key=value that names a secret."""
    assert redact(said, ["THE-TOKEN-ITSELF"]) == kept


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://erp.example.com/api/orders@v2", "https://***@v2"),
        ("https://key@erp.example.com/orders?sig=x#top", "https://erp.example.com/orders"),
        ("http://u:p%2Fw@erp.example.com:8443/orders", "http://erp.example.com:8443/orders"),
    ],
)
def test_the_erp_url_is_shown_without_user_info_query_or_fragment(url, shown):
    """User info, query and fragment are never shown; with an '@' after the
    host (a path's, or a password's holding a bare '/'), only what follows it."""
    assert HttpErp(ErpSettings(url=url)).display_url == shown


@pytest.mark.parametrize("password", ["2024/s3cretPW", "2024#s3cretPW", "20?24s3cretPW"])
def test_a_password_holding_a_bare_slash_hash_or_question_mark_is_never_shown(password):
    """``user:pass/word@host`` is read as host ``user``, port and a path
    holding the password: the URL as shown hides all before its '@'."""
    shown = HttpErp(ErpSettings(url=f"http://edi:{password}@erp.example.com/orders")).display_url
    assert "s3cretPW" not in shown, shown


@pytest.mark.parametrize(
    "echo",
    ["Zq7a+b/c==x", "Zq7a\\u002Bb/c==x", "Zq7a\\u002bb\\/c==x", "Zq7a%2bb%2Fc%3D%3Dx"],
)
def test_a_secret_is_redacted_however_an_answer_escapes_it(echo):
    """As written, JSON-escaped (PHP's ``\\/``, ASP.NET's ``\\u002B``, mixed)
    or percent-encoded in either case of hex."""
    assert redact(f"no access for {echo}.", ["Zq7a+b/c==x"]) == "no access for [redacted]."
