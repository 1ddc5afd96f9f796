"""Settings: parsed once from TOML and the environment into frozen objects.

Every key has a default, so ``load(None)`` gives a working configuration.
Precedence, last wins: built-in defaults, the TOML file, ``EDI_INBOX_<SECTION>_<KEY>``
environment variables (``EDI_INBOX_ERP_URL=https://…``). Unknown sections and
keys are errors that name the key, the file and the nearest known key.
``[partners.NAME]`` sections configure trading partners (see
``PartnerSettings``); they are read apart from the flat sections.
Numbers are checked too: a float must be finite, ≥ 0 and at most a year of
seconds (``settle_seconds = nan`` would hold every file forever), and a
``token_file`` others can read or change is refused.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import math
import os
import re
import stat
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

CONFIG_ENV = "EDI_INBOX_CONFIG"
ENV_PREFIX = "EDI_INBOX_"
DEFAULT_CONFIG_PATHS = (Path("/etc/edi-inbox/edi-inbox.toml"),)
MAX_SECONDS = 365 * 24 * 3600  # every float setting is a duration; more is a typo


def default_root(environ: Mapping[str, str]) -> Path:
    """systemd's ``StateDirectory`` when run as a service, else the XDG state
    home (a relative ``$XDG_STATE_HOME`` is ignored, as the XDG spec says),
    else ``$HOME/.local/state``."""
    if environ.get("STATE_DIRECTORY"):
        return Path(environ["STATE_DIRECTORY"].split(":")[0])
    state_home = environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state_home):
        home = environ.get("HOME") or str(Path.home())
        state_home = os.path.join(home, ".local", "state")
    return Path(state_home) / "edi-inbox"


@dataclass(frozen=True)
class PathSettings:
    """Where files live. Each folder defaults to ``root/NAME``."""

    root: Path = Path(".")
    inbox: Path | None = None
    processing: Path | None = None
    done: Path | None = None
    failed: Path | None = None
    outbox: Path | None = None
    acks: Path | None = None

    def __post_init__(self) -> None:
        for name in ("inbox", "processing", "done", "failed", "outbox", "acks"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, self.root / name)

    def folders(self) -> dict[str, Path]:
        return {
            name: typing.cast(Path, getattr(self, name))
            for name in ("inbox", "processing", "done", "failed", "outbox", "acks")
        }

    def create(self) -> None:
        """Create every folder that is missing (the inbox too)."""
        for path in self.folders().values():
            path.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class DatabaseSettings:
    """``url``: ``sqlite:///PATH`` or ``postgresql://user:pw@host/db``."""

    url: str = ""  # empty: sqlite:///<root>/edi-inbox.db
    busy_timeout_seconds: float = 10.0
    edi_content_max_bytes: int = 1024 * 1024
    pool_size: int = 8
    # PostgreSQL: how long a unit of work retries a lost connection before the
    # database counts as unavailable (the daemon then parks jobs and pauses intake).
    reconnect_seconds: float = 10.0


@dataclass(frozen=True)
class ErpSettings:
    """How orders reach the ERP. An empty ``url`` writes JSON into ``outbox/``."""

    url: str = ""
    token_file: Path | None = None
    id_field: str = "id"
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 30.0
    max_attempts: int = 5
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    backoff_jitter_seconds: float = 0.5
    retry_after_max_seconds: float = 120.0


@dataclass(frozen=True)
class AckSettings:
    """The 997 functional acknowledgement."""

    enabled: bool = True


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: a systemd
    ``CPUAffinity=``, a container's cpuset or ``taskset`` narrow it)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class DaemonSettings:
    """The watching service."""

    # Jobs in flight at once. 16: an ERP answering in 20 ms needs more than 6 in
    # flight for 300 files/s, and a job's fsyncs (the 997) overlap too; measured
    # against 4 and 8 on 2 CPUs (bench/README.md). Each may hold a whole file.
    workers: int = 16
    # > 1: the workers run in that many child processes (procs.py), never more
    # than ``workers``. The default, and "auto" in the file or environment, is one
    # per usable CPU (``usable_cpus``): 1 on one CPU, the jobs then in threads.
    processes: int = field(default_factory=usable_cpus)
    settle_seconds: float = 2.0
    incomplete_grace_seconds: float = 300.0
    rescan_seconds: float = 60.0
    max_file_bytes: int = 64 * 1024 * 1024
    # The sizes of the files in flight at once, together: a job holds ~25-35x
    # its file in memory, so 16 workers on 16 large files would need far more
    # than the unit's MemoryMax. A file that would pass it waits (and the files
    # behind it, oldest first) until enough of those in flight have ended; one
    # is always taken when none is in flight, however large.
    max_bytes_in_flight: int = 32 * 1024 * 1024
    max_groups_per_file: int = 100  # a file with more is refused whole (x12.reader)
    max_sets_per_file: int = 50_000
    max_segments_per_file: int = 2_500_000  # bounds memory: ~60 B kept per segment
    observer: str = "auto"  # auto | inotify | polling
    polling_interval_seconds: float = 1.0
    ignore_patterns: tuple[str, ...] = (".*", "*.filepart", "*.part", "*.tmp")
    heartbeat_seconds: float = 5.0
    shutdown_timeout_seconds: float = 30.0
    # A file in flight each time the daemon died, this many times in a row
    # (killed, out of memory, a crash), is set aside in failed/ unrun: one
    # file must not keep the daemon restarting for ever (worker.py).
    max_crashes: int = 5


