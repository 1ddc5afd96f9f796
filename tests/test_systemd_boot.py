"""The README's install under a real systemd, booted as PID 1 of a throwaway namespace.

The technique is ``../shared/RELIABILITY.md``'s ("Real deployments"): new mount,
PID, UTS, IPC, network and cgroup namespaces; an overlay over ``/`` whose upper
layer is a tmpfs, so nothing the install writes reaches the host; fresh
``/proc`` (``/proc/sys`` read-only), ``/sys`` read-only, a cgroup2 mount and a
small ``/dev``; ``pivot_root``; then ``/usr/lib/systemd/systemd`` with
``container=`` set. Commands run inside through ``nsenter -a``.

The install is README's "Install as a service" block, run as written by bash
(``-e``) in a copy of this checkout, as a fresh root login on Debian would
(``PATH`` of /usr and /bin only). The namespace has no network: pip finds
edi-inbox's dependencies in a wheelhouse built here beforehand
(``PIP_NO_INDEX``, ``PIP_FIND_LINKS``).

At the end the namespace's PID 1 is SIGKILLed (the kernel then kills every
process in it, and its mounts go with it) and its cgroups are removed. Skipped
where systemd cannot be booted (not root, no systemd, no cgroup2); under
``CI=true`` that fails instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import GOOD, make_po, poll_until, sent_by

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
SYSTEMD = "/usr/lib/systemd/systemd"
UNIT = "edi-inbox"
STATE = Path("/var/lib/edi-inbox")
CONFIG = "/etc/edi-inbox/edi-inbox.toml"
PARTNER = "partner1"  # an SFTP account, created in the namespace
MAX_EXPOSURE = 2.0
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Runs as PID 1 of the new PID namespace, in the new mount namespace: builds the
# root and execs systemd. $1: an empty directory for the tmpfs; $2: the folder
# holding the checkout's copy and the wheelhouse, bound at /stage.
BOOT = r"""
set -eu
W="$1"
mount --make-rprivate /
mount -t tmpfs -o size=2g,mode=0755 edi-boot "$W"
mkdir "$W/upper" "$W/work" "$W/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$W/upper,workdir=$W/work" "$W/root"
R="$W/root"
mount -t proc proc "$R/proc"
mount --bind "$R/proc/sys" "$R/proc/sys"
mount -o remount,bind,ro "$R/proc/sys"
mount -t sysfs -o ro sysfs "$R/sys"
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=0755,size=1m,nosuid dev "$R/dev"
for n in null zero full random urandom tty; do
  touch "$R/dev/$n"
  mount --bind "/dev/$n" "$R/dev/$n"
done
mkdir "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o mode=1777 shm "$R/dev/shm"
mount -t tmpfs -o mode=0755 run "$R/run"
# A /tmp and /var/tmp of its own, as a machine has: systemd-tmpfiles walks them at boot.
mount -t tmpfs -o mode=1777 tmp "$R/tmp"
mount -t tmpfs -o mode=1777 vartmp "$R/var/tmp"
mkdir -p "$R/stage" "$R/.oldroot"
mount --bind "$2" "$R/stage"
cd "$R"
pivot_root . .oldroot
umount -l /.oldroot
rmdir /.oldroot
exec env -i container=edi-inbox-test "$3" --unit=basic.target
"""


def need(condition: bool, why: str) -> None:
    """Skip unless ``condition``; under CI=true, fail: .ci/run must boot systemd."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but a real systemd cannot be booted: {why}")
    pytest.skip(why)


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    return poll_until(condition, timeout, interval=0.1, what=what)


def readme_block(heading: str) -> str:
    """The first sh block under README's ``heading``."""
    section = README.read_text().split(heading + "\n", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, f"README has no sh block under {heading!r}"
    return match.group(1)


def cgroup2_mount() -> Path | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" - ")
        if len(fields) == 2 and fields[1].split()[0] == "cgroup2":
            return Path(fields[0].split()[4])
    return None


