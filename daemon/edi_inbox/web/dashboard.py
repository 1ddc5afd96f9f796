"""The dashboard at ``/``: HTML rendered on the server, no script, no CDN.

The pages read what the API reads (``admin.status``, ``admin.partners``,
``queries``), so a page and its JSON never disagree; the jobs page's partner
filter is the API's ``partner`` (``--partner``). Partner data (PO numbers, vendor names, file
names, errors, the EDI itself) reaches the page only through Jinja2 with
autoescape on; the Content-Security-Policy allows no script at all, a second
wall should an escape ever be missed. The retry button is a form POST that
carries the ``[http] token_file`` token, typed by the operator.
"""

from __future__ import annotations

import contextlib
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from .. import admin, files, outcomes, queries
from ..errors import DatabaseUnavailable, StoreError
from ..jobs import JobStatus
from ..store import hour_of, run_unit
from ..store.models import JobRollup
from ..terminal import shown
from .app import ApiError, Web, retry_job, token_matches, web_of, when

router = APIRouter(include_in_schema=False)
TEMPLATES = Path(__file__).parent / "templates"
PAGE = 25
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SEARCH_KEYS = ("po_number", "vendor_name", "sender", "outcome", "since", "until")

env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,  # every page is HTML: partner text is always escaped
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters["shown"] = shown
env.filters["shown_lines"] = lambda text: "\n".join(shown(line) for line in str(text).split("\n"))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = max(0.0, float(seconds))
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


env.filters["age"] = _age
env.filters["when"] = lambda value: (value or "")[:19].replace("T", " ")


def page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = env.get_template(name).render(**context)
    response = HTMLResponse(html, status_code=status_code)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@router.get("/dashboard.css")
def stylesheet() -> Response:
    css = (TEMPLATES / "dashboard.css").read_text(encoding="utf-8")
    return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=300"})


# -- overview ------------------------------------------------------------------------


# The chart's bars: jobs that ended with orders posted, some refused, none.
CHART_KINDS = (JobStatus.SUCCEEDED.value, JobStatus.PARTIAL.value, JobStatus.FAILED.value)


def hourly(web: Web, now: datetime) -> list[dict[str, Any]]:
    """Succeeded, partial and failed jobs per hour of the last 24 (the hourly rollups)."""
    first = hour_of(now) - timedelta(hours=23)

    def work() -> list[tuple[Any, str, int]]:
        query = JobRollup.select(JobRollup.start, JobRollup.status, JobRollup.jobs).where(
            (JobRollup.period == "hour")
            & (JobRollup.start >= first)
            & JobRollup.status.in_(CHART_KINDS)
        )
        return [(r.start, r.status, r.jobs) for r in query]

    counts: dict[tuple[datetime, str], int] = {}
    for start, status, n in run_unit(web.db, work, write=False):
        key = (start.astimezone(UTC), status)
        counts[key] = counts.get(key, 0) + int(n)
    return [
        {"hour": hour, **{kind: counts.get((hour, kind), 0) for kind in CHART_KINDS}}
        for hour in (first + timedelta(hours=i) for i in range(24))
    ]


def chart(hours: list[dict[str, Any]]) -> dict[str, Any]:
    """Bar geometry for the inline SVG: a bar per kind and hour, a round top value."""
    width, height, left, bottom, top = 760, 180, 36, 22, 8
    peak = max([1] + [h[kind] for h in hours for kind in CHART_KINDS])
    scale_top = _nice(peak)
    plot = height - bottom - top
    slot = (width - left - 4) / len(hours)
    bar = max(2.0, slot / len(CHART_KINDS) - 2)
    bars = []
    for i, h in enumerate(hours):
        x = left + i * slot + 1
        for j, kind in enumerate(CHART_KINDS):
            n = h[kind]
            bar_h = plot * n / scale_top
            bars.append(
                {
                    "x": round(x + j * (bar + 1), 1),
                    "y": round(top + plot - bar_h, 1),
                    "w": round(bar, 1),
                    "h": round(bar_h, 1),
                    "kind": kind,
                    "title": f"{h['hour']:%Y-%m-%d %H}:00 UTC: {n} {kind}",
                }
            )
    labels = [
        {"x": round(left + i * slot + slot / 2, 1), "text": f"{h['hour']:%H}"}
        for i, h in enumerate(hours)
        if i % 3 == 0
    ]
    return {
        "width": width,
        "height": height,
        "left": left,
        "top": top,
        "base": top + plot,
        "top_value": scale_top,
        "bars": bars,
        "labels": labels,
        "label_y": height - 6,
        "totals": {kind: sum(h[kind] for h in hours) for kind in CHART_KINDS},
    }


def _nice(value: int) -> int:
    """The least 1, 2 or 5 × 10ⁿ at or above ``value``."""
    power = 10 ** int(math.log10(value)) if value > 0 else 1
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


