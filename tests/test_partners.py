"""Trading partners: [partners.NAME] sections, resolution of a file's sender,
per-partner rule levels and acknowledgements, and the partner on every job."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_job, record

from edi_inbox import config, queries, store
from edi_inbox.cli import main
from edi_inbox.config import PartnerId
from edi_inbox.errors import ConfigError
from edi_inbox.jobs import JobStatus

from helpers import make_po, sent_by

PARTNERS = """
[partners]
unknown = "reject"
[partners.acme]
ids = ["ZZ:ACME FOODS", "01:123456789:WEST"]
ack = "none"
[partners.acme.rules]
line_count_mismatch = "error"
[partners.bolt]
ids = ["08:AAAAAAAAAA"]
ta1 = "always"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edi-inbox.toml"
    path.write_text(text)
    return path


# --- configuration ---------------------------------------------------------


def test_partner_sections_are_read(tmp_path):
    """Each [partners.NAME] gives its ids, ack, ta1 and rule levels over [rules]."""
    settings = config.load(write(tmp_path, PARTNERS), {})
    assert settings.partners.unknown == "reject"
    acme = settings.partners.get("acme")
    bolt = settings.partners.get("bolt")
    assert acme is not None and bolt is not None
    assert acme.ids == (PartnerId("ZZ", "ACME FOODS"), PartnerId("01", "123456789", "WEST"))
    assert (acme.ack, acme.ta1, bolt.ack, bolt.ta1) == ("none", "on-request", "997", "always")
    assert acme.rules.line_count_mismatch == "error"
    assert acme.rules.total_mismatch == "error"  # the rest as [rules] says
    assert bolt.rules == settings.rules


def test_partner_rules_start_from_the_rules_section(tmp_path):
    """A partner's levels override [rules] key by key, not the built-in defaults."""
    text = '[rules]\nduplicate_line_number = "off"\n' + PARTNERS
    settings = config.load(write(tmp_path, text), {})
    acme = settings.partners.get("acme")
    assert acme is not None and acme.rules.duplicate_line_number == "off"


def test_no_partners_accepts_everyone():
    """Without [partners] the policy is accept and no partner is known."""
    settings = config.load(None, {"XDG_STATE_HOME": "/nonexistent"})
    assert settings.partners == config.PartnersSettings()
    assert settings.partners.unknown == "accept"


def test_ack_defaults_follow_the_ack_section(tmp_path):
    """[ack] enabled = false makes a partner's default ack "none"."""
    text = (
        '[ack]\nenabled = false\n[partners.x]\nids = ["ZZ:X"]\n'
        '[partners.y]\nids = ["ZZ:Y"]\nack = "997"\n'
    )
    settings = config.load(write(tmp_path, text), {})
    assert [p.ack for p in settings.partners.partners] == ["none", "997"]


