"""Outsider round 21: real deployments, day two. README's "Install as a
service" run as written under a real systemd (test_systemd_boot's throwaway
namespace, `processes = 2`), a recording ERP inside the namespace, a
partner's own uid uploading, README's "Onboard a partner" run as written for
two partners, and the operator restarting, reloading, power-cutting
(`systemctl kill -s KILL`) the service and running the CLI as root and as the
service user. About 60 s (one boot for the module).

Found (strict xfails when found; each fixed since):

* ``test_a_partner_closing_its_own_folder_does_not_stop_the_service_at_a_restart``:
  README's onboarding makes each partner the owner of its upload folder
  (``install -d -m 2770 -o acme``), so its SFTP client may ``chmod 0700`` it.
  While the daemon runs, the other partners go on (and acme's file is only
  logged ``file_unreadable``); but every later start — `systemctl restart`,
  which README's onboarding of the next partner runs, a reboot, a watchdog
  restart — exits 1 with ``cannot_start: inbox /srv/sftp/acme/in: Permission
  denied``, and systemd's ``Restart=on-failure`` loops: one partner stops
  intake for every partner until root fixes that folder. (A reload meanwhile
  is refused for the same reason.) Fixed: such an inbox is shut
  (``inbox_shut``) and tried again every 5 s, the others go on.
* ``test_a_partner_sending_every_order_as_850_edi_costs_the_same_each_time``:
  a taken name is probed ``.1``, ``.2``, … one ``lstat`` each
  (``files.candidates``/``free_path``, done/ and acks/): with 40,000 earlier
  ``850.edi`` filed a job takes ~0.4 s (7 ms for the first), linear in the
  number ever sent under that name (README's "a partner who sends every order
  as 850.edi"), and ``candidates`` stops at 999,999. Fixed: ~2 log2(N) looks
  (``files._free_suffix``), counted in test_files.py rather than timed here.
* ``test_an_upload_closed_unchanged_during_a_reload_drain_is_not_held_for_the_grace``:
  a partner's upload fully written (IEA included) and still open when the
  operator reloads, closed during the reload's drain (a slow ERP) with
  nothing more written: ``open_at_stop`` carries its open with its
  fingerprint, the close is never seen, the fingerprint never changes, and
  the complete upload waits ``incomplete_grace_seconds`` (300 s by default)
  until ``open_count_reset``. Round 16's fix (settle afresh) covers only a
  file written to meanwhile.

Observed, not pinned (no deterministic reproduction within the time): the
same hold without any slow client. A partner's plain upload (``tar -x``,
open-write-close in microseconds) written the moment a `systemctl reload`
stops the watch — in about 1 run of 5, always the first file written after
the `systemctl reload` returned, or the first settling after the previous
reload's ``daemon_ready`` — stays in the inbox, complete and closed, until
``open_count_reset`` (``incomplete_grace_seconds``: 300 s by default, seen
at 15 s and 30 s set by hand; `status` says "1 waiting (oldest 92s)"): its
open was handled, its close still queued when ``_shutdown`` computed
``open_at_stop`` (after ``_try_reload``'s prepare; the observer's queued
events are dropped), so the open is carried with the finished file's
fingerprint. The held reload test below therefore writes its uploads only
once the reload has stopped watching.

Held:

* `systemctl restart` with 40 uploads mid-backlog; `systemctl kill -s KILL`
  (the power cut, every process of the unit) with 8 orders at the ERP then a
  start; a `systemctl reload` draining 12 orders at the ERP while the
  partner writes 15 more: every upload in done/ once, one Idempotency-Key
  per PO, one 997 per file (the kill: eight more rounds by hand, all held).
* A restart with 6 orders at an ERP slower than ``shutdown_timeout_seconds``
  (worker processes): handed back, resent under the same key, one 997 each,
  no SIGKILL from systemd.
* The service on a PostgreSQL of its own (a cluster made in the namespace),
  restarted in immediate mode (a crash) with 60 uploads in flight: all
  succeeded once, no operator.
* ``status``, ``jobs list``, ``jobs search``, ``stats``, ``partners`` as root
  and as the service user against the running service: right answers, no
  root-owned file left in /var/lib/edi-inbox, the next files run.
* By hand (explored, not kept as tests): README's onboarding run for a second
  partner while the first uploads (its restart included), a partner-owned
  0700 sub-folder (``inbox_entry_left``), a 0200 upload (``file_unreadable``),
  an upload renamed from a hidden temporary, the same name re-uploaded after
  done/ (same content: a duplicate; new content: posted, ``.1`` names), a
  systemctl reload issued during a restart (systemd queues it).
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import time
from collections import Counter
from pathlib import Path

import pytest
from test_systemd_boot import (
    CONFIG,
    PARTNER,
    STATE,
    UNIT,
    Machine,
    installed,
    readme_block,
    wait_for,
)

from helpers import GOOD, make_po, sent_by

pytestmark = pytest.mark.e2e

ERP_PORT = 8765
# A recording ERP inside the namespace (it has a loopback of its own): one line
# per POST (key, PO number) appended to the log; 201 with an id; a delay read
# from a file beside the log at each request.
ERP = r"""
import json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
LOG = Path(sys.argv[1])
DELAY = LOG.with_name("erp.delay")
lock = threading.Lock()
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = self.headers.get("Idempotency-Key", "")
        with lock, LOG.open("a") as fh:
            row = [key, body["po_number"], body["interchange_control_number"]]
            fh.write(json.dumps(row) + "\n")
            fh.flush()
        try:
            time.sleep(float(DELAY.read_text()))
        except (OSError, ValueError):
            pass
        out = json.dumps({"id": "ERP-" + key[:12]}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), H).serve_forever()
