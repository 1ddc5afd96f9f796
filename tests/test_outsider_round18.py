"""Outsider round 18: today's changes (SAC charges, partners told apart by
GS02, FA groups holding an 850, decimals as plain text, AMT*TT with an
unpriced line, PO105/CTP09 basis, a second BEG/CUR refused, the recorder's
fewer search-key statements) attacked from outside. About 35 s (with
PostgreSQL).

Tried: the idempotency keys of orders without SAC or sender_group computed
by a8afa6d (``git archive`` into tmp) and by today's code (plain, HP and a
CTP price, an unpriced line, 1000000 at 0.00001, a price of 0.000000125);
orders posted by a8afa6d's ``process`` and sent again by today's,
unchanged and with a header SAC; one partner (``ZZ:ACME``) split into two
GS02 partners (``ZZ:ACME:ACMEAPP``, ``ZZ:ACME:OTHERAPP``) and merged back,
the same order resent under each; both divisions posting one PO number,
then merged back; one division split off beside a catch-all ``ZZ:ACME``
partner; a GS01 FA group holding a 997 and an 850; SAC05 ``-500``, 20
digits, ``5.``, ``1E3``, `` 500``; a SAC given as a percentage or a rate
with an AMT*TT that applied it; SAC in an SLN loop, after CTT, before a
CTP; a CUR in a header SAC loop beside the header CUR, a CUR after an N1
loop; a second BEG after a PO1; PO104 empty with a CTP and PO105 ``HP``
(no CTP09); PO105 ``hp ``; AMT*TT with an allowance taken off;
``jobs search`` (queries.search_jobs) for every PO (and a suffix) of a
three-PO job with one refused order and of a job whose only order was
refused, SQLite and PostgreSQL, and of a job SIGKILLed while the ERP held
its first POST (interrupted, rerun); ``stats`` and ``jobs show`` totals.

Held: keys of orders without SAC/sender_group byte-identical across the
upgrade (but for the exponent case below); an order posted by a8afa6d and
resent with a SAC is a duplicate, one POST (since a later session: when its
file had the SAC too; one without it, resent with a SAC added, is other
content, its kept bytes read again); split/merge/split resends
posted once; two divisions' PO of one number posted once each
(``sender_group`` ACMEAPP/OTHERAPP), a merge-back resend a duplicate; a
CUR in the header SAC loop is the charge's (header currency kept); a
second header CUR after an N1 loop refused; SAC05 ``-500`` read -5.00,
``1E3`` and `` 500`` not_numeric; AMT*TT with or without an allowance
accepted, any other refused; ``jobs search`` finds every job by each PO
on both databases, the SIGKILLed job and its rerun by both POs (one
Idempotency-Key a PO); ``stats`` total_amount_processed "12.000001000", no
exponent in ``jobs show``.

Found (strict xfails when found; each fixed since but the small price's
key, ``test_the_key_of_a_small_priced_order_is_unchanged_by_the_upgrade``):

* ``test_the_key_of_a_small_priced_order_is_unchanged_by_the_upgrade``:
  an order without SAC or GS02 priced ``0.000000125`` gets another
  Idempotency-Key after the upgrade (its JSON said ``1.25E-7``);
  CHANGELOG: "every other order's JSON and key are unchanged".
* ``test_an_order_priced_small_posted_before_the_upgrade_resent_unchanged_is_a_duplicate``:
  that order, posted by a8afa6d and resent byte for byte after the
  upgrade: job failed "order K-4 (BEG01 00) was posted by job …
  with other content; a change is sent as a replace …" (``_by_value``
  cannot read the stored ``1.25E-7``, so the old body and the new differ).
* ``test_the_rest_of_a_split_isa_id_is_not_refused_for_a_divisions_po``
  [other-content, same-content]: partners ``acmeapp`` (ZZ:ACME:ACMEAPP)
  and ``acme`` (ZZ:ACME, which GS02 OTHERAPP falls to); acmeapp posts
  REST-1; acme's own REST-1: other content, job failed "was posted by job
  … with other content"; same content, ``duplicate``, never posted. An
  order with no sender_group is compared with every division's
  (pipeline: ``group is None`` compares all), as if posted before a split.
* ``test_a_997_in_an_fa_group_with_an_850_is_not_answered_with_a_997``:
  ``GS*FA`` holding ``ST*997`` and ``ST*850``: the 850 is posted, and our
  997 answers the partner's 997: ``AK1*FA*77~AK2*997*0009~AK5*R*1~
  AK2*850*0001~AK5*A~AK9*P*2*2*1`` (X12: no 997 answers a 997).
* ``test_an_amt_total_with_a_percentage_charge_applied_is_not_refused``:
  ``SAC*C*D240****3*10`` (10 %, no SAC05; passed on for the ERP to apply)
  with ``AMT*TT*13.20`` over lines of 12.00: total_mismatch "does not
  match the lines' total 12.00", the order refused. (A rate SAC
  ``SAC*C*D240*****1*EA*2`` with AMT*TT 14: the same.)
* ``test_a_resend_in_one_file_adding_a_charge_is_not_acknowledged_as_a_duplicate``:
  one file, ST 0001 ``SAME-1`` without SAC, ST 0002 the same PO with
  ``SAC*C*D240***5000``: job succeeded, one POST (no ``charges``), 997
  ``AK5*A`` for both, ``AK9*A*2*2*2``: the 50.00 freight reaches no one.
  ``same_content`` compares the fields both have, so "no charges" is
  never a difference (meant for orders posted before SACs were read; it
  applies to any order, in one file or across files after the upgrade).
* ``test_a_ctp_priced_line_shows_the_basis_its_amount_used``: ``PO1*1*200*
  EA**HP*VP*X~CTP**UCP*350~`` (no CTP09): body ``price_basis`` "HP" beside
  ``amount`` 70000 (per unit): ``Line.basis`` falls back to PO105,
  ``priced_units`` does not; price_basis is not the basis used. (Fixed: a
  CTP-priced line's basis is its CTP09.)
* ``test_a_second_beg_after_a_po1_refuses_the_set`` [after-po1,
  after-ctt]: ``BEG…P1~PO1…~BEG…P2~`` (or the BEG after CTT) is read as
  P1 without a word: the second-BEG check is in the header area only; a
  BEG in the line or summary area is dropped.
* ``test_a_price_basis_written_hp_padded_reaches_the_erp_as_hp``: PO105
  ``hp `` is priced per hundred (amount 700) but the body's
  ``price_basis`` is "hp " as written: an ERP reading it sees no HP.
  (Fixed: ``price_basis`` is upper case, unpadded.)

Real parts: ``edi-inbox process``/``jobs``/``stats`` subprocesses (today's
code and a8afa6d's), a recording HTTP ERP on 127.0.0.1, SQLite under
``tmp_path`` and a PostgreSQL schema of its own. No mocks, no fixed sleeps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from daemons import daemons
from test_orders import transaction
from test_outsider_round13 import ISA
from test_outsider_round13 import write_config as config
from test_outsider_round17 import RecordingErp, acks_997, recording

from edi_inbox import config as edi_config
from edi_inbox import orders, queries, rules
from edi_inbox.errors import X12Error

import uids
from helpers import REPO, archived_daemon, http_server, opened, poll_until, script_json

__all__ = ["daemons", "recording"]  # fixtures

pytestmark = pytest.mark.e2e

OLD = "a8afa6d"


def po_set(po: str, st: str = "0001", header: str = "", lines: str = "") -> str:
    lines = lines or "PO1*1*4*EA*3.00**VP*X1~"
    body = f"ST*850*{st}~BEG*00*SA*{po}**20240102~{header}{lines}CTT*{lines.count('PO1*')}~"
    return body + f"SE*{body.count('~') + 1}*{st}~"


def x12(*sets: str, gs01: str = "PO", gs02: str = "ACMEAPP", icn: str = "000000001") -> bytes:
    return (
        ISA.format(icn=icn, ack="0")
        + f"GS*{gs01}*{gs02}*OURAPP*20240102*1200*77*X*004010~"
        + "".join(sets)
        + f"GE*{len(sets)}*77~IEA*1*{icn}~"
    ).encode()


def parsed(text: str) -> orders.PurchaseOrder:
    return orders.from_transaction(transaction(text))


@pytest.fixture(scope="module")
def old_daemon(tmp_path_factory) -> Path:
    """a8afa6d's daemon/ (git archive), for the upgrade checks."""
    return archived_daemon(OLD, tmp_path_factory.mktemp("old"))


