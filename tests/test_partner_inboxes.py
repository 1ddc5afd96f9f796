"""Trading partners end to end: each partner uploads to a folder of its own as a
user of its own; the daemon, as its own user, watches every folder, refuses a
sender that is not the folder's partner, answers each partner in its outbox,
and takes a new partner and a new policy on a reload (SIGHUP), refusing a
configuration with an error and keeping the running one."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from daemons import Daemon, erp

from edi_inbox import admin, config, queries, service, store
from edi_inbox import erp as erp_module
from edi_inbox.config import DatabaseSettings, PathSettings
from edi_inbox.errors import ConfigError

import uids
from helpers import claimed, make_po, poll_until, sent_by, write_config
from uids import shared_root

pytestmark = pytest.mark.e2e
__all__ = ["erp", "shared_root"]  # fixtures


def as_5010(data: bytes) -> bytes:
    """``data`` (one 4010-era interchange, ``*`` separated) as version 005010:
    ISA11 the repetition separator, ISA12 00501, GS08 005010."""
    text = data.decode("latin-1")
    isa = text[:105].split("*")
    isa[11], isa[12] = "^", "00501"
    gs = text.index("GS*")
    end = text.index("\n", gs) if "\n" in text[gs:] else len(text)
    group = text[gs:end].split("*")
    group[8] = "005010"
    return ("*".join(isa) + text[105:gs] + "*".join(group) + text[end:]).encode("latin-1")


def asks_no_ta1(data: bytes) -> bytes:
    """``data`` with ISA14 = 0: no TA1 asked for."""
    isa = data[:105].split(b"*")
    isa[14] = b"0"
    return b"*".join(isa) + data[105:]


def sftp_account(base: Path, name: str, uid: int) -> tuple[Path, Path]:
    """A partner's SFTP folders: ``in`` it writes (the daemon renames out of
    it through the partners' group), ``out`` the daemon writes for it to read."""
    home = base / "sftp" / name
    inbox, outbox = home / "in", home / "out"
    for folder, owner, mode in ((inbox, uid, 0o2770), (outbox, uids.DAEMON, 0o2750)):
        folder.mkdir(parents=True)
        os.chown(folder, owner, uids.GROUP)
        os.chmod(folder, mode)
    return inbox, outbox


def section(name: str, sender: str, inbox: Path, outbox: Path, **more: str) -> str:
    lines = [
        f"[partners.{name}]",
        f"ids = [{json.dumps(sender)}]",
        f"inbox = {json.dumps(str(inbox))}",
        f"outbox = {json.dumps(str(outbox))}",
        *(f"{key} = {json.dumps(value)}" for key, value in more.items()),
    ]
    return "\n".join(lines) + "\n"


def readable_by(uid: int, path: Path) -> bytes:
    """The file's bytes as the partner's account reads them."""
    return uids.run_as(uid, uids.GROUP, path.read_bytes)


def job_named(daemon: Daemon, name: str) -> dict:
    return next(j for j in daemon.jobs() if j["file_name"] == name)


def posted(erp) -> list[str]:
    return sorted(po for _, po in erp.requests)