def own_cgroup() -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    return "/"


class Machine:
    """A booted systemd: commands run inside with ``run``, files read through
    ``/proc/PID/root``."""

    def __init__(self, pid1: int, log: Path) -> None:
        self.pid1 = pid1
        self.log = log
        self.root = Path(f"/proc/{pid1}/root")
        self.installed: subprocess.CompletedProcess[str] | None = None  # README's commands

    def run(
        self,
        script: str,
        *,
        check: bool = True,
        input: bytes | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """``script`` run by bash inside, as a fresh root login (clean environment)."""
        environ = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", **(env or {})}
        argv = ["nsenter", "-t", str(self.pid1), "-a", "env", "-i"]
        argv += [f"{k}={v}" for k, v in environ.items()]
        argv += ["bash", "-euo", "pipefail", "-c", script]
        done = subprocess.run(argv, input=input, capture_output=True, timeout=timeout)
        result = subprocess.CompletedProcess(
            done.args,
            done.returncode,
            done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"exit {result.returncode}: {script}\n--- stdout\n{result.stdout}"
                f"\n--- stderr\n{result.stderr[-6000:]}\n--- journal\n{self.journal()[-6000:]}"
            )
        return result

    def show(self, *props: str) -> dict[str, str]:
        out = self.run(f"systemctl show {UNIT} " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def running(self) -> dict[str, str] | None:
        """The unit's properties once it is active (running) with a main process."""
        props = self.show("ActiveState", "SubState", "MainPID", "NRestarts", "StatusText")
        up = (props["ActiveState"], props["SubState"]) == ("active", "running")
        return props if up and props["MainPID"] != "0" else None

    def journal(self, cursor: str = "") -> str:
        after = f"--after-cursor='{cursor}'" if cursor else ""
        done = self.run(f"journalctl -u {UNIT} --no-pager -o short {after}", check=False)
        return done.stdout

    def cursor(self) -> str:
        out = self.run("journalctl -n 0 --show-cursor --no-pager", check=False).stdout
        match = re.search(r"-- cursor: (\S+)", out)
        return match.group(1) if match else ""

    def path(self, inside: Path) -> Path:
        return self.root / inside.relative_to("/")

    def unit_pids(self) -> list[int]:
        procs = self.path(Path(f"/sys/fs/cgroup/system.slice/{UNIT}.service/cgroup.procs"))
        with contextlib.suppress(OSError):
            return [int(p) for p in procs.read_text().split()]
        return []


def stage(where: Path) -> None:
    """A copy of the checkout (what the install reads) and a wheelhouse for pip."""
    src = where / "edi-inbox"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".venv", ".git")
    for name in ("daemon", "systemd", "config"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("README.md", "setup.cfg", "pyproject.toml", "CHANGELOG.md"):
        shutil.copy2(ROOT / name, src / name)
    wheels = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--wheel-dir",
            str(where / "wheelhouse"),
            f"{src}[postgres]",
            "setuptools>=64",
            "wheel",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    need(wheels.returncode == 0, f"pip wheel could not build the wheelhouse: {wheels.stderr}")
    for built in (src / "build", *src.glob("daemon/*.egg-info")):
        shutil.rmtree(built, ignore_errors=True)


@contextlib.contextmanager
def booted(where: Path) -> Iterator[Machine]:
    """systemd as PID 1 of a throwaway namespace; everything in it killed at the end."""
    need(os.geteuid() == 0, "booting systemd in a namespace needs root")
    tools = ("unshare", "nsenter", "setpriv", "mount", "pivot_root")
    need(all(shutil.which(t) for t in tools), f"util-linux tools missing: {tools}")
    need(Path(SYSTEMD).exists(), f"{SYSTEMD} is missing (apt-get install systemd)")
    mount = cgroup2_mount()
    need(mount is not None, "no cgroup2 file system mounted")
    assert mount is not None
    cgroup = mount / own_cgroup().lstrip("/") / f"edi-inbox-boot-{os.getpid()}"
    try:
        cgroup.mkdir()
    except OSError as exc:
        need(False, f"cannot make a cgroup for the namespace: {exc}")
    (where / "ns").mkdir()
    log = where / "boot.log"
    # In a cgroup of its own (removed at the end), dying with this process.
    launch = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
    argv = ["sh", "-c", launch, str(cgroup), "setpriv", "--pdeathsig", "KILL"]
    argv += ["unshare", "--mount", "--pid", "--fork", "--uts", "--ipc", "--net", "--cgroup"]
    argv += ["--kill-child", "sh", "-c", BOOT, "boot", str(where / "ns"), str(where), SYSTEMD]
    with log.open("wb") as out:
        unshare = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    pid1 = 0
    try:

        def child() -> int:
            if unshare.poll() is not None:
                pytest.fail(f"the namespace ended at once: {log.read_text()}")
            path = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children")
            with contextlib.suppress(OSError):
                return int(next(iter(path.read_text().split()), "0"))
            return 0

        pid1 = wait_for(child, 10, "the namespace's PID 1")
        machine = Machine(pid1, log)

        def up() -> bool:
            if unshare.poll() is not None:
                pytest.fail(f"systemd ended: {log.read_text()[-4000:]}")
            state = machine.run("systemctl is-system-running || true", check=False).stdout
            return state.strip() in ("running", "degraded")

        wait_for(up, 30, "systemd to boot")
        yield machine
    finally:
        if pid1:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid1, signal.SIGKILL)  # the kernel kills the whole PID namespace
        with contextlib.suppress(ProcessLookupError):
            unshare.kill()
        unshare.wait(30)
        remove_cgroup(cgroup)


def remove_cgroup(cgroup: Path) -> None:
    """Once no process is left in it, the cgroup tree systemd made, leaves first."""
    events = cgroup / "cgroup.events"

    def empty() -> bool:
        return not events.exists() or "populated 0" in events.read_text()

    wait_for(empty, 30, f"the processes of {cgroup} to end")
    inner = [p for p in cgroup.rglob("*") if p.is_dir()]
    for path in sorted(inner, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(FileNotFoundError):
            path.rmdir()
    cgroup.rmdir()


@contextlib.contextmanager
def installed(where: Path) -> Iterator[Machine]:
    """systemd booted in ``where`` (staged there: what else is in it is in
    /stage too), edi-inbox installed by README's commands and started, and a
    partner's account."""
    stage(where)
    with booted(where) as machine:
        machine.installed = machine.run(
            "cd /stage/edi-inbox\n" + readme_block("### Install as a service"),
            env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/stage/wheelhouse"},
            timeout=300,
        )
        machine.run(f"useradd -M -N -g sftp-partners -s /usr/sbin/nologin {PARTNER}")
        yield machine


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    """systemd booted, edi-inbox installed by README's commands and started."""
    with installed(tmp_path_factory.mktemp("boot")) as machine:
        yield machine


def set_processes(machine: Machine, n: int) -> dict[str, str]:
    """``[daemon] processes = n`` in the installed config; the service restarted and up."""
    machine.run(f"sed -i 's/^processes = .*/processes = {n}/' {CONFIG}")
    machine.run(f"systemctl restart {UNIT}")
    return wait_for(machine.running, 30, "the service to be active (running)")


def upload(machine: Machine, name: str, data: bytes) -> None:
    """``data`` written into the inbox in place by the partner's own user, as sftp-server does."""
    inbox = STATE / "inbox" / name
    machine.run(
        f"setpriv --reuid={PARTNER} --regid=sftp-partners --init-groups "
        f"sh -c 'umask 022 && cat > {inbox}'",
        input=data,
    )


def test_readme_install_brings_the_service_up_ready(machine):
    """README's commands, as written, leave the unit active (running) after READY=1, the
    config root:edi-inbox 0640 in /etc/edi-inbox 0750 and readable by the service, no
    warning from systemd, and README's `edi-inbox status` (as the service user) exit 0."""
    props = wait_for(machine.running, 30, "the service to be active (running)")
    assert props["NRestarts"] == "0", machine.journal()
    installed = machine.installed
    assert installed is not None
    assert "daemon " in installed.stdout and ": running," in installed.stdout, installed.stdout
    folder = os.stat(machine.path(Path("/etc/edi-inbox")))
    config = os.stat(machine.path(Path(CONFIG)))
    group = machine.run("getent group edi-inbox | cut -d: -f3").stdout.strip()
    assert (folder.st_uid, folder.st_gid, folder.st_mode & 0o7777) == (0, int(group), 0o750)
    assert (config.st_uid, config.st_gid, config.st_mode & 0o7777) == (0, int(group), 0o640)
    journal = machine.journal()
    assert "Permission denied" not in journal and "mode is different" not in journal, journal


def test_systemd_analyze_security_of_the_running_unit(machine):
    """`systemd-analyze security edi-inbox` on the installed unit: exposure 2.0 or below."""
    out = machine.run(f"systemd-analyze security --no-pager {UNIT}").stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert match, out
    assert float(match.group(1)) <= MAX_EXPOSURE, out


def test_partner_upload_reaches_done_with_its_997_in_two_processes(machine):
    """With `processes = 2` under the unit's hardening, a partner's upload (owned by the
    partner, 0644, protected hard links on) is filed in done/ with its 997 in acks/; the
    STATUS= line and `edi-inbox status` as the service user say so."""
    cursor = machine.cursor()
    set_processes(machine, 2)
    wait_for(lambda: len(machine.unit_pids()) >= 3, 30, "the main process and 2 children")
    wait_for(
        lambda: "worker_processes_started" in machine.journal(cursor),
        30,
        "worker_processes_started in the journal",
    )
    partner = int(machine.run(f"id -u {PARTNER}").stdout)
    upload(machine, "po-boot-1.edi", make_po(9101, GOOD))
    done = machine.path(STATE / "done" / "po-boot-1.edi")
    wait_for(done.exists, 60, "the partner's upload in done/")
    assert done.stat().st_uid == partner
    assert not machine.path(STATE / "inbox" / "po-boot-1.edi").exists()
    acks = machine.path(STATE / "acks")
    wait_for(lambda: any(b"ST*997*" in p.read_bytes() for p in acks.iterdir()), 10, "a 997")
    status = wait_for(
        lambda: (text := machine.show("StatusText")["StatusText"]) and "done 1," in text and text,
        30,
        "the STATUS= line to count the file done",
    )
    assert status.startswith("queue 0, in flight 0"), status
    doc = json.loads(machine.run("runuser -u edi-inbox -- edi-inbox status --json").stdout)
    assert doc["running"] is True
    assert doc["last_24h"]["succeeded"] >= 1, doc


def test_an_upload_open_across_a_restart_waits_for_its_close(machine):
    """A partner's session has written all of an interchange but its last
    byte and keeps the file open while the service restarts: no open event
    from before the start can be seen, but with the unit's CAP_LEASE the
    kernel tells (a read lease refused on the partner's file): the upload
    waits, ``upload_held`` "open for writing", until the close; then one
    job, its bytes whole, one 997 (outsider round 15)."""
    wait_for(machine.running, 30, "the service to be active (running)")
    name = "po-open-across-restart.edi"
    fifo, target = Path("/run/edi-boot-upload.fifo"), STATE / "inbox" / name
    data = make_po(9301, GOOD)
    machine.run(f"rm -f {fifo} && mkfifo -m 0644 {fifo}")
    machine.run(  # the partner's session: writes what comes through the FIFO
        f"setsid setpriv --reuid={PARTNER} --regid=sftp-partners --init-groups"
        f" sh -c 'umask 022 && exec cat {fifo} > {target}' </dev/null >/dev/null 2>&1 &"
    )

    def session_open() -> int | None:
        with contextlib.suppress(OSError):  # ENXIO until the partner's side has it open
            return os.open(machine.path(fifo), os.O_WRONLY | os.O_NONBLOCK)
        return None

    session = wait_for(session_open, 10, "the partner's session to open its upload")
    inbox, done = machine.path(target), machine.path(STATE / "done" / name)
    try:
        os.write(session, data[:-1])
        wait_for(lambda: inbox.exists() and inbox.stat().st_size == len(data) - 1, 10, "bytes")
        cursor = machine.cursor()
        machine.run(f"systemctl restart {UNIT}")
        wait_for(lambda: "open for writing" in machine.journal(cursor), 60, "upload_held")
        assert inbox.exists() and not done.exists()
        os.write(session, data[-1:])
    finally:
        os.close(session)
    wait_for(done.exists, 60, "the upload in done/ once closed")
    assert done.read_bytes() == data
    acks = machine.path(STATE / "acks")

    def answers() -> list[str]:
        return [p.name for p in acks.iterdir() if p.name.startswith(name) and p.suffix == ".997"]

    wait_for(answers, 10, "its 997")
    assert len(answers()) == 1, answers()
    journal = machine.journal(cursor)
    assert "job_interrupted" not in journal and "changed while" not in journal, journal


def test_stop_with_worker_processes_kills_nothing(machine):
    """`systemctl stop` with `processes = 2`: the daemon and everything it started end on
    SIGTERM; systemd SIGKILLs nothing (multiprocessing's resource tracker included)."""
    set_processes(machine, 2)
    wait_for(lambda: len(machine.unit_pids()) >= 3, 30, "the main process and 2 children")
    cursor = machine.cursor()
    machine.run(f"systemctl stop {UNIT}")
    journal = machine.journal(cursor)
    props = machine.show("ActiveState", "Result")
    machine.run(f"systemctl start {UNIT}")
    assert "SIGKILL" not in journal, journal
    assert props == {"ActiveState": "inactive", "Result": "success"}, (props, journal)


def test_watchdog_restarts_a_stopped_daemon(machine):
    """The main process SIGSTOPped: its WATCHDOG=1 pings stop, systemd aborts it and
    starts it again (WatchdogSec, Restart=on-failure). A drop-in in /run shortens
    WatchdogSec for the test."""
    dropin = "/run/systemd/system/edi-inbox.service.d"
    machine.run(
        f"mkdir -p {dropin} && printf '[Service]\\nWatchdogSec=3s\\nLimitCORE=0\\n'"
        f" > {dropin}/watchdog.conf && systemctl daemon-reload && systemctl restart {UNIT}"
    )
    try:
        before = wait_for(machine.running, 30, "the service to be active (running)")
        cursor = machine.cursor()
        machine.run(f"kill -STOP {before['MainPID']}")

        def restarted() -> dict[str, str] | None:
            props = machine.running()
            if props and props["MainPID"] != before["MainPID"]:
                return props
            return None

        after = wait_for(restarted, 60, "a restart by the watchdog")
        assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
        assert "Watchdog timeout" in machine.journal(cursor)
    finally:
        machine.run(f"rm -rf {dropin} && systemctl daemon-reload")


def test_readme_onboarding_adds_a_partner_on_a_reload(machine):
    """README's "Onboard a partner" as written: the partner's SFTP folders, the
    ReadWritePaths drop-in, its section and `systemctl reload`. Its upload, as its
    own user, reaches done/ with the 997 in its outbox, 0640 and readable by it
    alone: another partner reads neither it nor the daemon's database and
    folders; a file with another sender in its folder is refused; a broken
    config on a reload is refused and the service goes on."""
    set_processes(machine, 1)
    cursor = machine.cursor()
    machine.run(readme_block("### Onboard a partner"))
    wait_for(
        lambda: (
            "reloading" in (j := machine.journal(cursor))
            and "daemon_ready" in j.split("reloading", 1)[1]
        ),
        30,
        "the reload in the journal",
    )
    restarts = wait_for(machine.running, 30, "the service to be active (running)")["NRestarts"]
    acme = Path("/srv/sftp/acme")

    def upload_as_acme(name: str, data: bytes) -> None:
        machine.run(
            "setpriv --reuid=acme --regid=acme --init-groups "
            f"sh -c 'umask 022 && cat > {acme / 'in' / name}'",
            input=data,
        )

    upload_as_acme("po-acme-1.edi", sent_by(make_po(9201, GOOD), "ZZ:ACMEFOODS"))
    upload_as_acme("spoof.edi", sent_by(make_po(9202, GOOD), "ZZ:SOMEONEELSE"))
    wait_for(machine.path(STATE / "done" / "po-acme-1.edi").exists, 60, "acme's file in done/")
    wait_for(machine.path(STATE / "failed" / "spoof.edi").exists, 60, "the spoof in failed/")
    out = machine.path(acme / "out")
    answers = wait_for(
        lambda: (found := sorted(os.listdir(out))) and len(found) >= 3 and found,
        30,
        "acme's 997s and the spoof's report in its outbox",
    )
    assert "spoof.edi.error.json" in answers, answers
    first = next(a for a in answers if a.startswith("po-acme-1.edi.") and a.endswith(".997"))
    st = (out / first).stat()
    owner = machine.run("id -u edi-inbox && getent group acme | cut -d: -f3").stdout
    assert [st.st_uid, st.st_gid] == [int(n) for n in owner.split()]
    assert st.st_mode & 0o777 == 0o640
    as_acme = "setpriv --reuid=acme --regid=acme --init-groups"
    read = machine.run(f"{as_acme} cat {acme / 'out' / first}")
    assert "ST*997*" in read.stdout
    # Another partner (the shared inbox's) reads none of it, nor what the
    # daemon keeps: the database, done/, acks/, the state folder's listing.
    for denied in (
        f"cat {acme / 'out' / first}",
        f"head -c 16 {STATE / 'edi-inbox.db'}",
        f"ls {STATE / 'done'}",
        f"ls {STATE / 'acks'}",
        f"ls {STATE}",
    ):
        tried = machine.run(
            f"setpriv --reuid={PARTNER} --regid=sftp-partners --init-groups {denied}", check=False
        )
        assert tried.returncode != 0 and "Permission denied" in tried.stderr, (denied, tried)
    jobs = json.loads(machine.run("runuser -u edi-inbox -- edi-inbox jobs list --json").stdout)
    spoof = next(j for j in jobs if j["file_name"] == "spoof.edi")
    assert spoof["partner"] == "acme" and "ZZ:SOMEONEELSE" in spoof["error"], spoof

    cursor = machine.cursor()
    machine.run(f"printf '[partners.broken]\\nids = [\"NOT-AN-ID\"]\\n' >> {CONFIG}")
    machine.run(f"systemctl reload {UNIT}")
    try:
        wait_for(lambda: "reload_refused" in machine.journal(cursor), 60, "reload_refused")
        props = wait_for(machine.running, 30, "the service still active (running)")
        assert props["NRestarts"] == restarts
        # The running configuration goes on: acme's next file is posted as acme's.
        upload_as_acme("po-acme-2.edi", sent_by(make_po(9203, GOOD), "ZZ:ACMEFOODS"))
        wait_for(machine.path(STATE / "done" / "po-acme-2.edi").exists, 60, "po-acme-2 in done/")
    finally:
        machine.run(f"sed -i '/^\\[partners.broken\\]/,$d' {CONFIG}")
