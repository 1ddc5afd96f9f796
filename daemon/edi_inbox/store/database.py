"""The two databases, and units of work on them.

``open_database(url, settings)`` gives a ``SqliteStore`` or a
``PostgresStore`` with the models bound to it. Every unit of work runs through
``run_unit``: one transaction (``BEGIN IMMEDIATE`` on SQLite for writes, so
two writers never deadlock upgrading a read lock), rolled back whole on any
error. On PostgreSQL a unit that fails because the connection died (server
restarted, connection killed) is retried on a fresh connection for up to
``retry_seconds`` (``[database] reconnect_seconds``); SQLite errors are
final (``busy_timeout`` has already waited for a competing writer).

A SQLite file is created only by the open that asks for it (``create=True``,
the daemon at start-up, ``db init``); every later connection opens it
``mode=rw`` and checks that it is still the file first opened. A file removed
or replaced mid-run makes the database unavailable (``DatabaseUnavailable``),
never a new empty database that silently takes the records. ``is_permanent``
tells the errors retrying cannot fix (a value too big for an index) from the
ones the database may recover from (server down, disk full, locked).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import select
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlsplit

import peewee as pw
from playhouse.pool import PooledPostgresqlDatabase

from ..config import DatabaseSettings, Settings, safe_url, sqlite_path
from ..errors import DatabaseUnavailable, StoreError, one_line
from ..money import exact_sum
from .fields import FIELD_TYPES, as_utc, utcnow
from .models import MODELS

log = logging.getLogger(__name__)
T = TypeVar("T")
# peewee's driver-error → peewee-error translation (a mangled name inside classes).
EXCEPTIONS = getattr(pw, "__exception_wrapper__")  # noqa: B009


def _dec_add(a: Any, b: Any) -> str:
    return str(exact_sum((a, b)))


class _DecSum:
    """SQLite aggregate: the exact sum of decimal text (``SUM`` would use floats)."""

    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: Any) -> None:
        if value is not None:
            self.total = exact_sum((self.total, value))

    def finalize(self) -> str | None:
        return None if self.total is None else str(self.total)


class _Units:
    """What both database classes add: units of work with rollback and retry."""

    retry_seconds: float = 10.0
    edi_content_max_bytes: int = 1024 * 1024
    is_sqlite: bool = False
    # Held around each unit: a store whose threads share one connection
    # (SqliteStore's ``shared``) makes it a lock; otherwise it holds nothing.
    unit_lock: Any = contextlib.nullcontext()

    def clock(self: Any) -> datetime:
        """Now, by the clock heartbeats are dated and judged by (inside a
        unit): the server's on PostgreSQL, so that hosts whose clocks
        differ judge each other alike; this machine's on SQLite (every
        process on one machine: one clock)."""
        if self.is_sqlite:
            return utcnow()
        return as_utc(self.execute_sql("SELECT clock_timestamp()").fetchone()[0])

    def run(self: Any, fn: Callable[[], T], *, write: bool = True, atomic: bool = True) -> T:
        """Run ``fn`` in one transaction (``atomic=False``: a single statement
        that needs none); on PostgreSQL, again on a fresh connection while the
        connection keeps dying, for up to ``retry_seconds``."""
        with self.unit_lock:
            return self._run(fn, write, atomic)

    def _run(self: Any, fn: Callable[[], T], write: bool, atomic: bool) -> T:
        if self.in_transaction():  # nested: the outer unit owns commit and retry
            return fn()
        deadline = time.monotonic() + self.retry_seconds
        delay, warned = 0.05, False
        while True:
            opened = False
            try:
                opened = self.connect(reuse_if_open=True)
                self._check_connection()
                if not atomic:
                    return fn()
                with self._transaction(write):
                    return fn()
            except Exception as exc:
                self._discard_broken(exc)
                if not self._retryable(exc) or time.monotonic() + delay > deadline:
                    raise
                if not warned:  # one line a unit of work, not one an attempt
                    log.warning(
                        "database connection lost (%s); retrying for up to %g s",
                        one_line(exc),
                        self.retry_seconds,
                    )
                    warned = True
            finally:
                if opened and not self.is_sqlite and not self.is_closed():
                    self.close()  # back to the pool: one connection per unit of work
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


# Less free space than this on the database's file system: writes may fail.
MIN_FREE_BYTES = 256 * 1024
# A checkpoint (WAL pages copied into the database, two fsyncs) every this
# many WAL pages (~40 MB): SQLite's 1,000 made that ~600 µs a file, this ~60.
CHECKPOINT_PAGES = 10_000


class SqliteStore(_Units, pw.SqliteDatabase):
    """SQLite in WAL mode: one connection per thread, writes ``BEGIN IMMEDIATE``.

    ``checkpoints=False``: this store's connections never checkpoint the WAL
    (``wal_autocheckpoint`` 0); a ``Checkpointer`` does, beside the writers.

    ``shared=True``: one connection for all the threads, which take turns a
    unit of work at a time (``unit_lock``), for a process whose every use of
    the database is a unit (a worker process: its jobs' records). SQLite
    drops a connection's page cache whenever another connection has
    committed since its last transaction; one connection a process instead
    of one a thread took the default daemon from 46 % to 57 % of the minimal
    loop (``bench/README.md``). Reads then wait for the unit in progress,
    which takes a millisecond or less."""

    is_sqlite = True

    def __init__(
        self,
        path: str,
        settings: DatabaseSettings,
        *,
        checkpoints: bool = True,
        create: bool = True,
        shared: bool = False,
    ) -> None:
        busy_ms = int(settings.busy_timeout_seconds * 1000)
        super().__init__(
            path,
            pragmas={
                "journal_mode": "wal",
                "busy_timeout": busy_ms,
                "foreign_keys": 1,
                "synchronous": "normal",
                "cache_size": -32_000,  # 32 MB of page cache per connection
                "temp_store": "memory",
                # A checkpoint costs two fsyncs (~4 ms each on a VM disk); the
                # WAL is cut back to 64 MB once it starts over.
                "wal_autocheckpoint": CHECKPOINT_PAGES if checkpoints else 0,
                "journal_size_limit": 64 * 1024 * 1024,
            },
            timeout=settings.busy_timeout_seconds,
            field_types=FIELD_TYPES["sqlite"],
            # shared: peewee keeps one connection state, not one per thread.
            thread_safe=not shared,
            check_same_thread=not shared,
        )
        self.edi_content_max_bytes = settings.edi_content_max_bytes
        self.create = create  # the first connection may create the file
        # (st_dev, st_ino) of the file this store first opened: every later
        # connection must find that same file.
        self.file_id: tuple[int, int] | None = None
        self.write_lock = threading.Lock()
        self.write_lock_seconds = settings.busy_timeout_seconds + 5.0
        if shared:
            self.unit_lock = _Turns(self.write_lock_seconds)
        self._turn_fd: int | None = None  # the writers' lock file, opened at the first write
        # Set by a worker process (procs.py): a semaphore the daemon's worker
        # processes share, so that they hand the write turn to each other at once.
        self.process_lock: Any = None
        self.register_function(_dec_add, "dec_add", 2, deterministic=True)
        self.register_aggregate(_DecSum, "dec_sum", 1)

    def _transaction(self, write: bool) -> Any:
        return _SqliteTransaction(self, write)

    def close(self) -> bool:
        """Close this thread's connection (``shared``: the one, once the unit
        in progress is done; the next unit opens it again)."""
        with self.unit_lock:
            return bool(super().close())

    def _connect(self) -> Any:
        """The first connection of a ``create=True`` store may create the file;
        every other opens it ``mode=rw`` (never creating it) and only if it is
        the file first opened."""
        if self.file_id is None and self.create:
            conn = self._opened(super()._connect)  # type: ignore[misc]
            if self.file_id is None:
                self.file_id = self._file_id()
            return conn
        found = self._file_id()
        if found is None:
            raise DatabaseUnavailable(
                f"the database file {self.database} is missing"
                + (" (removed while in use; it is not created again)" if self.file_id else "")
            )
        if self.file_id is not None and found != self.file_id:
            raise DatabaseUnavailable(
                f"the database file {self.database} was replaced by another file"
            )
        uri = f"file:{quote(os.path.abspath(self.database))}?mode=rw"
        timeout: float = getattr(self, "_timeout")  # noqa: B009 (peewee's, untyped)

        def connect() -> Any:
            conn = sqlite3.connect(
                uri, uri=True, timeout=timeout, isolation_level=None, **self.connect_params
            )
            try:
                self._add_conn_hooks(conn)  # type: ignore[attr-defined]
            except Exception:
                conn.close()
                raise
            return conn

        conn = self._opened(connect)
        if self.file_id is None:
            self.file_id = found
        return conn

    def _opened(self, connect: Callable[[], Any]) -> Any:
        """``connect()``. SQLite's "unable to open database file" names
        neither the file nor why: this names the file (the database, its
        ``-wal`` or ``-shm``) the user may not open for writing, and the
        system's reason."""
        try:
            return connect()
        except sqlite3.OperationalError as exc:
            full = self._why_not_opened()  # SQLite says "disk I/O error", "unable to open"
            if full is not None:
                raise DatabaseUnavailable(f"{full} ({exc})") from None
            if "unable to open" not in str(exc):
                raise
            where, reason = self.database, str(exc)
            for path in (self.database, f"{self.database}-wal", f"{self.database}-shm"):
                try:  # O_NONBLOCK: a FIFO in its place is not waited on
                    os.close(os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC))
                except FileNotFoundError:
                    continue
                except OSError as err:
                    where, reason = path, err.strerror or str(err)
                    break
            message = f"the database file {where} cannot be opened: {reason}"
            raise DatabaseUnavailable(message) from None

    def _initialize_connection(self, conn: Any) -> None:
        self._state.file_id = self._file_id()  # type: ignore[attr-defined]

    def _file_id(self) -> tuple[int, int] | None:
        """The file's (st_dev, st_ino); None if it does not exist. A file
        this user may not reach is ``DatabaseUnavailable`` saying so, never
        "missing"."""
        try:
            st = os.stat(self.database)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise DatabaseUnavailable(
                f"the database file {self.database} cannot be reached: {exc.strerror}"
            ) from None
        return (st.st_dev, st.st_ino)

    def no_room(self, least: int = MIN_FREE_BYTES) -> str | None:
        """Why nothing can be written, if the file system holding the database
        has less than ``least`` bytes free (``status`` tells it; a full disk
        leaves reads working and every write failing)."""
        try:
            st = os.statvfs(os.path.dirname(os.path.abspath(self.database)))
        except OSError:
            return None
        free = st.f_bavail * st.f_frsize
        if free >= least:
            return None
        return f"no space left for the database: {free} bytes free on its file system"

    def _why_not_opened(self) -> str | None:
        """Why the file cannot be opened, if its file system is full: no
        space (``no_room``) or no inode left for its ``-wal`` and ``-shm``."""
        full = self.no_room()
        if full is not None:
            return full
        try:
            st = os.statvfs(os.path.dirname(os.path.abspath(self.database)))
        except OSError:
            return None
        if st.f_files and not st.f_favail:
            return "no inode left for the database's files: 0 inodes free on its file system"
        return None

    def begin_write(self) -> None:
        """Take the write turn: from this process's other threads (``write_lock``),
        the daemon's other worker processes (``process_lock``), then any other
        process (``take_turn``). OperationalError if it does not come in
        ``busy_timeout`` (+5 s)."""
        seconds = self.write_lock_seconds
        deadline = time.monotonic() + seconds
        if not self.write_lock.acquire(timeout=seconds):
            raise pw.OperationalError(f"database is locked: no write turn within {seconds:g} s")
        shared = self.process_lock
        if shared is not None and not shared.acquire(timeout=max(0.0, deadline - time.monotonic())):
            self.write_lock.release()
            raise pw.OperationalError(f"database is locked: no write turn within {seconds:g} s")
        if not self.take_turn(deadline):
            if shared is not None:
                shared.release()
            self.write_lock.release()
            raise pw.OperationalError(
                f"database is locked: another process kept the write turn for {seconds:g} s"
            )

    def end_write(self) -> None:
        self.end_turn()
        if self.process_lock is not None:
            self.process_lock.release()
        self.write_lock.release()

    def take_turn(self, deadline: float) -> bool:
        """The write turn among processes: ``flock`` on ``<database>-writers.lock``.

        Without it, a writer that finds another process's write transaction
        open meets SQLite's busy handler, which sleeps 1, 2, 5, 10… ms between
        tries, while the transaction it waits for takes ~0.2 ms; two worker
        processes spent a third of their time asleep there. Here the wait is
        tried every 0.05-2 ms (a blocking ``flock`` could not give up). The
        daemon's worker processes meet here only its main process and other
        programs: among themselves they take turns on ``process_lock`` first,
        which wakes the next one the moment it is free (+20 % files/s over
        polling alone). Best effort: without the lock file (a read-only
        folder) ``busy_timeout`` alone applies."""
        fd = self._turn_fd
        if fd is None:
            try:
                fd = os.open(
                    f"{self.database}-writers.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o660
                )
            except OSError:
                return True
            self._turn_fd = fd
        delay = 0.00005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() + delay > deadline:
                    return False
            time.sleep(delay)
            delay = min(delay * 2, 0.002)

    def end_turn(self) -> None:
        if self._turn_fd is not None:
            fcntl.flock(self._turn_fd, fcntl.LOCK_UN)

    def close_turns(self) -> None:
        """Close the writers' lock file (``close()`` closes one thread's connection only)."""
        fd, self._turn_fd = self._turn_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _check_connection(self) -> None:
        # An open SQLite connection goes on writing into a database file that
        # was deleted or replaced underneath it, and every record is lost:
        # check (one stat) that the file is still the one we opened.
        state: Any = self._state  # type: ignore[attr-defined]
        found = self._file_id()
        if found is None or found != state.file_id or found != self.file_id:
            _force_close(self)
            raise DatabaseUnavailable(
                f"the database file {self.database} was removed or replaced while in use"
            )

    def _retryable(self, exc: BaseException) -> bool:
        return False

    def _discard_broken(self, exc: BaseException) -> None:
        # A failed rollback (the file vanished) leaves the driver mid-transaction:
        # close the connection rather than hand a half-written transaction on.
        # One opened while the file was not writable is read-only for good
        # (SQLite opens ``mode=rw`` read-only then, silently): the next unit
        # opens it again.
        if self.is_closed():
            return
        orig = getattr(exc, "orig", None) or exc
        code = getattr(orig, "sqlite_errorcode", None)
        read_only = code is not None and int(code) & 0xFF == SQLITE_READONLY
        if read_only or self._state.conn.in_transaction:  # type: ignore[attr-defined]
            _force_close(self)


