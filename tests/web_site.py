"""A real ``edi-inbox serve`` for the web tests: its records made by the real
pipeline (``process``, and ``run --once`` for a file in failed/ and a
heartbeat), on SQLite or on a private PostgreSQL schema, the server in a
subprocess on a free port of 127.0.0.1. Two trading partners are configured:
``bolt`` (the sender of ``make_po``'s files, the hostile PO among them) and
``acme`` (with its own outbox: a good file and a failed one whose file name
is markup); the corpus files come from senders no partner claims."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edi_inbox import config, store
from edi_inbox.cli import main

from helpers import BAD, CORPUS, make_po, poll_until, sent_by

TOKEN = "s3cret-token-for-tests"
HOSTILE_PO = "<svg onload=pwned=1>"  # runs if unescaped; BEG03 holds 22 characters
NAMED = CORPUS / "ediengine__850.OK.edi"  # PO 08292233294, total 13045.94
HOSTILE_NAME = "<img src=x onerror=pwned=2>.edi"  # a file name the partner chose
PARTNERS = ("acme", "bolt")
MAX_FILE_BYTES = 200_000
MAX_BYTES_IN_FLIGHT = 150_000


def with_po_number(data: bytes, number: str) -> bytes:
    """``data`` with its first PO number (BEG03) replaced by ``number``."""
    return re.sub(rb"(BEG\*00\*SA\*)[^*]*", lambda m: m[1] + number.encode(), data, count=1)


def hostile_po_file() -> bytes:
    """A good 850 whose PO number (BEG03) is markup that runs a script."""
    return with_po_number(make_po(901), HOSTILE_PO)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    *,
    chunked: bool = False,
) -> Answer:
    """One request to the server on 127.0.0.1:``port``, on a connection of its own."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = conn.getresponse()
        return Answer(response.status, dict(response.headers.items()), response.read())
    finally:
        conn.close()


@dataclass
class Site:
    """A running server, its configuration and the jobs made for it."""

    root: Path
    env: dict[str, str]
    port: int
    process: subprocess.Popen[bytes]
    jobs: dict[str, str]  # what -> job id
    kind: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        chunked: bool = False,
    ) -> Answer:
        return request(self.port, method, path, body, headers, chunked=chunked)

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def cli_json(self, *args: str) -> Any:
        result = CliRunner().invoke(main, [*args, "--json"], env=self.env)
        assert result.exit_code in (0, 3), result.output
        return json.loads(result.stdout)

    def cli(self, *args: str) -> Any:
        return CliRunner().invoke(main, list(args), env=self.env)

    def beat(self, host: str, counters: dict[str, int], age_seconds: float = 0.0) -> None:
        """A heartbeat as host's daemon writes it (``store.heartbeat``), this old."""
        settings = config.load(self.env["EDI_INBOX_CONFIG"], {})
        db = store.open_database(settings.database_url, settings)
        try:
            now = datetime.now(UTC) - timedelta(seconds=age_seconds)
            store.heartbeat(
                db,
                f"{host}:4242:test",
                host=host,
                pid=4242,
                version="0.1.0",
                started_at=now - timedelta(hours=1),
                counters=counters,
                now=now,
            )
        finally:
            store.close_database(db)


def write_config(root: Path, db_url: str, *, token: bool = True, partners: bool = True) -> Path:
    state = root / "state"
    lines = [
        "[paths]",
        f'root = "{state}"',
        "[database]",
        f"url = {json.dumps(db_url)}",
        "[daemon]",
        "processes = 1",
        "settle_seconds = 0.1",
        "rescan_seconds = 1.0",
        "heartbeat_seconds = 0.5",
        f"max_file_bytes = {MAX_FILE_BYTES}",
        f"max_bytes_in_flight = {MAX_BYTES_IN_FLIGHT}",
        "[log]",
        'format = "json"',
    ]
    if partners:
        lines += [
            "[partners]",
            'unknown = "accept"',
            "[partners.acme]",
            'ids = ["ZZ:ACME"]',
            f"outbox = {json.dumps(str(root / 'acme-out'))}",
            "[partners.bolt]",
            'ids = ["08:AAAAAAAAAA"]',
        ]
    lines.append("[http]")
    if token:
        token_file = root / "http-token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        lines.append(f'token_file = "{token_file}"')
    config = root / ("edi-inbox.toml" if token else "no-token.toml")
    config.write_text("\n".join(lines) + "\n")
    return config


def make_records(env: dict[str, str], state: Path) -> dict[str, str]:
    """Jobs made as an operator makes them: ``process`` and the daemon's ``run --once``."""
    runner = CliRunner()
    jobs: dict[str, str] = {}
    for what, path in (("named", NAMED), ("nonedi", CORPUS / "ediengine__NonEdi.edi")):
        result = runner.invoke(main, ["process", "--json", str(path)], env=env)
        jobs[what] = json.loads(result.stdout)["job_id"]
    zero = make_po(904).replace(b"PO1**6*EA*12", b"PO1**0*EA*12")  # quantity 0: fails
    for what, name, data in (
        ("hostile", "hostile.edi", hostile_po_file()),
        ("good", "good.edi", make_po(902)),
        ("acme", "acme.edi", sent_by(make_po(903), "ZZ:ACME")),
        ("acme_failed", HOSTILE_NAME, sent_by(zero, "ZZ:ACME")),
    ):
        path = state.parent / name
        path.write_bytes(data)
        result = runner.invoke(main, ["process", "--json", str(path)], env=env)
        jobs[what] = json.loads(result.stdout)["job_id"]
    # A file the daemon failed: in failed/ with its error.json, ready for a retry.
    inbox = state / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "bad-po.edi").write_bytes(BAD)
    result = runner.invoke(main, ["run", "--once"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads((state / "failed" / "bad-po.edi.error.json").read_text())
    jobs["failed"] = report["job_id"]
    return jobs


@contextlib.contextmanager
def server(config: Path, root: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``edi-inbox serve`` in a subprocess, up once /healthz answers 200."""
    port = free_port()
    env = {**os.environ, "EDI_INBOX_CONFIG": str(config)}
    log = open(root / f"serve-{port}.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "edi_inbox.cli", "serve", "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError((root / f"serve-{port}.log").read_text())
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    try:
        poll_until(up, timeout=60, interval=0.05, what="edi-inbox serve listening")
        yield port, process
    finally:
        stop(process)
        log.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not ended within 20 s."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def site(kind: str, root: Path) -> Iterator[Site]:
    """A served site on ``kind`` (sqlite or postgresql, in a private schema)."""
    from conftest import pg_base_url, private_schema

    with contextlib.ExitStack() as stack:
        if kind == "postgresql":
            db_url = stack.enter_context(private_schema(pg_base_url()))
        else:
            db_url = f"sqlite:///{root / 'edi-inbox.db'}"
        config = write_config(root, db_url)
        env = {"EDI_INBOX_CONFIG": str(config)}
        jobs = make_records(env, root / "state")
        with server(config, root) as (port, process):
            yield Site(root, env, port, process, jobs, kind)


SITE_KINDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
