"""Outsider round 23: today's changes from outside — a partner's inbox shut
by its owner's ``chmod`` (at a start, a reload, while running, with a crash's
claims left in it, under ``run --once``), a reload that keeps watching through
its drain (uploads opened, renamed, replaced and closed during it, 300
uploads during it, a SIGTERM during it), and free-name probing in done/ and
failed/ (holes, 255-byte names, three inboxes filing ``850.edi`` at once).
Real daemons as the daemon's uid, partners as their own uids.

Found (each fixed since; every test here failed before its fix):

* ``test_worker_processes_serve_a_partner_inbox_once_it_opens``: with worker
  processes, a partner's inbox shut at the start is never served once it
  opens: ``procs.serve`` calls ``follow_inbox()`` on the lane before
  ``Worker.do``'s ``ensure_open``; on the unopened lane (``inbox_fd`` -1,
  ``inbox_id`` (0, 0)) it opens the inbox and ``os.dup2``s it onto fd -1:
  EBADF kills that relay thread of the worker process, the unit never
  answers, the upload stays in the inbox for good while the daemon looks
  healthy (and each further unit for that lane kills another relay); a
  reload then waits for ever ("reloading: waiting for 1 job(s) in flight").
* ``test_a_reload_dropping_a_shut_partner_counts_the_daemons_working_directory``:
  a reload that drops (or moves) a partner whose inbox is shut logs
  ``inbox_unwatched`` with the entries of the daemon's *working directory*:
  ``_tell_unwatched`` scans ``claims.inbox_fd``, which is -1 for a shut lane,
  and ``os.scandir(-1)`` lists ``.`` (CPython's "no fd" sentinel).

Held:

* a partner inbox shut at the start with a crash's claim of its own in its
  processing folder: nothing done while shut, resumed once it opens, posted
  again under the same Idempotency-Key, filed once;
* worker processes (root without DAC override, ``setpriv``): a partner
  folder open at the start served, closed while running (its upload
  unreadable), reopened: taken — the control of the first finding;
* two hosts: alpha dies with a claim of acme's while acme's folder is shut
  on beta; beta takes it over once it opens, same key, filed once;
* a partner folder ``chmod 0700`` while the daemon runs (its upload unreadable),
  or ``2750`` (readable, not writable) at the start: its uploads wait and are
  taken within seconds once the mode is back; the other partner is served;
* three reloads each with the folder shut then reopened: each upload taken,
  the daemon's descriptors stable;
* ``run --once`` with a partner's inbox shut exits at once, the others' files
  done, the shut partner's upload left untouched in its inbox;
* the shared inbox unreadable at the start: exit 1 naming it;
* a reload draining a held job: an upload open before it renamed and closed
  during it, one opened and closed during it, one replaced by a rename over
  it, one still open after it (not taken until closed), all taken promptly
  after, none held for the grace; 300 uploads during the drain (1,000 by hand): none
  taken during it, all taken after, none failed; a SIGTERM during the drain
  exits 0 and the next start files everything once, one key per PO;
* free names: done/ holding ``850.edi`` and ``.1``–``.64`` with holes,
  failed/ holding pairs and an orphan report, a 255-byte name taken five
  times: three inboxes filing ``850.edi`` at once, good and bad, each file
  filed under a name of its own, nothing overwritten, each failed file with
  its own report, each record naming the file its job filed; a partner whose
  every 997 is ``850.edi.123456789.997``, its outbox holding ten with holes:
  four more each under a name of its own, none overwritten.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import daemons
import pytest
from daemons import Daemon
from test_partner_inboxes import section, sftp_account

from edi_inbox import files

import uids
from helpers import claimed, make_po, poll_until, sent_by

erp = daemons.erp  # the fixtures this module uses
shared_root = uids.shared_root
pytestmark = pytest.mark.usefixtures("root_only")


@pytest.fixture
def root_only():
    uids.need_root()


def two_partners(shared_root):
    base = shared_root.parent
    acme_in, acme_out = sftp_account(base, "acme", uids.PARTNER)
    globex_in, globex_out = sftp_account(base, "globex", uids.PARTNER2)
    partners = section("acme", "ZZ:ACME", acme_in, acme_out) + section(
        "globex", "ZZ:GLOBEX", globex_in, globex_out
    )
    return acme_in, globex_in, partners


def acme_po(n: int) -> bytes:
    return sent_by(make_po(n), "ZZ:ACME")


def globex_po(n: int) -> bytes:
    return sent_by(make_po(n), "ZZ:GLOBEX")


def keys_per_po(erp) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for key, po in erp.requests:
        found.setdefault(po, set()).add(key)
    return found


# -- 1. a partner's inbox shut ------------------------------------------------------


@pytest.mark.parametrize("change", ["dropped", "moved"])
def test_a_reload_dropping_a_shut_partner_counts_the_daemons_working_directory(
    shared_root, erp, monkeypatch, change
):
    """acme's folder is 0700 (shut, empty); the operator drops acme from the
    configuration (or moves it to a new folder, as one does with a partner
    who keeps shutting its own) and reloads. Nothing is left in acme's old
    inbox, so nothing may be reported left there; today the daemon counts
    the entries of its own working directory (here the site's root: the
    config, inbox/, …)."""
    acme_in, globex_in, partners = two_partners(shared_root)
    monkeypatch.chdir(shared_root)  # the daemon's working directory: not empty
    os.chmod(acme_in, 0o700)
    globex_only = partners[partners.index("[partners.globex]") :]
    if change == "dropped":
        new = globex_only
    else:
        new_in, new_out = sftp_account(shared_root.parent / "moved", "acme", uids.PARTNER)
        new = section("acme", "ZZ:ACME", new_in, new_out) + globex_only
    daemon = Daemon(shared_root, erp.url, user=True, extra=partners)
    try:
        daemon.start()
        assert daemon.events("inbox_shut")[0]["partner"] == "acme"
        daemon.reload(new)
        uids.upload(globex_in / "g.edi", globex_po(2301), uids.PARTNER2)
        poll_until(lambda: "g.edi" in daemon.listing(daemon.done), what="globex served")
        assert os.listdir(acme_in) == []
        said = daemon.events("inbox_unwatched")
        assert not said, f"files reported left in an empty inbox: {said}"
    finally:
        os.chmod(acme_in, 0o2770)
        daemon.close()


def root_without_dac_override(monkeypatch) -> None:
    """Daemons started from here run as root without CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH, in the partners' group (``setpriv``): worker
    processes work (the venv's interpreter is root's) and a partner's
    ``chmod 0700`` shuts its folder for them as for the daemon's own uid."""
    command = daemons.daemon_command

    def without_dac_override(config, *args):
        drop = "-dac_override,-dac_read_search"
        groups = f"0,{uids.GROUP}"
        prefix = ["setpriv", "--groups", groups, f"--bounding-set={drop}", f"--inh-caps={drop}"]
        return [*prefix, *command(config, *args)]

    monkeypatch.setattr(daemons, "daemon_command", without_dac_override)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) not installed")
