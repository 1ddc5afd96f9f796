"""Helpers the daemon tests share: sample 850s, waiting on a condition, a real HTTP
server for the ERP, claimed files."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from edi_inbox import store
from edi_inbox.config import Settings
from edi_inbox.render import renumbered

CORPUS = Path(__file__).parent / "data" / "corpus"
REPO = Path(__file__).resolve().parents[1]  # the checkout


def archived_daemon(commit: str, where: Path) -> Path:
    """``daemon/`` of ``commit`` (``git archive`` of this checkout) under
    ``where``, to run a previous version against today's data; the test is
    skipped when the commit is not in the checkout's history (a shallow clone)."""
    result = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "daemon"], capture_output=True, timeout=30
    )
    if result.returncode != 0:
        pytest.skip(f"{commit} not available: {result.stderr[:200]!r}")
    with tarfile.open(fileobj=BytesIO(result.stdout)) as tar:
        tar.extractall(where, filter="data")
    return where / "daemon"


GOOD = (CORPUS / "botsplugins__850-004010-01.x12").read_bytes()
# CTT01 disagrees (a warning by default) and a line orders 0 (an error): fails.
BAD = (
    (CORPUS / "botsplugins__850-004010-04.x12")
    .read_bytes()
    .replace(b"PO1**10*CA*12.5*", b"PO1**0*CA*12.5*", 1)
)


def make_po(n: int, source: bytes = GOOD) -> bytes:
    """A distinct good 850: ISA13/IEA02 and BEG03 replaced, widths kept."""
    return renumbered(source, n)


def poll_until(condition, timeout: float = 15.0, interval: float = 0.01, what: str = ""):
    """Wait until ``condition()`` is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or condition}")
        time.sleep(interval)


@contextlib.contextmanager
def http_server() -> Iterator[HTTPServer]:
    """A real threaded HTTP server on 127.0.0.1 (a free port), stopped afterwards."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    try:
        yield server
    finally:
        server.clear()
        if server.is_running():
            server.stop()


def claimed(processing: Path) -> list[str]:
    """The claimed files in ``processing/``: in the host folders and the flat
    layout, hidden names (``.retry/``) aside."""
    found = []
    for name in os.listdir(processing):
        if name.startswith("."):
            continue
        path = processing / name
        if path.is_dir() and not path.is_symlink():
            found += [n for n in os.listdir(path) if not n.startswith(".")]
        else:
            found.append(name)
    return sorted(found)


def sent_by(data: bytes, sender: str, group_sender: str | None = None) -> bytes:
    """``data`` (one interchange) as sent by ISA05:ISA06 ``sender`` (and GS02)."""
    text = data.decode("latin-1")
    sep, term = text[3], text[105]
    isa = text[:105].split(sep)
    isa[5], isa[6] = sender.split(":")[0], sender.split(":")[1].ljust(15)
    text = sep.join(isa) + text[105:]
    if group_sender is not None:
        start = text.index(f"GS{sep}")
        end = text.index(term, start)
        gs = text[start:end].split(sep)
        gs[2] = group_sender
        text = text[:start] + sep.join(gs) + text[end:]
    return text.encode("latin-1")


def write_config(tmp_path: Path, partners: str, erp_url: str = "", erp: str = "") -> Path:
    """A config under ``tmp_path`` (root ``state/``, one process, quick to settle)
    with ``partners`` (TOML) and ``[erp] url`` (plus the ``erp`` lines)."""
    path = tmp_path / "edi-inbox.toml"
    path.write_text(
        f"[paths]\nroot = {json.dumps(str(tmp_path / 'state'))}\n"
        f"[erp]\nurl = {json.dumps(erp_url)}\n{erp}"
        "[daemon]\nsettle_seconds = 0.05\nprocesses = 1\n" + partners
    )
    return path


@contextlib.contextmanager
def opened(settings: Settings) -> Iterator[Any]:
    """The settings' database, initialised, closed afterwards."""
    db = store.open_database(settings.database_url, settings)
    store.init(db)
    try:
        yield db
    finally:
        store.close_database(db)


@contextlib.contextmanager
def database_locked(path: Path) -> Iterator[None]:
    """Another process's exclusive transaction on the SQLite file: every write
    of the daemon gets SQLITE_BUSY (the database unavailable)."""
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        conn.close()


def script_json(daemon: Path, script: str, payload: Any, *, timeout: float = 60) -> Any:
    """``script`` run by a fresh interpreter on ``daemon``'s code (a checkout's
    ``daemon/``, or an archived version's), ``payload`` as JSON on its stdin;
    what it prints, read as JSON."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(daemon), str(REPO / "tests")]))
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(REPO / "tests"),
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
