"""Outsider round 20: round 19's exact names (``files.display_name`` /
``real_name`` / ``recorded_path``), retry under the partner's own name, long
names' reports, ``failed_files`` counting, and the upgrade from the version
before (8b599db); full and separate file systems. About 45 s.

Tried: failed files written by the previous version (``run --once`` with
``PYTHONPATH`` on ``git archive 8b599db``) named ``a\\nb.edi`` (a backslash
and an n), ``x\\\\y.edi`` (two backslashes), ``x\\xfc.edi`` (ASCII), ``m\\xfcller.edi``
(Latin-1) and a 248-byte name with a backslash, then the new version's
``retry --all-failed``, ``status`` and the dashboard's failed page; a failed upload
named at the 255-byte limit and ending ``.error.json`` (its report is
``JOB_ID.error.json``): ``status``'s folders, ``retry --all-failed``;
failed/ and acks/ on a full tmpfs (``run --once``), then room made and a
second run; failed/ on a tmpfs of its own, then ``retry`` and a new run.

Held (by hand, not pinned here): acks/ full: the order posted, the job
parked with its 997 owed, the file kept claimed (``status``: processing 1);
on the next run the 997 and TA1 are written, the file reaches done/ and the
job succeeded. failed/ full: the file stays claimed in processing/ (the move
retried with backoff; ``run --once`` waits on it instead of exiting).
Pinned: two failed 254-byte names of Latin-1 bytes and backslashes (one
ending in a newline; reports ``JOB_ID.error.json``) are counted, retried and
back under their exact names; the 255-byte ``*.error.json`` file is found
by ``retry --all-failed`` through its ``JOB_ID.error.json`` report. The old
version's Latin-1 ``m\\xfcller.edi`` goes back under its own name.

Found (each fixed since; every test here failed before its fix):

* ``test_an_old_versions_failed_file_goes_back_under_its_own_name``: files
  the previous version failed as ``a\\nb.edi`` (backslash, n),
  ``x\\\\y.edi`` (two backslashes) and ``x\\xfc.edi`` (ASCII) are put back
  in the inbox by the new ``retry`` as ``a<LF>b.edi``, ``x\\y.edi`` and
  ``x<0xfc>.edi``: ``_original_name`` reads the old record's unescaped
  file_name with ``real_name`` as if it were escaped (it round-trips), though
  the file in failed/ has the partner's real name. (``jobs list`` likewise
  shows the old ``a\\nb.edi`` as the new version shows a newline.)
* ``test_an_old_versions_long_named_failed_file_can_be_retried``: a 248-byte
  name holding ``\\q`` failed by the previous version (report
  ``JOB_ID.error.json``, its "file" unescaped): the new ``retry
  --all-failed`` says "its report names no file" (``reported_file``:
  ``real_name`` gives None) and leaves it in failed/ for good.
* ``test_the_dashboard_finds_an_old_versions_failed_file``: the previous
  version's record of ``failed/x\\xfc.edi`` (ASCII backslash) is read by
  ``recorded_path`` as the Latin-1 byte 0xfc: the failed page says "not in
  failed/" (no retry button) though the file is there.
* ``test_the_dashboard_finds_a_failed_file_named_like_an_escape``: the same
  with this version alone: an upload named ``x\\xfc.edi`` (ASCII backslash)
  fails, its file_path is recorded as it is (it is UTF-8), and
  ``recorded_path`` reads the text back as an escape (byte 0xfc): the failed
  page says "not in failed/", no retry button. ``recorded_path`` cannot
  tell a path recorded as it is from one recorded escaped.
* ``test_a_retry_from_a_failed_folder_on_another_file_system_records_retry_of``:
  failed/ on a tmpfs of its own (a volume apart, as deployments have): the
  retried file is copied into the inbox with a new inode and mtime, so the
  marker ``retry`` wrote (``processing/.retry/DEV-INO.json`` of the file in
  failed/, size and mtime inside) never matches: the new job's retry_of is
  null and the marker stays behind for good.
* ``test_a_failed_file_at_the_limit_named_like_a_report_is_counted``: a
  failed upload of 255 bytes ending ``.error.json`` (report
  ``JOB_ID.error.json``) is in failed/ but ``status`` says folders.failed 0:
  ``outcomes.failed_files`` counts a ``*.error.json`` name only when
  ``NAME.error.json`` is beside it, never when its report is named after the
  job.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_outsider_round13 import cli

import uids
from helpers import BAD, archived_daemon
from web_site import request, server

OLD = "8b599db"


def plain_config(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "inbox").mkdir(exist_ok=True)
    config = root / "edi-inbox.toml"
    config.write_text(
        f"[paths]\nroot = {json.dumps(str(root))}\n"
        f"[database]\nurl = {json.dumps('sqlite:///' + str(root / 'edi-inbox.db'))}\n"
        '[erp]\nurl = ""\n'
    )
    return config


def drop(inbox: Path, name: bytes, data: bytes = BAD) -> None:
    path = os.path.join(os.fsencode(inbox), name)
    with open(path, "wb") as f:
        f.write(data)
    os.utime(path, (1, 1))  # long finished


def run_once(config: Path, daemon_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EDI_INBOX_CONFIG"}
    if daemon_dir is not None:
        env["PYTHONPATH"] = str(daemon_dir)
    return subprocess.run(
        [sys.executable, "-m", "edi_inbox.cli", "--config", str(config), "run", "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=config.parent,
    )


@pytest.fixture(scope="module")
def old_version(tmp_path_factory) -> Path:
    """The daemon package of the version before round 19's fixes."""
    return archived_daemon(OLD, tmp_path_factory.mktemp("old"))


