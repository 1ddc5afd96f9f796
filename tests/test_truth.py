"""Issue 10: the 997, the job and error.json tell the truth, order by order."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from werkzeug import Request, Response

from edi_inbox import orders, queries, rules
from edi_inbox.config import ConfigError, ErpSettings, PathSettings, RuleSettings, Settings, load
from edi_inbox.jobs import JobResult, JobStatus, OrderResult
from edi_inbox.outcomes import error_report
from edi_inbox.pipeline import Pipeline
from edi_inbox.x12 import X12Reader

ISA = (
    "ISA*00*          *00*          *ZZ*ACME           *01*123456789      "
    "*240102*1200*U*00401*000000321*{ack}*T*>~"
)


def order(n: int, quantity: str = "2", code: str = "850", price: str = "3.50") -> str:
    """An 850 (or another set code) with one line; total quantity × price."""
    if code != "850":
        return f"ST*{code}*{n:04d}~BIG*20240102*INV-{n}~SE*3*{n:04d}~"
    return (
        f"ST*850*{n:04d}~BEG*00*SA*PO-{n}**20240102~"
        f"PO1*1*{quantity}*EA*{price}**VP*X1~CTT*1~SE*5*{n:04d}~"
    )


def group(*sets: str, gs06: str = "77", fid: str = "PO") -> str:
    return (
        f"GS*{fid}*ACMEAPP*OURAPP*20240102*1200*{gs06}*X*004010~"
        + "".join(sets)
        + f"GE*{len(sets)}*{gs06}~"
    )


def doc(*groups: str, iea: str = "000000321", ack: str = "0") -> bytes:
    return (ISA.format(ack=ack) + "".join(groups) + f"IEA*{len(groups)}*{iea}~").encode()


def run(tmp_path: Path, data: bytes, name: str = "po.edi"):
    settings = Settings(paths=PathSettings(root=tmp_path))
    path = tmp_path / name
    path.write_bytes(data)
    with Pipeline(settings) as pipeline:
        job = pipeline.run(path)
    acks = {p.suffix: p.read_bytes() for p in sorted(settings.paths.acks.iterdir())}
    posted = sorted(p.name for p in settings.paths.outbox.iterdir()) if (
        settings.paths.outbox.exists()
    ) else []  # fmt: skip
    return job, acks, posted


def ak(ack: bytes) -> list[str]:
    """The AK and TA1 segments of an acknowledgment, as read back by our reader."""
    reader = X12Reader(io.BytesIO(ack))
    return ["*".join(s.elements) for s in reader.scanner if s.elements[0][:2] in ("AK", "TA")]


def test_cut_off_inside_a_set_gets_a_rejecting_997_and_ta1(tmp_path):
    """Case 1a: a file cut off inside its second set: nothing posted, the set
    read is AK5 R, AK9 R, and a TA1 R 023 (premature end of file)."""
    data = doc(group(order(1), order(2)))
    cut = data[: data.index(b"PO1*1*2*EA*3.50**VP*X1~CTT*1~SE*5*0002")]
    job, acks, posted = run(tmp_path, cut)
    assert job.status is JobStatus.FAILED and posted == []
    assert ak(acks[".997"]) == ["AK1*PO*77", "AK2*850*0001", "AK5*R", "AK2*850*0002",
                                "AK5*R*2", "AK9*R*2*2*0*3"]  # fmt: skip
    assert ak(acks[".TA1"]) == ["TA1*000000321*240102*1200*R*023"]
    assert all(o.status == "rejected" for o in job.orders)


def test_iea02_not_isa13_rejects_the_interchange(tmp_path):
    """Case 1a: IEA02 differs from ISA13: nothing posted; 997 rejects every set;
    TA1 R 001 (control numbers in header and trailer do not match)."""
    job, acks, posted = run(tmp_path, doc(group(order(1)), iea="000000999"))
    assert job.status is JobStatus.FAILED and posted == []
    assert ak(acks[".997"]) == ["AK1*PO*77", "AK2*850*0001", "AK5*R", "AK9*R*1*1*0"]
    assert ak(acks[".TA1"]) == ["TA1*000000321*240102*1200*R*001"]


def test_internal_error_never_gets_an_accepting_997(tmp_path, monkeypatch):
    """Case 1a: a bug in a step fails the job; the 997 rejects the set it did not post."""

    def broken(ts):
        raise RuntimeError("a bug")

    monkeypatch.setattr(orders, "from_transaction", broken)
    job, acks, posted = run(tmp_path, doc(group(order(1))))
    assert job.status is JobStatus.FAILED and posted == []
    assert ak(acks[".997"]) == ["AK1*PO*77", "AK2*850*0001", "AK5*R", "AK9*R*1*1*0"]
    assert job.orders == [] or job.orders[0].status == "rejected"


def test_one_zero_quantity_among_four_posts_the_other_three(tmp_path):
    """Cases 1b and 2: four 850s, one with quantity 0: three posted, one rejected;
    the job is partial; the 997 says AK9 P 4 4 3 and the bad set R with AK3/AK4."""
    job, acks, posted = run(tmp_path, doc(group(order(1), order(2, "0"), order(3), order(4))))
    assert job.status is JobStatus.PARTIAL and not job.success
    assert [o.status for o in job.orders] == ["posted", "rejected", "posted", "posted"]
    assert len(posted) == 3
    assert ak(acks[".997"]) == [
        "AK1*PO*77", "AK2*850*0001", "AK5*A", "AK2*850*0002", "AK3*PO1*3**8", "AK4*2**7",
        "AK5*R*5", "AK2*850*0003", "AK5*A", "AK2*850*0004", "AK5*A", "AK9*P*4*4*3",
    ]  # fmt: skip
    assert job.total_amount == Decimal("21.00")  # 3 × 7.00 posted
    report = error_report(job, "po.edi")
    assert [(o["po_number"], o["status"]) for o in report["orders"]] == [
        ("PO-1", "posted"), ("PO-2", "rejected"), ("PO-3", "posted"), ("PO-4", "posted"),
    ]  # fmt: skip
    assert "quantity '0' must be greater than 0" in report["orders"][1]["reason"]
    assert report["orders"][0]["erp_po_id"].startswith("outbox:")
    json.dumps(report)


def test_850_next_to_810_is_posted_and_the_810_rejected(tmp_path):
    """Cases 1c and 2: an 850 and an 810 in one interchange: the 850 is posted
    (AK5 A), the 810 rejected (AK5 R 1, not supported); no order is left pending."""
    data = doc(group(order(1)), group(order(2, code="810"), gs06="78", fid="IN"))
    job, _, posted = run(tmp_path, data)
    assert job.status is JobStatus.PARTIAL
    assert [o.status for o in job.orders] == ["posted"] and len(posted) == 1
    ack997 = sorted(p for p in (tmp_path / "acks").iterdir())
    texts = {p.name.split(".")[-2]: ak(p.read_bytes()) for p in ack997}
    assert texts["77"] == ["AK1*PO*77", "AK2*850*0001", "AK5*A", "AK9*A*1*1*1"]
    assert texts["78"] == ["AK1*IN*78", "AK2*810*0002", "AK5*R*1", "AK9*R*1*1*0"]
    report = error_report(job, "po.edi")
    assert report["orders"][1]["status"] == "rejected"
    assert "810 is not handled" in report["orders"][1]["reason"]


def test_all_sets_rejected_fails_the_job(tmp_path):
    """Case 2: a file whose every order breaks a rule is failed, nothing posted."""
    job, acks, posted = run(tmp_path, doc(group(order(1, "0"), order(2, "-1"))))
    assert job.status is JobStatus.FAILED and posted == []
    assert [o.status for o in job.orders] == ["rejected", "rejected"]
    assert ak(acks[".997"])[-1] == "AK9*R*2*2*0"


def test_repeated_st02_is_rejected_with_code_23(tmp_path):
    """Case 3c: a repeated ST02 in one group is an envelope error: AK5 R 23 for
    the second set, which is not posted; the first is posted."""
    second = order(2).replace("0002", "0001")
    job, acks, posted = run(tmp_path, doc(group(order(1), second)))
    assert job.status is JobStatus.PARTIAL and len(posted) == 1
    assert ak(acks[".997"]) == ["AK1*PO*77", "AK2*850*0001", "AK5*A", "AK2*850*0001",
                                "AK5*R*23", "AK9*P*2*2*1"]  # fmt: skip


def test_repeated_gs06_rejects_the_second_group_with_code_19(tmp_path):
    """Case 3c: a repeated GS06 in one interchange: the second group is AK9 R 19,
    its set R; the first group's 850 keeps its AK5 A (not the other's R)."""
    data = doc(group(order(1)), group(order(2, code="810"), fid="IN"))
    job, _, posted = run(tmp_path, data)
    assert job.status is JobStatus.PARTIAL and len(posted) == 1
    acks = [ak(p.read_bytes()) for p in sorted((tmp_path / "acks").iterdir())]
    assert ["AK1*PO*77", "AK2*850*0001", "AK5*A", "AK9*A*1*1*1"] in acks
    assert ["AK1*IN*77", "AK2*810*0002", "AK5*R", "AK9*R*1*1*0*19"] in acks


def test_ta1_when_isa14_asks(tmp_path):
    """A TA1 A 000 is written beside the 997 when ISA14 is 1 and the envelope is right."""
    job, acks, _ = run(tmp_path, doc(group(order(1)), ack="1"))
    assert job.status is JobStatus.SUCCEEDED
    assert ak(acks[".TA1"]) == ["TA1*000000321*240102*1200*A*000"]
    assert ak(acks[".997"])[-1] == "AK9*A*1*1*1"


def test_no_ta1_unless_asked_or_wrong(tmp_path):
    """ISA14 0 and a right envelope: a 997 only."""
    _, acks, _ = run(tmp_path, doc(group(order(1))))
    assert set(acks) == {".997"}


CORPUS = Path(__file__).parent / "data" / "corpus"


def priced_order(n: int, po1_price: str, ctps: str, amt: str = "") -> str:
    body = f"BEG*00*SA*PO-{n}**20240102~PO1*1*3*EA*{po1_price}**VP*X1~{ctps}CTT*1~{amt}"
    count = body.count("~") + 2
    return f"ST*850*{n:04d}~{body}SE*{count}*{n:04d}~"


def test_a_line_without_po104_takes_its_price_from_ctp_ucp(tmp_path):
    """Case 4: CTP02 UCP gives the unit price (CTP03) of a line without PO104;
    the RES (retail) CTP before it does not count."""
    sets = priced_order(1, "", "CTP*RS*RES*9.95~CTP**UCP*4.25~", "AMT*TT*12.75~")
    job, _, _posted = run(tmp_path, doc(group(sets)))
    assert job.status is JobStatus.SUCCEEDED, job.error
    (order,) = job.orders
    assert order.total_amount == Decimal("12.75")
    line = order.fields()["lines"][0]
    assert (line["unit_price"], line["price_source"]) == ("4.25", "CTP UCP")
    assert order.fields()["priced"] is True


def test_an_order_without_any_price_is_unpriced_not_zero(tmp_path):
    """Case 4: no PO104 and only a RES CTP: unit price and total null (not "0"),
    the AMT*TT check skipped, the ERP payload says priced: false."""
    sets = priced_order(1, "", "CTP*RS*RES*9.95~", "AMT*TT*12~")
    job, _, posted = run(tmp_path, doc(group(sets)))
    assert job.status is JobStatus.SUCCEEDED, job.error
    (order,) = job.orders
    assert order.total_amount is None and order.to_json()["total_amount"] is None
    sent = json.loads((tmp_path / "outbox" / posted[0]).read_text())
    assert sent["priced"] is False and sent["total_amount"] is None
    assert sent["lines"][0]["unit_price"] is None
    assert job.total_amount is None


def test_vics_orders_are_priced_from_ctp():
    """Case 4: the VICS corpus file prices every line in CTP*…*UCP only."""
    from edi_inbox.x12 import X12Reader as Reader

    with (CORPUS / "botsplugins__850-004010VICS-01.x12").open("rb") as fh:
        pos = [orders.from_transaction(ts) for ts in Reader(fh).transaction_sets()]
    assert [str(p.total_amount) for p in pos] == ["14565.58", "2147.81", "26567.5", "9934.79"]
    assert all(line.price_source == "CTP UCP" for p in pos for line in p.lines)


# --- duplicates by content (case 3) ---------------------------------------------


def isa(icn: str) -> str:
    return ISA.format(ack="0").replace("000000321", icn)


def file_of(*sets: str, icn: str = "000000321", gs06: str = "77") -> bytes:
    return (isa(icn) + group(*sets, gs06=gs06) + f"IEA*1*{icn}~").encode()


def purpose(n: int, beg01: str, quantity: str = "2", st: int | None = None) -> str:
    return order(st or n, quantity).replace(f"BEG*00*SA*PO-{st or n}*", f"BEG*{beg01}*SA*PO-{n}*")


@pytest.fixture
def db_pipeline(tmp_path, recorder):
    settings = Settings(paths=PathSettings(root=tmp_path))
    with Pipeline(settings, recorder) as pipeline:

        def process(data: bytes, name: str = "po.edi", **options):
            path = tmp_path / name
            path.write_bytes(data)
            return pipeline.run(path, **options)

        process.outbox = lambda: sorted(settings.paths.outbox.glob("*"))  # type: ignore[attr-defined]
        process.db = recorder.db  # type: ignore[attr-defined]
        yield process


def test_new_order_under_a_reused_isa13_is_posted_with_a_warning(db_pipeline):
    """Case 3a: a new order in a file whose sender, receiver and ISA13 match an
    earlier file's is posted (counters wrap); the reuse is logged as a warning."""
    first = db_pipeline(file_of(order(1)), "a.edi")
    with capture_logs() as logs:
        second = db_pipeline(file_of(order(2)), "b.edi")
    assert first.status is second.status is JobStatus.SUCCEEDED
    assert len(db_pipeline.outbox()) == 2
    (warning,) = [e for e in logs if e["event"] == "interchange_number_reused"]
    assert warning["earlier_job"] == first.job_id and warning["log_level"] == "warning"