class _Turns:
    """A shared SQLite store's ``unit_lock``: one unit at a time (a unit may run
    another inside it), waited for as long as a write turn, then
    OperationalError, as ``begin_write``: with the database locked by another
    process, each thread gives up after its own wait, not after the waits of
    every thread ahead of it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.RLock()

    def __enter__(self) -> None:
        if not self._lock.acquire(timeout=self.seconds):
            raise pw.OperationalError(f"database is locked: no turn within {self.seconds:g} s")

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class _SqliteTransaction:
    """``db.atomic('IMMEDIATE')`` without its generality (savepoints, commit
    hooks), for the recorder's many small units. It sits on peewee's
    transaction stack, so ``in_transaction()`` and nested ``atomic()`` see it.

    A write first takes the write turn (``SqliteStore.begin_write``): threads
    and the daemon's worker processes then queue and are woken the moment it
    is free, instead of meeting SQLite's busy handler, which sleeps 1-100 ms
    between retries (with eight or more workers that sleeping was the
    daemon's ceiling)."""

    def __init__(self, db: SqliteStore, write: bool) -> None:
        self.db = db
        self.write = write

    def __enter__(self) -> _SqliteTransaction:
        db = self.db
        if self.write:
            db.begin_write()
        try:
            with EXCEPTIONS:
                db._state.conn.execute("BEGIN IMMEDIATE" if self.write else "BEGIN")  # type: ignore[attr-defined]
        except BaseException:
            if self.write:
                db.end_write()
            raise
        db.push_transaction(self)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        db = self.db
        db.pop_transaction()
        conn = db._state.conn  # type: ignore[attr-defined]
        try:
            with EXCEPTIONS:
                if exc_type is None:
                    try:
                        conn.execute("COMMIT")
                        return
                    except Exception:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        finally:
            if self.write:
                db.end_write()


# Waits the database may not make us sit through: a lock held by another
# session (a DBA's LOCK TABLE, ALTER TABLE, VACUUM FULL) fails the statement
# after LOCK_TIMEOUT (SQLSTATE 55P03: the database unavailable for now, intake
# pauses, a stop or a reload is not held up), a session left idle inside a
# transaction is ended, and TCP keepalives notice a server gone silent. And a
# commit is on disk when COMMIT returns, whatever the server's default: a
# server set to ``synchronous_commit = off`` (a common tuning) loses the last
# commits in a crash, and with them that the ERP took an order (it would be
# left pending, and a changed version of it posted beside it).
LOCK_TIMEOUT = "2s"
PG_OPTIONS = (
    f"-c lock_timeout={LOCK_TIMEOUT} -c idle_in_transaction_session_timeout=60s"
    " -c synchronous_commit=on"
)
LOCK_NOT_AVAILABLE = "55P03"
# How much longer than its statement_timeout a bounded connection waits for
# a word from the server before it gives up on it (``_wait_for_the_server``).
SILENCE_MARGIN_SECONDS = 1.0


def _with_our_options(url: str) -> str:
    """The URL's own ``options`` (a ``search_path``…) followed by ``PG_OPTIONS``:
    a keyword given to the connection replaces the URL's, so both go in it."""
    given = " ".join(parse_qs(urlsplit(url).query).get("options", []))
    return f"{given} {PG_OPTIONS}".strip()


def _storable(value: Any) -> Any:
    """``value``, a text's NULs (U+0000) replaced by U+FFFD (see ``pg_cursor``)."""
    if type(value) is str and "\0" in value:
        return value.replace("\0", "\ufffd")
    return value


def _storable_params(params: Any) -> Any:
    if params is None:
        return None
    if isinstance(params, dict):
        return {name: _storable(value) for name, value in params.items()}
    return [_storable(value) for value in params]


@functools.cache
def pg_cursor() -> type:
    """The cursor class of every PostgreSQL connection: peewee's queries and
    the recorder's statements bind their parameters through it alike
    (psycopg2 is imported here: it is the ``postgres`` extra, not needed
    for SQLite).

    A PostgreSQL text cannot hold NUL (psycopg2 refuses the whole statement:
    "A string literal cannot contain NUL"), SQLite's can, and partners' data
    has it (legacy exporters pad names with NUL bytes). Refusing such an order
    would lose one SQLite keeps; so each NUL of a text parameter becomes
    U+FFFD, the Unicode replacement character, here and nowhere else. A
    value compared in SQL is replaced as the stored one was (``po_number =
    ?``); search keys hold no NUL (``fields.fold``); every decision is the
    same as on SQLite (each is made on the order itself or on its payload,
    whose JSON writes NUL as ``\\u0000``), and the ERP gets the order as sent.
    Only a recorded name, PO number or message shows U+FFFD where SQLite
    keeps NUL."""
    try:
        import psycopg2.extensions
    except ImportError as exc:
        raise StoreError(
            "a postgresql:// database needs psycopg2: pip install 'edi-inbox[postgres]'"
        ) from exc

    class PgCursor(psycopg2.extensions.cursor):
        def execute(self, query: Any, vars: Any = None) -> Any:
            return super().execute(query, _storable_params(vars))

        def executemany(self, query: Any, vars_list: Any) -> Any:
            return super().executemany(query, [_storable_params(v) for v in vars_list])

    return PgCursor


def bounded_connection(store: PostgresStore, seconds: float) -> type:
    """A psycopg2 connection class for ``store`` whose every wait for the
    server ends after ``seconds`` without a word from it (``_wait_for_the_server``)."""
    import psycopg2.extensions

    class BoundedConnection(psycopg2.extensions.connection):
        silence_seconds = seconds

        def went_silent(self) -> None:
            store.silent_until = time.monotonic() + seconds

    return BoundedConnection


def _wait_for_the_server(conn: Any) -> None:
    """psycopg2's wait callback (``psycopg2.extras.wait_select``, with a bound).

    A server that is up but silent (hung, or behind a proxy or a network path
    that stopped forwarding) is seen by nothing else: TCP keepalives and
    ``tcp_user_timeout`` are answered by the kernel at the other end, and
    ``statement_timeout`` by a server that never got the statement, or whose
    answer never comes back, is no answer either. libpq itself waits for ever;
    with a wait callback psycopg2 hands every wait (connecting, each statement)
    to Python, which can stop waiting. A connection of ``bounded_connection``
    gives up after its ``silence_seconds`` without a byte: the callback raises
    OperationalError and psycopg2 closes the connection (its state unknown,
    it is never used again). Any other connection waits as libpq would."""
    import psycopg2
    import psycopg2.extensions as ext

    limit = getattr(conn, "silence_seconds", None)
    timeout = None if limit is None else limit * 1000
    while True:
        state = conn.poll()
        if state == ext.POLL_OK:
            return
        # poll(2), not select(2): a descriptor past 1023 (serve holds thousands
        # of connections) is "out of range" for select.
        waiting = select.poll()
        if state == ext.POLL_READ:
            waiting.register(conn.fileno(), select.POLLIN)
        elif state == ext.POLL_WRITE:
            waiting.register(conn.fileno(), select.POLLOUT)
        else:
            raise psycopg2.OperationalError(f"unexpected state from poll(): {state}")
        if not waiting.poll(timeout):
            conn.went_silent()
            raise psycopg2.OperationalError(f"no answer from the database server in {limit:g} s")


class PostgresStore(_Units, PooledPostgresqlDatabase):
    """PostgreSQL through peewee's pool; dead connections are dropped, not reused.

    ``answer_seconds`` (``serve``: a request must be answered, a 503 being an
    answer): each statement is cancelled by the server after that long
    (``statement_timeout``), and a server that says nothing for a second more
    is given up (``_wait_for_the_server``). Then, for as long again, a unit
    of work fails at once instead of trying the server (``silent_until``):
    peewee opens connections one at a time, under its locks, so requests
    arriving together would otherwise each wait their turn to be given up.
    The daemon's connections have no such bound: its transactions may be
    long, and it waits for the database."""

    silent_until = 0.0  # time.monotonic(): the server said nothing; not tried before

    def __init__(
        self,
        url: str,
        settings: DatabaseSettings,
        retry_seconds: float,
        answer_seconds: float | None = None,
    ) -> None:
        options = _with_our_options(url)
        bounded: dict[str, Any] = {}
        if answer_seconds is not None:
            import psycopg2.extensions

            options += f" -c statement_timeout={round(answer_seconds * 1000)}ms"
            silence = answer_seconds + SILENCE_MARGIN_SECONDS
            bounded["connection_factory"] = bounded_connection(self, silence)
            # Process-wide, but it bounds only bounded connections: opened by
            # serve, whose process holds no other.
            psycopg2.extensions.set_wait_callback(_wait_for_the_server)
        super().__init__(
            url,
            max_connections=max(settings.pool_size, 1),
            stale_timeout=300,
            timeout=30,
            connect_timeout=5,
            options=options,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
            cursor_factory=pg_cursor(),
            field_types=FIELD_TYPES["postgresql"],
            **bounded,
        )
        self.edi_content_max_bytes = settings.edi_content_max_bytes
        self.retry_seconds = retry_seconds

    def _transaction(self, write: bool) -> Any:
        return self.atomic()

    def _connect(self) -> Any:
        if time.monotonic() < self.silent_until:
            import psycopg2

            raise psycopg2.OperationalError("the database server has just given no answer")
        return super()._connect()

    def _check_connection(self) -> None:
        pass

    def _retryable(self, exc: BaseException) -> bool:
        # Connection loss surfaces as InterfaceError ("connection already closed")
        # or OperationalError ("server closed the connection unexpectedly",
        # "terminating connection due to administrator command", "could not
        # connect"); serialization failures and deadlocks are OperationalError too.
        # A lock timeout is not retried here: waiting again is what it ended.
        orig = getattr(exc, "orig", None) or exc
        if getattr(orig, "pgcode", None) == LOCK_NOT_AVAILABLE:
            return False
        return isinstance(exc, pw.InterfaceError | pw.OperationalError) and not is_permanent(exc)

    def _is_closed(self, conn: Any) -> bool:
        # peewee's pool sends SELECT 1 at every checkout to weed out dead
        # connections: a round trip per unit of work. A unit finds a dead one
        # anyway (its first statement fails and ``run`` retries it on a fresh
        # connection), so the pool checks only what the driver knows locally.
        adapter = self._adapter
        return bool(conn.closed) or adapter.txn_status(conn) != adapter.txn_idle

    def _discard_broken(self, exc: BaseException) -> None:
        if self.is_closed():
            return
        conn = self._state.conn
        status = self._adapter.txn_status(conn)
        dead = bool(conn.closed) or status == self._adapter.txn_unknown
        if dead or status != self._adapter.txn_idle:
            _force_close(self)
        if dead:  # after a server restart the pool's idle connections are dead too,
            self.close_idle()  # and each would cost the retry loop a turn


def _force_close(db: Any) -> None:
    try:
        while db.in_transaction():
            db.pop_transaction()
        if isinstance(db, PooledPostgresqlDatabase):
            db.manual_close()
        else:
            db.close()
    except Exception:  # the connection is beyond saving: forget it
        log.debug("closing a broken connection failed", exc_info=True)
        db._state.reset()


Database = SqliteStore | PostgresStore


def open_database(
    url: str | None = None,
    settings: Settings | None = None,
    *,
    retry_seconds: float | None = None,
    answer_seconds: float | None = None,
    checkpoints: bool = True,
    create: bool = True,
    shared: bool = False,
) -> Database:
    """Open ``sqlite:///PATH`` or ``postgresql://…`` (default: ``settings.database_url``)
    and bind the models to it. One database per process at a time: opening
    another rebinds the models. The schema is not touched: call ``init``.
    ``retry_seconds``: PostgreSQL's reconnecting (default ``[database]
    reconnect_seconds``). ``answer_seconds``: PostgreSQL's statements
    bounded for ``serve`` (``PostgresStore``; SQLite's waits are bounded by
    ``busy_timeout``).
    ``checkpoints=False``: SQLite connections that leave checkpoints to a
    ``Checkpointer`` (the daemon). ``create=False``: a SQLite file that does
    not exist is ``DatabaseUnavailable`` at the first unit of work, not
    created (``status``, the daemon's worker processes); with ``create=True``
    only the first connection may create it. ``shared=True``: SQLite's threads
    share one connection, a unit of work at a time (``SqliteStore``)."""
    settings = settings or Settings()
    url = url or settings.database_url
    scheme = urlsplit(url).scheme
    db: Database
    if scheme == "sqlite":
        path = sqlite_path(url)
        if not path:
            raise StoreError(f"database url {safe_url(url)!r} names no file: use sqlite:////PATH")
        db = SqliteStore(
            path, settings.database, checkpoints=checkpoints, create=create, shared=shared
        )
    elif scheme in ("postgresql", "postgres"):
        if retry_seconds is None:
            retry_seconds = settings.database.reconnect_seconds
        db = PostgresStore(
            "postgresql" + url[len(scheme) :], settings.database, retry_seconds, answer_seconds
        )
    else:
        raise StoreError(f"database url {safe_url(url)!r}: use sqlite:////PATH or postgresql://…")
    db.bind(MODELS, bind_refs=False, bind_backrefs=False)
    return db


def close_database(db: Database) -> None:
    """Done with ``db``: close PostgreSQL's pooled connections, or SQLite's
    connection (this thread's) and its writers' lock file."""
    if isinstance(db, PostgresStore):
        db.close_all()
        return
    if not db.is_closed():
        db.close()
    db.close_turns()


class Checkpointer:
    """Checkpoints a SQLite database's WAL on a thread of its own, so that no
    writer waits for one.

    SQLite checkpoints in the commit that crosses ``wal_autocheckpoint``, and
    that commit holds the write turn: every other worker waited for the page
    copies and two fsyncs (~30-70 ms every ~280 files here). The daemon's
    connections are opened with ``checkpoints=False`` instead, and every
    ``interval`` seconds this thread checkpoints beside the writers, copying
    what they wrote while they go on appending. Once the WAL holds ``pages``
    frames it checkpoints again within the write turn, copying the few frames
    appended meanwhile, so that the WAL is wholly in the database and the next
    write starts it over (a WAL that writers always keep ahead of would grow
    without end). Errors are logged and tried again at the next turn.
    """

    def __init__(
        self, db: SqliteStore, *, pages: int = CHECKPOINT_PAGES, interval: float = 1.0
    ) -> None:
        self.db = db
        self.pages = pages
        self.interval = interval
        self.restarts = 0  # checkpoints within the write turn: the WAL starts over
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def checkpoint(self) -> int:
        """One turn, now, on the calling thread; returns the frames the WAL held."""
        db = self.db
        frames = run_unit(db, self._pass, write=False, atomic=False)
        if frames >= self.pages:
            db.begin_write()  # not a transaction: SQLite checkpoints outside one
            try:
                run_unit(db, self._pass, write=False, atomic=False)
            finally:
                db.end_write()
            self.restarts += 1
        return frames

    def _pass(self) -> int:
        """``PRAGMA wal_checkpoint(PASSIVE)``: the frames the WAL holds."""
        return int(self.db.execute_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="edi-checkpoint", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        told = ""
        try:
            while not self._stop.wait(self.interval):
                try:
                    self.checkpoint()
                    told = ""
                except Exception as exc:  # the next turn tries again (told once)
                    if str(exc) != told:
                        log.warning("checkpoint failed: %s", exc)
                    told = str(exc)
        finally:
            with contextlib.suppress(Exception):
                if not self.db.is_closed():
                    self.db.close()  # this thread's connection


# SQLSTATE classes no retry can fix: data exception (a value out of range or
# too long), integrity constraint violation, program limit exceeded (an index
# row too large).
PERMANENT_SQLSTATE_CLASSES = ("22", "23", "54")
# SQLite's primary result codes that the same write may get past later: busy,
# locked, out of memory, read-only, I/O error, corrupt, disk full, cannot open,
# protocol, not a database (a file replaced underneath).
TRANSIENT_SQLITE_CODES = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 26})
SQLITE_READONLY = 8