@dataclass(frozen=True)
class RuleSettings:
    """How much each business rule matters: ``error`` rejects the order (AK5 R),
    ``warn`` posts it with the warning kept (AK5 E), ``off`` skips the check.
    Envelope and syntax errors are always errors. Defaults: see README."""

    unknown_segment: str = "error"  # a segment id no 850 has (P01 for PO1)
    misplaced_segment: str = "error"  # out of place: after the CTT but AMT, a late BEG
    segment_out_of_sequence: str = "error"  # a header segment after one placed later
    currency_mismatch: str = "error"  # a line's CUR not the order's
    line_count_mismatch: str = "warn"  # CTT01 ≠ number of PO1
    total_mismatch: str = "error"  # AMT*TT ≠ Σ quantity × price
    quantity_not_positive: str = "error"  # PO102 ≤ 0
    duplicate_line_number: str = "warn"  # PO101 repeated
    invalid_date: str = "error"  # BEG05 or a DTM02 not a real date
    invalid_time: str = "error"  # a DTM03 not a real time (2460)
    missing_date: str = "error"  # BEG05 empty
    negative_unit_price: str = "error"  # PO104 < 0


RULE_LEVELS = ("error", "warn", "off")


@dataclass(frozen=True)
class LogSettings:
    """``format``: auto (JSON unless on a terminal), json or console."""

    level: str = "info"
    format: str = "auto"


@dataclass(frozen=True)
class HttpSettings:
    """``edi-inbox serve``: where it listens, and the bearer token that
    ``POST /api/orchestrate`` and retry need (both are off without one)."""

    listen: str = "127.0.0.1:8080"
    token_file: Path | None = None

    def address(self) -> tuple[str, int]:
        """``listen`` as (host, port); ``[::1]:8080`` for IPv6."""
        host, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"[http] listen must be HOST:PORT, not {self.listen!r}")
        return host.strip("[]") or "127.0.0.1", int(port)


PARTNER_ACKS = ("997", "999", "none")
PARTNER_TA1 = ("on-request", "always", "never")
PARTNER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# ISA05 (2 characters) : ISA06 (up to 15) [: GS02 (up to 15)], as sent,
# trailing padding left out.
_PARTNER_ID = re.compile(
    r"([A-Za-z0-9]{2}):([^:\s](?:[^:]{0,13}[^:\s])?)(?::([^:\s](?:[^:]{0,13}[^:\s])?))?"
)


@dataclass(frozen=True)
class PartnerId:
    """One sender a partner claims: ISA05/ISA06, and GS02 when given (a
    partner's division sending under a shared ISA id)."""

    qualifier: str
    sender: str
    group_sender: str | None = None

    def __str__(self) -> str:
        tail = f":{self.group_sender}" if self.group_sender is not None else ""
        return f"{self.qualifier}:{self.sender}{tail}"


@dataclass(frozen=True)
class PartnerSettings:
    """``[partners.NAME]``: the sender ids it uses, which acknowledgements it
    gets (``ack``: 997, 999 or none, default per ``[ack] enabled``; ``ta1``:
    on-request — when ISA14 asks or the envelope is wrong —, always or never),
    its rule levels (``[partners.NAME.rules]`` overrides ``[rules]``),
    ``outbox``: the absolute folder its 997/999/TA1 go to instead of ``acks/``
    (None: ``acks/``), for the partner to download; ``erp_url``: where its
    orders are posted instead of ``[erp] url`` (None: there), with ``[erp]``'s
    token, timeouts and retries, checked as ``[erp] url`` is when the
    pipeline starts; and ``inbox``: the absolute folder it uploads to (its
    SFTP chroot's ``in``), which the daemon watches beside ``[paths] inbox``;
    a file there must come from one of the partner's ids. Its claims go to
    ``processing`` (default ``[paths] processing``/.partners/NAME), which must
    be on the inbox's file system (a claim is a rename). ``max_file_bytes``
    (default ``[daemon]``'s) caps the files in its inbox.

    ``ack = "999"`` answers each functional group of version 005010 or later
    (GS08; ISA12 when GS08 is missing) with a 999 (005010X231A1), and an
    older one with a 997: the 999 does not exist before 5010, and a partner
    that sends 4010 reads 997s."""

    name: str
    ids: tuple[PartnerId, ...] = ()
    ack: str = "997"
    ta1: str = "on-request"
    rules: RuleSettings = field(default_factory=RuleSettings)
    outbox: Path | None = None
    inbox: Path | None = None
    processing: Path | None = None
    max_file_bytes: int = DaemonSettings.max_file_bytes
    erp_url: str | None = None