def test_same_order_under_a_new_isa13_is_a_duplicate_not_posted(db_pipeline):
    """Case 3b: the same order resent under a new ISA13 is a duplicate pointing to
    the first job; it is not posted again; the 997 accepts it (posted before)."""
    first = db_pipeline(file_of(order(1)), "a.edi")
    again = db_pipeline(file_of(order(1), icn="000000400"), "b.edi")
    assert again.status is JobStatus.DUPLICATE and again.duplicate_of == first.job_id
    (dup,) = again.orders
    assert (dup.status, dup.duplicate_of, dup.erp_po_id) == (
        "duplicate", first.job_id, first.orders[0].erp_po_id,
    )  # fmt: skip
    assert len(db_pipeline.outbox()) == 1
    shown = queries.show_job(db_pipeline.db, again.job_id)
    assert [o["status"] for o in shown["orders"]] == ["duplicate"]


def test_a_cut_off_copy_of_a_file_processed_whole_leaves_its_answers_standing(db_pipeline):
    """An upload that stalled after its set (GE, IEA missing) while the partner
    sent it again whole under another name: the cut-off copy fails, unanswered
    (a TA1 and 997 rejecting it, written after the accepting ones, would be
    the partner's last word on an order the ERP holds). A cut-off file of
    other bytes under that ISA13 (numbers are reused) is answered, rejected."""
    whole = file_of(order(1))

    def acks(name: str) -> list[str]:
        folder = db_pipeline.outbox()[0].parent.parent / "acks"
        return sorted(p.name for p in folder.glob(f"{name}.*"))

    assert db_pipeline(whole, "PO_1835.edi").status is JobStatus.SUCCEEDED
    cut = db_pipeline(whole[:-20], "PO_1830.edi")
    assert cut.status is JobStatus.FAILED and "truncated" in cut.error
    (step,) = [s for s in cut.steps if s.step_name == "acknowledge"]
    assert "a cut-off copy of the file job" in step.data["skipped"]
    assert acks("PO_1830.edi") == [] and len(acks("PO_1835.edi")) == 1
    other = db_pipeline(file_of(order(2))[:-20], "PO_1840.edi")
    assert other.status is JobStatus.FAILED and len(acks("PO_1840.edi")) == 2  # TA1, 997