def test_worker_processes_serve_a_partner_inbox_once_it_opens(tmp_path, erp, monkeypatch):
    """Worker processes (``processes = 2``) cannot run as the daemon's uid on
    this machine (the venv lives under /root), so the daemon runs as root
    without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (``setpriv``), in the
    partners' group: a partner's ``chmod 0700`` shuts its inbox for it as
    for the daemon's own uid. acme's folder is shut at the start, with an
    upload waiting; the shared inbox is served; acme's mode comes back:
    the main process sees ``inbox_back`` and hands acme's upload to a
    worker process, whose relay thread dies on ``os.dup2(fd, -1)`` (the
    traceback in the log), and the upload stays in acme's inbox, the daemon
    looking healthy."""
    root_without_dac_override(monkeypatch)
    acme_in, acme_out = sftp_account(tmp_path, "acme", uids.PARTNER)
    os.chown(acme_out, 0, uids.GROUP)  # the daemon's (root's here) to write acks into
    partners = section("acme", "ZZ:ACME", acme_in, acme_out)
    uids.upload(acme_in / "a.edi", acme_po(2305), uids.PARTNER)
    os.chmod(acme_in, 0o700)
    (tmp_path / "site").mkdir()
    daemon = Daemon(tmp_path / "site", erp.url, extra=partners, processes=2)
    try:
        daemon.start()
        assert daemon.events("inbox_shut")[0]["partner"] == "acme"
        uids.upload(daemon.inbox / "s.edi", make_po(2306))
        poll_until(lambda: "s.edi" in daemon.listing(daemon.done), what="the shared inbox")
        os.chmod(acme_in, 0o2770)
        poll_until(lambda: daemon.events("inbox_back"), timeout=10, what="inbox_back")
        poll_until(lambda: "a.edi" in daemon.listing(daemon.done), timeout=8, what="acme's upload")
        assert daemon.alive()
    finally:
        os.chmod(acme_in, 0o2770)
        daemon.close()


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) not installed")
def test_worker_processes_and_a_folder_closed_while_running(tmp_path, erp, monkeypatch):
    """The control of the test above (the same daemon, root without DAC
    override, worker processes): acme's folder open at the start, served;
    closed while running (its upload unreadable), reopened: the upload taken."""
    root_without_dac_override(monkeypatch)
    acme_in, acme_out = sftp_account(tmp_path, "acme", uids.PARTNER)
    os.chown(acme_out, 0, uids.GROUP)
    partners = section("acme", "ZZ:ACME", acme_in, acme_out)
    (tmp_path / "site").mkdir()
    daemon = Daemon(tmp_path / "site", erp.url, extra=partners, processes=2)
    try:
        daemon.start()
        uids.upload(acme_in / "a.edi", acme_po(2307), uids.PARTNER)
        poll_until(lambda: "a.edi" in daemon.listing(daemon.done), what="served")
        os.chmod(acme_in, 0o700)
        uids.upload(acme_in / "b.edi", acme_po(2308), uids.PARTNER)
        poll_until(lambda: daemon.events("file_unreadable"), what="the upload unreadable")
        os.chmod(acme_in, 0o2770)
        poll_until(lambda: "b.edi" in daemon.listing(daemon.done), timeout=20, what="taken")
        assert daemon.alive() and daemon.listing(daemon.failed) == []
    finally:
        os.chmod(acme_in, 0o2770)
        daemon.close()