def test_two_partners_their_own_folders_a_spoof_a_stranger_and_a_reload(shared_root, erp):
    base = shared_root.parent
    acme_in, acme_out = sftp_account(base, "acme", uids.PARTNER)
    globex_in, globex_out = sftp_account(base, "globex", uids.PARTNER2)
    partners = (
        '[partners]\nunknown = "accept"\n'
        + section("acme", "ZZ:ACME", acme_in, acme_out, ack="997", ta1="always")
        + section("globex", "ZZ:GLOBEX", globex_in, globex_out, ack="999", ta1="never")
    )
    daemon = Daemon(shared_root, erp.url, user=True, extra=partners)
    try:
        daemon.start()
        # acme's file asks for no TA1; acme has ta1 = "always"
        acme_po = asks_no_ta1(sent_by(make_po(1), "ZZ:ACME"))
        uids.upload(acme_in / "po1.edi", acme_po, uids.PARTNER)
        globex_po = as_5010(sent_by(make_po(2), "ZZ:GLOBEX"))
        uids.upload(globex_in / "po2.edi", globex_po, uids.PARTNER2)
        # globex's account uploads a file that says it is from acme
        uids.upload(globex_in / "spoof.edi", sent_by(make_po(3), "ZZ:ACME"), uids.PARTNER2)
        # a sender no partner claims, in the shared inbox, under "accept"
        uids.upload(daemon.inbox / "stranger.edi", sent_by(make_po(4), "ZZ:STRANGER"))
        poll_until(
            lambda: (
                daemon.listing(daemon.done) == ["po1.edi", "po2.edi", "stranger.edi"]
                and daemon.listing(daemon.failed) == ["spoof.edi", "spoof.edi.error.json"]
            ),
            what="every upload filed",
        )
        assert job_named(daemon, "po1.edi")["partner"] == "acme"
        assert job_named(daemon, "po2.edi")["partner"] == "globex"
        assert job_named(daemon, "stranger.edi")["partner"] is None
        spoof = job_named(daemon, "spoof.edi")
        assert spoof["partner"] == "globex"
        assert "from partner globex but its sender ZZ:ACME" in spoof["error"]
        assert len(erp.requests) == 3  # the spoofed order is never posted
        # Each partner's answers are in its own outbox, whole, readable by its account.
        acme_files = sorted(os.listdir(acme_out))
        assert sorted(f.rsplit(".", 1)[-1] for f in acme_files) == ["997", "TA1"]
        globex_files = sorted(os.listdir(globex_out))
        assert [f for f in globex_files if f.endswith(".error.json")] == ["spoof.edi.error.json"]
        # globex sends 5010 and gets 999s; the spoof is 4010, older than the 999: a 997
        assert sorted(f.rsplit(".", 1)[-1] for f in globex_files) == ["997", "999", "json"]
        po2_999 = next(f for f in globex_files if f.endswith(".999"))
        assert po2_999.startswith("po2.edi.")
        answer = readable_by(uids.PARTNER2, globex_out / po2_999)
        assert b"ST*999*" in answer and b"*005010X231A1" in answer and b"IK5*A" in answer
        for outbox, uid in ((acme_out, uids.PARTNER), (globex_out, uids.PARTNER2)):
            for name in os.listdir(outbox):
                st = os.stat(outbox / name)
                assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o640, uids.GROUP), name
                assert readable_by(uid, outbox / name)
        report = json.loads(readable_by(uids.PARTNER2, globex_out / "spoof.edi.error.json"))
        assert "ZZ:ACME" in report["error"]
        shared_acks = os.listdir(shared_root / "acks")
        assert len([a for a in shared_acks if a.endswith(".997")]) == 1  # the stranger's
        for partner in ("acme", "globex"):
            assert claimed(daemon.processing / ".partners" / partner) == []
        assert os.listdir(acme_in) == os.listdir(globex_in) == []

        # A reload adds initech with its own folder and rejects strangers from now on.
        initech_in, initech_out = sftp_account(base, "initech", uids.PARTNER)
        reloaded = partners.replace('unknown = "accept"', 'unknown = "reject"') + section(
            "initech", "ZZ:INITECH", initech_in, initech_out
        )
        daemon.reload(reloaded)
        uids.upload(initech_in / "po5.edi", sent_by(make_po(5), "ZZ:INITECH"))
        uids.upload(daemon.inbox / "stranger2.edi", sent_by(make_po(6), "ZZ:STRANGER"))
        poll_until(
            lambda: (
                "po5.edi" in daemon.listing(daemon.done)
                and "stranger2.edi" in daemon.listing(daemon.failed)
            ),
            what="the new partner's file and the stranger's filed",
        )
        assert job_named(daemon, "po5.edi")["partner"] == "initech"
        assert "is not a configured trading partner" in job_named(daemon, "stranger2.edi")["error"]
        # ISA14 = 1 asks for a TA1 (initech has the default, ta1 = "on-request")
        assert sorted(f.rsplit(".", 1)[-1] for f in os.listdir(initech_out)) == ["997", "TA1"]

        # A configuration with an error is refused; the running one goes on.
        daemon.reload(reloaded + '[partners.broken]\nids = ["NOT-AN-ID"]\n')
        log = daemon.log.read_text()
        assert "reload_refused" in log and "[partners.broken] key 'ids'" in log
        uids.upload(acme_in / "po7.edi", sent_by(make_po(7), "ZZ:ACME"), uids.PARTNER)
        poll_until(lambda: "po7.edi" in daemon.listing(daemon.done), what="po7 filed")
        assert job_named(daemon, "po7.edi")["partner"] == "acme"
        assert len(erp.requests) == 5 and len(set(posted(erp))) == 5
        assert daemon.terminate(timeout=10) == 0
    finally:
        daemon.close()


