"""Parsing speed and memory: the X12 reader against a naive streamed split.

    python bench/parse.py                 # 1 MB and 50 MB
    python bench/parse.py --sizes 1,5     # other sizes, in MB
    python bench/parse.py --runs 5        # best of 5 (default 3)

It writes files of valid 850s (one interchange, one group, sets of 2-40 PO1
lines, "~" + LF terminators) to a temporary directory, then times, each in a
fresh subprocess so that its peak RSS (VmHWM) is its own:

* baseline — read 64 KiB chunks, decode, split on "~", carry the tail, split
  each segment on "*": the least a streamed parser can do;
* scanner  — ``read_segments``: the same plus line-break removal, delimiter
  sniffing, interchange boundaries, segment numbering;
* reader   — ``X12Reader.transaction_sets``: all that plus envelope checks,
  one ``TransactionSet`` per 850 (what the pipeline uses).

Goal (README): the reader at least half as fast as the baseline, under 64 MB
peak RSS on 50 MB.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This checkout's code, whatever edi_inbox the interpreter has installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "daemon"))
from edi_inbox.x12 import X12Reader, read_segments

CHUNK = 1 << 16
MB = 1_000_000
ISA = (
    "ISA*00*          *00*          *ZZ*BENCHSENDER    *ZZ*BENCHRECEIVER  "
    "*240102*1200*U*00401*000000001*0*P*>~\n"
)


def purchase_order(rng: random.Random, number: int) -> str:
    """One 850, ST to SE, with a realistic mix of header and line segments."""
    segs = [
        f"ST*850*{number:04d}",
        f"BEG*00*SA*PO{number:08d}**20240102",
        f"REF*DP*{rng.randint(100, 999)}",
        "DTM*002*20240115",
        "N1*ST*ACME DISTRIBUTION CENTER 4*92*0042",
        "N3*1200 INDUSTRIAL PARKWAY*BUILDING 3",
        "N4*SPRINGFIELD*IL*62701*US",
    ]
    lines = rng.randint(2, 40)
    for i in range(1, lines + 1):
        qty, price = rng.randint(1, 500), rng.randint(100, 99999) / 100
        segs.append(f"PO1*{i}*{qty}*EA*{price:.2f}**VP*SKU-{rng.randint(1, 10**6):07d}")
        segs.append(f"PID*F****WIDGET MODEL {rng.randint(1, 999)} BLUE")
    segs.append(f"CTT*{lines}")
    segs.append(f"SE*{len(segs) + 1}*{number:04d}")
    return "~\n".join(segs) + "~\n"


def generate(path: Path, size: int) -> int:
    """Write about ``size`` bytes of one interchange of 850s; return the set count."""
    rng = random.Random(850)
    with path.open("w", encoding="ascii", newline="") as out:
        out.write(ISA + "GS*PO*BENCHSENDER*BENCHRECEIVER*20240102*1200*1*X*004010~\n")
        written, count = len(ISA) + 60, 0
        while written < size:
            count += 1
            text = purchase_order(rng, count)
            out.write(text)
            written += len(text)
        out.write(f"GE*{count}*1~\nIEA*1*000000001~\n")
    return count


def baseline(path: Path) -> dict[str, int]:
    """The naive streamed split."""
    segments = 0
    carry = ""
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            parts = (carry + chunk.decode("latin-1")).split("~")
            carry = parts.pop()
            for part in parts:
                part.split("*")
                segments += 1
    return {"segments": segments + bool(carry.strip("\n"))}


def scanner(path: Path) -> dict[str, int]:
    """read_segments: every segment, numbered, no envelope checks."""
    segments = 0
    with path.open("rb") as stream:
        for _ in read_segments(stream):
            segments += 1
    return {"segments": segments}


def reader(path: Path) -> dict[str, int]:
    """X12Reader: envelope-checked transaction sets, as the pipeline reads them."""
    sets = segments = 0
    with path.open("rb") as stream:
        r = X12Reader(stream)
        for ts in r.transaction_sets():
            sets += 1
            segments += len(ts.segments)
        assert not r.errors, r.errors[:3]
    return {"sets": sets, "segments": segments}


MODES = {"baseline": baseline, "scanner": scanner, "reader": reader}


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(mode: str, path: Path) -> None:
    """Subprocess side: one timed run, its result as JSON on stdout.

    CPU time, not wall time: on a shared machine other processes would
    otherwise decide the ratio.
    """
    start, wall = time.process_time(), time.perf_counter()
    result = MODES[mode](path)
    seconds, wall = time.process_time() - start, time.perf_counter() - wall
    print(json.dumps({"seconds": seconds, "wall": wall, "peak_rss_mb": peak_rss_mb(), **result}))


def run_once(mode: str, path: Path) -> dict[str, float]:
    """One measurement in a fresh subprocess."""
    out = subprocess.run(
        [sys.executable, __file__, "--worker", mode, str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def measure(path: Path, runs: int) -> dict[str, dict[str, float]]:
    """Per mode: best CPU time, and the highest peak RSS, over ``runs`` interleaved runs."""
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for _ in range(runs):
        for mode in MODES:  # interleaved, so drift in machine load hits every mode alike
            results[mode].append(run_once(mode, path))
    best = {}
    for mode, rs in results.items():
        best[mode] = min(rs, key=lambda r: r["seconds"])
        best[mode]["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rs)
    return best


def main() -> None:
    """Generate the files, measure each mode, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,50", help="file sizes in MB, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="runs per case (best is kept)")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]))
        return
    print(
        f"python {sys.version.split()[0]}, best of {args.runs} (CPU time),"
        f" chunk {CHUNK // 1024} KiB"
    )
    print(f"{'file':>7} {'mode':>9} {'MB/s':>8} {'vs baseline':>12} {'peak RSS MB':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in (float(s) for s in args.sizes.split(",")):
            path = Path(tmp) / f"orders-{size:g}MB.x12"
            sets = generate(path, int(size * MB))
            megabytes = path.stat().st_size / MB
            results = measure(path, args.runs)
            base = megabytes / results["baseline"]["seconds"]
            for mode, r in results.items():
                speed = megabytes / r["seconds"]
                print(
                    f"{megabytes:6.1f}M {mode:>9} {speed:8.1f} {speed / base:11.2f}x"
                    f" {r['peak_rss_mb']:12.1f}"
                )
            print(f"{'':>7} ({sets} sets of 850)")


if __name__ == "__main__":
    main()
