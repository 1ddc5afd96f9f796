"""Settings: defaults, TOML, environment overrides, and errors that name the key."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edi_inbox import config
from edi_inbox.errors import ConfigError

import uids

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edi-inbox.toml"
    path.write_text(text)
    return path


def test_defaults_need_no_file(tmp_path):
    """With no file and no variables every key has a working default."""
    settings = config.load(None, {"XDG_STATE_HOME": str(tmp_path)})
    assert settings.paths.root == tmp_path / "edi-inbox"
    assert settings.paths.inbox == tmp_path / "edi-inbox" / "inbox"
    assert settings.database_url == f"sqlite:///{tmp_path / 'edi-inbox' / 'edi-inbox.db'}"
    assert settings.erp.url == ""
    assert settings.daemon.ignore_patterns == (".*", "*.filepart", "*.part", "*.tmp")


def test_a_default_config_out_of_the_users_reach_is_a_clear_error(tmp_path):
    """/etc/edi-inbox/edi-inbox.toml in a folder the user may not search (a
    partner or support person running ``edi-inbox status``): a ConfigError
    naming the file and the reason, never a traceback, never the defaults."""
    uids.need_root()
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "edi-inbox.toml").write_text("[daemon]\nworkers = 2\n")
    folder.chmod(0o700)
    os.chmod(tmp_path, 0o755)
    code = (
        "import sys, pathlib\n"
        "from edi_inbox import config\n"
        f"config.DEFAULT_CONFIG_PATHS = (pathlib.Path({str(folder / 'edi-inbox.toml')!r}),)\n"
        "try:\n"
        "    config.load(environ={})\n"
        "except config.ConfigError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        uids.as_daemon_command([sys.executable, "-c", code]),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "edi-inbox.toml: cannot be read: Permission denied" in done.stdout, done.stdout


def test_systemd_state_directory_is_the_default_root(tmp_path):
    """Under systemd, StateDirectory= gives the root."""
    settings = config.load(None, {"STATE_DIRECTORY": "/var/lib/edi-inbox"})
    assert settings.paths.root == Path("/var/lib/edi-inbox")


def test_example_config_is_valid_and_matches_the_defaults(tmp_path):
    """config/edi-inbox.toml loads and states the built-in defaults."""
    env = {"XDG_STATE_HOME": str(tmp_path)}
    example = config.load(REPO / "config" / "edi-inbox.toml", env)
    defaults = config.load(None, env)
    assert example.replace(source=None) == defaults


def test_example_config_documents_every_key():
    """Every settings field appears in config/edi-inbox.toml."""
    text = (REPO / "config" / "edi-inbox.toml").read_text()
    for section, cls in config.SECTIONS.items():
        assert f"[{section}]" in text
        for field in cls.__dataclass_fields__:
            assert f"{field} =" in text, f"[{section}] {field} is not documented"


def test_file_values_and_folder_overrides(tmp_path):
    """A folder can be moved away from the root; the others follow the root."""
    path = write(
        tmp_path,
        f"""
[paths]
root = "{tmp_path}/state"
inbox = "{tmp_path}/sftp/inbox"
[daemon]
workers = 8
settle_seconds = 0.5
ignore_patterns = ["*.partial"]
""",
    )
    settings = config.load(path, {})
    assert settings.paths.inbox == tmp_path / "sftp" / "inbox"
    assert settings.paths.done == tmp_path / "state" / "done"
    assert settings.daemon.workers == 8
    assert settings.daemon.settle_seconds == 0.5
    assert settings.daemon.ignore_patterns == ("*.partial",)
    assert settings.source == path


def test_environment_overrides_the_file(tmp_path):
    """EDI_INBOX_<SECTION>_<KEY> wins over the file and is converted to the key's type."""
    path = write(tmp_path, '[erp]\nurl = "http://file"\n')
    env = {
        "EDI_INBOX_ERP_URL": "http://env",
        "EDI_INBOX_DAEMON_WORKERS": "3",
        "EDI_INBOX_ACK_ENABLED": "false",
        "EDI_INBOX_DAEMON_IGNORE_PATTERNS": ".*, *.upload",
        "EDI_INBOX_TEST_PG_URL": "postgresql://not-ours",
    }
    settings = config.load(path, env)
    assert settings.erp.url == "http://env"
    assert settings.daemon.workers == 3
    assert settings.ack.enabled is False
    assert settings.daemon.ignore_patterns == (".*", "*.upload")