def listing(folder: Path) -> list[bytes]:
    return sorted(os.listdir(os.fsencode(folder)))


# --- found ------------------------------------------------------------------------


def test_an_old_versions_failed_file_goes_back_under_its_own_name(tmp_path, old_version):
    config = plain_config(tmp_path / "site")
    names = [b"a\\nb.edi", b"x\\\\y.edi", b"x\\xfc.edi", b"m\xfcller.edi"]
    for name in names:
        drop(tmp_path / "site" / "inbox", name)
    old = run_once(config, old_version)
    assert old.returncode == 0, old.stderr[-800:]
    failed = tmp_path / "site" / "failed"
    assert listing(failed) == sorted([*names, *(n + b".error.json" for n in names)])
    retried = cli(config, "retry", "--all-failed", "--json")
    assert [r["retried"] for r in json.loads(retried.stdout)] == [True] * 4, retried.stdout
    assert listing(tmp_path / "site" / "inbox") == sorted(names)


def test_a_failed_file_at_the_limit_named_like_a_report_is_counted(tmp_path):
    config = plain_config(tmp_path / "site")
    name = b"E" * 244 + b".error.json"
    assert len(name) == 255
    drop(tmp_path / "site" / "inbox", name)
    assert run_once(config).returncode == 0
    failed = tmp_path / "site" / "failed"
    assert name in listing(failed) and len(listing(failed)) == 2  # and JOB_ID.error.json
    folders = json.loads(cli(config, "status", "--json").stdout)["folders"]
    assert folders["failed"] == 1, folders


def old_failed(tmp_path: Path, old_version: Path, name: bytes) -> Path:
    """A site where the previous version failed ``name``; its config."""
    config = plain_config(tmp_path / "site")
    drop(tmp_path / "site" / "inbox", name)
    old = run_once(config, old_version)
    assert old.returncode == 0, old.stderr[-800:]
    assert name in listing(tmp_path / "site" / "failed")
    return config


def test_an_old_versions_long_named_failed_file_can_be_retried(tmp_path, old_version):
    name = b"L" * 240 + b"\\q.edi"
    config = old_failed(tmp_path, old_version, name)
    retried = json.loads(cli(config, "retry", "--all-failed", "--json").stdout)
    assert [r["retried"] for r in retried] == [True], retried
    assert listing(tmp_path / "site" / "inbox") == [name]
    assert listing(tmp_path / "site" / "failed") == []


def test_the_dashboard_finds_an_old_versions_failed_file(tmp_path, old_version):
    name = b"x\\xfc.edi"
    config = old_failed(tmp_path, old_version, name)
    with server(config, tmp_path) as (port, _):
        page = request(port, "GET", "/failed").text
    rows = page.split("<tbody>", 1)[-1].split("</tbody>", 1)[0].split("<tr>")[1:]
    assert len(rows) == 1, page[-1500:]
    assert "not in failed/" not in rows[0] and "in failed/" in rows[0], rows[0]


@pytest.fixture
def tiny_mount(tmp_path):
    """Mounts a tmpfs of ``size`` on a folder (root only); unmounted after."""
    mounted: list[Path] = []

    def mount(folder: Path, size: str = "1m") -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True
        )
        mounted.append(folder)
        return folder

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_retry_from_a_failed_folder_on_another_file_system_records_retry_of(tmp_path, tiny_mount):
    site = tmp_path / "site"
    config = plain_config(site)
    with config.open("a") as f:
        f.write("[daemon]\nsettle_seconds = 0.05\n")
    tiny_mount(site / "failed")
    drop(site / "inbox", b"po.edi")
    assert run_once(config).returncode == 0
    (first,) = json.loads(cli(config, "jobs", "list", "--json").stdout)
    assert listing(site / "failed") == [b"po.edi", b"po.edi.error.json"]
    assert cli(config, "retry", first["job_id"]).returncode == 0
    assert listing(site / "inbox") == [b"po.edi"]
    assert run_once(config).returncode == 0
    jobs = json.loads(cli(config, "jobs", "list", "--json").stdout)
    assert len(jobs) == 2 and listing(site / "failed") == [b"po.edi", b"po.edi.error.json"]
    again = next(j for j in jobs if j["job_id"] != first["job_id"])
    assert again["retry_of"] == first["job_id"], again
    assert os.listdir(site / "processing" / ".retry") == []