@router.get("/", response_class=HTMLResponse)
def overview(request: Request) -> HTMLResponse:
    web = web_of(request)
    doc = admin.status(web.settings, web.db)
    now = datetime.now(UTC)
    return page(
        "overview.html",
        status=doc,
        chart=chart(hourly(web, now)),
        recent=queries.list_jobs(web.db, limit=10),
        failed=queries.list_jobs(web.db, limit=5, status="failed"),
        title="Overview",
    )


# -- jobs ----------------------------------------------------------------------------


@router.get("/jobs", response_class=HTMLResponse)
def jobs(
    request: Request,
    po_number: str = "",
    vendor_name: str = "",
    sender: str = "",
    outcome: str = "",
    status: str = "",
    partner: str = "",
    since: str = "",
    until: str = "",
) -> HTMLResponse:
    web = web_of(request)
    form = {
        "po_number": po_number,
        "vendor_name": vendor_name,
        "sender": sender,
        "outcome": outcome,
        "status": status,
        "partner": partner,
        "since": since,
        "until": until,
    }
    number = _page_number(request)
    offset = (number - 1) * PAGE
    # The list pages by the last job shown (older →): jobs recorded meanwhile
    # do not shift it, as they shift an offset; searches page by offset.
    before = request.query_params.get("before") or None
    searching = any(form[k].strip() for k in SEARCH_KEYS)
    error = None
    found: list[dict[str, Any]] = []
    try:
        if status and status not in {str(s) for s in JobStatus}:
            raise ApiError(422, f"unknown status {status!r}")
        if searching:
            success = {"success": True, "failure": False}.get(outcome)
            found = queries.search_jobs(
                web.db,
                po_number=po_number or None,
                vendor=vendor_name or None,
                sender=sender or None,
                partner=partner or None,
                success=success,
                since=when(since, "since"),
                until=when(until, "until"),
                status=status or None,
                limit=PAGE + 1,
                offset=offset,
            )
        else:
            found = queries.list_jobs(
                web.db,
                limit=PAGE + 1,
                offset=0 if before else offset,
                status=status or None,
                partner=partner or None,
                before=before,
            )
    except DatabaseUnavailable:
        raise  # a 503 page (app.database_down)
    except (ApiError, StoreError) as exc:
        error = exc.message if isinstance(exc, ApiError) else str(exc)
    more = len(found) > PAGE
    query = {k: v for k, v in form.items() if v}
    older = {**query, "before": found[PAGE - 1]["job_id"]} if more and not searching else query
    return page(
        "jobs.html",
        status_code=422 if error else 200,
        jobs=found[:PAGE],
        form=form,
        statuses=[str(s) for s in JobStatus],
        partners=_partner_names(web, partner),
        error=error,
        page=number,
        previous=_link(query, 1 if before else number - 1) if number > 1 else None,
        next=_link(older, number + 1) if more else None,
        title="Jobs",
    )


def _partner_names(web: Web, chosen: str) -> list[str]:
    """The partner filter's choices: the configured partners, and the chosen
    name if it is none of them (a partner since removed still has its jobs)."""
    names = [p.name for p in web.settings.partners.partners]
    return [*names, chosen] if chosen and chosen not in names else names


def _page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    return int(raw) if raw.isdigit() and 0 < int(raw) < 100_000 else 1


def _link(query: dict[str, str], number: int) -> str:
    return "/jobs?" + urlencode({**query, "page": number})


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job(request: Request, job_id: str) -> HTMLResponse:
    web = web_of(request)
    try:
        doc = queries.show_job(web.db, job_id)
    except DatabaseUnavailable:
        raise
    except StoreError as exc:
        return page("error.html", 409, message=str(exc), title="Job")
    if doc is None:
        return page("error.html", 404, message=f"no job {job_id}", title="Job")
    result = queries.load_job(web.db, doc["job_id"], with_content=True)
    assert result is not None
    failing = {
        d.get("segment_number")
        for d in doc.get("error_details") or []
        if isinstance(d, dict) and isinstance(d.get("segment_number"), int)
    }
    report = _error_report(web, result, doc)
    return page(
        "job.html",
        job=doc,
        orders=[
            _order(o, summary) for o, summary in zip(result.orders, doc["orders"], strict=False)
        ],
        acks=[_ack(web, doc.get("partner"), name) for name in doc.get("acks") or []],
        report=json.dumps(report, indent=2, ensure_ascii=False, default=str) if report else None,
        segments=_segments(result.edi_content, failing),
        edi_kept=result.edi_content is not None,
        in_failed=_failed_report(web, doc["job_id"], result.file_path) is not None,
        title=f"Job {doc['job_id'][:8]}",
    )