def test_two_different_orders_never_share_a_key(db_pipeline):
    """Case 3c: two different 850s with one ST02 and one PO number (in two groups):
    their keys differ; the second is rejected as a changed copy, never answered
    with the first one's ERP id."""
    other = order(1, "5")
    job = db_pipeline(
        (isa("000000321") + group(order(1)) + group(other, gs06="78") + "IEA*2*000000321~").encode()
    )
    a, b = job.orders
    assert a.idempotency_key != b.idempotency_key
    assert (a.status, b.status) == ("posted", "rejected") and b.erp_po_id is None
    assert "appears earlier in this file with other content" in b.error
    assert job.status is JobStatus.PARTIAL and len(db_pipeline.outbox()) == 1


def test_four_identical_sets_post_one_order_and_count_it_once(db_pipeline):
    """Case 3d: four identical orders in one file: one posted, three duplicates;
    the job's total and stats count 7.00 once, not four times."""
    job = db_pipeline(file_of(*(purpose(1, "00", st=n) for n in range(1, 5))))
    assert [o.status for o in job.orders] == ["posted"] + ["duplicate"] * 3
    assert job.status is JobStatus.SUCCEEDED
    assert job.total_amount == Decimal("7.00")
    assert len(db_pipeline.outbox()) == 1
    assert queries.stats(db_pipeline.db)["total_amount_processed"] == "7.00"


