"""The one-shot pipeline: parse → transform → validate → post_to_erp → acknowledge."""

import io
import json
import os
import pickle
import sqlite3
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs
from werkzeug import Request, Response

from edi_inbox import files, queries, store
from edi_inbox import log as logsetup
from edi_inbox.config import ErpSettings, PathSettings, Settings
from edi_inbox.errors import NotRecorded, UnsafeFile
from edi_inbox.jobs import JobStatus, NullRecorder, Started, StepStatus
from edi_inbox.pipeline import Pipeline, ack_name, read_file
from edi_inbox.x12 import X12Reader

CORPUS = Path(__file__).parent / "data" / "corpus"
GOOD = CORPUS / "ediengine__850.OK.edi"  # 6 lines, CTT 6, total 13045.94
GOOD_LF = CORPUS / "botsplugins__850-004010-ascii-lf.x12"  # 4 lines, total 125.88
JOB_KEYS = {
    "job_id", "file_name", "status", "success", "started_at", "completed_at",
    "duration_seconds", "po_number", "total_amount", "vendor_name", "erp_po_id",
    "error", "steps", "logs", "orders",
}  # fmt: skip


@pytest.fixture(autouse=True)
def _logging():
    """Our structlog set-up (other tests may have replaced it): it keeps each job's events."""
    logsetup.configure("info", "json")


def settings_for(tmp_path: Path, erp_url: str = "", **erp: object) -> Settings:
    return Settings(
        paths=PathSettings(root=tmp_path),
        erp=ErpSettings(url=erp_url, backoff_initial_seconds=0.01, backoff_max_seconds=0.02,
                        backoff_jitter_seconds=0.0, **erp),  # type: ignore[arg-type]
    )  # fmt: skip


def copy(tmp_path: Path, source: Path, name: str | None = None, edit=None) -> Path:
    data = source.read_bytes()
    if edit:
        data = edit(data)
    target = tmp_path / (name or source.name)
    target.write_bytes(data)
    return target


def read_acks(settings: Settings) -> list[bytes]:
    return [p.read_bytes() for p in sorted(settings.paths.acks.iterdir())]


def test_good_file_goes_through_every_step(tmp_path):
    """A valid 850 passes all five steps, lands in outbox/ as JSON, and gets a 997."""
    settings = settings_for(tmp_path)
    with Pipeline(settings) as pipeline:
        job = pipeline.run(copy(tmp_path, GOOD))
    assert job.status is JobStatus.SUCCEEDED, job.error
    assert [s.step_name for s in job.steps] == [
        "parse", "transform", "validate", "post_to_erp", "acknowledge",
    ]  # fmt: skip
    assert all(s.status is StepStatus.SUCCESS for s in job.steps)
    assert job.po_number == "08292233294"
    assert job.total_amount == Decimal("13045.94")
    (outbox_file,) = settings.paths.outbox.iterdir()
    payload = json.loads(outbox_file.read_text())
    assert payload["po_number"] == "08292233294"
    assert job.erp_po_id == f"outbox:{outbox_file.name}"
    (ack,) = read_acks(settings)
    assert b"AK1*PO*1421" in ack and b"AK5*A" in ack


def test_job_json_keeps_the_contract_names(tmp_path):
    """process --json / jobs show --json carry the design's field names; money is a string."""
    with Pipeline(settings_for(tmp_path)) as pipeline:
        doc = pipeline.run(copy(tmp_path, GOOD)).to_json()
    assert doc.keys() >= JOB_KEYS
    assert doc["total_amount"] == "13045.94"
    assert doc["success"] is True
    assert {"step_name", "status", "attempts", "error", "data"} <= doc["steps"][0].keys()
    assert {"timestamp", "level", "message", "details"} <= doc["logs"][0].keys()
    order = doc["orders"][0]
    assert {"po_number", "line_count", "total_amount", "vendor_name", "erp_po_id", "status",
            "error"} <= order.keys()  # fmt: skip
    assert order["line_count"] == 6
    json.dumps(doc)  # nothing in it needs a custom encoder


def test_job_logs_carry_job_id_and_file(tmp_path):
    """Every event of a job is logged with its job_id and file name, and kept as
    a log line; at info a good job makes one line, job_finished, with what matters."""
    stream = io.StringIO()
    logsetup.configure("info", "json", stream=stream)
    try:
        with Pipeline(settings_for(tmp_path)) as pipeline:
            job = pipeline.run(copy(tmp_path, GOOD))
    finally:
        logsetup.configure("info", "json")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    mine = [e for e in lines if e.get("job_id") == job.job_id]
    assert [e["event"] for e in mine] == ["job_finished"]
    assert all(e["file"] == GOOD.name for e in mine)
    assert [entry.message for entry in job.logs] == [e["event"] for e in mine]
    (finished,) = mine
    assert finished["status"] == "succeeded" and finished["po_number"] == job.po_number
    assert finished["erp_po_ids"] == [o.erp_po_id for o in job.orders] and job.orders
    assert finished["acks"] == job.acks and finished["size"] == job.file_size


