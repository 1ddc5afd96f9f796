"""Other users: partners own the uploads, the daemon runs as a user of its own.

Tests run as root, and root may do what the daemon's user may not (link a
file it does not own under ``fs.protected_hardlinks``, write where it has no
permission). So whatever moves, claims or reads partners' files also runs
here as ``DAEMON``, a member of the partners' ``GROUP``, on files owned by
``PARTNER``: in a forked child (``run_as``) or as the daemon's process
(``as_daemon_command``).
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

PARTNER = 12345  # a partner's uid: owns the uploads
PARTNER2 = 12348  # another partner's uid (a second SFTP account)
DAEMON = 12346  # the daemon's uid
GROUP = 12347  # the partners' group; the daemon's supplementary group


def need_root() -> None:
    if os.geteuid() != 0:
        message = "switching users needs root"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def as_daemon_command(argv: list[str]) -> list[str]:
    """``argv`` run as the daemon's user, in the partners' group (util-linux's setpriv)."""
    return ["setpriv", f"--reuid={DAEMON}", f"--regid={GROUP}", f"--groups={GROUP}", *argv]


def run_as(uid: int, gid: int, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a forked child running as ``uid``/``gid``: its return
    value, or its exception raised again here."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read)
        try:
            os.setgroups([gid])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            outcome: tuple[bool, Any] = (True, fn(*args))
        except BaseException as exc:
            outcome = (False, (exc, traceback.format_exc()))
        try:
            data = pickle.dumps(outcome)
        except Exception as exc:
            data = pickle.dumps((False, (RuntimeError(repr(exc)), "")))
        with os.fdopen(write, "wb") as fh:
            fh.write(data)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    ok, value = pickle.loads(data)
    if ok:
        return value
    exc, trace = value
    raise exc from RuntimeError(f"in the child as uid {uid}:\n{trace}")


def as_daemon(fn: Callable[..., Any], *args: Any) -> Any:
    return run_as(DAEMON, GROUP, fn, *args)


def upload(path: Path, data: bytes, uid: int = PARTNER) -> Path:
    """A partner's upload: owned by ``uid`` (``PARTNER``), mode 0644 (OpenSSH's default)."""
    path.write_bytes(data)
    os.chown(path, uid, uid)
    os.chmod(path, 0o644)
    return path


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """A folder the daemon's user owns, reachable by every user (``tmp_path``
    is under a root-only folder). Its ``inbox/`` is writable by the group."""
    need_root()
    base = Path(tempfile.mkdtemp(prefix="edi-inbox-uids-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        root = base / "root"
        root.mkdir()
        for folder in ("inbox", "processing", "done", "failed"):
            (root / folder).mkdir()
        for path in (root, *root.iterdir()):
            os.chown(path, DAEMON, GROUP)
            os.chmod(path, 0o2770 if path.name == "inbox" else 0o750)
        yield root
    finally:
        shutil.rmtree(base, ignore_errors=True)