def is_permanent(exc: BaseException) -> bool:
    """Whether writing the same records again can never succeed: the job must
    fail with this reason rather than wait for the database. Connection loss,
    a missing or replaced file, a full disk and a lock are not permanent."""
    if isinstance(exc, DatabaseUnavailable | OSError):
        return False
    orig = getattr(exc, "orig", None) or exc
    pgcode = getattr(orig, "pgcode", None)
    if pgcode:
        return str(pgcode)[:2] in PERMANENT_SQLSTATE_CLASSES
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return (int(code) & 0xFF) not in TRANSIENT_SQLITE_CODES
    if isinstance(exc, pw.IntegrityError | pw.DataError):
        return True
    if isinstance(exc, pw.PeeweeException | sqlite3.Error | StoreError):
        return False  # the database's own trouble: it may pass
    try:
        import psycopg2
    except ImportError:  # no PostgreSQL here: not a driver's error
        return True
    # A driver error without a SQLSTATE is the connection's; anything else is a bug.
    return not isinstance(orig, psycopg2.Error)


def run_unit(db: Database, fn: Callable[[], T], *, write: bool = True, atomic: bool = True) -> T:
    """``fn()`` as one unit of work (see ``_Units.run``)."""
    return db.run(fn, write=write, atomic=atomic)