def test_changed_original_is_rejected_naming_the_earlier_job(db_pipeline):
    """Case 3: the same sender, PO number and BEG01 00 with other content: rejected,
    naming the job that posted the first; not posted."""
    first = db_pipeline(file_of(order(1)), "a.edi")
    changed = db_pipeline(file_of(order(1, "9"), icn="000000400"), "b.edi")
    assert changed.status is JobStatus.FAILED
    assert first.job_id in changed.orders[0].error
    assert len(db_pipeline.outbox()) == 1
    ack = (db_pipeline.outbox()[0].parent.parent / "acks").glob("b.edi*.997")
    assert ak(next(ack).read_bytes())[-2:] == ["AK5*R", "AK9*R*1*1*0"]


def with_charge(set_: str, n: int) -> str:
    """``set_`` with a header SAC (freight, 5.00) after its BEG, its SE count one more."""
    beg = set_.index("~", set_.index("BEG*")) + 1
    return (set_[:beg] + "SAC*C*D240***500~" + set_[beg:]).replace(
        f"SE*5*{n:04d}~", f"SE*6*{n:04d}~"
    )


@pytest.mark.parametrize("first, again", [(False, True), (True, False)], ids=["added", "dropped"])
def test_a_resend_that_adds_or_drops_a_charge_is_other_content(db_pipeline, first, again):
    """An original sent again under a new ISA13 with a SAC charge added (or
    dropped): other content, rejected naming the job that posted it, never
    taken for a duplicate the ERP already has (a field only one side has was
    not compared: the charge was lost, and the 997 accepted it)."""
    sets = [with_charge(order(1), 1) if charged else order(1) for charged in (first, again)]
    posted = db_pipeline(file_of(sets[0]), "a.edi")
    resent = db_pipeline(file_of(sets[1], icn="000000400"), "b.edi")
    assert posted.status is JobStatus.SUCCEEDED
    assert ("charges" in posted.orders[0].fields()) is first
    assert resent.status is JobStatus.FAILED, resent.orders[0].error
    assert f"posted by job {posted.job_id} with other content" in resent.orders[0].error
    assert len(db_pipeline.outbox()) == 1
    ack = (db_pipeline.outbox()[0].parent.parent / "acks").glob("b.edi*.997")
    assert ak(next(ack).read_bytes())[-2:] == ["AK5*R", "AK9*R*1*1*0"]


def test_replace_and_cancel_posted_once_each_07_never(db_pipeline):
    """Case 3: BEG01 05 (replace) and 01 (cancellation) of a posted order are posted
    as what they are, once each (sent again: duplicates); 07 is never posted."""
    db_pipeline(file_of(order(1)), "a.edi")
    replace = db_pipeline(file_of(purpose(1, "05", "3")), "b.edi")
    cancel = db_pipeline(file_of(purpose(1, "01", "3")), "c.edi")
    assert replace.status is cancel.status is JobStatus.SUCCEEDED
    sent = [json.loads(p.read_text())["purpose"] for p in db_pipeline.outbox()]
    assert sorted(sent) == ["00", "01", "05"]
    again = db_pipeline(file_of(purpose(1, "05", "3"), icn="000000500"), "d.edi")
    assert again.status is JobStatus.DUPLICATE
    seven = db_pipeline(file_of(purpose(1, "07")), "e.edi")
    assert seven.orders[0].status == "duplicate" and len(db_pipeline.outbox()) == 3
    lone = db_pipeline(file_of(purpose(2, "07")), "f.edi")
    assert lone.orders[0].status == "rejected" and "no original" in lone.orders[0].error


def test_each_new_replace_is_the_orders_next_version(db_pipeline):
    """An order changed twice (BEG01 05, then 05 with other content): each
    replace is posted, once; the second sent again is a duplicate; an
    original with other content is still rejected."""
    db_pipeline(file_of(order(1)), "a.edi")
    first = db_pipeline(file_of(purpose(1, "05", "3")), "b.edi")
    second = db_pipeline(file_of(purpose(1, "05", "4"), icn="000000501"), "c.edi")
    assert first.status is second.status is JobStatus.SUCCEEDED, second.orders[0].error
    sent = [json.loads(p.read_text()) for p in db_pipeline.outbox()]
    assert sorted((d["purpose"], d["lines"][0]["quantity"]) for d in sent) == [
        ("00", "2"),
        ("05", "3"),
        ("05", "4"),
    ]
    again = db_pipeline(file_of(purpose(1, "05", "4"), icn="000000502"), "d.edi")
    assert again.status is JobStatus.DUPLICATE
    changed = db_pipeline(file_of(order(1, "9"), icn="000000503"), "e.edi")
    assert changed.status is JobStatus.FAILED and len(db_pipeline.outbox()) == 3


def test_numbers_written_another_way_are_the_same_order(db_pipeline):
    """A resend writing ``2.0`` × ``3.5`` for ``2`` × ``3.50`` is a duplicate,
    in a later file or later in the same one: posted once, acknowledged A."""
    db_pipeline(file_of(order(1)), "a.edi")
    written = order(1, "2.0", price="3.5")
    again = db_pipeline(file_of(written, icn="000000601"), "b.edi")
    assert again.status is JobStatus.DUPLICATE, again.orders[0].error
    both = db_pipeline(
        file_of(order(2), written.replace("PO-1", "PO-2").replace("0001", "0003"), icn="000000602"),
        "c.edi",
    )
    assert [o.status for o in both.orders] == ["posted", "duplicate"], both.orders[1].error
    assert both.status is JobStatus.SUCCEEDED and len(db_pipeline.outbox()) == 2


def test_a_test_interchanges_order_is_not_the_production_order(db_pipeline):
    """The same order as a test (ISA15 T), then for real (P): both posted,
    under two keys, each flagged by its usage; each sent again: duplicates."""
    test = db_pipeline(file_of(order(1)), "t.edi")
    real_file = file_of(order(1), icn="000000701").replace(b"*T*>~", b"*P*>~", 1)
    real = db_pipeline(real_file, "p.edi")
    assert test.status is real.status is JobStatus.SUCCEEDED, real.orders[0].error
    assert test.orders[0].idempotency_key != real.orders[0].idempotency_key
    sent = sorted(json.loads(p.read_text())["usage"] for p in db_pipeline.outbox())
    assert sent == ["P", "T"]
    again = db_pipeline(real_file.replace(b"000000701", b"000000702"), "p2.edi")
    assert again.status is JobStatus.DUPLICATE and again.duplicate_of == real.job_id