"""


class Deployment:
    """The booted machine, README's install, a partner and a recording ERP."""

    def __init__(self, machine: Machine, where: Path) -> None:
        self.m = machine
        self.where = where  # /stage inside
        self.erp_log = where / "erp.log"
        self.partners: set[str] = set()  # onboarded

    def set_delay(self, seconds: float) -> None:
        (self.where / "erp.delay").write_text(str(seconds))

    def posts(self) -> list[tuple[str, str, str]]:
        if not self.erp_log.exists():
            return []
        return [tuple(json.loads(x)) for x in self.erp_log.read_text().splitlines() if x]

    def upload_many(self, files: dict[str, bytes], folder: Path = STATE / "inbox") -> None:
        """Each file written in place by the partner's user (tar -x, one at a time)."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                info.mtime = time.time()
                tar.addfile(info, io.BytesIO(data))
        self.m.run(
            f"cd {folder} && setpriv --reuid={PARTNER} --regid=sftp-partners --init-groups "
            "sh -c 'umask 022 && tar -x -m --no-same-permissions'",
            input=buf.getvalue(),
        )

    def listing(self, folder: Path) -> list[str]:
        return sorted(n for n in os.listdir(self.m.path(folder)) if not n.startswith("."))

    def acks(self) -> dict[str, list[str]]:
        """997 file names by the upload they answer."""
        found: dict[str, list[str]] = {}
        for name in self.listing(STATE / "acks"):
            if name.endswith(".997"):
                found.setdefault(name.split(".edi.")[0] + ".edi", []).append(name)
        return found

    def cli(self, args: str, user: str = "root", check: bool = True):
        prefix = "" if user == "root" else f"runuser -u {user} -- "
        return self.m.run(f"{prefix}edi-inbox {args}", check=check)

    def up(self) -> dict[str, str]:
        return wait_for(self.m.running, 60, "the service to be active (running)")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory):
    where = tmp_path_factory.mktemp("boot21")
    (where / "erp.py").write_text(ERP)
    with installed(where) as machine:
        machine.run(
            "systemd-run --unit=erp21 --property=Type=exec /opt/edi-inbox/bin/python "
            f"/stage/erp.py /stage/erp.log {ERP_PORT}"
        )
        machine.run(
            "sed -i '/^\\[erp\\]/,/^\\[/ "
            f's|^url = ""$|url = "http://127.0.0.1:{ERP_PORT}/orders"|; '
            "s/^settle_seconds = .*/settle_seconds = 0.3/; "
            "s/^processes = .*/processes = 2/; "
            f"s/^max_attempts = .*/max_attempts = 3/' {CONFIG}"
        )
        # These tests restart the unit more often than systemd's default start
        # limit (5 in 10 s) allows an operator.
        machine.run(
            "mkdir -p /run/systemd/system/edi-inbox.service.d && printf "
            "'[Unit]\\nStartLimitIntervalSec=0\\n' >/run/systemd/system/edi-inbox.service.d/"
            "limit.conf && systemctl daemon-reload"
        )
        machine.run(f"systemctl restart {UNIT}")
        dep = Deployment(machine, where)
        dep.up()
        yield dep


def all_done(dep: Deployment, files: dict[str, bytes], seconds: float = 90) -> None:
    """Wait until every upload is in done/; else fail saying where they are."""
    try:
        wait_for(lambda: set(files) <= set(dep.listing(STATE / "done")), seconds, "all in done/")
    except AssertionError:
        where = dep.m.run(f"ls -laR {STATE}/inbox {STATE}/processing {STATE}/failed").stdout
        status = dep.cli("status", check=False).stdout
        missing = sorted(set(files) - set(dep.listing(STATE / "done")))
        lines = [x for x in dep.m.journal().splitlines() if any(m in x for m in missing)]
        pytest.fail(
            f"not in done/: {missing}\n{where}\n{status}\n"
            + "\n".join(lines)[-6000:]
            + "\n--- journal\n"
            + dep.m.journal()[-4000:]
        )


def distinct(first: int, count: int) -> dict[str, bytes]:
    return {f"po-{n}.edi": make_po(n, GOOD) for n in range(first, first + count)}


def po_numbers(files: dict[str, bytes]) -> set[str]:
    return {re.search(rb"BEG\*\d\d\*[^*]*\*([^*]*)\*", d).group(1).decode() for d in files.values()}


def check_once(dep: Deployment, files: dict[str, bytes]) -> None:
    """Every upload in done/ once, one Idempotency-Key per PO, one 997 each."""
    done = dep.listing(STATE / "done")
    assert sorted(n for n in done if n in files) == sorted(files), done
    assert not [n for n in done if any(n.startswith(f + ".") for f in files)], done
    keys: dict[str, set[str]] = {}
    for key, po, _ in dep.posts():
        keys.setdefault(po, set()).add(key)
    pos = po_numbers(files)
    assert pos <= set(keys), pos - set(keys)
    assert all(len(keys[p]) == 1 for p in pos), {p: keys[p] for p in pos if len(keys[p]) > 1}
    acks = dep.acks()
    assert {n: len(acks.get(n, [])) for n in files} == dict.fromkeys(files, 1), acks


def test_restart_while_a_partner_uploads_a_backlog(deployment):
    dep = deployment
    dep.set_delay(0.1)
    files = distinct(21000, 40)
    dep.upload_many(files)
    wait_for(lambda: len(dep.posts()) >= 5, 30, "some posts")
    dep.m.run(f"systemctl restart {UNIT}")
    dep.up()
    all_done(dep, files)
    check_once(dep, files)
    posted = Counter(k for k, po, _ in dep.posts() if po in po_numbers(files))
    assert max(posted.values()) == 1, posted


def test_power_cut_mid_backlog_then_start(deployment):
    dep = deployment
    dep.set_delay(0.5)
    files = distinct(22000, 30)
    before = len(dep.posts())
    dep.upload_many(files)
    wait_for(lambda: len(dep.posts()) >= before + 8, 30, "posts in flight")
    dep.m.run(f"systemctl kill -s KILL {UNIT}")
    wait_for(lambda: not dep.m.unit_pids(), 30, "every process of the unit gone")
    dep.set_delay(0.05)
    dep.m.run(f"systemctl start {UNIT}")
    dep.up()
    all_done(dep, files)
    check_once(dep, files)
    assert not dep.listing(STATE / "failed")


def test_reload_while_a_partner_uploads_a_backlog(deployment):
    """`systemctl reload` while 12 orders wait at the ERP (the reload drains
    them), the partner's next 15 uploads written during the drain: every
    upload in done/ once, each order posted once (nothing handed back), one
    997 each. (The reload comes once the first files are all claimed, and
    the next are written once it has stopped watching: an upload written as
    the watch stops can be held for the grace, see the docstring.)"""
    dep = deployment
    dep.set_delay(1.0)
    files = distinct(23000, 27)
    before = len(dep.posts())
    dep.upload_many(dict(list(files.items())[:12]))
    wait_for(lambda: len(dep.posts()) >= before + 12, 30, "the first 12 at the ERP")
    assert not dep.listing(STATE / "inbox")
    cursor = dep.m.cursor()
    dep.m.run(f"systemctl reload {UNIT}")
    wait_for(lambda: '"reason": "reload"' in dep.m.journal(cursor), 10, "the reload draining")
    dep.upload_many(dict(list(files.items())[12:]))
    dep.set_delay(0.05)
    dep.up()
    all_done(dep, files)
    check_once(dep, files)
    posted = Counter(k for k, po, _ in dep.posts() if po in po_numbers(files))
    assert max(posted.values()) == 1, posted


def owned_by_root(dep: Deployment) -> list[str]:
    out = dep.m.run(f"find {STATE} -user root -printf '%p %m\\n'").stdout
    return out.splitlines()


def test_operator_cli_as_root_and_service_user_against_the_running_service(deployment):
    dep = deployment
    dep.set_delay(0.0)
    files = distinct(24000, 3)
    dep.upload_many(files)
    wait_for(lambda: set(files) <= set(dep.listing(STATE / "done")), 60, "all in done/")
    for user in ("root", "edi-inbox"):
        status = json.loads(dep.cli("status --json", user).stdout)
        assert status["running"] is True, status
        jobs = json.loads(dep.cli("jobs list --json --limit 200", user).stdout)
        assert {j["file_name"] for j in jobs} >= set(files)
        stats = json.loads(dep.cli("stats --json", user).stdout)
        assert stats["total_jobs"] >= 3
        dep.cli("partners --json", user)
        dep.cli("jobs search --json --po-number 00024000", user)
    assert owned_by_root(dep) == []
    more = distinct(24100, 2)
    dep.upload_many(more)
    wait_for(lambda: set(more) <= set(dep.listing(STATE / "done")), 60, "the next files in done/")


def onboard(dep: Deployment, name: str, isa_id: str) -> None:
    """README's "Onboard a partner" block as written, for ``name`` (acme's lines
    renamed), once per machine."""
    if name in dep.partners:
        return
    block = readme_block("### Onboard a partner").replace("ACMEFOODS", isa_id)
    cursor = dep.m.cursor()
    dep.m.run(block.replace("acme", name))
    wait_for(
        lambda: (
            "daemon_ready" in dep.m.journal(cursor).rsplit("reloading", 1)[-1]
            and "reloading" in dep.m.journal(cursor)
        ),
        30,
        "the reload done",
    )
    dep.partners.add(name)
    dep.up()


def upload_as(dep: Deployment, partner: str, name: str, data: bytes, script: str = "") -> None:
    """As ``partner``'s own user in its folder: ``data`` into ``name`` (or ``script``)."""
    inbox = Path(f"/srv/sftp/{partner}/in")
    dep.m.run(
        f"cd {inbox} && setpriv --reuid={partner} --regid={partner} --init-groups "
        f"sh -c 'umask 027 && {script or 'cat > ' + name}'",
        input=data,
    )


