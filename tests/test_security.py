"""Hostile partner data and unsafe settings: shown, refused or kept to ourselves."""

import io
import json
import sys
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from edi_inbox import config, service
from edi_inbox import log as logsetup
from edi_inbox.cli import main
from edi_inbox.terminal import json_text, shown

CORPUS = Path(__file__).parent / "data" / "corpus"
GOOD = CORPUS / "ediengine__850.OK.edi"

# An OSC title change, a colour, DEL: what a partner's PO number and vendor name may hold.
EVIL_PO = "0829\x1b]0;pwned\x07\x1b[2J"
EVIL_VENDOR = "ACME\x1b[31m\x7fCO"


@pytest.fixture
def env(tmp_path):
    config = tmp_path / "edi-inbox.toml"
    config.write_text(f'[paths]\nroot = "{tmp_path}/state"\n[log]\nformat = "json"\n')
    return {"EDI_INBOX_CONFIG": str(config)}


@pytest.fixture
def evil_file(tmp_path) -> Path:
    """The corpus 850 with control characters in BEG03 and a vendor N1."""
    data = GOOD.read_bytes()
    data = data.replace(b"BEG*00*SA*08292233294*", b"BEG*00*SA*" + EVIL_PO.encode() + b"*")
    data = data.replace(b"N1*ST*XYZ RETAIL", b"N1*VN*" + EVIL_VENDOR.encode())
    path = tmp_path / "evil.edi"
    path.write_bytes(data)
    return path


def cli(env, *args):
    return CliRunner().invoke(main, list(args), env=env)


def assert_inert(text: str) -> None:
    """No control character but the line breaks reaches the terminal."""
    bad = [c for c in text if not c.isprintable() and c != "\n"]
    assert not bad, f"raw control characters printed: {bad!r}"