# -- the configuration, the limits and status, in one process ---------------------------


@pytest.mark.parametrize(
    ("partners", "message"),
    [
        (
            '[partners.a]\nids = ["ZZ:A"]\ninbox = "{shared}"\n'
            '[partners.b]\nids = ["ZZ:B"]\ninbox = "{shared}"\n',
            r"\[partners.b\] key 'inbox': '.*' is the inbox of partner 'a' too",
        ),
        (
            '[partners.a]\nids = ["ZZ:A"]\ninbox = "{root}/state/inbox"\n',
            r"\[partners.a\] key 'inbox': '.*' is \[paths\] inbox too",
        ),
        (
            '[partners.a]\nids = ["ZZ:A"]\nprocessing = "{shared}"\n',
            r"\[partners.a\] key 'processing' is only for a partner with an 'inbox'",
        ),
        (
            '[partners.a]\nids = ["ZZ:A"]\ninbox = "relative/in"\n',
            r"\[partners.a\] key 'inbox' must be an absolute folder",
        ),
        (
            '[partners.a]\nids = ["ZZ:A"]\ninbox = "{shared}"\nmax_file_bytes = 0\n',
            r"\[partners.a\] key 'max_file_bytes' must be a whole number of bytes",
        ),
    ],
)
def test_inbox_config_errors_name_the_partner_and_the_key(tmp_path, partners, message):
    text = partners.format(shared=tmp_path / "in", root=tmp_path)
    with pytest.raises(ConfigError, match=message):
        config.load(write_config(tmp_path, text))