def test_log_level_applies_to_loggers_already_used(tmp_path):
    """Loggers are bound once; configure() with another level still takes effect:
    below it an event is neither written nor kept, at or above it both."""
    stream = io.StringIO()
    try:
        logsetup.configure("warning", "json", stream=stream)
        with Pipeline(settings_for(tmp_path)) as pipeline:
            quiet = pipeline.run(copy(tmp_path, GOOD))
            logsetup.configure("debug", "json", stream=stream)
            loud = pipeline.run(copy(tmp_path, GOOD, name="again.edi"))
    finally:
        logsetup.configure("info", "json")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert quiet.logs == [] and {e["job_id"] for e in lines} == {loud.job_id}
    assert {"job_started", "step_done", "job_finished"} <= {e.message for e in loud.logs}
    assert [e.message for e in loud.logs] == [e["event"] for e in lines]


def test_posts_to_the_http_erp_once_with_an_idempotency_key(tmp_path, httpserver):
    """With [erp] url the order is POSTed once; a second run of the same file is not posted."""
    httpserver.expect_request("/orders", method="POST").respond_with_json({"id": 77}, status=201)
    settings = settings_for(tmp_path, httpserver.url_for("/orders"))
    path = copy(tmp_path, GOOD)
    with Pipeline(settings, NullRecorder()) as pipeline:
        first = pipeline.run(path)
        second = pipeline.run(path)
    assert first.status is JobStatus.SUCCEEDED and first.erp_po_id == "77"
    # The same order again: a duplicate of the first job's, pointing to it (issue 10).
    assert second.status is JobStatus.DUPLICATE and second.erp_po_id == "77"
    assert second.orders[0].duplicate_of == first.job_id == second.duplicate_of
    assert len(httpserver.log) == 1
    request = httpserver.log[0][0]
    assert request.headers["Idempotency-Key"] == first.orders[0].idempotency_key
    body = request.get_json()
    assert body["po_number"] == "08292233294"
    assert Decimal(body["total_amount"]) == Decimal("13045.94")


def test_erp_rejection_fails_the_job_with_its_message(tmp_path, httpserver):
    """A 400 from the ERP fails the job at once: our words for the job, the ERP's in the order."""
    httpserver.expect_request("/orders").respond_with_json({"error": "unknown buyer"}, status=400)
    settings = settings_for(tmp_path, httpserver.url_for("/orders"))
    with Pipeline(settings) as pipeline:
        job = pipeline.run(copy(tmp_path, GOOD))
    assert job.status is JobStatus.FAILED
    assert job.error == "the ERP rejected order 08292233294 (HTTP 400)"
    assert "unknown buyer" in job.orders[0].error
    post = next(s for s in job.steps if s.step_name == "post_to_erp")
    assert post.status is StepStatus.FAILED and post.attempts == 1
    assert job.orders[0].status == "rejected"


def test_erp_outage_is_retried_then_succeeds(tmp_path, httpserver):
    """503, 503, 201: the step reports three attempts and the job succeeds."""
    created = Response(json.dumps({"id": "A1"}), 201, content_type="application/json")
    answers = iter([Response("busy", 503), Response("busy", 503), created])
    lock = threading.Lock()

    def handler(request: Request) -> Response:
        with lock:
            return next(answers)

    httpserver.expect_request("/orders").respond_with_handler(handler)
    settings = settings_for(tmp_path, httpserver.url_for("/orders"))
    with Pipeline(settings) as pipeline:
        job = pipeline.run(copy(tmp_path, GOOD))
    assert job.status is JobStatus.SUCCEEDED, job.error
    post = next(s for s in job.steps if s.step_name == "post_to_erp")
    assert post.attempts == 3
    keys = {req.headers["Idempotency-Key"] for req, _ in httpserver.log}
    assert len(keys) == 1


def test_envelope_error_fails_with_its_position_and_rejects_in_the_997(tmp_path, httpserver):
    """SE01 that miscounts fails parsing, names the segment, posts nothing, 997 says R."""
    settings = settings_for(tmp_path, httpserver.url_for("/orders"))
    with Pipeline(settings) as pipeline:
        job = pipeline.run(copy(tmp_path, CORPUS / "draftedi__sample_850.edi"))
    assert job.status is JobStatus.FAILED
    assert "SE" in job.error
    assert job.error_details[0]["segment_id"] == "SE"
    assert [s.status for s in job.steps] == [
        StepStatus.FAILED, StepStatus.PENDING, StepStatus.PENDING, StepStatus.PENDING,
        StepStatus.SUCCESS,
    ]  # fmt: skip
    assert httpserver.log == []
    (ack,) = read_acks(settings)
    assert b"AK5*R*4" in ack


