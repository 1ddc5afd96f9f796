"""Round three of an outsider's tries, at the performance changes: the default
concurrency (processes = "auto", workers = 16) as deployed, acknowledgement
control numbers reserved with the running record, and one info line a job.
The real daemon as a subprocess, real uploads owned by a partner's uid, a real
HTTP ERP on 127.0.0.1, real signals, real SQLite. A check that holds is a plain
test; a bug found is a strict xfail naming it."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import pg_ctl, start_again
from daemons import Daemon, daemons, erp

import uids
from helpers import BAD, claimed, database_locked, make_po, poll_until
from uids import shared_root

pytestmark = pytest.mark.e2e
__all__ = ["daemons", "erp", "shared_root"]  # fixtures

TOKEN = "s3cret-erp-token-round3-Zq9"


def with_defaults(daemon: Daemon, extra: str = "") -> None:
    """Rewrite the daemon's config with nothing in ``[daemon]`` but what the
    test harness needs (none: every concurrency default as shipped)."""
    head, _, tail = daemon.base_config.partition("[daemon]\n")
    rest = tail.split("[log]\n", 1)[1]
    daemon.base_config = head + extra + "[log]\n" + rest
    daemon.config.write_text(daemon.base_config)


def acks(root: Path) -> list[Path]:
    folder = root / "acks"
    if not folder.exists():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def failed_files(daemon: Daemon) -> list[str]:
    """The uploads in failed/, their error reports aside."""
    return [n for n in daemon.listing(daemon.failed) if not n.endswith(".error.json")]


def numbers(ack: Path) -> dict[str, str]:
    """ISA13, and GS06 and ST02 of a 997, of an acknowledgement file."""
    text = ack.read_text(errors="replace")
    sep, term = text[3], text[105]
    found = {}
    for segment in text.split(term):
        fields = segment.strip().split(sep)
        if fields[0] == "ISA":
            found["ISA13"] = fields[13]
        elif fields[0] == "GS":
            found["GS06"] = fields[6]
        elif fields[0] == "ST":
            found["ST02"] = fields[2]
    return found


def assert_distinct(found: list[Path]) -> list[int]:
    """Every acknowledgement has its own ISA13 (and 997s their own GS06/ST02)."""
    isa13 = [numbers(a)["ISA13"] for a in found]
    assert len(set(isa13)) == len(isa13), sorted(isa13)
    nines = [numbers(a) for a in found if a.suffix in (".997", ".999")]
    gs06 = [n["GS06"] for n in nines]
    assert len(set(gs06)) == len(gs06), sorted(gs06)
    st02 = [n["ST02"] for n in nines]
    assert len(set(st02)) == len(st02), sorted(st02)
    return sorted(int(n) for n in isa13)


# -- 1. the defaults as deployed -------------------------------------------------------------


def test_the_defaults_as_deployed(tmp_path, erp):
    """Nothing set in [daemon] (processes = "auto", workers = 16), partners'
    uploads owned by another uid, an ERP token: every
    good file posted once and in done/, the bad ones in failed/, nothing left
    claimed, each acknowledgement its own control numbers, one info line
    (job_finished with moved_to) a job, and the token nowhere in the log."""
    token = tmp_path / "erp-token"
    token.write_text(TOKEN + "\n")
    os.chmod(token, 0o600)
    daemon = Daemon(tmp_path, erp.url)
    try:
        with_defaults(daemon)
        daemon.base_config = daemon.base_config.replace(
            "[erp]\n", f'[erp]\ntoken_file = "{token}"\n', 1
        )
        daemon.config.write_text(daemon.base_config)
        daemon.start()
        poll_until(
            lambda: len(daemon.worker_processes()) == len(os.sched_getaffinity(0)),
            what="a worker process per CPU",
        )
        good = 24
        for n in range(good):
            uids.upload(daemon.inbox / f"po{n:02d}.edi", make_po(300 + n))
        for n in range(3):
            uids.upload(
                daemon.inbox / f"bad{n}.edi", BAD.replace(b"0001", f"{n + 1:04d}".encode(), 1)
            )
        uids.upload(daemon.inbox / "junk.edi", b"not X12 at all\n")
        poll_until(
            lambda: len(daemon.listing(daemon.done)) == good and len(failed_files(daemon)) == 4,
            timeout=60,
            what="every upload filed",
        )
        poll_until(lambda: all(j["status"] != "running" for j in daemon.jobs()))
        assert claimed(daemon.processing) == [] and daemon.listing(daemon.inbox) == []
        posts = erp.posts_per_key()
        assert len(posts) == good and set(posts.values()) == {1}
        assert_distinct(acks(tmp_path))
        jobs = daemon.jobs()
        assert len(jobs) == good + 4
        finished = daemon.events("job_finished")
        assert sorted(e["job_id"] for e in finished) == sorted(j["job_id"] for j in jobs)
        assert all(e.get("moved_to") for e in finished), finished
        assert daemon.events("job_done") == []
        assert daemon.terminate(timeout=15) == 0
        assert TOKEN not in daemon.log.read_text(errors="replace")
    finally:
        daemon.close()


# -- 2. control numbers across SIGKILLs, restarts, reloads and the CLI -----------------------


def isa13s(root: Path, seen: set[str]) -> list[int]:
    """The ISA13 of every acknowledgement not in ``seen`` (added to it)."""
    new = [a for a in acks(root) if a.name not in seen]
    seen.update(a.name for a in new)
    return sorted(int(numbers(a)["ISA13"]) for a in new)


def upload_all(daemon: Daemon, names: dict[str, bytes]) -> None:
    for name, data in names.items():
        uids.upload(daemon.inbox / name, data)


def test_control_numbers_fresh_and_increasing_across_kills_restarts_reloads_and_the_cli(
    tmp_path, erp, daemons
):
    """Worker processes (2) with the default 16 threads: a worker process
    SIGKILLed while the ERP holds its jobs, the daemon restarted, reloaded
    (SIGHUP), stopped, then `edi-inbox process` by hand on a file that fails
    before any ERP call: every 997/TA1 written has its own ISA13 (and 997s
    their own GS06/ST02), each phase's numbers above every earlier phase's, and
    the file rejected by hand gets its rejecting 997."""
    daemon = daemons(erp.url, processes=2, workers=16)
    daemon.start()
    seen: set[str] = set()
    phases: list[list[int]] = []

    erp.gate.clear()
    upload_all(daemon, {f"a{n}.edi": make_po(400 + n) for n in range(6)})
    poll_until(lambda: len(erp.requests) >= 2, what="posts held by the ERP")
    victim = daemon.worker_processes()[0]
    os.kill(victim, 9)
    daemon.proc.wait(20)  # a worker process that dies stops the daemon
    erp.gate.set()
    daemon.start()
    poll_until(lambda: len(daemon.listing(daemon.done)) == 6, timeout=30, what="resumed")
    poll_until(lambda: all(j["status"] != "running" for j in daemon.jobs()))
    phases.append(isa13s(tmp_path, seen))

    daemon.reload("")
    upload_all(daemon, {f"b{n}.edi": make_po(500 + n) for n in range(6)})
    upload_all(daemon, {"bad-b.edi": BAD})
    poll_until(lambda: len(daemon.listing(daemon.done)) == 12, timeout=30, what="after reload")
    poll_until(lambda: (daemon.failed / "bad-b.edi").exists(), what="the bad file failed")
    poll_until(lambda: all(j["status"] != "running" for j in daemon.jobs()))
    phases.append(isa13s(tmp_path, seen))
    assert daemon.terminate(15) == 0

    bad = tmp_path / "by-hand.edi"
    bad.write_bytes(BAD.replace(b"*0004", b"*0007", 1))
    env = {**os.environ}
    env.pop("EDI_INBOX_CONFIG", None)
    command = [sys.executable, "-m", "edi_inbox.cli", "--config", str(daemon.config)]
    done = subprocess.run([*command, "process", str(bad)], env=env, capture_output=True, timeout=60)
    assert done.returncode != 0, done.stdout
    phases.append(isa13s(tmp_path, seen))

    assert phases[0] and phases[1] and phases[2], phases
    assert any(n.startswith("by-hand.edi") and n.endswith(".997") for n in seen), sorted(seen)
    assert_distinct(acks(tmp_path))
    for earlier, later in itertools.pairwise(phases):
        assert max(earlier) < min(later), phases
    posts = erp.posts_per_key()
    assert len(posts) == 12


# -- 3. two hosts, one inbox, one database ------------------------------------------------------


def test_two_hosts_sharing_one_inbox_and_database_never_share_a_control_number(
    tmp_path, erp, daemons, db_url
):
    """Two daemons of two hosts, each with 2 worker processes and 16 threads,
    on one inbox and one database (SQLite, PostgreSQL), 40 files, some bad:
    each posted once, every acknowledgement its own numbers."""
    one = daemons(erp.url, processes=2, workers=16)
    for d in (one,):
        d.base_config = d.base_config.replace(
            f'url = "sqlite:///{tmp_path / "edi-inbox.db"}"', f"url = {json.dumps(db_url)}", 1
        )
        d.config.write_text(d.base_config)
    one.start()
    two = daemons(erp.url, processes=2, workers=16, host="second-host")
    two.base_config = one.base_config
    two.config.write_text(two.base_config)
    two.start()
    names = {f"p{n:02d}.edi": make_po(600 + n) for n in range(36)}
    names |= {f"bad{n}.edi": BAD.replace(b"*0004", f"*{n + 10:04d}".encode(), 1) for n in range(4)}
    upload_all(one, names)
    poll_until(
        lambda: len(one.listing(one.done)) == 36 and len(failed_files(one)) == 4,
        timeout=60,
        what="every file filed",
    )
    poll_until(lambda: claimed(one.processing) == [], what="nothing claimed")
    posts = erp.posts_per_key()
    assert len(posts) == 36 and set(posts.values()) == {1}
    found = acks(tmp_path)
    assert len([a for a in found if a.suffix == ".997"]) == 40
    assert_distinct(found)
    assert one.terminate(15) == 0 and two.terminate(15) == 0


# -- 4. the database away while files fail before the ERP ---------------------------------------


def test_acknowledgements_written_while_the_database_is_locked_have_their_own_numbers(
    tmp_path, erp, daemons
):
    """The default 16 threads; the SQLite file locked by another process while
    8 files that fail before any ERP call arrive at once: whatever
    acknowledgements go out, each has its own ISA13 and GS06, during the
    outage and after it, and every file is filed once the lock is gone."""
    daemon = daemons(erp.url, workers=16)
    daemon.base_config = daemon.base_config.replace(
        "[erp]\n", "busy_timeout_seconds = 0.3\n[erp]\n", 1
    )
    daemon.config.write_text(daemon.base_config)
    daemon.start()
    uids.upload(daemon.inbox / "first.edi", make_po(700))
    poll_until(lambda: daemon.listing(daemon.done) == ["first.edi"], what="the first file done")
    with database_locked(daemon.root / "edi-inbox.db"):
        for n in range(8):
            uids.upload(
                daemon.inbox / f"bad{n}.edi", BAD.replace(b"*0004", f"*{n + 20:04d}".encode(), 1)
            )
        poll_until(
            lambda: daemon.events("intake_paused") or len(acks(tmp_path)) >= 10,
            timeout=20,
            what="intake paused or acknowledgements written",
        )
        during = acks(tmp_path)
    poll_until(
        lambda: len(failed_files(daemon)) == 8,
        timeout=60,
        what="every bad file failed",
    )
    poll_until(lambda: all(j["status"] != "running" for j in daemon.jobs()))
    assert len(during) == 2  # the first file's TA1 and 997: nothing was acknowledged twice
    assert_distinct(acks(tmp_path))
    assert daemon.terminate(15) == 0


def test_a_997_waits_for_the_database_for_its_number(tmp_path):
    """`edi-inbox process` on a file that fails before any ERP call, while
    another process holds the SQLite file locked: its rejecting 997 waits for
    the database's number (none of our own making, which the sequence could
    hand out again) and goes out once the lock is gone; no later file's 997
    carries the same ISA13 (the same partner would get two interchanges
    numbered alike). This was a bug: a clock-based number went out at once."""
    state = tmp_path / "state"
    (state / "inbox").mkdir(parents=True)
    cfg = tmp_path / "edi-inbox.toml"
    cfg.write_text(
        f"[paths]\nroot = {json.dumps(str(state))}\n"
        '[database]\nbusy_timeout_seconds = 0.3\n[erp]\nurl = ""\n'
    )
    files = []
    for n in range(10):
        path = tmp_path / f"b{n}.edi"
        path.write_bytes(BAD.replace(b"*0004", f"*{n + 40:04d}".encode(), 1))
        files.append(path)
    env = {k: v for k, v in os.environ.items() if k != "EDI_INBOX_CONFIG"}
    command = [sys.executable, "-m", "edi_inbox.cli", "--config", str(cfg), "process"]
    done = subprocess.run([*command, str(files[0])], env=env, capture_output=True, timeout=60)
    assert done.returncode == 1, done.stderr  # failed, recorded, its 997 written
    assert len(acks(state)) == 1
    log = tmp_path / "process.log"
    with log.open("wb") as stderr, database_locked(state / "edi-inbox.db"):
        proc = subprocess.Popen([*command, str(files[1])], env=env, stdout=stderr, stderr=stderr)
        try:
            poll_until(lambda: b"record_retry" in log.read_bytes(), what="waiting for the database")
            assert len(acks(state)) == 1  # no 997 without the database's number
        except BaseException:
            proc.kill()
            raise
    assert proc.wait(60) == 1, log.read_text()  # the lock gone: failed, recorded
    assert len(acks(state)) == 2
    later = [str(f) for f in files[2:]]
    done = subprocess.run([*command, *later], env=env, capture_output=True, timeout=60)
    assert done.returncode == 1, done.stderr
    found = acks(state)
    assert len(found) == 10
    assert_distinct(found)


# -- 5. what an operator sees at level info --------------------------------------------------


def test_one_info_line_a_job_for_good_failed_and_retried_moves(tmp_path, erp, daemons):
    """The default processes = "auto" and workers = 16, level info: a good
    file, a failed file and a good file whose move into done/ fails for a while
    (done/ is not a folder) each give exactly one job_finished naming where the
    file goes; the failing move is logged as an error, then one job_done line
    says where it landed; no job_done line for the first two; the ERP token never appears."""
    token = tmp_path / "erp-token"
    token.write_text(TOKEN + "\n")
    os.chmod(token, 0o600)
    daemon = daemons(erp.url)
    with_defaults(daemon)
    daemon.base_config = daemon.base_config.replace(
        "[erp]\n", f'[erp]\ntoken_file = "{token}"\n', 1
    )
    daemon.config.write_text(daemon.base_config)
    daemon.start()
    uids.upload(daemon.inbox / "good.edi", make_po(800))
    uids.upload(daemon.inbox / "bad.edi", BAD)
    poll_until(lambda: daemon.listing(daemon.done) == ["good.edi"], timeout=30, what="good done")
    poll_until(lambda: (daemon.failed / "bad.edi").exists(), what="bad failed")
    aside = tmp_path / "done-aside"
    daemon.done.rename(aside)
    daemon.done.write_bytes(b"not a directory")
    uids.upload(daemon.inbox / "later.edi", make_po(801))
    poll_until(lambda: daemon.events("move_failed"), timeout=30, what="the move failed")
    daemon.done.unlink()
    aside.rename(daemon.done)
    poll_until(lambda: "later.edi" in daemon.listing(daemon.done), timeout=30, what="moved")
    poll_until(lambda: claimed(daemon.processing) == [], what="nothing claimed")
    assert daemon.terminate(15) == 0
    jobs = {j["file_name"]: j for j in daemon.jobs()}
    finished = daemon.events("job_finished")
    by_job = {}
    for event in finished:
        by_job.setdefault(event["job_id"], []).append(event)
    assert sorted(by_job) == sorted(j["job_id"] for j in jobs.values())
    assert all(len(events) == 1 for events in by_job.values()), by_job
    (good,) = by_job[jobs["good.edi"]["job_id"]]
    assert good["moved_to"].endswith("done/good.edi")
    (bad,) = by_job[jobs["bad.edi"]["job_id"]]
    assert bad["moved_to"].endswith("failed/bad.edi")
    done_ids = {e["job_id"] for e in daemon.events("job_done")}
    assert jobs["good.edi"]["job_id"] not in done_ids
    assert jobs["bad.edi"]["job_id"] not in done_ids
    # The move retried: an error line, then one info line saying where it landed.
    (later,) = by_job[jobs["later.edi"]["job_id"]]
    assert later["moved_to"].endswith("done/later.edi")
    assert all(e["job_id"] == later["job_id"] for e in daemon.events("move_failed"))
    (landed,) = [e for e in daemon.events("job_done") if e["job_id"] == later["job_id"]]
    assert landed["level"] == "info" and landed["moved_to"].endswith("done/later.edi")
    assert TOKEN not in daemon.log.read_text(errors="replace")


# -- 6. SIGTERM during a backlog with the default concurrency -------------------------------


def test_sigterm_during_a_backlog_with_the_defaults_loses_nothing(tmp_path, erp, daemons):
    """processes = "auto", workers = 16, a slow ERP that first answers 503 a
    few times, 60 files: a SIGTERM mid-backlog exits 0 within the shutdown
    timeout, leaves nothing claimed (each file in the inbox again or filed),
    and after a restart every order is in done/, posted under one key, and
    accepted once."""
    erp.delay = 0.15
    erp.answers = [503] * 6
    daemon = daemons(erp.url)
    with_defaults(daemon, "[daemon]\nshutdown_timeout_seconds = 5.0\n")
    daemon.start()
    upload_all(daemon, {f"q{n:02d}.edi": make_po(900 + n) for n in range(60)})
    poll_until(lambda: len(erp.requests) >= 20, timeout=30, what="the backlog under way")
    assert daemon.terminate(15) == 0
    assert claimed(daemon.processing) == []
    left = daemon.listing(daemon.inbox)
    filed = daemon.listing(daemon.done) + daemon.listing(daemon.failed)
    assert sorted(left + filed) == [f"q{n:02d}.edi" for n in range(60)]
    assert left, "the SIGTERM came too late to test anything"
    daemon.start()
    poll_until(lambda: len(daemon.listing(daemon.done)) == 60, timeout=60, what="all done")
    poll_until(lambda: all(j["status"] != "running" for j in daemon.jobs()))
    assert daemon.listing(daemon.failed) == [] and claimed(daemon.processing) == []
    keys = erp.keys_by_po()
    assert len(keys) == 60 and all(len(k) == 1 for k in keys.values())
    posts = erp.posts_per_key()
    assert sum(posts.values()) - 6 == 60, posts  # the 503s aside, one POST an order
    assert_distinct(acks(tmp_path))
    assert daemon.terminate(15) == 0


# -- 7. hostile sizes with the defaults ------------------------------------------------------


def many_orders(count: int) -> bytes:
    """One interchange, one group, ``count`` distinct 850s (BEG03 and ST02 apart)."""
    text = make_po(1000).decode("latin-1")
    term = text[105]
    segments = [s for s in text.split(term) if s.strip()]
    start = next(i for i, s in enumerate(segments) if s.startswith("ST*"))
    end = next(i for i, s in enumerate(segments) if s.startswith("SE*"))
    head, body, tail = segments[:start], segments[start + 1 : end], segments[end + 1 :]
    sets = []
    for n in range(count):
        beg = next(s for s in body if s.startswith("BEG*")).split("*")
        beg[3] = f"M{n:08d}"
        inner = ["*".join(beg) if s.startswith("BEG*") else s for s in body]
        sets += [f"ST*850*{n + 1:04d}", *inner, f"SE*{len(inner) + 2}*{n + 1:04d}"]
    tail = [f"GE*{count}*" + s.split("*")[2] if s.startswith("GE*") else s for s in tail]
    return (term.join(head + sets + tail) + term).encode("latin-1")


def test_a_file_of_two_thousand_orders_with_the_defaults(tmp_path, erp, daemons):
    """A file of 2,000 orders under processes = "auto" and workers = 16: each
    order posted once under its own key, the file in done/, one 997 with
    2,000 AK2s, all accepted."""
    daemon = daemons(erp.url)
    with_defaults(daemon)
    daemon.start()
    uids.upload(daemon.inbox / "big.edi", many_orders(2000))
    poll_until(lambda: daemon.listing(daemon.done) == ["big.edi"], timeout=60, what="filed")
    posts = erp.posts_per_key()
    assert len(posts) == 2000 and set(posts.values()) == {1}
    (ack,) = [a for a in acks(tmp_path) if a.suffix == ".997"]
    text = ack.read_text()
    assert text.count("AK2*") == 2000 and "AK9*A*2000*2000*2000" in text
    assert daemon.terminate(15) == 0


def test_a_file_just_over_the_default_max_file_bytes_is_refused_unread(tmp_path, erp, daemons):
    """The default max_file_bytes (64 MiB), a file one byte over it: refused,
    in failed/ with a report saying why, nothing posted, the daemon goes on."""
    daemon = daemons(erp.url)
    with_defaults(daemon)
    daemon.start()
    big = daemon.inbox / "huge.edi"
    with open(big, "wb") as fh:
        fh.write(make_po(1100))
        fh.truncate(64 * 1024 * 1024 + 1)
    os.chown(big, uids.PARTNER, uids.PARTNER)
    report_path = daemon.failed / "huge.edi.error.json"  # written before the file moves
    moved = daemon.failed / "huge.edi"
    poll_until(
        lambda: report_path.exists() and moved.exists(), timeout=30, what="refused, with its report"
    )
    report = report_path.read_text()
    assert "max_file_bytes" in report or "too big" in report or "67108864" in report, report
    assert erp.requests == []
    uids.upload(daemon.inbox / "after.edi", make_po(1101))
    poll_until(lambda: daemon.listing(daemon.done) == ["after.edi"], timeout=30, what="goes on")
    assert daemon.terminate(15) == 0


# -- 8. SIGKILL of the main process with worker processes running ---------------------------


def test_sigkill_of_the_main_process_takes_the_workers_down_and_a_restart_finishes(
    tmp_path, erp, daemons
):
    """The defaults, 12 files, the ERP holding every POST: a SIGKILL of the main
    process takes its worker processes with it; nothing is filed twice, and a
    restart files every file with each order under one key and each
    acknowledgement its own numbers."""
    daemon = daemons(erp.url)
    with_defaults(daemon)
    daemon.start()
    workers = daemon.worker_processes()
    assert len(workers) == len(os.sched_getaffinity(0))
    erp.gate.clear()
    upload_all(daemon, {f"k{n:02d}.edi": make_po(1200 + n) for n in range(12)})
    poll_until(lambda: len(erp.requests) >= 4, what="POSTs held")
    daemon.kill()  # asserts the worker processes died with it
    erp.gate.set()
    daemon.start()
    poll_until(lambda: len(daemon.listing(daemon.done)) == 12, timeout=40, what="all done")
    poll_until(lambda: all(j["status"] != "running" for j in daemon.jobs()))
    assert claimed(daemon.processing) == [] and daemon.listing(daemon.failed) == []
    keys = erp.keys_by_po()
    assert len(keys) == 12 and all(len(k) == 1 for k in keys.values())
    assert max(erp.posts_per_key().values()) <= 2  # a POST cut short is sent again, same key
    assert_distinct(acks(tmp_path))
    assert daemon.terminate(15) == 0


# -- 9. PostgreSQL stopped mid-run with the default concurrency ----------------------------


@pytest.mark.postgres
def test_postgres_stopped_mid_run_with_the_defaults(
    tmp_path, erp, daemons, own_pg_cluster, own_pg_url
):
    """processes = "auto", workers = 16, the test's own PostgreSQL stopped while
    good and bad files go through, then started: every good order posted once
    under one key, every file filed once, nothing claimed, every
    acknowledgement its own ISA13 and GS06."""
    erp.delay = 0.02
    daemon = daemons(erp.url)
    with_defaults(daemon)
    daemon.base_config = daemon.base_config.replace(
        f'url = "sqlite:///{tmp_path / "edi-inbox.db"}"', f"url = {json.dumps(own_pg_url)}", 1
    )
    daemon.config.write_text(daemon.base_config)
    daemon.start()
    names = {f"g{n:02d}.edi": make_po(1300 + n) for n in range(30)}
    names |= {f"x{n}.edi": BAD.replace(b"*0004", f"*{n + 60:04d}".encode(), 1) for n in range(6)}
    first = dict(list(names.items())[:20])
    upload_all(daemon, first)
    poll_until(lambda: len(daemon.listing(daemon.done)) >= 4, timeout=30, what="some done")
    pg_ctl("stop", "-m", "fast", datadir=own_pg_cluster.datadir)
    try:
        upload_all(daemon, {k: v for k, v in names.items() if k not in first})
        poll_until(
            lambda: daemon.events("intake_paused") or not daemon.listing(daemon.inbox),
            timeout=30,
            what="intake paused (or all taken)",
        )
    finally:
        start_again(own_pg_cluster)
    poll_until(
        lambda: len(daemon.listing(daemon.done)) == 30 and len(failed_files(daemon)) == 6,
        timeout=90,
        what="every file filed",
    )
    poll_until(lambda: claimed(daemon.processing) == [], what="nothing claimed")
    keys = erp.keys_by_po()
    assert len(keys) == 30 and all(len(k) == 1 for k in keys.values())
    assert max(erp.posts_per_key().values()) == 1
    assert_distinct(acks(tmp_path))
    assert daemon.terminate(20) == 0


# -- 10. `edi-inbox process` beside a running daemon ----------------------------------------


def test_process_by_hand_beside_a_running_daemon_shares_the_number_sequence(tmp_path, erp, daemons):
    """The daemon (2 worker processes, 16 threads) working through 20 files
    while `edi-inbox process` runs 4 other files by hand on the same SQLite
    database: every acknowledgement of either has its own ISA13/GS06/ST02."""
    erp.delay = 0.05
    daemon = daemons(erp.url, processes=2, workers=16)
    daemon.start()
    upload_all(daemon, {f"d{n:02d}.edi": make_po(1400 + n) for n in range(20)})
    poll_until(lambda: len(erp.requests) >= 2, what="the daemon under way")
    by_hand = []
    for n in range(4):
        path = tmp_path / f"hand{n}.edi"
        path.write_bytes(make_po(1500 + n))
        by_hand.append(str(path))
    env = {k: v for k, v in os.environ.items() if k != "EDI_INBOX_CONFIG"}
    command = [sys.executable, "-m", "edi_inbox.cli", "--config", str(daemon.config), "process"]
    done = subprocess.run([*command, *by_hand], env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    poll_until(lambda: len(daemon.listing(daemon.done)) == 20, timeout=30, what="all done")
    poll_until(lambda: all(j["status"] != "running" for j in daemon.jobs()))
    found = acks(tmp_path)
    assert len([a for a in found if a.name.startswith("hand")]) >= 4
    assert_distinct(found)
    assert len(erp.keys_by_po()) == 24
    assert daemon.terminate(15) == 0


# -- 11. an ERP answering 503 to 16 workers ---------------------------------------------------


def test_an_erp_answering_503_to_sixteen_workers(tmp_path, erp, daemons):
    """The defaults, 16 files, an ERP answering 503 to every try: nothing is
    taken by the ERP, each file goes to failed/ with a report, each gets a
    997 rejecting its set, all with their own numbers, and the daemon goes on
    to file the next upload once the ERP is back."""
    erp.answers = [503] * 16 * 3  # three tries each ([erp] max_attempts = 3)
    daemon = daemons(erp.url)
    with_defaults(daemon)
    daemon.start()
    upload_all(daemon, {f"u{n:02d}.edi": make_po(1600 + n) for n in range(16)})
    poll_until(
        lambda: len([n for n in daemon.listing(daemon.failed) if n.endswith(".error.json")]) == 16,
        timeout=40,
        what="16 failed",
    )
    nines = [a for a in acks(tmp_path) if a.suffix == ".997"]
    assert len(nines) == 16 and all("AK5*R" in a.read_text() for a in nines)
    assert_distinct(acks(tmp_path))
    assert len(erp.requests) == 48 and erp.answers == []
    uids.upload(daemon.inbox / "back.edi", make_po(1700))
    poll_until(lambda: daemon.listing(daemon.done) == ["back.edi"], timeout=30, what="ERP back")
    assert daemon.terminate(15) == 0


def test_the_daemon_acknowledging_while_the_database_is_locked_repeats_no_number(
    tmp_path, erp, daemons
):
    """A big file whose every order is rejected (no ERP call) is claimed; the
    SQLite file is locked by another process before its 997 is numbered, then
    freed; more rejected files follow: no 997 went out while the database was
    locked, the big file got its TA1 and 997 once, and no two acknowledgements share an ISA13.
    This was a bug: a clock-based number went out at once."""
    daemon = daemons(erp.url, workers=16)
    daemon.base_config = daemon.base_config.replace(
        "[erp]\n", "busy_timeout_seconds = 0.3\n[erp]\n", 1
    )
    daemon.config.write_text(daemon.base_config)
    daemon.start()
    uids.upload(daemon.inbox / "first.edi", BAD)
    poll_until(lambda: len(acks(tmp_path)) == 1, what="the first 997")
    big = many_orders(3000).replace(b"PO1**6*EA*", b"PO1**0*EA*")
    uids.upload(daemon.inbox / "big.edi", big)
    poll_until(lambda: claimed(daemon.processing), what="big.edi claimed")
    with database_locked(daemon.root / "edi-inbox.db"):
        # Reading and checking 3,000 orders takes ~20 s on a slow, busy CPU.
        poll_until(lambda: daemon.events("job_parked"), timeout=90, what="big.edi parked")
        assert len(acks(tmp_path)) == 1
    for n in range(8):
        uids.upload(daemon.inbox / f"r{n}.edi", BAD.replace(b"*0004", f"*{n + 80:04d}".encode(), 1))
    poll_until(
        lambda: len([n for n in daemon.listing(daemon.failed) if n.endswith(".error.json")]) == 10,
        timeout=40,
        what="every file failed",
    )
    kinds = [a.suffix for a in acks(tmp_path) if a.name.startswith("big.edi.")]
    assert sorted(kinds) == [".997", ".TA1"]  # once each, after the lock
    assert_distinct(acks(tmp_path))
    assert daemon.terminate(15) == 0
