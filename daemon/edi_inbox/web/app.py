"""The application: the seed's JSON endpoints, ``/healthz``, errors as JSON.

Every ``/api`` answer is built by the function the CLI's ``--json`` calls
(``queries.stats``, ``queries.list_jobs``, ``queries.show_job``,
``queries.search_jobs``, ``admin.status``, ``admin.partners``,
``JobResult.to_json``) and encoded by the same ``terminal.json_text``: one
serializer for both. ``partner`` narrows the job endpoints to one
``[partners.NAME]`` as ``--partner NAME`` does (exactly; empty means every job).

``POST /api/orchestrate`` and retry change things, so they need the bearer
token from ``[http] token_file``; without one configured they are off (403).
Errors are ``{"error": "…", "status": N}`` (422 adds ``details``).
"""

from __future__ import annotations

import hmac
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
import peewee as pw
import structlog
from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BeforeValidator
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__, admin, config, memory, queries, store
from ..errors import ConfigError, DatabaseUnavailable, EdiInboxError, NotRecorded, StoreError
from ..jobs import JobResult, JobStatus
from ..terminal import json_text

logger = structlog.get_logger("edi_inbox.web")


class CliJSONResponse(JSONResponse):
    """JSON as ``--json`` prints it (``terminal.json_text``, ``default=str``), compact."""

    def render(self, content: Any) -> bytes:
        return json_text(content, default=str, separators=(",", ":")).encode("utf-8")


