"""The dashboard at /: the pages over HTTP (escaped partner data, no script, a
strict CSP) and a real headless Chromium (Debian's chromium and
chromium-driver, driven by selenium) through the overview, a PO search, its
job page, a retry, a hostile PO number and file name that must not run, the
partner filter and the partners page."""

from __future__ import annotations

import html
import os
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import make_job, record

from edi_inbox import store
from edi_inbox.config import Settings

from web_site import HOSTILE_NAME, HOSTILE_PO, TOKEN, site

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
# Set to write the overview's screenshot to docs/dashboard.png (README shows it).
DOCS_SCREENSHOT_ENV = "EDI_INBOX_DOCS_SCREENSHOT"


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    root = tmp_path_factory.mktemp("dashboard")
    with site("sqlite", root) as running:
        running.beat("edi-a", {"queue": 2, "held": 1, "in_flight": 1, "acks_owed": 3})
        yield running


def pages(web):
    yield "/"
    yield "/jobs"
    yield "/jobs?po_number=pwned"
    yield "/failed"
    yield "/partners"
    yield "/jobs?partner=acme"
    yield "/jobs?partner=bolt&po_number=pwned"
    for job_id in web.jobs.values():
        yield f"/jobs/{job_id}"


def test_pages_escape_partner_data_and_carry_no_script(web):
    """Every page: 200, HTML with a CSP that allows no script, no <script> tag,
    and the hostile PO number as escaped text wherever it is shown."""
    for path in pages(web):
        answer = web.get(path)
        assert answer.status == 200, (path, answer.body[:500])
        assert answer.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in answer.headers["content-security-policy"]
        assert "<script" not in answer.text.lower(), path
        assert "<svg onload" not in answer.text.lower(), path
        assert "<img src=x" not in answer.text.lower(), path
    for path in ("/", "/jobs?po_number=pwned", f"/jobs/{web.jobs['hostile']}"):
        assert "&lt;svg onload=pwned=1&gt;" in web.get(path).text, path
    escaped_name = "&lt;img src=x onerror=pwned=2&gt;.edi"
    for path in ("/", "/jobs?partner=acme", "/partners", f"/jobs/{web.jobs['acme_failed']}"):
        assert escaped_name in web.get(path).text, path


def test_partner_filter_and_partners_page_over_http(web):
    """/jobs?partner= lists that partner's jobs only (as jobs list --partner), the
    search form offers both configured partners, a job page names its partner,
    and /partners (linked from every page) lists both with their counts."""
    acme = web.get("/jobs?partner=acme").text
    listed = web.cli_json("jobs", "list", "--partner", "acme")
    assert {j["job_id"] for j in listed} == {web.jobs["acme"], web.jobs["acme_failed"]}
    for job in web.cli_json("jobs", "list", "--limit", "100"):
        assert (f'href="/jobs/{job["job_id"]}"' in acme) == (job["partner"] == "acme")
    assert '<option value="acme" selected>acme</option>' in acme
    assert '<option value="bolt">bolt</option>' in acme
    bolt_hostile = web.get("/jobs?partner=bolt&po_number=pwned").text
    assert f'href="/jobs/{web.jobs["hostile"]}"' in bolt_hostile
    assert web.get("/jobs?partner=acme&po_number=pwned").text.count('href="/jobs/') == 0
    job = web.get(f"/jobs/{web.jobs['acme']}").text
    assert '<dd id="partner"><a href="/jobs?partner=acme">acme</a></dd>' in job
    page = web.get("/partners")
    assert page.status == 200 and '<a href="/partners" aria-current="page">' in page.text
    assert '<a href="/partners"' in web.get("/").text
    assert 'id="partner-acme"' in page.text and 'id="partner-bolt"' in page.text
    assert "ZZ:ACME" in page.text and str(web.root / "acme-out") in page.text


def test_job_page_shows_orders_997_report_and_the_failing_segment(web):
    """A job's page: its order's lines and total, the 997 sent; a failed job's
    error report and its EDI with the failing segment (the PO1 of quantity 0,
    segment 27) marked."""
    named = web.get(f"/jobs/{web.jobs['named']}").text
    assert "08292233294" in named and "13045.94" in named and "SMALL WIDGET" in named
    assert ".997</code>" in named and "AK1*PO*1421" in named
    failed = web.get(f"/jobs/{web.jobs['failed']}").text
    assert 'id="error-report"' in failed and "quantity_not_positive" in failed
    assert '<li value="27" class="failing" title="the failing segment"><code>PO1**0*' in failed