@pytest.mark.parametrize("cut", ["before-the-name", "before-the-unlink"])
def test_a_retry_across_file_systems_cut_short_is_carried_on_by_the_next(tmp_path, tiny_mount, cut):
    """``retry`` across file systems copies the file into the inbox under a
    hidden name, unlinks it from failed/, then names it. Killed before the
    name, the hidden copy was the only one, never processed, and ``retry``
    said "no longer in failed/"; killed before the unlink, the next retry
    left the hidden copy behind for good. The state such a kill leaves is
    made by hand here (the command is too quick to kill at that point); the
    next ``retry`` carries on: the file back under its name, ``retry_of``
    recorded, nothing hidden left."""
    site = tmp_path / "site"
    config = plain_config(site)
    tiny_mount(site / "failed")
    drop(site / "inbox", b"po.edi")
    assert run_once(config).returncode == 0
    (first,) = json.loads(cli(config, "jobs", "list", "--json").stdout)
    hidden = site / "inbox" / f".{first['job_id']}.retry"
    shutil.copyfile(site / "failed" / "po.edi", hidden)
    if cut == "before-the-name":
        (site / "failed" / "po.edi").unlink()
    result = cli(config, "retry", first["job_id"])
    assert result.returncode == 0, result.stderr
    assert listing(site / "inbox") == [b"po.edi"] and listing(site / "failed") == []
    assert run_once(config).returncode == 0
    jobs = json.loads(cli(config, "jobs", "list", "--json").stdout)
    again = next(j for j in jobs if j["job_id"] != first["job_id"])
    assert again["retry_of"] == first["job_id"], again


def test_a_partner_s_file_named_like_a_retry_copy_is_not_taken_for_one(tmp_path):
    """Only a copy of the daemon's own user counts as an interrupted retry's:
    a partner who plants ``.JOB_ID.retry`` (the id is in its error.json)
    neither has it retried nor loses it."""
    site = tmp_path / "site"
    config = plain_config(site)
    drop(site / "inbox", b"po.edi")
    assert run_once(config).returncode == 0
    (first,) = json.loads(cli(config, "jobs", "list", "--json").stdout)
    (site / "failed" / "po.edi").unlink()
    planted = site / "inbox" / f".{first['job_id']}.retry"
    uids.need_root()
    uids.upload(planted, b"ISA*planted")
    result = cli(config, "retry", first["job_id"])
    assert result.returncode != 0 and "no longer in failed/" in result.stderr, result.stderr
    assert planted.read_bytes() == b"ISA*planted"


def test_the_dashboard_finds_a_failed_file_named_like_an_escape(tmp_path):
    config = plain_config(tmp_path / "site")
    drop(tmp_path / "site" / "inbox", b"x\\xfc.edi")
    assert run_once(config).returncode == 0
    assert b"x\\xfc.edi" in listing(tmp_path / "site" / "failed")
    with server(config, tmp_path) as (port, _):
        page = request(port, "GET", "/failed").text
    rows = page.split("<tbody>", 1)[-1].split("</tbody>", 1)[0].split("<tr>")[1:]
    assert len(rows) == 1, page[-1500:]
    assert "not in failed/" not in rows[0] and "in failed/" in rows[0], rows[0]


# --- held -------------------------------------------------------------------------


def test_a_failed_file_at_the_limit_named_like_a_report_is_retried(tmp_path):
    config = plain_config(tmp_path / "site")
    name = b"E" * 244 + b".error.json"
    drop(tmp_path / "site" / "inbox", name)
    assert run_once(config).returncode == 0
    retried = json.loads(cli(config, "retry", "--all-failed", "--json").stdout)
    assert [r["retried"] for r in retried] == [True], retried
    assert listing(tmp_path / "site" / "inbox") == [name]
    assert listing(tmp_path / "site" / "failed") == []


def test_full_length_names_of_latin_1_backslashes_and_a_newline_go_back_as_they_were(tmp_path):
    config = plain_config(tmp_path / "site")
    names = [b"\xfc\\" * 125 + b".edi\n", b"\xfc\\" * 125 + b".edix"]
    for name in names:
        drop(tmp_path / "site" / "inbox", name)
    assert run_once(config).returncode == 0
    assert len(listing(tmp_path / "site" / "failed")) == 4  # each with a JOB_ID.error.json
    folders = json.loads(cli(config, "status", "--json").stdout)["folders"]
    assert folders["failed"] == 2, folders
    retried = json.loads(cli(config, "retry", "--all-failed", "--json").stdout)
    assert [r["retried"] for r in retried] == [True, True], retried
    assert listing(tmp_path / "site" / "inbox") == sorted(names)
    assert listing(tmp_path / "site" / "failed") == []