def test_not_x12_fails_cleanly_without_an_ack(tmp_path):
    """A file that is not X12 fails with a reason and writes no 997."""
    settings = settings_for(tmp_path)
    with Pipeline(settings) as pipeline:
        job = pipeline.run(copy(tmp_path, CORPUS / "ediengine__NonEdi.edi"))
    assert job.status is JobStatus.FAILED
    assert "X12" in job.error
    assert not settings.paths.acks.exists() or read_acks(settings) == []


def test_truncated_file_fails_as_truncated(tmp_path):
    """A file cut off before its trailers fails and says so."""
    with Pipeline(settings_for(tmp_path)) as pipeline:
        job = pipeline.run(copy(tmp_path, CORPUS / "draftedi__truncated_file.edi"))
    assert job.status is JobStatus.FAILED
    assert "trailer" in job.error.lower() or "truncated" in job.error.lower()


def test_other_transaction_sets_are_not_handled(tmp_path):
    """An 810 invoice is refused by name, and the 997 rejects it."""
    settings = settings_for(tmp_path)
    with Pipeline(settings) as pipeline:
        job = pipeline.run(copy(tmp_path, CORPUS / "botsplugins__810-004010-01.x12"))
    assert job.status is JobStatus.FAILED
    assert "transaction set 810 is not handled" in job.error
    (ack,) = read_acks(settings)
    assert b"AK5*R" in ack and b"AK5*A" not in ack


def test_validation_reports_every_problem_and_posts_nothing(tmp_path, httpserver):
    """Two broken rules are both reported; no order of the file is posted."""

    def edit(data: bytes) -> bytes:
        data = data.replace(b"PO1*1*120*EA*9.25", b"PO1*1*0*EA*9.25")
        return data.replace(b"DTM*002*20101214", b"DTM*002*20101332")

    settings = settings_for(tmp_path, httpserver.url_for("/orders"))
    with Pipeline(settings) as pipeline:
        job = pipeline.run(copy(tmp_path, GOOD, edit=edit))
    assert job.status is JobStatus.FAILED
    validate = next(s for s in job.steps if s.step_name == "validate")
    assert validate.status is StepStatus.FAILED
    assert len(job.error_details) >= 2
    assert "quantity" in job.error and "date" in job.error
    assert httpserver.log == []
    (ack,) = read_acks(settings)
    assert b"AK5*R" in ack


def test_several_orders_in_one_file(tmp_path):
    """Each 850 of a file is its own order; the job sums them."""
    source = CORPUS / "botsplugins__850-004010-05.x12"
    with Pipeline(settings_for(tmp_path)) as pipeline:
        job = pipeline.run(copy(tmp_path, source))
    sets = list(X12Reader(source.open("rb")).transaction_sets())
    assert len(job.orders) == len(sets) == 2
    assert job.total_amount == sum((o.total_amount for o in job.orders), Decimal(0))
    assert job.po_number == job.orders[0].po_number


def test_the_997_parses_back_cleanly(tmp_path):
    """The acknowledgement written is itself well-formed X12 (a 997)."""
    settings = settings_for(tmp_path)
    with Pipeline(settings) as pipeline:
        pipeline.run(copy(tmp_path, GOOD_LF))
    (ack_path,) = settings.paths.acks.iterdir()
    reader = X12Reader(ack_path.open("rb"))
    sets = list(reader.transaction_sets())
    assert [s.code for s in sets] == ["997"] and reader.errors == []


