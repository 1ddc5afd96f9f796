"""The command line: help everywhere, exit codes, JSON alone on stdout."""

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edi_inbox.cli import main

CORPUS = Path(__file__).parent / "data" / "corpus"
GOOD = CORPUS / "ediengine__850.OK.edi"


@pytest.fixture
def env(tmp_path):
    """A configuration rooted in tmp_path, passed the way an operator would."""
    config = tmp_path / "edi-inbox.toml"
    config.write_text(f'[paths]\nroot = "{tmp_path}/state"\n[log]\nformat = "json"\n')
    return {"EDI_INBOX_CONFIG": str(config)}


def all_commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


def test_every_command_has_help_with_an_example():
    """Each command's --help explains it and shows an example line."""
    commands = list(all_commands(main))
    assert commands
    for path, command in commands:
        assert command.help, f"{' '.join(path)} has no help text"
        if not isinstance(command, click.Group):
            assert "Example" in command.help, f"{' '.join(path)} has no example"
        result = CliRunner().invoke(main, [*path, "--help"])
        assert result.exit_code == 0, result.output


def test_process_prints_a_summary_and_exits_0(env):
    """A good file: a one-line summary naming the PO, exit 0."""
    result = CliRunner().invoke(main, ["process", str(GOOD)], env=env)
    assert result.exit_code == 0, result.output
    assert "08292233294" in result.stdout


def test_process_says_when_the_997_could_not_be_written(env, tmp_path):
    """acks/ a plain file: the order is handled (exit 0), and the summary says
    the acknowledge step failed, where and why (process does not wait)."""
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "acks").write_text("not a folder")
    result = CliRunner().invoke(main, ["process", str(GOOD)], env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok ") and "08292233294" in result.stdout
    said = f"acknowledge: not_acknowledged: no 997 written for the 1 due, not written in {tmp_path}"
    assert said in result.stdout and "Not a directory" in result.stdout


def test_process_json_is_json_alone_on_stdout(env):
    """--json prints the job as JSON and nothing else on stdout; logs go to stderr."""
    result = CliRunner().invoke(main, ["process", "--json", str(GOOD)], env=env)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["po_number"] == "08292233294"
    assert doc["total_amount"] == "13045.94"
    assert "job_finished" in result.stderr


def test_process_several_files_prints_a_list_and_fails_if_one_fails(env):
    """Several files give a JSON list; one failure makes the exit code 1."""
    bad = CORPUS / "ediengine__NonEdi.edi"
    result = CliRunner().invoke(main, ["process", "--json", str(GOOD), str(bad)], env=env)
    assert result.exit_code == 1
    docs = json.loads(result.stdout)
    assert [d["success"] for d in docs] == [True, False]


def test_process_on_a_mistyped_path_is_a_usage_error_recording_nothing(env, tmp_path):
    """A FILE that is not there, among good ones: exit 2 naming it, nothing run
    or recorded (a failed job would count an operator's typo as a failed file)."""
    missing = tmp_path / "po_4711.ed"
    result = run_cli(env, "process", str(GOOD), str(missing))
    assert result.exit_code == 2
    assert f"Path {str(missing)!r} does not exist" in result.stderr
    assert json.loads(run_cli(env, "stats", "--json").stdout)["total_jobs"] == 0


def test_process_on_a_file_in_the_watched_inbox_is_a_usage_error(env, tmp_path):
    """A FILE in the inbox the daemon watches: exit 2 naming it, nothing run
    or recorded (the daemon runs it: by hand too, the partner would be
    answered twice); a copy outside the inbox runs."""
    inbox = tmp_path / "state" / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "po.edi").write_bytes(GOOD.read_bytes())
    result = run_cli(env, "process", str(GOOD), str(inbox / ".." / "inbox" / "po.edi"))
    assert result.exit_code == 2
    assert "is in the inbox" in result.stderr and "which the daemon watches" in result.stderr
    assert json.loads(run_cli(env, "stats", "--json").stdout)["total_jobs"] == 0
    assert (inbox / "po.edi").read_bytes() == GOOD.read_bytes()
    assert run_cli(env, "process", str(GOOD)).exit_code == 0


def test_process_on_a_dangling_symlink_records_a_failed_job(env, tmp_path):
    """A symbolic link is a FILE that fails unread, whether or not it points anywhere."""
    link = tmp_path / "po.edi"
    link.symlink_to(tmp_path / "gone.edi")
    result = run_cli(env, "process", "--json", str(link))
    assert result.exit_code == 1
    assert json.loads(result.stdout)["status"] == "failed"
    assert json.loads(run_cli(env, "stats", "--json").stdout)["failed_jobs"] == 1


def test_config_error_names_the_key(tmp_path):
    """A bad configuration stops the command with a message naming the key."""
    config = tmp_path / "bad.toml"
    config.write_text("[daemon]\nworkerz = 2\n")
    result = CliRunner().invoke(main, ["--config", str(config), "process", str(GOOD)])
    assert result.exit_code == 1
    assert "workerz" in result.stderr and "did you mean 'workers'" in result.stderr


def run_cli(env, *args):
    result = CliRunner().invoke(main, list(args), env=env)
    return result