def test_retry_never_posts_an_accepted_order_again(db_pipeline):
    """Case 2: a partial job retried: the order posted the first time is not
    posted again (nor called a duplicate of its own job); the other is judged
    again. Its amount stays the first job's: counted once in ``stats``."""
    data = file_of(order(1), order(2, "0"))
    first = db_pipeline(data, "a.edi")
    assert first.status is JobStatus.PARTIAL
    retry = db_pipeline(data, "a.edi", retry_of=first.job_id)
    assert [o.status for o in retry.orders] == ["posted", "rejected"]
    assert retry.orders[0].erp_po_id == first.orders[0].erp_po_id
    assert len(db_pipeline.outbox()) == 1
    assert (first.total_amount, retry.total_amount) == (Decimal("7.00"), None)
    assert_totals_are_their_orders(db_pipeline.db, "7.00")


def assert_totals_are_their_orders(db, amount: str) -> None:
    """Each job's total is the sum of the posted orders on its record, and
    ``stats`` sums those of the counted jobs (succeeded, partial): ``amount``."""
    for job in queries.search_jobs(db, limit=100):
        shown = queries.show_job(db, job["job_id"])
        posted = [Decimal(o["total_amount"]) for o in shown["orders"] if o["status"] == "posted"]
        total = shown["total_amount"]
        assert (Decimal(total) if total else Decimal(0)) == sum(posted, Decimal(0)), shown
    assert queries.stats(db)["total_amount_processed"] == amount


def test_a_partial_job_retried_posts_the_rest_and_counts_each_order_once(
    tmp_path, recorder, httpserver
):
    """The ERP refuses a file's second order (422), then takes it when the
    operator retries the partial job: the retry posts only that one. The
    amounts: 7.00 the first job's, 7.00 the retry's, 14.00 posted in all
    (the retry used to count the first order again: 21.00)."""
    refused = []

    def erp(request: Request) -> Response:
        po_number = json.loads(request.data)["po_number"]
        if po_number == "PO-2" and not refused:
            refused.append(po_number)
            return Response("no", 422)
        return Response(json.dumps({"id": f"E-{po_number}"}), 201, content_type="application/json")

    httpserver.expect_request("/orders", method="POST").respond_with_handler(erp)
    erp_settings = ErpSettings(url=httpserver.url_for("/orders"), backoff_jitter_seconds=0.0)
    settings = Settings(paths=PathSettings(root=tmp_path), erp=erp_settings)
    path = tmp_path / "a.edi"
    path.write_bytes(file_of(order(1), order(2)))
    with Pipeline(settings, recorder) as pipeline:
        first = pipeline.run(path)
        retry = pipeline.run(path, retry_of=first.job_id)
    assert first.status is JobStatus.PARTIAL and retry.status is JobStatus.SUCCEEDED
    assert [o.erp_po_id for o in retry.orders] == ["E-PO-1", "E-PO-2"]
    assert len(httpserver.log) == 3  # PO-1, PO-2 refused, PO-2
    assert first.total_amount == retry.total_amount == Decimal("7.00")
    assert_totals_are_their_orders(recorder.db, "14.00")


def first_and_resend(tmp_path, recorder, httpserver, resend: bytes):
    """Jobs of ``file_of(order(1))`` (a.edi) then ``resend`` (b.edi), each
    order given two attempts at the test ERP."""
    erp_settings = ErpSettings(
        url=httpserver.url_for("/orders"),
        max_attempts=2,
        backoff_initial_seconds=0.01,
        backoff_jitter_seconds=0.0,
    )
    settings = Settings(paths=PathSettings(root=tmp_path), erp=erp_settings)
    (tmp_path / "a.edi").write_bytes(file_of(order(1)))
    (tmp_path / "b.edi").write_bytes(resend)
    with Pipeline(settings, recorder) as pipeline:
        return pipeline.run(tmp_path / "a.edi"), pipeline.run(tmp_path / "b.edi")


def test_a_resend_carries_the_body_its_key_was_first_sent_with(tmp_path, recorder, httpserver):
    """The ERP takes the order but its answers are lost (503 until the
    attempts run out: the job fails), and it refuses a key sent with another
    body (422, as the IETF Idempotency-Key draft asks). The partner resends
    the order under a new ISA13: the same key goes with the first body, the
    ERP answers with the order it has, and the record keeps that body."""
    first_bodies: dict[str, bytes] = {}

    def erp(request: Request) -> Response:
        key = request.headers["Idempotency-Key"]
        if first_bodies.setdefault(key, request.data) != request.data:
            return Response("this key came with another body", 422)
        if len(httpserver.log) < 2:  # the answers lost, the order kept
            return Response("busy", 503)
        return Response(json.dumps({"id": "E-1"}), 201, content_type="application/json")

    httpserver.expect_request("/orders", method="POST").respond_with_handler(erp)
    first, resent = first_and_resend(
        tmp_path, recorder, httpserver, file_of(order(1), icn="000000400")
    )
    assert first.status is JobStatus.FAILED and resent.status is JobStatus.SUCCEEDED
    assert len(httpserver.log) == 3 and len({r.data for r, _ in httpserver.log}) == 1
    (posted,) = queries.load_job(recorder.db, resent.job_id).orders
    assert (posted.erp_po_id, posted.payload["interchange_control_number"]) == ("E-1", "000000321")


