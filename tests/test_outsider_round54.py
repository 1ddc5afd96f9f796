"""Outside tester, round 54: this session's daemon machinery attacked.

The real ``edi-inbox run`` (threads, or ``processes = 2``; ``run --once``)
posting to a real HTTP ERP on 127.0.0.1 (``daemons.Erp``) or, with no ERP,
writing its order outbox; uploads owned by a partner's uid; round 51's rig
(tmpfs mounts under ``tmp_path``, unmounted by the fixture whatever
happens, remounted read-only or with fewer inodes), round 52's user
namespaces of the daemon's own with lowered inotify limits
(``/proc/sys/user/max_inotify_*`` inside them, never the machine's) and its
``flood`` of the event queue while the daemon is SIGSTOPped. About 45 s at
-n0.

What I tried
- ``log.LineWriter``: stdout a file opened without ``O_APPEND`` (systemd's
  ``StandardOutput=file:``/``truncate:``) and with it, on a full 1 MiB
  tmpfs, 30 jobs, room made, 10 more: every line whole? ``log_lines_dropped``
  true? Two worker processes writing 18 KB ``job_finished`` lines (cut)
  for uploads named with 60 emoji, an ESC and U+202E, SIGTERM as the last
  is filed; by hand (not kept): a one-page pipe left full with
  ``processes = 2``, a SIGHUP, then SIGTERM (exit 0 in 2.4 s, no torn
  line; the lines still queued at exit lost uncounted, as the 1 s exit
  wait says).
- ``[daemon] max_crashes = 1`` and ``store.take_left_behind``: round 51's
  parked jobs whose notes a read-only partition refused, then a clean stop
  while another process holds SQLite's write lock, or a clean stop and a
  start on the host renamed (a UTS namespace).
- The order outbox (no ``[erp] url``): read-only under ``run --once``;
  out of inodes after the first of two orders of one file (threads and
  worker processes); read-only while the partner's next upload comes under
  the same name. By hand: ``status`` and ``jobs list`` meanwhile (each try
  an ``interrupted`` job naming the outbox's trouble; no hot loop: 21 ticks
  of CPU in 12 s), the same ``run --once`` with the ERP answering 503
  (fails the file, exit 0).
- The tracker's ``_left``: 20 directories reported, each removed and an
  order renamed in under its name, with ``observer = "polling"``, inotify,
  and inotify overflowed (the events lost; ``rescan_seconds = 60``).
- ``watch.probe_inotify``: one inotify instance allowed, a partner inbox at
  the start and added by a reload; one watch allowed, a reload from
  ``observer = "polling"`` to ``"inotify"``.

What held
- Log lines of two worker processes through SIGTERM: all whole JSON, at
  most 4096 bytes with emoji and control characters in cut values, a
  ``job_finished`` for each file, ``daemon_stopped`` last.
- An outbox that takes one order of a file's two: the job cut short, run
  again; each order written once (``stat`` by name), the file in done/,
  one 997 accepting both (threads and worker processes).
- Directories replaced by uploads of their names (polling, inotify, an
  overflow): each posted once, at once.
- One inotify instance serves the shared inbox and a partner's at start.

Found (strict xfails; all but 3 fixed the same session, each test failing
before, 7's wait changed to the fix's way: the file waits claimed, not in
the inbox)
1. ``test_a_truncating_log_file_on_a_full_disk_gets_no_hole``: stdout a
   file without ``O_APPEND``: a line ENOSPC cut is taken back with
   ``ftruncate`` but the descriptor's offset stays past the end, so once
   there is room the next line lands after a hole: a run of NUL
   bytes before a ``log_lines_dropped`` object, not JSON. Should: every line
   whole (e.g. ``lseek`` back to the new end, or ``pwrite`` nothing past it).
2. ``test_log_lines_dropped_counts_every_line_a_full_disk_lost``: 30 jobs
   on a full disk lose 23 ``job_finished`` lines (and more), and the
   ``log_lines_dropped`` lines count 2 or 3: ``LineWriter._run`` takes the
   count, the ``log_lines_dropped`` line itself fails to be written and
   adds 1, the count it carried is lost, so it never passes 2. README:
   "a ``log_lines_dropped`` line counts them". Should: the count carried
   over until written.
3. ``test_a_clean_stop_with_the_database_locked_counts_no_crash``: a clean
   stop (exit 0) that cannot remove its heartbeat row (SQLite locked by
   another process; ``remove_daemon``'s failure suppressed) is taken for a
   death at the next start (``take_left_behind`` finds the row): with
   ``max_crashes = 1`` both parked files (orders posted, 997s owed) go to
   failed/ as ``crashed`` (orders the ERP took). README: "A stop (SIGTERM)
   ... never counts". Should: both done, 997s accepting. (Two files held
   since files counted together run apart, each then ending alone; one
   file alone is still set aside: the strict xfail left.)
4. ``test_a_clean_stop_then_a_start_under_another_host_name_counts_no_crash``:
   the same parked files, a clean stop (row removed), the host renamed:
   the old name's claims are taken over and counted as a crash (a takeover
   always counts), both set aside ``crashed`` though the old host left no
   heartbeat row (it stopped cleanly). Should: nothing set aside.
5. ``test_run_once_with_a_read_only_outbox_ends``: ``run --once`` with the
   order outbox read-only never ends: the file is handed back, taken after
   the pause and cut short again, for ever (with the ERP down instead it
   exits). README: "``--once`` also exits when nothing more is ready".
   Should: exit, saying why, the upload kept for the next run.
6. ``test_a_reload_adding_a_partner_inbox_at_one_inotify_instance_is_applied``:
   ``probe_inotify`` opens an inotify instance of its own, so at the
   instance limit a reload adding a partner inbox is refused ("Too many
   open files") though the daemon's one shared instance would watch it (the
   same configuration starts; held above). Should: applied.
7. ``test_a_file_waiting_for_the_outbox_is_not_lost_to_a_new_upload_of_its_name``:
   a job cut short by the outbox hands its file back to the partner's
   inbox to wait out each pause (up to a minute, for the whole outage); the
   partner's next order under the same name (``850.edi``) overwrites it:
   PO 00054950 is never written to the outbox, only 00054951.
   Should: no order lost (wait claimed in processing/, as an owed 997's
   file does, or come back beside a new upload).
8. ``test_a_reload_to_inotify_at_the_watch_limit_is_refused_not_fatal``:
   the probe looks only at inboxes the running configuration lacked, so a
   reload from ``observer = "polling"`` to ``"inotify"`` at the watch
   limit stops the daemon (exit 1, ``cannot_watch``), where round 52's
   reload adding an inbox is refused. Should: refused, polling on.
9. ``test_directories_left_in_place_are_logged_once_across_reloads``:
   every reload logs ``inbox_entry_left`` again for each directory (the
   new tracker's ``_left`` and the inbox's ``reported`` start empty): five
   directories and two reloads give 15 lines; thousands of directories,
   thousands of warnings a reload. README: "logged once". Should: once.

Not reached: two hosts on one PostgreSQL (the rename case stands for a
takeover), logrotate's copytruncate, the console format on a pty,
``log_lines_dropped`` past 10,000 lines queued on a pipe.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from daemons import Daemon, daemon_command, daemons, erp
from test_outsider_round51 import (
    Rig,
    acks_say,
    database_beside,
    full_disk_run,
    one_state_partition,
    rejected_groups,
    rig,
    settled,
)
from test_outsider_round52 import both_posted, flood, limited, one_interchange, stop

import uids
from helpers import claimed, database_locked, make_po, poll_until

pytestmark = pytest.mark.e2e
__all__ = ["daemons", "erp", "rig"]  # the fixtures


def start_writing_to(daemon: Daemon, path: Path, flags: int) -> None:
    """``daemon.start()`` with stdout and stderr the file ``path`` opened with
    ``flags`` (``O_TRUNC`` without ``O_APPEND``: systemd's
    ``StandardOutput=file:`` / ``truncate:``)."""
    daemon.log = path
    daemon.ready.clear()
    env = {**os.environ, "NOTIFY_SOCKET": "@" + daemon.notify_name}
    env.pop("EDI_INBOX_CONFIG", None)
    fd = os.open(path, flags, 0o644)
    try:
        daemon.proc = subprocess.Popen(
            daemon_command(daemon.config), env=env, stdout=fd, stderr=subprocess.STDOUT
        )
    finally:
        os.close(fd)
    deadline = time.monotonic() + 20
    while not daemon.ready.wait(0.05):
        assert daemon.proc.poll() is None, f"daemon exited: {path.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "no READY=1 within 20 s"


def not_json(path: Path) -> list[bytes]:
    bad = []
    for line in path.read_bytes().split(b"\n"):
        if not line:
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            bad.append(line)
    return bad


def full_disk_run_opened(rig: Rig, erp_url: str, flags: int) -> Daemon:
    """Round 51's ``full_disk_run`` with stdout opened with ``flags``."""
    return full_disk_run(rig, erp_url, lambda d, p: start_writing_to(d, p, flags), 54100)


