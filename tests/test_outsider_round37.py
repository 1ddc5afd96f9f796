"""Outside tester round 37: the day-one operator and the contracts, taken
literally — every configuration key and the file itself, secrets in every
output, the CLI's documented commands, flags, exit codes and JSON, and
README's install and first run copied as written. About 30 s at -n0.

What I tried:

- every key of ``config/edi-inbox.toml`` with wrong types (strings for
  numbers, ``1e3`` for an int, a string for a list), 0, negatives, ``nan``,
  values past int64, unknown keys and sections; the file missing, a
  directory, ``/dev/null``, cut off mid-table, not UTF-8, a FIFO (blocks, as
  ``--config <(…)`` must: not pinned); ``EDI_INBOX_<SECTION>_<KEY>``
  overrides, right and misspelt;
- paths relative and absolute (``[paths] root``, ``sqlite:///relative``),
  overlapping (``acks`` = ``failed``, ``outbox`` = ``done``: harmless; the
  database inside the inbox, inside ``processing``, the inbox at the state
  root), ``processing`` and ``failed`` on another mount, ``done`` a file,
  ``sqlite:///:memory:``, odd database and ERP URLs;
- SIGHUP with six broken configurations in turn against a running daemon;
- secrets: an ERP answering 401 with the request's credentials echoed, a URL
  with a password, an API key, a signature, a host that does not resolve, a
  bad port; token files with CRLF, blank lines, NUL, non-ASCII, empty;
  PostgreSQL URLs with a password against a missing database, a closed
  port, an unknown host, a bad sslmode, a malformed percent-escape, a server
  that accepts and never answers; every CLI output, ``run``'s log, the
  ``error.json``, ``serve``'s pages, ``/api``, ``/metrics`` and its log;
- the CLI: every command and flag README lists, ``--limit``/``--offset`` past
  int64, negative and 0, ``--since``/``--until`` forms (offsets, fractions,
  years 1 and 9999, epoch numbers, reversed), LIKE wildcards as job id
  prefixes, ambiguous prefixes, money in every ``--json`` (strings, never
  floats), an empty database, a database of schema 99, a SQLite file held
  by an exclusive lock (10 s, then a clear message);
- README's "Two commands" run as written from ``git archive HEAD`` in a
  fresh HOME: the first file ends in done/ with its 997 and outbox JSON.

Found (strict xfails; all 10 fixed the same session, each test failing
before its fix — ``config.load`` refuses a file not UTF-8, relative paths,
a relative or in-memory SQLite URL, a SQLite file inside the daemon's
folders and a stray ``%`` in PostgreSQL credentials (``_check_database``),
``max_file_bytes = 0`` and 0 for the polling, rescan and heartbeat
intervals, variables for a partner's key or a near-missed section; plain
``status`` and ``stats`` print no ``None``):

1. ``test_a_config_not_in_utf8_is_an_error_naming_the_file``: a config saved
   in Latin-1 (a comment naming Müller) ends every command in a
   ``UnicodeDecodeError`` traceback; it should be an error naming the file,
   exit 1 (``config.load`` catches ``TOMLDecodeError`` and ``OSError`` only).
2. ``test_the_database_inside_the_inbox_is_refused_at_start`` (two ways: a
   ``[database] url`` in the inbox; ``[paths] inbox`` set to the state root,
   where the default database lives): accepted, and within a second the
   daemon claims its own database, ``-wal``, ``-shm`` and writers lock as
   uploads, moves them to processing/ and failed/ and loses its database
   ("disk image is malformed"); should stop at start naming the setting
   (``config._check_folders`` checks the written folders, never the
   database's).
3. ``test_the_database_inside_the_processing_folder_is_refused``: a
   database in ``[paths] processing`` is taken at the next start for claims
   a crash left (the flat layout), run as jobs and filed into failed/
   (same place).
4. ``test_a_relative_path_means_one_place_whatever_the_working_directory``
   (``root = "state"``; ``sqlite:///state/edi-inbox.db``; fixed: refused,
   naming the key — read from the root for an hour, until round 40 showed
   that a deployment not started in / then got a new, empty database): resolved against
   each command's working directory, so ``status`` run elsewhere than ``db
   init`` says the database is missing (and ``run`` elsewhere would start a
   second state); partners' folders must be absolute, these are kept as
   written (``config._convert``, the store's URL parsing).
5. ``test_an_in_memory_database_is_refused``: ``sqlite:///:memory:`` is
   accepted: each process keeps a database that dies with it, ``jobs list``
   never shows a job, and the same file run again is posted again instead of
   being a duplicate (no check on the URL in ``store``).
6. ``test_a_postgres_password_with_a_stray_percent_is_never_shown``: a
   password with a ``%`` not followed by two hex digits (pasted unencoded)
   is printed whole by ``status``, ``jobs``, ``stats`` and ``run``'s
   ``cannot_open_database`` log, in psycopg's "invalid percent-encoded
   token" message, which is passed on unredacted.
7. ``test_a_max_file_bytes_of_zero_is_refused_like_the_partners``:
   ``[daemon] max_file_bytes = 0`` is accepted and every upload is refused
   as too large, while a partner's ``max_file_bytes = 0`` is an error
   (``config._build`` checks ``workers`` and the other limits for 0, not
   this one).
8. ``test_a_polling_interval_of_zero_does_not_spin_a_core``:
   ``polling_interval_seconds = 0`` (durations may be 0) makes the polling
   observer spin a core on an empty inbox (~65-100 %); refuse 0 as
   ``_NOT_ZERO`` does for the ERP timeouts, or floor the wait.
9. ``test_an_environment_override_is_applied_or_refused_never_ignored``:
   an ``EDI_INBOX_`` variable whose section ``config.load`` does not know is
   skipped in silence (taken for someone else's, like
   ``EDI_INBOX_TEST_PG_URL``): a misspelt ``EDI_INBOX_DATABSE_URL=postgresql://…``
   leaves the daemon on the default SQLite file, and
   ``EDI_INBOX_PARTNERS_ACME_ERP_URL`` does nothing, though the example config
   says every key can be set from the environment and unknown keys are
   errors everywhere else.
10. ``test_plain_status_and_stats_never_print_none``: ``status`` says "None
    in processing" before processing/ exists (a setup that ran ``process``
    only), ``stats`` "success rate None" and "average duration seconds
    None" on an empty database (``cli`` prints ``admin.folder_counts``' and
    the stats' None as it is).

Pinned as right (passing): environment overrides win and name their
variable; README's install and first run; a reload with any of six broken
configurations refused and the daemon going on; the ERP token and URL
credentials kept out of every output, with a 401 echoing them and with an
ERP unreachable four ways.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import Daemon
from werkzeug import Request, Response

from helpers import GOOD, http_server, make_po, poll_until

REPO = Path(__file__).resolve().parents[1]
DAEMON_SRC = REPO / "daemon"


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="r37-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDI_INBOX_")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(DAEMON_SRC), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env.update(extra)
    return env


def cli(
    config: Path, *args: str, cwd: Path | None = None, timeout: float = 30, **env: str
) -> subprocess.CompletedProcess[str]:
    """``edi-inbox --config CONFIG ARGS`` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "edi_inbox.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=_env(**env),
    )