def test_a_resend_with_a_charge_never_takes_the_unanswered_body_without_it(
    tmp_path, recorder, httpserver
):
    """As above, but the resend adds a SAC charge: it is other content, posted
    as the partner sent it under its own key — never the first body (without
    the charge) under the first key, which lost the charge while the job and
    its 997 said the order was taken."""
    httpserver.expect_request("/orders", method="POST").respond_with_handler(
        lambda request: (
            Response("busy", 503)
            if len(httpserver.log) < 2
            else Response(json.dumps({"id": f"E-{len(httpserver.log)}"}), 201)
        )
    )
    resend = file_of(with_charge(order(1), 1), icn="000000400")
    first, resent = first_and_resend(tmp_path, recorder, httpserver, resend)
    assert first.status is JobStatus.FAILED and resent.status is JobStatus.SUCCEEDED
    (a, _), (b, _), (last, _) = httpserver.log
    assert a.headers["Idempotency-Key"] == b.headers["Idempotency-Key"]
    assert last.headers["Idempotency-Key"] != a.headers["Idempotency-Key"]
    assert json.loads(last.data)["charges"][0]["code"] == "D240"


def test_an_order_carried_through_two_crashes_is_the_last_run_s(db_pipeline, recorder):
    """Job A posts the order and dies; B, retrying A, dies before its end too;
    C, retrying B, ends. The order is C's: posted, in C's total and record,
    counted once (it used to be a duplicate of A in C, counted nowhere)."""
    data = file_of(order(1))
    (ts,) = X12Reader(io.BytesIO(data)).transaction_sets()
    po = orders.from_transaction(ts)
    key = orders.idempotency_key(po)
    a = JobResult(job_id="job-a", file_name="a.edi", status=JobStatus.RUNNING)
    recorder.job_started(a)
    posted = OrderResult("PO-1", key, 1, Decimal("7.00"), None, "posted", "E-1")
    posted.payload = po.to_json()
    recorder.order_accepted(a, posted)
    b = JobResult(job_id="job-b", file_name="a.edi", status=JobStatus.RUNNING, retry_of="job-a")
    b.orders.append(OrderResult("PO-1", key, 1, Decimal("7.00"), None))
    started = recorder.job_started(b)
    assert started.accepted == {key: "E-1"} and not started.counted
    c = db_pipeline(data, "a.edi", retry_of="job-b")
    assert c.status is JobStatus.SUCCEEDED and c.orders[0].erp_po_id == "E-1"
    assert c.total_amount == Decimal("7.00") and db_pipeline.outbox() == []
    assert [o["erp_po_id"] for o in queries.show_job(recorder.db, c.job_id)["orders"]] == ["E-1"]
    assert_totals_are_their_orders(recorder.db, "7.00")


# --- rule levels (case 5) -----------------------------------------------------------


def miscounted(n: int = 1) -> str:
    """An 850 of two lines whose CTT01 says 5 (as real files do)."""
    return (
        f"ST*850*{n:04d}~BEG*00*SA*PO-{n}**20240102~PO1*1*2*EA*3.50**VP*X1~"
        f"PO1*2*1*EA*1.00**VP*X2~CTT*5~SE*6*{n:04d}~"
    )


def test_a_warned_rule_posts_the_order_and_says_so(db_pipeline):
    """Case 5: CTT01 ≠ number of PO1 is a warning by default: the order is posted,
    the warning kept on the order and in the job's log (jobs show), the 997 says
    AK5 E with the AK3/AK4 noted and AK9 E."""
    job = db_pipeline(file_of(miscounted()))
    assert job.status is JobStatus.SUCCEEDED and len(db_pipeline.outbox()) == 1
    (order,) = job.orders
    assert order.status == "posted"
    assert order.warnings == ["CTT01 says 5 line items but the order has 2 PO1 segments"]
    shown = queries.show_job(db_pipeline.db, job.job_id)
    assert "CTT01 says 5" in shown["orders"][0]["error"]
    assert any(e["message"] == "rule_warning" for e in shown["logs"])
    ack = next((db_pipeline.outbox()[0].parent.parent / "acks").glob("*.997")).read_bytes()
    assert ak(ack) == ["AK1*PO*77", "AK2*850*0001", "AK3*CTT*5**8", "AK4*1**7", "AK5*E",
                       "AK9*E*1*1*1"]  # fmt: skip


@pytest.mark.parametrize(("level", "status", "ak5"), [("error", "rejected", "AK5*R*5"),
                                                      ("off", "posted", "AK5*A")])  # fmt: skip
def test_rule_levels_error_and_off(tmp_path, level, status, ak5):
    """Case 5: [rules] line_count_mismatch = error rejects the order; off skips the check."""
    settings = Settings(
        paths=PathSettings(root=tmp_path), rules=RuleSettings(line_count_mismatch=level)
    )
    path = tmp_path / "po.edi"
    path.write_bytes(file_of(miscounted()))
    with Pipeline(settings) as pipeline:
        job = pipeline.run(path)
    assert job.orders[0].status == status and job.orders[0].warnings == []
    ack = next(settings.paths.acks.glob("*.997")).read_bytes()
    assert ak5 in ak(ack)


def test_rule_levels_are_checked_when_loaded(tmp_path):
    """Case 5: a level that is not error/warn/off, or a rule that is not levelled, names the key."""
    config = tmp_path / "edi-inbox.toml"
    config.write_text('[rules]\ntotal_mismatch = "maybe"\n')
    with pytest.raises(ConfigError, match="total_mismatch' must be one of error, warn, off"):
        load(config, {})
    config.write_text('[rules]\nnot_numeric = "off"\n')  # syntax: always an error
    with pytest.raises(ConfigError, match="not_numeric"):
        load(config, {})
    config.write_text('[rules]\ntotal_mismatch = "warn"\n')
    assert load(config, {}).rules.total_mismatch == "warn"


