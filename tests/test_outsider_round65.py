"""Outside tester, round 65: hostile sizes and counts against today's new
code paths — bounded time, bounded memory, nothing lost.

Through round 49's in-process harness (the real Pipeline, a fresh SQLite
file per input, the recording HTTP ERP on 127.0.0.1), the real daemon
(``tests/daemons.py``: inotify, SIGKILL, a start) and the store's own
``mark_interrupted`` on SQLite and PostgreSQL.

What I tried
- One set of 500,000 broken segments (by hand: every REF02 too long 0.3 s,
  every header DTM an impossible date 2.9 s, every REF behind a DTM 3.4 s,
  100,000 N3s with no N1 0.7 s, 100,000 stray IN2s 0.4 s; peak RSS of the
  whole test process 100-250 MB for 4.5-24 MB files); kept at 100,000-200,000.
- A segment of 100,000 elements, a composite of 100,000 components, 99,000
  elements each too long; a segment over the reader's 1 MiB (refused by
  the reader: "no segment terminator in the 1048576 characters").
- 10,000 sets each broken in 10 places (by hand: 13.5 s, 120,004-segment
  997, SE01 right, AK9 R 10000 10000 0); kept at 2,000.
- A 1 MB value of ``A*B>C`` (delimiters where an AK404 copy would go).
- ``mark_interrupted(under=)`` with folders holding ``_``, ``%`` and ``\\``
  beside look-alike paths; a daemon whose root holds ``_%`` or a
  backslash, killed mid-POST on a file whose name is not UTF-8, started.
- 1,500 uploads with 250-byte names (each claim cuts its name and keeps a
  ``processing/.names`` marker), one in five refused by the ERP.
- Sets of lines each broken by a rule (200,000 and 500,000 lines by hand:
  17 s / 721 MB and 53 s / 1.67 GB of RSS; 997s of 400,010 and 1,000,010
  segments), measured against the same lines valid with tracemalloc.

What held (plain tests)
- ``test_held_a_set_of_200000_broken_segments_names_ten``: reading stops
  past the tenth (``MAX_NOTED``); ten AK3/AK4 5 with their copies.
- ``test_held_100000_misplaced_segments_name_at_most_eleven`` [N3 without
  N1, stray IN2, every REF behind a FOB, summary AMT, CTT and BEG again
  and again]: at most eleven AK3s, the 997's SE01 right.
- ``test_held_one_huge_segment_is_one_ak3`` [elements, components,
  every element too long]: one AK3, one AK4.
- ``test_held_a_megabyte_value_with_delimiters_has_no_ak404`` [997
  component, 999 repetition]: AK4 3 code 6 / IK4 2 code 12, no copy
  (``ack._copy``).
- ``test_held_2000_sets_each_broken_in_ten_places``: 20,000 AK3/AK4, SE01
  counts them, AK9 R 2000 2000 0, each AK5 R 5.
- ``test_held_mark_interrupted_under_matches_only_its_own_folder``
  [sqlite, postgresql]: SUBSTR, not LIKE: ``_``, ``%`` and ``\\`` match
  only themselves; a sibling folder, the folder itself, another host's job
  left alone.
- ``test_held_1500_long_named_uploads_leave_no_names_markers``: every file
  filed under its name (done/ or failed/), one key an order, no marker left.
- ``test_a_latin1_named_job_killed_mid_post_is_interrupted_at_the_restart``
  [underscore-percent, symlinked-root]: interrupted, its rerun
  ``retry_of`` it, one key.
- Seen, not followed: a segment over the reader's 1 MiB (a 1.2 MB
  ``A^B`` value) gets ``AK5 R`` / ``IK5 R`` with no code and no AK3: valid
  (AK502 is optional) but it tells the partner nothing. ``LINEAGE_MAX``
  (100) bounds ``_carried_on`` and ``held_by``; past 100 interrupted runs
  in a row the older ones keep their ``processing/`` path, but crash
  counting sets such a file aside long before; a retry chain's posted
  orders are found by key (``posted_keys``, ``order_by_key``) whatever its
  length.

Found (strict xfails; 2 of 3 fixed the same session, each test failing
before: at most ``rules.MAX_ALIKE`` problems of a code an order, the last
saying how many more; ``mark_interrupted(under=)`` matches a path as
``_text`` records it (escaped whole when not UTF-8), in Python, not in SQL
(an OR of 140 folders overflowed SQLite's parser). Finding 1 fixed the
next session: a set refused for its syntax is judged by the rules too
(``SetErrors.order``, ``Pipeline._judged_beside``); the held tests' sets
without a PO1 got one, as the rules now name a missing PO1 there)
1. ``test_a_refused_sets_997_names_what_the_rules_find_beside_a_too_long_element``
   [impossible-date, impossible-time, out-of-sequence, n3-outside,
   line-number]: a set with a REF02 too long (the transform's AK4 5) and an
   impossible DTM02 (AK4 8), DTM03 2460 (AK4 9), a CUR after the FOB
   (AK304 7), an N3 without its N1 (AK304 2) or a repeated PO101: the 997
   names the REF only. Each of the others is named when alone. Should:
   the 997 names each broken segment (today's promise), so a partner who
   fixes the REF is not refused again for the next. Cause:
   ``Pipeline.transform`` rejects the set on ``orders.SetErrors`` and
   ``validate`` (``rules``: dates, times, sequence, misplaced segments,
   line numbers are judged there) never runs for a rejected set.
   The same at size: 500,000 impossible header dates get one AK3 (the DTM
   past its maximum use), 10,000 sets broken in 5 + 5 places get 5 each.
2. ``test_a_set_of_lines_each_broken_costs_no_more_than_the_same_lines_valid``:
   10,000 lines each ``PO102 0``: the job's Python heap peaks at ~20 MB
   against ~11 MB for the same lines valid (tracemalloc, in a child
   process; ERP unreachable in both). Should: no more than the valid lines
   (x1.2). Cause: ``rules._check_lines`` adds a Problem a line, uncapped
   (the syntax errors and noted segments stop at ``MAX_NOTED``), and every
   one becomes an AK3/AK4 kept as lists until the 997 is written. At
   ``max_segments_per_file`` (2,500,000) such lines would cost GBs beyond
   README's estimate (``MemoryMax=3G``), and past 999,999 the 997's AK3
   loop is over its maximum use: an invalid 997.
3. ``test_a_latin1_named_job_killed_mid_post_is_interrupted_at_the_restart``
   [backslash]: a root ``.../edi\\in``, a file named ``caf\\xe9.edi``
   (Latin-1) killed mid-POST: after the start the killed job stays
   ``running`` for ever (status and /metrics show it running) and its
   rerun is a fresh job (``retry_of`` None). Should: interrupted, its rerun
   carrying it on. Cause: ``recorder._text`` escapes the whole path with
   ``files.display_name`` when the name is not UTF-8, which doubles the
   root's backslash too; ``mark_interrupted(under=...)`` compares the raw
   ``processing/`` prefix (``SUBSTR(file_path, 1, len(p)) == p``) and never
   matches.

About 30 s at -n0; the daemon tests are e2e (root: uids.upload chowns).
No fixed sleeps, no wall-clock assertions (60 s polls as deadlines).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from daemons import Daemon, daemons, erp
from test_outsider_round17 import RecordingErp
from test_outsider_round49 import LINE, Harness, interchange, order
from test_outsider_round61 import claimed

from edi_inbox import store
from edi_inbox.store.models import Job

import uids
from helpers import http_server, make_po, poll_until

__all__ = ["daemons", "erp"]  # the fixtures

DAEMON = Path(__file__).resolve().parent.parent / "daemon"
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Iterator[Harness]:
    """Round 49's harness (the real Pipeline in this process, a fresh SQLite
    file per input, the recording HTTP ERP on 127.0.0.1)."""
    with http_server() as server:
        erp = RecordingErp(server)
        yield Harness(erp, tmp_path_factory.mktemp("r65"))
        erp.gate.set()


def refused(out) -> None:
    assert out.bodies == [], out.ack[:20]
    assert out.ak5[:2] == ["AK5", "R"], out.ack[:20]
    assert out.ak9[1] == "R", out.ak9


def well_formed(out) -> None:
    """The 997's envelope counts what it holds: SE01 its segments, AK9 its sets."""
    st = next(i for i, s in enumerate(out.ack) if s[0] == "ST")
    se = next(i for i, s in enumerate(out.ack) if s[0] == "SE")
    assert int(out.ack[se][1]) == se - st + 1
    for s in out.ack:
        assert all(len(e) <= 99 for e in s[1:]), s[:4]
        if s[0] == "AK4":
            assert len(s) <= 5 and len(s[1]) <= 2 + 1 + 2, s  # AK401 position[-component]


