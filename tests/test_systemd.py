"""The systemd unit, sysusers and tmpfiles snippets, checked by systemd's own tools."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edi_inbox.config import DaemonSettings

SYSTEMD = Path(__file__).parent.parent / "systemd"
UNIT = SYSTEMD / "edi-inbox.service"
SERVE_UNIT = SYSTEMD / "edi-inbox-serve.service"  # edi-inbox serve, hardened alike
MAX_EXPOSURE = 2.0


def need(tool: str) -> str:
    """The tool's path; skipped when absent, except under CI=true where it must be there."""
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {tool} is missing: .ci/run installs systemd")
        pytest.skip(f"{tool} is not installed (apt-get install systemd)")
    return path


def unit_with_real_exec(tmp_path: Path, unit: Path = UNIT) -> Path:
    """The unit with ExecStart pointing at this venv's edi-inbox: verify checks that
    the binary exists, and /usr/bin/edi-inbox exists only once packaged."""
    script = Path(sys.executable).parent / "edi-inbox"
    if not script.exists():
        script = Path("/bin/true")
    text = unit.read_text().replace("ExecStart=/usr/bin/edi-inbox", f"ExecStart={script}")
    copy = tmp_path / unit.name
    copy.write_text(text)
    return copy


def unit_settings(text: str | None = None) -> dict[str, list[str]]:
    """Every KEY=VALUE line of the unit, or of ``text`` (a key may repeat)."""
    values: dict[str, list[str]] = {}
    for line in (UNIT.read_text() if text is None else text).splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|min)?", value)
    assert match, value
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


@pytest.mark.parametrize("original", [UNIT, SERVE_UNIT], ids=lambda p: p.name)
def test_unit_verifies(tmp_path, original):
    """systemd-analyze verify accepts the unit without a warning."""
    tool = need("systemd-analyze")
    unit = unit_with_real_exec(tmp_path, original)
    done = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    ours = [line for line in done.stderr.splitlines() if original.name in line]
    assert done.returncode == 0 and not ours, done.stderr