def test_config_path_from_environment(tmp_path):
    """$EDI_INBOX_CONFIG names the file when no path is given."""
    path = write(tmp_path, "[daemon]\nworkers = 2\n")
    assert config.load(None, {"EDI_INBOX_CONFIG": str(path)}).daemon.workers == 2


def test_processes_auto_is_one_per_usable_cpu(tmp_path):
    """[daemon] processes = "auto" (in the file or the environment) is the number
    of CPUs the daemon may run on, its affinity mask; a number stays a number."""
    cpus = len(os.sched_getaffinity(0))
    path = write(tmp_path, '[daemon]\nprocesses = "auto"\n')
    assert config.load(path, {}).daemon.processes == cpus
    assert config.load(None, {"EDI_INBOX_DAEMON_PROCESSES": "AUTO"}).daemon.processes == cpus
    assert config.load(None, {"EDI_INBOX_DAEMON_PROCESSES": "3"}).daemon.processes == 3
    assert config.load(write(tmp_path, "[daemon]\nprocesses = 2\n"), {}).daemon.processes == 2


def test_processes_default_is_auto(tmp_path):
    """With no processes key, the daemon runs one worker process per usable CPU:
    the default is "auto", the fast setting (issue 13)."""
    cpus = len(os.sched_getaffinity(0))
    assert config.load(None, {"XDG_STATE_HOME": str(tmp_path)}).daemon.processes == cpus
    assert config.load(write(tmp_path, "[daemon]\nworkers = 4\n"), {}).daemon.processes == cpus
    assert config.DaemonSettings().processes == cpus


def test_processes_auto_follows_the_affinity_mask(tmp_path):
    """processes = "auto", and the default, count the CPUs this process may use
    (CPUAffinity=, taskset): on one CPU the jobs stay in the daemon's threads."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        settings = config.load(write(tmp_path, '[daemon]\nprocesses = "auto"\n'), {})
        default = config.load(None, {"XDG_STATE_HOME": str(tmp_path)})
    finally:
        os.sched_setaffinity(0, before)
    assert settings.daemon.processes == 1
    assert default.daemon.processes == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[erp]\ntimout = 3\n", "key 'timout' is not known"),
        ("[erp]\nurll = 'x'\n", "did you mean 'url'?"),
        ("[deamon]\nworkers = 1\n", "section [deamon] is not known; did you mean 'daemon'?"),
        ("[daemon]\nworkers = 'four'\n", "key 'workers' must be a whole number, not 'four'"),
        ("[daemon]\nworkers = 0\n", "'workers' must be at least 1"),
        ("[daemon]\nworkers = 100000\n", "'workers' must be at most 1024"),
        ("[daemon]\nprocesses = 0\n", "'processes' must be at least 1"),
        ("[daemon]\nprocesses = 'all'\n", "'processes' must be a whole number or \"auto\""),
        ("[daemon]\nprocesses = '0'\n", "'processes' must be at least 1"),
        ("[daemon]\nsettle_seconds = -1\n", "must be a finite number ≥ 0, got -1.0"),
        ("[daemon]\nmax_file_bytes = -1\n", "must not be negative"),
        ("[daemon]\nobserver = 'fanotify'\n", "must be one of auto, inotify, polling"),
        ("[ack]\nenabled = 'yes'\n", "must be true or false"),
        ("[erp\n", "not valid TOML"),
    ],
)
def test_errors_name_the_file_and_key(tmp_path, text, message):
    """A bad value or unknown key is a ConfigError naming the file and the key."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path, {})
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_bad_environment_value_names_the_variable(tmp_path):
    """A bad environment value names the variable it came from."""
    with pytest.raises(ConfigError, match="EDI_INBOX_DAEMON_WORKERS"):
        config.load(None, {"EDI_INBOX_DAEMON_WORKERS": "many"})


def test_missing_file_is_a_clear_error(tmp_path):
    """A named configuration file that does not exist is an error, not the defaults."""
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.toml", {})