def test_a_truncating_log_file_on_a_full_disk_gets_no_hole(rig, erp):
    """systemd's ``StandardOutput=truncate:`` (or ``file:``) opens stdout
    without O_APPEND. A line ENOSPC cut is taken back with ``ftruncate``,
    but the descriptor's offset stays past the new end: the next line is
    written after a hole of NUL bytes."""
    daemon = full_disk_run_opened(rig, erp.url, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    data = daemon.log.read_bytes()
    bad = not_json(daemon.log)
    assert b"\0" not in data and bad == [], f"{len(bad)} bad lines: {bad[0][-200:]!r}"
    finished = {e["file"] for e in daemon.events("job_finished")}
    assert {f"a{n:02d}.edi" for n in range(30, 40)} <= finished


def test_log_lines_dropped_counts_every_line_a_full_disk_lost(rig, erp):
    """stdout a file (``append:``) on a full tmpfs while 30 jobs run: their
    lines are lost, and once there is room ``log_lines_dropped`` must count
    them all (at least the 30 jobs' ``job_finished`` lines missing)."""
    daemon = full_disk_run_opened(rig, erp.url, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    finished = {e["file"] for e in daemon.events("job_finished")}
    missing = {f"a{n:02d}.edi" for n in range(30)} - finished
    counted = sum(e["count"] for e in daemon.events("log_lines_dropped"))
    assert len(missing) >= 10, "the full disk lost too few lines to tell"
    assert counted >= len(missing), f"{len(missing)} job_finished lines lost, {counted} counted"


def parked_on_a_read_only_partition(
    rig: Rig, erp_url: str, erp_gate, owed: int = 2
) -> tuple[Daemon, Path]:
    """``max_crashes = 1``: round 51's state partition (the database beside
    it, ``busy_timeout_seconds = 0.3``), one file done; ``owed`` orders
    posted while it is remounted read-only: their 997s owed, the jobs parked
    (their notes cannot be written). Returns the daemon, still running, and
    its database."""
    daemon = one_state_partition(rig, "size=64m", erp_url, max_crashes=1)
    database = database_beside(rig, daemon)
    daemon.config.write_text(
        daemon.config.read_text().replace("[erp]\n", "busy_timeout_seconds = 0.3\n[erp]\n", 1)
    )
    daemon.start()
    uids.upload(daemon.inbox / "a.edi", make_po(54300))
    poll_until(lambda: settled(daemon, 1), what="the first file done")
    erp_gate.clear()
    for n in range(owed):
        uids.upload(daemon.inbox / f"b{n}.edi", make_po(54310 + n))
    return daemon, database


def none_set_aside(daemon: Daemon, erp, owed: int = 2) -> None:
    """Every file filed, none set aside, each order posted once, 997s A."""
    poll_until(lambda: settled(daemon, 1 + owed), timeout=30, what="every file filed")
    reports = [
        [d["code"] for d in json.loads((daemon.failed / n).read_text())["error_details"]]
        for n in daemon.listing(daemon.failed)
        if n.endswith(".error.json")
    ]
    assert reports == [], f"set aside: {reports}"
    assert daemon.listing(daemon.done) == ["a.edi"] + [f"b{n}.edi" for n in range(owed)]
    said = acks_say(daemon.root / "acks")
    assert len(said) == 1 + owed and all(v[0] == "AK5*A" for v in said.values()), said
    assert max(erp.posts_per_key().values()) == 1


def owe(daemon: Daemon, erp, owed: int = 2) -> None:
    poll_until(lambda: len(erp.requests) == 1 + owed, what="the orders at the ERP")
    subprocess.run(["mount", "-o", "remount,ro", str(daemon.root)], check=True)
    erp.gate.set()
    poll_until(
        lambda: (
            f"{owed} job(s) waiting to write their acknowledgements" in daemon.cli("status").stdout
        ),
        timeout=20,
        what="status says the 997s are owed",
    )
    assert len(claimed(daemon.processing)) == owed


@pytest.mark.parametrize(
    "owed",
    [
        pytest.param(
            1,
            marks=pytest.mark.xfail(
                strict=True,
                reason="a clean stop that cannot remove its heartbeat row (SQLite locked) is"
                " taken for a death: the parked job, alone in flight, is set aside as crashed"
                " ('the service stopped once')",
            ),
        ),
        2,  # held since files counted together run apart: each ends alone
    ],
)
def test_a_clean_stop_with_the_database_locked_counts_no_crash(rig, erp, owed):
    """Parked jobs whose notes could not be written (above); a clean stop
    (SIGTERM, exit 0) while another process holds SQLite's write lock, so
    the stop cannot remove its heartbeat row; the partition writable, the
    lock gone, a start. README: "A stop (SIGTERM) ... never counts".
    Should: every file done with an accepting 997, nothing set aside."""
    daemon, database = parked_on_a_read_only_partition(rig, erp.url, erp.gate, owed)
    owe(daemon, erp, owed)
    with database_locked(database):
        assert daemon.terminate(20) == 0
    subprocess.run(["mount", "-o", "remount,rw", str(daemon.root)], check=True)
    daemon.start()
    none_set_aside(daemon, erp, owed)


def test_a_clean_stop_then_a_start_under_another_host_name_counts_no_crash(rig, erp):
    """The same parked jobs, a clean stop (its heartbeat row removed), the
    partition writable, then the start on a host renamed (a UTS namespace):
    the old name's claims are taken over. Its row is gone: it stopped
    cleanly. Should: nothing set aside."""
    daemon, _ = parked_on_a_read_only_partition(rig, erp.url, erp.gate)
    owe(daemon, erp)
    assert daemon.terminate(20) == 0
    subprocess.run(["mount", "-o", "remount,rw", str(daemon.root)], check=True)
    daemon.host = "renamed-host"
    daemon.start()
    none_set_aside(daemon, erp)


def test_run_once_with_a_read_only_outbox_ends(rig):
    """No ERP configured; the order outbox a read-only tmpfs; ``run --once``
    with one good upload. README: "``--once`` also exits when nothing more
    is ready" (with the ERP down it fails the file and exits 0). Here it
    runs again and again (one ``interrupted`` job each pause) and never
    ends. Should: exit (saying why) within a few pauses, the upload not
    lost (in the inbox or claimed for the next run), not in failed/."""
    outbox = rig.tmpfs(rig.root / "outbox", "size=1m")
    daemon = rig.daemon("")
    subprocess.run(["mount", "-o", "remount,ro", str(outbox)], check=True)
    uids.upload(daemon.inbox / "0.edi", make_po(54400))
    with open(daemon.log, "ab") as log:
        proc = subprocess.Popen(
            daemon_command(daemon.config, "run", "--once"), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        poll_until(lambda: daemon.events("job_finished"), what="the job cut short")
        poll_until(lambda: proc.poll() is not None, timeout=12, what="run --once ended")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    assert daemon.listing(daemon.failed) == []
    assert daemon.listing(daemon.inbox) + claimed(daemon.processing) != []


def test_a_partner_inbox_starts_watched_at_one_inotify_instance(tmp_path, erp):
    """Holds: a user namespace allowing one inotify instance; the shared
    inbox and a partner's watched through it (one instance for all)."""
    daemon, folder, _ = limited(tmp_path, erp.url, observer="inotify", instances=1)
    try:
        daemon.start()
        both_posted(daemon, folder)
    finally:
        daemon.close()


def test_a_reload_adding_a_partner_inbox_at_one_inotify_instance_is_applied(tmp_path, erp):
    """The same limit (one instance), the partner added by a reload. The
    daemon watches every inbox through one instance, so the reload needs no
    second one; the start with this configuration works (above). Should:
    the reload applied, the partner's upload posted."""
    daemon, folder, section = limited(tmp_path, erp.url, observer="inotify", instances=1, extra="")
    try:
        daemon.start()
        daemon.reload(section)
        refused = [e["error"] for e in daemon.events("reload_refused")]
        assert refused == []
        both_posted(daemon, folder)
    finally:
        daemon.close()


def replace_directories(daemon: Daemon, stage: Path, count: int, *, overflow: bool) -> None:
    """``count`` directories in the inbox, each reported (``inbox_entry_left``);
    then each removed and an order renamed in under its name (``overflow``:
    while the daemon is stopped and its event queue flooded, those events
    lost)."""
    for n in range(count):
        (daemon.inbox / f"d{n:02d}.edi").mkdir()
    poll_until(
        lambda: len(daemon.events("inbox_entry_left")) >= count, what="the directories reported"
    )
    stage.mkdir()
    for n in range(count):
        uids.upload(stage / f"d{n:02d}.edi", make_po(54600 + n))
    if overflow:
        stop(daemon)  # (waited for since: a daemon not stopped yet drained the flood)
    try:
        if overflow:
            flood(daemon.inbox)
        for n in range(count):
            (daemon.inbox / f"d{n:02d}.edi").rmdir()
            os.rename(stage / f"d{n:02d}.edi", daemon.inbox / f"d{n:02d}.edi")
    finally:
        if overflow:
            daemon.proc.send_signal(signal.SIGCONT)


@pytest.mark.parametrize(
    ("observer", "overflow"),
    [("polling", False), ("inotify", False), ("inotify", True)],
    ids=["polling", "inotify", "overflow"],
)
def test_directories_replaced_by_uploads_of_their_names_are_posted(
    daemons, erp, tmp_path, observer, overflow
):
    """Holds: directories the tracker keeps out of its window (``_left``),
    each replaced by an order of its name: every one posted once, in done/."""
    daemon = daemons(erp.url, observer=observer, rescan_seconds=60.0)
    daemon.start()
    replace_directories(daemon, tmp_path / "stage", 20, overflow=overflow)
    names = [f"d{n:02d}.edi" for n in range(20)]
    poll_until(lambda: daemon.listing(daemon.done) == names, timeout=10, what="all 20 done")
    if overflow:  # the test did what it says (the line may follow the last file)
        poll_until(lambda: daemon.events("inbox_events_lost"), what="the overflow told")
    else:
        assert daemon.events("inbox_events_lost") == []
    assert len(erp.keys_by_po()) == 20 and set(erp.posts_per_key().values()) == {1}


def test_worker_processes_lines_are_all_written_whole_at_a_sigterm(rig, erp):
    """Holds: ``processes = 2``, stdout a file (``append:``); twelve uploads
    of 100 rejected groups (18 KB ``job_finished`` lines, cut) under names
    of 60 emoji (each 12 bytes in a JSON escape), with control characters;
    SIGTERM as soon as the last is filed. Every line one JSON object of at
    most 4096 bytes, a ``job_finished`` for each upload, ``daemon_stopped``
    last."""
    daemon = rig.daemon(erp.url, processes=2)
    daemon.start()
    names = [f"{n:02d}\x1b[2J\u202e" + "\U0001f600" * 60 + ".edi" for n in range(12)]
    for n, name in enumerate(names):
        uids.upload(daemon.inbox / name, rejected_groups(54700 + n))
    poll_until(lambda: settled(daemon, 12), timeout=30, what="all twelve filed")
    assert daemon.terminate(20) == 0
    lines = [line for line in daemon.log.read_bytes().split(b"\n") if line]
    assert not_json(daemon.log) == []
    assert max(len(line) + 1 for line in lines) <= 4096
    finished = daemon.events("job_finished")
    assert len(finished) == 12 and all(len(e["file"]) > 60 for e in finished)
    assert json.loads(lines[-1])["event"] == "daemon_stopped"


@pytest.mark.parametrize("processes", [1, 2])
def test_an_outbox_taking_one_order_of_two_writes_each_once(rig, processes):
    """Holds: no ERP; the order outbox a tmpfs with one free inode; one
    upload of two orders: the first written, the second cut short (the job
    ``interrupted``, run again after a pause); more inodes (a remount):
    both orders in the outbox once each, the file in done/, its 997
    accepting both."""
    outbox = rig.tmpfs(rig.root / "outbox", "size=1m,nr_inodes=2")
    daemon = rig.daemon("", processes=processes)
    daemon.start()
    uids.upload(daemon.inbox / "two.edi", one_interchange([("PO54801", "A"), ("PO54802", "B")]))

    def written() -> list[str]:
        return sorted(n for n in os.listdir(outbox) if n.endswith(".json"))

    poll_until(lambda: any(j["status"] == "interrupted" for j in daemon.jobs()), what="cut short")
    assert len(written()) == 1
    subprocess.run(["mount", "-o", "remount,nr_inodes=100", str(outbox)], check=True)
    poll_until(lambda: settled(daemon, 1), timeout=20, what="filed")
    assert daemon.listing(daemon.done) == ["two.edi"]
    assert [n.split(".")[0] for n in written()] == ["PO54801", "PO54802"]
    said = acks_say(daemon.root / "acks")
    assert list(said.values()) == [["AK5*A~", "AK5*A~", "AK9*A*2*2*2~"]], said


def test_a_file_waiting_for_the_outbox_is_not_lost_to_a_new_upload_of_its_name(rig):
    """No ERP; the order outbox read-only. The partner uploads ``850.edi``
    (PO 00054950); the job is cut short and the file waits for its next
    try back in the partner's inbox under its name. The partner's next
    order comes under the same name (``850.edi``, PO 00054951), as a
    fixed-name SFTP client sends them, the first having been taken. The
    outbox writable again. Expected (no data lost; an acknowledgement owed
    waits claimed in processing/): both orders written to the outbox."""
    outbox = rig.tmpfs(rig.root / "outbox", "size=1m")
    daemon = rig.daemon("")
    daemon.start()
    subprocess.run(["mount", "-o", "remount,ro", str(outbox)], check=True)
    uids.upload(daemon.inbox / "850.edi", make_po(54950))
    # (Fixed the same session: the file waits claimed in processing/, not in
    # the inbox, where it was handed back as the tester found it.)
    poll_until(
        lambda: (
            any(e.get("status") == "interrupted" for e in daemon.events("job_finished"))
            and daemon.listing(daemon.inbox) == []
        ),
        what="the first order cut short, its file waiting",
    )
    uids.upload(daemon.inbox / "850.edi", make_po(54951))
    subprocess.run(["mount", "-o", "remount,rw", str(outbox)], check=True)
    poll_until(lambda: os.listdir(outbox), timeout=20, what="an order written")
    poll_until(lambda: settled(daemon, 2), timeout=70, what="both filed")
    written = sorted(n.split(".")[0] for n in os.listdir(outbox) if n.endswith(".json"))
    assert written == ["00054950", "00054951"]


def test_a_reload_to_inotify_at_the_watch_limit_is_refused_not_fatal(tmp_path, erp):
    """A user namespace allowing one inotify watch; the shared inbox and a
    partner's, ``observer = "polling"``. A reload changing only
    ``observer`` to ``"inotify"`` (two watches needed). As round 52's
    reload adding an inbox at the limit: should be refused (the daemon
    going on polling), not fatal."""
    daemon, folder, section = limited(tmp_path, erp.url, observer="polling", watches=1)
    try:
        daemon.start()
        daemon.base_config = daemon.base_config.replace(
            'observer = "polling"', 'observer = "inotify"'
        )
        daemon.sighup(section)
        poll_until(
            lambda: daemon.events("reload_refused") or not daemon.alive(), what="reload judged"
        )
        assert daemon.alive(), daemon.events("cannot_watch")
        both_posted(daemon, folder)
    finally:
        daemon.close()


def test_directories_left_in_place_are_logged_once_across_reloads(daemons, erp):
    """Five directories in the inbox, then two reloads (SIGHUP, the same
    configuration), an upload after each. README: a directory "is left in
    place ..., logged once as ``inbox_entry_left``"; with thousands of them
    (which README says keep no upload waiting) each reload writes thousands
    of warnings. Should: five lines."""
    daemon = daemons(erp.url)
    daemon.start()
    for n in range(5):
        (daemon.inbox / f"d{n}").mkdir()
    poll_until(lambda: len(daemon.events("inbox_entry_left")) >= 5, what="reported")
    for n in range(2):
        daemon.reload("")
        uids.upload(daemon.inbox / f"a{n}.edi", make_po(54960 + n))
        poll_until(lambda k=n: len(daemon.listing(daemon.done)) == k + 1, what="posted")
    assert len(daemon.events("inbox_entry_left")) == 5