@pytest.mark.parametrize("original", [UNIT, SERVE_UNIT], ids=lambda p: p.name)
def test_unit_security_exposure_at_most_2(tmp_path, original):
    """systemd-analyze security --offline rates the unit's exposure 2.0 or below."""
    tool = need("systemd-analyze")
    help_text = subprocess.run(
        [tool, "security", "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    if "--offline" not in help_text:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    unit = unit_with_real_exec(tmp_path, original)
    done = subprocess.run(
        [tool, "security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, done.stdout
    assert done.returncode == 0, done.stdout


def test_unit_contract():
    """Type=notify with a watchdog, restart on failure, and a stop timeout that covers
    shutdown_timeout_seconds plus a margin to hand files back."""
    values = unit_settings()
    assert values["Type"] == ["notify"]
    assert values["Restart"] == ["on-failure"]
    assert values["ExecStart"] == ["/usr/bin/edi-inbox run"]
    assert seconds(values["WatchdogSec"][0]) >= 10
    stop = seconds(values["TimeoutStopSec"][0])
    assert stop >= DaemonSettings().shutdown_timeout_seconds + 10
    # Its own group: what it writes is closed to the partners; in theirs to
    # read and rename their uploads.
    assert values["User"] == ["edi-inbox"] and values["Group"] == ["edi-inbox"]
    assert values["SupplementaryGroups"] == ["sftp-partners"]
    assert values["StateDirectoryMode"] == ["0751"]
    assert values["StateDirectory"] == ["edi-inbox"]
    assert values["ConfigurationDirectory"] == ["edi-inbox"]
    assert values["CapabilityBoundingSet"] == values["AmbientCapabilities"] == ["CAP_LEASE"]
    assert values["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    for key in ("ProtectSystem", "ProtectHome", "PrivateTmp", "NoNewPrivileges"):
        assert values[key][0] in ("strict", "yes"), key
    assert "@system-service" in values["SystemCallFilter"]


def test_sysusers_creates_user_in_sftp_group(tmp_path):
    """systemd-sysusers (into a scratch root) creates edi-inbox, a member of sftp-partners,
    and its own group edi-inbox (the config's group)."""
    tool = need("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    conf = SYSTEMD / "edi-inbox.sysusers.conf"
    subprocess.run(
        [tool, f"--root={tmp_path}", str(conf.resolve())],
        check=True,
        capture_output=True,
        timeout=60,
    )
    passwd = (tmp_path / "etc" / "passwd").read_text()
    group = (tmp_path / "etc" / "group").read_text()
    assert re.search(r"^edi-inbox:x:\d+:\d+:.*:/var/lib/edi-inbox:", passwd, re.M)
    assert re.search(r"^sftp-partners:x:\d+:edi-inbox$", group, re.M)
    assert re.search(r"^edi-inbox:x:\d+:", group, re.M)


def test_tmpfiles_creates_the_folders(tmp_path):
    """systemd-tmpfiles (into a scratch root) creates the folders; the inbox is
    setgid+sticky in the partners' group; the state folder lets a partner
    pass through to it and nothing else; the daemon's folders are its own
    group's, closed to the partners."""
    tool = need("systemd-tmpfiles")
    (tmp_path / "etc").mkdir()
    subprocess.run(
        [
            need("systemd-sysusers"),
            f"--root={tmp_path}",
            str(SYSTEMD.resolve() / "edi-inbox.sysusers.conf"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    conf = SYSTEMD / "edi-inbox.tmpfiles.conf"
    subprocess.run(
        [tool, f"--root={tmp_path}", "--create", str(conf.resolve())],
        check=True,
        capture_output=True,
        timeout=60,
    )
    base = tmp_path / "var" / "lib" / "edi-inbox"
    for name in ("inbox", "processing", "done", "failed", "outbox", "acks"):
        assert (base / name).is_dir(), name
    mode = (base / "inbox").stat().st_mode
    assert mode & stat.S_ISGID and mode & stat.S_ISVTX
    assert stat.S_IMODE(mode) & 0o070 == 0o070  # the SFTP group may upload
    assert stat.S_IMODE((base / "done").stat().st_mode) & 0o022 == 0  # partners cannot write
    groups = dict(
        (line.split(":")[0], int(line.split(":")[2]))
        for line in (tmp_path / "etc" / "group").read_text().splitlines()
    )
    assert (base / "inbox").stat().st_gid == groups["sftp-partners"]
    assert stat.S_IMODE(base.stat().st_mode) == 0o751
    for name in ("processing", "done", "failed", "outbox", "acks"):
        st = (base / name).stat()
        assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (groups["edi-inbox"], 0o750), name


def test_serve_unit_is_hardened_like_the_daemons():
    """Every hardening line of edi-inbox.service is in the serve unit, with the same value
    (but the daemon's one capability, CAP_LEASE, which the watcher needs: the serve unit
    has none); it runs edi-inbox serve as the daemon's user and groups."""
    serve, daemon = unit_settings(SERVE_UNIT.read_text()), unit_settings()
    assert serve["ExecStart"] == ["/usr/bin/edi-inbox serve"]
    assert serve["Restart"] == ["on-failure"]
    start = UNIT.read_text().index("# Hardening")
    end = UNIT.read_text().index("# Bounded memory")
    hardening = unit_settings(UNIT.read_text()[start:end])
    assert hardening  # the daemon's block was found
    for key, values in hardening.items():
        if key in ("CapabilityBoundingSet", "AmbientCapabilities"):
            assert serve[key] == [""], key
        else:
            assert serve.get(key) == values, key
    for key in ("User", "Group", "SupplementaryGroups", "UMask", "ReadWritePaths"):
        assert serve[key] == daemon[key], key