def test_process_records_the_job_for_jobs_show(env):
    """process records to the database; jobs show --json returns the same job."""
    done = json.loads(run_cli(env, "process", "--json", str(GOOD)).stdout)
    result = run_cli(env, "jobs", "show", "--json", done["job_id"][:8])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["job_id"] == done["job_id"]
    assert shown["total_amount"] == "13045.94"
    assert [s["step_name"] for s in shown["steps"]] == [s["step_name"] for s in done["steps"]]
    assert shown["orders"][0]["po_number"] == "08292233294"
    human = run_cli(env, "jobs", "show", done["job_id"])
    assert human.exit_code == 0 and "08292233294" in human.stdout and "post_to_erp" in human.stdout


def test_jobs_show_says_why_a_step_was_skipped_and_how_often_an_order_was_posted(env):
    """Plain ``jobs show``: a step skipped after a failure says why (NOTE),
    an order how many POSTs it took (POSTS), as ``--json`` holds them."""
    done = json.loads(run_cli(env, "process", "--json", str(GOOD)).stdout)
    bad = json.loads(
        run_cli(env, "process", "--json", str(CORPUS / "ediengine__NonEdi.edi")).stdout
    )
    human = run_cli(env, "jobs", "show", bad["job_id"]).stdout
    assert "NOTE" in human and "skipped: parse failed" in human, human
    first = run_cli(env, "jobs", "show", done["job_id"]).stdout
    assert "POSTS" in first, first


def test_same_file_twice_is_a_duplicate(env):
    """The same bytes processed again are recorded as a duplicate, exit 0."""
    run_cli(env, "process", str(GOOD))
    again = json.loads(run_cli(env, "process", "--json", str(GOOD)).stdout)
    assert again["status"] == "duplicate" and again["duplicate_of"]


def test_jobs_list_search_and_stats(env):
    """list, search and stats answer from the records, as tables or JSON."""
    run_cli(env, "process", str(GOOD))
    run_cli(env, "process", str(CORPUS / "ediengine__NonEdi.edi"))
    listed = json.loads(run_cli(env, "jobs", "list", "--json").stdout)
    assert [j["status"] for j in listed] == ["failed", "succeeded"]
    failed = json.loads(run_cli(env, "jobs", "list", "--status", "failed", "--json").stdout)
    assert len(failed) == 1
    found = json.loads(run_cli(env, "jobs", "search", "--po-number", "2922332", "--json").stdout)
    assert [j["po_number"] for j in found] == ["08292233294"]
    assert (
        json.loads(run_cli(env, "jobs", "search", "--failure", "--json").stdout)[0]["file_name"]
        == "ediengine__NonEdi.edi"
    )
    stats = json.loads(run_cli(env, "stats", "--json").stdout)
    assert stats["total_jobs"] == 2 and stats["successful_jobs"] == 1
    assert stats["total_amount_processed"] == "13045.94"
    table = run_cli(env, "jobs", "list")
    assert table.exit_code == 0 and "STATUS" in table.stdout and "08292233294" in table.stdout


def test_reading_commands_never_create_the_database(env, tmp_path):
    """stats, jobs list/show/search and partners on a SQLite file that is not
    there (never made, or moved away during an incident): exit 1 naming the
    missing file; no empty database appears in its place (it would read as no
    jobs at all, and a root-owned one would lock the daemon out)."""
    db = tmp_path / "state" / "edi-inbox.db"
    reads = [
        ("stats",),
        ("jobs", "list"),
        ("jobs", "show", "abc"),
        ("jobs", "search", "--po-number", "1"),
        ("partners",),
    ]
    for args in reads:
        result = run_cli(env, *args)
        assert result.exit_code == 1, (args, result.output)
        assert f"the database file {db} is missing" in result.output, args
        assert not db.exists(), args
    run_cli(env, "process", str(GOOD))  # a writer creates it
    db.rename(tmp_path / "away.db")
    for args in reads:
        assert run_cli(env, *args).exit_code == 1, args
        assert not db.exists(), args
    (tmp_path / "away.db").rename(db)
    assert json.loads(run_cli(env, "stats", "--json").stdout)["total_jobs"] == 1


def test_status_exits_3_when_no_daemon_runs(env):
    """status answers with the backlog and exits 3 when no daemon heartbeat is fresh."""
    run_cli(env, "db", "init")  # status never creates the database
    result = run_cli(env, "status", "--json")
    assert result.exit_code == 3, result.output
    doc = json.loads(result.stdout)
    assert doc["running"] is False and doc["daemons"] == []


