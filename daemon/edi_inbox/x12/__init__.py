"""X12 reading and acknowledging: pure code, no I/O beyond the stream handed in.

from edi_inbox.x12 import X12Reader, build_997
reader = X12Reader(open(path, "rb"))
for ts in reader.transaction_sets():
    ...
reader.interchanges, reader.errors  # summaries and every problem, after the loop
"""

from .ack import build_997, render
from .model import (
    Delimiters,
    GroupSummary,
    InterchangeSummary,
    Segment,
    SetSummary,
    TransactionSet,
)
from .reader import X12Reader
from .scan import SegmentScanner, read_segments, trailer_present

__all__ = [
    "Delimiters",
    "GroupSummary",
    "InterchangeSummary",
    "Segment",
    "SegmentScanner",
    "SetSummary",
    "TransactionSet",
    "X12Reader",
    "build_997",
    "read_segments",
    "render",
    "trailer_present",
]