def test_an_inbox_on_another_file_system_than_its_processing_is_refused(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a file system of its own")
    with tempfile.TemporaryDirectory(dir=shm) as other:
        text = f'[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{other}"\n'
        with pytest.raises(ConfigError) as caught:
            config.load(write_config(tmp_path, text))
        said = str(caught.value)
        assert "[partners.acme] key 'inbox'" in said and "another file system" in said
        assert str(tmp_path / "state" / "processing" / ".partners" / "acme") in said
        # Its own processing folder beside the inbox is fine.
        text += f'processing = "{other}/.processing"\n'
        partner = config.load(write_config(tmp_path, text)).partners.partners[0]
        assert partner.processing == Path(other) / ".processing"


def test_a_reload_that_needs_a_restart_is_refused(tmp_path):
    running = config.load(write_config(tmp_path, ""))
    moved = running.replace(database=DatabaseSettings(url="sqlite:////elsewhere.db"))
    with pytest.raises(ConfigError, match=r"\[database\] changed: restart"):
        config.check_reload(running, moved)
    elsewhere = running.replace(paths=PathSettings(root=running.paths.root, processing=tmp_path))
    with pytest.raises(ConfigError, match=r"\[paths\] processing changed: restart"):
        config.check_reload(running, elsewhere)
    config.check_reload(running, config.load(write_config(tmp_path, "")))


def test_a_partners_own_size_cap_and_backlog(tmp_path, erp):
    """A partner's max_file_bytes refuses a file the shared inbox takes; status
    counts what waits in each partner's inbox."""
    small, big = tmp_path / "small-in", tmp_path / "big-in"
    text = (
        f'[partners.small]\nids = ["ZZ:SMALL"]\ninbox = "{small}"\nmax_file_bytes = 200\n'
        f'[partners.big]\nids = ["ZZ:BIG"]\ninbox = "{big}"\n'
    )
    settings = config.load(write_config(tmp_path, text, erp.url))
    settings.paths.create()
    small.mkdir()
    big.mkdir()
    (small / "po1.edi").write_bytes(sent_by(make_po(1), "ZZ:SMALL"))
    (big / "po2.edi").write_bytes(sent_by(make_po(2), "ZZ:BIG"))
    db = store.open_database(settings.database_url, settings)
    store.init(db)
    try:
        doc = admin.status(settings, db)
        waiting = {p["name"]: p["inbox"]["waiting"] for p in doc["partners"]}
        assert waiting == {"small": 1, "big": 1}
        assert service.run(settings, once=True) == 0
        assert sorted(os.listdir(settings.paths.done)) == ["po2.edi"]
        report = json.loads((settings.paths.failed / "po1.edi.error.json").read_text())
        assert "over the limit of 200 bytes (max_file_bytes)" in report["error"]
        jobs = {j["file_name"]: j for j in queries.list_jobs(db, limit=10)}
        assert (jobs["po1.edi"]["partner"], jobs["po2.edi"]["partner"]) == ("small", "big")
        doc = admin.status(settings, db)
        assert [p["inbox"]["waiting"] for p in doc["partners"]] == [0, 0]
    finally:
        store.close_database(db)
    assert len(erp.requests) == 1


def test_a_retried_file_goes_back_to_the_partners_own_inbox(tmp_path, erp):
    """A file acme's folder refused (globex's sender in it) is retried into acme's
    folder, not the shared inbox where globex's id would have it posted: it is
    refused again, as a retry of the first job, and nothing is posted."""
    acme_in = tmp_path / "acme-in"
    text = (
        f'[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{acme_in}"\n'
        '[partners.globex]\nids = ["ZZ:GLOBEX"]\n'
    )
    settings = config.load(write_config(tmp_path, text, erp.url))
    settings.paths.create()
    acme_in.mkdir()
    (acme_in / "po.edi").write_bytes(sent_by(make_po(1), "ZZ:GLOBEX"))
    assert service.run(settings, once=True) == 0
    first = json.loads((settings.paths.failed / "po.edi.error.json").read_text())
    assert first["partner"] == "acme"
    (retried,) = admin.retry(settings, first["job_id"])
    assert retried["retried"] and retried["inbox"] == str(acme_in)
    assert os.listdir(acme_in) == ["po.edi"]
    assert service.run(settings, once=True) == 0
    again = json.loads((settings.paths.failed / "po.edi.error.json").read_text())
    assert (again["partner"], again["retry_of"]) == ("acme", first["job_id"])
    assert "from partner acme but its sender ZZ:GLOBEX" in again["error"]
    assert erp.requests == []


def test_an_inbox_on_a_mount_of_its_own_is_refused_at_start(tmp_path):
    """systemd's ReadWritePaths= bind-mounts the folder: one file system, two
    mounts, and a rename between them fails. The daemon says so at start (exit
    1) instead of failing every claim. Run in a mount namespace of its own."""
    if os.geteuid() != 0:
        pytest.skip("a mount namespace needs root")
    inbox = tmp_path / "partner-in"
    inbox.mkdir()
    path = write_config(tmp_path, f'[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{inbox}"\n')
    config.load(path).paths.create()
    script = 'mount --bind "$0" "$0" && exec "$@"'
    command = [sys.executable, "-m", "edi_inbox.cli", "--config", str(path), "run", "--once"]
    unshare = ["unshare", "--mount", "--propagation", "private"]
    done = subprocess.run(
        [*unshare, "sh", "-c", script, str(inbox), *command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "are on different mounts" in done.stdout + done.stderr
    assert str(inbox) in done.stdout + done.stderr


def test_a_partner_with_its_own_folder_is_refused_in_the_shared_inbox(tmp_path, erp):
    """Only acme's folder vouches for acme: a file with acme's sender in the shared
    inbox (which other accounts may write) is refused naming the folder, nothing
    posted; run by hand with --partner it is acme's."""
    acme_in = tmp_path / "acme-in"
    text = f'[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{acme_in}"\n'
    path = write_config(tmp_path, text, erp.url)
    settings = config.load(path)
    settings.paths.create()
    acme_in.mkdir()
    po = sent_by(make_po(1), "ZZ:ACME")
    (settings.paths.inbox / "po.edi").write_bytes(po)
    assert service.run(settings, once=True) == 0
    report = json.loads((settings.paths.failed / "po.edi.error.json").read_text())
    assert f"partner acme's, which uploads to its own folder {acme_in}" in report["error"]
    assert erp.requests == []
    by_hand = tmp_path / "po-by-hand.edi"
    by_hand.write_bytes(po)
    cli = [sys.executable, "-m", "edi_inbox.cli", "--config", str(path)]
    done = subprocess.run(
        [*cli, "process", "--partner", "acme", "--json", str(by_hand)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["partner"] == "acme"
    assert len(erp.requests) == 1


def test_a_bad_erp_url_is_refused_without_its_secrets(tmp_path):
    """A refused erp_url is quoted without its password or query: the message
    reaches the journal."""
    url = "ftp://erp:s3cret@erp.example.com/o?key=k3y"
    text = f'[partners.acme]\nids = ["ZZ:ACME"]\nerp_url = "{url}"\n'
    settings = config.load(write_config(tmp_path, text))
    with pytest.raises(ConfigError) as caught:
        erp_module.partner_erps(settings)
    said = str(caught.value)
    assert "[partners.acme] erp_url" in said and "ftp://erp:***@erp.example.com/o?***" in said
    assert "s3cret" not in said and "k3y" not in said


def test_a_reload_waiting_for_a_slow_job_keeps_the_watchdog_fed(tmp_path, erp, monkeypatch):
    """A reload waits for a job held at the ERP, however long; meanwhile systemd
    still gets WATCHDOG=1 (a silent daemon would be killed) and a STATUS= line
    saying what the reload waits for; the job is posted once and filed."""
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # a ping every 0.5 s
    daemon = Daemon(tmp_path, erp.url)
    try:
        daemon.start()
        erp.gate.clear()
        (daemon.inbox / "slow.edi").write_bytes(make_po(1))
        poll_until(lambda: erp.requests, what="the job at the ERP")
        daemon.ready.clear()
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        waiting = b"STATUS=reloading: waiting for 1 job"
        poll_until(
            lambda: any(m.startswith(waiting) for m in daemon.messages),
            what="STATUS= while the reload waits",
        )
        seen = len(daemon.messages)
        poll_until(
            lambda: sum(b"WATCHDOG=1" in m for m in daemon.messages[seen:]) >= 3,
            what="three watchdog pings while the reload waits",
        )
        assert not daemon.ready.is_set()
        erp.gate.set()
        poll_until(daemon.ready.is_set, what="READY=1 once the job is done")
        poll_until(lambda: daemon.listing(daemon.done) == ["slow.edi"], what="slow.edi filed")
        assert len(erp.requests) == 1
        assert daemon.terminate(timeout=10) == 0
    finally:
        daemon.close()


def test_a_partner_who_shuts_its_folder_stops_only_its_own_intake(shared_root, erp):
    """A partner owns its upload folder (README's onboarding) and sets it
    0700 over SFTP. A start (and a reload) then goes on without it: the
    shared inbox and the other partner are served, ``status`` says why;
    once the mode is back, the partner's waiting upload is taken within
    seconds (tried every ``SHUT_RETRY_EVERY``). Round 21: every start
    exited 1 ("Permission denied"), for all partners. (In threads: worker
    processes spawn the venv's interpreter, which only root may run here,
    and root may open any folder; round 21's test runs them under systemd.)"""
    base = shared_root.parent
    acme_in, acme_out = sftp_account(base, "acme", uids.PARTNER)
    globex_in, globex_out = sftp_account(base, "globex", uids.PARTNER2)
    partners = section("acme", "ZZ:ACME", acme_in, acme_out) + section(
        "globex", "ZZ:GLOBEX", globex_in, globex_out
    )
    uids.upload(acme_in / "waiting.edi", sent_by(make_po(2101), "ZZ:ACME"), uids.PARTNER)
    os.chmod(acme_in, 0o700)
    daemon = Daemon(shared_root, erp.url, user=True, extra=partners)
    try:
        daemon.start()
        assert daemon.events("inbox_shut")[0]["partner"] == "acme"
        uids.upload(globex_in / "g.edi", sent_by(make_po(2102), "ZZ:GLOBEX"), uids.PARTNER2)
        uids.upload(daemon.inbox / "s.edi", make_po(2103))
        poll_until(lambda: daemon.listing(daemon.done) == ["g.edi", "s.edi"], what="the others")
        assert "acme's inbox" in daemon.cli("status").stdout
        daemon.reload(partners)  # not refused for it
        assert len(daemon.events("inbox_shut")) == 2 and not daemon.events("reload_refused")
        os.chmod(acme_in, 0o2770)
        poll_until(lambda: "waiting.edi" in daemon.listing(daemon.done), what="acme's upload")
        assert daemon.events("inbox_back")[0]["partner"] == "acme"
        poll_until(lambda: "acme's inbox" not in daemon.cli("status").stdout, what="said no more")
        assert len(erp.requests) == 3 and daemon.alive()
    finally:
        os.chmod(acme_in, 0o2770)
        daemon.close()