def done_soon(dep: Deployment, name: str, seconds: float = 30) -> bool:
    try:
        wait_for(lambda: name in dep.listing(STATE / "done"), seconds, name)
    except AssertionError:
        return False
    return True


def test_a_partner_closing_its_own_folder_does_not_stop_the_service_at_a_restart(deployment):
    """acme's SFTP client sets its upload folder's mode to 0700 (it owns the
    folder: README's onboarding, ``install -d -m 2770 -o acme``). While the daemon
    runs, globex goes on. The operator then restarts the service (as README's
    onboarding of the next partner does): the service must come back for the
    partners it can still serve — globex's next order must be posted."""
    dep = deployment
    onboard(dep, "acme", "ACMEFOODS")
    onboard(dep, "globex", "GLOBEX")
    upload_as(dep, "acme", "", b"", "chmod 0700 .")
    try:
        upload_as(dep, "globex", "g-run.edi", sent_by(make_po(26000), "ZZ:GLOBEX"))
        assert done_soon(dep, "g-run.edi"), "globex stopped while the daemon ran"
        restart = dep.m.run(f"systemctl restart {UNIT}", check=False)
        assert restart.returncode == 0, dep.m.journal()[-1500:]
        upload_as(dep, "globex", "g-restart.edi", sent_by(make_po(26001), "ZZ:GLOBEX"))
        ok = done_soon(dep, "g-restart.edi", 15)
        assert ok, dep.m.journal()[-1500:]
    finally:
        dep.m.run("chmod 2770 /srv/sftp/acme/in")
        dep.m.run(f"systemctl reset-failed {UNIT}; systemctl restart {UNIT}", check=False)
        dep.up()