def test_unknown_policy_from_the_environment(tmp_path):
    """EDI_INBOX_PARTNERS_UNKNOWN sets the policy, and a bad value names the variable."""
    settings = config.load(None, {"EDI_INBOX_PARTNERS_UNKNOWN": "reject"})
    assert settings.partners.unknown == "reject"
    with pytest.raises(ConfigError, match=r"EDI_INBOX_PARTNERS_UNKNOWN.*accept, reject"):
        config.load(None, {"EDI_INBOX_PARTNERS_UNKNOWN": "maybe"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[partners.a]\nids = ["ZZ:ONE"]\n[partners.b]\nids = ["ZZ:TWO", "ZZ:ONE"]\n',
            r"\[partners.b\] key 'ids': 'ZZ:ONE' is claimed by partner 'a' too",
        ),
        (
            '[partners.a]\nids = ["ZZ:ONE"]\n[partners.a.rules]\nline_count = "error"\n',
            r"\[partners.a.rules\] key 'line_count' is not known; did you mean"
            r" 'line_count_mismatch'",
        ),
        (
            '[partners.a]\nids = ["ZZ:ONE"]\n[partners.a.rules]\ntotal_mismatch = "loud"\n',
            r"\[partners.a.rules\] key 'total_mismatch' must be one of error, warn, off",
        ),
        ('[partners.a]\nids = ["ACME"]\n', r"\[partners.a\] key 'ids': 'ACME' is not ISA05:ISA06"),
        (
            '[partners.a]\nids = ["ZZ:SIXTEEN-CHARS-XX"]\n',
            r"\[partners.a\] key 'ids': 'ZZ:SIXTEEN-CHARS-XX' is not",
        ),
        ('[partners.a]\nids = ["ZZ:A:B:C"]\n', r"\[partners.a\] key 'ids': 'ZZ:A:B:C' is not"),
        ("[partners.a]\nids = []\n", r"\[partners.a\] key 'ids' must name at least one"),
        (
            '[partners.a]\nids = ["ZZ:A"]\nack = "998"\n',
            r"\[partners.a\] key 'ack' must be one of 997, 999, none",
        ),
        (
            '[partners.a]\nids = ["ZZ:A"]\nta1 = "yes"\n',
            r"\[partners.a\] key 'ta1' must be one of on-request",
        ),
        (
            '[partners.a]\nids = ["ZZ:A"]\nacks = "997"\n',
            r"\[partners.a\] key 'acks' is not known; did you mean 'ack'",
        ),
        (
            '[partners]\nunknwn = "reject"\n',
            r"\[partners\] key 'unknwn' is not known; did you mean 'unknown'",
        ),
        (
            '[partners]\nunknown = "drop"\n',
            r"\[partners\] key 'unknown' must be one of accept, reject",
        ),
        ('[partners."a b"]\nids = ["ZZ:A"]\n', r"\[partners.a b\]: a partner's name is"),
    ],
)
def test_config_errors_name_the_partner_and_the_key(tmp_path, text, message):
    """Every mistake in a partner section is refused with the partner, the key and the file."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as caught:
        config.load(path, {})
    assert str(path) in str(caught.value)


# --- the pipeline: who sent it, and what applies ------------------------------

TEAM = """
[paths]
root = "{root}"
[database]
url = "{url}"
[log]
format = "json"
[daemon]
processes = 1
[partners]
unknown = "{policy}"
[partners.acme]
ids = ["ZZ:ACME"]
ack = "none"
ta1 = "never"
[partners.acme.rules]
line_count_mismatch = "error"
[partners.bolt]
ids = ["08:AAAAAAAAAA"]
[partners.west]
ids = ["08:AAAAAAAAAA:WEST"]
ta1 = "always"
"""


@pytest.fixture
def team(tmp_path, db_url):
    """A configuration with three partners, on SQLite or PostgreSQL; call it
    with the [partners] unknown policy to get the environment for the CLI."""

    def make(policy: str = "accept") -> dict[str, str]:
        path = tmp_path / "edi-inbox.toml"
        text = TEAM.format(root=tmp_path / "state", url=db_url, policy=policy)
        path.write_text(text)
        return {"EDI_INBOX_CONFIG": str(path)}

    return make


def process(env: dict[str, str], tmp_path: Path, name: str, data: bytes) -> dict:
    """``edi-inbox process --json`` on a real file; the job as JSON."""
    path = tmp_path / name
    path.write_bytes(data)
    result = CliRunner().invoke(main, ["process", "--json", str(path)], env=env)
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def acks(tmp_path: Path) -> list[str]:
    folder = tmp_path / "state" / "acks"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def posted(tmp_path: Path) -> list[str]:
    folder = tmp_path / "state" / "outbox"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_the_sender_picks_the_partner(team, tmp_path):
    """ISA05:ISA06 picks the partner; GS02 picks a more specific one."""
    env = team()
    bolt = process(env, tmp_path, "bolt.edi", make_po(1))
    west = process(env, tmp_path, "west.edi", sent_by(make_po(2), "08:AAAAAAAAAA", "WEST"))
    assert (bolt["status"], bolt["partner"]) == ("succeeded", "bolt")
    assert (west["status"], west["partner"]) == ("succeeded", "west")


@pytest.mark.parametrize("policy", ["accept", "reject"])
def test_an_unknown_sender_follows_the_policy(team, tmp_path, policy):
    """A sender no partner claims is processed under "accept"; under "reject"
    every set is refused naming the sender, nothing is posted, and the TA1
    says 006 (invalid sender)."""
    env = team(policy)
    job = process(env, tmp_path, "stranger.edi", sent_by(make_po(3), "ZZ:STRANGER"))
    assert job["partner"] is None
    if policy == "accept":
        assert job["status"] == "succeeded"
        assert len(posted(tmp_path)) == 1
        return
    assert job["status"] == "failed"
    assert "sender ZZ:STRANGER (ISA05:ISA06) is not a configured trading partner" in job["error"]
    assert posted(tmp_path) == []
    assert [o["status"] for o in job["orders"]] == []  # refused before it was read as orders
    ta1 = [name for name in acks(tmp_path) if name.endswith(".TA1")]
    assert len(ta1) == 1
    assert "*R*006" in (tmp_path / "state" / "acks" / ta1[0]).read_text("latin-1")
    ack997 = [n for n in acks(tmp_path) if n.endswith(".997")]
    text997 = (tmp_path / "state" / "acks" / ack997[0]).read_text("latin-1")
    assert "\nAK5*R\n" in text997 and "AK9*R*1*1*0" in text997


def test_a_file_mixing_partners_is_refused(team, tmp_path):
    """A partner's interchange and a stranger's in one file: refused whole,
    naming both senders, even under "accept" (one file is one partner's)."""
    env = team("accept")
    data = make_po(4) + sent_by(make_po(5), "ZZ:STRANGER")
    job = process(env, tmp_path, "mixed.edi", data)
    assert job["status"] == "failed"
    assert "mixes senders of different partners" in job["error"]
    assert "08:AAAAAAAAAA:test111111 (bolt)" in job["error"]
    assert "ZZ:STRANGER" in job["error"]
    assert posted(tmp_path) == []


def test_partner_rule_levels_apply_to_its_orders(team, tmp_path):
    """CTT01 wrong: the default warns and posts; acme, with
    line_count_mismatch = "error", has the order rejected."""
    env = team()
    wrong = make_po(6).replace(b"CTT*8", b"CTT*9")
    bolt = process(env, tmp_path, "bolt.edi", wrong)
    assert bolt["status"] == "succeeded"
    assert "CTT01" in bolt["orders"][0]["error"]  # kept as a warning
    acme = process(
        env, tmp_path, "acme.edi", sent_by(make_po(7).replace(b"CTT*8", b"CTT*9"), "ZZ:ACME")
    )
    assert (acme["partner"], acme["status"]) == ("acme", "failed")
    assert "CTT01" in acme["error"]
    assert len(posted(tmp_path)) == 1


def test_partner_ack_and_ta1_settings(team, tmp_path):
    """acme (ack none, ta1 never) gets nothing although ISA14 asks for a TA1;
    bolt the defaults (997, TA1 on request); west a TA1 even unasked."""
    env = team()
    acme = process(env, tmp_path, "acme.edi", sent_by(make_po(8), "ZZ:ACME"))
    assert acme["status"] == "succeeded" and acme["acks"] == []
    assert acks(tmp_path) == []
    step = next(s for s in acme["steps"] if s["step_name"] == "acknowledge")
    assert "acme" in step["data"]["skipped"]
    bolt = process(env, tmp_path, "bolt.edi", make_po(9))
    assert sorted(n.rsplit(".", 1)[1] for n in bolt["acks"]) == ["997", "TA1"]
    unasked = make_po(10).replace(b"*000000010*1*P*", b"*000000010*0*P*")
    west = process(env, tmp_path, "west.edi", sent_by(unasked, "08:AAAAAAAAAA", "WEST"))
    assert sorted(n.rsplit(".", 1)[1] for n in west["acks"]) == ["997", "TA1"]
    plain = process(env, tmp_path, "plain.edi", sent_by(unasked, "ZZ:STRANGER"))
    assert [n.rsplit(".", 1)[1] for n in plain["acks"]] == ["997"]  # on request: none asked


# --- the partner on every job: store, queries, CLI ---------------------------


def cli(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_partner_is_recorded_and_shown(team, tmp_path):
    """jobs show (text and JSON) gives the partner the job was recorded with."""
    env = team()
    bolt = process(env, tmp_path, "bolt.edi", make_po(11))
    west = process(env, tmp_path, "west.edi", sent_by(make_po(12), "08:AAAAAAAAAA", "WEST"))
    assert json.loads(cli(env, "jobs", "show", "--json", bolt["job_id"]))["partner"] == "bolt"
    text = cli(env, "jobs", "show", west["job_id"])
    assert any(line.split() == ["partner", "west"] for line in text.splitlines())


def test_jobs_and_stats_by_partner(team, tmp_path):
    """jobs list|search --partner and stats --partner see that partner's jobs only."""
    env = team()
    good = process(env, tmp_path, "b1.edi", make_po(13))
    zero = make_po(14).replace(b"PO1**6*EA*12", b"PO1**0*EA*12")
    bad = process(env, tmp_path, "b2.edi", zero)
    assert (good["status"], bad["status"]) == ("succeeded", "failed")
    west = process(env, tmp_path, "w.edi", sent_by(make_po(15), "08:AAAAAAAAAA", "WEST"))
    stranger = process(env, tmp_path, "s.edi", sent_by(make_po(16), "ZZ:STRANGER"))

    listed = json.loads(cli(env, "jobs", "list", "--partner", "bolt", "--json"))
    assert [j["job_id"] for j in listed] == [bad["job_id"], good["job_id"]]
    assert {j["partner"] for j in listed} == {"bolt"}
    failed = json.loads(
        cli(env, "jobs", "list", "--partner", "bolt", "--status", "failed", "--json")
    )
    assert [j["job_id"] for j in failed] == [bad["job_id"]]
    found = json.loads(cli(env, "jobs", "search", "--partner", "west", "--json"))
    assert [j["job_id"] for j in found] == [west["job_id"]]
    everyone = json.loads(cli(env, "jobs", "search", "--json"))
    assert {j["job_id"] for j in everyone} >= {stranger["job_id"], west["job_id"]}
    assert json.loads(cli(env, "jobs", "list", "--partner", "acme", "--json")) == []

    bolt = json.loads(cli(env, "stats", "--partner", "bolt", "--json"))
    assert bolt["partner"] == "bolt"
    assert (bolt["total_jobs"], bolt["successful_jobs"], bolt["failed_jobs"]) == (2, 1, 1)
    assert bolt["total_amount_processed"] == good["total_amount"]
    assert json.loads(cli(env, "stats", "--json"))["total_jobs"] == 4
    assert json.loads(cli(env, "stats", "--partner", "acme", "--json"))["total_jobs"] == 0
    assert "total jobs" in cli(env, "stats", "--partner", "west")


def test_partners_command(team, tmp_path):
    """partners --json: each partner's ids, settings, files and failures in
    the last 24 h and last activity; the text form names them too."""
    env = team("reject")
    process(env, tmp_path, "b1.edi", make_po(17))
    process(env, tmp_path, "b2.edi", make_po(18).replace(b"PO1**6*EA*12", b"PO1**0*EA*12"))
    doc = json.loads(cli(env, "partners", "--json"))
    assert doc["unknown"] == "reject"
    by_name = {p["name"]: p for p in doc["partners"]}
    assert list(by_name) == ["acme", "bolt", "west"]
    acme, bolt, west = by_name["acme"], by_name["bolt"], by_name["west"]
    assert acme["ids"] == ["ZZ:ACME"] and west["ids"] == ["08:AAAAAAAAAA:WEST"]
    assert (acme["ack"], acme["ta1"], west["ta1"]) == ("none", "never", "always")
    assert acme["rules"] == {"line_count_mismatch": "error"} and bolt["rules"] == {}
    assert (bolt["files"], bolt["failures"], acme["files"]) == (2, 1, 0)
    assert bolt["last_activity"] is not None and acme["last_activity"] is None
    text = cli({**env, "COLUMNS": "300"}, "partners")  # wide enough for every cell
    assert "ZZ:ACME" in text and "line_count_mismatch=error" in text
    assert "senders no partner claims: reject" in text


def test_a_v3_database_gets_the_partner_column(db):
    """v3 → v4: jobs.partner is added in place; a job then records its partner."""

    def make_v3() -> None:
        db.execute_sql('DROP INDEX IF EXISTS "jobs_partner_started_at"')
        db.execute_sql('DROP INDEX IF EXISTS "jobs_partner_status_started_at_id"')  # v10
        db.execute_sql('ALTER TABLE "jobs" DROP COLUMN "partner"')
        store._write_version(3)

    store.run_unit(db, make_v3)
    assert "partner" not in {c.name for c in db.get_columns("jobs")}
    assert store.migrate(db) == [4, 5, 6, 7, 8, 9, 10]
    assert "partner" in {c.name for c in db.get_columns("jobs")}
    assert any("partner" in i.columns for i in db.get_indexes("jobs"))
    job = make_job(1)
    job.partner = "acme"
    record(store.DatabaseRecorder(db), job)
    assert queries.show_job(db, job.job_id)["partner"] == "acme"
    assert [j["job_id"] for j in queries.list_jobs(db, partner="acme")] == [job.job_id]


def test_the_daemon_refuses_a_stranger_and_records_the_partner(team, tmp_path):
    """`edi-inbox run --once` under unknown = "reject": the stranger's file goes
    to failed/ with a report naming the sender; the partner's is done and
    recorded as that partner's."""
    env = team("reject")
    inbox = tmp_path / "state" / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "stranger.edi").write_bytes(sent_by(make_po(19), "ZZ:STRANGER"))
    (inbox / "bolt.edi").write_bytes(make_po(20))
    result = CliRunner().invoke(main, ["run", "--once"], env=env)
    assert result.exit_code == 0, result.output
    state = tmp_path / "state"
    assert sorted(os.listdir(state / "done")) == ["bolt.edi"]
    report = json.loads((state / "failed" / "stranger.edi.error.json").read_text())
    assert "sender ZZ:STRANGER (ISA05:ISA06) is not a configured trading partner" in json.dumps(
        report
    )
    assert len(posted(tmp_path)) == 1
    (bolt,) = json.loads(cli(env, "jobs", "list", "--partner", "bolt", "--json"))
    assert bolt["file_name"] == "bolt.edi"


def test_a_running_job_has_its_partner(db):
    """The running record (written before the first ERP call) carries the
    partner, so a job left running by a crash is still the partner's."""
    recorder = store.DatabaseRecorder(db)
    job = make_job(2, status=JobStatus.RUNNING)
    job.partner = "bolt"
    recorder.job_started(job, job.steps[:3])
    (row,) = queries.list_jobs(db, partner="bolt")
    assert (row["job_id"], row["status"], row["partner"]) == (job.job_id, "running", "bolt")


# --- outbox: a partner's acknowledgements in its own folder --------------------


def test_a_partners_acks_go_to_its_outbox(tmp_path, db_url):
    """With [partners.NAME] outbox, its 997 and TA1 are written there (moded
    0640 even under umask 077, no temporary name left), not into acks/."""
    out = tmp_path / "sftp" / "bolt" / "out"
    path = tmp_path / "edi-inbox.toml"
    text = TEAM.format(root=tmp_path / "state", url=db_url, policy="accept")
    path.write_text(text.replace("[partners.west]", f'outbox = "{out}"\n[partners.west]'))
    old = os.umask(0o077)
    try:
        job = process({"EDI_INBOX_CONFIG": str(path)}, tmp_path, "bolt.edi", make_po(11))
    finally:
        os.umask(old)
    assert job["status"] == "succeeded"
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(job["acks"]) and len(files) == 2
    assert {n.rsplit(".", 1)[1] for n in files} == {"997", "TA1"}
    assert all((out / n).stat().st_mode & 0o777 == 0o640 for n in files)
    assert (out / files[0]).read_bytes().startswith(b"ISA")
    assert acks(tmp_path) == []


def test_an_outbox_must_be_absolute(tmp_path):
    """A relative outbox is a config error naming the partner and the key."""
    path = write(tmp_path, '[partners.a]\nids = ["ZZ:A"]\noutbox = "out"\n')
    with pytest.raises(ConfigError, match=r"\[partners.a\] key 'outbox' must be an absolute"):
        config.load(path, {})


# --- process --partner: the file's folder says who sent it --------------------


def given(env: dict[str, str], tmp_path: Path, partner: str, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return CliRunner().invoke(main, ["process", "--json", "--partner", partner, str(path)], env=env)


def test_process_partner_refuses_a_spoofed_sender(team, tmp_path):
    """process --partner acme on a file sent as bolt: refused, the reason names
    both the partner given and the sender found, and nothing is posted."""
    env = team("accept")
    result = given(env, tmp_path, "acme", "spoof.edi", make_po(21))
    assert result.exit_code == 1, result.output
    job = json.loads(result.stdout)
    assert job["status"] == "failed" and job["partner"] == "acme"
    assert "partner acme" in job["error"] and "08:AAAAAAAAAA" in job["error"]
    assert posted(tmp_path) == []


def test_process_partner_accepts_its_own_sender(team, tmp_path):
    """process --partner acme on acme's own file: processed as acme's."""
    env = team("reject")
    result = given(env, tmp_path, "acme", "acme.edi", sent_by(make_po(22), "ZZ:ACME"))
    job = json.loads(result.stdout)
    assert job["status"] == "succeeded" and job["partner"] == "acme"
    assert len(posted(tmp_path)) == 1


def test_process_partner_must_be_configured(team, tmp_path):
    """An unknown --partner is a usage error naming the configured ones."""
    result = given(team("accept"), tmp_path, "nobody", "x.edi", make_po(23))
    assert result.exit_code == 2 and "no partner 'nobody'" in result.output


# --- status: each partner's last 24 hours and last error -----------------------


def test_status_shows_each_partners_failures_and_last_error(team, tmp_path):
    """status (text and --json "partners") gives each partner's files and
    failures in the last 24 h and its latest failed job."""
    env = team("accept")
    given(env, tmp_path, "acme", "spoof.edi", make_po(31))
    process(env, tmp_path, "bolt.edi", make_po(32))
    result = CliRunner().invoke(main, ["status", "--json"], env=env)
    assert result.exit_code == 3, result.output  # no daemon runs
    by_name = {p["name"]: p for p in json.loads(result.stdout)["partners"]}
    assert set(by_name) == {"acme", "bolt", "west"}
    acme, bolt = by_name["acme"], by_name["bolt"]
    assert (acme["files_24h"], acme["failures_24h"]) == (1, 1)
    assert acme["last_error"]["file_name"] == "spoof.edi"
    assert "partner acme" in acme["last_error"]["error"]
    assert (bolt["files_24h"], bolt["failures_24h"], bolt["last_error"]) == (1, 0, None)
    text = CliRunner().invoke(main, ["status"], env=env).output
    assert "partner acme: 1 files, 1 failed in the last 24 h; last error: spoof.edi:" in text
    assert "partner west: 0 files, 0 failed" in text


def test_a_failed_files_report_is_copied_to_the_partners_outbox(tmp_path):
    """The daemon files a failed job's error.json in failed/ and, for a partner
    with an outbox, a copy there (0640) for the partner to download."""
    import time

    from edi_inbox.config import PartnerSettings, PartnersSettings, PathSettings, Settings
    from edi_inbox.outcomes import Mover

    out = tmp_path / "sftp" / "acme" / "out"
    acme = PartnerSettings(name="acme", ids=(PartnerId("ZZ", "ACME"),), outbox=out)
    paths = Settings(paths=PathSettings(root=tmp_path / "state")).paths
    paths.create()
    claimed = tmp_path / "state" / "processing" / "host"
    claimed.mkdir(parents=True)
    (claimed / "po.edi.job").write_bytes(b"the file")
    job = make_job(status=JobStatus.FAILED)
    job.error, job.partner = "sender refused", "acme"
    outboxes = PartnersSettings(partners=(acme,)).outboxes()
    old = os.umask(0o077)
    try:
        mover = Mover(paths, clock=time.monotonic, outboxes=outboxes)
        assert mover.finish(claimed / "po.edi.job", "po.edi", job) is None
    finally:
        os.umask(old)
    report = (paths.failed / "po.edi.error.json").read_bytes()
    assert (out / "po.edi.error.json").read_bytes() == report
    assert (out / "po.edi.error.json").stat().st_mode & 0o777 == 0o640
    assert [p.name for p in out.iterdir()] == ["po.edi.error.json"]


# --- ack = "999": 5010 partners get 999s, older files 997s ----------------------
# (the ack999 work; tests on other subjects go in blocks of their own)

CLINIC = """
[partners.clinic]
ids = ["08:CLINIC"]
ack = "999"
ta1 = "never"
outbox = "{out}"
"""


def as_5010(data: bytes) -> bytes:
    """A 4010 sample as a 5010 interchange: ISA11 ^ and ISA12 00501, GS08 005010
    (the widths of the ISA kept)."""
    text = data.decode("latin-1")
    sep = text[3]
    text = text.replace(f"{sep}U{sep}00302{sep}", f"{sep}^{sep}00501{sep}", 1)
    assert text != data.decode("latin-1") and "^" not in text[106:]
    return text.replace(f"{sep}004010\n", f"{sep}005010\n", 1).encode("latin-1")


@pytest.fixture
def clinic(tmp_path, db_url):
    """TEAM with a partner "clinic" (08:CLINIC, ack = "999", its own outbox):
    the environment for the CLI, and the outbox."""
    out = tmp_path / "sftp" / "clinic" / "out"
    path = tmp_path / "edi-inbox.toml"
    text = TEAM.format(root=tmp_path / "state", url=db_url, policy="reject")
    path.write_text(text + CLINIC.format(out=out))
    return {"EDI_INBOX_CONFIG": str(path)}, out


def ack_step(job: dict) -> dict:
    return next(s for s in job["steps"] if s["step_name"] == "acknowledge")["data"]


def test_partner_ack_999_is_read(tmp_path):
    """ack = "999" is accepted in [partners.NAME]."""
    path = write(tmp_path, '[partners.a]\nids = ["ZZ:A"]\nack = "999"\n')
    partner = config.load(path, {}).partners.get("a")
    assert partner is not None and partner.ack == "999"


def test_a_5010_partner_gets_a_999_in_its_outbox(clinic, tmp_path):
    """A 5010 file from a partner with ack = "999": one 999 in its outbox,
    named as the 997 would be (file name, GS06) with .999, moded 0640, IK5 A
    and AK9 A for the posted order; the step says which kind went out."""
    env, out = clinic
    job = process(env, tmp_path, "po5010.edi", sent_by(as_5010(make_po(41)), "08:CLINIC"))
    assert (job["status"], job["partner"]) == ("succeeded", "clinic")
    assert job["acks"] == ["po5010.edi.123456789.999"]
    assert sorted(p.name for p in out.iterdir()) == job["acks"]
    assert ack_step(job)["kinds"] == {"po5010.edi.123456789.999": "999"}
    path = out / job["acks"][0]
    assert path.stat().st_mode & 0o777 == 0o640
    text = path.read_text("latin-1")
    assert "\nGS*FA*test22222*test111111*" in text and "*X*005010X231A1\n" in text
    assert "\nST*999*" in text and "*005010X231A1\nAK1*PO*123456789*005010\n" in text
    assert "\nAK2*850*4567\nIK5*A\nAK9*A*1*1*1\n" in text
    assert "AK5" not in text and acks(tmp_path) == []


def test_a_rejected_5010_file_gets_a_rejecting_999(clinic, tmp_path):
    """draftedi's 5010 850 (SE01 wrong) from the 999 partner: nothing posted,
    a 999 with IK5 R 4 and AK9 R."""
    env, out = clinic
    data = (Path(__file__).parent / "data" / "corpus" / "draftedi__sample_850.edi").read_bytes()
    job = process(env, tmp_path, "bad5010.edi", sent_by(data, "08:CLINIC"))
    assert (job["status"], job["partner"]) == ("failed", "clinic")
    assert job["acks"] == ["bad5010.edi.000000001.999"]
    text = (out / job["acks"][0]).read_text("latin-1")
    assert "\nAK2*850*0001~\nIK5*R*4~\nAK9*R*1*1*0~\n" in text
    assert posted(tmp_path) == []


def test_a_4010_file_from_a_999_partner_gets_a_997(clinic, tmp_path):
    """The 999 does not exist before 5010: a 4010 file from the same partner
    gets a 997 (named .997) in its outbox."""
    env, out = clinic
    job = process(env, tmp_path, "po4010.edi", sent_by(make_po(42), "08:CLINIC"))
    assert (job["status"], job["partner"]) == ("succeeded", "clinic")
    assert job["acks"] == ["po4010.edi.123456789.997"]
    assert ack_step(job)["kinds"] == {"po4010.edi.123456789.997": "997"}
    text = (out / job["acks"][0]).read_text("latin-1")
    assert "\nST*997*" in text and "\nAK2*850*4567\nAK5*A\nAK9*A*1*1*1\n" in text
    assert "*X*004010\n" in text and "IK5" not in text


def test_a_997_partner_with_a_5010_file_gets_a_997(clinic, tmp_path):
    """bolt (ack = "997", the default) sends 5010: a 997 all the same."""
    env, _ = clinic
    job = process(env, tmp_path, "bolt5010.edi", as_5010(make_po(43)))
    assert (job["status"], job["partner"]) == ("succeeded", "bolt")
    ours = [n for n in job["acks"] if not n.endswith(".TA1")]
    assert ours == ["bolt5010.edi.123456789.997"]
    assert ack_step(job)["kinds"][ours[0]] == "997"
    text = (tmp_path / "state" / "acks" / ours[0]).read_text("latin-1")
    assert "\nST*997*" in text and "*X*005010\n" in text and "\nAK5*A\n" in text


# --- [partners.NAME] erp_url: a partner's orders go to its own ERP -------------


def test_a_partners_orders_go_to_its_own_erp(tmp_path, db_url):
    """Two real ERPs: bolt's order lands on [erp] url, clinic's (erp_url) on
    its own server, each with [erp]'s bearer token, and each job records the
    id its own ERP gave."""
    from helpers import http_server

    token = tmp_path / "erp.token"
    token.write_text("s3cret-T0ken\n")
    token.chmod(0o600)
    with http_server() as main_erp, http_server() as clinic_erp:
        main_erp.expect_request("/orders", method="POST").respond_with_json({"id": "M1"}, 201)
        clinic_erp.expect_request("/po", method="POST").respond_with_json({"id": "C1"}, 201)
        path = tmp_path / "edi-inbox.toml"
        text = TEAM.format(root=tmp_path / "state", url=db_url, policy="reject")
        text += f'[partners.clinic]\nids = ["08:CLINIC"]\nerp_url = "{clinic_erp.url_for("/po")}"\n'
        text += f'[erp]\nurl = "{main_erp.url_for("/orders")}"\ntoken_file = "{token}"\n'
        path.write_text(text)
        env = {"EDI_INBOX_CONFIG": str(path)}
        bolt = process(env, tmp_path, "bolt.edi", make_po(51))
        clinic = process(env, tmp_path, "clinic.edi", sent_by(make_po(52), "08:CLINIC"))
        assert (bolt["status"], bolt["erp_po_id"]) == ("succeeded", "M1")
        assert (clinic["status"], clinic["erp_po_id"]) == ("succeeded", "C1")
        assert len(main_erp.log) == 1 and len(clinic_erp.log) == 1
        for server, po in ((main_erp, "00000051"), (clinic_erp, "00000052")):
            request = server.log[0][0]
            assert request.headers["Authorization"] == "Bearer s3cret-T0ken"
            assert json.loads(request.data)["po_number"] == po
    assert posted(tmp_path) == []  # nothing fell back to outbox/


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            '"ftp://erp.example/po"',
            r"\[partners.a\] erp_url 'ftp://erp.example/po' must be an http",
        ),
        ('"http://"', r"\[partners.a\] erp_url 'http://' must be an http"),
        ("42", r"\[partners.a\] key 'erp_url' must be an http:// or https:// URL"),
    ],
)
def test_a_partners_erp_url_is_checked_as_the_erp_url_is(tmp_path, value, message):
    """A bad erp_url is refused naming the partner, when the pipeline starts
    (where [erp] url is checked) or, not a string at all, when the file is read."""
    from edi_inbox.pipeline import Pipeline

    text = f'[paths]\nroot = "{tmp_path / "state"}"\n'
    path = write(tmp_path, text + f'[partners.a]\nids = ["ZZ:A"]\nerp_url = {value}\n')
    with pytest.raises(ConfigError, match=message):
        Pipeline(config.load(path, {}))