def toml_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def base(root: Path, extra: str = "", *, database: str = "", erp: str = "") -> str:
    """A config text: root, one process, quick settling, plus ``extra``."""
    lines = [f"[paths]\nroot = {json.dumps(str(root))}\n"]
    if database:
        lines.append(f"[database]\n{database}\n")
    if erp:
        lines.append(f"[erp]\n{erp}\n")
    lines.append("[daemon]\nprocesses = 1\nsettle_seconds = 0.1\n")
    lines.append(extra)
    return "".join(lines)


@contextlib.contextmanager
def daemon(config: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """``edi-inbox run`` in the background; stopped (SIGTERM, then SIGKILL) at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edi_inbox.cli", "--config", str(config), "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


# -- configuration ------------------------------------------------------------


def test_a_config_not_in_utf8_is_an_error_naming_the_file(scratch: Path) -> None:
    root = scratch / "state"
    (root / "inbox").mkdir(parents=True)
    config = scratch / "edi-inbox.toml"
    # An editor set to Latin-1 saved the operator's note about Müller GmbH.
    config.write_bytes(base(root).encode() + "# partner M\u00fcller GmbH\n".encode("latin-1"))
    result = cli(config, "status")
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    assert str(config) in result.stderr or config.name in result.stderr, result.stderr


def _taken(root: Path) -> list[str]:
    """The database's files (``edi-inbox.db*``) the daemon claimed or filed:
    anywhere under processing/, failed/ or done/."""
    return sorted(
        str(path.relative_to(root))
        for folder in ("processing", "failed", "done")
        for path in (root / folder).rglob("edi-inbox.db*")
    )


@pytest.mark.parametrize("where", ["url_in_inbox", "inbox_is_root"])
def test_the_database_inside_the_inbox_is_refused_at_start(scratch: Path, where: str) -> None:
    root = scratch / "state"
    (root / "inbox").mkdir(parents=True)
    if where == "url_in_inbox":
        db = root / "inbox" / "edi-inbox.db"
        paths, database = "", f"url = {json.dumps(f'sqlite:///{db}')}"
    else:  # "partners upload into /var/lib/edi-inbox": the default database is there
        db = root / "edi-inbox.db"
        paths, database = f"inbox = {json.dumps(str(root))}\n", ""
    text = base(root, "incomplete_grace_seconds = 0.5\n", database=database)
    config = toml_config(scratch / "edi-inbox.toml", text.replace("[paths]\n", "[paths]\n" + paths))
    init = cli(config, "db", "init")
    if init.returncode != 0:  # refused, naming the setting: as good
        assert "Traceback" not in init.stderr and "inbox" in init.stderr, init.stderr
        return
    assert db.exists()
    with daemon(config) as proc:
        # Right: it stops at once, naming the setting. Today: it runs, and
        # within a second claims its own database files as uploads.
        poll_until(
            lambda: proc.poll() is not None or not db.exists() or _taken(root),
            timeout=15,
            what="the daemon to stop or to take its own database",
        )
        taken = _taken(root)
        rc = proc.poll()
        stderr = "" if rc is None else proc.communicate(timeout=10)[1]
    assert not taken and db.exists(), taken
    assert rc not in (None, 0), rc
    assert "Traceback" not in stderr and "inbox" in stderr, stderr


def test_the_database_inside_the_processing_folder_is_refused(scratch: Path) -> None:
    root = scratch / "state"
    (root / "inbox").mkdir(parents=True)
    db = root / "processing" / "edi-inbox.db"
    config = toml_config(
        scratch / "edi-inbox.toml",
        base(root, database=f"url = {json.dumps(f'sqlite:///{db}')}"),
    )
    init = cli(config, "db", "init")
    (root / "inbox" / "po.x12").write_bytes(GOOD)
    result = cli(config, "run", "--once", "--max-jobs", "1", timeout=60)
    # Right: `db init` (or at least `run`) refuses, naming the setting; the
    # database stays where it was put. Today `run` takes it for a claim
    # (moved to processing/<host>/, run as a job, filed into failed/).
    assert init.returncode != 0 or result.returncode != 0, (init, result.stderr[-2000:])
    if init.returncode == 0:
        assert db.exists(), sorted(str(p.relative_to(root)) for p in root.rglob("edi-inbox*"))


@pytest.mark.parametrize("what", ["root", "database_url", "database_url_dot"])
def test_a_relative_path_means_one_place_whatever_the_working_directory(
    scratch: Path, what: str
) -> None:
    here, there = scratch / "here", scratch / "there"
    (here / "state" / "inbox").mkdir(parents=True)
    (there / "state" / "inbox").mkdir(parents=True)
    if what == "root":
        text = base(Path("state"))
    else:
        # Three slashes and the path without its own, as
        # "sqlite:///var/lib/edi-inbox/edi-inbox.db" is often written: SQLite
        # reads it from the working directory; "./" plainly relative.
        db = str(scratch / "root" / "edi-inbox.db").lstrip("/")
        url = f"sqlite:///{db}" if what == "database_url" else "sqlite:///./state/edi-inbox.db"
        text = base(scratch / "root", database=f"url = {json.dumps(url)}")
        (scratch / "root" / "inbox").mkdir(parents=True)
    config = toml_config(scratch / "edi-inbox.toml", text)
    init = cli(config, "db", "init", cwd=here)
    if init.returncode != 0:  # refused, naming the key: as good
        key = "root" if what == "root" else "url"
        assert key in init.stderr and "Traceback" not in init.stderr, init
        return
    status = cli(config, "status", "--json", cwd=there)
    # The database `db init` made is the one `status` reads, from anywhere.
    assert status.returncode == 3, (status.stdout, status.stderr)


def test_an_in_memory_database_is_refused(scratch: Path) -> None:
    root = scratch / "state"
    (root / "inbox").mkdir(parents=True)
    config = toml_config(
        scratch / "edi-inbox.toml", base(root, database='url = "sqlite:///:memory:"')
    )
    po = scratch / "po.x12"
    po.write_bytes(GOOD)
    first = cli(config, "process", "--json", str(po))
    if first.returncode != 0:  # refused, naming the key: right
        assert "url" in first.stderr and "Traceback" not in first.stderr, first.stderr
        return
    again = cli(config, "process", "--json", str(po))
    listed = cli(config, "jobs", "list", "--json")
    # Today: two "succeeded" jobs, the order written twice, and no job on record.
    assert json.loads(again.stdout)["status"] == "duplicate", again.stdout
    assert len(json.loads(listed.stdout)) == 2, listed.stdout


# -- secrets ------------------------------------------------------------------


def test_a_postgres_password_with_a_stray_percent_is_never_shown(scratch: Path) -> None:
    secret = "Pw%zz9Sekr3t"  # a generated password, pasted without percent-encoding
    root = scratch / "state"
    (root / "inbox").mkdir(parents=True)
    url = f"postgresql://edi:{secret}@127.0.0.1:1/edi"
    config = toml_config(
        scratch / "edi-inbox.toml",
        base(root, database=f"url = {json.dumps(url)}\nreconnect_seconds = 0.5"),
    )
    outputs = {}
    for args in (("status",), ("jobs", "list", "--json"), ("stats",), ("run", "--once")):
        result = cli(config, *args, timeout=60)
        assert result.returncode == 1, (args, result)
        outputs[" ".join(args)] = result.stdout + result.stderr
    leaks = {cmd: out for cmd, out in outputs.items() if "Sekr3t" in out}
    assert not leaks, leaks


# -- README's install and first run, as written ---------------------------------


def _readme_first_run() -> tuple[str, str, str]:
    """README's "Two commands": the install-and-run line, the ``cp`` that drops
    an order and the ``jobs list`` that looks, as written there."""
    text = (REPO / "README.md").read_text()
    part = text[text.index("## Two commands") :]
    block = part[part.index("```sh\n") + len("```sh\n") :]
    install = block[: block.index("```")].strip()
    after = block[block.index("```") + 3 :]
    drop = after[after.index("`cp ") + 1 :]
    drop = drop[: drop.index("`")]
    look = after[after.index("`.venv/bin/edi-inbox jobs list`") + 1 :]
    look = look[: look.index("`")]
    return install, drop, look


def test_readme_install_and_first_run_as_written(scratch: Path) -> None:
    if Path("/etc/edi-inbox/edi-inbox.toml").exists():
        pytest.skip("this host has /etc/edi-inbox/edi-inbox.toml, which the defaults read")
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("no git checkout to archive")
    install, drop, look = _readme_first_run()
    assert install.endswith(".venv/bin/edi-inbox run"), install
    src, home = scratch / "src", scratch / "home"
    src.mkdir()
    home.mkdir()
    archive = subprocess.run([git, "-C", str(REPO), "archive", "HEAD"], capture_output=True)
    assert archive.returncode == 0, archive.stderr
    subprocess.run(["tar", "x"], input=archive.stdout, cwd=src, check=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EDI_INBOX_", "XDG_")) and k not in ("STATE_DIRECTORY", "PYTHONPATH")
    }
    pip_conf = Path.home() / ".config" / "pip" / "pip.conf"
    if pip_conf.exists() and "PIP_CONFIG_FILE" not in env:
        env["PIP_CONFIG_FILE"] = str(pip_conf)  # the index this host installs from
    env["HOME"] = str(home)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    state = home / ".local" / "state" / "edi-inbox"
    proc = subprocess.Popen(
        ["bash", "-c", install],
        cwd=src,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        poll_until(
            lambda: proc.poll() is not None or (state / "edi-inbox.db").exists(),
            timeout=240,
            what="README's install to finish and the daemon to start",
        )
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        subprocess.run(["bash", "-c", drop], cwd=src, env=env, check=True)
        name = Path(drop.split()[1]).name
        poll_until(lambda: (state / "done" / name).exists(), timeout=30, what="done/")
        listing = subprocess.run(
            ["bash", "-c", look], cwd=src, env=env, capture_output=True, text=True, timeout=60
        )
        assert listing.returncode == 0, listing
        assert name in listing.stdout and "succeeded" in listing.stdout, listing.stdout
        assert [p.name for p in (state / "outbox").iterdir() if p.suffix == ".json"]
        assert [p.name for p in (state / "acks").iterdir() if p.name.endswith(".997")]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


def test_a_max_file_bytes_of_zero_is_refused_like_the_partners(scratch: Path) -> None:
    root = scratch / "state"
    (root / "inbox").mkdir(parents=True)
    partner = '[partners.acme]\nids = ["ZZ:ACME"]\nmax_file_bytes = 0\n'
    refused = cli(toml_config(scratch / "p.toml", base(root, partner)), "db", "init")
    assert refused.returncode == 1 and "max_file_bytes" in refused.stderr, refused
    config = toml_config(scratch / "edi-inbox.toml", base(root, "max_file_bytes = 0\n"))
    result = cli(config, "db", "init")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "max_file_bytes" in result.stderr and "Traceback" not in result.stderr


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_polling_interval_of_zero_does_not_spin_a_core(scratch: Path) -> None:
    root = scratch / "state"
    (root / "inbox").mkdir(parents=True)
    extra = 'observer = "polling"\npolling_interval_seconds = 0\n'
    config = toml_config(scratch / "edi-inbox.toml", base(root, extra))
    with daemon(config) as proc:
        poll_until(
            lambda: proc.poll() is not None or (root / "processing").is_dir(),
            timeout=20,
            what="the daemon to start or stop",
        )
        if proc.poll() is not None:  # refused at start, naming the key: as good
            stderr = proc.communicate(timeout=10)[1]
            assert proc.returncode != 0 and "polling_interval_seconds" in stderr, stderr
            return
        settled = time.monotonic()  # past start-up's own work, then measure
        poll_until(lambda: time.monotonic() - settled > 0.5, timeout=5, what="0.5 s")
        before, start = _cpu_seconds(proc.pid), time.monotonic()
        poll_until(lambda: time.monotonic() - start > 2.0, timeout=5, what="2 s")
        used = _cpu_seconds(proc.pid) - before
        elapsed = time.monotonic() - start
    # An idle daemon with an empty inbox: far below one core (today ~100 %).
    assert used < 0.5 * elapsed, f"{used:.2f} s of CPU in {elapsed:.2f} s, idle"


def test_plain_status_and_stats_never_print_none(scratch: Path) -> None:
    root = scratch / "state"
    (root / "inbox").mkdir(parents=True)
    config = toml_config(scratch / "edi-inbox.toml", base(root))
    assert cli(config, "db", "init").returncode == 0
    stats = cli(config, "stats")  # a day-one database: no job yet
    assert stats.returncode == 0, stats
    po = scratch / "po.x12"
    po.write_bytes(GOOD)
    assert cli(config, "process", str(po)).returncode == 0
    status = cli(config, "status")
    assert status.returncode == 3, status
    assert "None" not in status.stdout + stats.stdout, status.stdout + stats.stdout


@pytest.mark.parametrize("variable", ["EDI_INBOX_DATABSE_URL", "EDI_INBOX_PARTNERS_ACME_ERP_URL"])
def test_an_environment_override_is_applied_or_refused_never_ignored(
    scratch: Path, variable: str
) -> None:
    root = scratch / "state"
    (root / "inbox").mkdir(parents=True)
    partner = '[partners.acme]\nids = ["08:AAAAAAAAAA"]\n'  # GOOD's sender
    config = toml_config(scratch / "edi-inbox.toml", base(root, partner))
    po = scratch / "po.x12"
    po.write_bytes(GOOD)
    # A value no setting can take: applied, it stops the command; refused too.
    value = "ftp://127.0.0.1:1/orders"
    result = cli(config, "process", "--partner", "acme", str(po), **{variable: value})
    assert result.returncode == 1, (result.stdout, result.stderr[-2000:])
    assert variable in result.stderr or value in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_an_environment_override_names_its_variable_and_wins(scratch: Path) -> None:
    root = scratch / "state"
    (root / "inbox").mkdir(parents=True)
    config = toml_config(scratch / "edi-inbox.toml", base(root))
    bad = cli(config, "status", EDI_INBOX_DAEMON_SETTLE_SECONDS="nan")
    assert bad.returncode == 1 and "EDI_INBOX_DAEMON_SETTLE_SECONDS" in bad.stderr, bad
    other = scratch / "other"
    (other / "inbox").mkdir(parents=True)
    po = scratch / "po.x12"
    po.write_bytes(GOOD)
    ok = cli(config, "process", "--json", str(po), EDI_INBOX_PATHS_ROOT=str(other))
    assert ok.returncode == 0, ok
    assert (other / "edi-inbox.db").exists() and not (root / "edi-inbox.db").exists()


def test_the_erp_token_and_url_password_stay_out_of_every_output(scratch: Path) -> None:
    """An ERP answering 401 with the request's credentials echoed back, and a
    URL with a user and password: nothing the operator or partner reads holds
    either (run's log, jobs show/list/search --json, stats, status, error.json)."""
    token, password = "TokenSekr3tA", "PassSekr3tB"

    def echo(request: Request) -> Response:
        body = json.dumps({"error": f"bad credentials {request.headers.get('Authorization')}"})
        return Response(body, status=401, content_type="application/json")

    root = scratch / "state"
    (root / "inbox").mkdir(parents=True)
    token_file = scratch / "erp-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    with http_server() as server:
        server.expect_request("/orders", method="POST").respond_with_handler(echo)
        url = server.url_for("/orders").replace("http://", f"http://erp:{password}@")
        erp = f"url = {json.dumps(url)}\ntoken_file = {json.dumps(str(token_file))}"
        config = toml_config(scratch / "edi-inbox.toml", base(root, erp=erp))
        (root / "inbox" / "po.x12").write_bytes(GOOD)
        run = cli(config, "run", "--once", timeout=60)
        assert run.returncode == 0, run.stderr[-2000:]
    assert (root / "failed" / "po.x12").exists(), os.listdir(root)
    outputs = {"run": run.stdout + run.stderr}
    job = json.loads(cli(config, "jobs", "list", "--json").stdout)[0]["job_id"]
    for args in (
        ("jobs", "show", job, "--json"),
        ("jobs", "show", job),
        ("jobs", "list", "--json"),
        ("jobs", "search", "--po-number", "9", "--json"),
        ("stats", "--json"),
        ("status", "--json"),
        ("status",),
    ):
        result = cli(config, *args)
        outputs[" ".join(args)] = result.stdout + result.stderr
    shown = json.loads(cli(config, "jobs", "show", job, "--json").stdout)
    assert shown["status"] == "failed" and "401" in json.dumps(shown), shown
    for path in (root / "failed").iterdir():
        outputs[path.name] = path.read_text(errors="replace")
    leaks = {k: v for k, v in outputs.items() if token in v or password in v}
    assert not leaks, leaks


def test_a_reload_with_a_broken_config_keeps_the_running_one(scratch: Path) -> None:
    """SIGHUP after the config was saved half-written, in Latin-1, with an
    unknown key, a NaN, a new database or an inbox that is acks/: each reload
    is refused (logged, READY=1 again) and the daemon goes on as it was."""
    root = scratch / "state"
    root.mkdir()
    d = Daemon(root, "")
    try:
        d.start()
        good = d.config.read_bytes()
        broken = [
            good[: len(good) // 2] + b"\n[daemon",  # an editor's save cut short
            good + "# M\u00fcller\n".encode("latin-1"),
            good + b"[erp]\nurll = 'http://127.0.0.1:1/'\n",
            good.replace(b"settle_seconds = 0.3", b"settle_seconds = nan"),
            good.replace(b"edi-inbox.db", b"other.db"),
            good.replace(
                b"[paths]\n", f"[paths]\ninbox = {json.dumps(str(root / 'acks'))}\n".encode()
            ),
        ]
        for n, text in enumerate(broken, 1):
            d.ready.clear()
            d.config.write_bytes(text)
            assert d.proc is not None
            d.proc.send_signal(signal.SIGHUP)
            poll_until(lambda: d.ready.is_set() or not d.alive(), timeout=20, what="READY=1")
            assert d.alive(), d.log.read_text()[-3000:]
            poll_until(lambda n=n: len(d.events("reload_refused")) >= n, timeout=10, what="refusal")
            (d.inbox / f"po{n}.x12").write_bytes(make_po(700 + n))
            poll_until(lambda n=n: (d.done / f"po{n}.x12").exists(), timeout=20, what="done")
        assert not d.events("reloading"), d.events("reloading")
        assert "Traceback" not in d.log.read_text()
    finally:
        d.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://erp:PassSekr3tB@127.0.0.1:1/orders",  # refused
        "http://erp:PassSekr3tB@edi-erp.invalid/orders",  # no such host
        "http://erp:PassSekr3tB@127.0.0.1:99999/orders",  # not a URL
        "http://ApiKeySekr3tB@127.0.0.1:1/orders?sig=SigSekr3tB",  # a key and a signature
    ],
)
def test_an_unreachable_erp_never_shows_its_credentials(scratch: Path, url: str) -> None:
    root = scratch / "state"
    (root / "inbox").mkdir(parents=True)
    token_file = scratch / "erp-token"
    token_file.write_text("TokenSekr3tA\n")
    token_file.chmod(0o600)
    erp = (
        f"url = {json.dumps(url)}\ntoken_file = {json.dumps(str(token_file))}\n"
        "max_attempts = 1\nconnect_timeout_seconds = 2"
    )
    config = toml_config(scratch / "edi-inbox.toml", base(root, erp=erp))
    po = scratch / "po.x12"
    po.write_bytes(GOOD)
    outputs = {}
    result = cli(config, "process", "--json", str(po), timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    outputs["process"] = result.stdout + result.stderr
    listed = cli(config, "jobs", "list", "--json")
    outputs["jobs list"] = listed.stdout + listed.stderr
    for job in json.loads(listed.stdout or "[]"):
        shown = cli(config, "jobs", "show", job["job_id"], "--json")
        outputs[job["job_id"]] = shown.stdout + shown.stderr
    leaks = {k: v for k, v in outputs.items() if "Sekr3t" in v}
    assert not leaks, leaks
