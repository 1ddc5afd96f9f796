"""Outside tester round 27: trading partners end to end.

What I tried: several partners configured as README says (ISA ids, two
partners told apart by GS02 under one ISA id with a catch-all for the rest
of it, a partner with its own folder and outbox, its own ``erp_url``,
``ack = "none"`` / ``"999"``, ``ta1 = "never"``, ``unknown = "reject"``),
wrong-partner files (another partner's sender in a partner's folder, an
unknown sender, a GS02 another partner claims, a file mixing two partners,
a partner's sender in the shared inbox), reloads (a bad ``erp_url``
refused; ``erp_url``, outbox and ``ack`` moved and a partner renamed while
its order waits at its ERP; the outbox fixed while acknowledgements are
owed; with worker processes), ``retry`` and ``process --partner``, outboxes
placed where the daemon claims files, the per-partner operator views
(``stats --partner``, ``partners``, ``status``) against the whole on SQLite
and PostgreSQL. The daemon runs in process (``service.run(once=True)``) or
as a real subprocess (``daemons.Daemon``), with real HTTP ERPs on 127.0.0.1.

What held:

* attribution: ZZ:SHARED:WEST goes to its partner, another GS02 under
  ZZ:SHARED to the catch-all; each order posted once; 997/TA1 only in the
  outbox of the file's partner; ``ack = "none"`` and ``ta1 = "never"``
  honoured for refused files; a file mixing WEST and EAST is refused whole,
  nothing posted, nothing written into either partner's outbox;
* ``stats --partner`` for every partner plus the unclaimed jobs add up to
  ``stats`` (each posted order once), and ``partners``/``status`` count the
  same files, failures and last error (SQLite and PostgreSQL); ``serve``'s
  ``/api/jobs/stats?partner=``, ``/api/jobs/recent?partner=``,
  ``/api/partners`` and ``edi_inbox_partner_jobs_total`` agree with them;
* ``process --partner NAME FILE`` posts to the partner's own ``erp_url``;
  ``retry`` follows a partner whose folder moved and refuses (file left in
  failed/) one whose partner was removed;
* a reload with a bad ``erp_url`` is refused while acme's order waits at its
  ERP; the next reload (new ERP, new outbox, globex renamed) drains it: the
  held order answered once by the old ERP, its 997 in the old outbox, the
  next file to the new ERP and outbox, globex's under its new name; with
  worker processes a reload's new ``erp_url``/``outbox``/``ack`` apply from
  the next file;
* an outbox that is (by symlink, ``..``) another partner's inbox or the
  shared inbox is refused; the ERP's own words stay out of the outbox's
  error report.

Found (strict xfails; all ten fixed the same session, each test failing
before its fix):

1. ``test_a_reload_moving_an_outbox_delivers_the_acks_it_owes_there``: acme's
   outbox cannot take its 997 (the path is not a folder); the operator points
   ``outbox`` at a good folder and reloads: the owed 997/TA1 still aim at the
   old path for ever (``acks_owed``: "not written in …/out-file"), the job
   stays ``running``, its file in processing; acme never gets its answers.
   The owed record keeps the folder it was built for (``pipeline.Ack``'s
   folder, pickled in ``processing/.owed``).
2. ``test_retry_does_not_launder_a_shared_inbox_file_into_a_partners_folder``:
   a stranger's file in the shared inbox bearing acme's sender is refused
   (only acme's folder vouches for acme) but recorded as acme's job; ``retry
   --all-failed`` then moves it into acme's folder, and the next run posts
   it to the ERP as acme's order (``partners.resolve`` returns partner=acme
   with the refusal; ``admin._retry_one`` trusts the report's partner over
   its ``inbox``, the shared one).
3. ``test_a_partners_sender_in_the_shared_inbox_is_not_answered_to_that_partner``:
   the same stranger's file gets its 997, TA1 and error report (named as the
   stranger chose) written into acme's outbox, and counts as acme's failure
   in ``partners``/``status``.
4. ``test_an_outbox_the_daemon_claims_from_is_refused_or_left_alone``
   (processing/, processing/.partners/globex): accepted by the config check;
   the next start takes acme's 997 and TA1 there as a crash's claims, runs
   them as jobs (globex's refused, reports in failed/) and files them into
   done/ or failed/: they vanish from acme's outbox.
5. ``test_a_group_whose_order_was_never_read_is_not_acknowledged_as_accepted``:
   a second interchange whose GS lost its terminator (ST glued onto GS08):
   its order is never read nor posted, yet its 997 says ``AK9*E*1*0*0*5``
   (accepted, with notes) with GS08 ``004010ST`` echoed, and the file goes
   to done/ as succeeded (``x12.ack``: ``_group_status(0 accepted, 0
   received)``; GS08 from ``group.version``).
6. ``test_an_error_report_in_the_outbox_is_named_after_the_partners_file``:
   globex's ``po.edi`` failed first; acme's failed ``po.edi`` is reported in
   acme's outbox as ``po.1.edi.error.json`` (its 997 is ``po.edi.….997``):
   the name depends on, and tells of, another partner's files
   (``outcomes._fail`` copies under the failed/ candidate name).
7. ``test_every_error_report_in_the_outbox_ends_in_error_json``: a second
   report for one file name (a retried file failing again) lands in the
   outbox as ``po.edi.error.1.json`` (``files.write_new``'s suffix before the
   extension), which a partner's ``*.error.json`` never picks up.
8. ``test_a_refusal_names_the_sender_as_the_configuration_writes_it``: a
   stranger's file in acme's folder is refused with "its sender
   ZZ:STRANGER:test111111 is not one of its ids", the GS02 glued on although
   nobody splits ZZ:STRANGER by GS02 (README: "its sender ZZ:STRANGER");
   copied into ``ids`` it would make a GS02 split by mistake
   (``partners.resolve_given`` uses ``sender_of(interchange, group_sender)``).
9. ``test_retry_says_which_folder_a_partners_file_went_back_to``: ``retry``
   prints "as inbox/bad.edi" for a file it put into acme's own folder
   (``cli.retry`` ignores the result's ``inbox``).
10. ``test_retry_after_a_partner_is_renamed_puts_its_file_back_into_the_watched_folder``:
    acme renamed acme2 (same ids, same folder): ``retry`` refuses acme's
    failed files, "it came from …/acme-in, a partner's inbox no longer
    watched", though acme2 watches that very folder (``admin._retry_one``
    finds the partner by the report's name only; the same lookup, trusting
    the name over where the file came from, makes finding 2).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
from daemons import Erp, daemons, erp

from edi_inbox import config, service
from edi_inbox.errors import ConfigError

from helpers import BAD, CORPUS, http_server, make_po, poll_until, sent_by, write_config
from web_site import free_port

pytestmark = pytest.mark.e2e
__all__ = ["daemons", "erp"]  # fixtures


# -- helpers --------------------------------------------------------------------------------------


def folders(tmp_path: Path, *names: str) -> list[Path]:
    made = []
    for name in names:
        (tmp_path / name).mkdir()
        made.append(tmp_path / name)
    return made


def start(tmp_path: Path, partners: str, erp_url: str, database: str = ""):
    """Settings of a site under ``tmp_path`` with ``partners``, folders made."""
    extra = f"[database]\nurl = {json.dumps(database)}\n" if database else ""
    settings = config.load(write_config(tmp_path, extra + partners, erp_url))
    settings.paths.create()
    return settings


def edi(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``edi-inbox --config tmp_path/edi-inbox.toml ARGS``."""
    config_file = str(tmp_path / "edi-inbox.toml")
    command = [sys.executable, "-m", "edi_inbox.cli", "--config", config_file, *args]
    env = {k: v for k, v in os.environ.items() if k != "EDI_INBOX_CONFIG"}
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def cli_json(tmp_path: Path, *args: str):
    done = edi(tmp_path, *args, "--json")
    assert done.returncode in (0, 3), done.stderr
    return json.loads(done.stdout)