def test_a_space_terminator_is_named_as_the_cause(tmp_path):
    """Case 7: an ISA that declares a space as the segment terminator, with names
    holding spaces: the error says the terminator is the problem, first."""
    text = (ISA.format(ack="0")[:-1] + " ").replace("~", " ")
    body = (
        "GS*PO*ACMEAPP*OURAPP*20240102*1200*77*X*004010 ST*850*0001 "
        "BEG*00*SA*PO-1**20240102 N1*VN*Acme Widget Co PO1*1*2*EA*3.50**VP*X1 CTT*1 "
        "SE*6*0001 GE*1*77 IEA*1*000000321 "
    )
    job, acks, posted = run(tmp_path, (text + body).encode())
    assert job.status is JobStatus.FAILED and posted == []
    assert job.error.startswith("segment ISA: the ISA declares ' ' as the segment terminator")
    assert "'Widget' was read as a segment ID" in job.error
    assert "AK5*R*4*5" in ak(acks[".997"])


def test_a_release_is_not_a_changed_copy_of_its_blanket_order(db_pipeline):
    """Case 3: a release (BEG04) against a blanket order shares its BEG03: the
    release number is part of the identity, so both are posted."""
    blanket = order(1)
    release = order(2).replace("BEG*00*SA*PO-2**", "BEG*00*RL*PO-1*R1*")
    job = db_pipeline(file_of(blanket, release))
    assert [o.status for o in job.orders] == ["posted", "posted"]


def test_a_partial_file_goes_to_failed_with_an_error_json_per_order(tmp_path):
    """Case 2: a partial job's file is filed in failed/ (DESIGN: some orders
    rejected) with NAME.error.json listing each order posted or not, and why."""
    import time

    from edi_inbox.outcomes import Mover

    job, _, _ = run(tmp_path, doc(group(order(1), order(2, "0"))))
    paths = Settings(paths=PathSettings(root=tmp_path)).paths
    paths.create()
    claimed = tmp_path / "processing" / "host"
    claimed.mkdir(parents=True)
    (claimed / "po.edi.job").write_bytes(b"the file")
    mover = Mover(paths, clock=time.monotonic)
    assert mover.finish(claimed / "po.edi.job", "po.edi", job) is None
    report = json.loads((paths.failed / "po.edi.error.json").read_text())
    assert report["status"] == "partial"
    assert [(o["po_number"], o["status"]) for o in report["orders"]] == [
        ("PO-1", "posted"), ("PO-2", "rejected"),
    ]  # fmt: skip
    assert "1 of 2 transaction sets not posted" in report["error"]


# --- acknowledgements the partner sends ------------------------------------------

ACK_997 = "ST*997*0001~AK1*PR*12~AK9*A*1*1*1~SE*4*0001~"


def test_a_partners_acknowledgements_are_neither_posted_nor_answered(db_pipeline, tmp_path):
    """A 997 group beside a PO group: the order posted, one 997 (for the PO
    group), the job succeeded. A file of 997s alone, or of TA1s alone (ISA14
    1): succeeded, no order, no 997, no TA1 answering a TA1. An empty
    interchange still fails."""
    isa1 = ISA.format(ack="1")
    both = isa1 + group(order(1)) + group(ACK_997, gs06="90", fid="FA") + "IEA*2*000000321~"
    job = db_pipeline(both.encode(), "both.edi")
    assert job.status is JobStatus.SUCCEEDED and [o.status for o in job.orders] == ["posted"]
    acks = sorted(p.name for p in (tmp_path / "acks").iterdir())
    assert acks == ["both.edi.000000321.TA1", "both.edi.77.997"], acks
    assert [s["transaction_set"] for s in job.sets] == ["850"]
    acks_only = isa1 + group(ACK_997, gs06="91", fid="FA") + "IEA*1*000000321~"
    job = db_pipeline(acks_only.replace("000000321", "000000322").encode(), "fa.edi")
    assert job.status is JobStatus.SUCCEEDED and job.orders == [] and job.error is None
    assert [p.suffix for p in (tmp_path / "acks").glob("fa.edi*")] == [".TA1"]  # asked by ISA14
    ta1 = isa1 + "TA1*000004711*240101*1200*A*000~IEA*0*000000321~"
    job = db_pipeline(ta1.replace("000000321", "000000323").encode(), "ta1.edi")
    assert job.status is JobStatus.SUCCEEDED and job.error is None
    assert not [p for p in (tmp_path / "acks").iterdir() if p.name.startswith("ta1.edi")]
    empty = ISA.format(ack="0").replace("000000321", "000000324") + "IEA*0*000000324~"
    job = db_pipeline(empty.encode(), "empty.edi")
    assert job.status is JobStatus.FAILED and "holds no transaction set" in job.error


def test_each_refused_segment_gets_its_own_ak304(tmp_path):
    """AK304 says why a segment is wrong: a segment id no 850 has (``P01``
    typed for ``PO1``) is 6, not in the set; a BEG or PO1 that is not there
    is 3, mandatory segment missing, told at the position it belonged (the
    segment found there keeps its own AK3); no code of a whole set's
    (AK5 3 is "control numbers do not match") for a missing segment."""
    typo = order(1).replace("CTT*1~SE*5*", "P01*2*5*EA*3**VP*X2~CTT*1~SE*6*")
    no_beg = "ST*850*0002~PO1*1*2*EA*3.50**VP*X1~CTT*1~SE*4*0002~"
    no_beg_bad_line = "ST*850*0003~PO1*1*0*EA*3.50**VP*X1~CTT*1~SE*4*0003~"
    no_lines = "ST*850*0004~BEG*00*SA*PO-4**20240102~CTT*0~SE*4*0004~"
    no_lines_no_ctt = "ST*850*0005~BEG*00*SA*PO-5**20240102~SE*3*0005~"
    sets = (typo, no_beg, no_beg_bad_line, no_lines, no_lines_no_ctt)
    job, acks, posted = run(tmp_path, doc(group(*sets)))
    assert job.status is JobStatus.FAILED and posted == []
    assert ak(acks[".997"]) == [
        "AK1*PO*77", "AK2*850*0001", "AK3*P01*4**6", "AK5*R*5",
        "AK2*850*0002", "AK3*BEG*2**3", "AK5*R*5",
        "AK2*850*0003", "AK3*BEG*2**3", "AK3*PO1*2**8", "AK4*2**7", "AK5*R*5",
        "AK2*850*0004", "AK3*PO1*3**3", "AK5*R*5",
        "AK2*850*0005", "AK3*PO1*3**3", "AK5*R*5", "AK9*R*5*5*0",
    ]  # fmt: skip