def test_shown_escapes_every_non_printable_and_keeps_the_rest():
    """ESC, BEL, DEL, a C1 CSI, a bidi override and a line break are escaped; accents are not."""
    assert shown("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert shown("\x07\x7f\x9b\u202e\n\t") == "\\x07\\x7f\\x9b\\u202e\\n\\t"
    assert shown("Müller & Søn ½") == "Müller & Søn ½"
    assert shown(None) == "" and shown(42) == "42"


def test_json_text_escapes_what_json_dumps_leaves_raw():
    """json.dumps(ensure_ascii=False) leaves DEL and C1 raw; json_text escapes them, same value."""
    value = {"po": "A\x7fB\x9b\u2028C\U0001f600", "vendor": "Müller"}
    assert "\x7f" in json.dumps(value, ensure_ascii=False)  # the gap being closed
    text = json_text(value, indent=2)
    assert_inert(text)
    assert "Müller" in text and "\\u009b" in text
    assert json.loads(text) == value


def test_process_and_jobs_show_escape_partner_text(env, evil_file):
    """process, jobs list, jobs search and jobs show print the PO number and vendor escaped."""
    done = cli(env, "process", str(evil_file))
    assert done.exit_code == 0, done.output
    assert_inert(done.stdout)
    assert "0829\\x1b]0;pwned\\x07\\x1b[2J" in done.stdout
    for args in (("jobs", "list"), ("jobs", "search", "--po-number", "0829")):
        table = cli(env, *args)
        assert table.exit_code == 0, table.output
        assert_inert(table.stdout)
        assert "ACME\\x1b[31m\\x7fCO" in table.stdout
    job_id = json.loads(cli(env, "jobs", "list", "--json").stdout)[0]["job_id"]
    show = cli(env, "jobs", "show", job_id)
    assert show.exit_code == 0, show.output
    assert_inert(show.stdout)
    assert "0829\\x1b]0;pwned" in show.stdout


def test_json_output_escapes_partner_text_and_keeps_its_value(env, evil_file):
    """--json output holds no raw DEL or ESC, and parses back to the partner's exact text."""
    done = cli(env, "process", "--json", str(evil_file))
    assert done.exit_code == 0, done.output
    assert_inert(done.stdout)
    assert json.loads(done.stdout)["orders"][0]["vendor_name"] == EVIL_VENDOR
    for args in (("jobs", "list", "--json"), ("jobs", "search", "--vendor", "ACME", "--json")):
        out = cli(env, *args)
        assert_inert(out.stdout)
        assert json.loads(out.stdout)[0]["po_number"] == EVIL_PO
    job_id = json.loads(done.stdout)["job_id"]
    show = cli(env, "jobs", "show", "--json", job_id)
    assert_inert(show.stdout)
    assert json.loads(show.stdout)["vendor_name"] == EVIL_VENDOR


@pytest.mark.parametrize(
    "isa06, why",
    [
        ("ABCDEFGHIJKLMNOPQRSTUV", "is longer than 15 characters"),  # a 113-character ISA
        ("ABCDEFG>IEA>XYZ", "holds the delimiter '>'"),  # the file's component separator
    ],
)
def test_hostile_isa06_gets_no_997_and_the_job_keeps_its_outcome(env, tmp_path, isa06, why):
    """A bad ISA06: the order is posted, no 997 is written, the acknowledge step says why."""
    data = GOOD.read_bytes().replace(b"*ABCDEFGHIJKLMNO*", f"*{isa06}*".encode())
    path = tmp_path / "hostile.edi"
    path.write_bytes(data)
    done = cli(env, "process", "--json", str(path))
    assert done.exit_code == 0, done.output
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded" and job["error"] is None
    step = next(s for s in job["steps"] if s["step_name"] == "acknowledge")
    assert step["status"] == "failed"
    assert "not_acknowledged" in step["error"] and f"ISA06 '{isa06}' {why}" in step["error"]
    acks = tmp_path / "state" / "acks"
    assert not acks.exists() or list(acks.iterdir()) == []
    shown_job = json.loads(cli(env, "jobs", "show", "--json", job["job_id"]).stdout)
    recorded = next(s for s in shown_job["steps"] if s["step_name"] == "acknowledge")
    assert recorded["status"] == "failed" and "ISA06" in recorded["error"]


def test_997_for_a_good_file_has_a_106_character_isa(env, tmp_path):
    """The acknowledge step still writes the 997 for a well-addressed file, ISA 106 wide."""
    done = cli(env, "process", "--json", str(GOOD))
    assert done.exit_code == 0, done.output
    (ack,) = (tmp_path / "state" / "acks").iterdir()
    text = ack.read_bytes().decode("latin-1")
    assert text[:106].count("*") == 16 and text[105] == "\n"


TOKEN = "s3cret-T0ken-4711"


def debug_page(request: Request) -> Response:
    """An ERP in debug mode: a 422 whose body echoes the request's headers."""
    lines = "\n".join(f"{name}: {value}" for name, value in request.headers.items())
    return Response(f"Unprocessable order\nRequest headers:\n{lines}\n", status=422)


def test_erp_body_never_reaches_the_partner_and_is_redacted_in_the_record(
    tmp_path: Path, httpserver: HTTPServer
) -> None:
    """error.json says "the ERP rejected order X (HTTP 422)"; the record keeps the ERP's words,
    token redacted."""
    httpserver.expect_request("/orders").respond_with_handler(debug_page)
    token = tmp_path / "erp.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    toml = tmp_path / "edi-inbox.toml"
    toml.write_text(
        f'[paths]\nroot = "{tmp_path}/state"\n[log]\nformat = "json"\n'
        f'[erp]\nurl = "{httpserver.url_for("/orders")}"\ntoken_file = "{token}"\n'
        "max_attempts = 1\n[daemon]\nsettle_seconds = 0.1\nprocesses = 1\n"
    )
    settings = config.load(toml, {})
    settings.paths.create()
    (settings.paths.inbox / "po.edi").write_bytes(GOOD.read_bytes())
    assert service.run(settings, once=True) == 0

    report_file = settings.paths.failed / "po.edi.error.json"
    report = json.loads(report_file.read_text())
    assert report["error"] == "the ERP rejected order 08292233294 (HTTP 422)"
    text = report_file.read_text()
    assert TOKEN not in text and "Unprocessable" not in text and "Authorization" not in text

    shown_job = cli({"EDI_INBOX_CONFIG": str(toml)}, "jobs", "show", "--json", report["job_id"])
    record = shown_job.stdout
    assert TOKEN not in record
    (order,) = json.loads(record)["orders"]
    assert "Unprocessable order" in order["error"] and "Authorization: [redacted]" in order["error"]
    assert any(line["message"] == "erp_refused" for line in json.loads(record)["logs"])


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_settle_seconds_nan_stops_the_cli_naming_the_key(tmp_path, value):
    """settle_seconds = nan would hold every file forever: the command refuses to start."""
    toml = tmp_path / "edi-inbox.toml"
    toml.write_text(f'[paths]\nroot = "{tmp_path}/state"\n[daemon]\nsettle_seconds = {value}\n')
    result = cli({"EDI_INBOX_CONFIG": str(toml)}, "run", "--once")
    assert result.exit_code == 1
    expected = f"[daemon] key 'settle_seconds' must be a finite number ≥ 0, got {value}"
    assert expected in result.stderr
    assert not (tmp_path / "state").exists()


def test_console_log_lines_escape_partner_text():
    """On a terminal the logs are console text: a PO number's ESC is shown, not obeyed."""
    stream = io.StringIO()
    try:
        logsetup.configure("info", "console", stream=stream)
        structlog.get_logger("edi_inbox.test").info("job_finished", po_number=EVIL_PO)
    finally:
        logsetup.configure("info", "json", stream=sys.stderr)
    line = stream.getvalue()
    assert "job_finished" in line and "0829\\x1b]0;pwned\\x07" in line
    assert_inert(line)
