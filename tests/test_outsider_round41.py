"""Outside tester round 41: the configuration checks changed in the last
hour (round 40's fixes) attacked: SQLite URLs after three slashes, the
PostgreSQL URL check and the default root.

What I tried:

- ``config.load`` in-process and ``edi-inbox status`` as a subprocess with
  ``EDI_INBOX_DATABASE_URL`` set to: URLs of other schemes (``mysql://``,
  SQLAlchemy's ``postgresql+psycopg2://``, a libpq keyword/value string),
  ``SQLite:///`` upper-case, ``sqlite:////``, a folder with a trailing
  slash, ``?mode=ro``; libpq URLs (IPv6 literals, with and without an
  ``@`` in a parameter, multi-host, unix sockets as ``?host=`` and
  percent-encoded, ``postgres://``, an empty password, a user alone,
  ``options=-c%20x``) checked against ``psycopg2.extensions.parse_dsn``;
  passwords holding ``/``, ``?``, ``#`` and ``,`` after leading digits.
- A relative SQLite path loaded from a working directory that is ``/``
  reached through a symbolic link.
- The default root from ``STATE_DIRECTORY`` (several entries, an empty
  first one), a relative ``XDG_STATE_HOME``, ``HOME`` given to ``load``;
  empty ``EDI_INBOX_*`` variables over a file's values.
- ``run``, ``serve``, ``stats``, ``jobs list``, ``db init``/``migrate``
  on URLs that fail, looking for the password in their output; an ``&``
  in ``?password=``.

Found (strict xfails; all 11 fixed the same session, each test failing
before its fix — a database URL other than sqlite:/postgresql: refused
unshown; a PostgreSQL URL libpq cannot parse (``psycopg2.extensions.
parse_dsn``: an unknown parameter, a broken escape) or whose password it
would misread (an "@" in the database name, an IPv6 host allowed) refused
unshown; SQLite's scheme case-blind, a folder or a query refused; an empty
``EDI_INBOX_DATABASE_URL`` refused; a relative ``$XDG_STATE_HOME`` ignored,
``$HOME`` read from the environment given):

1. ``test_a_url_of_another_scheme_is_refused_unshown``: ``mysql://u:PW@h``,
   ``postgresql+psycopg2://u:PW@h`` and ``host=h password=PW`` pass the
   config check (only sqlite and postgres schemes are looked at), and
   ``status`` prints the whole URL, password and all ("database url
   'mysql://u:PW@h/db': use sqlite:///PATH or postgresql://…",
   ``open_database``'s StoreError); so do ``serve``, ``stats``, ``jobs
   list``, ``db init``, ``db migrate`` and ``run``'s
   ``cannot_open_database`` log line (its ``url`` is masked, its ``error``
   quotes the URL whole). ``safe_url`` would not mask
   a keyword/value string either (no ``://``, no ``@``).
   (``test_other_commands_never_show_another_schemes_password``)
2. ``test_an_ipv6_host_with_an_at_in_a_parameter_is_accepted``:
   ``postgresql://[::1]/db?user=svc@tenant`` (libpq: host ``::1``, user
   ``svc@tenant``) is refused: the multi-host pattern knows no ``[...]``
   literal, so the ``@`` in the query reads as a cut-short user part.
3. ``test_a_password_of_digits_then_a_slash_is_refused``:
   ``postgresql://svc:2024/Winter@db.example/orders`` is accepted: the
   authority read, ``svc:2024``, looks like host ``svc`` port ``2024``, so
   the cut-short check passes it (libpq then tries host "svc").
   (``svc:2024?Winter@`` and ``svc:2024#Winter@`` pass too, while
   ``svc:abc?Winter@`` is refused: libpq itself ends the user part only at
   ``/``, so those two are read right; not pinned.)
4. ``test_a_password_with_a_comma_is_never_shown``: the password
   ``2024,Winter/x`` passes the check the same way, and libpq reads
   ``svc:2024,Winter`` as two hosts: ``status`` prints "could not
   translate host name \"Winter\"" - half the password.
5. ``test_an_ampersand_in_a_password_parameter_is_never_shown``:
   ``?password=Win&Qx7Ter`` passes the check (a parameter is looked at for
   ``%`` only) and ``status`` prints libpq's "invalid URI query parameter:
   \"Qx7Ter\"" - the password's second half.
6. ``test_an_upper_case_sqlite_scheme_is_one_meaning``: ``SQLite:///ABS``
   passes ``load`` (the check looks for ``sqlite:`` case-sensitively and
   then takes it for a non-PostgreSQL URL), but ``open_database`` reads
   its scheme case-insensitively and ``sqlite_path`` case-sensitively:
   "names no file" at the first command.
7. ``test_a_sqlite_url_naming_a_folder_is_refused_by_load``:
   ``sqlite:///<folder>/`` (and ``sqlite:////``) pass ``load``; every
   command then fails "cannot be opened: Is a directory".
8. ``test_a_sqlite_url_with_a_query_does_not_open_another_file``:
   ``sqlite:////abs/x.db?mode=ro`` passes ``load`` and ``db init`` creates
   a new, empty database named ``x.db?mode=ro`` (the query kept as part of
   the path); SQLite's own URIs, and every other tool, read ``x.db``
   read-only. Should: refuse a query in a SQLite URL, or honour it.
9. ``test_a_relative_xdg_state_home_is_ignored``: a relative
   ``$XDG_STATE_HOME`` refuses every command; the XDG Base Directory spec
   says such a value is invalid and ignored (``$HOME/.local/state``).
10. ``test_an_empty_url_variable_does_not_switch_the_database``: a
    config file's PostgreSQL URL under ``EDI_INBOX_DATABASE_URL=`` (empty:
    compose's ``${DATABASE_URL}`` unset, a drop-in's ``Environment=``)
    silently becomes ``sqlite:///<root>/edi-inbox.db``: a new, empty
    database, every order posted again (round 40's outcome) - while an
    empty ``EDI_INBOX_PATHS_ROOT`` is refused. Should: refuse, or keep the
    file's URL.
11. ``test_the_default_root_reads_home_from_the_environment_given``:
    ``config.load(path, environ)`` takes ``STATE_DIRECTORY`` and
    ``XDG_STATE_HOME`` from ``environ`` but ``$HOME`` from ``os.environ``
    (``Path.home()`` in ``default_root``): a root of two environments.

What held: ``sqlite:``, ``sqlite://``, ``sqlite:///`` refused as naming no
file; a working directory that is / through a symbolic link counts as /;
a relative path elsewhere refused naming ``<cwd>/PATH``; the libpq URLs
above (but 2) accepted; ``STATE_DIRECTORY`` takes its first entry, a
trailing slash dropped, an empty first entry refused as relative.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

DAEMON = str(Path(__file__).resolve().parent.parent / "daemon")
sys.path.insert(0, DAEMON)

from edi_inbox import config  # noqa: E402
from edi_inbox.errors import ConfigError  # noqa: E402

PASSWORD = "Zq8sEcretPW"


@pytest.fixture
def scratch():
    path = Path(tempfile.mkdtemp(prefix="round41-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _load(scratch: Path, url: str, **extra: str) -> config.Settings:
    conf = scratch / "edi-inbox.toml"
    conf.write_text("")
    env = {"EDI_INBOX_PATHS_ROOT": str(scratch / "root"), "EDI_INBOX_DATABASE_URL": url}
    env.update(extra)
    return config.load(conf, env)


def _status(scratch: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    conf = scratch / "edi-inbox.toml"
    conf.write_text("")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("EDI_INBOX_") and k != "PGPASSFILE"
    }
    env.update(
        PYTHONPATH=DAEMON,
        EDI_INBOX_PATHS_ROOT=str(scratch / "root"),
        EDI_INBOX_DATABASE_URL=url,
        EDI_INBOX_DATABASE_RECONNECT_SECONDS="0.1",
    )
    return subprocess.run(
        [sys.executable, "-m", "edi_inbox.cli", "--config", str(conf), *(args or ["status"])],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- 1. another scheme: accepted, then shown -------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://orders:{PASSWORD}@db.invalid/orders",
        f"postgresql+psycopg2://orders:{PASSWORD}@db.invalid/orders",
        f"host=db.invalid password={PASSWORD} dbname=orders",
    ],
)
def test_a_url_of_another_scheme_is_refused_unshown(scratch, url):
    result = _status(scratch, url)
    assert result.returncode != 0
    assert PASSWORD not in result.stdout + result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("command", ["run", "serve", "stats", "jobs list", "db init", "db migrate"])
def test_other_commands_never_show_another_schemes_password(scratch, command):
    args = command.split()
    if command == "serve":
        args += ["--listen", f"127.0.0.1:{_free_port()}"]
    result = _status(scratch, f"mysql://orders:{PASSWORD}@db.invalid/orders", *args)
    assert PASSWORD not in result.stdout + result.stderr


# --- 2-5. the PostgreSQL check ----------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://[::1]/db?user=svc@tenant",
        "postgresql://[::1]:5432/db?sslmode=require&application_name=po@edi",
    ],
)
def test_an_ipv6_host_with_an_at_in_a_parameter_is_accepted(scratch, url):
    import psycopg2.extensions

    assert psycopg2.extensions.parse_dsn(url)["host"] == "::1"  # libpq's reading
    _load(scratch, url)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://[::1]:5432/db",
        "postgresql://u:p@[::1]:5432/db",
        "postgresql://[::1]:5432,[::2]:5433/db",
        "postgresql:///db?host=/run/postgresql",
        "postgresql://%2Frun%2Fpostgresql/db",
        "postgres://",
        "postgresql://u:@h/db",
        "postgresql://u@h/db",
        "postgresql://h/db?options=-c%20x",
        "postgresql://h1:5432,h2:5432/db?user=a@b",
        "PostgreSQL://u%40corp:p@h/db",
    ],
)
def test_libpq_urls_are_accepted(scratch, url):
    """Verified right: these load."""
    _load(scratch, url)


def test_a_password_of_digits_then_a_slash_is_refused(scratch):
    url = "postgresql://svc:2024/Winter@db.invalid/orders"
    with pytest.raises(ConfigError, match="percent-encode") as refused:
        _load(scratch, url)
    assert "Winter" not in str(refused.value)


def test_a_password_with_a_comma_is_never_shown(scratch):
    result = _status(scratch, "postgresql://svc:2024,Winter/x@db.invalid/orders")
    assert result.returncode != 0
    assert "Winter" not in result.stdout + result.stderr


@pytest.mark.parametrize("tail", ["", "=1"])
def test_an_ampersand_in_a_password_parameter_is_never_shown(scratch, tail):
    result = _status(scratch, f"postgresql://svc@db.invalid/orders?password=Win&Qx7Ter{tail}")
    assert result.returncode != 0
    assert "Qx7Ter" not in result.stdout + result.stderr


# --- 6-8. SQLite URLs -------------------------------------------------------


def _opens_or_is_refused(scratch: Path, url: str) -> None:
    """One meaning: ``load`` refuses the URL, or the database opens."""
    from edi_inbox import store

    try:
        settings = _load(scratch, url)
    except ConfigError:
        return
    db = store.open_database(settings.database_url, settings)
    try:
        store.init(db)
    finally:
        store.close_database(db)


def test_an_upper_case_sqlite_scheme_is_one_meaning(scratch):
    _opens_or_is_refused(scratch, f"SQLite:///{scratch}/x.db")


def test_a_sqlite_url_naming_a_folder_is_refused_by_load(scratch):
    with pytest.raises(ConfigError):
        _load(scratch, f"sqlite:///{scratch}/")


def test_a_sqlite_url_with_a_query_does_not_open_another_file(scratch):
    _opens_or_is_refused(scratch, f"sqlite:///{scratch}/x.db?mode=ro")
    assert not (scratch / "x.db?mode=ro").exists()


def test_a_relative_sqlite_path_from_root_through_a_link_is_accepted(scratch):
    """Verified right: a working directory that is / through a symbolic
    link counts as / (getcwd resolves it); nothing is opened."""
    link = scratch / "slash"
    link.symlink_to("/")
    relative = f"{str(scratch).lstrip('/')}/x.db"
    code = (
        "import sys; from edi_inbox import config;"
        f"s = config.load({str(scratch / 'c.toml')!r}, {{'EDI_INBOX_PATHS_ROOT':"
        f" {str(scratch / 'root')!r}, 'EDI_INBOX_DATABASE_URL': 'sqlite:///{relative}'}});"
        "print(s.database_url)"
    )
    (scratch / "c.toml").write_text("")
    env = {**os.environ, "PYTHONPATH": DAEMON}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=link, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert not (scratch / "x.db").exists()


def test_a_relative_sqlite_path_elsewhere_is_refused_naming_the_file(scratch):
    here = os.getcwd()
    os.chdir(scratch)
    try:
        with pytest.raises(ConfigError, match=str(scratch / "var/lib/x.db")):
            _load(scratch, "sqlite:///var/lib/x.db")
    finally:
        os.chdir(here)


def test_an_empty_url_variable_does_not_switch_the_database(scratch):
    conf = scratch / "c.toml"
    pg = "postgresql://orders@db.invalid/orders"
    conf.write_text(f'[paths]\nroot = "{scratch}/root"\n[database]\nurl = "{pg}"\n')
    try:
        settings = config.load(conf, {"EDI_INBOX_DATABASE_URL": ""})
    except ConfigError:
        return
    assert settings.database_url == pg


# --- the default root --------------------------------------------------------


def test_state_directory_first_entry_is_the_root(scratch):
    conf = scratch / "c.toml"
    conf.write_text("")
    first, second = scratch / "a", scratch / "b"
    settings = config.load(conf, {"STATE_DIRECTORY": f"{first}/:{second}"})
    assert settings.paths.root == first
    assert settings.database_url == f"sqlite:///{first}/edi-inbox.db"


def test_state_directory_with_an_empty_first_entry_is_refused(scratch):
    conf = scratch / "c.toml"
    conf.write_text("")
    with pytest.raises(ConfigError, match="absolute"):
        config.load(conf, {"STATE_DIRECTORY": f":{scratch}"})


def test_a_relative_xdg_state_home_is_ignored(scratch):
    conf = scratch / "c.toml"
    conf.write_text("")
    home = scratch / "home"
    settings = config.load(conf, {"XDG_STATE_HOME": "state", "HOME": str(home)})
    assert settings.paths.root in (
        home / ".local/state/edi-inbox",
        Path.home() / ".local/state/edi-inbox",
    )


def test_the_default_root_reads_home_from_the_environment_given(scratch):
    conf = scratch / "c.toml"
    conf.write_text("")
    home = scratch / "home"
    settings = config.load(conf, {"HOME": str(home)})
    assert settings.paths.root == home / ".local/state/edi-inbox"


@pytest.mark.parametrize("url", ["sqlite:", "sqlite://", "sqlite:///", "sqlite://host/x.db"])
def test_a_sqlite_url_naming_no_file_is_refused(scratch, url):
    """Verified right: refused by load, naming no file."""
    with pytest.raises(ConfigError, match="names no file"):
        _load(scratch, url)
