"""Moves and writes that never overwrite, never give a file two names, and work
on partners' files: run as the daemon's user on files a partner owns."""

from __future__ import annotations

import hashlib
import os
import stat
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.inotify import InotifyObserver

from edi_inbox import files

from helpers import poll_until
from uids import as_daemon, shared_root, upload

__all__ = ["shared_root"]  # the fixture, imported for the tests below


def names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_the_daemon_moves_a_partners_upload_it_cannot_link(shared_root):
    # fs.protected_hardlinks=1: link() of a 0644 file owned by someone else fails.
    src = upload(shared_root / "inbox" / "po.edi", b"ISA*...")
    moved = as_daemon(files.move_new, src, shared_root / "done")
    assert moved == shared_root / "done" / "po.edi"
    assert names(shared_root / "inbox") == []
    st = os.stat(moved)
    assert (st.st_nlink, st.st_uid, moved.read_bytes()) == (1, 12345, b"ISA*...")


def test_a_taken_name_gets_a_suffix_and_the_file_there_is_kept(shared_root):
    done = shared_root / "done"
    (done / "po.edi").write_bytes(b"first")
    (done / "po.1.edi").write_bytes(b"second")
    src = upload(shared_root / "inbox" / "po.edi", b"third")
    moved = as_daemon(files.move_new, src, done)
    assert moved.name == "po.2.edi"
    found = [(done / n).read_bytes() for n in ("po.edi", "po.1.edi", "po.2.edi")]
    assert found == [b"first", b"second", b"third"] and len(names(done)) == 3


def test_a_move_that_cannot_happen_leaves_the_file_where_it_was(shared_root):
    src = upload(shared_root / "inbox" / "po.edi", b"ISA")
    os.chmod(shared_root / "done", 0o550)  # the daemon's user cannot write into done/
    with pytest.raises(PermissionError):
        as_daemon(files.move_new, src, shared_root / "done")
    assert src.read_bytes() == b"ISA" and names(shared_root / "done") == []


@pytest.mark.parametrize("noreplace", [True, False], ids=["renameat2", "placeholder"])
def test_rename_new_never_replaces(tmp_path, monkeypatch, noreplace):
    if not noreplace:  # as on NFS: no RENAME_NOREPLACE, an O_EXCL placeholder instead
        monkeypatch.setattr(files, "_renameat2", None)
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    with pytest.raises(FileExistsError):
        files.rename_new(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "a").read_bytes() == b"a" and (tmp_path / "b").read_bytes() == b"b"
    files.rename_new(tmp_path / "a", tmp_path / "c")
    assert names(tmp_path) == ["b", "c"] and (tmp_path / "c").read_bytes() == b"a"
    with pytest.raises(FileNotFoundError):
        files.rename_new(tmp_path / "a", tmp_path / "d")
    assert names(tmp_path) == ["b", "c"]  # no placeholder left behind