# --- what held ----------------------------------------------------------------------


def test_held_a_set_of_200000_broken_segments_names_ten(harness):
    """200,000 REFs each with a REF02 over its maximum: reading stops past the
    tenth (``MAX_NOTED``), the 997 names ten, AK4 5 with their copies."""
    out = harness.run(interchange(order(*(["REF*ZZ*" + "X" * 40 + "~"] * 200_000))))
    refused(out)
    well_formed(out)
    assert len(out.ak3) == 10
    assert {tuple(s[1:4]) for s in out.ak4} == {("2", "", "5")}
    assert all(s[4] == "X" * 40 for s in out.ak4)


@pytest.mark.parametrize(
    "body",
    [
        ("N3*1 MAIN ST~",) * 100_000,  # N3s with no N1
        (LINE, *(("IN2*01*X~",) * 100_000)),  # stray IN2s in a line
        ("FOB*CC~", "REF*ZZ*X~") * 50_000,  # every REF behind a FOB: out of sequence
        ("CTT*1~",) + ("AMT*TT*1~",) * 100_000,  # summary AMT past its maximum, again and again
        (LINE,) + ("CTT*1~",) * 100_000,  # another line count, again and again
        ("BEG*00*SA*PO50**20240102~",) * 100_000,  # another PO number, again and again
    ],
    ids=["n3-without-n1", "stray-in2", "header-out-of-order", "summary-amt", "ctt", "beg"],
)
def test_held_100000_misplaced_segments_name_at_most_eleven(harness, body):
    out = harness.run(interchange(order(*body)))
    refused(out)
    well_formed(out)
    assert 1 <= len(out.ak3) <= 11, out.ak3[:3]