def test_db_commands(env, tmp_path):
    """db init reports the schema version; reset needs --yes, is refused while
    a daemon's heartbeat is fresh (it would post again what it posted), and
    empties the records."""
    from datetime import UTC, datetime

    from edi_inbox import store

    assert "schema version" in run_cli(env, "db", "init").stdout
    run_cli(env, "process", str(GOOD))
    assert run_cli(env, "db", "reset").exit_code == 2
    url = f"sqlite:///{tmp_path}/state/edi-inbox.db"
    db = store.open_database(url)  # (the CLI, in this process, binds the models anew)
    store.heartbeat(db, "d1", host="h1", pid=1, version="1", started_at=datetime.now(UTC))
    store.close_database(db)
    refused = run_cli(env, "db", "reset", "--yes")
    assert refused.exit_code == 1 and "a daemon is running (h1)" in refused.output
    db = store.open_database(url)
    store.remove_daemon(db, "d1")
    store.close_database(db)
    assert run_cli(env, "db", "reset", "--yes").exit_code == 0
    assert json.loads(run_cli(env, "jobs", "list", "--json").stdout) == []
    assert run_cli(env, "db", "migrate").exit_code == 0


def test_an_offset_past_the_databases_integers_is_a_usage_error(env):
    """jobs list --offset beyond what the database can hold: a usage error
    naming the range, not a crash."""
    run_cli(env, "db", "init")
    result = run_cli(env, "jobs", "list", "--offset", "99999999999999999999")
    assert result.exit_code == 2 and "0<=x<=9223372036854775807" in result.output


def test_unknown_job_is_a_clear_error(env):
    """jobs show with an unknown id exits 1 and says so."""
    run_cli(env, "db", "init")
    result = run_cli(env, "jobs", "show", "no-such-job")
    assert result.exit_code == 1 and "no job" in result.stderr


def test_cli_creates_nothing_other_users_can_read(tmp_path):
    """Run with umask 000, process still leaves the database, folders and files closed to others."""
    root = tmp_path / "state"
    config = tmp_path / "edi-inbox.toml"
    config.write_text(f'[paths]\nroot = "{root}"\n[log]\nformat = "json"\n')
    env = {**os.environ, "EDI_INBOX_CONFIG": str(config)}
    done = subprocess.run(
        [sys.executable, "-m", "edi_inbox.cli", "process", str(GOOD)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.umask(0),
    )
    assert done.returncode == 0, done.stderr
    created = [root, *root.rglob("*")]
    names = {p.relative_to(root).as_posix() for p in created}
    assert {"edi-inbox.db", "acks", "outbox"} <= names
    assert any(p.parent.name == "acks" for p in created)  # the 997 itself
    modes = {p.relative_to(root).as_posix(): p.stat().st_mode & 0o777 for p in created}
    assert {name: oct(mode) for name, mode in modes.items() if mode & 0o027} == {}


def test_plain_status_shows_a_running_daemons_last_error():
    """A running daemon's last error (a refused reload, here) is in plain
    ``status``, not only in ``--json``, as README says."""
    from edi_inbox.cli import _status_text

    daemon = {
        "host": "h",
        "pid": 7,
        "version": "1",
        "alive": True,
        "heartbeat_age_seconds": 1.0,
        "started_at": "2026-12-05T10:00:00+00:00",
        "counters": {"queue": 0},
        "last_error": "reload refused, the running configuration is kept: bad key",
    }
    doc = {
        "daemons": [daemon],
        "inbox": {"waiting": 0, "oldest_age_seconds": None},
        "folders": {"processing": 0},
        "last_24h": {"succeeded": 0, "failed": 0, "duplicate": 0},
    }
    assert "  its last error: reload refused, the running configuration is kept" in (
        _status_text(doc)
    )


WITHOUT_PSYCOPG2 = (
    "import sys; sys.modules['psycopg2'] = None; sys.modules['psycopg2.extensions'] = None; "
    "from edi_inbox.cli import main; main(prog_name='edi-inbox')"
)


def test_sqlite_needs_no_postgres_driver(env, tmp_path):
    """README's install (``pip install -e .``) has no psycopg2, the
    ``postgres`` extra: the CLI runs on SQLite without it, and a
    postgresql:// URL says what to install."""
    run = {**os.environ, **env, "PYTHONPATH": str(Path(__file__).parent.parent / "daemon")}
    command = [sys.executable, "-c", WITHOUT_PSYCOPG2]
    done = subprocess.run([*command, "process", str(GOOD)], env=run, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    listed = subprocess.run([*command, "jobs", "list"], env=run, capture_output=True, text=True)
    assert listed.returncode == 0 and "08292233294" in listed.stdout, listed.stderr[-2000:]
    pg = {**run, "EDI_INBOX_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    refused = subprocess.run([*command, "stats"], env=pg, capture_output=True, text=True)
    assert refused.returncode != 0 and "edi-inbox[postgres]" in refused.stderr, refused.stderr


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--since", "9999-12-31T23:59", "out of range"),
        ("--until", "0001-01-01T00:00+14:00", "out of range"),
        ("--since", "2026-13-45", "is not a date"),
    ],
)
def test_a_date_the_queries_cannot_reach_is_a_usage_error(env, option, value, said):
    """--since/--until at the ends of the calendar: a usage error (exit 2)
    saying so, as the HTTP API's 422 does (``queries.moment``), never a
    traceback from the day's bounds overflowing."""
    run_cli(env, "process", str(GOOD))
    commands = (["stats"], ["jobs", "search"]) if option == "--since" else (["jobs", "search"],)
    for command in commands:
        result = run_cli(env, *command, option, value)
        assert result.exit_code == 2 and said in result.stderr, (command, result.output)