def test_a_postgresql_crash_restart_under_load_loses_nothing(deployment):
    """The service on a PostgreSQL of its own (a throwaway cluster inside the
    machine), 60 uploads at an ERP answering in 0.5 s, and the server
    restarted in immediate mode (a crash) mid-backlog: every file in done/
    once, one key per PO, one 997 each, every job succeeded, no operator."""
    dep = deployment
    pgbin = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    as_pg = f"runuser -u postgres -- {pgbin}"
    pg_ctl = f"{as_pg}/pg_ctl -D /var/tmp/pg/data -l /var/tmp/pg/log -w"
    dep.m.run(
        "install -d -o postgres -g postgres /var/tmp/pg && cd /var/tmp && "
        f"{as_pg}/initdb -A trust -U postgres -E UTF8 --locale=C.UTF-8 -D /var/tmp/pg/data "
        f">/dev/null && {pg_ctl} -o '-h 127.0.0.1 -p 5433 -k /var/tmp/pg' start && "
        f"{as_pg}/createdb -h 127.0.0.1 -p 5433 -U postgres edi",
        timeout=120,
    )
    url = "postgresql://postgres@127.0.0.1:5433/edi"
    section = "/^\\[database\\]/,/^\\[/"
    dep.m.run(f'sed -i \'{section} s|^url = ""$|url = "{url}"|\' {CONFIG}')
    try:
        dep.m.run(f"systemctl restart {UNIT}")
        dep.up()
        dep.set_delay(0.5)
        files = distinct(28000, 60)
        before = len(dep.posts())
        dep.upload_many(files)
        wait_for(lambda: len(dep.posts()) >= before + 10, 30, "posts in flight")
        dep.m.run(f"{pg_ctl} -m immediate restart", timeout=120)
        all_done(dep, files, 60)
        check_once(dep, files)
        psql = "psql -h 127.0.0.1 -p 5433 -U postgres -At edi -c"
        statuses = dep.m.run(f"{psql} 'select status, count(*) from jobs group by 1'").stdout
        assert statuses.split() == ["succeeded|60"], statuses
        assert "running," in dep.cli("status").stdout
    finally:
        dep.m.run(f"sed -i '{section} s|^url = .*|url = \"\"|' {CONFIG}")
        dep.m.run(f"systemctl restart {UNIT}; {pg_ctl} -m fast stop", check=False)
        dep.up()