@dataclass(frozen=True)
class PartnersSettings:
    """``[partners]``: ``unknown`` says what becomes of a file from a sender
    no partner claims: ``accept`` (the default; a setup without partners
    works unchanged) or ``reject``."""

    unknown: str = "accept"
    partners: tuple[PartnerSettings, ...] = ()

    def get(self, name: str) -> PartnerSettings | None:
        return next((p for p in self.partners if p.name == name), None)

    def outboxes(self) -> dict[str, Path]:
        """Partner name -> its outbox, for the partners that have one."""
        return {p.name: p.outbox for p in self.partners if p.outbox is not None}

    def with_inbox(self) -> tuple[PartnerSettings, ...]:
        """The partners with an inbox of their own, which the daemon watches."""
        return tuple(p for p in self.partners if p.inbox is not None)


@dataclass(frozen=True)
class Settings:
    paths: PathSettings = field(default_factory=PathSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    erp: ErpSettings = field(default_factory=ErpSettings)
    ack: AckSettings = field(default_factory=AckSettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    log: LogSettings = field(default_factory=LogSettings)
    rules: RuleSettings = field(default_factory=RuleSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    partners: PartnersSettings = field(default_factory=PartnersSettings)
    source: Path | None = None  # the file these came from, if any

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.paths.root / 'edi-inbox.db'}"

    def replace(self, **sections: object) -> Settings:
        """A copy with whole sections replaced (tests use this)."""
        return dataclasses.replace(self, **sections)  # type: ignore[arg-type]


SECTIONS: dict[str, type] = {
    "paths": PathSettings,
    "database": DatabaseSettings,
    "erp": ErpSettings,
    "ack": AckSettings,
    "daemon": DaemonSettings,
    "log": LogSettings,
    "rules": RuleSettings,
    "http": HttpSettings,
}

_CHOICES = {
    ("daemon", "observer"): ("auto", "inotify", "polling"),
    ("log", "format"): ("auto", "json", "console"),
    ("log", "level"): ("debug", "info", "warning", "error", "critical"),
    **{("rules", f.name): RULE_LEVELS for f in dataclasses.fields(RuleSettings)},
}


def _present(path: Path) -> bool:
    """``path`` is a file, or something this user may not look at (reading
    it then says why, rather than the defaults applying in silence)."""
    try:
        return path.is_file()
    except OSError:
        return True


def load(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Build ``Settings`` from ``path`` (or ``$EDI_INBOX_CONFIG``) and the environment.

    With no path and no variable, ``/etc/edi-inbox/edi-inbox.toml`` is read if
    it exists; otherwise the built-in defaults apply.
    """
    environ = os.environ if environ is None else environ
    source: Path | None = None
    if path is None and environ.get(CONFIG_ENV):
        path = environ[CONFIG_ENV]
    if path is not None:
        source = Path(path)
    else:
        source = next((p for p in DEFAULT_CONFIG_PATHS if _present(p)), None)

    raw: dict[str, dict[str, object]] = {}
    partners_raw: object = {}
    if source is not None:
        try:
            with open(source, "rb") as fh:
                text = fh.read()
            # A byte-order mark (Notepad, PowerShell's utf8) is not TOML: skipped.
            loaded = tomllib.loads(text.removeprefix(codecs.BOM_UTF8).decode("utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{source}: configuration file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
        except UnicodeDecodeError as exc:  # an editor set to Latin-1 saved a "ü"
            raise ConfigError(
                f"{source}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x}):"
                " a TOML file is UTF-8; save it as such"
            ) from None
        except OSError as exc:  # the cause tells a shortage (a reload is retried)
            raise ConfigError(f"{source}: cannot be read: {exc.strerror}") from exc
        where = str(source)
        for section, values in loaded.items():
            if section == "partners":
                partners_raw = values
                continue
            _known(section, {**SECTIONS, "partners": None}, f"{where}: section [{section}]")
            if not isinstance(values, dict):
                raise ConfigError(f"{where}: [{section}] must be a table")
            raw[section] = dict(values)

    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("_")
        if section == "partners" and key == "unknown":
            if not isinstance(partners_raw, dict):
                partners_raw = {}
            partners_raw = {**partners_raw, "unknown": _EnvValue(value, name)}
            continue
        if section == "partners":
            raise ConfigError(
                f"{name}: a partner's settings are not read from the environment; set"
                " them in its [partners.NAME] table (EDI_INBOX_PARTNERS_UNKNOWN is the one"
                " variable of [partners])"
            )
        if (section, key) == ("database", "url") and not value.strip():
            raise ConfigError(
                f"{name} is set but empty: unset it, or name the database (empty, it"
                " would be the default SQLite file, not the one configured)"
            )
        if section not in SECTIONS or not key:
            near = difflib.get_close_matches(section, SECTIONS, n=1, cutoff=0.75)
            fields = {f.name for f in dataclasses.fields(SECTIONS[near[0]])} if near else ()
            if key in fields and section not in SECTIONS:  # a typo: a default would run instead
                meant = f"{ENV_PREFIX}{near[0].upper()}_{key.upper()}"
                raise ConfigError(f"{name}: no section [{section}]; did you mean {meant}?")
            continue  # EDI_INBOX_TEST_PG_URL and the like belong to others
        raw.setdefault(section, {})[key] = _EnvValue(value, name)

    sections: dict[str, object] = {}
    for section, cls in SECTIONS.items():
        values = raw.get(section, {})
        if section == "paths" and "root" not in values:
            values["root"] = default_root(environ)
        where = name_of(source, section)
        sections[section] = _build(cls, section, values, where)
    token_file = typing.cast(ErpSettings, sections["erp"]).token_file
    if token_file is not None:
        check_token_file(token_file, f"{name_of(source, 'erp')} key 'token_file'")
    http = typing.cast(HttpSettings, sections["http"])
    try:
        http.address()
    except ConfigError:
        label = f"{name_of(source, 'http')} key 'listen'"
        raise ConfigError(f"{label} must be HOST:PORT, not {http.listen!r}") from None
    if http.token_file is not None:
        check_token_file(http.token_file, f"{name_of(source, 'http')} key 'token_file'")
    sections["partners"] = _partners(
        partners_raw,
        typing.cast(RuleSettings, sections["rules"]),
        typing.cast(AckSettings, sections["ack"]),
        typing.cast(PathSettings, sections["paths"]),
        typing.cast(DaemonSettings, sections["daemon"]),
        name_of(source, "partners"),
    )
    settings = Settings(source=source, **sections)  # type: ignore[arg-type]
    if not settings.paths.root.is_absolute():  # $XDG_STATE_HOME or $HOME relative
        raise ConfigError(
            f"{name_of(source, 'paths')} key 'root' is not set, and the default one,"
            f" {str(settings.paths.root)!r}, is relative ($STATE_DIRECTORY, $XDG_STATE_HOME"
            " or $HOME): set root to an absolute folder"
        )
    url = raw.get("database", {}).get("url")
    if isinstance(url, _EnvValue):
        label = f"{url.variable} ({name_of(source, 'database')} key 'url')"
    elif url:
        label = f"{name_of(source, 'database')} key 'url'"
    else:
        label = f"the database ({name_of(source, 'paths')} root's edi-inbox.db)"
    _check_database(settings, label)
    return settings


def _check_database(settings: Settings, label: str) -> None:
    """A SQLite database is one file, named from the root (``sqlite_path``),
    out of every folder the daemon takes files from or files them into (a
    PostgreSQL URL's credentials percent-encoded as written): in an inbox or a
    processing folder its own files would be taken for uploads or claims; in
    done/, failed/, acks/ or an outbox, filed over or fetched by partners."""
    url = settings.database_url
    scheme, _, rest = url.partition("://")
    if scheme.lower() in ("postgresql", "postgres"):
        if _password_misread(rest) or not _libpq_reads(f"postgresql://{rest}"):
            raise ConfigError(
                f"{label}: its user or password (or a parameter) holds a '%' not followed by"
                " two hex digits, or a '/', '?', '#', '&' or '@': percent-encode them (% as"
                " %25, / as %2F, ? as %3F, # as %23, & as %26, @ as %40)"
            )
        return
    if not url.lower().startswith("sqlite:"):  # never shown: it may hold a password
        raise ConfigError(f"{label} must be sqlite:////PATH or postgresql://…")
    path = sqlite_path(url)
    if path == ":memory:":
        raise ConfigError(
            f"{label}: an in-memory database forgets every job when its process ends"
            " (and each process has its own): name a file, sqlite:////var/lib/edi-inbox/"
            "edi-inbox.db"
        )
    if not path:
        raise ConfigError(f"{label} names no file: sqlite:////var/lib/edi-inbox/edi-inbox.db")
    if "?" in path or path.endswith("/") or os.path.isdir(path):
        raise ConfigError(
            f"{label} must name a file, without a query: {url!r} is a folder or holds one"
        )
    if not path.startswith("/") and _working_directory() != "/":
        # SQLite reads it from the working directory: from / (a service) it is
        # /PATH, from anywhere else another file (an empty database, orders
        # posted again): one meaning or none.
        raise ConfigError(
            f"{label} names a file relative to the working directory: {url!r} is"
            f" {os.path.abspath(path)} from this one, /{path} from / (the service's);"
            " write it absolute, four slashes as in sqlite:////var/lib/edi-inbox/edi-inbox.db"
        )
    paths, partners = settings.paths, settings.partners.partners
    inboxes = [(paths.inbox, "[paths] inbox")]
    inboxes += [(p.inbox, f"the inbox of partner {p.name!r}") for p in partners if p.inbox]
    folder = os.path.realpath(os.path.dirname(path))
    for inbox, name in inboxes:
        if folder == os.path.realpath(typing.cast(Path, inbox)):
            raise ConfigError(
                f"{label}: {path!r} is in {name} {str(inbox)!r}: the daemon would take the"
                " database's files for uploads; keep it beside the folders, in [paths] root"
            )
    kept = [(getattr(paths, f), f"[paths] {f}") for f in ("processing", "done", "failed", "acks")]
    kept.append((paths.outbox, "[paths] outbox"))
    kept += [(p.processing, f"the processing folder of partner {p.name!r}") for p in partners]
    kept += [(p.outbox, f"the outbox of partner {p.name!r}") for p in partners]
    for kept_folder, name in kept:
        if kept_folder is not None and _within(Path(path), kept_folder):
            raise ConfigError(
                f"{label}: {path!r} is in {name} {str(kept_folder)!r}, where the daemon"
                " files, claims or answers: keep it beside the folders, in [paths] root"
            )


def _working_directory() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # removed under the process
        return None


def sqlite_path(url: str) -> str:
    """The path a ``sqlite:///PATH`` URL names, as written: SQLite reads a
    relative one from the working directory (``_check_database`` accepts it
    only from /, where it means one file). Empty: not such a URL, or no path."""
    prefix = "sqlite:///"
    return url[len(prefix) :] if url[: len(prefix)].lower() == prefix else ""


def _libpq_reads(url: str) -> bool:
    """libpq parses ``url`` (its keywords known, its escapes whole): its
    error, which quotes what it could not read (a password's tail), is
    never shown. Without psycopg2 (the ``postgres`` extra), the store says
    what to install."""
    try:
        from psycopg2 import Error
        from psycopg2.extensions import parse_dsn
    except ImportError:
        return True
    try:
        parse_dsn(url)
    except Error:
        return False
    return True


def _password_misread(rest: str) -> bool:
    """A PostgreSQL URL (after ``scheme://``) that libpq parses, but with its
    password read as something else, to be quoted in an error: a user part
    cut short by an unencoded "/", "?" or "#" (the rest read as a host and
    port), a second "@", an "@" in the database name (the password's tail).
    Hosts (libpq's "h1:5432,h2:5432", "[::1]") and an "@" in a parameter
    are fine; what libpq cannot parse (an "&" in ``?password=``) is
    ``_libpq_reads``'."""
    parts = re.split(r"([/?#])", rest, maxsplit=1)
    authority = parts[0]
    sep, after = (parts[1], parts[2]) if len(parts) == 3 else ("", "")
    host = r"(\[[0-9A-Fa-f:.]+\]|[^:@,\[\]]*)(:[0-9]*)?"
    if authority.count("@") > 1:
        return True
    if "@" not in authority and "@" in rest and not re.fullmatch(f"{host}(,{host})*", authority):
        return True
    path = after.partition("?")[0] if sep == "/" else ""
    return "@" in path


def _partners(
    raw: object,
    rules: RuleSettings,
    ack: AckSettings,
    paths: PathSettings,
    daemon: DaemonSettings,
    where: str,
) -> PartnersSettings:
    """``[partners]``: ``unknown``, and a ``[partners.NAME]`` table per partner.
    Errors name the partner and the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = raw.get("unknown", "accept")
    if isinstance(unknown, _EnvValue):
        label = f"{unknown.variable} ({where} key 'unknown')"
    else:
        label = f"{where} key 'unknown'"
    if unknown not in ("accept", "reject"):
        raise ConfigError(f"{label} must be one of accept, reject, not {unknown!r}")
    partners: list[PartnerSettings] = []
    claimed: dict[PartnerId, str] = {}
    file = where[: -len("[partners]")]
    heres: dict[str, str] = {}
    for name, values in raw.items():
        if name == "unknown":
            continue
        here = f"{file}[partners.{name}]"
        if not isinstance(values, dict):
            _known(name, {"unknown": None}, f"{where} key '{name}'")
        if not PARTNER_NAME.fullmatch(name):
            raise ConfigError(
                f"{here}: a partner's name is 1 to 64 letters, digits, '.', '_' or '-'"
                " (it is stored with each job and typed in commands)"
            )
        partner = _partner(
            name, typing.cast(dict[str, object], values), rules, ack, paths, daemon, here
        )
        heres[name] = here
        for pid in partner.ids:
            if pid in claimed:
                raise ConfigError(
                    f"{here} key 'ids': {str(pid)!r} is claimed by partner"
                    f" {claimed[pid]!r} too: a sender belongs to one partner"
                )
            claimed[pid] = name
        partners.append(partner)
    _check_folders(paths, partners, heres, f"{file}[paths]")
    return PartnersSettings(unknown=str(unknown), partners=tuple(partners))


def _check_folders(
    paths: PathSettings, partners: list[PartnerSettings], heres: dict[str, str], at_paths: str
) -> None:
    """Each inbox and each processing folder belongs to one lane, and no inbox
    — the shared one included — is a folder the daemon writes (it would read
    its own output back: a 997 answered with a 997…). Folders are told apart
    by what they are (device and inode) where they exist, a symlink being the
    folder it names. A written folder inside an inbox is allowed: an inbox is
    not watched recursively, and a folder in it is left in place, unread.
    No folder the daemon files or answers into is in a processing folder: a
    start would take what it wrote there for claims a crash left."""

    def key(path: Path) -> object:
        try:
            st = os.stat(path)
        except OSError:
            return Path(os.path.abspath(path))
        return (st.st_dev, st.st_ino)

    inboxes: dict[object, str] = {}
    processing = {key(typing.cast(Path, paths.processing)): "[paths] processing"}
    written = {key(typing.cast(Path, getattr(paths, f))): f"[paths] {f}" for f in (
        "processing", "done", "failed", "outbox", "acks")}  # fmt: skip
    for partner in partners:
        if partner.outbox is not None:
            written.setdefault(key(partner.outbox), f"the outbox of partner {partner.name!r}")
        if partner.processing is not None:
            folder = key(partner.processing)
            if folder in processing:
                raise ConfigError(
                    f"{heres[partner.name]} key 'processing': {str(partner.processing)!r} is"
                    f" {processing[folder]} too: each inbox has a processing folder of its own"
                    " (claims left there are resumed by the inbox they came from)"
                )
            processing[folder] = f"the processing folder of partner {partner.name!r}"
            written.setdefault(folder, processing[folder])
    claimed = [typing.cast(Path, paths.processing)]
    claimed += [p.processing for p in partners if p.processing is not None]
    outputs = [(typing.cast(Path, getattr(paths, f)), at_paths, f, f"[paths] {f}") for f in (
        "done", "failed", "outbox", "acks")]  # fmt: skip
    outputs += [
        (p.outbox, heres[p.name], "outbox", f"the outbox of partner {p.name!r}")
        for p in partners
        if p.outbox is not None
    ]
    for output, here, setting, name in outputs:
        inside = next((c for c in claimed if _within(output, c)), None)
        if inside is not None:
            raise ConfigError(
                f"{here} key {setting!r}: {str(output)!r} ({name}) is in the processing folder"
                f" {str(inside)!r}: the daemon would take what it writes there for claims"
            )
    lanes = [(typing.cast(Path, paths.inbox), at_paths, "[paths] inbox")] + [
        (p.inbox, heres[p.name], f"the inbox of partner {p.name!r}")
        for p in partners
        if p.inbox is not None
    ]
    for inbox, here, name in lanes:
        folder = key(inbox)
        if folder in inboxes:
            raise ConfigError(
                f"{here} key 'inbox': {str(inbox)!r} is {inboxes[folder]} too:"
                " each partner uploads to a folder of its own"
            )
        if folder in written:
            raise ConfigError(
                f"{here} key 'inbox': {str(inbox)!r} is {written[folder]}, where the"
                " daemon writes: it would read its own output back"
            )
        inboxes[folder] = name


def _within(path: Path, folder: Path) -> bool:
    """``path`` is ``folder`` or inside it, links followed."""
    real, top = os.path.realpath(path), os.path.realpath(folder)
    return real == top or real.startswith(top.rstrip("/") + "/")


def _partner(
    name: str,
    values: dict[str, object],
    rules: RuleSettings,
    ack: AckSettings,
    paths: PathSettings,
    daemon: DaemonSettings,
    where: str,
) -> PartnerSettings:
    known = dict.fromkeys(
        (
            "ids", "ack", "ta1", "rules", "outbox", "inbox", "processing", "max_file_bytes",
            "erp_url",
        )
    )  # fmt: skip
    for key in values:
        _known(key, known, f"{where} key '{key}'")
    ids_raw = values.get("ids", [])
    if not isinstance(ids_raw, list) or not all(isinstance(v, str) for v in ids_raw):
        raise ConfigError(f"{where} key 'ids' must be a list of strings, not {ids_raw!r}")
    if not ids_raw:
        raise ConfigError(f"{where} key 'ids' must name at least one sender (\"ZZ:ACME\")")
    ids: list[PartnerId] = []
    for text in ids_raw:
        match = _PARTNER_ID.fullmatch(text)
        if match is None:
            raise ConfigError(
                f"{where} key 'ids': {text!r} is not ISA05:ISA06 or ISA05:ISA06:GS02"
                ' (e.g. "ZZ:ACMEFOODS" or "01:123456789:ACMEWEST"; ISA05 is 2'
                " characters, ISA06 and GS02 1 to 15)"
            )
        pid = PartnerId(match[1], match[2], match[3])
        if pid in ids:
            raise ConfigError(f"{where} key 'ids': {text!r} is listed twice")
        ids.append(pid)
    choices = {"ack": PARTNER_ACKS, "ta1": PARTNER_TA1}
    chosen: dict[str, str] = {"ack": "997" if ack.enabled else "none", "ta1": "on-request"}
    for key, allowed in choices.items():
        if key not in values:
            continue
        value = values[key]
        if value not in allowed:
            raise ConfigError(
                f"{where} key '{key}' must be one of {', '.join(allowed)}, not {value!r}"
            )
        chosen[key] = str(value)
    overrides = values.get("rules", {})
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where} key 'rules' must be a table ([partners.{name}.rules])")
    merged = {**dataclasses.asdict(rules), **overrides}
    partner_rules = _build(RuleSettings, "rules", merged, f"{where[:-1]}.rules]")
    folders = {key: _folder(values, key, where) for key in ("outbox", "inbox", "processing")}
    inbox, processing = folders["inbox"], folders["processing"]
    if processing is not None and inbox is None:
        raise ConfigError(f"{where} key 'processing' is only for a partner with an 'inbox'")
    if inbox is not None:
        processing = processing or typing.cast(Path, paths.processing) / ".partners" / name
        _same_file_system(inbox, processing, where)
    max_bytes = values.get("max_file_bytes", daemon.max_file_bytes)
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1:
        raise ConfigError(
            f"{where} key 'max_file_bytes' must be a whole number of bytes, not {max_bytes!r}"
        )
    erp_url = values.get("erp_url")
    if erp_url is not None and (not isinstance(erp_url, str) or not erp_url.strip()):
        raise ConfigError(f"{where} key 'erp_url' must be an http:// or https:// URL")
    return PartnerSettings(
        name=name,
        ids=tuple(ids),
        ack=chosen["ack"],
        ta1=chosen["ta1"],
        rules=typing.cast(RuleSettings, partner_rules),
        outbox=folders["outbox"],
        inbox=inbox,
        processing=processing,
        max_file_bytes=max_bytes,
        erp_url=erp_url,
    )


def _folder(values: Mapping[str, object], key: str, where: str) -> Path | None:
    """An absolute folder (a partner's ``outbox``, ``inbox`` or ``processing``)."""
    value = values.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not Path(value).is_absolute():
        raise ConfigError(f"{where} key '{key}' must be an absolute folder, not {value!r}")
    return Path(os.path.normpath(value))


def _same_file_system(inbox: Path, processing: Path, where: str) -> None:
    """A partner's inbox and its ``processing`` folder on one file system
    (looked at where they exist: the nearest existing parent stands in)."""

    def device(path: Path) -> int | None:
        for candidate in (path, *path.parents):
            try:
                return os.stat(candidate).st_dev
            except OSError:
                continue
        return None

    inbox_dev, processing_dev = device(inbox), device(processing)
    if inbox_dev is not None and processing_dev is not None and inbox_dev != processing_dev:
        raise ConfigError(
            f"{where} key 'inbox': {str(inbox)!r} is on another file system than its"
            f" processing folder {str(processing)!r} (a claim is a rename): set"
            " 'processing' to a folder beside the inbox that the partner cannot write"
        )


def check_token_file(path: Path, label: str = "[erp] token_file") -> None:
    """Refuse a token file that other users can read, or that anyone but its
    owner can change (mode 0600 or 0640 is right). A file that cannot be
    looked at is left to the ERP client, which says why when it reads it."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return
    loose = [
        what
        for bit, what in (
            (stat.S_IROTH, "world-readable"),
            (stat.S_IWOTH, "world-writable"),
            (stat.S_IWGRP, "group-writable"),
        )
        if mode & bit
    ]
    if loose:
        raise ConfigError(
            f"{label}: {path} has mode {mode:04o} ({', '.join(loose)}): the token must "
            f"be kept from other users; chmod 0600 (or 0640 for the service's group) {path}"
        )


def name_of(source: Path | None, section: str) -> str:
    return f"{source}: [{section}]" if source else f"[{section}]"


class _EnvValue(str):
    """A value that came from the environment, as text, with its variable name."""

    variable: str

    def __new__(cls, value: str, variable: str) -> _EnvValue:
        obj = super().__new__(cls, value)
        obj.variable = variable
        return obj


def _known(name: str, known: Mapping[str, object], what: str) -> None:
    if name in known:
        return
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(known)}"
    raise ConfigError(f"{what} is not known{hint}")


def _build(cls: type, section: str, values: dict[str, object], where: str) -> object:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, object] = {}
    for key, value in values.items():
        label = f"{where} key '{key}'"
        if isinstance(value, _EnvValue):
            label = f"{value.variable} ({where} key '{key}')"
        _known(key, fields, label)
        if (section, key) == ("daemon", "processes") and isinstance(value, str):
            kwargs[key] = _processes(value, label)
            continue
        kwargs[key] = _convert(value, hints[key], label)
        choices = _CHOICES.get((section, key))
        if choices and kwargs[key] not in choices:
            raise ConfigError(f"{label} must be one of {', '.join(choices)}, not {value!r}")
        number = kwargs[key]
        if isinstance(number, float):
            _check_float(number, label)
            if number == 0 and (section, key) in _NOT_ZERO:
                raise ConfigError(f"{label} must be more than 0 (a wait that never waits)")
        elif isinstance(number, int) and not isinstance(number, bool) and number < 0:
            raise ConfigError(f"{label} must not be negative")
    limits = (
        "max_file_bytes",
        "max_groups_per_file",
        "max_sets_per_file",
        "max_segments_per_file",
        "max_bytes_in_flight",
        "max_crashes",
    )
    for key in ("workers", "processes", *limits):
        if section == "daemon" and kwargs.get(key, 1) == 0:
            raise ConfigError(f"{where} key '{key}' must be at least 1")
    workers = kwargs.get("workers")  # a typo must not start 100,000 threads
    if section == "daemon" and isinstance(workers, int) and workers > WORKERS_MAX:
        raise ConfigError(f"{where} key 'workers' must be at most {WORKERS_MAX}")
    return cls(**kwargs)


# [daemon] workers: far above what any inbox needs (16 keep up with an ERP
# answering in 20 ms at 300 files/s); processes never exceed workers.
WORKERS_MAX = 1024


def _processes(value: str, label: str) -> int:
    """``[daemon] processes``: a whole number, or "auto" for one per usable CPU."""
    if value.strip().lower() == "auto":
        return usable_cpus()
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f'{label} must be a whole number or "auto", not {value!r}') from None
    if number < 1:
        raise ConfigError(f"{label} must be at least 1")
    return number


# Timeouts a socket takes as "do not wait at all" when 0: every call would fail;
# intervals that, at 0, would spin a core (polling, rescanning, heartbeats).
_NOT_ZERO = {
    ("erp", "connect_timeout_seconds"),
    ("erp", "read_timeout_seconds"),
    ("daemon", "polling_interval_seconds"),
    ("daemon", "rescan_seconds"),
    ("daemon", "heartbeat_seconds"),
}


def _check_float(number: float, label: str) -> None:
    """NaN compares false with everything, so ``< 0`` lets it through; inf never elapses."""
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"{label} must be a finite number ≥ 0, got {number}")
    if number > MAX_SECONDS:
        raise ConfigError(f"{label} must be at most {MAX_SECONDS} (a year), got {number:g}")


def _convert(value: object, hint: object, label: str) -> object:
    """Turn a TOML or environment value into the field's type, or say why not."""
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0]
    from_env = isinstance(value, _EnvValue)
    if optional and value == "":
        return None
    try:
        if hint is bool:
            if from_env:
                lowered = str(value).lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if isinstance(value, bool):
                return value
            raise ValueError
        if hint is int:
            if isinstance(value, bool | float):
                raise ValueError
            return int(value)  # type: ignore[call-overload]
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)  # type: ignore[arg-type]
        if hint is str:
            if not isinstance(value, str):
                raise ValueError
            return str(value)
        if hint is Path:
            if isinstance(value, Path):
                return value
            if not isinstance(value, str):
                raise ValueError
            try:
                path = Path(str(value)).expanduser()
            except RuntimeError:  # "~user" of no user
                raise ConfigError(f"{label}: no home folder for {value!r}") from None
            if not path.is_absolute():  # another folder from each working directory
                raise ConfigError(f"{label} must be an absolute path, not {value!r}")
            return path
        if typing.get_origin(hint) is tuple:
            if from_env:
                return tuple(p.strip() for p in str(value).split(",") if p.strip())
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError
            return tuple(value)
    except (TypeError, ValueError):
        pass
    else:
        raise AssertionError(f"unhandled type {hint!r}")
    kind = getattr(hint, "__name__", str(hint))
    if typing.get_origin(hint) is tuple:
        kind = "list of strings"
    raise ConfigError(f"{label} must be {_article(kind)}, not {value!r}")


def _article(kind: str) -> str:
    names = {
        "int": "a whole number",
        "float": "a number",
        "str": "a string",
        "bool": "true or false",
    }
    return names.get(kind, "a path" if kind == "Path" else f"a {kind}")


def check_reload(running: Settings, new: Settings) -> None:
    """Raise ``ConfigError`` if ``new`` changes what only a restart can: the
    database and ``[paths] processing`` (where this host's lock is)."""
    if new.database_url != running.database_url:
        raise ConfigError("[database] changed: restart the service to use another database")
    if new.paths.processing != running.paths.processing:
        raise ConfigError("[paths] processing changed: restart the service to move it")


def safe_url(url: str) -> str:
    """A URL as messages and logs may show it: no password (``user:***@``; a
    user without one, maybe an API key, as ``***@``) and no query
    (``?***``), either of which may hold a secret."""
    scheme, sep, rest = url.partition("://")
    if not sep:  # no scheme written ("user:pw@host/orders", "//user:pw@host")
        scheme, rest = "", url
    creds, at, where = rest.rpartition("@")
    if at:  # a user alone may be an API key (sent as "key:"): hidden too
        user, colon, _ = creds.partition(":")
        rest = f"{user}:***@{where}" if colon else f"***@{where}"
    base, question, _ = rest.partition("?")
    return f"{scheme}{sep}{base}{'?***' if question else ''}"


def shown_url(url: str) -> str:
    """A URL as a message may show it: no user info, query or fragment
    (``scheme://host:port/path``). One with an '@' after its host shows
    only what follows the last '@' (``https://***@host/orders``): a
    password holding a bare '/', '?' or '#' ends the host part early, and
    its first part would show as the port, the rest as the path. Text that
    is not a URL, ``safe_url``'s."""
    from urllib3.exceptions import LocationParseError
    from urllib3.util import parse_url

    try:
        parsed = parse_url(url.strip())
    except LocationParseError:
        return safe_url(url)
    if not parsed.scheme or not parsed.host:
        return safe_url(url)
    rest = url.strip().partition("://")[2]
    if parsed.auth is None and "@" in rest:  # what is before the '@' may be a password
        where = rest.rpartition("@")[2].partition("?")[0].partition("#")[0]
        return f"{parsed.scheme}://***@{where}"
    return parsed._replace(auth=None, query=None, fragment=None).url