def _order(order: Any, summary: dict[str, Any]) -> dict[str, Any]:
    """An order as ``jobs show`` has it, with its lines and parties from the payload."""
    payload = order.payload if isinstance(order.payload, dict) else {}
    return {
        **summary,
        "attempts": order.attempts,
        "currency": payload.get("currency") or "",
        "date": payload.get("date") or "",
        "lines": payload.get("lines") or [],
        "parties": payload.get("parties") or [],
    }


def _ack(web: Web, partner: str | None, name: str) -> dict[str, Any]:
    """A 997 the job wrote, one segment per line, if it is still where the
    job's acknowledgements went: its partner's outbox, or acks/ (before the
    partner had an outbox, or for no partner). ``folders``: where it was
    looked for."""
    settings = web.settings.partners.get(partner or "")
    folders = [settings.outbox] if settings and settings.outbox else []
    folders += [web.settings.paths.acks] if web.settings.paths.acks else []
    data = None
    for folder in folders:
        with contextlib.suppress(OSError):
            data = (folder / Path(name).name).read_bytes()
            break
    return {
        "name": name,
        "folders": " or ".join(str(f) for f in folders),
        "segments": _segments(data, set()) if data else [],
    }


def _failed_report(web: Web, job_id: str, file_path: str | None) -> dict[str, Any] | None:
    """The error.json beside the job's file in failed/, if the file waits there."""
    found = outcomes.filed_report(web.settings.paths.failed, job_id, file_path)
    return found[1] if found is not None else None


def _error_report(web: Web, result: Any, doc: dict[str, Any]) -> dict[str, Any] | None:
    """What the partner was told: failed/'s error.json, else the same report built anew."""
    if doc["status"] not in queries.FILED_FAILED:
        return None
    filed = _failed_report(web, doc["job_id"], result.file_path)
    shown = doc["file_name"]
    return filed or outcomes.error_report(result, files.real_name(shown) or shown)


def _segments(content: bytes | None, failing: set[Any]) -> list[dict[str, Any]]:
    """The EDI one segment per line, numbered from ISA = 1 (as the errors count)."""
    if not content:
        return []
    text = content.decode("latin-1")
    terminator = text[105] if text.startswith("ISA") and len(text) > 105 else "\n"
    if terminator in "\r\n":
        terminator = "\n"
    out: list[dict[str, Any]] = []
    for part in text.split(terminator):
        part = part.strip("\r\n")
        if not part:
            continue
        number = len(out) + 1
        out.append(
            {"number": number, "text": part + terminator.strip(), "failing": number in failing}
        )
    return out


# -- partners ------------------------------------------------------------------------


@router.get("/partners", response_class=HTMLResponse)
def partners(request: Request) -> HTMLResponse:
    """Each configured partner (``partners --json``) with its last error (``status``)."""
    web = web_of(request)
    now = datetime.now(UTC)
    doc = admin.partners(web.settings, web.db, now=now)
    errors = {
        p["name"]: p["last_error"] for p in admin.partner_status(web.settings, web.db, now=now)
    }
    listed = [{**p, "last_error": errors.get(p["name"])} for p in doc["partners"]]
    return page(
        "partners.html",
        partners=listed,
        unknown=doc["unknown"],
        folders={k: str(v) for k, v in web.settings.paths.folders().items()},
        title="Partners",
    )


# -- failed files and retry ----------------------------------------------------------


@router.get("/failed", response_class=HTMLResponse)
def failed(request: Request) -> HTMLResponse:
    return _failed_page(web_of(request))


def _failed_page(web: Web, status: int = 200, retried: str = "", problem: str = "") -> HTMLResponse:
    """The failed files; after the retry button, what it did (``retried``,
    ``problem``): said only by the answer to that POST, never by a link
    anyone could send the operator."""
    jobs = queries.failed_jobs(web.db, limit=500)
    for item in jobs:
        item["in_failed"] = _failed_report(web, item["job_id"], item["file_path"]) is not None
    return page(
        "failed.html",
        status,
        jobs=jobs,
        retried=retried,
        problem=problem,
        retry_on=web.token is not None,
        title="Failed files",
    )


@router.post("/jobs/{job_id}/retry", response_model=None)
def retry_form(request: Request, job_id: str, token: Annotated[str, Form()] = "") -> HTMLResponse:
    """The retry button: the form carries the token; the failed files again,
    saying what it did."""
    web = web_of(request)
    if web.token is None:
        return page(
            "error.html", 403, message="retry is off: no [http] token_file is configured",
            title="Retry",
        )  # fmt: skip
    if not token_matches(web, token):
        return page("error.html", 401, message="the token is wrong", title="Retry")
    try:
        results = retry_job(web, job_id)
    except ApiError as exc:
        return _failed_page(web, exc.status, problem=exc.message)
    names = ", ".join(r.get("inbox_name", "") for r in results if r.get("retried"))
    return _failed_page(web, retried=names)