@pytest.mark.parametrize(
    ("section", "key", "value", "shown"),
    [
        ("daemon", "settle_seconds", "nan", "nan"),
        ("daemon", "settle_seconds", "inf", "inf"),
        ("daemon", "incomplete_grace_seconds", "-inf", "-inf"),
        ("daemon", "rescan_seconds", "nan", "nan"),
        ("erp", "connect_timeout_seconds", "nan", "nan"),
        ("erp", "backoff_max_seconds", "inf", "inf"),
        ("database", "busy_timeout_seconds", "nan", "nan"),
    ],
)
def test_float_settings_must_be_finite_and_name_the_key(tmp_path, section, key, value, shown):
    """nan and inf (TOML literals or environment text) are refused, naming the key."""
    path = write(tmp_path, f"[{section}]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        config.load(path, {})
    assert f"[{section}] key '{key}' must be a finite number ≥ 0, got {shown}" in str(info.value)
    assert str(path) in str(info.value)
    variable = f"EDI_INBOX_{section.upper()}_{key.upper()}"
    with pytest.raises(ConfigError, match=f"{variable}.*finite number"):
        config.load(None, {variable: value})


def test_float_settings_must_be_at_most_a_year(tmp_path):
    """A duration beyond a year is a typo (and 1e300 s overflows a sleep): refused by name."""
    path = write(tmp_path, "[daemon]\nheartbeat_seconds = 1e300\n")
    with pytest.raises(ConfigError, match=r"key 'heartbeat_seconds' must be at most 31536000"):
        config.load(path, {})
    assert config.load(write(tmp_path, "[daemon]\nsettle_seconds = 0\n"), {})


@pytest.mark.parametrize(
    ("mode", "why"),
    [
        (0o644, "world-readable"),
        (0o604, "world-readable"),
        (0o660, "group-writable"),
        (0o602, "world-writable"),
    ],
)
def test_loose_token_file_is_refused(tmp_path, mode, why):
    """A token file others can read or change stops start-up, naming the file and its mode."""
    token = tmp_path / "erp.token"
    token.write_text("s3cret\n")
    token.chmod(mode)
    path = write(tmp_path, f'[erp]\nurl = "http://127.0.0.1:9/orders"\ntoken_file = "{token}"\n')
    with pytest.raises(ConfigError) as info:
        config.load(path, {})
    message = str(info.value)
    assert str(token) in message and f"mode {mode:04o}" in message and why in message
    assert "token_file" in message and str(path) in message
    token.chmod(0o640)  # the service's group may read it
    assert config.load(path, {}).erp.token_file == token


@pytest.mark.parametrize("folder", ["processing", "done", "failed", "outbox", "acks"])
def test_a_paths_folder_that_is_the_shared_inbox_is_refused(tmp_path, folder):
    """[paths] acks (or any folder the daemon writes) set to the inbox would feed
    the daemon its own output, a 997 answered with a 997 for ever: refused at
    load (at start and on reload), naming both settings. A symlink to the inbox
    is the inbox."""
    (tmp_path / "in").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "in")
    for target in ("in", "link"):
        path = write(
            tmp_path,
            f'[paths]\nroot = "{tmp_path}/state"\ninbox = "{tmp_path}/in"\n'
            f'{folder} = "{tmp_path}/{target}"\n',
        )
        with pytest.raises(ConfigError) as info:
            config.load(path, {})
        message = str(info.value)
        assert f"{path}: [paths] key 'inbox'" in message and f"[paths] {folder}" in message
        assert "read its own output back" in message


def test_a_partners_outbox_that_is_the_shared_inbox_is_refused(tmp_path):
    """A partner downloading its 997s where everyone uploads: the daemon would read them."""
    path = write(
        tmp_path,
        f'[paths]\nroot = "{tmp_path}/state"\n'
        f'[partners.acme]\nids = ["ZZ:ACME"]\noutbox = "{tmp_path}/state/inbox"\n',
    )
    with pytest.raises(ConfigError, match=r"\[paths\] key 'inbox'.*outbox of partner 'acme'"):
        config.load(path, {})


def test_folders_beside_or_inside_the_inbox_are_accepted(tmp_path):
    """Only a folder the daemon reads is refused: siblings under one state folder
    (the default layout), or acks/ inside the inbox (which is not watched
    recursively: a folder in it is left in place, unread), are fine."""
    path = write(
        tmp_path,
        f'[paths]\nroot = "{tmp_path}/state"\nacks = "{tmp_path}/state/inbox/acks"\n',
    )
    settings = config.load(path, {})
    assert settings.paths.acks == tmp_path / "state" / "inbox" / "acks"
    assert settings.paths.done == tmp_path / "state" / "done"
