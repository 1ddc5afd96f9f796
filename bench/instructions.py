"""Instructions a file, counted by valgrind: the pipeline against the minimal loop.

    python bench/instructions.py               # 100 files each
    python bench/instructions.py --files 300   # more files, the same figures

A file's CPU time on a shared machine drifts by 20 % within minutes (a
neighbour's load, the host's clock); the instructions it executes do not.
Each measure runs in a child process under ``valgrind --tool=callgrind``
(user-space instructions, the kernel's work left out), once with no file
after its warm-up and once with ``--files``: the difference, divided by the
files, is what one file costs, imports and warm-up excluded. Measured:

* loop — ``throughput.run_loop``: read, parse, POST with an Idempotency-Key,
  rename into done/, one SQLite transaction;
* Pipeline.run — ``throughput.run_pipeline_alone`` in the default
  configuration (the 997 on, info logs to a file), then with the 997 off
  and with warning logs: what each costs;

each with the ERP (``throughput.erp_server``, answering at once) in the same
process, so its instructions are in every figure alike. The ratio of
Pipeline.run to the loop is the machine's as little as a figure can be; the
daemon's own work (watching, claiming, moving, its processes and threads) is
``throughput.py``'s to measure. Needs ``valgrind`` (Debian: ``apt install
valgrind``); about a minute and a half a measure for 100 files.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import throughput

WARM_UP = 30  # files each child runs before it counts: imports, first connections
MEASURES = {
    "loop": None,
    "Pipeline.run": throughput.Variant("default: 997 on, info logs"),
    "Pipeline.run, 997 off": throughput.Variant("997 off", ack=False),
    "Pipeline.run, warning logs": throughput.Variant("warning logs", level="warning"),
}
_TOTAL = re.compile(r"I\s+refs:\s+([\d,]+)")


def child(measure: str, count: int) -> None:
    """Run ``measure``: ``WARM_UP`` files, then ``count`` more (none if 0)."""
    template = throughput.SAMPLE.read_bytes()
    variant = MEASURES[measure]
    work = Path(tempfile.mkdtemp(prefix="edi-bench-instructions-"))
    try:
        with throughput.erp_server(0.0) as url:
            for n, files in enumerate((WARM_UP, count)):
                if not files:
                    continue
                if variant is None:
                    throughput.run_loop(template, files, url, work / f"run-{n}")
                else:
                    throughput.run_pipeline_alone(template, files, url, work / f"run-{n}", variant)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def instructions(measure: str, count: int) -> int:
    """The user-space instructions of a child running ``measure`` on ``count`` files."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--child",
            measure,
            str(count),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    found = _TOTAL.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{measure} under valgrind failed:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--child", nargs=2, metavar=("MEASURE", "FILES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt install valgrind)")
    print(f"{args.files} files of {len(throughput.SAMPLE.read_bytes())} bytes, after {WARM_UP}")
    each: dict[str, float] = {}
    for measure in MEASURES:
        each[measure] = (instructions(measure, args.files) - instructions(measure, 0)) / args.files
        ratio = f" ({each[measure] / each['loop']:.2f}x the loop)" if measure != "loop" else ""
        print(f"  {measure}: {each[measure] / 1e6:.2f} M instructions a file{ratio}", flush=True)


if __name__ == "__main__":
    main()