def run(cfg: Path, *args: str, daemon: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EDI_INBOX_CONFIG"}
    if daemon is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(daemon), str(REPO / "tests")])
    return subprocess.run(
        [sys.executable, "-m", "edi_inbox.cli", "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )


def process(cfg: Path, path: Path, daemon: Path | None = None) -> dict:
    result = run(cfg, "process", str(path), "--json", daemon=daemon)
    assert result.stdout, result.stderr
    job = json.loads(result.stdout)
    return job[0] if isinstance(job, list) else job


# --- upgrade safety ---------------------------------------------------------------

KEY_SCRIPT = r"""
import json, sys
from edi_inbox import orders
from edi_inbox.x12.model import Delimiters, GroupSummary, InterchangeSummary, Segment
from edi_inbox.x12.model import TransactionSet
D = Delimiters("*", ">", "~")
ic = InterchangeSummary(
    sender_qualifier="ZZ", sender_id="ACME", receiver_qualifier="12",
    receiver_id="5551234567", date="240102", time="1304", version="00401",
    control_number="000000905", usage="P", delimiters=D, encoding="ascii",
)
gs = GroupSummary("PO", "ACMEGS", "BUYERGS", "77", "004010", 2)
out = []
for text in json.loads(sys.stdin.read()):
    segs = [Segment(r.split("*"), n) for n, r in enumerate(filter(None, text.split("~")), 3)]
    ts = TransactionSet("850", segs[0].get(2), segs, D, ic, gs)
    po = orders.from_transaction(ts)
    out.append(orders.idempotency_key(po))
print(json.dumps(out))
"""

PLAIN_ORDERS = [
    po_set("K-1"),
    po_set("K-2", lines="PO1*1*200*EA*350*HP*VP*X1~PO1*2*3*CA*.5**VP*X2~"),
    po_set("K-3", lines="PO1*1*2000*EA***VP*X1~CTP**UCP*15.00~"),
    po_set("K-5", header="CUR*BY*USD~", lines="PO1*1*4*EA*3.00**VP*X1~PO1*2*2*EA***VP*X2~"),
    po_set("K-6", lines="PO1*1*1000000*EA*0.00001**VP*X1~"),
]


def keys_by(daemon: Path, texts: list[str]) -> list[str]:
    return script_json(daemon, KEY_SCRIPT, texts, timeout=30)


def test_held_keys_of_orders_without_sac_or_group_are_those_a8afa6d_made(old_daemon):
    assert keys_by(REPO / "daemon", PLAIN_ORDERS) == keys_by(old_daemon, PLAIN_ORDERS)


SMALL = po_set("K-4", lines="PO1*1*8*EA*0.000000125**VP*X1~")


@pytest.mark.xfail(
    strict=True,
    reason="LEFT: an order priced 0.000000125 gets another key after the upgrade (its JSON"
    " said 1.25E-7, now 0.000000125); a resend is still found the same order by value",
)
def test_the_key_of_a_small_priced_order_is_unchanged_by_the_upgrade(old_daemon):
    assert keys_by(REPO / "daemon", [SMALL]) == keys_by(old_daemon, [SMALL])


def posted_by_old_then_new(tmp_path, erp, old_daemon, before: str, after: str) -> dict:
    """``before`` posted by a8afa6d's ``process``, then ``after`` by today's."""
    cfg = config(tmp_path, erp.url)
    first = tmp_path / "first.edi"
    first.write_bytes(x12(before))
    job = process(cfg, first, daemon=old_daemon)
    assert job["status"] == "succeeded", job
    again = tmp_path / "again.edi"
    again.write_bytes(x12(after, icn="000000002"))
    return process(cfg, again)


def test_held_an_order_posted_before_the_upgrade_with_a_sac_resent_as_it_was_is_a_duplicate(
    tmp_path, recording, old_daemon
):
    """a8afa6d read no SAC: its order's JSON lacks the charge its file had.
    The file sent again as it was is the same order (its kept bytes, read
    again today, have the SAC too): one POST."""
    with_sac = po_set("UP-1", header="SAC*C*D240***500~")
    job = posted_by_old_then_new(tmp_path, recording, old_daemon, with_sac, with_sac)
    assert len(recording.bodies) == 1, [b.get("charges") for b in recording.bodies]
    assert job["status"] == "duplicate", job


def test_an_order_posted_before_the_upgrade_resent_with_a_sac_added_is_other_content(
    tmp_path, recording, old_daemon
):
    """Posted by a8afa6d without a SAC, sent again with a charge added: other
    content (a change comes as a replace), as against an order today's
    version posted; the fields both versions' JSON have agree, the old
    order's kept bytes, read again, have no charge. (Held as a duplicate
    until the session that compared older orders by their kept bytes.)"""
    job = posted_by_old_then_new(
        tmp_path, recording, old_daemon, po_set("UP-1"), po_set("UP-1", header="SAC*C*D240***500~")
    )
    assert len(recording.bodies) == 1, [b.get("charges") for b in recording.bodies]
    assert job["status"] == "failed" and "other content" in job["error"], job


def test_an_order_priced_small_posted_before_the_upgrade_resent_unchanged_is_a_duplicate(
    tmp_path, recording, old_daemon
):
    job = posted_by_old_then_new(tmp_path, recording, old_daemon, SMALL, SMALL)
    assert len(recording.bodies) == 1
    assert job["status"] == "duplicate", (job["status"], job["error"])


# --- partners split by GS02 and merged back ----------------------------------------

ONE = '[partners.acme]\nids = ["ZZ:ACME"]\n'
SPLIT = (
    '[partners.acmeapp]\nids = ["ZZ:ACME:ACMEAPP"]\n[partners.other]\nids = ["ZZ:ACME:OTHERAPP"]\n'
)


def test_held_a_partner_split_by_gs02_and_merged_back_never_posts_an_order_twice(
    tmp_path, recording
):
    """Posted before the split, resent after it, and after the merge back:
    one POST; under the split the other division's PO of the same number
    (other content) is its own order."""
    for n, partners in enumerate([ONE, SPLIT, ONE], 1):
        cfg = config(tmp_path, recording.url, partners)
        path = tmp_path / f"f{n}.edi"
        path.write_bytes(x12(po_set("SPLIT-1"), icn=f"00000000{n}"))
        job = process(cfg, path)
        assert job["status"] in ("succeeded", "duplicate"), job
    assert len(recording.bodies) == 1, [b.get("sender_group") for b in recording.bodies]
    with opened(edi_config.load(cfg)) as db:
        assert len(queries.search_jobs(db, po_number="SPLIT-1")) == 3


# --- FA groups ---------------------------------------------------------------------

A997 = "ST*997*0009~AK1*PO*12~AK9*A*1*1*1~SE*4*0009~"


def test_a_997_in_an_fa_group_with_an_850_is_not_answered_with_a_997(tmp_path, recording):
    """X12: no 997 answers a 997. An FA group holding a 997 and an 850: the
    850 is posted; the 997 set must not be refused as an order set in a 997
    we send back (nor fail the file)."""
    cfg = config(tmp_path, recording.url)
    path = tmp_path / "fa.edi"
    path.write_bytes(x12(A997, po_set("FA-1"), gs01="FA").replace(b"*0*P*", b"*1*P*"))
    job = process(cfg, path)
    assert [b["po_number"] for b in recording.bodies] == ["FA-1"], job
    answered = [
        st02
        for a in job["acks"]
        if a.endswith(".997")
        for _, answers, _ in acks_997((tmp_path / "acks" / a).read_bytes())
        for st02, _ in answers
    ]
    assert "0009" not in answered, answered
    assert job["status"] == "succeeded", (job["status"], job["error"])


# --- SAC and the other parse changes (in process) -------------------------------------


def test_held_sac_amounts_and_checks():
    def one(sac: str, amt: str = "12"):
        po = parsed(po_set("S-1", header=sac).replace("CTT*1~", f"CTT*1~AMT*TT*{amt}~"))
        return po, [p.code for p in rules.validate(po)]

    po, codes = one("SAC*C*D240***-500~")
    assert po.charges[0].amount == -5 and codes == []
    assert one("SAC*C*D240***1E3~")[1] == ["not_numeric"]
    assert one("SAC*C*D240*** 500~")[1] == ["not_numeric"]
    po, codes = one("SAC*A*C310***100~", amt="11")  # 12.00 less 1.00 off
    assert codes == [] and po.charges_total == -1
    assert one("SAC*A*C310***100~", amt="12")[1] == [], "lines alone or with: both allowed"
    assert "total_mismatch" in one("SAC*A*C310***100~", amt="13")[1]
    # the CUR of a header SAC loop is the charge's, not a second header CUR
    po = parsed(po_set("S-2", header="CUR*BY*USD~SAC*C*D240***500~CUR*BY*EUR~"))
    assert po.currency == "USD" and po.charges[0].amount == 5
    with pytest.raises(Exception, match="second time"):
        parsed(po_set("S-3", header="CUR*BY*USD~N1*ST*X~CUR*BY*EUR~"))
    # an order without a SAC: no charges key at all
    assert "charges" not in parsed(po_set("S-4")).to_json()


def test_a_ctp_priced_line_shows_the_basis_its_amount_used():
    """Since round 49 a PO105 without PO104 breaks the PO1's syntax note C0504
    and is refused (AK4 2 on PO104): a basis and an amount that disagree can
    no longer reach the ERP. A CTP09 is the basis of a line it prices."""
    with pytest.raises(X12Error) as caught:
        parsed(po_set("B-1", lines="PO1*1*200*EA**HP*VP*X~CTP**UCP*350~"))
    assert (caught.value.segment_id, caught.value.element, caught.value.code) == ("PO1", 4, "2")
    po = parsed(po_set("B-1", lines="PO1*1*200*EA***VP*X~CTP**UCP*350******HP~"))
    line = po.lines[0].to_json()
    assert (line["price_basis"], line["amount"]) == ("HP", "700"), line


@pytest.mark.parametrize("where", ["after-po1", "after-ctt"])
def test_a_second_beg_after_a_po1_refuses_the_set(where):
    beg = "BEG*00*SA*P2**20240102~"
    if where == "after-po1":
        text = po_set("P1", lines=f"PO1*1*2*EA*3**VP*X~{beg}")
    else:
        text = po_set("P1").replace("CTT*1~", f"CTT*1~{beg}")
    with pytest.raises(Exception, match="BEG"):
        parsed(text)


def test_a_price_basis_written_hp_padded_reaches_the_erp_as_hp():
    line = parsed(po_set("B-2", lines="PO1*1*200*EA*350*hp *VP*X~")).lines[0].to_json()
    assert line["amount"] == "700"
    assert line["price_basis"] == "HP", line["price_basis"]


# --- the recorder: search keys written once ---------------------------------------------


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_held_jobs_search_finds_a_job_by_each_po_after_the_recorder_change(
    tmp_path, recording, request, database
):
    """A three-PO job (one refused) and a job whose only order is refused
    (failed before any running record): ``jobs search`` by each PO and by a
    suffix finds its job."""
    cfg = config(tmp_path, recording.url)
    if database == "postgresql":
        url = request.getfixturevalue("pg_url")
        sqlite = json.dumps("sqlite:///" + str(tmp_path / "edi-inbox.db"))
        cfg.write_text(cfg.read_text().replace(sqlite, json.dumps(url)))
    many = tmp_path / "many.edi"
    bad_line = "PO1*1*0*EA*3.00**VP*X1~"
    many.write_bytes(
        x12(
            po_set("SRCH-A1", "0001"),
            po_set("SRCH-B2", "0002", lines="PO1*1*8*EA*0.000000125**VP*X1~"),
            po_set("SRCH-C3", "0003", lines=bad_line),
        )
    )
    lone = tmp_path / "lone.edi"
    lone.write_bytes(x12(po_set("SRCH-D4", lines=bad_line), icn="000000002"))
    result = run(cfg, "process", str(many), str(lone), "--json")
    jobs = json.loads(result.stdout)
    by_name = {j["file_name"]: j["job_id"] for j in jobs}
    assert len(recording.bodies) == 2
    with opened(edi_config.load(cfg)) as db:  # in process: five CLI starts cost ~2 s
        for po, name in [
            ("SRCH-A1", "many.edi"),
            ("SRCH-B2", "many.edi"),
            ("SRCH-C3", "many.edi"),
            ("SRCH-D4", "lone.edi"),
            ("H-B2", "many.edi"),
        ]:
            found = queries.search_jobs(db, po_number=po)
            assert by_name[name] in [j["job_id"] for j in found], (po, found)
        stats = json.loads(json.dumps(queries.stats(db)))
        assert stats["total_amount_processed"] == "12.000001000", stats
        shown = json.loads(json.dumps(queries.show_job(db, by_name["many.edi"]), default=str))
        totals = [o["total_amount"] for o in shown["orders"]]
        assert "E" not in json.dumps(totals), totals


def test_an_amt_total_with_a_percentage_charge_applied_is_not_refused():
    """A charge given as a percentage (SAC06/07) is passed on for the ERP to
    apply; a total that applied it is no wrong price or lost line."""
    text = po_set("PCT-1", header="SAC*C*D240****3*10~").replace("CTT*1~", "CTT*1~AMT*TT*13.20~")
    assert [p.code for p in rules.validate(parsed(text))] == []


def test_held_two_divisions_post_one_po_number_each_and_a_merge_back_posts_neither_again(
    tmp_path, recording
):
    cfg = config(tmp_path, recording.url, SPLIT)
    mine = po_set("DIV-1")
    theirs = po_set("DIV-1", lines="PO1*1*9*EA*3.00**VP*X1~")
    for n, (gs02, text) in enumerate([("ACMEAPP", mine), ("OTHERAPP", theirs)], 1):
        path = tmp_path / f"d{n}.edi"
        path.write_bytes(x12(text, gs02=gs02, icn=f"00000000{n}"))
        assert process(cfg, path)["status"] == "succeeded"
    assert [b["sender_group"] for b in recording.bodies] == ["ACMEAPP", "OTHERAPP"]
    cfg = config(tmp_path, recording.url, ONE)
    path = tmp_path / "merged.edi"
    path.write_bytes(x12(mine, icn="000000003"))
    job = process(cfg, path)
    assert len(recording.bodies) == 2
    assert job["status"] == "duplicate", (job["status"], job["error"])


REST = '[partners.acmeapp]\nids = ["ZZ:ACME:ACMEAPP"]\n[partners.acme]\nids = ["ZZ:ACME"]\n'


@pytest.mark.parametrize("quantity", ["9", "4"], ids=["other-content", "same-content"])
def test_the_rest_of_a_split_isa_id_is_not_refused_for_a_divisions_po(
    tmp_path, recording, quantity
):
    """One division split off (``ZZ:ACME:ACMEAPP``), the rest of the ISA id
    another partner (``ZZ:ACME``, which OTHERAPP's groups fall to): a PO
    number both use is two partners' two orders. The order without a
    sender_group is compared with the division's posted one as if it had
    been posted before a split (pipeline: ``group is None`` compares all)."""
    cfg = config(tmp_path, recording.url, REST)
    first = tmp_path / "app.edi"
    first.write_bytes(x12(po_set("REST-1")))
    assert process(cfg, first)["status"] == "succeeded"
    other = tmp_path / "other.edi"
    other.write_bytes(
        x12(
            po_set("REST-1", lines=f"PO1*1*{quantity}*EA*3.00**VP*X1~"),
            gs02="OTHERAPP",
            icn="000000002",
        )
    )
    job = process(cfg, other)
    assert job["status"] == "succeeded", (job["status"], job["error"])
    assert len(recording.bodies) == 2


def test_a_resend_in_one_file_adding_a_charge_is_not_acknowledged_as_a_duplicate(
    tmp_path, recording
):
    """Two sets of one file, both read by today's code: the second adds
    50.00 freight. Either posted (as another order) or refused as other
    content (AK5 R), as any other difference is (round 17); never taken
    as the first with 997 A while its charge reaches no one."""
    cfg = config(tmp_path, recording.url)
    path = tmp_path / "two.edi"
    path.write_bytes(
        x12(po_set("SAME-1", "0001"), po_set("SAME-1", "0002", header="SAC*C*D240***5000~"))
    )
    job = process(cfg, path)
    charged = [b for b in recording.bodies if b.get("charges")]
    refused = "other content" in (job["error"] or "")
    assert charged or refused, (job["status"], job["error"], len(recording.bodies))


def test_held_a_job_resumed_after_a_sigkill_is_found_by_each_po(daemons, tmp_path):
    """The daemon SIGKILLed while the ERP holds the first of two POSTs (the
    running record written, search keys with it), started again: the job
    is ``interrupted`` and rerun; ``jobs search`` finds both by each PO
    number, one Idempotency-Key a PO."""
    with http_server() as server:
        erp = RecordingErp(server)
        try:
            daemon = daemons(erp.url)
            daemon.start()
            erp.gate.clear()
            uids.upload(
                daemon.inbox / "k.edi",
                x12(po_set("KILL-A1", "0001"), po_set("KILL-B2", "0002")),
            )
            poll_until(lambda: erp.requests, what="the ERP holds a POST")
            daemon.kill()
            erp.gate.set()
            daemon.start()
            poll_until(lambda: daemon.listing(daemon.done) == ["k.edi"], what="k.edi in done/")
            ids = {j["job_id"] for j in daemon.jobs()}  # the interrupted one and its rerun
            with opened(edi_config.load(daemon.config)) as db:
                for po in ("KILL-A1", "KILL-B2"):
                    found = queries.search_jobs(db, po_number=po)
                    assert {j["job_id"] for j in found} == ids, po
            assert {po: len(keys) for po, keys in erp.keys_by_po().items()} == {
                "KILL-A1": 1,
                "KILL-B2": 1,
            }
        finally:
            erp.gate.set()