class CallLog(NullRecorder):
    """Writes nothing; notes each write the pipeline asks for, with its steps."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, list[str]]] = []

    def job_started(self, job, steps=(), logs=(), *, control_numbers=0, seen=()):
        self.writes.append(("job_started", [s.step_name for s in steps]))
        if not control_numbers:
            return Started({})
        self.writes.append(("control_numbers", [str(control_numbers)]))
        return Started({}, NullRecorder.next_control_number(self, control_numbers))

    def order_accepted(self, job, order):
        self.writes.append(("order_accepted", [order.po_number]))
        super().order_accepted(job, order)

    def job_finished(self, job, logs, steps=()):
        self.writes.append(("job_finished", [s.step_name for s in steps]))

    def next_control_number(self, count: int = 1) -> int:
        self.writes.append(("next_control_number", [str(count)]))
        return super().next_control_number(count)


def test_records_are_written_before_the_erp_call_and_after_it(tmp_path):
    """A good file: the running job with the steps so far just before the ERP call,
    the accepted order the moment the ERP answers, the rest at the end."""
    calls = CallLog()
    with Pipeline(settings_for(tmp_path), calls) as pipeline:
        job = pipeline.run(copy(tmp_path, GOOD_LF))
    assert job.status is JobStatus.SUCCEEDED
    assert calls.writes == [
        ("job_started", ["parse", "transform", "validate"]),
        ("control_numbers", ["1"]),  # the 997's, reserved in the same write
        ("order_accepted", [job.po_number]),
        ("job_finished", ["post_to_erp", "acknowledge"]),
    ]


def test_a_ta1_and_its_997_take_their_control_numbers_in_one_write(tmp_path):
    """A file asking for a TA1 gets a TA1 and a 997: both control numbers are
    reserved in one write, the running record's (not one transaction an
    acknowledgement), and each file carries its own, consecutive."""
    calls = CallLog()
    edit = lambda data: data.replace(b"*000000183*0*P*", b"*000000183*1*P*")  # noqa: E731
    settings = settings_for(tmp_path)
    with Pipeline(settings, calls) as pipeline:
        job = pipeline.run(copy(tmp_path, GOOD_LF, edit=edit))
    assert job.status is JobStatus.SUCCEEDED
    assert [w for w in calls.writes if "control_number" in w[0]] == [("control_numbers", ["2"])]
    assert sorted(name.rsplit(".", 1)[1] for name in job.acks) == ["997", "TA1"]
    numbers = [
        int((settings.paths.acks / name).read_text().split("~", 1)[0].split("*")[13])
        for name in job.acks
    ]
    assert numbers[1] == numbers[0] + 1


def test_the_null_recorder_reserves_numbers_together_and_wraps():
    """Reserved numbers never run past 999999999: a range that would starts at 1."""
    recorder = NullRecorder()
    first = recorder.next_control_number(3)
    assert recorder.next_control_number() == first + 3
    recorder._control = 999_999_998
    assert recorder.next_control_number() == 999_999_999
    assert recorder.next_control_number(2) == 1
    assert recorder.next_control_number() == 3


def test_a_file_failing_before_the_erp_call_is_written_once(tmp_path):
    """Nothing to protect before the ERP call: the job is written at its end, whole."""
    calls = CallLog()
    edit = lambda data: data.replace(b"PO1*1*120*EA*9.25", b"PO1*1*0*EA*9.25")  # noqa: E731
    with Pipeline(settings_for(tmp_path), calls) as pipeline:
        job = pipeline.run(copy(tmp_path, GOOD, edit=edit))
    assert job.status is JobStatus.FAILED
    steps = ["parse", "transform", "validate", "post_to_erp", "acknowledge"]
    assert calls.writes == [("next_control_number", ["1"]), ("job_finished", steps)]


class NumbersDown(NullRecorder):
    """Records, but reserving control numbers raises ``error`` (if set)."""

    def __init__(self, error: Exception | None) -> None:
        super().__init__()
        self.error = error

    def next_control_number(self, count: int = 1) -> int:
        if self.error is not None:
            raise self.error
        return super().next_control_number(count)


REJECTED = lambda data: data.replace(b"PO1*1*120*EA*9.25", b"PO1*1*0*EA*9.25")  # noqa: E731


def test_no_997_goes_out_while_its_number_cannot_be_reserved(tmp_path):
    """A file that fails before the ERP call, a database unavailable as its
    997 is numbered: no 997 with a number of our own making (the database's
    sequence could give it out again); the job must run again."""
    settings = settings_for(tmp_path)
    down = NumbersDown(store.DatabaseUnavailable("database is locked"))
    with Pipeline(settings, down) as pipeline, pytest.raises(NotRecorded) as caught:
        pipeline.run(copy(tmp_path, GOOD, edit=REJECTED))
    assert caught.value.posted is False and caught.value.job.status is JobStatus.RUNNING
    assert not settings.paths.acks.exists() or read_acks(settings) == []


def test_a_duplicate_whose_997_cannot_be_numbered_runs_again(tmp_path, httpserver):
    """The same file again (a duplicate, answered without an ERP call) while
    the database cannot number its 997: the job runs again, not filed."""
    httpserver.expect_request("/orders", method="POST").respond_with_json({"id": 77}, status=201)
    settings = settings_for(tmp_path, httpserver.url_for("/orders"))
    path = copy(tmp_path, GOOD)
    recorder = NumbersDown(None)
    with Pipeline(settings, recorder) as pipeline:
        first = pipeline.run(path)
        recorder.error = store.DatabaseUnavailable("database is locked")
        with pytest.raises(NotRecorded) as caught:
            pipeline.run(path)
    assert first.status is JobStatus.SUCCEEDED and len(read_acks(settings)) == 1
    assert caught.value.job.status is JobStatus.RUNNING and caught.value.posted is False


def test_a_997_that_can_never_be_numbered_is_not_written(tmp_path):
    """Reserving numbers fails for good: the job is filed, its 997 step
    failed with the reason, no 997 written."""
    settings = settings_for(tmp_path)
    with pytest.raises(sqlite3.OperationalError) as missing:  # SQLITE_ERROR: for good
        sqlite3.connect(":memory:").execute('SELECT * FROM "control_numbers"')
    broken = NumbersDown(missing.value)
    with Pipeline(settings, broken) as pipeline:
        job = pipeline.run(copy(tmp_path, GOOD, edit=REJECTED))
    assert job.status is JobStatus.FAILED
    ack = job.steps[-1]
    assert ack.step_name == "acknowledge" and ack.status is StepStatus.FAILED
    assert "no control number could be reserved" in (ack.error or "")
    assert job.acks == [] and (not settings.paths.acks.exists() or read_acks(settings) == [])


def test_a_997_that_cannot_be_written_is_said_not_a_crash(tmp_path):
    """The acks folder cannot be made (its parent is a file; as with a full
    disk or a folder the daemon may not write): the orders keep their outcome,
    the acknowledge step fails saying where and why, nothing is logged as a
    crash."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    settings = Settings(paths=PathSettings(root=tmp_path, acks=blocker / "acks"))
    with capture_logs() as logged, Pipeline(settings) as pipeline:
        job = pipeline.run(copy(tmp_path, GOOD))
    assert job.status is JobStatus.SUCCEEDED and job.acks == []
    ack = job.steps[-1]
    assert ack.step_name == "acknowledge" and ack.status is StepStatus.FAILED
    assert ack.error == (
        f"not_acknowledged: no 997 written for the 1 due, not written in {blocker / 'acks'}:"
        " Not a directory"
    )
    assert "step_crashed" not in [e["event"] for e in logged]


