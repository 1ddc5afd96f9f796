"""File moves and writes that never overwrite and never follow links.

``os.rename`` silently replaces an existing target; everything here uses
``link()`` + ``unlink()`` (or ``O_EXCL``) so a name collision becomes a new
name with a suffix instead of lost data.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import uuid
from collections.abc import Iterable
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 200


def safe_name(text: str, *, fallback: str = "file") -> str:
    """A file name made from untrusted text: ``[A-Za-z0-9._-]`` only, no
    leading dot or dash, at most ``MAX_NAME`` characters."""
    name = _UNSAFE.sub("_", text).lstrip(".-_")[:MAX_NAME]
    return name or fallback


def display_name(name: str | bytes) -> str:
    """A name as it may appear in logs and JSON: control characters and
    undecodable bytes escaped (a newline in a name cannot forge a log line)."""
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    if name.isprintable():  # no control character, no escaped byte: as it is
        return name
    out = []
    for ch in name:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: a byte that was not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0:
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def _candidates(name: str):
    yield name
    stem, dot, ext = name.rpartition(".")
    if not stem:  # no dot, or only a leading one
        stem, dot, ext = name, "", ""
    for n in range(1, 1_000_000):
        yield f"{stem}.{n}{dot}{ext}" if dot else f"{name}.{n}"


def free_path(directory: Path, name: str) -> Path:
    """Where ``move_new`` would put ``name`` now: the first candidate not taken.
    Only a forecast: another writer may take it before the move."""
    for candidate in _candidates(name):
        target = directory / candidate
        if not os.path.lexists(target):
            return target
    raise FileExistsError(f"no free name for {name} in {directory}")


def move_new(src: Path, directory: Path, name: str | None = None) -> Path:
    """Move ``src`` into ``directory`` under ``name`` (default: its own), adding
    ``.1``, ``.2``… before the extension if that name is taken. Returns the new path.

    ``link()`` fails if the target exists, so nothing is ever replaced; the
    source is unlinked only once the link stands. Across file systems the
    bytes are copied into an ``O_EXCL`` file and fsynced first.
    """
    name = name or src.name
    for candidate in _candidates(name):
        target = directory / candidate
        try:
            os.link(src, target, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _copy_new(src, target)
        os.unlink(src)
        return target
    raise FileExistsError(f"no free name for {name} in {directory}")


def _copy_new(src: Path, target: Path) -> None:
    # Only a regular file is copied: a FIFO would block the open, a device or
    # directory has no bytes to move (link() would have moved any of them).
    fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd_in).st_mode):
            raise OSError(errno.EXDEV, f"{display_name(str(src))} is not a regular file "
                          "and cannot be moved to another file system")  # fmt: skip
        _create(target, iter(lambda: os.read(fd_in, 1 << 20), b""), fsync=True)
    finally:
        os.close(fd_in)


def _create(path: Path, chunks: Iterable[bytes], *, fsync: bool) -> None:
    """Write ``chunks`` into a new file at ``path`` (never an existing one);
    on any error the partial file is removed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)


def write_new(directory: Path, name: str, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` atomically as a new file in ``directory``; a taken name
    gets a suffix. Readers never see a half-written file: the bytes go to a
    hidden temporary name first and are linked into place when complete."""
    tmp = directory / f".{safe_name(name)}.{uuid.uuid4().hex}.tmp"
    _create(tmp, [data], fsync=fsync)
    try:
        return move_new(tmp, directory, name)
    finally:
        if tmp.exists():
            tmp.unlink()
