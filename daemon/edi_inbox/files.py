"""File moves and writes that never overwrite and never follow links.

``os.rename`` silently replaces an existing target, and ``link()`` +
``unlink()`` fails on files the daemon does not own (partners' uploads, under
``fs.protected_hardlinks=1``) and can leave one file with two names. A move
here is one ``renameat2(RENAME_NOREPLACE)``: the name is either free and the
file moves, or taken and nothing happens (``FileExistsError``), so a name
collision becomes a new name with a suffix instead of lost data.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import re
import stat
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

# \w is str.isalnum() and "_": letters and digits of any script, never a
# separator, space, control, bidi or other format character.
_UNSAFE = re.compile(r"[^\w.-]+")
MAX_NAME_BYTES = 255  # the bytes a file name may have (Linux file systems)
# The bytes of a safe_name: room left for what callers add after it (an
# acknowledgement's control number and kind, a ".N" suffix, ".<uuid>.tmp").
MAX_NAME = 200

_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def safe_name(text: str, *, fallback: str = "file", max_bytes: int = MAX_NAME) -> str:
    """A file name made from untrusted text: letters and digits of any script
    (NFC), ``.``, ``_`` and ``-``, any other run of characters replaced by one
    ``_``; no leading dot, dash or underscore; at most ``max_bytes`` in UTF-8,
    cut at the end (never inside a character). Letters of any script are kept
    so that a name made from ``заказ.edi`` still says which file it was."""
    name = _UNSAFE.sub("_", unicodedata.normalize("NFC", text)).lstrip(".-_")
    # Only letters, digits and "._-" are left (no lone surrogate): plain UTF-8;
    # "ignore" drops the character the cut went through.
    name = name.encode()[:max_bytes].decode(errors="ignore")
    return name or fallback


# Errors that are the daemon's shortage, not the file's: a file met with one
# is looked at again later, never refused for it.
SHORTAGES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


def short_of_resources(exc: OSError) -> bool:
    """``exc`` says this process or the system is short of descriptors or memory."""
    return exc.errno in SHORTAGES


def display_name(name: str | bytes) -> str:
    """A name as it may appear in logs, JSON and records: control characters
    (``\\n``, ``\\x07``, ``\\u0085``), bytes that are not UTF-8 (``\\xfc``) and
    the backslash itself (``\\\\``) escaped, so that a newline in a name cannot
    forge a log line and two names never show alike; ``real_name`` reads one
    back."""
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    if name.isprintable() and "\\" not in name:  # nothing to escape: as it is
        return name
    out = []
    for ch in name:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # surrogateescape: a byte that was not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0x80 <= code < 0xA0:  # a character (\xNN from 0x80 up is a byte)
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPED = re.compile(r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|([nrt\\]))")


def real_name(shown: str) -> str | None:
    """The name ``display_name`` showed as ``shown`` (bytes that are not
    UTF-8 as ``os.fsdecode`` gives them); None when ``shown`` is not a name
    it shows (an escape it never writes: a name recorded by a version that
    left the backslash as it was)."""

    def one(m: re.Match[str]) -> str:
        if m[1]:
            code = int(m[1], 16)
            return chr(code if code < 0x80 else 0xDC00 + code)
        if m[2]:
            return chr(int(m[2], 16))
        return {"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}[m[3]]

    name = _ESCAPED.sub(one, shown)
    return name if display_name(name) == shown else None


def recorded_path(text: str) -> Path:
    """The path a job's record names: one with a byte that is not UTF-8 is
    recorded as ``display_name`` shows it (the database holds text), any
    other as it is; text that reads both ways (``x\\xfc.edi`` written so)
    is the path that exists."""
    real = real_name(text) if "\\" in text else None
    if real is not None and real != text and os.path.lexists(real):
        return Path(real)
    return Path(text)


def begins_with(path: Path, data: bytes, sha256: str) -> bool:
    """Whether the regular file at ``path`` (never through a link, never a
    FIFO's wait) is the one whose SHA-256 is ``sha256`` and its bytes begin
    with ``data``; False if it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return False
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size < len(data):
            return False
        digest, at = hashlib.sha256(), 0
        try:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                if at < len(data) and not data.startswith(chunk[: len(data) - at], at):
                    return False  # another file: known at its first differing byte
                at += len(chunk)
                digest.update(chunk)
        except OSError:
            return False
    return at >= len(data) and digest.hexdigest() == sha256


def fit(head: str, tail: str) -> str:
    """``head + tail``, ``head`` cut short (bytewise, never inside a UTF-8
    character) so that it fits a file name."""
    raw = os.fsencode(head)
    cut = max(0, MAX_NAME_BYTES - len(os.fsencode(tail)))
    if cut < len(raw):  # back to the start of the UTF-8 character it would cut into
        start = cut
        while start > 0 and cut - start < 3 and raw[start] & 0xC0 == 0x80:
            start -= 1
        if raw[start] & 0xC0 == 0xC0:  # a lead byte: else no UTF-8 there (Latin-1 bytes)
            cut = start
    return os.fsdecode(raw[:cut]) + tail


_SUFFIXES = 1_000_000  # .1 to .999999: the names ``candidates`` gives after ``name``


def candidates(name: str, free_in: Path | None = None, *, tail: str = "") -> Iterator[str]:
    """``name``, then ``name`` with ``.1``, ``.2``… before its extension (the
    name cut short where that would not fit a file name), each followed by
    ``tail`` (``.error.json``: a partner's script finds each report by its
    ending). ``free_in``: a folder where a free name is wanted: after
    ``name`` the suffixes start at one free there (``_free_suffix``), not
    at ``.1``."""
    yield name + tail
    start = 1 if free_in is None else _free_suffix(free_in, name, tail)
    for n in range(start, _SUFFIXES):
        yield _suffixed(name, n) + tail


def _free_suffix(directory: Path, name: str, tail: str = "") -> int:
    """A suffix of ``name`` free in ``directory``, in ~2 log2(N) looks where
    ``.1`` to ``.N`` are taken (a partner who names every order ``850.edi``
    leaves a year of them in done/): doubling to a free one, then halving
    back to the first free one after a taken one. Holes below it are left."""

    def taken(n: int) -> bool:
        return os.path.lexists(directory / (_suffixed(name, n) + tail))

    if not taken(1):
        return 1
    low, high = 1, 2  # low taken; high free, or past the last suffix
    while high < _SUFFIXES and taken(high):
        low, high = high, high * 2
    high = min(high, _SUFFIXES)
    while high - low > 1:
        middle = (low + high) // 2
        if taken(middle):
            low = middle
        else:
            high = middle
    return high


def _suffixed(name: str, n: int) -> str:
    stem, _, ext = name.rpartition(".")
    short_ext = len(os.fsencode(ext)) < MAX_NAME_BYTES // 2
    return fit(stem, f".{n}.{ext}") if stem and short_ext else fit(name, f".{n}")


def is_candidate(name: str, original: str) -> bool:
    """Whether ``name`` is one of ``candidates(original)``: ``original``, or
    it with the ``.N`` a taken name got."""
    if name == original:
        return True
    numbers = {int(m[1]) for m in re.finditer(r"\.([1-9][0-9]{0,5})(?=\.|$)", name)}
    return any(_suffixed(original, n) == name for n in numbers)


def free_path(directory: Path, name: str) -> Path:
    """Where ``move_new`` would put ``name`` now: the first candidate not taken.
    Only a forecast: another writer may take it before the move."""
    for candidate in candidates(name, directory):
        target = directory / candidate
        if not os.path.lexists(target):
            return target
    raise FileExistsError(f"no free name for {name} in {directory}")


def rename_new(
    src: str | Path,
    dst: str | Path,
    *,
    src_dir_fd: int | None = None,
    dst_dir_fd: int | None = None,
) -> None:
    """Rename ``src`` to ``dst`` unless ``dst`` exists (then ``FileExistsError``).

    ``renameat2(RENAME_NOREPLACE)`` (Linux 3.15+; ext4, xfs, btrfs, tmpfs…).
    Where the file system lacks it (NFS, some FUSE), ``dst`` is first created
    as an empty placeholder with ``O_EXCL``, then renamed over: the only file
    ever replaced is our own placeholder, in folders only the daemon writes.
    """
    if _renameat2 is not None:
        result = _renameat2(
            _AT_FDCWD if src_dir_fd is None else src_dir_fd,
            os.fsencode(src),
            _AT_FDCWD if dst_dir_fd is None else dst_dir_fd,
            os.fsencode(dst),
            _RENAME_NOREPLACE,
        )
        if result == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(code, os.strerror(code), os.fsdecode(dst))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    os.close(os.open(dst, flags, 0o600, dir_fd=dst_dir_fd))
    try:
        os.rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
    except BaseException:
        os.unlink(dst, dir_fd=dst_dir_fd)
        raise


def move_new(src: Path, directory: Path, name: str | None = None) -> Path:
    """Move ``src`` into ``directory`` under ``name`` (default: its own), adding
    ``.1``, ``.2``… before the extension if that name is taken. Returns the new path.

    One ``rename_new``: the file has one name at every moment. Across file
    systems the bytes are copied into an ``O_EXCL`` file and fsynced before
    the source is unlinked.
    """
    name = name or src.name
    for candidate in candidates(name, directory):
        target = directory / candidate
        try:
            move_to(src, target)
        except FileExistsError:
            continue
        return target
    raise FileExistsError(f"no free name for {name} in {directory}")


def move_to(src: Path, target: Path) -> None:
    """Move ``src`` to ``target`` unless it exists (``FileExistsError``), as
    ``move_new`` moves it to a candidate."""
    try:
        rename_new(src, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_new(src, target)
        os.unlink(src)


def _copy_new(src: Path, target: Path) -> None:
    """Copy ``src`` to ``target`` (never an existing one) through a hidden
    temporary name: ``target`` appears whole or not at all."""
    # Only a regular file is copied: a FIFO would block the open, a device or
    # directory has no bytes to move (a rename would have moved any of them).
    fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    tmp = target.parent / f".{safe_name(target.name)}.{uuid.uuid4().hex}.tmp"
    try:
        if not stat.S_ISREG(os.fstat(fd_in).st_mode):
            raise OSError(errno.EXDEV, f"{display_name(str(src))} is not a regular file "
                          "and cannot be moved to another file system")  # fmt: skip
        fd = _create(tmp, iter(lambda: os.read(fd_in, 1 << 20), b""), fsync=True)
        try:
            rename_new(tmp, target)
        except BaseException:
            tmp.unlink()
            raise
        finally:
            os.close(fd)
    finally:
        os.close(fd_in)


def _create(
    path: Path, chunks: Iterable[bytes | bytearray], *, fsync: bool, mode: int | None = None
) -> int:
    """Write ``chunks`` into a new temporary file at ``path`` (never an
    existing one), moded ``mode`` whatever the umask if given (on the open
    file: never by a name someone could swap); on any error the partial file
    is removed. Returns the file, open and ``flock``-ed: the caller closes it
    once the file has its name (a temporary whose lock is free was left by a
    writer that died, ``remove_temporaries``)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if mode is not None:
            os.fchmod(fd, mode)
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
    return fd


def write_new(
    directory: Path,
    name: str,
    data: bytes | bytearray,
    *,
    fsync: bool = True,
    suffix: bool = True,
    mode: int | None = None,
    check: Callable[[], object] | None = None,
) -> Path:
    """Write ``data`` atomically as a new file in ``directory``; a taken name
    gets a suffix (``suffix=False``: ``FileExistsError``). Readers never see
    a half-written file: the bytes go to a hidden temporary name first and
    are renamed into place when complete. ``mode``: the file's mode whatever
    the umask (a partner's outbox: 0640), set before it has its name.
    ``check()``, if given, just before the rename: if it raises, the file
    never gets its name."""
    tmp = directory / f".{safe_name(name)}.{uuid.uuid4().hex}.tmp"
    fd = _create(tmp, [data], fsync=fsync, mode=mode)
    try:
        if check is not None:
            check()
        if not suffix:
            move_to(tmp, directory / name)
            return directory / name
        return move_new(tmp, directory, name)
    except BaseException:  # moved, the temporary name is gone: no stat to ask
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        os.close(fd)


# The hidden temporary names of ``write_new`` and ``_copy_new``: ".NAME.<uuid>.tmp".
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")


def remove_temporaries(directory: Path) -> list[str]:
    """Remove from ``directory`` the hidden temporaries of writers that died
    mid-write (a SIGKILL, an OOM kill: the name is never renamed into place);
    returns their names. One is a writer's as long as it holds the file's
    lock (another host may be writing into a shared folder now): those, and
    anything that is not a regular file, are left alone. Never follows a link."""
    removed: list[str] = []
    try:
        entries = [e for e in os.scandir(directory) if _TEMPORARY.fullmatch(e.name)]
    except FileNotFoundError:
        return removed
    for entry in entries:
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # renamed into place meanwhile, or a link
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(entry.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                os.unlink(entry.path)
                removed.append(entry.name)
        except OSError:  # its writer holds it (BlockingIOError), or it moved
            continue
        finally:
            os.close(fd)
    return removed


def sync_directory(directory: Path) -> None:
    """fsync ``directory``: the names created or renamed in it so far survive a
    crash of the machine (a file's own fsync covers its bytes, not its name).
    One call after several ``write_new`` covers them all."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def share_clock(fd: int) -> Callable[[], float]:
    """The wall clock of the file system that the folder ``fd`` (one of the
    daemon's own) is on: this host's, plus the offset of the ctime the file
    system stamps on a change made now. A share's server dates every change
    by its own clock, which may be minutes off this host's; a local file
    system's offset is ~0. This host's clock if the folder cannot be touched."""
    before = time.time()
    try:
        os.utime(fd)  # atime and mtime now (the server's, on NFS), and so the ctime
        stamped = os.fstat(fd).st_ctime
    except OSError:
        return time.time
    offset = stamped - (before + time.time()) / 2
    return lambda: time.time() + offset


def mount_of(path: Path) -> str | None:
    """The mount point ``path`` is under, as this process sees its mounts
    (``/proc/self/mountinfo``; None if unreadable). A rename between two
    mounts fails (EXDEV) even on one file system: systemd's
    ``ReadWritePaths=`` bind-mounts each folder it names."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best: str | None = None
    for line in lines:  # later mounts cover earlier ones at the same point
        point = line.split(" ")[4].encode().decode("unicode_escape")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best)):
            best = point
    return best