@pytest.mark.parametrize(
    "segment",
    [
        "REF*ZZ*" + "*".join(["X" * 5] * 100_000) + "~",  # 100,000 elements
        "REF*ZZ*X**" + ">".join(["X" * 5] * 100_000) + "~",  # a composite of 100,000
        "REF*ZZ*" + "X" * 90 + "*" + "*".join(["Y" * 9] * 99_000) + "~",  # each too long
    ],
    ids=["elements", "components", "every-element-too-long"],
)
def test_held_one_huge_segment_is_one_ak3(harness, segment):
    out = harness.run(interchange(order(segment, LINE)))
    refused(out)
    well_formed(out)
    assert len(out.ak3) == 1 and len(out.ak4) == 1, out.ack


@pytest.mark.parametrize(
    "version, ack, value, ak3, ak4",
    [
        ("004010", "997", "A*B>C" * 200_000, ["AK3", "REF", "3", "", "8"], ["AK4", "3", "", "6"]),
        ("005010", "999", "A^B" * 300_000, ["IK3", "REF", "3", "", "8"], ["IK4", "2", "", "12"]),
    ],
    ids=["997-component", "999-repetition"],
)
def test_held_a_megabyte_value_with_delimiters_has_no_ak404(harness, version, ack, value, ak3, ak4):
    """~1 MB of ``A*B>C`` (4010) or ``A^B`` (5010, ``^`` the repetition
    separator): one AK3/IK3 on the first element holding a separator, AK4 6
    or IK4 12, and no copy of it (``ack._copy``)."""
    out = harness.run(interchange(order(f"REF*ZZ*{value}~", LINE), version=version), ack=ack)
    assert out.kind == ack
    assert out.bodies == [] and out.ak5[1] == "R", out.ack
    well_formed(out)
    assert out.ak3 == [ak3]
    assert out.ak4 == [ak4]


