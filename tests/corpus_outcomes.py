"""What the pipeline makes of every file in the public corpus, order by order.

    python tests/corpus_outcomes.py > tests/data/corpus_outcomes.txt

writes the table ``test_corpus_outcomes.py`` compares with: a change of
outcome (a job's status, an order's, an acknowledgment's) is then a visible
diff in review. Each file runs alone (a fresh recorder: no file is a
duplicate of another), with the outbox standing in for the ERP and the
default rule levels.
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

CORPUS = Path(__file__).parent / "data" / "corpus"


def _acks(folder: Path) -> list[str]:
    """Each acknowledgment in short: the 997's AK5 codes and AK9, or the TA1."""
    from edi_inbox.x12 import X12Reader

    out = []
    for path in sorted(folder.iterdir()):
        reader = X12Reader(io.BytesIO(path.read_bytes()))
        segs = [s.elements for s in reader.scanner]
        if path.suffix == ".TA1":
            ta1 = next(s for s in segs if s[0] == "TA1")
            out.append(f"TA1 {ta1[4]} {ta1[5]}")
        else:
            ak5 = "".join(s[1] for s in segs if s[0] == "AK5")
            ak9 = next("*".join(s[1:]) for s in segs if s[0] == "AK9")
            out.append(f"997 {ak5 or '-'} AK9 {ak9}")
    return out


def outcome(path: Path) -> list[str]:
    """The table's lines for one file."""
    from edi_inbox import log as logsetup
    from edi_inbox.config import PathSettings, Settings
    from edi_inbox.pipeline import Pipeline

    logsetup.configure("critical", "json")
    with tempfile.TemporaryDirectory() as root:
        settings = Settings(paths=PathSettings(root=Path(root)))
        with Pipeline(settings, host="corpus") as pipeline:
            job = pipeline.run(path, job_id=f"corpus-{path.name}")
        acks = _acks(settings.paths.acks) if settings.paths.acks.exists() else []
    lines = [f"{path.name}: {job.status}" + (f" ({'; '.join(acks)})" if acks else "")]
    if not job.sets and job.error:
        lines.append(f"  file: {_short(job.error)}")
    for s in job.sets:
        total = next((o.total_amount for o in job.orders if o.po_number == s["po_number"]), None)
        order = f"PO {s['po_number']} total {total}" if s["po_number"] is not None else "-"
        line = f"  {s['transaction_set']} {s['control_number']}: {s['status']} {order}"
        if s["reason"]:
            line += f" -- {_short(s['reason'])}"
        lines.append(line)
    for o in job.orders:
        for warning in o.warnings:
            lines.append(f"  warning PO {o.po_number}: {_short(warning)}")
    return lines


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def table() -> str:
    lines: list[str] = []
    for path in sorted(CORPUS.iterdir()):
        if path.name == "SOURCES.md":
            continue
        lines += outcome(path)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(table())