def test_jobs_paging_and_bad_filters(web):
    """Paging links keep the filters; a bad date is a 422 page that says why."""
    first = web.get("/jobs?status=succeeded").text
    assert "page 1" in first
    answer = web.get("/jobs?since=yesterday")
    assert answer.status == 422 and "is not a date" in answer.text
    assert web.get("/jobs/00000000-0000-0000-0000-000000000000").status == 404


def test_older_jobs_link_pages_past_jobs_recorded_meanwhile(tmp_path):
    """The jobs list's "older" link names the last job shown (``before=``):
    jobs recorded after page 1 was read do not push its jobs onto page 2,
    as an offset did (round 42); the link keeps the filters."""
    with site("sqlite", tmp_path) as running:
        db = store.open_database(f"sqlite:///{tmp_path / 'edi-inbox.db'}", Settings())
        try:
            recorder = store.DatabaseRecorder(db)
            start = datetime(2026, 12, 6, tzinfo=UTC)
            for n in range(30):
                record(recorder, make_job(900 + n, started_at=start + timedelta(minutes=n)))
            first = running.get("/jobs?status=succeeded").text
            for n in range(30, 35):  # the daemon goes on while the operator reads page 1
                record(recorder, make_job(900 + n, started_at=start + timedelta(minutes=n)))
        finally:
            store.close_database(db)
        older = re.search(r'href="([^"]+)" rel="next"', first)
        assert older is not None and "before=" in older[1] and "status=succeeded" in older[1]
        second = running.get(html.unescape(older[1])).text
    shown = re.compile(r'href="/jobs/([0-9a-f-]{36})"')
    assert set(shown.findall(first)).isdisjoint(shown.findall(second))
    assert shown.findall(second)


