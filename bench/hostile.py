"""Hostile files against plain ones of the same size: time, peak RSS, what is left.

    python bench/hostile.py                    # every shape
    python bench/hostile.py --shapes po20k,groups
    python bench/hostile.py --outbox-orders 5000   # fewer outbox orders (default 20,000)

Each shape (issue 9, item G) is written to a temporary directory beside a
plain file of valid 850s of the same size, and each file is run through the
whole pipeline (parse to 997, the outbox as the ERP, a SQLite database) in a
fresh subprocess, so that its peak RSS (VmHWM: ru_maxrss would carry the
forking process's across exec) is its own:

* po20k, po40k — one order whose PO number (BEG03) is 20 KB / 40 KB long;
* tiny     — 10 MB of 2 million tiny segments ("N9*1") in one order;
* groups   — 5,000 empty functional groups (0.3 MB);
* outbox   — 20,000 tiny orders in one file, delivered to the outbox.

Printed per file: status, wall seconds, peak RSS (MB), 997s written, outbox
files, database size (MB) and the start of the error.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This checkout's code, whatever edi_inbox the interpreter has installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "daemon"))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parse import generate, peak_rss_mb

MB = 1_000_000
ISA = (
    "ISA*00*          *00*          *ZZ*BENCHSENDER    *ZZ*BENCHRECEIVER  "
    "*240102*1200*U*00401*000000001*0*P*>~\n"
)
GS = "GS*PO*BENCHSENDER*BENCHRECEIVER*20240102*1200*{n}*X*004010~\n"


def small_order(number: int, po_number: str, filler: str = "") -> str:
    """A one-line 850, ST to SE; ``filler`` is extra segment text in its line
    (before the CTT: where an N9 loop may be)."""
    segs = [
        f"ST*850*{number:04d}",
        f"BEG*00*SA*{po_number}**20240102",
        "N1*VN*ACME SUPPLY",
        "PO1*1*2*EA*3.50**VN*W-1",
    ]
    n = len(segs) + 2 + filler.count("~")
    return "~\n".join(segs) + "~\n" + filler + f"CTT*1~\nSE*{n}*{number:04d}~\n"


def one_group(*orders: str) -> str:
    return ISA + GS.format(n=1) + "".join(orders) + f"GE*{len(orders)}*1~\nIEA*1*000000001~\n"


def long_po(size: int) -> str:
    return one_group(small_order(1, "P" * size))


def tiny(size: int) -> str:
    n = (size - 400) // len("N9*1~")
    return one_group(small_order(1, "PO-1", "N9*1~" * n))


def groups(count: int = 5000) -> str:
    body = "".join(GS.format(n=g) + f"GE*0*{g}~\n" for g in range(1, count + 1))
    return ISA + body + f"IEA*{count}*000000001~\n"


def outbox(count: int) -> str:
    return one_group(*(small_order(n, f"PO-{n}") for n in range(1, count + 1)))


def shapes(outbox_orders: int) -> dict[str, tuple[str, object]]:
    """name -> (description, a function making the text)."""
    return {
        "po20k": ("20 KB PO number", lambda: long_po(20_000)),
        "po40k": ("40 KB PO number", lambda: long_po(40_000)),
        "tiny": ("10 MB of tiny segments", lambda: tiny(10 * MB)),
        "groups": ("5,000 empty groups", groups),
        "outbox": (f"{outbox_orders:,} outbox orders", lambda: outbox(outbox_orders)),
    }


def worker(root: Path) -> None:
    """Subprocess side: run ``root/in.edi`` through the pipeline, print JSON."""
    from edi_inbox import store
    from edi_inbox.config import DaemonSettings, PathSettings, Settings
    from edi_inbox.pipeline import Pipeline

    daemon = DaemonSettings(max_file_bytes=64 * 1024 * 1024)
    settings = Settings(paths=PathSettings(root=root), daemon=daemon)
    settings.paths.create()
    db = store.open_database(settings.database_url, settings)
    store.init(db)
    start = time.perf_counter()
    with Pipeline(settings, store.DatabaseRecorder(db), host="bench") as pipeline:
        job = pipeline.run(root / "in.edi")
    seconds = time.perf_counter() - start
    store.close_database(db)
    db_bytes = sum(p.stat().st_size for p in root.glob("edi-inbox.db*"))
    acks, outbox_dir = settings.paths.acks, settings.paths.outbox
    assert acks is not None and outbox_dir is not None
    result = {
        "status": str(job.status),
        "seconds": round(seconds, 2),
        "peak_mb": round(peak_rss_mb()),
        "acks": len(list(acks.iterdir())) if acks.exists() else 0,
        "outbox": len(list(outbox_dir.iterdir())) if outbox_dir.exists() else 0,
        "db_mb": round(db_bytes / MB, 1),
        "error": (job.error or "")[:90],
    }
    print(json.dumps(result))


def run(root: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", str(root)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="po20k,po40k,tiny,groups,outbox")
    parser.add_argument("--outbox-orders", type=int, default=20_000)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    known = shapes(args.outbox_orders)
    print(f"python {sys.version.split()[0]}; each file in its own subprocess")
    header = f"{'shape':<24} {'file':>6} {'status':<10} {'s':>7} {'peak MB':>8}"
    print(f"{header} {'997s':>5} {'outbox':>6} {'db MB':>6}  error")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.shapes.split(","):
            what, make = known[name]
            hostile = make()  # type: ignore[operator]
            size = len(hostile)
            for label, kind in ((what, "hostile"), ("  plain, same size", "plain")):
                root = Path(tmp) / f"{name}-{kind}"
                root.mkdir()
                if kind == "hostile":
                    (root / "in.edi").write_text(hostile, encoding="ascii")
                else:
                    generate(root / "in.edi", size)
                r = run(root)
                print(
                    f"{label:<24} {size / MB:>5.2f}M {r['status']:<10} {r['seconds']:>7}"
                    f" {r['peak_mb']:>8} {r['acks']:>5} {r['outbox']:>6} {r['db_mb']:>6}"
                    f"  {r['error']}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
