"""Round three of an outsider's tries, at the performance changes: the default
concurrency (processes = "auto", workers = 16) as deployed, acknowledgement
control numbers reserved with the running record, and one info line a job.
The real daemon as a subprocess, real uploads owned by a partner's uid, a real
HTTP ERP on 127.0.0.1, real signals, real SQLite. A check that holds is a plain
test; a bug found is a strict xfail naming it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from daemons import Daemon, daemons, erp

import uids
from helpers import BAD, claimed, make_po, poll_until
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
        poll_until(lambda: len(daemon.worker_processes()) == len(os.sched_getaffinity(0)), what="a worker process per CPU")
        good = 24
        for n in range(good):
            uids.upload(daemon.inbox / f"po{n:02d}.edi", make_po(300 + n))
        for n in range(3):
            uids.upload(daemon.inbox / f"bad{n}.edi", BAD.replace(b"0001", f"{n + 1:04d}".encode(), 1))
        uids.upload(daemon.inbox / "junk.edi", b"not X12 at all\n")
        poll_until(
            lambda: len(daemon.listing(daemon.done)) == good
            and len([n for n in daemon.listing(daemon.failed) if not n.endswith(".json")]) == 4,
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