def test_a_997_the_daemon_cannot_write_is_owed_then_written_as_built(tmp_path):
    """In the daemon (``owe_acks``) a 997 its folder cannot take is owed: the
    job ends unrecorded (``NotRecorded`` with the acknowledgement built,
    numbered), which survives a pickle (a worker process's pipe, the copy
    kept for a restart); written once the folder can take it, byte for byte
    as built, and the acknowledge step then succeeds, saying it was late."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    settings = Settings(paths=PathSettings(root=tmp_path, acks=blocker / "acks"))
    with Pipeline(settings) as pipeline:
        with pytest.raises(NotRecorded) as caught:
            pipeline.run(copy(tmp_path, GOOD), owe_acks=True)
        owed = pickle.loads(pickle.dumps(caught.value))
        assert owed.job.status is JobStatus.SUCCEEDED and owed.posted is True
        assert [a.kind for a in owed.acks] == ["997"] and owed.job.acks == []
        assert owed.reason == f"1 not written in {blocker / 'acks'}: Not a directory"
        step = owed.steps[-1]
        assert step.status is StepStatus.FAILED and step.data["owed"] == [owed.acks[0].name]
        assert step.error.endswith("Not a directory; written as soon as it can be")
        assert pipeline.write_owed_acks(owed) is False  # still a file there
        assert len(owed.acks) == 1 and step.status is StepStatus.FAILED
        built = owed.acks[0].data
        blocker.unlink()
        assert pipeline.write_owed_acks(owed) is True
    assert owed.acks == [] and step.status is StepStatus.SUCCESS and step.error is None
    assert "owed" not in step.data and step.data["written_late"]
    assert read_acks(settings) == [built] and owed.job.acks == step.data["acks"]


class BrokenRecorder(NullRecorder):
    """A recorder whose database is gone: every call raises."""

    def __getattribute__(self, name):
        if name.startswith("_"):
            return super().__getattribute__(name)

        def fail(*args, **kwargs):
            raise ConnectionError("database is gone")

        return fail


def test_nothing_is_posted_while_the_job_cannot_be_recorded(tmp_path, httpserver):
    """A recorder whose database is gone: the ERP is never called, and ``run``
    raises NotRecorded (nothing posted, the job must run again)."""
    httpserver.expect_request("/orders", method="POST").respond_with_json({"id": "E1"}, 201)
    settings = settings_for(tmp_path, httpserver.url_for("/orders"))
    with Pipeline(settings, BrokenRecorder()) as pipeline, pytest.raises(NotRecorded) as caught:
        pipeline.run(copy(tmp_path, GOOD))
    assert caught.value.posted is False
    assert caught.value.job.status is JobStatus.RUNNING
    assert httpserver.log == []


class LookupFails(NullRecorder):
    """Records, but the database drops out for the duplicate check."""

    def find_sent(self, sender, po_number):
        raise ConnectionError("database is gone")


def test_an_order_whose_duplicate_check_fails_is_not_posted(tmp_path, httpserver):
    """Whether the order was posted before cannot be known: nothing is posted,
    no 997 is written, and the job ends ``interrupted``, to run again (and
    answer) once the database answers; its file is handed back, not filed:
    the record keeps where it was (the daemon's ``destination``, done/ or
    failed/, is not asked)."""
    httpserver.expect_request("/orders", method="POST").respond_with_json({"id": "E1"}, 201)
    settings = settings_for(tmp_path, httpserver.url_for("/orders"))
    path = copy(tmp_path, GOOD)
    with Pipeline(settings, LookupFails()) as pipeline:
        job = pipeline.run(path, destination=lambda job: str(tmp_path / "failed" / "po.edi"))
    assert job.status is JobStatus.INTERRUPTED
    assert job.file_path == str(path)
    assert httpserver.log == []
    # No 997 from this run: it would reject an order the next run may post.
    assert job.acks == [] and not settings.paths.acks.exists()
    assert job.steps[-1].step_name == "acknowledge"
    assert job.steps[-1].status is StepStatus.PENDING


def test_read_file_refuses_a_fifo_without_blocking(tmp_path):
    """A FIFO is refused at once, never waited on."""
    fifo = tmp_path / "po.edi"
    os.mkfifo(fifo)
    with pytest.raises(UnsafeFile, match="not a regular file"):
        read_file(fifo, 1000)


def test_read_file_never_follows_a_symbolic_link(tmp_path):
    """process on a link (a partner's folder may hold one to /etc/shadow):
    refused, nothing of its target read or quoted."""
    secret = tmp_path / "secret"
    secret.write_text("root:$6$hash\n")
    link = tmp_path / "po.edi"
    link.symlink_to(secret)
    with pytest.raises(UnsafeFile, match=r"po\.edi is a symbolic link; links are never followed"):
        read_file(link, 1000)
    with Pipeline(settings_for(tmp_path)) as pipeline:
        job = pipeline.run(link)
    assert job.status is JobStatus.FAILED and "$6$hash" not in (job.error or "")
    assert job.error.endswith("po.edi is a symbolic link; links are never followed")


def test_read_file_caps_the_size(tmp_path):
    """A file over max_file_bytes is refused before it is read."""
    big = tmp_path / "big.edi"
    big.write_bytes(b"x" * 2000)
    with pytest.raises(UnsafeFile, match="over the limit"):
        read_file(big, 1000)


def test_unreadable_file_is_a_failed_job_not_a_crash(tmp_path):
    """A missing file fails its job with a reason; nothing raises."""
    with Pipeline(settings_for(tmp_path)) as pipeline:
        job = pipeline.run(tmp_path / "nope.edi")
    assert job.status is JobStatus.FAILED
    assert "could not be read" in job.error


def recording_pipeline(tmp_path: Path, erp_url: str, **options):
    """A pipeline recording into a real SQLite file; returns it and the database."""
    settings = settings_for(tmp_path, erp_url)
    db = store.open_database(f"sqlite:///{tmp_path / 'jobs.db'}", settings)
    store.init(db)
    return Pipeline(settings, store.DatabaseRecorder(db), **options), db


def test_a_log_line_that_cannot_be_written_never_fails_the_job(tmp_path, httpserver):
    """job_logs refuses every row (a trigger): the job is still posted once and
    recorded succeeded, without its log lines."""
    httpserver.expect_request("/orders", method="POST").respond_with_json({"id": "E7"}, 201)
    pipeline, db = recording_pipeline(tmp_path, httpserver.url_for("/orders"))
    db.execute_sql(
        "CREATE TRIGGER no_logs BEFORE INSERT ON job_logs BEGIN SELECT RAISE(ABORT, 'no'); END"
    )
    with pipeline:
        job = pipeline.run(copy(tmp_path, GOOD))
    shown = queries.show_job(db, job.job_id)
    assert shown["status"] == "succeeded" and shown["erp_po_id"] == "E7"
    assert shown["logs"] == [] and len(shown["steps"]) == 5
    assert len(httpserver.log) == 1


def test_posted_but_unrecorded_carries_the_record_owed(tmp_path, httpserver):
    """The database file goes away while the ERP takes the order: ``run`` raises
    NotRecorded(posted) with the ERP id; once the file is back, ``record_owed``
    writes the true record (no job left running, the ERP id kept)."""
    path = tmp_path / "jobs.db"
    away = tmp_path / "jobs.db.away"

    def take(request: Request) -> Response:
        os.rename(path, away)  # the running record is written: the database goes now
        return Response(json.dumps({"id": "E8"}), 201, content_type="application/json")

    httpserver.expect_request("/orders", method="POST").respond_with_handler(take)
    pipeline, db = recording_pipeline(tmp_path, httpserver.url_for("/orders"))
    with pipeline, pytest.raises(NotRecorded) as caught:
        pipeline.run(copy(tmp_path, GOOD))
    owed = caught.value
    assert owed.posted and owed.job.orders[0].erp_po_id == "E8"
    assert owed.job.status is JobStatus.SUCCEEDED
    assert not path.exists()  # not created again, empty
    os.rename(away, path)
    pipeline.record_owed(owed)
    shown = queries.show_job(db, owed.job.job_id)
    assert shown["status"] == "succeeded" and shown["erp_po_id"] == "E8"
    assert [s["step_name"] for s in shown["steps"]] == [
        "parse", "transform", "validate", "post_to_erp", "acknowledge",
    ]  # fmt: skip
    assert len(httpserver.log) == 1


@pytest.mark.parametrize("owe_acks", [True, False], ids=["daemon", "process"])
def test_a_job_the_database_failed_holds_its_997_in_the_daemon(tmp_path, httpserver, owe_acks):
    """The database goes away while the ERP takes the order (the order's
    record fails): in the daemon (``owe_acks``) the 997 is built, numbered,
    and held, not written (``NotRecorded.held``): the worker keeps what the
    job owes before it writes it, so a crash while the final record waits
    never sends a second one; one written before a crash is not written
    again. ``process`` writes it at once."""
    path, away = tmp_path / "jobs.db", tmp_path / "jobs.db.away"

    def take(request: Request) -> Response:
        os.rename(path, away)
        return Response(json.dumps({"id": "E8"}), 201, content_type="application/json")

    httpserver.expect_request("/orders", method="POST").respond_with_handler(take)
    pipeline, db = recording_pipeline(tmp_path, httpserver.url_for("/orders"))
    with pipeline, pytest.raises(NotRecorded) as caught:
        pipeline.run(copy(tmp_path, GOOD), owe_acks=owe_acks)
    owed = caught.value
    assert owed.posted and owed.job.status is JobStatus.SUCCEEDED
    if not owe_acks:
        assert not owed.held and owed.acks == [] and len(read_acks(pipeline.settings)) == 1
        return
    assert owed.held and [a.kind for a in owed.acks] == ["997"]
    assert owed.reason.startswith("1 held until the job's record is kept: the database is")
    assert not pipeline.settings.paths.acks.exists() and owed.job.acks == []
    built, kept = owed.acks[0].data, pickle.loads(pickle.dumps(owed))  # kept before it went out
    assert pipeline.write_owed_acks(owed) is True
    assert read_acks(pipeline.settings) == [built] and len(owed.job.acks) == 1
    # A restart after a crash that came once it was written: not written twice.
    assert pipeline.write_owed_acks(kept) is True and kept.job.acks == owed.job.acks
    assert read_acks(pipeline.settings) == [built]
    os.rename(away, path)
    pipeline.record_owed(owed)
    shown = queries.show_job(db, owed.job.job_id)
    assert shown["status"] == "succeeded" and shown["steps"][-1]["status"] == "success"


def test_the_record_is_awaited_for_record_patience(tmp_path, httpserver):
    """With record_patience, a database back within it costs nothing: the job
    is posted and recorded as if it had never gone."""
    httpserver.expect_request("/orders", method="POST").respond_with_json({"id": "E9"}, 201)
    pipeline, db = recording_pipeline(tmp_path, httpserver.url_for("/orders"), record_patience=30)
    path, away = tmp_path / "jobs.db", tmp_path / "jobs.db.away"
    os.rename(path, away)
    timer = threading.Timer(1.0, os.rename, (away, path))
    timer.start()
    try:
        with pipeline:
            job = pipeline.run(copy(tmp_path, GOOD))
    finally:
        timer.join()
    assert queries.show_job(db, job.job_id)["status"] == "succeeded"
    assert len(httpserver.log) == 1


def test_a_final_record_refused_for_good_keeps_status_and_erp_id(tmp_path, httpserver):
    """After the post, the full final record is refused for good (a trigger on
    job_interchanges stands for a value the database cannot hold): the job's row
    still gets its final status, the reason and the ERP id; nothing stays
    running."""
    httpserver.expect_request("/orders", method="POST").respond_with_json({"id": "E10"}, 201)
    pipeline, db = recording_pipeline(tmp_path, httpserver.url_for("/orders"))
    db.execute_sql(
        "CREATE TRIGGER no_final BEFORE INSERT ON job_interchanges"
        " BEGIN SELECT RAISE(ABORT, 'no'); END"
    )
    with pipeline:
        job = pipeline.run(copy(tmp_path, GOOD))
    shown = queries.show_job(db, job.job_id)
    assert shown["status"] == "succeeded" and shown["erp_po_id"] == "E10"
    assert "cannot be written in full" in shown["error"]
    assert len(httpserver.log) == 1


def test_the_acks_names_are_synced_once_a_job_before_its_final_record(tmp_path, monkeypatch):
    """Each 997/TA1 file is fsynced for its bytes, and acks/ once after all of a
    job's (their names), before the final record: a recorded 997 survives a
    crash of the machine, at one directory fsync a job, not one a file."""
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    class Recorder(NullRecorder):
        def job_finished(self, job, steps=(), logs=()):
            synced.append("job_finished")

    monkeypatch.setattr(os, "fsync", spy)
    settings = settings_for(tmp_path)
    with Pipeline(settings, Recorder()) as pipeline:
        job = pipeline.run(copy(tmp_path, GOOD))
    acks = str(settings.paths.acks)
    assert job.acks
    ours = [s for s in synced if s.startswith(acks) or s == "job_finished"]
    files_synced = [s for s in ours[:-2] if os.path.dirname(s) == acks]
    assert len(files_synced) == len(job.acks) == len(ours) - 2
    assert ours[-2:] == [acks, "job_finished"]


@pytest.mark.parametrize("kind", ["997", "999", "TA1"])
def test_the_acknowledgement_of_a_long_named_file_keeps_its_number_and_kind(kind):
    """A 255-byte file name is cut, never the control number or the kind."""
    name = ack_name("p" * 251 + ".edi", "123456789", kind)
    assert name.endswith(f".123456789.{kind}") and name.startswith("p" * 100)
    assert len(name.encode()) <= files.MAX_NAME


def test_acknowledgements_of_files_named_in_other_scripts_keep_their_names_apart():
    """заказ.edi and счёт.edi: each 997 says which file it answers."""
    assert ack_name("заказ.edi", "1", "997") == "заказ.edi.1.997"
    assert ack_name("счёт.edi", "1", "997") == "счёт.edi.1.997"


def test_the_partners_control_number_is_made_safe_in_an_acknowledgements_name():
    """GS06/ISA13 are the partner's text: no separator, no leading dot, held short."""
    assert ack_name("po.edi", "../x", "997") == "po.edi.x.997"
    assert ack_name("po.edi", "9" * 300, "TA1") == "po.edi." + "9" * 20 + ".TA1"


@given(st.text() | st.binary().map(os.fsdecode), st.text(), st.sampled_from(["997", "999", "TA1"]))
def test_an_acknowledgements_name_is_one_safe_path_component(file_name, number, kind):
    """Any file name and control number: a name within ``MAX_NAME`` bytes (room
    left for a ``.N`` suffix) ending in its kind, already safe (``_write_ack``
    makes it safe again: unchanged), with a valid control number kept whole."""
    name = ack_name(file_name, number, kind)
    assert len(name.encode()) <= files.MAX_NAME and name.endswith(f".{kind}")
    assert "/" not in name and "\0" not in name and name.isprintable() and name[0] != "."
    assert files.safe_name(name) == name


@given(st.text(), st.from_regex(r"[0-9]{1,9}", fullmatch=True))
def test_a_valid_control_number_is_kept_whole(file_name, number):
    """A control number of 1 to 9 digits is in the name as it is."""
    assert ack_name(file_name, number, "997").endswith(f".{number}.997")


def test_a_run_after_a_crash_past_its_997_sends_none_again(tmp_path, httpserver):
    """A crash after the 997 went out and before the final record (outsider
    round 15): the next run of the job (``retry_of`` the interrupted one)
    numbers its 997 as the first run did, finds it written under that ISA13
    and writes none again; the order is not posted again. Run once more on a
    file whose answer changed (its order now rejected), the 997 goes out
    anew, under a new number."""
    httpserver.expect_request("/orders", method="POST").respond_with_json({"id": "E1"}, 201)
    pipeline, db = recording_pipeline(tmp_path, httpserver.url_for("/orders"))
    settings = pipeline.settings

    def interrupted(job_id: str) -> None:  # what the next start makes of a job left running
        store.run_unit(db, lambda: db.execute_sql(
            'UPDATE "jobs" SET "status" = \'interrupted\' WHERE "job_id" = ?', (job_id,)
        ))  # fmt: skip

    def numbers() -> list[int]:
        return sorted(int(a.split(b"*")[13]) for a in read_acks(settings))

    with pipeline:
        path = copy(tmp_path, GOOD)
        first = pipeline.run(path)
        assert first.status is JobStatus.SUCCEEDED and len(first.acks) == 1
        sent = numbers()
        interrupted(first.job_id)
        with capture_logs() as logs:
            again = pipeline.run(path, retry_of=first.job_id)
        assert again.status is JobStatus.SUCCEEDED, again.error
        assert again.acks == first.acks and numbers() == sent
        assert [e["acks"] for e in logs if e["event"] == "acks_sent_before"] == [first.acks]
        assert len(httpserver.log) == 1  # posted once
        interrupted(again.job_id)
        changed = pipeline.run(copy(tmp_path, GOOD, edit=REJECTED), retry_of=again.job_id)
        assert changed.status is JobStatus.FAILED
        assert len(changed.acks) == 1 and changed.acks != first.acks
        assert len(numbers()) == 2 and numbers()[0] == sent[0] and numbers()[1] > sent[0]
    db.close()