def test_retry_form_needs_the_token(web):
    """The retry form without the right token is refused (401) and moves nothing."""
    job_id = web.jobs["failed"]
    answer = web.request(
        "POST",
        f"/jobs/{job_id}/retry",
        "token=wrong",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status == 401 and "the token is wrong" in answer.text
    assert (web.root / "state" / "failed" / "bad-po.edi").exists()


def navigate(driver, action) -> None:
    """``action()`` (a click or a submit that loads a page), then wait until the
    new page is there: a click returns before the page it asks for has loaded,
    and a busy machine shows the old one a while longer. The old page is
    marked on its window (a new page has a new one): waiting for an old
    element to go stale made Chromium answer, mid-navigation, "Node with
    given id does not belong to the document" instead of "stale"."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("window.ediInboxLeaving = true")
    action()
    WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script(
            "return !window.ediInboxLeaving && document.readyState === 'complete'"
        )
    )


def browser(profile: Path):
    """A headless Chromium through chromedriver; skipped (failed under CI) without them."""
    missing = [p for p in CHROMIUM if not Path(p).exists()]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {missing} missing: .ci/run installs chromium")
        pytest.skip(f"{missing} not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM[0]
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMIUM[1]))


def test_browser_partner_filter_and_partners_page(web, tmp_path):
    """A real Chromium: choosing a partner in the search form narrows the list
    to its jobs; the partners page (from the nav) lists both partners with
    their files and failures; acme's hostile file name is text there and on
    its job list, never markup; its failures link lists its failed job."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = browser(tmp_path / "profile")
    try:
        driver.set_page_load_timeout(60)
        driver.get(web.url + "/jobs")
        everyone = driver.find_elements(By.CSS_SELECTOR, "table.jobs tbody tr")
        Select(driver.find_element(By.NAME, "partner")).select_by_visible_text("acme")
        navigate(driver, driver.find_element(By.CSS_SELECTOR, "form.search button").click)
        rows = driver.find_elements(By.CSS_SELECTOR, "table.jobs tbody tr")
        assert len(rows) == 2 < len(everyone)
        assert {r.find_element(By.CSS_SELECTOR, "td.partner").text for r in rows} == {"acme"}
        assert HOSTILE_NAME in {r.find_element(By.CSS_SELECTOR, "td.file").text for r in rows}
        assert "partner=acme" in driver.current_url
        assert driver.execute_script("return typeof window.pwned") == "undefined"

        link = driver.find_element(By.CSS_SELECTOR, "header nav a[href='/partners']")
        navigate(driver, link.click)
        assert driver.find_element(By.TAG_NAME, "h1").text == "Partners"
        rows = driver.find_elements(By.CSS_SELECTOR, "table.partners tbody tr")
        names = [r.find_element(By.CSS_SELECTOR, "td.name").text for r in rows]
        assert names == ["acme", "bolt"]
        acme = driver.find_element(By.ID, "partner-acme")
        assert acme.find_element(By.CSS_SELECTOR, "td.ids").text == "ZZ:ACME"
        assert acme.find_element(By.CSS_SELECTOR, "td.files").text == "2"
        assert acme.find_element(By.CSS_SELECTOR, "td.failures").text == "1"
        assert acme.find_element(By.CSS_SELECTOR, "td.last-activity").text[:2] == "20"
        assert HOSTILE_NAME in acme.find_element(By.CSS_SELECTOR, "td.error").text
        assert driver.execute_script("return typeof window.pwned") == "undefined"
        driver.save_screenshot(str(tmp_path / "partners.png"))

        navigate(driver, acme.find_element(By.CSS_SELECTOR, "td.failures a").click)
        (row,) = driver.find_elements(By.CSS_SELECTOR, "table.jobs tbody tr")
        assert row.find_element(By.CSS_SELECTOR, "td.file").text == HOSTILE_NAME
        navigate(driver, row.find_element(By.TAG_NAME, "a").click)
        assert driver.find_element(By.ID, "partner").text == "acme"
        assert driver.execute_script("return typeof window.pwned") == "undefined"
    finally:
        driver.quit()


def test_browser_overview_search_job_retry_and_hostile_po(web, tmp_path):
    """A real Chromium: the overview with its chart and hosts; a search for a PO
    and its job page; the hostile PO shown as text, never run; a retry with the
    token puts the failed file back into the inbox. Screenshots under tmp_path."""
    from selenium.webdriver.common.by import By

    shots = tmp_path / "screenshots"
    shots.mkdir()
    driver = browser(tmp_path / "profile")
    try:
        driver.set_page_load_timeout(60)
        # The overview.
        driver.get(web.url + "/")
        assert driver.find_element(By.TAG_NAME, "h1").text == "Overview"
        assert (
            len(driver.find_elements(By.CSS_SELECTOR, "svg rect.bar")) == 72
        )  # succeeded, partial, failed per hour
        hosts = driver.find_element(By.CSS_SELECTOR, "table.hosts").text
        assert "edi-a" in hosts and "running" in hosts and "Owing 997" in hosts
        driver.save_screenshot(str(shots / "overview.png"))
        if os.environ.get(DOCS_SCREENSHOT_ENV):
            docs = Path(__file__).parent.parent / "docs"
            docs.mkdir(exist_ok=True)
            shutil.copyfile(shots / "overview.png", docs / "dashboard.png")

        # A search for a PO, then its job page.
        driver.get(web.url + "/jobs")
        box = driver.find_element(By.NAME, "po_number")
        box.send_keys("08292233294")
        navigate(driver, box.submit)
        rows = driver.find_elements(By.CSS_SELECTOR, "table.jobs tbody tr")
        assert len(rows) == 1 and "08292233294" in rows[0].text
        driver.save_screenshot(str(shots / "search.png"))
        navigate(driver, rows[0].find_element(By.TAG_NAME, "a").click)
        assert driver.find_element(By.ID, "po-number").text == "08292233294"
        assert "13045.94" in driver.find_element(By.CSS_SELECTOR, "table.lines tfoot").text
        driver.save_screenshot(str(shots / "job.png"))

        # The hostile PO number: text on the list and the job page, never a script.
        driver.get(web.url + "/jobs?po_number=" + quote("pwned"))
        (row,) = driver.find_elements(By.CSS_SELECTOR, "table.jobs tbody tr")
        assert row.find_element(By.CSS_SELECTOR, "td.po").text == HOSTILE_PO
        navigate(driver, row.find_element(By.TAG_NAME, "a").click)
        assert driver.find_element(By.ID, "po-number").text == HOSTILE_PO
        assert driver.execute_script("return typeof window.pwned") == "undefined"
        driver.save_screenshot(str(shots / "hostile.png"))
        driver.get(web.url + "/")
        assert driver.execute_script("return typeof window.pwned") == "undefined"

        # A retry from the failed files, with the token typed in.
        driver.get(web.url + "/failed")
        form = driver.find_element(
            By.CSS_SELECTOR, f"form[action='/jobs/{web.jobs['failed']}/retry']"
        )
        form.find_element(By.NAME, "token").send_keys(TOKEN)
        navigate(driver, form.find_element(By.TAG_NAME, "button").click)
        assert driver.find_element(By.ID, "retried").text == "Back in the inbox: bad-po.edi"
        driver.save_screenshot(str(shots / "retried.png"))
    finally:
        driver.quit()
    state = web.root / "state"
    assert (state / "inbox" / "bad-po.edi").exists()
    assert not (state / "failed" / "bad-po.edi").exists()
    assert {p.name for p in shots.iterdir()} == {
        "overview.png",
        "search.png",
        "job.png",
        "hostile.png",
        "retried.png",
    }