def test_what_a_line_s_currency_or_price_unit_cannot_say_is_refused_in_the_997(tmp_path):
    """A segment after the CTT (AK304 2), a line priced in another currency
    than the order (AK4 on CUR02), a CTP price per case on a line in eaches
    (AK4 on CTP05): each set refused, the one beside them posted."""
    misplaced = order(1).replace("CTT*1~SE*5*", "CTT*1~CUR*BY*EUR~SE*6*")
    euro_line = order(2).replace("VP*X1~", "VP*X1~CUR*BY*EUR~").replace("SE*5*", "SE*6*")
    euro_line = euro_line.replace("20240102~", "20240102~CUR*BY*USD~").replace("SE*6*", "SE*7*")
    per_case = order(3, price="").replace("VP*X1~", "VP*X1~CTP**UCP*48.00*1*CA~")
    per_case = per_case.replace("SE*5*", "SE*6*")
    job, acks, posted = run(tmp_path, doc(group(misplaced, euro_line, per_case, order(4))))
    assert job.status is JobStatus.PARTIAL and len(posted) == 1
    assert ak(acks[".997"]) == [
        "AK1*PO*77", "AK2*850*0001", "AK3*CUR*5**2", "AK5*R*5",
        "AK2*850*0002", "AK3*CUR*5**8", "AK4*2**7", "AK5*R*5",
        "AK2*850*0003", "AK3*CTP*4**8", "AK4*5**7", "AK5*R*5",
        "AK2*850*0004", "AK5*A", "AK9*P*4*4*1",
    ]  # fmt: skip
    reasons = [o.error for o in job.orders]
    assert "segment CUR (segment" in reasons[0] and "after the CTT an 850" in reasons[0]
    assert "priced in 'EUR' (CUR), the order's (CUR) in 'USD'" in reasons[1]
    assert "is per CA (CTP05), the line orders EA (PO103)" in reasons[2]


def test_a_real_partner_s_currency_after_each_line_reaches_the_erp():
    """edinet's issue135 850 has no header CUR and ``CUR*BY*USD`` after each
    PO1: nothing refused, each line's JSON says USD."""
    data = (CORPUS / "edinet__x12.850.issue135.edi").read_bytes()
    for ts in X12Reader(io.BytesIO(data)).transaction_sets():
        po = orders.from_transaction(ts)
        assert [line.to_json()["currency"] for line in po.lines] == ["USD"] * len(po.lines)
        assert len(po.lines) >= 6 and rules.validate(po) == []


def test_one_po_number_to_two_receivers_in_one_file(tmp_path):
    """One file, three interchanges: PO-1 to receiver 123456789, PO-1 with
    other lines to 987654321 (a supplier's other division: its own order,
    posted), then PO-1 as the first again to 987654321 (a misdirected copy:
    a duplicate, not posted)."""
    other = order(1, quantity="5")
    to_b = ISA.replace("123456789      ", "987654321      ")
    data = b"".join(
        (isa.format(ack="0") + group(body) + f"IEA*1*{icn}~").encode()
        for isa, body, icn in (
            (ISA, order(1), "000000321"),
            (to_b.replace("000000321", "000000322"), other, "000000322"),
            (to_b.replace("000000321", "000000323"), order(1), "000000323"),
        )
    )
    job, _, posted = run(tmp_path, data)
    assert [o.status for o in job.orders] == ["posted", "posted", "duplicate"]
    assert len(posted) == 2 and job.status is JobStatus.SUCCEEDED


def test_every_broken_segment_of_a_refused_set_is_named(tmp_path):
    """A set with three broken segments the order reads (BEG02 empty, a
    PO103 too long, an eleventh line DTM) and a good one beside it: the 997
    names each broken segment with its AK3/AK4 (not only the first), the
    good set is posted."""
    dtms = "DTM*002*20240110~" * 11
    broken = (
        f"ST*850*0001~BEG*00**PO-1**20240102~PO1*1*2*EACH*3.50**VP*X1~{dtms}CTT*1~SE*{5 + 11}*0001~"
    )
    _, acks, posted = run(tmp_path, doc(group(broken, order(2))))
    assert len(posted) == 1
    assert ak(acks[".997"]) == [
        "AK1*PO*77",
        "AK2*850*0001",
        "AK3*BEG*2**8",
        "AK4*2**1",
        "AK3*PO1*3**8",
        "AK4*3**5*EACH",
        "AK3*DTM*14**5",
        "AK5*R*5",
        "AK2*850*0002",
        "AK5*A",
        "AK9*P*2*2*1",
    ]


def test_a_refused_set_is_judged_by_the_rules_beside_its_syntax(tmp_path):
    """A set refused for a REF02 too long is judged by the rules as well:
    its impossible DTM02 (AK4 8) and its repeated PO101 (a warning by
    default: noted as one) are named beside the REF, so a partner who mends
    the REF is not refused again. Its CTT counting 5 lines of 2 is not: a
    rule that judges segments against each other waits for the syntax to
    hold (``rules.ACROSS``)."""
    line = "PO1*1*2*EA*3.50**VP*X1~"
    broken = (
        f"ST*850*0001~BEG*00*SA*PO-1**20240102~REF*ZZ*{'X' * 31}~DTM*002*20240231~"
        f"{line}{line}CTT*5~SE*8*0001~"
    )
    job, acks, posted = run(tmp_path, doc(group(broken)))
    assert job.status is JobStatus.FAILED and posted == []
    assert ak(acks[".997"]) == [
        "AK1*PO*77",
        "AK2*850*0001",
        "AK3*REF*3**8",
        "AK4*2**5*" + "X" * 31,
        "AK3*DTM*4**8",
        "AK4*2**8",
        "AK3*PO1*6**8",
        "AK4*1**7",
        "AK5*R*5",
        "AK9*R*1*1*0",
    ]
    assert "warning: " in job.error and "CTT" not in job.error, job.error