def test_a_restart_past_the_shutdown_deadline_hands_back_and_answers_once(deployment):
    """`systemctl restart` while 6 orders wait at an ERP slower than
    `shutdown_timeout_seconds` (1 s here), worker processes: the jobs are
    handed back, run again after the start, each order resent under its one
    key, each file in done/ once with one 997."""
    dep = deployment
    timeout = "s/^shutdown_timeout_seconds = .*/shutdown_timeout_seconds = {}/"
    dep.m.run(f"sed -i '{timeout.format('1.0')}' {CONFIG} && systemctl restart {UNIT}")
    try:
        dep.up()
        dep.set_delay(3)
        files = distinct(27000, 6)
        before = len(dep.posts())
        dep.upload_many(files)
        wait_for(lambda: len(dep.posts()) >= before + 6, 30, "posts in flight")
        cursor = dep.m.cursor()
        dep.m.run(f"systemctl restart {UNIT}")
        dep.set_delay(0.01)
        dep.up()
        all_done(dep, files, 60)
        check_once(dep, files)
        assert "job_interrupted" in dep.m.journal(cursor)
        assert "SIGKILL" not in dep.m.journal(cursor)
    finally:
        dep.m.run(f"sed -i '{timeout.format('30.0')}' {CONFIG} && systemctl restart {UNIT}")
        dep.up()


def job_of(dep: Deployment, file_name: str) -> dict:
    jobs = json.loads(dep.cli("jobs list --json --limit 5", "edi-inbox").stdout)
    return next(j for j in jobs if j["file_name"] == file_name)


