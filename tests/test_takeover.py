"""One daemon per host, and a claim that is no longer ours is never posted or filed:
the host lock, the claim check, a paused host that lost its files to another host."""

from __future__ import annotations

import os
import socket
import stat
import subprocess

import pytest
from test_e2e import Daemon, Erp, daemon_command

from edi_inbox.claims import lock_host
from edi_inbox.errors import AlreadyRunning

from helpers import claimed, http_server, make_po, poll_until


@pytest.fixture
def erp():
    with http_server() as server:
        erp = Erp(server)
        yield erp
        erp.gate.set()


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


# -- the host lock ------------------------------------------------------------------


def test_lock_host_is_held_by_one_daemon_per_host(tmp_path):
    """A second lock for the same host is refused with a clear message; another host's
    is not; closing the descriptor sets the lock free."""
    processing = tmp_path / "processing"
    fd = lock_host(processing, "alpha")
    try:
        with pytest.raises(AlreadyRunning, match="another edi-inbox is running for host alpha"):
            lock_host(processing, "alpha")
        os.close(lock_host(processing, "beta"))
        mode = os.stat(processing / ".alpha.lock").st_mode
        assert stat.S_IMODE(mode) == 0o640
    finally:
        os.close(fd)
    os.close(lock_host(processing, "alpha"))


def test_lock_host_never_follows_a_symlink(tmp_path):
    """A symlink planted where the lock goes is not followed (nothing is created there)."""
    processing = tmp_path / "processing"
    processing.mkdir()
    os.symlink(tmp_path / "elsewhere", processing / ".alpha.lock")
    with pytest.raises(OSError):
        lock_host(processing, "alpha")
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.e2e
def test_a_second_daemon_for_the_host_refuses_to_start_touching_nothing(erp, daemons):
    """While a daemon has a job in flight, a second one for the same host exits 1 with
    "another edi-inbox is running for host X" on stderr, before it touches anything:
    the claimed file stays where it is, the job stays running, nothing more is posted."""
    daemon = daemons(erp.url)
    daemon.start()
    erp.gate.clear()  # the ERP holds the first POST: the file is mid-job
    (daemon.inbox / "po1.edi").write_bytes(make_po(1))
    poll_until(lambda: len(erp.requests) == 1, what="the POST in flight")
    before = (claimed(daemon.processing), daemon.jobs())
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "EDI_INBOX_CONFIG")}
    second = subprocess.run(
        daemon_command(daemon.config), env=env, capture_output=True, timeout=30, check=False
    )
    assert second.returncode == 1
    host = socket.gethostname()
    assert f"another edi-inbox is running for host {host}" in second.stderr.decode()
    assert (claimed(daemon.processing), daemon.jobs()) == before
    assert [job["status"] for job in before[1]] == ["running"]
    erp.gate.set()
    poll_until(lambda: daemon.listing(daemon.done) == ["po1.edi"], what="the first daemon files it")
    assert len(erp.requests) == 1
    assert daemon.terminate(timeout=10) == 0