def test_a_crashs_claim_in_a_shut_inbox_is_resumed_once_it_opens(shared_root, erp):
    acme_in, globex_in, partners = two_partners(shared_root)
    daemon = Daemon(shared_root, erp.url, user=True, extra=partners)
    try:
        daemon.start()
        erp.gate.clear()
        uids.upload(acme_in / "c1.edi", acme_po(2311), uids.PARTNER)
        poll_until(lambda: len(erp.requests) == 1, what="posted")
        daemon.kill()  # its claim stays in acme's processing folder
        erp.gate.set()
        os.chmod(acme_in, 0o700)
        daemon.start()
        assert daemon.events("inbox_shut")[-1]["partner"] == "acme"
        uids.upload(globex_in / "g.edi", globex_po(2312), uids.PARTNER2)
        poll_until(lambda: "g.edi" in daemon.listing(daemon.done), what="globex served")
        assert "c1.edi" not in daemon.listing(daemon.done)
        os.chmod(acme_in, 0o2770)
        poll_until(lambda: "c1.edi" in daemon.listing(daemon.done), timeout=20, what="resumed")
        assert keys_per_po(erp)["00002311"].__len__() == 1
        assert daemon.listing(daemon.done) == ["c1.edi", "g.edi"] and daemon.alive()
    finally:
        os.chmod(acme_in, 0o2770)
        erp.gate.set()
        daemon.close()