def test_held_2000_sets_each_broken_in_ten_places(harness):
    """2,000 sets, each with ten REF02s too long: ten AK3/AK4 per set, SE01
    counts the 997's 40,000-odd segments, AK9 R 2000 2000 0."""
    broken = ["REF*ZZ*" + "X" * 31 + "~"] * 10
    sets = [order(*broken, LINE, st=f"{i:04d}") for i in range(1, 2001)]
    out = harness.run(interchange(*sets))
    well_formed(out)
    assert out.ak9[1:5] == ["R", "2000", "2000", "0"]
    assert len(out.ak3) == 20_000 and len(out.ak4) == 20_000
    assert len(out.tags("AK2")) == 2000
    assert all(s == ["AK5", "R", "5"] for s in out.tags("AK5"))


def _job(host: str, path: str) -> str:
    now = datetime.now(UTC)
    job_id = str(uuid.uuid4())
    Job.create(
        job_id=job_id, file_name=os.path.basename(path), file_path=path, status="running",
        host=host, started_at=now, created_at=now, updated_at=now,
    )  # fmt: skip
    return job_id


def test_held_mark_interrupted_takes_only_claimed_files(db_url, settings):
    """(Rewritten when round 67's fix replaced ``under=`` folders by the claim's
    name: this first held that ``_``, ``%`` and ``\\`` in folders match only
    themselves.) ``mark_interrupted(claimed_only=True)`` takes only the jobs
    whose file is a claim named after the job (``NAME.<job_id>``, in any
    folder, ``_``, ``%`` and ``\\`` in it too) or none, on SQLite and
    PostgreSQL: not an ``edi-inbox process FILE`` run of the same host."""
    db = store.open_database(db_url, settings)
    try:
        store.init(db)
        folders = ["/srv/a_b/processing/h", "/srv/p%q/processing/h", "/srv/x\\y/processing/h"]
        mine = []
        for i, folder in enumerate(folders):
            job_id = _job("h", "")
            Job.update(file_path=f"{folder}/f_{i}%.edi.{job_id}").where(
                Job.job_id == job_id
            ).execute()
            mine.append(job_id)
        others = [
            _job("h", "/srv/a_b/processing/h/f.edi"),  # a process run's FILE
            _job("h", "/srv/in/f.edi.0000"),  # named after another job
            _job("other", "/srv/a_b/processing/other/g.edi"),  # another host's
        ]
        marked = store.mark_interrupted(db, "h", claimed_only=True)
        assert sorted(m["job_id"] for m in marked) == sorted(mine)
        statuses = {j.job_id: j.status for j in Job.select(Job.job_id, Job.status)}
        assert all(statuses[j] == "running" for j in others)
    finally:
        store.close_database(db)


# --- found --------------------------------------------------------------------------


TOO_LONG_REF = "REF*ZZ*" + "X" * 40 + "~"  # REF02 over its 30: refused by the transform


@pytest.mark.parametrize(
    "other, tag, position",
    [
        (("DTM*002*20230231~", LINE), "DTM", "4"),
        (("DTM*002*20240101*2460~", LINE), "DTM", "4"),
        (("FOB*CC~", "CUR*BY*USD~", LINE), "CUR", "5"),
        (("N3*X~", LINE), "N3", "4"),
        ((LINE, LINE), "PO1", "5"),
    ],
    ids=["impossible-date", "impossible-time", "out-of-sequence", "n3-outside", "line-number"],
)
def test_a_refused_sets_997_names_what_the_rules_find_beside_a_too_long_element(
    harness, other, tag, position
):
    out = harness.run(interchange(order(TOO_LONG_REF, *other)))
    refused(out)
    assert [s[1:3] for s in out.ak3] == [["REF", "3"], [tag, position]], out.ack


CHILD = textwrap.dedent(
    """
    import json, sys, tracemalloc
    from pathlib import Path
    from test_outsider_round49 import Harness, interchange, order

    class Unreachable:  # nothing posted or kept in this process
        url = "http://127.0.0.1:9/po"
        bodies = []

    quantity, n, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    h = Harness(Unreachable(), Path(root))
    h.run(interchange(order()))  # warm: imports, schema, first job
    data = interchange(order(*[f"PO1*{i}*{quantity}*EA*2.50**VP*W-{i}~" for i in range(1, n + 1)]))
    tracemalloc.start()
    out = h.run(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(json.dumps({"status": out.status, "peak_kb": peak // 1024, "ak3": len(out.ak3)}))
    """
)


