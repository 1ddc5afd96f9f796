"""systemd/edi-inbox-serve.service, checked by systemd's own tools as the daemon's unit is."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).parent.parent / "systemd"
UNIT = SYSTEMD / "edi-inbox-serve.service"
DAEMON_UNIT = SYSTEMD / "edi-inbox.service"
MAX_EXPOSURE = 2.0


def need(tool: str) -> str:
    """The tool's path; skipped when absent, except under CI=true where it must be there."""
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {tool} is missing: .ci/run installs systemd")
        pytest.skip(f"{tool} is not installed (apt-get install systemd)")
    return path


def unit_with_real_exec(tmp_path: Path) -> Path:
    """The unit with ExecStart at this venv's edi-inbox (verify checks it exists)."""
    script = Path(sys.executable).parent / "edi-inbox"
    if not script.exists():
        script = Path("/bin/true")
    text = UNIT.read_text().replace("ExecStart=/usr/bin/edi-inbox", f"ExecStart={script}")
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    return copy


def settings(unit: Path) -> dict[str, list[str]]:
    """Every KEY=VALUE line of the unit (a key may repeat)."""
    return settings_text(unit.read_text())


def test_serve_unit_verifies(tmp_path):
    """systemd-analyze verify accepts the serve unit without a warning."""
    tool = need("systemd-analyze")
    unit = unit_with_real_exec(tmp_path)
    done = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    ours = [line for line in done.stderr.splitlines() if UNIT.name in line]
    assert done.returncode == 0 and not ours, done.stderr


def test_serve_unit_security_exposure_at_most_2(tmp_path):
    """systemd-analyze security --offline rates the serve unit's exposure 2.0 or below."""
    tool = need("systemd-analyze")
    help_text = subprocess.run(
        [tool, "security", "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    if "--offline" not in help_text:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    unit = unit_with_real_exec(tmp_path)
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


def test_serve_unit_is_hardened_like_the_daemons():
    """Every hardening line of edi-inbox.service is in the serve unit, with the same value;
    it runs edi-inbox serve as the daemon's user and groups."""
    serve, daemon = settings(UNIT), settings(DAEMON_UNIT)
    assert serve["ExecStart"] == ["/usr/bin/edi-inbox serve"]
    assert serve["Restart"] == ["on-failure"]
    start = DAEMON_UNIT.read_text().index("# Hardening")
    end = DAEMON_UNIT.read_text().index("# Bounded memory")
    hardening = settings_text(DAEMON_UNIT.read_text()[start:end])
    assert hardening  # the daemon's block was found
    for key, values in hardening.items():
        assert serve.get(key) == values, key
    for key in ("User", "Group", "SupplementaryGroups", "UMask", "ReadWritePaths"):
        assert serve[key] == daemon[key], key


def settings_text(text: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values