@pytest.mark.parametrize("when", ["while-running", "read-only-at-start"])
def test_a_folder_the_daemon_may_not_claim_from_waits_and_is_taken_once_back(
    shared_root, erp, when
):
    acme_in, globex_in, partners = two_partners(shared_root)
    if when == "read-only-at-start":
        uids.upload(acme_in / "w1.edi", acme_po(2321), uids.PARTNER)
        os.chmod(acme_in, 0o2750)
    daemon = Daemon(shared_root, erp.url, user=True, extra=partners)
    try:
        daemon.start()
        if when == "while-running":
            uids.upload(acme_in / "w1.edi", acme_po(2321), uids.PARTNER)
            poll_until(lambda: "w1.edi" in daemon.listing(daemon.done), what="w1")
            os.chmod(acme_in, 0o700)
        uids.upload(acme_in / "w2.edi", acme_po(2322), uids.PARTNER)
        uids.upload(globex_in / "g.edi", globex_po(2323), uids.PARTNER2)
        poll_until(lambda: "g.edi" in daemon.listing(daemon.done), what="globex served")
        assert "w2.edi" not in daemon.listing(daemon.done)
        os.chmod(acme_in, 0o2770)
        poll_until(
            lambda: {"w1.edi", "w2.edi", "g.edi"} == set(daemon.listing(daemon.done)),
            timeout=20,
            what="acme's uploads",
        )
        assert daemon.listing(daemon.failed) == [] and daemon.alive()
        assert all(len(keys) == 1 for keys in keys_per_po(erp).values())
    finally:
        os.chmod(acme_in, 0o2770)
        daemon.close()


def test_reloads_with_the_folder_shut_then_reopened(shared_root, erp):
    acme_in, _, partners = two_partners(shared_root)
    daemon = Daemon(shared_root, erp.url, user=True, extra=partners)
    try:
        daemon.start()
        pid = daemon.proc.pid
        counts = []
        for i in range(3):
            os.chmod(acme_in, 0o700)
            daemon.reload(partners)
            uids.upload(acme_in / f"c{i}.edi", acme_po(2330 + i), uids.PARTNER)
            os.chmod(acme_in, 0o2770)
            poll_until(
                lambda i=i: f"c{i}.edi" in daemon.listing(daemon.done), timeout=20, what="back"
            )
            counts.append(len(os.listdir(f"/proc/{pid}/fd")))
        assert len(daemon.events("inbox_shut")) == 3 and not daemon.events("reload_refused")
        assert counts[-1] == counts[-2], f"descriptors grow per cycle: {counts}"
        assert daemon.listing(daemon.done) == ["c0.edi", "c1.edi", "c2.edi"]
    finally:
        os.chmod(acme_in, 0o2770)
        daemon.close()


def test_run_once_with_a_shut_partner_exits_and_leaves_its_upload(shared_root, erp):
    acme_in, globex_in, partners = two_partners(shared_root)
    daemon = Daemon(shared_root, erp.url, user=True, extra=partners)
    uids.upload(acme_in / "a.edi", acme_po(2341), uids.PARTNER)
    uids.upload(globex_in / "g.edi", globex_po(2342), uids.PARTNER2)
    os.chmod(acme_in, 0o700)
    try:
        result = daemon.cli("run", "--once", timeout=30)
        assert result.returncode == 0, result.stdout[-2000:]
        assert "inbox_shut" in result.stdout
        assert daemon.listing(daemon.done) == ["g.edi"] and daemon.listing(daemon.failed) == []
        assert os.listdir(acme_in) == ["a.edi"]
        assert (acme_in / "a.edi").read_bytes() == acme_po(2341)
    finally:
        os.chmod(acme_in, 0o2770)


def test_the_shared_inbox_unreadable_at_start_exits_1_naming_it(shared_root, erp):
    inbox = shared_root / "inbox"
    os.chown(inbox, uids.PARTNER, uids.GROUP)
    os.chmod(inbox, 0o700)
    daemon = Daemon(shared_root, erp.url, user=True)
    result = daemon.cli("run", timeout=30)
    assert result.returncode == 1
    assert "cannot_start" in result.stdout and str(inbox) in result.stdout


