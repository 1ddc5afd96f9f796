"""The daemon as a real process for end-to-end tests, and a real HTTP ERP on 127.0.0.1.

``Daemon`` writes a config under a root folder, starts ``edi-inbox run`` (as
root, as the daemon's own user, or as another host) and waits for READY=1 on
a real notify socket; ``Erp`` answers POST /orders and records each
Idempotency-Key and PO number. The fixtures ``erp`` and ``daemons`` are
imported by the test modules that use them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import uids
from helpers import http_server, poll_until

SETTLE = 0.3
GRACE = 2.0


class Erp:
    """A real HTTP ERP: records, per request, the Idempotency-Key and the PO number."""

    def __init__(self, server: HTTPServer) -> None:
        self.url = server.url_for("/orders")
        self.requests: list[tuple[str, str]] = []
        self.delay = 0.0
        self.answers: list[int] = []  # statuses for the next requests, in order; then 201
        self.gate = threading.Event()  # cleared: requests wait until it is set again
        self.gate.set()
        self._lock = threading.Lock()
        server.expect_request("/orders", method="POST").respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        key = request.headers.get("Idempotency-Key", "")
        order = json.loads(request.get_data())
        po = order["po_number"]
        with self._lock:
            self.requests.append((key, po))
            status = self.status_for(po)
        self.wait_for(po)
        self.gate.wait(60)
        if self.delay:
            time.sleep(self.delay)
        self.answered(key, order, status)
        if status != 201:
            return Response(json.dumps({"error": "refused"}), status=status)
        body = json.dumps({"id": f"ERP-{key[:12]}"})
        return Response(body, status=201, content_type="application/json")

    # Hooks for an ERP that does more (tests/test_outsider_round7.py's ledger).

    def status_for(self, po: str) -> int:
        """The status to answer a request for ``po`` (under the lock)."""
        return self.answers.pop(0) if self.answers else 201

    def wait_for(self, po: str) -> None:
        """Hold a request for ``po`` before the gate; here, never."""

    def answered(self, key: str, order: dict, status: int) -> None:
        """Called as the answer ``status`` to ``order`` is about to leave."""

    def keys_by_po(self) -> dict[str, set[str]]:
        with self._lock:
            found: dict[str, set[str]] = defaultdict(set)
            for key, po in self.requests:
                found[po].add(key)
            return found

    def posts_per_key(self) -> Counter[str]:
        with self._lock:
            return Counter(key for key, _ in self.requests)


@pytest.fixture
def erp():
    with http_server() as server:
        erp = Erp(server)
        yield erp
        erp.gate.set()  # no request left waiting on a stopped server


def daemon_command(config: Path, *args: str) -> list[str]:
    """``edi-inbox --config FILE ARGS`` (default ``run``) with this interpreter
    (the venv's console script)."""
    return [sys.executable, "-m", "edi_inbox.cli", "--config", str(config), *(args or ["run"])]


class Daemon:
    """The daemon as a subprocess; READY=1 arrives on a real notify socket."""

    def __init__(
        self,
        root: Path,
        erp_url: str,
        *,
        user: bool = False,
        host: str | None = None,
        extra: str = "",
        **daemon: object,
    ) -> None:
        self.root = root
        self.user = user  # run as the daemon's own user (uids.DAEMON), not root
        self.host = host  # another host name (a UTS namespace of its own); None: this one
        values = {
            "workers": 4,
            "processes": 1,  # threads unless a test asks for worker processes
            "settle_seconds": SETTLE,
            "incomplete_grace_seconds": GRACE,
            "rescan_seconds": 1.0,
            "heartbeat_seconds": 0.5,
            "shutdown_timeout_seconds": 5.0,
            "observer": "inotify",
            **daemon,
        }
        lines = [
            "[paths]",
            f"root = {json.dumps(str(root))}",
            "[database]",
            f"url = {json.dumps('sqlite:///' + str(root / 'edi-inbox.db'))}",
            "[erp]",
            f"url = {json.dumps(erp_url)}",
            "max_attempts = 3",
            "backoff_initial_seconds = 0.05",
            "backoff_max_seconds = 0.2",
            "backoff_jitter_seconds = 0.0",
            "[daemon]",
            *(f"{k} = {json.dumps(v)}" for k, v in values.items()),
            "[log]",
            'format = "json"',
        ]
        self.config = root / "edi-inbox.toml"
        self.base_config = "\n".join(lines) + "\n"
        self.config.write_text(self.base_config + extra)
        for folder in ("inbox", "processing", "done", "failed"):
            (root / folder).mkdir(exist_ok=True)
        os.chmod(self.config, 0o644)
        self.inbox, self.done, self.failed = root / "inbox", root / "done", root / "failed"
        self.processing = root / "processing"
        self.log = root / (f"daemon-{host}.log" if host else "daemon.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify_name = f"edi-inbox-e2e-{uuid.uuid4().hex}"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind("\0" + self.notify_name)
        self.notify.settimeout(0.05)
        self.ready = threading.Event()
        self.messages: list[bytes] = []  # every notification, in order
        threading.Thread(target=self._listen, daemon=True).start()

    def _listen(self) -> None:
        """Read every notification, as systemd does (an unread queue fills up)."""
        while True:
            try:
                message = self.notify.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append(message)
            if message.startswith(b"READY=1"):
                self.ready.set()

    def start(self) -> None:
        self.ready.clear()
        env = {**os.environ, "NOTIFY_SOCKET": "@" + self.notify_name}
        env.pop("EDI_INBOX_CONFIG", None)
        with open(self.log, "ab") as log:
            command = daemon_command(self.config)
            if self.user:
                command = uids.as_daemon_command(command)
            if self.host:
                command = as_host(self.host, command)
            self.proc = subprocess.Popen(
                command,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while not self.ready.wait(0.05):
            assert self.proc.poll() is None, f"daemon exited: {self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "no READY=1 within 20 s"

    def sighup(self, extra: str = "") -> None:
        """Rewrite the config (its ``[daemon]`` and the rest as made, then
        ``extra``) and SIGHUP the daemon, without waiting for anything."""
        assert self.proc is not None
        self.config.write_text(self.base_config + extra)
        self.proc.send_signal(signal.SIGHUP)

    def reload(self, extra: str) -> None:
        """``sighup(extra)``, then wait for the daemon's READY=1 and its
        ``daemon_ready`` (or ``reload_refused``) line: the log is written by a
        thread of its own, the line may follow READY=1."""

        def said() -> int:
            return len(self.events("daemon_ready")) + len(self.events("reload_refused"))

        logged = self.log.exists()  # not when the daemon's stdout goes elsewhere
        ready = said() if logged else 0
        self.ready.clear()
        self.sighup(extra)
        deadline = time.monotonic() + 20
        while not self.ready.wait(0.05):
            assert self.proc.poll() is None, f"daemon exited: {self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "no READY=1 within 20 s of SIGHUP"
        if logged:
            poll_until(lambda: said() > ready, what="daemon_ready or reload_refused logged")

    def events(self, name: str) -> list[dict]:
        """The daemon's JSON log lines whose event is ``name``."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("event") == name:
                found.append(doc)
        return found

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the daemon; its worker processes, if any, must die with it."""
        assert self.proc is not None
        children = child_pids(self.proc.pid)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        poll_until(lambda: not any(running(pid) for pid in children), what="children gone")

    def worker_processes(self) -> list[int]:
        """The children running jobs (multiprocessing's resource tracker left out)."""
        assert self.proc is not None
        return [pid for pid in child_pids(self.proc.pid) if b"spawn_main" in cmdline(pid)]

    def terminate(self, timeout: float) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.alive():
            self.kill()
        self.notify.close()

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``edi-inbox --config … ARGS`` as the daemon's user (root unless ``user``)."""
        command = daemon_command(self.config, *args)
        if self.user:
            command = uids.as_daemon_command(command)
        env = {k: v for k, v in os.environ.items() if k != "EDI_INBOX_CONFIG"}
        env["COLUMNS"] = "250"  # tables fit the terminal: room for whole paths
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)

    def jobs(self) -> list[dict]:
        path = self.root / "edi-inbox.db"
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute("SELECT * FROM jobs")]

    def listing(self, folder: Path) -> list[str]:
        return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def as_host(host: str, argv: list[str]) -> list[str]:
    """``argv`` in a UTS namespace of its own named ``host``, in the same process
    (unshare and sh exec): a daemon of another host on this machine."""
    script = 'hostname "$0" && exec "$@"'
    return ["unshare", "--uts", "sh", "-c", script, host, *argv]


def child_pids(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie (a reparented child may wait unreaped in a container)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.fixture
def daemons(tmp_path):
    made: list[Daemon] = []

    def make(erp_url: str, **options: object) -> Daemon:
        daemon = Daemon(tmp_path, erp_url, **options)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.close()
