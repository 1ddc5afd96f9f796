"""Partner inboxes and reload, tried by an outsider: the real daemon as a
subprocess (as its own user where it matters), real uploads owned by the
partners' uids, a real HTTP ERP on 127.0.0.1, real signals. A check that
holds is a plain test; each bug found (first a strict xfail) is fixed and its test passes."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from daemons import Daemon, Erp, daemons, erp

from edi_inbox import admin, config, queries, service
from edi_inbox.errors import ConfigError

import uids
from helpers import BAD, claimed, http_server, make_po, opened, poll_until, sent_by, write_config
from uids import shared_root

pytestmark = pytest.mark.e2e
__all__ = ["daemons", "erp", "shared_root"]  # fixtures


# -- helpers --------------------------------------------------------------------------------------


def sftp_account(base: Path, name: str, uid: int) -> Path:
    """A partner's upload folder: its account writes, the daemon renames out of
    it through the partners' group (as README's onboarding makes it)."""
    inbox = base / "sftp" / name / "in"
    inbox.mkdir(parents=True)
    os.chown(inbox, uid, uids.GROUP)
    os.chmod(inbox, 0o2770)
    return inbox


def section(name: str, sender: str, inbox: Path | None = None, **more: object) -> str:
    lines = [f"[partners.{name}]", f"ids = [{json.dumps(sender)}]"]
    if inbox is not None:
        lines.append(f"inbox = {json.dumps(str(inbox))}")
    lines += [f"{key} = {json.dumps(value)}" for key, value in more.items()]
    return "\n".join(lines) + "\n"


def exited_or_ready(daemon: Daemon) -> bool:
    assert daemon.proc is not None
    return daemon.proc.poll() is not None or daemon.ready.is_set()


# -- 1. reload: signals while a reload drains -----------------------------------------------------


def hold_a_job_and_reload(daemon: Daemon, erp, extra: str) -> None:
    """A job waits at the ERP; SIGHUP; wait until the reload drains it."""
    erp.gate.clear()
    uids.upload(daemon.inbox / "held.edi", make_po(1))
    poll_until(lambda: erp.requests, what="the held job at the ERP")
    daemon.ready.clear()
    daemon.sighup(extra)
    poll_until(
        lambda: any(e.get("reason") == "reload" for e in daemon.events("daemon_stopping")),
        what="the reload draining the job in flight",
    )


def test_sigterm_while_a_reload_drains_stops_the_daemon(daemons, erp):
    """systemctl stop during systemctl reload: the daemon stops (exit 0), it
    does not come back up with the new configuration."""
    daemon = daemons(erp.url, shutdown_timeout_seconds=10.0)
    daemon.start()
    hold_a_job_and_reload(daemon, erp, "")
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    erp.gate.set()  # the job in flight finishes
    poll_until(lambda: exited_or_ready(daemon), timeout=20, what="exit or READY=1")
    assert daemon.proc.poll() == 0, "the daemon came back up after SIGTERM"


def test_a_second_reload_while_the_first_drains_is_not_lost(shared_root, daemons, erp):
    """Two reloads in a row (two partners onboarded a second apart): the
    configuration of the second is the one running in the end."""
    daemon = daemons(erp.url, shutdown_timeout_seconds=10.0)
    daemon.start()
    acme_in = sftp_account(shared_root.parent, "acme", uids.PARTNER)
    hold_a_job_and_reload(daemon, erp, "")
    assert daemon.proc is not None
    daemon.sighup(section("acme", "ZZ:ACME", acme_in))  # the second reload
    erp.gate.set()

    def acme_watched() -> bool:
        return any(e.get("partner_inboxes") == 1 for e in daemon.events("daemon_ready"))

    try:
        poll_until(acme_watched, timeout=8, what="acme's inbox watched")
    except AssertionError:
        pytest.fail(f"acme never watched; reloading {len(daemon.events('reloading'))} times")
    assert daemon.alive()


# -- 2. reload: a partner folder the daemon cannot use --------------------------------------------


def refused_or_exited(daemon: Daemon) -> bool:
    assert daemon.proc is not None
    return daemon.proc.poll() is not None or bool(daemon.events("reload_refused"))


def test_a_reload_with_an_inbox_the_daemon_cannot_read_shuts_that_inbox(shared_root, erp):
    """Onboarding mistake: the partner's folder made 0700 (no group access).
    The reload goes through (another partner's onboarding must not wait on
    this one's folder, nor a start stop for it: round 21), that inbox shut,
    named in the log and as the last error, and the daemon goes on."""
    base = shared_root.parent
    acme_in = base / "sftp" / "acme" / "in"
    acme_in.mkdir(parents=True)
    os.chown(acme_in, uids.PARTNER, uids.PARTNER)
    os.chmod(acme_in, 0o700)
    daemon = Daemon(shared_root, erp.url, user=True)
    try:
        daemon.start()
        daemon.reload(section("acme", "ZZ:ACME", acme_in))
        assert daemon.alive() and not daemon.events("reload_refused")
        (shut,) = daemon.events("inbox_shut")
        assert shut["partner"] == "acme" and str(acme_in) in shut["error"]
        assert str(acme_in) in daemon.cli("status").stdout
        uids.upload(daemon.inbox / "po.edi", make_po(2))
        poll_until(lambda: daemon.listing(daemon.done) == ["po.edi"], what="po.edi filed")
    finally:
        daemon.close()


def test_a_reload_whose_processing_folder_cannot_be_made_is_refused(shared_root, erp):
    """Onboarding step 2 forgotten: ``processing = /srv/sftp/.processing/acme``
    under a root-owned /srv/sftp. The reload is refused; the daemon goes on."""
    base = shared_root.parent
    acme_in = sftp_account(base, "acme", uids.PARTNER)
    processing = base / "sftp" / ".processing" / "acme"  # sftp/ is root's, 0755
    daemon = Daemon(shared_root, erp.url, user=True)
    try:
        daemon.start()
        daemon.sighup(section("acme", "ZZ:ACME", acme_in, processing=str(processing)))
        poll_until(lambda: refused_or_exited(daemon), timeout=20, what="refused or exited")
        assert daemon.alive(), f"exit {daemon.proc.poll()}: {daemon.events('cannot_start')}"
        (refused,) = daemon.events("reload_refused")
        assert str(processing) in refused["error"]
    finally:
        daemon.close()


# -- 3. reload under load -------------------------------------------------------------------------


def partner_files(daemon: Daemon, partners: dict[str, Path]) -> list[str]:
    """Every claimed file in the shared and the partners' processing folders."""
    found = claimed(daemon.processing)
    for name in partners:
        folder = daemon.processing / ".partners" / name
        if folder.exists():
            found += claimed(folder)
    return found


@pytest.mark.parametrize("processes", [1, 2])
def test_three_reloads_while_two_partners_upload_200_files(shared_root, erp, processes):
    """200 files in two partners' folders, three reloads while they run: each
    filed in done/ once, each order posted once, nothing left claimed, and the
    daemon stops cleanly."""
    base = shared_root.parent
    folders = {
        "acme": sftp_account(base, "acme", uids.PARTNER),
        "globex": sftp_account(base, "globex", uids.PARTNER2),
    }
    senders = {"acme": ("ZZ:ACME", uids.PARTNER), "globex": ("ZZ:GLOBEX", uids.PARTNER2)}
    extra = "".join(section(n, senders[n][0], folders[n]) for n in folders)
    # Worker processes are spawned from the venv's interpreter, which only root
    # may run here: with processes = 2 the daemon runs as root.
    user = processes == 1
    daemon = Daemon(shared_root, erp.url, user=user, extra=extra, processes=processes)
    erp.delay = 0.01
    try:
        daemon.start()
        names = []
        for n in range(200):
            partner = ("acme", "globex")[n % 2]
            sender, uid = senders[partner]
            name = f"po{n:03}.edi"
            uids.upload(folders[partner] / name, sent_by(make_po(1000 + n), sender), uid)
            names.append(name)
        for _ in range(3):
            before = len(daemon.listing(daemon.done))
            poll_until(lambda b=before: len(daemon.listing(daemon.done)) > b + 10, timeout=30)
            daemon.reload(extra)  # waits for READY=1
        poll_until(
            lambda: len(daemon.listing(daemon.done)) >= 200, timeout=90, what="200 files filed"
        )
        assert daemon.listing(daemon.done) == names
        assert daemon.listing(daemon.failed) == []
        assert partner_files(daemon, folders) == []
        assert all(os.listdir(f) == [] for f in folders.values())
        posts = erp.posts_per_key()
        assert len(posts) == 200 and set(posts.values()) == {1}, posts.most_common(3)
        assert len(daemon.events("reloading")) == 3
        assert daemon.terminate(timeout=15) == 0
    finally:
        daemon.close()


def test_a_burst_of_sighups_never_kills_the_daemon(daemons, erp):
    """``systemctl reload`` run by a configuration tool in a loop: however many
    SIGHUPs arrive, the daemon survives them and still files an upload."""
    daemon = daemons(erp.url)
    daemon.start()
    assert daemon.proc is not None
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline and daemon.alive():
        daemon.proc.send_signal(signal.SIGHUP)
        time.sleep(0.002)  # the burst's pace, not a wait for the daemon
    assert daemon.alive(), f"died: exit {daemon.proc.poll()}"
    uids.upload(daemon.inbox / "after.edi", make_po(7))
    poll_until(lambda: daemon.listing(daemon.done) == ["after.edi"], what="after.edi filed")


# -- 4. reload or restart: a partner removed or moved ---------------------------------------------


def partner_claims(daemon: Daemon, name: str) -> list[str]:
    folder = daemon.processing / ".partners" / name
    return claimed(folder) if folder.exists() else []


def test_a_claim_of_a_partner_since_removed_is_not_forgotten(shared_root, daemons, erp):
    """A crash (SIGKILL) with acme's file claimed, then a start without acme's
    section: the file (taken from acme's SFTP folder) is run from the shared
    lane or at least named in the log, never silently kept claimed."""
    acme_in = sftp_account(shared_root.parent, "acme", uids.PARTNER)
    daemon = daemons(erp.url, extra=section("acme", "ZZ:ACME", acme_in))
    daemon.start()
    erp.gate.clear()
    uids.upload(acme_in / "po.edi", sent_by(make_po(1), "ZZ:ACME"), uids.PARTNER)
    poll_until(lambda: erp.requests, what="acme's job at the ERP")
    daemon.kill()
    assert partner_claims(daemon, "acme") == ["po.edi." + partner_claim_job(daemon, "acme")]
    erp.gate.set()
    daemon.config.write_text(daemon.base_config)  # acme's section removed
    before = len(daemon.log.read_text())
    daemon.start()

    def dealt_with() -> bool:
        told = ".partners/acme" in daemon.log.read_text()[before:]
        return "po.edi" in daemon.listing(daemon.done) or told

    try:
        poll_until(dealt_with, timeout=6, what="the claim resumed or named")
    except AssertionError:
        pytest.fail(f"still claimed, unsaid: {partner_claims(daemon, 'acme')}")


def partner_claim_job(daemon: Daemon, name: str) -> str:
    (pname,) = partner_claims(daemon, name)
    return pname.split(".", 2)[2]


def test_a_reload_that_moves_a_partners_inbox_strands_no_file(shared_root, daemons, erp):
    """acme's folder moves (new SFTP layout) while its file is at the ERP and the
    reload's drain times out: the file is handed back where it will be run again."""
    old_in = sftp_account(shared_root.parent, "acme", uids.PARTNER)
    new_in = sftp_account(shared_root.parent, "acme2", uids.PARTNER)
    daemon = daemons(
        erp.url, extra=section("acme", "ZZ:ACME", old_in), shutdown_timeout_seconds=0.5
    )
    daemon.start()
    erp.gate.clear()
    uids.upload(old_in / "po.edi", sent_by(make_po(1), "ZZ:ACME"), uids.PARTNER)
    poll_until(lambda: erp.requests, what="acme's job at the ERP")
    daemon.ready.clear()
    daemon.sighup(section("acme", "ZZ:ACME", new_in))
    poll_until(lambda: daemon.events("reloading"), what="the reload draining acme's job")
    erp.gate.set()  # the job in flight finishes before the reload goes on
    poll_until(daemon.ready.is_set, what="READY=1 after the reload")
    assert not daemon.events("handed_back"), "a reload handed a job in flight back"
    try:
        poll_until(lambda: "po.edi" in daemon.listing(daemon.done), timeout=6, what="filed")
    except AssertionError:
        pytest.fail(f"old inbox {os.listdir(old_in)}, new inbox {os.listdir(new_in)}")


# -- 5. status, partners, retry -------------------------------------------------------------------


def test_status_counts_files_claimed_in_a_partners_processing_folder(tmp_path):
    """A dead host's claim of acme's file (processing/.partners/acme/other/…) is
    in ``status``'s ``claimed`` and in its processing count, as a shared one is."""
    acme_in = tmp_path / "acme-in"
    acme_in.mkdir()
    settings = config.load(
        write_config(tmp_path, f'[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{acme_in}"\n')
    )
    settings.paths.create()
    (partner,) = settings.partners.partners
    assert partner.processing is not None
    (partner.processing / "other").mkdir(parents=True)
    (partner.processing / "other" / f"po.edi.{uuid.uuid4()}").write_bytes(make_po(1))
    (settings.paths.processing / "other").mkdir()
    (settings.paths.processing / "other" / f"shared.edi.{uuid.uuid4()}").write_bytes(make_po(2))
    with opened(settings) as db:
        doc = admin.status(settings, db)
    assert sum(doc["claimed"].values()) == 2, doc["claimed"]
    assert doc["folders"]["processing"] == 2


# -- 6. hostile things in a partner's folder ------------------------------------------------------


def outbox_for(base: Path, name: str) -> Path:
    outbox = base / "sftp" / name / "out"
    outbox.mkdir(parents=True)
    os.chown(outbox, uids.DAEMON, uids.GROUP)
    os.chmod(outbox, 0o2750)
    return outbox


def as_partner(uid: int, fn, *args):
    return uids.run_as(uid, uids.GROUP, fn, *args)


def test_hostile_entries_in_a_partners_folder(shared_root, erp):
    """As acme's account: symlinks to globex's upload and to /etc/passwd, a FIFO,
    a folder, a name with a newline and an escape sequence, an empty file, one
    over acme's own max_file_bytes (under the global one) and one written
    slowly. Nothing hostile is read or posted; each refusal is acme's."""
    base = shared_root.parent
    acme_in, globex_in = (
        sftp_account(base, "acme", uids.PARTNER),
        sftp_account(base, "globex", uids.PARTNER2),
    )
    acme_out = outbox_for(base, "acme")
    po = sent_by(make_po(1), "ZZ:ACME")
    extra = section(
        "acme", "ZZ:ACME", acme_in, outbox=str(acme_out), max_file_bytes=len(po) + 10
    ) + section("globex", "ZZ:GLOBEX", globex_in)
    daemon = Daemon(shared_root, erp.url, user=True, extra=extra, incomplete_grace_seconds=6.0)
    try:
        daemon.start()
        weird = "po\n\x1b[2J.edi"
        slow = acme_in / "slow.edi"
        with open(slow, "wb") as fh:  # an open upload, owned by acme
            os.fchown(fh.fileno(), uids.PARTNER, uids.PARTNER)
            slow_po = sent_by(make_po(4), "ZZ:ACME")
            fh.write(slow_po[:100])
            fh.flush()
            globex_po = uids.upload(
                globex_in / "g.edi", sent_by(make_po(2), "ZZ:GLOBEX"), uids.PARTNER2
            )
            as_partner(uids.PARTNER, os.symlink, str(globex_po), str(acme_in / "link.edi"))
            as_partner(uids.PARTNER, os.symlink, "/etc/passwd", str(acme_in / "passwd.edi"))
            as_partner(uids.PARTNER, os.mkfifo, str(acme_in / "fifo.edi"))
            as_partner(uids.PARTNER, os.mkdir, str(acme_in / "sub"))
            uids.upload(acme_in / weird, po, uids.PARTNER)
            uids.upload(acme_in / "empty.edi", b"", uids.PARTNER)
            big = sent_by(make_po(3), "ZZ:ACME") + b"\n" * 20  # under 10 MB, over acme's cap
            uids.upload(acme_in / "big.edi", big, uids.PARTNER)
            refused = ["big.edi", "empty.edi", "fifo.edi", "link.edi", "passwd.edi"]
            poll_until(
                lambda: (
                    sorted(n for n in daemon.listing(daemon.failed) if "error" not in n) == refused
                    and sorted(daemon.listing(daemon.done)) == ["g.edi", weird]
                ),
                what="every entry filed",
            )
            fh.write(slow_po[100:])
        poll_until(lambda: "slow.edi" in daemon.listing(daemon.done), what="slow.edi filed")
        assert os.listdir(acme_in) == ["sub"]  # left in place, reported once
        assert len(daemon.events("inbox_entry_left")) == 1
        jobs = {j["file_name"]: j for j in daemon.jobs()}
        for name in refused:
            assert jobs[name]["partner"] == "acme", name
            assert jobs[name]["status"] == "failed", name
        assert "over the limit" in jobs["big.edi"]["error"]
        shown = "po\\n\\x1b[2J.edi"  # recorded escaped, as files.display_name shows it
        assert (jobs["g.edi"]["partner"], jobs[shown]["partner"]) == ("globex", "acme")
        assert sorted(po for _, po in erp.requests) == sorted(
            {po for _, po in erp.requests}
        )  # each once
        assert len(erp.requests) == 3  # g.edi, the weird name, slow.edi
        reports = sorted(n for n in os.listdir(acme_out) if n.endswith(".error.json"))
        assert reports == [f"{n}.error.json" for n in refused]
        passwd = (acme_out / "passwd.edi.error.json").read_text()
        assert "root:" not in passwd
        log = daemon.log.read_text()
        assert "\x1b" not in log  # the escape sequence never reaches the journal raw
        assert daemon.terminate(timeout=10) == 0
    finally:
        daemon.close()


# -- 7. one name, two partners --------------------------------------------------------------------


@pytest.mark.parametrize("rounds", [1, 5])
def test_the_same_name_from_two_partners_at_once(shared_root, erp, rounds):
    """po.edi uploaded by acme and globex at the same moment, ``rounds`` times:
    every upload is filed in done/ (po.edi, po.1.edi, …), none overwritten, and
    each job records its partner and the name the file was filed under."""
    base = shared_root.parent
    acme_in = sftp_account(base, "acme", uids.PARTNER)
    globex_in = sftp_account(base, "globex", uids.PARTNER2)
    extra = section("acme", "ZZ:ACME", acme_in) + section("globex", "ZZ:GLOBEX", globex_in)
    daemon = Daemon(shared_root, erp.url, user=True, extra=extra)
    try:
        daemon.start()
        for n in range(rounds):
            uids.upload(acme_in / "po.edi", sent_by(make_po(10 + n), "ZZ:ACME"), uids.PARTNER)
            uids.upload(globex_in / "po.edi", sent_by(make_po(50 + n), "ZZ:GLOBEX"), uids.PARTNER2)
            poll_until(lambda n=n: len(daemon.listing(daemon.done)) == 2 * (n + 1))
        filed = daemon.listing(daemon.done)
        assert len(set(filed)) == 2 * rounds

        def recorded() -> list[dict]:
            # A job whose file took the next free name (po.1.edi) records it
            # just after the move: its final record foresaw the name it had.
            jobs = [j for j in daemon.jobs() if j["status"] == "succeeded"]
            return jobs if len({j["file_path"] for j in jobs}) == 2 * rounds else []

        jobs = poll_until(recorded, what="each job's record names the file it was filed as")
        by_partner: dict[str, set[bytes]] = {"acme": set(), "globex": set()}
        for job in jobs:
            final = Path(job["file_path"])
            assert final.parent == daemon.done and final.name in filed, job["file_path"]
            data = final.read_bytes()
            sender = "ZZ:ACME" if job["partner"] == "acme" else "ZZ:GLOBEX"
            assert sender.split(":")[1].encode() in data[:105], (job["partner"], final.name)
            by_partner[job["partner"]].add(data)
        assert {k: len(v) for k, v in by_partner.items()} == {"acme": rounds, "globex": rounds}
        assert len(erp.requests) == 2 * rounds
    finally:
        daemon.close()


# -- 8. a partner's folder deleted ----------------------------------------------------------------


def test_a_partners_inbox_recreated_is_followed_and_one_gone_waits_alone(shared_root, erp):
    """acme's folder deleted and made again (its account re-provisioned): its next
    upload is filed. Deleted for long: after 5 s the daemon says which partner's
    folder is missing (once, in the log and as its last error) and goes on with
    the shared inbox; acme's folder made again is watched again."""
    base = shared_root.parent
    acme_in = sftp_account(base, "acme", uids.PARTNER)
    daemon = Daemon(shared_root, erp.url, user=True, extra=section("acme", "ZZ:ACME", acme_in))

    def remake() -> None:
        acme_in.mkdir()
        os.chown(acme_in, uids.PARTNER, uids.GROUP)
        os.chmod(acme_in, 0o2770)

    try:
        daemon.start()
        uids.upload(acme_in / "po1.edi", sent_by(make_po(1), "ZZ:ACME"), uids.PARTNER)
        poll_until(lambda: daemon.listing(daemon.done) == ["po1.edi"], what="po1 filed")
        acme_in.rmdir()
        poll_until(lambda: daemon.events("inbox_missing"), what="inbox_missing")
        remake()
        poll_until(lambda: daemon.events("inbox_replaced"), what="inbox_replaced")
        assert daemon.events("inbox_replaced")[0]["inbox"] == str(acme_in)
        uids.upload(acme_in / "po2.edi", sent_by(make_po(2), "ZZ:ACME"), uids.PARTNER)
        poll_until(lambda: "po2.edi" in daemon.listing(daemon.done), what="po2 filed")
        assert next(j for j in daemon.jobs() if j["file_name"] == "po2.edi")["partner"] == "acme"

        acme_in.rmdir()
        (gone,) = poll_until(lambda: daemon.events("inbox_gone"), timeout=20, what="inbox_gone")
        assert str(acme_in) in gone["error"] and "of partner acme" in gone["error"]
        assert daemon.alive()
        uids.upload(daemon.inbox / "po3.edi", make_po(3))  # the shared inbox goes on
        poll_until(lambda: "po3.edi" in daemon.listing(daemon.done), what="po3 filed")
        remake()
        poll_until(lambda: daemon.events("inbox_back"), what="inbox_back")
        uids.upload(acme_in / "po4.edi", sent_by(make_po(4), "ZZ:ACME"), uids.PARTNER)
        poll_until(lambda: "po4.edi" in daemon.listing(daemon.done), what="po4 filed")
        assert len(daemon.events("inbox_gone")) == 1
        assert daemon.terminate(timeout=10) == 0
    finally:
        daemon.close()


# -- 9. retry, status and partners from the command line ------------------------------------------


def test_retry_status_and_partners_of_a_partners_failed_file(shared_root, erp):
    """acme's failed file retried from the command line goes back into acme's
    folder and fails again as a retry of the first job, acme's; status and
    partners show acme's folder and backlog in text and JSON."""
    base = shared_root.parent
    acme_in = sftp_account(base, "acme", uids.PARTNER)
    daemon = Daemon(shared_root, erp.url, user=True, extra=section("acme", "ZZ:ACME", acme_in))
    try:
        daemon.start()
        uids.upload(acme_in / "bad.edi", sent_by(BAD, "ZZ:ACME"), uids.PARTNER)
        poll_until(lambda: "bad.edi" in daemon.listing(daemon.failed), what="bad.edi failed")
        (first,) = daemon.jobs()
        assert (first["partner"], first["status"]) == ("acme", "failed")
        done = daemon.cli("retry", first["job_id"])
        assert done.returncode == 0, done.stderr
        poll_until(lambda: len(daemon.jobs()) == 2, what="the retry's job")
        poll_until(lambda: all(j["status"] == "failed" for j in daemon.jobs()), what="filed")
        again = next(j for j in daemon.jobs() if j["job_id"] != first["job_id"])
        assert (again["partner"], again["retry_of"]) == ("acme", first["job_id"])
        assert erp.requests == []

        uids.upload(acme_in / "waiting.tmp", b"ISA", uids.PARTNER)  # an upload in progress
        status = daemon.cli("status", "--json")
        assert status.returncode == 0, status.stderr
        (acme,) = json.loads(status.stdout)["partners"]
        assert acme["name"] == "acme" and acme["failures_24h"] == 2
        partners = daemon.cli("partners", "--json")
        (described,) = json.loads(partners.stdout)["partners"]
        assert described["inbox"] == str(acme_in)
        assert described["processing"] == str(daemon.processing / ".partners" / "acme")
        text = daemon.cli("partners").stdout
        assert str(acme_in) in text and "acme" in text
        assert "partner acme: 2 files, 2 failed" in daemon.cli("status").stdout
        assert daemon.terminate(timeout=10) == 0
    finally:
        daemon.close()


def test_status_says_a_partners_inbox_is_missing(shared_root, erp):
    """The daemon stopped because acme's folder is gone: ``edi-inbox status``
    (text) says so for acme, as the JSON does with ``waiting: null``."""
    base = shared_root.parent
    acme_in = sftp_account(base, "acme", uids.PARTNER)
    daemon = Daemon(shared_root, erp.url, user=True, extra=section("acme", "ZZ:ACME", acme_in))
    try:
        daemon.start()
        assert daemon.terminate(timeout=10) == 0
        acme_in.rmdir()
        doc = json.loads(daemon.cli("status", "--json").stdout)
        assert doc["partners"][0]["inbox"]["waiting"] is None
        text = daemon.cli("status").stdout
        line = next(line for line in text.splitlines() if line.startswith("partner acme"))
        assert str(acme_in) in line or "missing" in line, text
    finally:
        daemon.close()


# -- 10. two hosts share the partners' folders ----------------------------------------------------


def test_another_host_takes_over_a_killed_hosts_claim_in_a_partners_folder(
    shared_root, daemons, erp
):
    """Host one claims acme's file and is killed (SIGKILL) mid-POST; host two,
    sharing the folders, takes the claim over from
    processing/.partners/acme/<host one>/ once the heartbeat is stale, runs it
    as acme's, files it, and the ERP sees one key for the order."""
    acme_in = sftp_account(shared_root.parent, "acme", uids.PARTNER)
    extra = section("acme", "ZZ:ACME", acme_in)
    first = daemons(erp.url, extra=extra)
    first.start()
    erp.gate.clear()
    uids.upload(acme_in / "po.edi", sent_by(make_po(1), "ZZ:ACME"), uids.PARTNER)
    poll_until(lambda: erp.requests, what="the POST in flight")
    first.kill()
    erp.gate.set()
    assert len(partner_claims(first, "acme")) == 1
    other = daemons(erp.url, host="other-host", extra=extra)
    other.start()
    poll_until(lambda: other.listing(other.done) == ["po.edi"], timeout=40, what="taken over")
    assert partner_claims(other, "acme") == []
    (lost,) = [j for j in other.jobs() if j["host"] != "other-host"]
    (theirs,) = [j for j in other.jobs() if j["host"] == "other-host"]
    assert theirs["retry_of"] == lost["job_id"] and theirs["partner"] == "acme"
    assert lost["status"] == "interrupted"
    poll_until(lambda: any(j["status"] == "succeeded" for j in other.jobs()), what="recorded")
    assert len(erp.keys_by_po()) == 1 and all(len(k) == 1 for k in erp.keys_by_po().values())
    assert other.terminate(timeout=10) == 0


# -- 11. reload: a partner's erp_url --------------------------------------------------------------


def test_a_reload_moves_a_partners_orders_to_its_own_erp(daemons, erp):
    """A reload that gives acme an erp_url: acme's next order goes there, the
    shared inbox's other orders to [erp] url."""
    with http_server() as server:
        own = Erp(server)
        daemon = daemons(erp.url, extra=section("acme", "ZZ:ACME"))
        daemon.start()
        uids.upload(daemon.inbox / "a1.edi", sent_by(make_po(1), "ZZ:ACME"))
        poll_until(lambda: daemon.listing(daemon.done) == ["a1.edi"], what="a1 filed")
        daemon.reload(section("acme", "ZZ:ACME", erp_url=own.url))
        uids.upload(daemon.inbox / "a2.edi", sent_by(make_po(2), "ZZ:ACME"))
        uids.upload(daemon.inbox / "x3.edi", sent_by(make_po(3), "ZZ:OTHER"))
        poll_until(lambda: len(daemon.listing(daemon.done)) == 3, what="a2, x3 filed")
        assert sorted(po for _, po in erp.requests) == ["00000001", "00000003"]
        assert [po for _, po in own.requests] == ["00000002"]


def test_a_reload_with_a_bad_partner_erp_url_is_refused(daemons, erp):
    """An erp_url that is not http(s) is refused on reload (reload_refused naming
    [partners.acme] erp_url); the daemon goes on with the running configuration."""
    daemon = daemons(erp.url, extra=section("acme", "ZZ:ACME"))
    daemon.start()
    daemon.sighup(section("acme", "ZZ:ACME", erp_url="ftp://erp.example.com/orders"))
    poll_until(lambda: refused_or_exited(daemon), timeout=20, what="refused or exited")
    assert daemon.alive(), f"exit {daemon.proc.poll()}: {daemon.log.read_text()[-600:]}"
    (refused,) = daemon.events("reload_refused")
    assert "[partners.acme] erp_url" in refused["error"]
    uids.upload(daemon.inbox / "a1.edi", sent_by(make_po(1), "ZZ:ACME"))
    poll_until(lambda: daemon.listing(daemon.done) == ["a1.edi"], what="a1 filed")


# -- 12. a partner's folder and the GS02 rule -----------------------------------------------------


def test_a_group_another_partners_gs02_id_claims_is_refused_in_a_partners_folder(tmp_path, erp):
    """One ISA id covers acme and globex; GS02 GLOBEX is globex's ("the id with
    GS02 wins"). A file with GS02 GLOBEX in acme's folder is not acme's: it is
    refused naming both, nothing posted, as the shared inbox would run it as
    globex's."""
    acme_in = tmp_path / "acme-in"
    text = (
        f'[partners.acme]\nids = ["01:123456789"]\ninbox = "{acme_in}"\n'
        '[partners.globex]\nids = ["01:123456789:GLOBEX"]\n'
    )
    settings = config.load(write_config(tmp_path, text, erp.url))
    settings.paths.create()
    acme_in.mkdir()
    (acme_in / "po.edi").write_bytes(sent_by(make_po(1), "01:123456789", "GLOBEX"))
    assert service.run(settings, once=True) == 0
    with opened(settings) as db:
        (job,) = queries.list_jobs(db, limit=5)
    assert erp.requests == [], f"posted as {job['partner']}'s"
    assert job["status"] == "failed" and "globex" in (job["error"] or "")


# -- 13. a partner's inbox that is also where the daemon writes -----------------------------------


@pytest.mark.parametrize(
    "partners",
    [
        '[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{sftp}"\noutbox = "{sftp}"\n',
        '[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{sftp}"\n'
        '[partners.globex]\nids = ["ZZ:GLOBEX"]\noutbox = "{sftp}"\n',
        '[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{root}/state/acks"\n',
        '[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{root}/state/done"\n',
    ],
    ids=["its-outbox", "anothers-outbox", "acks", "done"],
)
def test_a_partners_inbox_where_the_daemon_writes_is_refused(tmp_path, partners):
    """A partner's inbox that is an outbox, acks/ or done/ would feed the daemon
    its own output: refused at load, naming the partner and the key."""
    text = partners.format(sftp=tmp_path / "sftp" / "acme", root=tmp_path)
    with pytest.raises(ConfigError, match=r"\[partners.acme\] key 'inbox'"):
        config.load(write_config(tmp_path, text))


# -- 14. one processing folder for two lanes ------------------------------------------------------


@pytest.mark.parametrize(
    "partners",
    [
        '[partners.zeta]\nids = ["ZZ:ZETA"]\ninbox = "{root}/z"\nprocessing = "{root}/p"\n'
        '[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{root}/a"\nprocessing = "{root}/p"\n',
        '[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{root}/a"\n'
        'processing = "{root}/state/processing"\n',
    ],
    ids=["two-partners", "partner-and-paths"],
)
def test_a_processing_folder_shared_by_two_inboxes_is_refused(tmp_path, partners):
    """Claims left in a shared processing folder cannot be told apart at start
    (a lane resumes the other's, skipping the folder's sender check): refused
    at load, naming the key."""
    with pytest.raises(ConfigError, match=r"key 'processing'"):
        config.load(write_config(tmp_path, partners.format(root=tmp_path)))


@pytest.mark.parametrize("processes", [1, 2])
def test_a_reload_lets_jobs_stuck_past_the_timeout_finish(shared_root, daemons, erp, processes):
    """Jobs from acme's folder stuck at the ERP past shutdown_timeout_seconds when a
    reload comes: the reload waits for them (nothing handed back, nothing run
    twice), each is filed once as acme's; no job is left running, no record
    names a file that is not there."""
    acme_in = sftp_account(shared_root.parent, "acme", uids.PARTNER)
    extra = section("acme", "ZZ:ACME", acme_in)
    daemon = daemons(erp.url, extra=extra, processes=processes, shutdown_timeout_seconds=0.5)
    daemon.start()
    erp.gate.clear()
    for n in range(6):
        uids.upload(acme_in / f"po{n}.edi", sent_by(make_po(n + 1), "ZZ:ACME"), uids.PARTNER)
    poll_until(lambda: len(erp.requests) >= 4, what="four POSTs in flight")
    daemon.ready.clear()
    daemon.sighup(extra)
    poll_until(lambda: daemon.events("reloading"), what="the reload draining")
    poll_until(
        lambda: daemon.log.stat().st_mtime < time.time() - 1.0, what="past the shutdown timeout"
    )
    assert not daemon.ready.is_set()  # still draining, the jobs still at the ERP
    erp.gate.set()
    poll_until(daemon.ready.is_set, what="READY=1 after the reload")
    assert not daemon.events("handed_back")
    poll_until(lambda: len(daemon.listing(daemon.done)) == 6, timeout=30, what="six filed")
    assert daemon.listing(daemon.done) == [f"po{n}.edi" for n in range(6)]
    assert partner_claims(daemon, "acme") == [] and os.listdir(acme_in) == []
    assert all(len(keys) == 1 for keys in erp.keys_by_po().values())
    assert {j["partner"] for j in daemon.jobs()} == {"acme"}

    def settled() -> bool:
        return not [j for j in daemon.jobs() if j["status"] in ("running", "received")]

    try:
        poll_until(settled, timeout=5, what="no job running")
    except AssertionError:
        running = [j["file_name"] for j in daemon.jobs() if j["status"] == "running"]
        pytest.fail(f"jobs still running after the reload: {running}")
    for job in daemon.jobs():
        assert "Bad file descriptor" not in (job["error"] or ""), job["error"]
        assert job["file_path"] and os.path.exists(job["file_path"]), job["file_path"]
    assert daemon.terminate(timeout=10) == 0


# -- 15. retry after a partner's folder is gone from the configuration ----------------------------


def test_retry_all_failed_never_launders_a_refused_spoof_through_the_shared_inbox(tmp_path, erp):
    """acme's folder refused a file with globex's sender. acme's `inbox` is then
    dropped (it uploads to the shared inbox now) and the operator runs `retry
    --all-failed` after an outage: the spoof is not posted as globex's."""
    acme_in = tmp_path / "acme-in"
    acme_in.mkdir()
    partners = '[partners.globex]\nids = ["ZZ:GLOBEX"]\n[partners.acme]\nids = ["ZZ:ACME"]\n'
    with_folder = partners + f'inbox = "{acme_in}"\n'
    settings = config.load(write_config(tmp_path, with_folder, erp.url))
    settings.paths.create()
    (acme_in / "spoof.edi").write_bytes(sent_by(make_po(1), "ZZ:GLOBEX"))
    assert service.run(settings, once=True) == 0
    assert (settings.paths.failed / "spoof.edi").exists()
    settings = config.load(write_config(tmp_path, partners, erp.url))  # acme's inbox dropped
    admin.retry(settings, all_failed=True)
    assert service.run(settings, once=True) == 0
    assert erp.requests == [], "the spoof was posted"


def test_two_hosts_share_two_partners_folders(shared_root, daemons, erp):
    """Two hosts watch the same partner folders: 60 uploads are each claimed by
    one host, filed once, posted once, and recorded as their partner's."""
    base = shared_root.parent
    folders = {
        "acme": sftp_account(base, "acme", uids.PARTNER),
        "globex": sftp_account(base, "globex", uids.PARTNER2),
    }
    senders = {"acme": ("ZZ:ACME", uids.PARTNER), "globex": ("ZZ:GLOBEX", uids.PARTNER2)}
    extra = "".join(section(n, senders[n][0], folders[n]) for n in folders)
    one = daemons(erp.url, extra=extra)
    two = daemons(erp.url, host="other-host", extra=extra)
    one.start()
    two.start()
    names = []
    for n in range(60):
        partner = ("acme", "globex")[n % 2]
        sender, uid = senders[partner]
        names.append(f"po{n:02}.edi")
        uids.upload(folders[partner] / names[-1], sent_by(make_po(300 + n), sender), uid)
    poll_until(lambda: one.listing(one.done) == names, timeout=60, what="60 filed")
    posts = erp.posts_per_key()
    assert len(posts) == 60 and set(posts.values()) == {1}
    jobs = one.jobs()
    assert len(jobs) == 60 and {j["status"] for j in jobs} == {"succeeded"}
    for job in jobs:
        assert job["partner"] == ("acme", "globex")[int(job["file_name"][2:4]) % 2]
    assert {j["host"] for j in jobs} >= {"other-host"}
    assert one.terminate(timeout=10) == 0 and two.terminate(timeout=10) == 0


def test_a_reload_that_drops_a_partner_names_the_files_left_in_its_folder(
    shared_root, daemons, erp
):
    """acme's section removed while acme's upload waits (not yet ready): the
    journal says acme's folder is no longer watched and that a file waits there."""
    acme_in = sftp_account(shared_root.parent, "acme", uids.PARTNER)
    daemon = daemons(erp.url, extra=section("acme", "ZZ:ACME", acme_in))
    daemon.start()
    with open(acme_in / "po.edi", "wb") as fh:  # still being uploaded at the reload
        fh.write(sent_by(make_po(1), "ZZ:ACME")[:50])
        daemon.reload("")
    after = daemon.log.read_text().split('"reloading"', 1)[1]
    assert str(acme_in) in after, "nothing said about acme's folder"


@pytest.mark.parametrize("other", ["partner", "paths"])
def test_one_folder_under_two_names_is_refused(tmp_path, other):
    """acme's inbox reached through a symlink is the same folder as globex's (or
    as [paths] inbox): refused at load as the same path is."""
    real = tmp_path / "state" / "inbox" if other == "paths" else tmp_path / "sftp" / "in"
    real.mkdir(parents=True)
    alias = tmp_path / "alias"
    alias.symlink_to(real)
    text = f'[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{alias}"\n'
    if other == "partner":
        text += f'[partners.globex]\nids = ["ZZ:GLOBEX"]\ninbox = "{real}"\n'
    said = r"key 'inbox'.* is (the inbox of partner|\[paths\] inbox)"
    with pytest.raises(ConfigError, match=said):
        config.load(write_config(tmp_path, text))


def test_a_partners_cap_above_the_global_one_lets_its_big_file_through(tmp_path, erp):
    """acme may send more than [daemon] max_file_bytes: its file over the global
    cap and under its own is posted; the same bytes in the shared inbox are not."""
    acme_in = tmp_path / "acme-in"
    acme_in.mkdir()
    po = sent_by(make_po(1), "ZZ:ACME")
    text = (
        f'[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{acme_in}"\nmax_file_bytes = {len(po) * 2}\n'
    )
    path = write_config(tmp_path, text, erp.url)
    path.write_text(
        path.read_text().replace("[daemon]\n", f"[daemon]\nmax_file_bytes = {len(po) - 1}\n")
    )
    settings = config.load(path)
    settings.paths.create()
    (acme_in / "big.edi").write_bytes(po)
    (settings.paths.inbox / "shared.edi").write_bytes(sent_by(make_po(2), "ZZ:ACME"))
    assert service.run(settings, once=True) == 0
    assert os.listdir(settings.paths.done) == ["big.edi"]
    assert [po for _, po in erp.requests] == ["00000001"]