# -- 2. a reload's drain ------------------------------------------------------------


def put(path, data):
    uids.upload(path, data)


def open_upload(path, data):
    handle = open(path, "wb")  # noqa: SIM115  (held open across the test)
    os.chown(path, uids.PARTNER, uids.PARTNER)
    handle.write(data)
    handle.flush()
    return handle


def test_uploads_opened_renamed_replaced_and_closed_during_a_drain(shared_root, erp):
    daemon = Daemon(shared_root, erp.url, user=True, incomplete_grace_seconds=60.0)
    inbox = daemon.inbox
    handles = []
    try:
        daemon.start()
        erp.gate.clear()
        put(inbox / "slow.edi", make_po(2350))
        poll_until(lambda: len(erp.requests) == 1, what="in flight")
        a = open_upload(inbox / "a.edi", make_po(2351))
        handles.append(a)
        daemon.sighup()
        poll_until(lambda: daemon.events("reloading"), what="reloading")
        os.rename(inbox / "a.edi", inbox / "a2.edi")  # renamed, then closed
        a.close()
        open_upload(inbox / "b.edi", make_po(2352)).close()  # opened and closed
        c = open_upload(inbox / "c.edi", make_po(2353)[:200])
        handles.append(c)
        put(inbox / ".c.part", make_po(2354))
        os.rename(inbox / ".c.part", inbox / "c.edi")  # replaced, the old one closed
        c.close()
        d = open_upload(inbox / "d.edi", make_po(2355)[:300])  # open past the reload
        handles.append(d)
        assert daemon.listing(daemon.done) == []
        erp.gate.set()
        poll_until(lambda: len(daemon.events("daemon_ready")) == 2, what="reloaded")
        poll_until(
            lambda: {"slow.edi", "a2.edi", "b.edi", "c.edi"} <= set(daemon.listing(daemon.done)),
            timeout=15,  # the grace is 60 s: none was held for it
            what="taken after the reload",
        )
        assert "d.edi" not in daemon.listing(daemon.done) + daemon.listing(daemon.failed)
        d.write(make_po(2355)[300:])
        d.close()
        poll_until(lambda: "d.edi" in daemon.listing(daemon.done), timeout=15, what="d")
        assert daemon.listing(daemon.failed) == []
        assert sorted(po for _, po in erp.requests) == [
            f"0000{n}" for n in (2350, 2351, 2352, 2354, 2355)
        ]
    finally:
        for handle in handles:
            handle.close()
        erp.gate.set()
        daemon.close()


def test_hundreds_of_uploads_during_a_drain(shared_root, erp):
    daemon = Daemon(shared_root, erp.url, user=True, incomplete_grace_seconds=60.0, workers=8)
    inbox = daemon.inbox
    n = 300
    try:
        daemon.start()
        erp.gate.clear()
        put(inbox / "slow.edi", make_po(2360))
        poll_until(lambda: len(erp.requests) == 1, what="in flight")
        daemon.sighup()
        poll_until(lambda: daemon.events("reloading"), what="reloading")
        for i in range(n):
            put(inbox / f"m{i:05}.edi", make_po(40000 + i))
        claimed_now = claimed(daemon.processing)
        assert [n for n in claimed_now if not n.startswith("slow.edi.")] == [], claimed_now
        assert len(erp.requests) == 1
        erp.gate.set()
        poll_until(lambda: len(daemon.listing(daemon.done)) == n + 1, timeout=120, what="all")
        assert daemon.listing(daemon.failed) == []
        assert all(len(keys) == 1 for keys in keys_per_po(erp).values())
    finally:
        erp.gate.set()
        daemon.close()


