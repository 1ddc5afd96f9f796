"""log.py: the JSON lines' fast path."""

from __future__ import annotations

import io
import json
import logging

import structlog

from edi_inbox import log as logsetup


class Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_json_events_are_written_without_a_log_record():
    """Our events in JSON are rendered once and written straight to the stream
    (no stdlib LogRecord made, copied and formatted for each); the stdlib's own
    records still reach the same stream, in the same shape."""
    stream, counter = io.StringIO(), Counter()
    root = logging.getLogger()
    try:
        logsetup.configure("info", "json", stream=stream)
        root.addHandler(counter)
        with logsetup.job_context("j1", "po.edi") as buffer:
            structlog.get_logger("edi_inbox.test").info("job_finished", po_number="PO1")
        logging.getLogger("edi_inbox.stdlib").warning("plain %s", "record")
    finally:
        root.removeHandler(counter)
        logsetup.configure("info", "json")
    ours, theirs = (json.loads(line) for line in stream.getvalue().splitlines())
    assert [r.name for r in counter.records] == ["edi_inbox.stdlib"]
    assert ours["event"] == "job_finished" and ours["po_number"] == "PO1"
    assert (ours["job_id"], ours["file"], ours["level"]) == ("j1", "po.edi", "info")
    assert ours["logger"] == "edi_inbox.test" and ours["timestamp"].endswith("Z")
    assert theirs["event"] == "plain record" and theirs["level"] == "warning"
    assert [e.message for e in buffer.entries] == ["job_finished"]