class ApiError(Exception):
    """An answer other than 200: its status code, message and headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


REQUEST_RETRY_SECONDS = 2.0  # PostgreSQL: how long a request retries a lost connection
# PostgreSQL: a request's statement is cancelled after this long, and a server
# silent for a second more is given up (``store.PostgresStore``): a 503.
REQUEST_ANSWER_SECONDS = 4.0
# Paths that answer JSON or text; every other is a dashboard page (HTML).
NOT_PAGES = ("/api/", "/metrics", "/healthz", "/docs", "/openapi.json")


def error_response(status: int, message: str, **extra: Any) -> CliJSONResponse:
    return CliJSONResponse({"error": message, "status": status, **extra}, status_code=status)


def read_token(path: Path | None) -> str | None:
    """The bearer token in ``path`` (its first line), None when not configured."""
    if path is None:
        return None
    config.check_token_file(path, "[http] token_file")
    try:
        token = path.read_text(encoding="utf-8").strip().splitlines()
    except OSError as exc:
        raise ConfigError(f"[http] token_file {path}: cannot be read: {exc.strerror}") from None
    if not token or not token[0].strip():
        raise ConfigError(f"[http] token_file {path} is empty")
    return token[0].strip()


@dataclass
class Web:
    """What the endpoints share: the settings, the database, the token, and
    (made on first use) the pipeline that ``orchestrate`` runs."""

    settings: config.Settings
    db: Any
    token: str | None
    host: str = field(default_factory=socket.gethostname)
    slow_figures: Any = None  # metrics.SlowFigures while the app runs
    _pipeline: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _bytes_in: int = 0  # of the orchestrated bodies being read or run
    _bytes_lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def body_in_flight(self) -> Iterator[Callable[[int], None]]:
        """``take(n)`` counts ``n`` more bytes of one body until the block
        ends: 503 (Retry-After) when they would pass ``[daemon]
        max_bytes_in_flight`` while another body is in flight (a job holds
        ~25-35x its file in memory: the daemon's budget, ``Service._fits``)."""
        taken = 0

        def take(size: int) -> None:
            nonlocal taken
            with self._bytes_lock:
                budget = self.settings.daemon.max_bytes_in_flight
                if self._bytes_in > taken and self._bytes_in + size > budget:
                    raise ApiError(
                        503,
                        "other orchestrated files are in flight: their sizes and this one's"
                        f" would pass [daemon] max_bytes_in_flight ({budget} bytes); try again",
                        {"Retry-After": "5"},
                    )
                self._bytes_in += size
                taken += size

        try:
            yield take
        finally:
            with self._bytes_lock:
                self._bytes_in -= taken

    def pipeline(self) -> Any:
        from ..pipeline import Pipeline

        with self._lock:
            if self._pipeline is None:
                self._pipeline = Pipeline(self.settings, store.DatabaseRecorder(self.db))
            return self._pipeline

    def orchestrate(self, data: bytes, file_name: str) -> JobResult:
        """The pipeline on ``data``, as ``edi-inbox process`` runs it on a
        file; 503 if the job cannot be recorded (the database is unavailable)."""
        try:
            result: JobResult = self.pipeline().run(Path("api") / file_name, data=data)
        except NotRecorded as exc:
            raise ApiError(503, exc.explain()) from None
        finally:
            memory.give_back(len(data))
        return result

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()
        store.close_database(self.db)


def web_of(request: Request) -> Web:
    web: Web = request.app.state.web
    return web


def require_token(request: Request) -> None:
    """A dependency: the bearer token from ``[http] token_file`` must be given."""
    web = web_of(request)
    if web.token is None:
        raise ApiError(403, "this is off: no [http] token_file is configured")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(
            401, "an Authorization: Bearer token is required", {"WWW-Authenticate": "Bearer"}
        )
    if not token_matches(web, given):
        raise ApiError(401, "the bearer token is wrong", {"WWW-Authenticate": "Bearer"})


def token_matches(web: Web, given: str) -> bool:
    """Compared in constant time; False when no token is configured."""
    if web.token is None:
        return False
    return hmac.compare_digest(given.strip().encode(), web.token.encode())


def when(value: str | None, name: str) -> datetime | None:
    """``since``/``until``: an ISO date or date-time; naive means UTC (as the CLI's)."""
    if value is None or not value.strip():
        return None
    try:
        return queries.moment(value)
    except ValueError as exc:
        raise ApiError(422, f"{name}: {exc}") from None


PartnerQuery = Annotated[
    str | None,
    Query(max_length=64, description="Only this partner's jobs ([partners.NAME]), as --partner"),
]


def blank_as(default: Any) -> BeforeValidator:
    """An empty parameter (``?success=``) as one not given: ``default``. DESIGN
    writes the search URL with every parameter, ``po_number=&vendor_name=&success=&limit=``."""
    return BeforeValidator(lambda v: default if isinstance(v, str) and not v.strip() else v)


SEARCH_LIMIT = 50


def partner_of(value: str | None) -> str | None:
    """``partner``: a name as ``--partner`` takes it; empty or absent is every job."""
    return value if value else None


def safe_file_name(name: str | None) -> str:
    """A name for an uploaded file: its last path part, else a fresh one."""
    name = Path(name).name if name else ""
    if name in ("", ".", "..") or "\x00" in name:
        return f"api-{uuid.uuid4().hex[:12]}.edi"
    return name[:200]


def create_app(settings: config.Settings, db: Any = None, threads: int | None = None) -> FastAPI:
    """The application over ``settings`` (the database opened and its schema
    created or migrated, as the CLI does, unless ``db`` is given); ``threads``:
    the most requests answered at once in the thread pool (anyio's 40 unless
    given: ``serving.budget``)."""
    token = read_token(settings.http.token_file)
    if db is None:
        # A lost connection is retried for 2 s, not the default 10, and a
        # statement waited for 4 s (5 s for a silent server): a request
        # answers, 503 at worst, within a health check's or a scrape's timeout.
        db = store.open_database(
            settings.database_url,
            settings,
            retry_seconds=REQUEST_RETRY_SECONDS,
            answer_seconds=REQUEST_ANSWER_SECONDS,
        )
        store.init(db)
    web = Web(settings, db, token)
    from . import dashboard, metrics  # they import this module

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if threads is not None:
            anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        web.slow_figures = metrics.SlowFigures(db, partners=bool(settings.partners.partners))
        web.slow_figures.start()
        try:
            yield
        finally:
            web.slow_figures.stop()
            web.close()

    app = FastAPI(
        title="edi-inbox",
        version=__version__,
        description="Inbound X12 850 purchase orders: jobs, status, metrics and a dashboard.",
        lifespan=lifespan,
        default_response_class=CliJSONResponse,
    )
    app.state.web = web
    app.add_middleware(HeadAsGet)
    _errors(app)
    _routes(app)
    app.include_router(metrics.router)
    app.include_router(dashboard.router)
    return app


class HeadAsGet:
    """HEAD answered as GET without its body, with GET's status and headers
    (RFC 9110 9.3.2: wherever GET is answered, so is HEAD; monitors probe with it).

    One ASGI layer for every route, not ``methods=["GET", "HEAD"]`` route by
    route: FastAPI's routes, unlike Starlette's, never add HEAD beside GET, and
    a route added later would be missed again. The routes see a GET; the body
    is dropped here (uvicorn drops it too, going by the request's own method),
    Content-Length stays GET's. A route without GET (retry, orchestrate)
    answers HEAD as it answers GET: 405."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: Any) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> CliJSONResponse:
        response = error_response(exc.status, exc.message)
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> CliJSONResponse:
        response = error_response(exc.status_code, str(exc.detail))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> CliJSONResponse:
        details = [
            {"where": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        first = details[0] if details else {"where": "", "message": "invalid"}
        return error_response(422, f"{first['where']}: {first['message']}", details=details)

    @app.exception_handler(pw.DatabaseError)
    @app.exception_handler(DatabaseUnavailable)
    async def database_down(request: Request, exc: Exception) -> Response:
        """503 while the database cannot be read (server down, SQLite file
        removed or replaced): JSON, or the dashboard's error page for a page."""
        path = request.url.path
        logger.error("database_error", path=path, error=repr(exc))
        message = "the database is not available"
        if not path.startswith(NOT_PAGES):
            from .dashboard import page

            return page("error.html", 503, message=message, title="Database unavailable")
        return error_response(503, message)


def _routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"])
    def healthz(request: Request) -> Any:
        """For load balancers: 200 when the database answers, else 503."""
        web = web_of(request)
        try:
            store.run_unit(web.db, lambda: web.db.execute_sql("SELECT 1").fetchone(), write=False)
        except Exception as exc:
            return error_response(503, f"the database is not available: {type(exc).__name__}")
        return {"status": "ok", "version": __version__}

    @app.get("/api/status", tags=["status"])
    def status(request: Request) -> Any:
        """Every daemon's heartbeat, the backlog and the last 24 hours: ``status --json``."""
        web = web_of(request)
        return admin.status(web.settings, web.db)

    @app.get("/api/partners", tags=["partners"])
    def partners(request: Request) -> Any:
        """Each configured partner's ids, acknowledgements, rule levels and
        outbox, its files and failures in the last 24 hours and its last
        activity, and the ``[partners] unknown`` policy: ``partners --json``."""
        web = web_of(request)
        return admin.partners(web.settings, web.db)

    @app.get("/api/jobs/stats", tags=["jobs"])
    def stats(
        request: Request,
        since: Annotated[str | None, Query(description="YYYY-MM-DD[THH:MM], UTC")] = None,
        partner: PartnerQuery = None,
    ) -> Any:
        """Totals: ``stats --json`` (``--partner``)."""
        return queries.stats(
            web_of(request).db, since=when(since, "since"), partner=partner_of(partner)
        )

    @app.get("/api/jobs/recent", tags=["jobs"])
    def recent(
        request: Request,
        limit: Annotated[int, blank_as(10), Query(ge=1, le=10_000)] = 10,
        offset: Annotated[int, blank_as(0), Query(ge=0, le=queries.OFFSET_MAX)] = 0,
        status: Annotated[JobStatus | None, blank_as(None)] = None,
        partner: PartnerQuery = None,
        before: Annotated[str | None, blank_as(None), Query(max_length=200)] = None,
    ) -> Any:
        """The most recent jobs first: ``jobs list --json`` (``--partner``,
        ``--before``: the jobs listed after that one; 422 for a job id that
        names none, or several). An empty parameter is one not given."""
        try:
            return queries.list_jobs(
                web_of(request).db,
                limit=limit,
                offset=offset,
                status=None if status is None else str(status),
                partner=partner_of(partner),
                before=before,
            )
        except DatabaseUnavailable:
            raise
        except StoreError as exc:
            raise ApiError(422, str(exc)) from None

    @app.get("/api/jobs/search", tags=["jobs"])
    def search(
        request: Request,
        po_number: Annotated[str | None, Query(max_length=200)] = None,
        vendor_name: Annotated[str | None, Query(max_length=200)] = None,
        sender: Annotated[str | None, Query(max_length=200)] = None,
        partner: PartnerQuery = None,
        success: Annotated[bool | None, blank_as(None)] = None,
        since: str | None = None,
        until: str | None = None,
        limit: Annotated[int, blank_as(SEARCH_LIMIT), Query(ge=1, le=10_000)] = SEARCH_LIMIT,
    ) -> Any:
        """Jobs by PO number, vendor, sender, partner, outcome and time: ``jobs search --json``.
        An empty parameter is one not given (any, or the default ``limit``)."""
        return queries.search_jobs(
            web_of(request).db,
            po_number=po_number,
            vendor=vendor_name,
            sender=sender,
            partner=partner_of(partner),
            success=success,
            since=when(since, "since"),
            until=when(until, "until"),
            limit=limit,
        )

    @app.get("/api/jobs/{job_id}", tags=["jobs"])
    def show(request: Request, job_id: str) -> Any:
        """One job with its steps, log lines and orders: ``jobs show --json``."""
        try:
            doc = queries.show_job(web_of(request).db, job_id)
        except DatabaseUnavailable:
            raise
        except StoreError as exc:
            raise ApiError(409, str(exc)) from None
        if doc is None:
            raise ApiError(404, f"no job {job_id}")
        return doc

    @app.post("/api/jobs/{job_id}/retry", tags=["jobs"], dependencies=[Depends(require_token)])
    def retry(request: Request, job_id: str) -> Any:
        """Put the job's failed file back into the inbox: ``retry JOB_ID --json``."""
        return retry_job(web_of(request), job_id)

    @app.post(
        "/api/orchestrate",
        tags=["jobs"],
        dependencies=[Depends(require_token)],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/edi-x12": {"schema": {"type": "string"}}},
            }
        },
    )
    async def orchestrate(
        request: Request,
        file_name: Annotated[str | None, Query(max_length=255)] = None,
    ) -> Any:
        """Run the pipeline on the request body (an X12 file, at most
        ``[daemon] max_file_bytes``), as ``edi-inbox process`` does, record the
        job and return it: ``process --json``."""
        web = web_of(request)
        cap = web.settings.daemon.max_file_bytes
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > cap:
            raise ApiError(413, f"the body is larger than max_file_bytes ({cap} bytes)")
        chunks, size = [], 0
        with web.body_in_flight() as take:
            async for chunk in request.stream():
                size += len(chunk)
                if size > cap:
                    raise ApiError(413, f"the body is larger than max_file_bytes ({cap} bytes)")
                take(len(chunk))
                chunks.append(chunk)
            if not size:
                raise ApiError(422, "the body is empty: send the X12 file as the request body")
            name = safe_file_name(file_name)
            result = await run_in_threadpool(web.orchestrate, b"".join(chunks), name)
        logger.info("orchestrated", job_id=result.job_id, status=str(result.status))
        return result.to_json()


def retry_job(web: Web, job_id: str) -> list[dict[str, Any]]:
    """``admin.retry`` for one job; 404 when it has no file in failed/, 409 when
    the file is there but cannot go back."""
    try:
        return admin.retry(web.settings, job_id, db=web.db)
    except EdiInboxError as exc:
        message = str(exc)
        raise ApiError(404 if message.startswith("no failed file") else 409, message) from None