def test_a_sigterm_during_a_drain(shared_root, erp):
    daemon = Daemon(shared_root, erp.url, user=True, shutdown_timeout_seconds=2.0)
    inbox = daemon.inbox
    try:
        daemon.start()
        erp.gate.clear()
        put(inbox / "slow.edi", make_po(2370))
        poll_until(lambda: len(erp.requests) == 1, what="in flight")
        daemon.sighup()
        poll_until(lambda: daemon.events("reloading"), what="reloading")
        put(inbox / "during.edi", make_po(2371))
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(20) == 0
        erp.gate.set()
        daemon.start()
        poll_until(
            lambda: daemon.listing(daemon.done) == ["during.edi", "slow.edi"], what="all filed"
        )
        assert {po: len(k) for po, k in keys_per_po(erp).items()} == {
            "00002370": 1,
            "00002371": 1,
        }
    finally:
        erp.gate.set()
        daemon.close()


# -- 4. free names -------------------------------------------------------------------


def test_three_inboxes_filing_850_edi_at_once_among_holes(shared_root, erp):
    acme_in, globex_in, partners = two_partners(shared_root)
    daemon = Daemon(shared_root, erp.url, user=True, extra=partners, workers=8)
    done, failed = daemon.done, daemon.failed
    old: dict[str, bytes] = {}
    taken = ["850.edi"] + [f"850.{n}.edi" for n in range(1, 65) if n not in (17, 33, 34)]
    for name in taken:
        old[f"done/{name}"] = f"old {name}".encode()
    for name in ["850.edi", "850.1.edi", "850.2.edi", "850.4.edi"]:
        old[f"failed/{name}"] = f"old {name}".encode()
        old[f"failed/{name}.error.json"] = json.dumps({"job_id": f"old-{name}"}).encode()
    old["failed/850.3.edi.error.json"] = b'{"job_id": "orphan"}'
    long = "L" * 251 + ".edi"
    for name in list(files.candidates(long))[:5]:
        old[f"done/{name}"] = f"old {name[-12:]}".encode()
    for rel, data in old.items():
        path = shared_root / rel
        path.write_bytes(data)
        os.chown(path, uids.DAEMON, uids.GROUP)
    try:
        daemon.start()
        uids.upload(daemon.inbox / "850.edi", make_po(2381))
        uids.upload(acme_in / "850.edi", acme_po(2382), uids.PARTNER)
        uids.upload(globex_in / "850.edi", globex_po(2383), uids.PARTNER2)
        uids.upload(daemon.inbox / long, make_po(2384))
        poll_until(lambda: len(daemon.listing(done)) == len(taken) + 5 + 4, what="filed")
        for inbox, uid in (
            (daemon.inbox, uids.PARTNER),
            (acme_in, uids.PARTNER),
            (globex_in, uids.PARTNER2),
        ):
            uids.upload(inbox / "850.edi", b"NOT AN INTERCHANGE\n", uid)
        poll_until(
            lambda: len([n for n in daemon.listing(failed) if n.endswith(".edi")]) == 7,
            what="failed",
        )
        for rel, data in old.items():
            assert (shared_root / rel).read_bytes() == data, f"{rel} overwritten"
        new_done = sorted(set(daemon.listing(done)) - {r[5:] for r in old if r.startswith("done/")})
        assert len(new_done) == 4
        pos = sorted((done / n).read_bytes().split(b"BEG*00*SA*")[1][:8] for n in new_done)
        assert pos == [b"00002381", b"00002382", b"00002383", b"00002384"]
        new_failed = [
            n for n in daemon.listing(failed) if n.endswith(".edi") and f"failed/{n}" not in old
        ]
        assert len(new_failed) == 3
        for name in new_failed:
            report = json.loads((failed / f"{name}.error.json").read_bytes())
            assert report["job_id"] not in ("orphan",) and not report["job_id"].startswith("old-")

        # A job's record names where it foresaw its file going; one that found
        # the name taken meanwhile (another inbox's 850.edi) is corrected once
        # its file has moved: a moment after the file shows in its folder.
        def settled() -> list[dict]:
            jobs = daemon.jobs()
            paths = [j["file_path"] for j in jobs]
            ok = len(jobs) == 7 and len(set(paths)) == 7
            return jobs if ok and all(os.path.exists(p) for p in paths) else []

        jobs = poll_until(settled, what="each record naming its own file")
        assert daemon.alive()
        for job in jobs:  # each record names the file its job filed
            if job["po_number"]:
                filed = Path(job["file_path"]).read_bytes()
                assert f"BEG*00*SA*{job['po_number']}".encode() in filed
    finally:
        daemon.close()