def jobs_of(tmp_path: Path) -> dict[str, dict]:
    path = tmp_path / "state" / "edi-inbox.db"
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return {r["file_name"]: dict(r) for r in conn.execute("SELECT * FROM jobs")}


def listing(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


# -- what held ----------------------------------------------------------------------------------


def test_each_partner_gets_only_the_answers_for_its_own_files(tmp_path, erp):
    acme_in, acme_out, west_out = folders(tmp_path, "acme-in", "acme-out", "west-out")
    partners = (
        '[partners]\nunknown = "reject"\n'
        f'[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{acme_in}"\noutbox = "{acme_out}"\n'
        'ack = "none"\nta1 = "never"\n'
        f'[partners.west]\nids = ["ZZ:SHARED:WEST"]\noutbox = "{west_out}"\n'
        '[partners.rest]\nids = ["ZZ:SHARED"]\n'
    )
    settings = start(tmp_path, partners, erp.url)
    inbox = settings.paths.inbox
    (acme_in / "west.edi").write_bytes(sent_by(make_po(2701), "ZZ:SHARED", "WEST"))
    broken = sent_by(make_po(2702), "ZZ:ACME").replace(b"IEA*1*", b"IEA*2*")
    (acme_in / "broken.edi").write_bytes(broken)
    (inbox / "w.edi").write_bytes(sent_by(make_po(2703), "ZZ:SHARED", "WEST"))
    (inbox / "e.edi").write_bytes(sent_by(make_po(2704), "ZZ:SHARED", "EAST"))
    mixed = sent_by(make_po(2705), "ZZ:SHARED", "WEST") + sent_by(
        make_po(2706), "ZZ:SHARED", "EAST"
    )
    (inbox / "mix.edi").write_bytes(mixed)
    assert service.run(settings, once=True) == 0

    assert listing(settings.paths.done) == ["e.edi", "w.edi"]
    assert sorted(po for _, po in erp.requests) == ["00002703", "00002704"]
    assert len(erp.posts_per_key()) == 2
    jobs = jobs_of(tmp_path)
    assert {n: j["partner"] for n, j in jobs.items()} == {
        "west.edi": "acme",  # its folder's: refused, WEST is another partner's id
        "broken.edi": "acme",
        "w.edi": "west",
        "e.edi": "rest",
        "mix.edi": None,
    }
    assert "is partner west's" in jobs["west.edi"]["error"]
    assert "mixes senders of different partners" in jobs["mix.edi"]["error"]
    # acme: no 997, no TA1 (ack none, ta1 never), its error reports only
    assert listing(acme_out) == ["broken.edi.error.json", "west.edi.error.json"]
    # west: only w.edi's answers, nothing of mix.edi nor of acme's refused file
    assert all(n.startswith("w.edi.") for n in listing(west_out)), listing(west_out)
    assert any(n.endswith(".997") for n in listing(west_out))
    assert not any(n.startswith(("w.", "west.")) for n in listing(settings.paths.acks))


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_per_partner_views_add_up_to_the_whole(tmp_path, erp, request, database):
    url = request.getfixturevalue("pg_url") if database == "postgresql" else ""
    partners = '[partners.acme]\nids = ["ZZ:ACME"]\n[partners.globex]\nids = ["ZZ:GLOBEX"]\n'
    settings = start(tmp_path, partners, erp.url, url)
    inbox = settings.paths.inbox
    (inbox / "a1.edi").write_bytes(sent_by(make_po(2711), "ZZ:ACME"))
    (inbox / "a2.edi").write_bytes(sent_by(BAD, "ZZ:ACME"))
    (inbox / "a3.edi").write_bytes(sent_by(make_po(2713), "ZZ:ACME") + sent_by(BAD, "ZZ:ACME"))
    (inbox / "g1.edi").write_bytes(sent_by(make_po(2714), "ZZ:GLOBEX"))
    (inbox / "u1.edi").write_bytes(sent_by(make_po(2715), "ZZ:OTHER"))
    assert service.run(settings, once=True) == 0
    (inbox / "a1-again.edi").write_bytes(sent_by(make_po(2711), "ZZ:ACME"))
    assert service.run(settings, once=True) == 0

    whole = cli_json(tmp_path, "stats")
    acme = cli_json(tmp_path, "stats", "--partner", "acme")
    globex = cli_json(tmp_path, "stats", "--partner", "globex")
    assert acme["by_status"] == {
        **{k: 0 for k in whole["by_status"]},
        "succeeded": 1,
        "partial": 1,
        "failed": 1,
        "duplicate": 1,
    }
    assert globex["by_status"]["succeeded"] == 1 and globex["total_jobs"] == 1
    assert whole["total_jobs"] == acme["total_jobs"] + globex["total_jobs"] + 1  # u1
    # every posted order once: acme's a1 and a3's good set, globex's g1, u1
    assert len(erp.posts_per_key()) == 4
    one = Decimal(globex["total_amount_processed"])
    assert Decimal(acme["total_amount_processed"]) == 2 * one
    assert Decimal(whole["total_amount_processed"]) == 4 * one
    listed = {p["name"]: p for p in cli_json(tmp_path, "partners")["partners"]}
    assert (listed["acme"]["files"], listed["acme"]["failures"], listed["acme"]["partial"]) == (
        4,
        1,
        1,
    )
    assert (listed["globex"]["files"], listed["globex"]["failures"]) == (1, 0)
    status = {p["name"]: p for p in cli_json(tmp_path, "status")["partners"]}
    assert (status["acme"]["files_24h"], status["acme"]["failures_24h"]) == (4, 1)
    assert status["acme"]["last_error"]["file_name"] == "a2.edi"
    assert status["globex"]["last_error"] is None


def test_process_by_hand_as_a_partner_posts_to_its_own_erp(tmp_path, erp):
    with http_server() as server:
        own = Erp(server)
        partners = f'[partners.acme]\nids = ["ZZ:ACME"]\nerp_url = "{own.url}"\n'
        start(tmp_path, partners, erp.url)
        by_hand = tmp_path / "po.edi"
        by_hand.write_bytes(sent_by(make_po(2721), "ZZ:ACME"))
        done = edi(tmp_path, "process", "--partner", "acme", "--json", str(by_hand))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["partner"] == "acme"
        assert [po for _, po in own.requests] == ["00002721"]
        assert erp.requests == []


# -- found ----------------------------------------------------------------------------------------


def test_a_reload_moving_an_outbox_delivers_the_acks_it_owes_there(tmp_path, erp, daemons):
    """acme's outbox is misconfigured (a file, not a folder): its 997 and TA1
    are owed, the order posted. The operator points the outbox at a real
    folder and reloads: acme's answers belong in acme's outbox, which is now
    the new folder, and the file can then be filed."""
    broken = tmp_path / "out-file"
    broken.write_text("not a folder\n")
    good = tmp_path / "acme-out"
    good.mkdir()

    def section(outbox: Path) -> str:
        return f'[partners.acme]\nids = ["ZZ:ACME"]\noutbox = "{outbox}"\n'

    daemon = daemons(erp.url, extra=section(broken))
    daemon.start()
    (daemon.inbox / "a.edi").write_bytes(sent_by(make_po(2731), "ZZ:ACME"))
    poll_until(lambda: daemon.events("acks_owed"), what="acme's acknowledgements owed")
    assert len(erp.requests) == 1
    daemon.reload(section(good))
    poll_until(
        lambda: daemon.listing(daemon.done) == ["a.edi"],
        timeout=8,
        what="the owed acknowledgements written to acme's outbox, the file filed",
    )
    assert any(n.endswith(".997") for n in daemon.listing(good))
    assert len(erp.requests) == 1


def test_an_error_report_in_the_outbox_is_named_after_the_partners_file(tmp_path, erp):
    acme_in, acme_out, globex_out = folders(tmp_path, "acme-in", "acme-out", "globex-out")
    partners = (
        f'[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{acme_in}"\noutbox = "{acme_out}"\n'
        f'[partners.globex]\nids = ["ZZ:GLOBEX"]\noutbox = "{globex_out}"\n'
    )
    settings = start(tmp_path, partners, erp.url)
    (settings.paths.inbox / "po.edi").write_bytes(sent_by(BAD, "ZZ:GLOBEX"))
    assert service.run(settings, once=True) == 0
    (acme_in / "po.edi").write_bytes(sent_by(BAD, "ZZ:ACME"))
    assert service.run(settings, once=True) == 0
    assert listing(globex_out) == ["po.edi.1403.997", "po.edi.error.json"]
    assert sorted(listing(settings.paths.failed)) == [
        "po.1.edi",
        "po.1.edi.error.json",
        "po.edi",
        "po.edi.error.json",
    ]
    # acme uploaded po.edi once: its 997 says so, so must its report
    assert "po.edi.1403.997" in listing(acme_out)
    assert "po.edi.error.json" in listing(acme_out), listing(acme_out)


def spoofed(tmp_path: Path, erp_url: str, name: str, n: int):
    """A stranger's ``name`` in the shared inbox bearing acme's sender (acme
    has a folder of its own), run: refused, nothing posted, in failed/.
    Returns (settings, acme's inbox, acme's outbox)."""
    acme_in, acme_out = folders(tmp_path, "acme-in", "acme-out")
    partners = f'[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{acme_in}"\noutbox = "{acme_out}"\n'
    settings = start(tmp_path, partners, erp_url)
    (settings.paths.inbox / name).write_bytes(sent_by(make_po(n), "ZZ:ACME"))
    assert service.run(settings, once=True) == 0
    assert listing(settings.paths.failed) == [name, name + ".error.json"]
    return settings, acme_in, acme_out


def test_a_partners_sender_in_the_shared_inbox_is_not_answered_to_that_partner(tmp_path, erp):
    """Only acme's folder vouches for acme: the shared inbox, which other
    accounts may write, refuses acme's sender. Whoever wrote it is not acme,
    so acme's outbox (which acme downloads) must not fill with answers to
    files it never sent, named as their writer chose."""
    _, _, acme_out = spoofed(tmp_path, erp.url, "not from acme.edi", 2741)
    assert erp.requests == []
    assert listing(acme_out) == []


def test_a_refusal_names_the_sender_as_the_configuration_writes_it(tmp_path, erp):
    (acme_in,) = folders(tmp_path, "acme-in")
    partners = f'[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{acme_in}"\n'
    settings = start(tmp_path, partners, erp.url)
    (acme_in / "po.edi").write_bytes(sent_by(make_po(2751), "ZZ:STRANGER"))
    assert service.run(settings, once=True) == 0
    error = jobs_of(tmp_path)["po.edi"]["error"]
    assert "the file is from partner acme but its sender" in error
    assert "its sender ZZ:STRANGER is not one of its ids (ZZ:ACME)" in error, error


def test_retry_does_not_launder_a_shared_inbox_file_into_a_partners_folder(tmp_path, erp):
    """Someone who may write the shared inbox (not acme) uploads an order
    with acme's sender: refused, nothing posted, since only acme's folder
    vouches for acme. The operator, after some outage, runs ``retry
    --all-failed``: the file must not become acme's order. Today retry puts
    it into acme's folder (the job was recorded as acme's) and the next run
    posts it as acme's."""
    settings, acme_in, _ = spoofed(tmp_path, erp.url, "spoof.edi", 2761)
    assert erp.requests == []
    edi(tmp_path, "retry", "--all-failed")
    assert listing(acme_in) == [], "the stranger's file is now in acme's folder"
    assert service.run(settings, once=True) == 0
    assert erp.requests == [], "a file acme never uploaded was posted as acme's order"


def retry_all(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return edi(tmp_path, "retry", "--all-failed")


def acme_failed_once(tmp_path: Path, erp_url: str) -> tuple[Path, Path]:
    """acme (its own folder) uploads a bad file, filed in failed/."""
    acme_in, moved_in = folders(tmp_path, "acme-in", "acme-in-2")
    settings = start(
        tmp_path, f'[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{acme_in}"\n', erp_url
    )
    (acme_in / "bad.edi").write_bytes(sent_by(BAD, "ZZ:ACME"))
    assert service.run(settings, once=True) == 0
    assert listing(settings.paths.failed) == ["bad.edi", "bad.edi.error.json"]
    return acme_in, moved_in


def test_retry_follows_a_partner_whose_folder_moved_and_refuses_a_removed_one(tmp_path, erp):
    acme_in, moved_in = acme_failed_once(tmp_path, erp.url)
    write_config(tmp_path, "", erp.url)  # acme removed
    done = retry_all(tmp_path)
    assert "a partner's inbox no longer watched" in done.stdout, done.stdout + done.stderr
    assert listing(tmp_path / "state" / "inbox") == [] and listing(acme_in) == []
    write_config(tmp_path, f'[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{moved_in}"\n', erp.url)
    done = retry_all(tmp_path)
    assert done.returncode == 0, done.stderr
    assert listing(moved_in) == ["bad.edi"] and listing(acme_in) == []


def test_retry_says_which_folder_a_partners_file_went_back_to(tmp_path, erp):
    acme_in, _ = acme_failed_once(tmp_path, erp.url)
    done = retry_all(tmp_path)
    assert done.returncode == 0, done.stderr
    assert listing(acme_in) == ["bad.edi"]
    assert str(acme_in) in done.stdout or "acme" in done.stdout, done.stdout


@pytest.mark.parametrize("where", ["processing", "processing/.partners/globex"])
def test_an_outbox_the_daemon_claims_from_is_refused_or_left_alone(tmp_path, erp, where):
    """acme's outbox set (by mistake) to the processing folder, or to another
    partner's processing folder: README refuses an inbox that is a folder the
    daemon writes ("it would read its own answers back"), but not an outbox
    in a folder the daemon claims from. The next start takes acme's 997 and
    TA1 as a crash's claims: runs them as jobs (globex's: refused, error
    reports in failed/) and files them in done/ or failed/, so acme never
    finds its answers. Either refuse the configuration or leave them be."""
    (globex_in,) = folders(tmp_path, "globex-in")
    outbox = tmp_path / "state" / where
    partners = (
        f'[partners.acme]\nids = ["ZZ:ACME"]\noutbox = "{outbox}"\n'
        f'[partners.globex]\nids = ["ZZ:GLOBEX"]\ninbox = "{globex_in}"\n'
    )
    try:
        settings = start(tmp_path, partners, erp.url)
    except ConfigError:
        return  # refused: fine
    (settings.paths.inbox / "a.edi").write_bytes(sent_by(make_po(2771), "ZZ:ACME"))
    assert service.run(settings, once=True) == 0
    answers = [n for n in listing(outbox) if n.endswith((".997", ".TA1"))]
    assert len(answers) == 2, listing(outbox)
    assert service.run(settings, once=True) == 0  # the next start
    assert [n for n in listing(outbox) if n.endswith((".997", ".TA1"))] == answers
    assert listing(settings.paths.done) == ["a.edi"]
    assert listing(settings.paths.failed) == []


def test_reloads_while_a_partners_order_is_at_its_erp(tmp_path, erp, daemons):
    """acme (own folder and outbox, its own ERP) has an order held at its ERP.
    A reload with a bad erp_url is refused, the old one kept; then a reload
    moves acme's ERP and outbox and renames globex while the order is still
    held: the held order is answered once by the old ERP and answered into
    the old outbox (its job ran under the old settings), the next file of
    acme goes to the new ERP and outbox, globex's next job carries its new
    name."""
    acme_in, old_out, new_out = folders(tmp_path, "acme-in", "acme-out", "acme-out-2")
    with http_server() as server:
        old_erp = Erp(server)
        old_erp.gate.clear()

        def partners(erp_url: str, outbox: Path, globex: str) -> str:
            return (
                f'[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{acme_in}"\n'
                f'outbox = "{outbox}"\nerp_url = "{erp_url}"\n'
                f'[partners.{globex}]\nids = ["ZZ:GLOBEX"]\n'
            )

        daemon = daemons(erp.url, extra=partners(old_erp.url, old_out, "globex"))
        daemon.start()
        (acme_in / "held.edi").write_bytes(sent_by(make_po(2781), "ZZ:ACME"))
        poll_until(lambda: old_erp.requests, what="acme's order at its ERP")
        daemon.sighup(partners("ftp://nowhere/orders", new_out, "globex2"))
        poll_until(lambda: daemon.events("reload_refused"), what="the bad erp_url refused")
        assert daemon.alive()
        daemon.ready.clear()
        daemon.sighup(partners(erp.url, new_out, "globex2"))
        poll_until(
            lambda: any(e.get("reason") == "reload" for e in daemon.events("daemon_stopping")),
            what="the reload draining the held order",
        )
        old_erp.gate.set()
        poll_until(daemon.ready.is_set, timeout=20, what="READY=1 after the reload")
        (acme_in / "next.edi").write_bytes(sent_by(make_po(2782), "ZZ:ACME"))
        (daemon.inbox / "g.edi").write_bytes(sent_by(make_po(2783), "ZZ:GLOBEX"))
        poll_until(
            lambda: daemon.listing(daemon.done) == ["g.edi", "held.edi", "next.edi"],
            what="every file done",
        )
        assert [po for _, po in old_erp.requests] == ["00002781"]
        assert sorted(po for _, po in erp.requests) == ["00002782", "00002783"]
        assert [n for n in daemon.listing(old_out) if n.endswith(".997")] == [
            "held.edi.123456789.997"
        ]
        assert [n for n in daemon.listing(new_out) if n.endswith(".997")] == [
            "next.edi.123456789.997"
        ]
        by_name = {j["file_name"]: j["partner"] for j in daemon.jobs()}
        assert by_name == {"held.edi": "acme", "next.edi": "acme", "g.edi": "globex2"}


def glued_gs(data: bytes) -> bytes:
    """``data`` (``~`` terminated) with the GS segment's terminator lost: its
    ST is read as more GS elements, so the group holds no readable set."""
    start = data.index(b"GS*")
    end = data.index(b"~", start)
    return data[:end] + data[end + 1 :]


def test_a_group_whose_order_was_never_read_is_not_acknowledged_as_accepted(tmp_path, erp):
    """acme's file: a good interchange, then one whose GS lost its segment
    terminator (its ST glued onto GS08). The second order is never read nor
    posted; its 997 must reject the group (README: "a rejecting 997 for every
    group that was read"), and the file is not a success. Today its 997 says
    ``AK9*E*1*0*0*5`` (accepted, with notes), echoing ``004010ST`` as its
    GS08, and the file goes to done/ as succeeded."""
    (acme_out,) = folders(tmp_path, "acme-out")
    settings = start(
        tmp_path, f'[partners.acme]\nids = ["ZZ:ACME"]\noutbox = "{acme_out}"\n', erp.url
    )
    source = (CORPUS / "botsplugins__850-004010-04.x12").read_bytes()
    data = sent_by(make_po(2791), "ZZ:ACME") + glued_gs(sent_by(source, "ZZ:ACME"))
    (settings.paths.inbox / "two.edi").write_bytes(data)
    assert service.run(settings, once=True) == 0
    assert [po for _, po in erp.requests] == ["00002791"]
    answer = (acme_out / "two.edi.1403.997").read_text()
    ak9 = next(s for s in answer.replace("\n", "").split("~") if s.startswith("AK9"))
    assert ak9.split("*")[1] == "R", answer
    assert jobs_of(tmp_path)["two.edi"]["status"] != "succeeded"


def test_every_error_report_in_the_outbox_ends_in_error_json(tmp_path, erp):
    """acme's po.edi fails, is retried (back into acme's folder) and fails
    again, acme not having removed the first report: every report acme gets
    is ``….error.json`` (as every 997 ends in ``.997``); today the second is
    ``po.edi.error.1.json``, which a partner's ``*.error.json`` never sees."""
    acme_in, acme_out = folders(tmp_path, "acme-in", "acme-out")
    partners = f'[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{acme_in}"\noutbox = "{acme_out}"\n'
    settings = start(tmp_path, partners, erp.url)
    (acme_in / "po.edi").write_bytes(sent_by(BAD, "ZZ:ACME"))
    assert service.run(settings, once=True) == 0
    assert retry_all(tmp_path).returncode == 0
    assert listing(acme_in) == ["po.edi"]
    assert service.run(settings, once=True) == 0
    reports = [n for n in listing(acme_out) if "error" in n]
    assert len(reports) == 2, listing(acme_out)
    assert all(n.endswith(".error.json") for n in reports), reports


def test_worker_processes_take_a_partners_new_erp_and_ack_settings_on_reload(tmp_path, daemons):
    """With worker processes, a reload moving acme to another ERP and outbox
    and turning its 997 off applies from the next file: the first order went
    to the first ERP with a 997 in the first outbox, the next to the second
    ERP with no 997 (its TA1 still, as ISA14 asks)."""
    first_out, second_out = folders(tmp_path, "out-1", "out-2")
    with http_server() as one, http_server() as two:
        first, second = Erp(one), Erp(two)

        def partners(erp_url: str, outbox: Path, ack: str) -> str:
            return (
                f'[partners.acme]\nids = ["ZZ:ACME"]\nerp_url = "{erp_url}"\n'
                f'outbox = "{outbox}"\nack = "{ack}"\n'
            )

        daemon = daemons(first.url, extra=partners(first.url, first_out, "997"), processes=2)
        daemon.start()
        (daemon.inbox / "1.edi").write_bytes(sent_by(make_po(2801), "ZZ:ACME"))
        poll_until(lambda: daemon.listing(daemon.done) == ["1.edi"], what="the first file done")
        daemon.reload(partners(second.url, second_out, "none"))
        (daemon.inbox / "2.edi").write_bytes(sent_by(make_po(2802), "ZZ:ACME"))
        poll_until(lambda: len(daemon.listing(daemon.done)) == 2, what="the second file done")
        assert [po for _, po in first.requests] == ["00002801"]
        assert [po for _, po in second.requests] == ["00002802"]
        assert sorted(n.rsplit(".", 1)[1] for n in listing(first_out)) == ["997", "TA1"]
        assert [n.rsplit(".", 1)[1] for n in listing(second_out)] == ["TA1"]


@pytest.mark.parametrize("alias", ["symlink", "dotdot", "shared"])
def test_an_outbox_that_is_an_inbox_under_another_name_is_refused(tmp_path, alias):
    (globex_in,) = folders(tmp_path, "globex-in")
    (tmp_path / "x").mkdir()
    shared = tmp_path / "state" / "inbox"
    shared.mkdir(parents=True)
    os.symlink(globex_in, tmp_path / "link")
    outbox = {
        "symlink": tmp_path / "link",
        "dotdot": tmp_path / "x" / ".." / "globex-in",
        "shared": shared,
    }[alias]
    partners = (
        f'[partners.acme]\nids = ["ZZ:ACME"]\noutbox = "{outbox}"\n'
        f'[partners.globex]\nids = ["ZZ:GLOBEX"]\ninbox = "{globex_in}"\n'
    )
    with pytest.raises(ConfigError, match="is the outbox of partner 'acme'"):
        start(tmp_path, partners, "")


def test_the_erps_own_words_stay_out_of_the_partners_report(tmp_path):
    (acme_out,) = folders(tmp_path, "acme-out")
    with http_server() as server:
        said = {"error": "credit hold SECRET-98765", "detail": "internal row 42"}
        server.expect_request("/orders", method="POST").respond_with_data(
            json.dumps(said), status=422, content_type="application/json"
        )
        partners = f'[partners.acme]\nids = ["ZZ:ACME"]\noutbox = "{acme_out}"\n'
        settings = start(tmp_path, partners, server.url_for("/orders"))
        (settings.paths.inbox / "x.edi").write_bytes(sent_by(make_po(2811), "ZZ:ACME"))
        assert service.run(settings, once=True) == 0
    assert listing(settings.paths.failed) == ["x.edi", "x.edi.error.json"]
    report = json.loads((acme_out / "x.edi.error.json").read_text())
    assert report["error"] == "the ERP rejected order 00002811 (HTTP 422)"
    for name in listing(acme_out):
        text = (acme_out / name).read_text()
        assert "SECRET" not in text and "row 42" not in text, name
    shown = edi(tmp_path, "jobs", "show", jobs_of(tmp_path)["x.edi"]["job_id"], "--json")
    assert "SECRET-98765" in shown.stdout  # the operator's record keeps them


def test_retry_after_a_partner_is_renamed_puts_its_file_back_into_the_watched_folder(tmp_path, erp):
    """acme is renamed acme2 (same ids, same folder, still watched). Its failed
    file came from that folder, which still vouches for the sender: retry
    puts it back there. Today retry matches the report's partner by name
    only and refuses: "it came from …, a partner's inbox no longer
    watched"."""
    acme_in, _ = acme_failed_once(tmp_path, erp.url)
    write_config(tmp_path, f'[partners.acme2]\nids = ["ZZ:ACME"]\ninbox = "{acme_in}"\n', erp.url)
    done = retry_all(tmp_path)
    assert "no longer watched" not in done.stdout, done.stdout
    assert listing(acme_in) == ["bad.edi"]


def fetch(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
        return answer.read().decode()


def answers(port: int) -> bool:
    try:
        return bool(fetch(port, "/healthz"))
    except OSError:
        return False


def test_the_web_views_per_partner_agree_with_the_cli(tmp_path, erp):
    pytest.importorskip("fastapi")
    (acme_in,) = folders(tmp_path, "acme-in")
    partners = (
        f'[partners.acme]\nids = ["ZZ:ACME"]\ninbox = "{acme_in}"\n'
        '[partners.globex]\nids = ["ZZ:GLOBEX"]\n'
    )
    settings = start(tmp_path, partners, erp.url)
    (acme_in / "a1.edi").write_bytes(sent_by(make_po(2821), "ZZ:ACME"))
    (acme_in / "a2.edi").write_bytes(sent_by(BAD, "ZZ:ACME"))
    (acme_in / "a3.edi").write_bytes(sent_by(make_po(2823), "ZZ:ACME") + sent_by(BAD, "ZZ:ACME"))
    (settings.paths.inbox / "g1.edi").write_bytes(sent_by(make_po(2824), "ZZ:GLOBEX"))
    (settings.paths.inbox / "u1.edi").write_bytes(sent_by(make_po(2825), "ZZ:OTHER"))
    assert service.run(settings, once=True) == 0
    port = free_port()
    config_file = str(tmp_path / "edi-inbox.toml")
    command = [sys.executable, "-m", "edi_inbox.cli", "--config", config_file, "serve"]
    serve = subprocess.Popen(
        [*command, "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        poll_until(lambda: answers(port), timeout=30, what="serve answering")
        for name in ("acme", "globex"):
            api = json.loads(fetch(port, f"/api/jobs/stats?partner={name}"))
            assert api == cli_json(tmp_path, "stats", "--partner", name)
            recent = json.loads(fetch(port, f"/api/jobs/recent?partner={name}&limit=50"))
            assert {j["file_name"] for j in recent} == {
                "acme": {"a1.edi", "a2.edi", "a3.edi"},
                "globex": {"g1.edi"},
            }[name]
        listed = json.loads(fetch(port, "/api/partners"))["partners"]
        assert [(p["name"], p["files"], p["failures"], p["partial"]) for p in listed] == [
            ("acme", 3, 1, 1),
            ("globex", 1, 0, 0),
        ]

        def partner_jobs() -> dict[tuple[str, str], float]:
            found = {}
            for line in fetch(port, "/metrics").splitlines():
                if line.startswith("edi_inbox_partner_jobs_total{"):
                    labels, value = line.rsplit(" ", 1)
                    partner = labels.split('partner="', 1)[1].split('"', 1)[0]
                    status = labels.split('status="', 1)[1].split('"', 1)[0]
                    found[(partner, status)] = float(value)
            return found

        counted = poll_until(partner_jobs, timeout=20, what="per-partner job counts")
        assert {k: v for k, v in counted.items() if v} == {
            ("acme", "succeeded"): 1.0,
            ("acme", "failed"): 1.0,
            ("acme", "partial"): 1.0,
            ("globex", "succeeded"): 1.0,
            ("", "succeeded"): 1.0,
        }
    finally:
        serve.terminate()
        serve.wait(20)