def test_rename_new_by_directory_descriptors(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    (tmp_path / "x" / "f").write_bytes(b"f")
    src_fd = os.open(tmp_path / "x", os.O_RDONLY | os.O_DIRECTORY)
    dst_fd = os.open(tmp_path / "y", os.O_RDONLY | os.O_DIRECTORY)
    try:
        files.rename_new("f", "g", src_dir_fd=src_fd, dst_dir_fd=dst_fd)
    finally:
        os.close(src_fd)
        os.close(dst_fd)
    assert names(tmp_path / "x") == [] and (tmp_path / "y" / "g").read_bytes() == b"f"


def test_across_file_systems_the_bytes_are_copied_once(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system at /dev/shm")
    src = shm / f"edi-inbox-test-{os.getpid()}.edi"
    src.write_bytes(b"ISA")
    try:
        (tmp_path / "po.edi").write_bytes(b"taken")
        moved = files.move_new(src, tmp_path, "po.edi")
    finally:
        src.unlink(missing_ok=True)
    assert moved.name == "po.1.edi" and moved.read_bytes() == b"ISA"
    assert not src.exists() and (tmp_path / "po.edi").read_bytes() == b"taken"


def test_across_file_systems_the_file_appears_whole(tmp_path):
    """A copy to another file system goes through a hidden name: whoever
    watches the folder (a real inotify observer) sees the file's name only
    once its bytes are all there, by a rename, never created empty."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system at /dev/shm")
    src = shm / f"edi-inbox-test-{os.getpid()}.edi"
    src.write_bytes(b"ISA" * 100_000)
    seen: list[tuple[str, str]] = []

    class Seen(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            path = getattr(event, "dest_path", "") or event.src_path
            seen.append((event.event_type, os.path.basename(os.fsdecode(path))))

    observer = InotifyObserver()
    observer.schedule(Seen(), str(tmp_path))
    observer.start()
    try:
        moved = files.move_new(src, tmp_path, "po.edi")
        poll_until(lambda: ("moved", "po.edi") in seen, what="the rename seen")
    finally:
        observer.stop()
        observer.join(10)
        src.unlink(missing_ok=True)
    assert moved.read_bytes() == b"ISA" * 100_000 and names(tmp_path) == ["po.edi"]
    # Its name appears by the rename (then its writer closes it, the lock held
    # till then: files.remove_temporaries), never created, never written to.
    named = [e[0] for e in seen if e[1] == "po.edi"]
    assert named[0] == "moved" and not {"created", "modified"} & set(named), seen


@pytest.mark.parametrize("char", ["a", "é"])
def test_a_name_of_the_longest_length_taken_gets_a_suffix_that_fits(tmp_path, char):
    """A name of 255 bytes (the most a name may have) taken: the suffixed one
    is cut short to 255 bytes, never inside a character, the extension kept."""
    name = char * (251 // len(char.encode())) + ".edi"
    first = files.write_new(tmp_path, name, b"1")
    second = files.write_new(tmp_path, name, b"2")
    assert first.name == name and second.read_bytes() == b"2"
    assert second.name.endswith(".1.edi") and second.name.startswith(char * 10)
    assert 253 <= len(os.fsencode(second.name)) <= 255
    second.name.encode()  # valid UTF-8: cut between characters


def test_write_new_never_replaces_and_leaves_no_temporary_file(tmp_path):
    first = files.write_new(tmp_path, "ack.997", b"one")
    second = files.write_new(tmp_path, "ack.997", b"two")
    assert (first.name, second.name) == ("ack.997", "ack.1.997")
    assert names(tmp_path) == ["ack.1.997", "ack.997"]
    assert first.read_bytes() == b"one" and second.read_bytes() == b"two"


def test_write_new_modes_the_file_whatever_the_umask(tmp_path):
    """``mode`` (a partner's outbox: 0640) holds under a umask that would
    take the group's read away, and the file has it before its name."""
    old = os.umask(0o077)
    try:
        moded = files.write_new(tmp_path, "ack.997", b"one", mode=0o640)
        plain = files.write_new(tmp_path, "ack.999", b"two")
    finally:
        os.umask(old)
    assert stat.S_IMODE(moded.stat().st_mode) == 0o640
    assert stat.S_IMODE(plain.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("заказ.edi", "заказ.edi"),
        (unicodedata.normalize("NFD", "счёт.edi"), "счёт.edi"),  # ё as e + a combining mark
        ("注文 1.edi", "注文_1.edi"),
        ("PO 123/4", "PO_123_4"),
    ],
)
def test_safe_name_keeps_letters_and_digits_of_any_script(text, name):
    """Letters of any script are kept (NFC), so the name still says which file it was."""
    assert files.safe_name(text) == name


def test_safe_name_replaces_separators_controls_and_format_characters():
    """A path separator, NUL, newline, bidi override, zero-width space, space or
    byte that was not UTF-8 becomes ``_``; leading dots go."""
    text = "../a/b\x00c\nd\u202ee\u200bf g\udcff.edi"
    assert files.safe_name(text) == "a_b_c_d_e_f_g_.edi"
    assert files.safe_name("..") == "file" and files.safe_name("\u202e", fallback="x") == "x"


@pytest.mark.parametrize("char", ["a", "я", "注", "𝟘"])
def test_safe_name_is_cut_by_bytes_never_inside_a_character(char):
    """At most ``MAX_NAME`` bytes in UTF-8, the cut between two characters."""
    name = files.safe_name("x" + char * 300 + ".edi")
    assert name == "x" + char * ((files.MAX_NAME - 1) // len(char.encode()))
    assert files.safe_name(char * 300, max_bytes=10) == char * (10 // len(char.encode()))


# A name as os.listdir gives it: text, or bytes that were not UTF-8 (surrogateescape).
NAMES = st.text() | st.binary().map(os.fsdecode)


@given(NAMES, st.integers(min_value=4, max_value=files.MAX_NAME))
def test_safe_name_of_any_text_is_one_safe_path_component(text, max_bytes):
    """Any name gives a name of one path component within ``max_bytes`` of UTF-8:
    letters, digits and ``._-`` only (no separator, control or format
    character), not hidden, and the same again when made safe again."""
    name = files.safe_name(text, max_bytes=max_bytes)
    assert 0 < len(name.encode()) <= max_bytes
    assert all(ch.isalnum() or ch in "._-" for ch in name)
    assert name[0] not in ".-_" and name == unicodedata.normalize("NFC", name)
    assert files.safe_name(name, max_bytes=max_bytes) == name


def test_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    """``remove_temporaries``: a hidden ``.NAME.<uuid>.tmp`` whose lock is free
    (its writer died mid-write) goes; one a writer still holds locked (another
    host writing into a shared folder) stays, as do names of another shape, a
    link and a directory of that shape (never followed)."""
    import fcntl

    dead = tmp_path / f".po.edi.error.json.{'a' * 32}.tmp"
    dead.write_bytes(b'{"error": "cut sho')
    live = tmp_path / f".po.edi.1.997.{'b' * 32}.tmp"
    live.write_bytes(b"ISA*00*")
    held = os.open(live, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep")
    link = tmp_path / f".link.{'c' * 32}.tmp"
    link.symlink_to(target)
    folder = tmp_path / f".dir.{'d' * 32}.tmp"
    folder.mkdir()
    other = tmp_path / ".po.edi.notauuid.tmp"
    other.write_bytes(b"")
    kept = {live.name, target.name, link.name, folder.name, other.name}
    try:
        # A lock belongs to the open file: another open, even in this process, meets it.
        assert files.remove_temporaries(tmp_path) == [dead.name]
    finally:
        os.close(held)
    assert set(names(tmp_path)) == kept
    assert target.read_bytes() == b"keep"
    assert files.remove_temporaries(tmp_path) == [live.name]  # its writer is gone now
    assert files.remove_temporaries(tmp_path / "missing") == []


def test_write_new_holds_its_temporary_locked_until_it_has_its_name(tmp_path, monkeypatch):
    """A sweep while ``write_new`` writes never takes its temporary: the file
    stays locked from its creation to its rename."""
    seen: list[list[str]] = []
    real = files.rename_new

    def rename_new(src, dst, **kwargs):
        seen.append(files.remove_temporaries(tmp_path))  # just before the rename
        return real(src, dst, **kwargs)

    monkeypatch.setattr(files, "rename_new", rename_new)
    files.write_new(tmp_path, "po.edi.997", b"ISA*00*")
    assert seen == [[]]
    assert names(tmp_path) == ["po.edi.997"]


def test_share_clock_is_this_host_s_on_a_local_file_system(tmp_path):
    """A local file system stamps ctimes by this host's clock: the offset
    ``files.share_clock`` finds is a clock tick at most, and touching the
    folder is all it changes."""
    import time

    folder = tmp_path / "host"
    folder.mkdir()
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        clock = files.share_clock(fd)
        assert abs(clock() - time.time()) < 0.05
        assert os.listdir(folder) == []
    finally:
        os.close(fd)


def test_a_name_taken_thousands_of_times_finds_a_free_one_in_a_few_looks(tmp_path, monkeypatch):
    """A partner that names every order ``850.edi`` leaves ``850.1.edi`` …
    ``850.N.edi`` in done/: the next free name costs ~2 log2(N) looks, not N
    (round 21: 0.4 s a job after 40,000). Holes below are left; a name is
    never taken twice."""
    for n in range(1, 5001):
        (tmp_path / f"850.{n}.edi").touch()
    (tmp_path / "850.edi").touch()
    looks = []
    real = os.path.lexists
    monkeypatch.setattr(os.path, "lexists", lambda p: looks.append(p) or real(p))
    assert files.free_path(tmp_path, "850.edi") == tmp_path / "850.5001.edi"
    assert len(looks) <= 2 * 13 + 3, len(looks)
    monkeypatch.undo()
    (tmp_path / "850.77.edi").unlink()  # a hole
    moved = files.move_new(tmp_path / "850.3.edi", tmp_path, "850.edi")
    assert moved.name not in {f"850.{n}.edi" for n in range(1, 5001) if n != 3}
    assert moved.exists() and not (tmp_path / "850.3.edi").exists()
    assert files.free_path(tmp_path, "new.edi") == tmp_path / "new.edi"
    (tmp_path / "new.edi").touch()
    assert files.free_path(tmp_path, "new.edi") == tmp_path / "new.1.edi"


def test_begins_with_reads_only_the_regular_file_it_names(tmp_path: Path) -> None:
    """True only for the regular file with that SHA-256 whose bytes begin
    with ``data``; a link is not followed, a FIFO not waited on."""
    data = b"ISA*00*" + b"x" * 3_000_000
    whole = tmp_path / "whole.edi"
    whole.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    assert files.begins_with(whole, data[:2_500_000], sha)
    assert files.begins_with(whole, data, sha)
    assert not files.begins_with(whole, data + b"y", sha)
    assert not files.begins_with(whole, b"ISA*01*", sha)
    assert not files.begins_with(whole, data[:10], "0" * 64)  # not the file the job read
    (tmp_path / "link.edi").symlink_to(whole)
    assert not files.begins_with(tmp_path / "link.edi", data[:10], sha)
    os.mkfifo(tmp_path / "fifo.edi")
    assert not files.begins_with(tmp_path / "fifo.edi", b"", hashlib.sha256(b"").hexdigest())
    assert not files.begins_with(tmp_path / "gone.edi", b"", sha)