def test_a_dead_hosts_claim_in_a_partner_inbox_shut_on_the_survivor(shared_root, erp):
    """Two hosts share the site (one SQLite file here). alpha dies with a
    claim of acme's in flight while acme's folder is 0700; beta, started
    meanwhile, has acme shut: it takes the claim over once the folder opens,
    posted again under the same key, filed once."""
    acme_in, globex_in, partners = two_partners(shared_root)
    alpha = Daemon(shared_root, erp.url, user=True, host="alpha", extra=partners)
    beta = Daemon(shared_root, erp.url, user=True, host="beta", extra=partners)
    try:
        alpha.start()
        erp.gate.clear()
        uids.upload(acme_in / "a1.edi", acme_po(2395), uids.PARTNER)
        poll_until(lambda: len(erp.requests) == 1, what="alpha posts")
        os.chmod(acme_in, 0o700)
        beta.start()
        assert beta.events("inbox_shut")[0]["partner"] == "acme"
        alpha.kill()
        erp.gate.set()
        uids.upload(globex_in / "g.edi", globex_po(2396), uids.PARTNER2)
        poll_until(lambda: "g.edi" in beta.listing(beta.done), what="beta serves globex")
        assert "a1.edi" not in beta.listing(beta.done)
        os.chmod(acme_in, 0o2770)
        poll_until(lambda: "a1.edi" in beta.listing(beta.done), timeout=25, what="taken over")
        assert beta.listing(beta.done) == ["a1.edi", "g.edi"]
        assert {po: len(k) for po, k in keys_per_po(erp).items()} == {"00002395": 1, "00002396": 1}
        assert beta.alive()
    finally:
        os.chmod(acme_in, 0o2770)
        erp.gate.set()
        alpha.close()
        beta.close()


def test_acks_for_a_partner_who_always_sends_850_edi_among_holes(shared_root, erp):
    """acme names every order 850.edi and every group 123456789, so every
    997 is ``850.edi.123456789.997``: its outbox already holds ten of them
    with holes (fetched and removed). Four more orders: each 997 under a
    name of its own, the old ones untouched, each job's record naming its
    own acknowledgements."""
    acme_in, _, partners = two_partners(shared_root)
    outbox = acme_in.parent / "out"
    old = {}
    for name in list(files.candidates("850.edi.123456789.997"))[:12]:
        if name.endswith((".3.997", ".7.997")):
            continue  # the partner fetched and removed these
        old[name] = f"old {name}".encode()
        (outbox / name).write_bytes(old[name])
        os.chown(outbox / name, uids.DAEMON, uids.GROUP)
    daemon = Daemon(shared_root, erp.url, user=True, extra=partners)
    try:
        daemon.start()
        for i in range(4):
            uids.upload(acme_in / "850.edi", acme_po(2420 + i), uids.PARTNER)
            poll_until(lambda i=i: len(daemon.listing(daemon.done)) == i + 1, what=f"order {i}")
        for name, data in old.items():
            assert (outbox / name).read_bytes() == data, f"{name} overwritten"
        acks = [name for job in daemon.jobs() for name in json.loads(job["acks"])]
        nines = [n for n in acks if n.endswith(".997")]
        assert len(nines) == 4 and len(set(acks)) == len(acks), acks
        assert all((outbox / n).exists() and n not in old for n in acks), acks
    finally:
        daemon.close()