def test_a_partner_sending_every_order_as_850_edi_costs_the_same_each_time(deployment):
    """README: a partner may send every order as `850.edi` (each taken as soon as it
    settles, filed as `850.N.edi`, answered as `850.edi.GS06.N.997`). With 40,000
    earlier ones filed (their names made here, as a year of such a partner leaves
    them), the next `850.edi` must cost about what the first did (a job here
    takes ~7 ms); each filing probed every earlier name (0.39 s a job at
    40,000). Fixed: a free suffix is found in ~2 log2(N) looks
    (``files._free_suffix``; counted in test_files.py, not timed here)."""
    dep = deployment
    dep.set_delay(0)
    n = 40000
    dep.m.run(
        f"cd {STATE}/done && : > 850.edi && for i in $(seq 1 {n}); do : > 850.$i.edi; done; "
        f"cd {STATE}/acks && : > 850.edi.123456789.997 && "
        f"for i in $(seq 1 {n}); do : > 850.edi.123456789.$i.997; done",
        timeout=120,
    )
    try:
        dep.upload_many({"850.edi": make_po(30000)})
        wait_for(lambda: f"850.{n + 1}.edi" in dep.listing(STATE / "done"), 60, "850.edi in done/")
        # What it costs is pinned without a clock: test_files.py counts the
        # looks (~2 log2(N)); here, that it is filed and answered once.
        assert job_of(dep, "850.edi")["status"] == "succeeded"
        assert f"850.edi.123456789.{n + 1}.997" in dep.listing(STATE / "acks")
    finally:
        dep.m.run(f"find {STATE}/done {STATE}/acks -name '850.*' -delete", timeout=120)


def test_an_upload_closed_unchanged_during_a_reload_drain_is_not_held_for_the_grace(deployment):
    """A partner's SFTP client has written all of ``slow.edi`` (its IEA
    included) and not closed it yet (its CLOSE request on the way) when the
    operator reloads; an order waits at a slow ERP (3 s), so the reload
    drains; the client's close lands meanwhile, nothing more written. Round
    16's fix settles afresh only a file written to meanwhile: this one, as
    complete as it will be, waits the whole grace (300 s by default; with 15
    and 20 s by hand: taken at the grace, ``open_count_reset`` opens 1). It
    must be taken within seconds of the reload's READY."""
    dep = deployment
    dep.set_delay(3.0)
    go = "/tmp/r21-close-now"
    data = "/tmp/r21-slow.data"
    (dep.m.path(Path("/tmp")) / "r21-slow.data").write_bytes(make_po(45001))
    dep.m.run(f"chmod 0644 {data}; rm -f {go}")
    before = len(dep.posts())
    dep.upload_many({"first-45000.edi": make_po(45000)})
    wait_for(lambda: len(dep.posts()) > before, 30, "first-45000.edi at the ERP")
    writer = (
        f"cd {STATE}/inbox && exec 3>slow.edi && cat {data} >&3 && "
        f"while [ ! -e {go} ]; do sleep 0.05; done; exec 3>&-"
    )
    dep.m.run(
        f"setsid -f setpriv --reuid={PARTNER} --regid=sftp-partners --init-groups "
        f"sh -c '{writer}' </dev/null >/dev/null 2>&1"
    )
    try:
        slow = dep.m.path(STATE / "inbox" / "slow.edi")
        wait_for(lambda: slow.exists() and slow.stat().st_size > 1000, 10, "slow.edi written")
        # A file refused after the open: its events were read after the open's.
        dep.upload_many({"marker-45002.edi": b"not X12\n"})
        wait_for(lambda: "marker-45002.edi" in dep.listing(STATE / "failed"), 30, "marker")
        assert "slow.edi" in dep.listing(STATE / "inbox")
        cursor = dep.m.cursor()
        dep.m.run(f"systemctl reload {UNIT}")
        wait_for(lambda: "reloading" in dep.m.journal(cursor), 10, "the reload draining")
        dep.m.run(f"touch {go}")  # the client's close, during the drain
        holders = "find /proc/[0-9]*/fd -lname '*/slow.edi' 2>/dev/null || true"
        wait_for(lambda: not dep.m.run(holders).stdout.strip(), 10, "slow.edi closed")
        assert "daemon_ready" not in dep.m.journal(cursor).rsplit("reloading", 1)[-1]
        wait_for(
            lambda: "daemon_ready" in dep.m.journal(cursor).rsplit("reloading", 1)[-1],
            30,
            "the reload done",
        )
        dep.set_delay(0)
        assert done_soon(dep, "slow.edi", 10), dep.listing(STATE / "inbox")
    finally:
        dep.m.run(f"touch {go}")
        dep.set_delay(0)
        dep.m.run(f"systemctl restart {UNIT}")
        dep.up()