def _grew(tmp_path: Path, quantity: str, lines: int) -> dict:
    root = tmp_path / f"q{quantity}"
    root.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{DAEMON}{os.pathsep}{TESTS}"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, quantity, str(lines), str(root)],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_set_of_lines_each_broken_costs_no_more_than_the_same_lines_valid(tmp_path):
    lines = 10_000
    valid = _grew(tmp_path, "1", lines)
    broken = _grew(tmp_path, "0", lines)
    assert valid["status"] == "failed" and broken["status"] == "failed"  # ERP unreachable / refused
    assert broken["ak3"] >= 1
    assert broken["peak_kb"] <= 1.2 * valid["peak_kb"], (valid, broken)


def _markers(folder: Path) -> list[str]:
    try:
        return os.listdir(folder / ".names")
    except FileNotFoundError:
        return []


@pytest.mark.e2e
def test_held_1500_long_named_uploads_leave_no_names_markers(daemons, erp):
    """1,500 uploads with 250-byte names (each claim cuts its name and keeps
    it in ``processing/.names``), one in five refused by the ERP (400: filed
    in failed/): every file filed under its own name, each order posted
    under one key, and not one marker left."""
    daemon = daemons(erp.url)
    count = 1500
    erp.answers = [400 if i % 5 == 0 else 201 for i in range(count)]
    names = [f"{'é' * 120}-{i:04d}.edi" for i in range(count)]  # 250 bytes of UTF-8
    daemon.start()
    for i, name in enumerate(names):
        uids.upload(daemon.inbox / name, make_po(650_000 + i))
    poll_until(
        lambda: (
            len(daemon.listing(daemon.done)) + len(daemon.listing(daemon.failed)) >= count
            and not claimed(daemon)
        ),
        timeout=60,
        interval=0.2,
        what="every upload filed",
    )
    filed = daemon.listing(daemon.done) + [
        n for n in daemon.listing(daemon.failed) if n.endswith(".edi")
    ]
    assert sorted(filed) == sorted(names)
    assert len(daemon.listing(daemon.failed)) >= count // 5
    poll_until(lambda: not _markers(daemon.processing), timeout=10, what="markers dropped")
    assert all(len(keys) == 1 for keys in erp.keys_by_po().values())
    assert len(erp.keys_by_po()) == count


@pytest.mark.e2e
@pytest.mark.parametrize(
    "folder",
    [
        "edi_in%1",  # LIKE's wildcards: held
        "edi\\in",
        "link",
    ],
    ids=["underscore-percent", "backslash", "symlinked-root"],
)
def test_a_latin1_named_job_killed_mid_post_is_interrupted_at_the_restart(tmp_path, erp, folder):
    """A root named with ``_`` and ``%`` or with a backslash, a Latin-1 named
    upload held at the ERP, SIGKILL, a start: the killed job is marked
    interrupted, the file filed once in done/ under its name, one key."""
    if folder == "link":  # the configured root a symlink to the real one
        (tmp_path / "real").mkdir()
        (tmp_path / "link").symlink_to(tmp_path / "real")
        root = tmp_path / "link"
    else:
        root = tmp_path / folder
        root.mkdir()
    daemon = Daemon(root, erp.url)
    try:
        daemon.start()
        erp.gate.clear()
        name = os.fsdecode(b"caf\xe9.edi")
        uids.upload(daemon.inbox / name, make_po(650_999))
        poll_until(lambda: erp.requests, what="the POST held")
        daemon.kill()
        erp.gate.set()
        daemon.start()
        poll_until(lambda: daemon.listing(daemon.done), timeout=20, what="filed")
        poll_until(lambda: not claimed(daemon), timeout=10, what="no claim left")
        assert daemon.listing(daemon.done) == [name]
        assert all(len(keys) == 1 for keys in erp.keys_by_po().values())
        listed = {j["status"]: j for j in daemon.jobs()}
        assert sorted(listed) == ["interrupted", "succeeded"], list(listed)
        assert listed["succeeded"]["retry_of"] == listed["interrupted"]["job_id"]
    finally:
        daemon.close()
