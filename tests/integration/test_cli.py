"""The `cabbage` command against a real PostgreSQL: every sub-command, good and bad input.

Most run in process (``main(argv)``); a few run the installed ``cabbage`` script as a
subprocess, as operators and scripts do. Errors are one line on stderr with a named exit status.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import zoneinfo
from pathlib import Path
from typing import Iterator

import pytest
from psycopg2.extensions import make_dsn, parse_dsn

from cabbage.cli import main
from cabbage.cli.exit_codes import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from cabbage.jobs import Outcome, Status
from cabbage.schema import CURRENT_VERSION, apply_schema
from tests.integration.job_states import BOOM, TRACEBACK, age_finished_jobs, execute

CABBAGE_SCRIPT = Path(sys.executable).parent / "cabbage"
DAY_S = 86400.0


# main() configures logging for its process, as an entry point must: undone after each test.
pytestmark = pytest.mark.usefixtures("logging_as_it_was")


@pytest.fixture
def run(db_dsn: str, capsys: pytest.CaptureFixture[str]):
    """Runs ``cabbage --dsn <test db> ARGS`` in process: (exit status, stdout, stderr)."""

    def run_command(*argv: str, dsn: str = db_dsn) -> tuple[int, str, str]:
        status = main(["--dsn", dsn, *argv])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run_command


def run_script(*argv: str, dsn: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert CABBAGE_SCRIPT.exists(), f"the cabbage script is not installed next to {sys.executable}"
    environment = {**os.environ, "CABBAGE_DSN": dsn}
    return subprocess.run(
        [str(CABBAGE_SCRIPT), *argv], env=environment, capture_output=True, text=True, timeout=60, cwd=cwd
    )


def unreachable_dsn(password: str) -> str:
    return f"host=127.0.0.1 port=1 user=app password={password} connect_timeout=2"


# -- schema and healthcheck ---------------------------------------------------------------------


def test_schema_check_apply_and_healthcheck_on_a_database_without_schema(empty_dsn):
    checked = run_script("schema", "check", dsn=empty_dsn)
    assert checked.returncode == EXIT_FAILED
    assert checked.stderr.strip().endswith("run 'cabbage schema apply'")
    assert run_script("healthcheck", dsn=empty_dsn).returncode == EXIT_FAILED

    applied = run_script("schema", "apply", dsn=empty_dsn)
    assert applied.returncode == EXIT_OK, applied.stderr
    assert applied.stdout == f"schema is at version {CURRENT_VERSION}\n"
    again = run_script("schema", "apply", "--json", dsn=empty_dsn)
    assert json.loads(again.stdout) == {"version": CURRENT_VERSION}

    assert run_script("schema", "check", dsn=empty_dsn).returncode == EXIT_OK
    healthy = run_script("healthcheck", "--json", dsn=empty_dsn)
    assert healthy.returncode == EXIT_OK and json.loads(healthy.stdout) == {"healthy": True}


def test_healthcheck_fails_on_an_unreachable_database_without_showing_the_password(run):
    status, out, err = run("healthcheck", dsn=unreachable_dsn("hunter2"))
    assert status == EXIT_FAILED
    assert out.startswith("unhealthy: cannot connect to host=127.0.0.1 port=1 user=app password=***")
    assert "hunter2" not in out + err


def test_an_unreachable_database_is_one_line_and_exit_1(run):
    status, out, err = run("jobs", "list", dsn=unreachable_dsn("hunter2"))
    assert status == EXIT_FAILED and out == ""
    assert err.startswith("cabbage: cannot connect to") and err.count("\n") == 1
    assert "hunter2" not in err


# -- defer --------------------------------------------------------------------------------------


def test_defer_by_task_name_with_positional_arguments_lock_and_delay(db_dsn, jobs):
    result = run_script(
        "defer", "proj.tasks.write_alphabet", "--args", '["a", 1]', "--lock", "/tmp/alphabet.txt",
        "--queue", "queue", "--schedule-in", "1h30m", "--max-attempts", "3", "--json", dsn=db_dsn,
    )
    assert result.returncode == EXIT_OK, result.stderr
    job = jobs.store.get_job(json.loads(result.stdout)["job_id"])
    assert (job.task_name, job.args, job.kwargs, job.lock, job.queue, job.status, job.max_attempts) == (
        "proj.tasks.write_alphabet", ("a", 1), {}, "/tmp/alphabet.txt", "queue", Status.TODO, 3,
    )
    (delay_s,) = execute(db_dsn, "SELECT extract(epoch FROM scheduled_at - now()) FROM cabbage_jobs WHERE id = %s", (job.id,))[0]
    assert 5300 < delay_s <= 5400  # on the database clock


def test_defer_with_keyword_arguments_at_a_given_time(run, jobs):
    status, out, err = run("defer", "clean", "--args", '{"crash_everything": true}', "--schedule-at", "2038-01-19T03:14:07+00:00")
    assert status == EXIT_OK, err
    assert out.startswith("deferred job ") and out.endswith(": task clean on queue default\n")
    job = jobs.store.get_job(int(out.split()[2].rstrip(":")))
    assert job.kwargs == {"crash_everything": True} and job.args == ()
    assert job.scheduled_at == datetime.datetime(2038, 1, 19, 3, 14, 7, tzinfo=datetime.timezone.utc)


def test_defer_with_a_priority_and_a_queueing_lock(run, jobs):
    status, out, err = run("defer", "refresh", "--priority", "-7", "--queueing-lock", "user-42", "--json")
    assert status == EXIT_OK, err
    job = jobs.store.get_job(json.loads(out)["job_id"])
    assert (job.priority, job.queueing_lock) == (-7, "user-42")

    status, out, err = run("defer", "refresh", "--queueing-lock", "user-42")
    assert (status, out) == (EXIT_FAILED, "")
    assert err == (
        f"cabbage: queueing lock 'user-42' is held by job {job.id}, which is waiting; nothing was deferred (one todo "
        f"job per queueing lock: defer again once job {job.id} has started or was cancelled)\n"
    )
    assert execute(jobs.dsn, "SELECT count(*) FROM cabbage_jobs") == [(1,)]


def test_defer_with_bad_json_inserts_nothing(run, jobs):
    status, out, err = run("defer", "clean", "--args", "[1,")
    assert status == 2 and "not valid JSON" in err
    assert execute(jobs.dsn, "SELECT count(*) FROM cabbage_jobs") == [(0,)]


MAIL_APP = """
import cabbage

task_manager = cabbage.TaskManager()


@task_manager.task(queue="mail", lock="smtp", retry=2)
def send(to):
    pass
"""


def test_defer_with_app_takes_the_tasks_queue_lock_and_retry_limit(db_dsn, jobs, tmp_path):
    (tmp_path / "mailapp.py").write_text(MAIL_APP)
    result = run_script("defer", "mailapp.send", "--app", "mailapp", "--args", '["ann@example.org"]', "--json", dsn=db_dsn, cwd=tmp_path)
    assert result.returncode == EXIT_OK, result.stderr
    job = jobs.store.get_job(json.loads(result.stdout)["job_id"])
    assert (job.queue, job.lock, job.max_attempts, job.args) == ("mail", "smtp", 3, ("ann@example.org",))
    given = run_script(
        "defer", "mailapp.send", "--app", "mailapp:task_manager", "--queue", "urgent", "--max-attempts", "1", "--json",
        dsn=db_dsn, cwd=tmp_path,
    )
    job = jobs.store.get_job(json.loads(given.stdout)["job_id"])
    assert (job.queue, job.lock, job.max_attempts) == ("urgent", "smtp", 1)


def test_defer_with_app_refuses_a_task_the_app_does_not_declare(db_dsn, jobs, tmp_path):
    (tmp_path / "mailapp.py").write_text(MAIL_APP)
    refused = run_script("defer", "mailapp.sned", "--app", "mailapp", dsn=db_dsn, cwd=tmp_path)
    assert (refused.returncode, refused.stdout) == (EXIT_USAGE, "")
    assert refused.stderr == "cabbage: task 'mailapp.sned' is not declared in this app (known: mailapp.send)\n"
    missing = run_script("defer", "mailapp.send", "--app", "nosuchapp", dsn=db_dsn, cwd=tmp_path)
    assert missing.returncode == EXIT_FAILED
    assert missing.stderr == "cabbage: cannot import app 'nosuchapp': No module named 'nosuchapp'\n"
    assert execute(jobs.dsn, "SELECT count(*) FROM cabbage_jobs") == [(0,)]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--schedule-at", "9999-12-31T23:59:59-05:00", "schedule_at 9999-12-31T23:59:59-05:00 is outside the times a job can be scheduled at"),
        ("--schedule-at", "0001-01-01T00:00:00+14:00", "schedule_at 0001-01-01T00:00:00+14:00 is outside the times a job can be scheduled at"),
        ("--schedule-in", "500000w", "ends after 9999-12-30T23:59:59.999999+00:00, the latest a job can be scheduled at"),
    ],
)
def test_defer_refuses_a_schedule_outside_the_range_and_inserts_nothing(run, jobs, option, value, message):
    status, out, err = run("defer", "clean", option, value)
    assert (status, out) == (EXIT_USAGE, "")
    assert err.startswith(f"cabbage defer: argument {option}: ") and message in err and err.count("\n") == 1
    assert execute(jobs.dsn, "SELECT count(*) FROM cabbage_jobs") == [(0,)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ('{"floor": 1, "floor": 2}', "cabbage defer: argument --args: has the key 'floor' more than once; JSON would keep only its last value"),
        (f"[{'9' * 4301}]", "cabbage defer: argument --args: has an int of 4301 digits, more than a job can carry (4300); pass it as a string"),
        ("[" * 20_000 + "]" * 20_000, "cabbage defer: argument --args: nests lists and objects more than 100 deep, more than a job can carry"),
        ("[" * 102 + "]" * 102, "cabbage: argument 1 of clean is not JSON-serialisable (lists and dicts nested more than 100 deep"),
        ('["\\ud800"]', "cabbage: argument 1 of clean is not JSON-serialisable (str with the surrogate '\\ud800', which UTF-8 cannot encode)"),
        ('{"floor": "a\\u0000"}', "cabbage: argument 'floor' of clean is not JSON-serialisable (str with a NUL character"),
    ],
    ids=["repeated-key", "long-int", "too-deep-to-read", "too-deep", "surrogate", "nul"],
)
def test_defer_refuses_arguments_a_job_cannot_carry_in_one_line(run, jobs, args, message):
    status, out, err = run("defer", "clean", "--args", args)
    assert (status, out) == (EXIT_USAGE, "")
    assert err.startswith(message) and err.count("\n") == 1
    assert execute(jobs.dsn, "SELECT count(*) FROM cabbage_jobs") == [(0,)]


def test_defer_refuses_arguments_over_a_megabyte(run, jobs):
    status, _, err = run("defer", "clean", "--args", json.dumps(["x" * 1_000_000]))
    assert status == EXIT_USAGE
    assert err == (
        "cabbage: arguments of clean are 1,000,006 bytes of JSON, over the store's max_arguments_bytes of 1,000,000; "
        "store large data elsewhere and pass its key, or raise max_arguments_bytes\n"
    )
    assert execute(jobs.dsn, "SELECT count(*) FROM cabbage_jobs") == [(0,)]


def test_defer_refuses_a_queue_that_is_not_utf_8(run, jobs):
    status, _, err = run("defer", "clean", "--queue", os.fsdecode(b"mail\xff"))
    assert status == EXIT_USAGE
    assert err.startswith("cabbage defer: argument --queue: must be a non-empty text without NUL characters or bytes that are not UTF-8")
    assert execute(jobs.dsn, "SELECT count(*) FROM cabbage_jobs") == [(0,)]


# -- jobs list and show -------------------------------------------------------------------------


def test_jobs_list_filters_newest_first_and_pages_by_cursor(run, jobs):
    first, second, third = (jobs.todo("tasks.a", queue="q", lock="L") for _ in range(3))
    other = jobs.todo("tasks.b", queue="r")
    failed = jobs.failed("tasks.a")

    status, out, _ = run("jobs", "list", "--task", "tasks.a", "--json")
    assert status == EXIT_OK
    listed = json.loads(out)
    assert [job["id"] for job in listed["jobs"]] == [failed, third, second, first]
    assert listed["next_cursor"] is None

    page = json.loads(run("jobs", "list", "--queue", "q", "--limit", "2", "--json")[1])
    assert [job["id"] for job in page["jobs"]] == [third, second] and page["next_cursor"] == second
    rest = json.loads(run("jobs", "list", "--queue", "q", "--limit", "2", "--before", str(second), "--json")[1])
    assert [job["id"] for job in rest["jobs"]] == [first] and rest["next_cursor"] is None

    only_failed = json.loads(run("jobs", "list", "--status", "failed", "--json")[1])["jobs"]
    assert [job["id"] for job in only_failed] == [failed]
    assert only_failed[0]["last_error"] == {"type": "RuntimeError", "message": "boom", "traceback": None}
    assert not {"args", "kwargs"} & set(only_failed[0]), "a listing carries no arguments"
    assert [job["id"] for job in json.loads(run("jobs", "list", "--lock", "L", "--json")[1])["jobs"]] == [third, second, first]
    assert other not in [job["id"] for job in json.loads(run("jobs", "list", "--queue", "q", "--json")[1])["jobs"]]


def test_jobs_list_table(run, jobs):
    job_id = jobs.todo("tasks.a", args=("x",), lock="\x1b[31mred")
    status, out, _ = run("jobs", "list")
    header, row = out.splitlines()
    assert header.split() == ["ID", "STATE", "PRIORITY", "QUEUE", "TASK", "LOCK", "QUEUEING", "LOCK", "ATTEMPTS",
                              "CREATED", "(UTC)", "LAST", "ERROR"]
    assert row.split()[:6] == [str(job_id), "waiting", "0", "default", "tasks.a", "\\x1b[31mred"]  # escaped, not obeyed
    assert run("jobs", "list", "--status", "failed")[1] == "(no job matches)\n"


def test_jobs_list_tells_todo_jobs_apart_and_shows_priorities_and_queueing_locks(run, jobs):
    head = jobs.todo("tasks.a", lock="L", priority=3, scheduled_at=datetime.datetime(2038, 1, 19, tzinfo=datetime.timezone.utc))
    behind = jobs.todo("tasks.a", lock="L", queueing_lock="Q")
    due = jobs.todo("tasks.b", priority=-1)
    listed = {job["id"]: job for job in json.loads(run("jobs", "list", "--json")[1])["jobs"]}
    assert [(listed[job_id]["state"], listed[job_id]["waiting_behind_job_id"]) for job_id in (head, behind, due)] == [
        ("scheduled", None), ("behind_lock", head), ("waiting", None)
    ]
    assert (listed[head]["priority"], listed[behind]["queueing_lock"], listed[due]["status"]) == (3, "Q", "todo")
    rows = {line.split()[0]: line for line in run("jobs", "list")[1].splitlines()[1:]}
    assert rows[str(behind)].split()[:6] == [str(behind), "waiting", "behind", "job", f"#{head}", "0"]
    assert rows[str(head)].split()[:3] == [str(head), "scheduled", "3"]
    assert rows[str(due)].split()[:3] == [str(due), "waiting", "-1"]


def test_filters_with_sql_are_values_not_statements(run, jobs):
    jobs.todo()
    status, out, _ = run("jobs", "list", "--lock", "x' OR '1'='1", "--queue", "default'; DROP TABLE cabbage_jobs; --")
    assert (status, out) == (EXIT_OK, "(no job matches)\n")
    assert execute(jobs.dsn, "SELECT count(*) FROM cabbage_jobs") == [(1,)]


def test_jobs_show_a_failed_job_with_its_traceback(run, jobs):
    job_id = jobs.failed("tasks.crash", args=("a",), kwargs={"floor": 3})
    status, out, _ = run("jobs", "show", str(job_id))
    assert status == EXIT_OK
    assert f"id:            {job_id}" in out
    assert "args:          \"a\", floor=3" in out
    assert "attempts:      1 of 1" in out
    assert "last error:    RuntimeError: boom" in out
    assert "traceback:\n    Traceback (most recent call last):\n" in out
    shown = json.loads(run("jobs", "show", str(job_id), "--json")[1])
    assert shown["status"] == "failed" and shown["last_error"]["traceback"].endswith("RuntimeError: boom\n")


def test_jobs_show_lists_the_attempts(run, jobs):
    job_id = jobs.todo("tasks.flaky", queue="flaky", max_attempts=3, priority=2, queueing_lock="flaky-1")
    for outcome in (Outcome.retry(BOOM, retry_in_s=0), Outcome.succeeded()):
        (claimed,) = jobs.store.claim_jobs(jobs.worker_id, ["flaky"])
        assert jobs.store.finish_job(job_id, jobs.worker_id, claimed.attempts, outcome)
    status, out, _ = run("jobs", "show", str(job_id))
    assert status == EXIT_OK
    assert "queueing lock: flaky-1" in out and "priority:      2" in out and "state:         succeeded" in out
    table = out[out.index("attempts (the last 2 of 2):"):].splitlines()
    assert table[1].split() == ["ATTEMPT", "OUTCOME", "WORKER", "STARTED", "(UTC)", "FINISHED", "(UTC)", "DURATION",
                                "ERROR"]
    assert table[2].split()[:3] == ["1", "retried", str(jobs.worker_id)] and table[2].endswith("RuntimeError: boom")
    assert table[3].split()[:3] == ["2", "succeeded", str(jobs.worker_id)]
    shown = json.loads(run("jobs", "show", str(job_id), "--json")[1])
    assert [(attempt["attempt"], attempt["outcome"], attempt["error"]) for attempt in shown["attempt_history"]] == [
        (1, "retried", {"type": "RuntimeError", "message": "boom", "traceback": TRACEBACK}), (2, "succeeded", None)
    ]


def test_jobs_show_cuts_huge_arguments_and_errors_and_says_so(run, jobs):
    job_id = jobs.failed()
    execute(jobs.dsn, "UPDATE cabbage_jobs SET args = jsonb_build_array(repeat('a', 1000000)),"
                      " last_error_traceback = repeat('t', 1000000) WHERE id = %s", (job_id,))  # fmt: skip
    status, out, _ = run("jobs", "show", str(job_id))
    assert status == EXIT_OK and len(out) < 50_000
    assert out.count("more characters, ") == 2  # the arguments and the traceback, each marked
    shown = json.loads(run("jobs", "show", str(job_id), "--json")[1])
    assert shown["args"] is None and shown["arguments_preview"].startswith('{"args": ["aaa')


def test_jobs_show_an_unknown_id_is_exit_3(run):
    assert run("jobs", "show", "424242") == (EXIT_NOT_FOUND, "", "cabbage: no job with id 424242\n")


# -- retry and cancel ---------------------------------------------------------------------------


def test_jobs_retry_sends_failed_jobs_back_to_todo_keeping_attempts(run, jobs):
    failed = [jobs.failed(), jobs.failed()]
    status, out, _ = run("jobs", "retry", *map(str, failed))
    assert (status, out) == (EXIT_OK, f"retried 2 job(s): {failed[0]}, {failed[1]}\n")
    for job_id in failed:
        job = jobs.store.get_job(job_id)
        assert (job.status, job.attempts, job.worker_id, job.finished_at) == (Status.TODO, 1, None, None)
    (claimed,) = jobs.store.claim_jobs(jobs.worker_id, ["finishing-failed"])
    assert claimed.id == failed[0] and claimed.attempts == 2  # runnable again


def test_jobs_retry_is_all_or_nothing(run, jobs):
    failed, todo = jobs.failed(), jobs.todo()
    status, out, err = run("jobs", "retry", str(failed), str(todo))
    assert status == EXIT_FAILED and out == ""
    assert err == (f"cabbage: cannot retry: job {todo} is todo (only cancelled or failed jobs can be retried);"
                   " no job was changed\n")
    assert jobs.status_of(failed) is Status.FAILED

    status, _, err = run("jobs", "retry", str(failed), "987654")
    assert status == EXIT_NOT_FOUND and "no job with id 987654; no job was changed" in err
    assert jobs.status_of(failed) is Status.FAILED


def test_jobs_retry_by_status_and_task(run, jobs):
    crash, other, cancelled = jobs.failed("tasks.crash"), jobs.failed("tasks.other"), jobs.todo("tasks.crash")
    run("jobs", "cancel", str(cancelled))
    status, out, _ = run("jobs", "retry", "--status", "failed", "--task", "tasks.crash", "--json")
    assert status == EXIT_OK and json.loads(out) == {"retried": [crash]}
    assert [jobs.status_of(job_id) for job_id in (crash, other, cancelled)] == [Status.TODO, Status.FAILED, Status.CANCELLED]
    assert run("jobs", "retry", "--status", "cancelled")[1] == f"retried 1 job(s): {cancelled}\n"
    assert run("jobs", "retry", "--status", "cancelled")[1] == "retried 0 job(s): none matched\n"


def test_jobs_cancel_a_todo_job(run, jobs):
    job_id = jobs.todo()
    assert run("jobs", "cancel", str(job_id)) == (EXIT_OK, f"cancelled 1 job(s): {job_id}\n", "")
    job = jobs.store.get_job(job_id)
    assert job.status is Status.CANCELLED and job.finished_at is not None


def test_a_doing_job_cannot_be_cancelled_and_nothing_changes(run, jobs):
    todo, doing = jobs.todo(), jobs.doing()
    status, out, err = run("jobs", "cancel", str(todo), str(doing))
    assert status == EXIT_FAILED and out == ""
    assert f"cannot cancel: job {doing} is doing" in err
    assert "a doing job belongs to its worker until its attempt ends: abort it instead); no job was changed" in err
    assert (jobs.status_of(todo), jobs.status_of(doing)) == (Status.TODO, Status.DOING)


def test_cancelling_unknown_ids_names_them(run, jobs):
    status, _, err = run("jobs", "cancel", "55555", "66666")
    assert (status, err) == (EXIT_NOT_FOUND, "cabbage: cannot cancel: no job with id 55555, 66666; no job was changed\n")


def test_abort_cancels_a_waiting_job_and_asks_the_worker_of_a_running_one(run, jobs):
    todo, doing = jobs.todo(), jobs.doing()
    status, out, err = run("jobs", "abort", str(todo), str(doing), "--by", "alice")
    assert (status, err) == (EXIT_OK, "")
    assert out == f"cancelled 1 waiting job(s): {todo}; asked the workers of 1 running job(s) to stop them: {doing}\n"
    assert (jobs.status_of(todo), jobs.status_of(doing)) == (Status.CANCELLED, Status.DOING)
    assert jobs.store.abort_requests_of(jobs.worker_id) == {doing: "alice"}


def test_abort_names_who_runs_it_unless_told(run, jobs):
    doing = jobs.doing()
    status, out, _ = run("jobs", "abort", str(doing), "--json")
    answer = json.loads(out)
    assert status == EXIT_OK and answer["abort_requested"] == [doing] and "@" in answer["aborted_by"]
    assert jobs.store.abort_requests_of(jobs.worker_id) == {doing: answer["aborted_by"]}


def test_abort_refuses_finished_jobs_and_bad_names_changing_nothing(run, jobs):
    todo, done = jobs.todo(), jobs.succeeded()
    status, out, err = run("jobs", "abort", str(todo), str(done))
    assert status == EXIT_FAILED and out == "" and f"cannot abort: job {done} is succeeded" in err
    status, _, err = run("jobs", "abort", str(todo), "--by", " ")
    assert status != EXIT_OK and "who asks" in err
    assert jobs.status_of(todo) is Status.TODO


# -- prune --------------------------------------------------------------------------------------


def test_jobs_prune_deletes_finished_jobs_past_the_age_only(run, jobs):
    old_succeeded, old_failed = jobs.succeeded(), jobs.failed()
    recent, waiting, running = jobs.succeeded(), jobs.todo(), jobs.doing()
    age_finished_jobs(jobs.dsn, [old_succeeded, old_failed], 8 * DAY_S)
    execute(jobs.dsn, "UPDATE cabbage_jobs SET created_at = now() - interval '30 days' WHERE id = %s", (waiting,))

    status, out, _ = run("jobs", "prune", "--older-than", "7d", "--status", "succeeded")
    assert (status, out) == (EXIT_OK, "pruned 1 job(s) finished (succeeded) more than 1w ago\n")
    assert jobs.store.get_job(old_succeeded) is None and jobs.store.get_job(old_failed) is not None

    assert json.loads(run("jobs", "prune", "--older-than", "7d", "--json")[1]) == {"deleted": 1}
    remaining = {row[0] for row in execute(jobs.dsn, "SELECT id FROM cabbage_jobs")}
    assert remaining == {recent, waiting, running}


def test_jobs_prune_with_a_bad_duration(run):
    status, _, err = run("jobs", "prune", "--older-than", "seven days")
    assert status == 2 and "cannot read duration 'seven days'" in err


# -- workers and stats --------------------------------------------------------------------------


def test_workers_shows_host_pid_heartbeat_and_current_job(run, jobs):
    job_id = jobs.doing("tasks.slow")
    status, out, _ = run("workers")
    header, row = out.splitlines()
    assert header.split()[:4] == ["WORKER", "HOST", "PID", "HEARTBEAT"]
    assert row.split()[:6] == [str(jobs.worker_id), "test-host", "4242", row.split()[3], str(job_id), "tasks.slow"]
    (worker,) = json.loads(run("workers", "--json")[1])["workers"]
    assert worker["current_job_id"] == job_id and 0 <= worker["heartbeat_age_s"] < 60


def test_workers_when_none_is_registered(run, db_dsn):
    assert run("workers") == (EXIT_OK, "(no worker is registered)\n", "")


def test_stats_counts_by_queue_and_status_with_the_oldest_waiting_job(run, jobs):
    oldest = jobs.todo(queue="mail")
    jobs.todo(queue="mail")
    jobs.succeeded()
    execute(jobs.dsn, "UPDATE cabbage_jobs SET scheduled_at = now() - interval '90 seconds' WHERE id = %s", (oldest,))
    status, out, _ = run("stats", "--json")
    assert status == EXIT_OK
    stats = json.loads(out)
    counts = {(count["queue"], count["status"]): count["jobs"] for count in stats["counts"]}
    assert counts == {("mail", "todo"): 2, ("finishing-succeeded", "succeeded"): 1}
    (waiting,) = stats["oldest_waiting"]
    assert waiting["queue"] == "mail" and waiting["job_id"] == oldest and 90 <= waiting["waiting_s"] < 150
    assert stats["jobs_per_minute"] == 0.2  # one job in the last five minutes

    table = run("stats")[1].splitlines()
    assert table[0].split() == ["QUEUE", "WAITING", "SCHEDULED", "BEHIND", "LOCK", "DOING", "SUCCEEDED", "FAILED",
                                "CANCELLED", "OLDEST", "WAITING", "JOB"]
    assert table[2].split()[:5] == ["mail", "2", "0", "0", "0"] and table[2].split()[-1] == str(oldest)
    assert table[-1] == "jobs per minute (last 5m): 0.2"


NO_SCHEMA = f"database has no cabbage schema, this cabbage needs version {CURRENT_VERSION}: run 'cabbage schema apply'\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["stats"], ["workers"], ["jobs", "list"], ["jobs", "show", "1"], ["jobs", "retry", "1"],
        ["jobs", "retry", "--status", "failed"], ["jobs", "cancel", "1"], ["jobs", "abort", "1"], ["jobs", "prune", "--older-than", "7d"],
        ["defer", "clean"], ["schema", "check"], ["schema", "dump"],
    ],
    ids=" ".join,
)
def test_every_command_on_a_database_without_schema_names_the_command_that_fixes_it(empty_dsn, argv):
    result = run_script(*argv, dsn=empty_dsn)
    assert (result.returncode, result.stdout, result.stderr) == (EXIT_FAILED, "", f"cabbage: {NO_SCHEMA}")


def test_healthcheck_on_a_database_without_schema_is_unhealthy_with_the_fix(empty_dsn):
    result = run_script("healthcheck", dsn=empty_dsn)
    assert (result.returncode, result.stdout, result.stderr) == (EXIT_FAILED, f"unhealthy: {NO_SCHEMA}", "")


def test_a_command_on_an_older_schema_names_its_version_and_the_fix(empty_dsn):
    apply_schema(empty_dsn, target_version=1)
    result = run_script("defer", "clean", dsn=empty_dsn)
    assert result.returncode == EXIT_FAILED
    assert result.stderr == f"cabbage: database schema is at version 1, this cabbage needs {CURRENT_VERSION}: run 'cabbage schema apply'\n"


# -- web ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def running_web(dsn: str, *argv: str, token: str | None = None) -> Iterator[tuple[subprocess.Popen, dict]]:
    """A real ``cabbage web --port 0`` process and its ``web_server_started`` line; killed at the end."""
    environment = {key: value for key, value in os.environ.items() if key not in ("CABBAGE_DSN", "CABBAGE_WEB_TOKEN")}
    if token is not None:
        environment["CABBAGE_WEB_TOKEN"] = token
    server = subprocess.Popen(
        [str(CABBAGE_SCRIPT), "web", "--dsn", dsn, "--port", "0", *argv],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        started = json.loads(server.stdout.readline())  # JSON log lines: stdout is not a terminal
        assert started["event"] == "web_server_started", started
        yield server, started
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def stop_web(server: subprocess.Popen) -> tuple[list[dict], str]:
    """SIGTERM, then every later log line (each must be JSON) and stderr."""
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=15) == EXIT_OK
    return [json.loads(line) for line in server.stdout.read().splitlines()], server.stderr.read()


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_web_serves_until_sigterm_and_logs_its_address(db_dsn, jobs):
    job_id = jobs.todo()
    with running_web(db_dsn, "--log-level", "info") as (server, started):
        assert started["read_only"] is True
        assert started["url"].startswith("http://127.0.0.1:") and "password" not in started["database"]
        status, body = fetch(f"{started['url']}api/v1/jobs/{job_id}")
        assert status == 200 and json.loads(body)["status"] == "todo"
        lines, _ = stop_web(server)
        assert any(line["event"] == "web_server_stopped" for line in lines)


# -- passwords: none in any output, log line or process title ------------------------------------

PASSWORD = "Zq7?Xv/9w#Q@:%+= 'k\\"


def pieces_of_the_password() -> set[str]:
    encoded = urllib.parse.quote(PASSWORD, safe="")
    return {secret[start : start + 3] for secret in (PASSWORD, encoded) for start in range(len(secret) - 2)}


def assert_no_piece_of_the_password(text: str) -> None:
    leaked = sorted(piece for piece in pieces_of_the_password() if piece in text)
    assert not leaked, f"{leaked} of the password in {text[:2000]!r}"


def dsns_with_the_password(pg_dsn: str) -> dict[str, str]:
    """The test server's DSN with the password in each form; trust auth ignores a readable one."""
    server = parse_dsn(pg_dsn)
    where = f"{server.get('host', '127.0.0.1')}:{server.get('port', '5432')}/{server['dbname']}"
    quoted = "'" + PASSWORD.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return {
        "uri raw": f"postgresql://{server.get('user', 'postgres')}:{PASSWORD}@{where}",
        "uri percent-encoded": f"postgresql://{server.get('user', 'postgres')}:{urllib.parse.quote(PASSWORD, safe='')}@{where}",
        "keyword bare": make_dsn(pg_dsn) + f" password={PASSWORD}",
        "keyword quoted": make_dsn(pg_dsn) + f" password={quoted}",
    }


@pytest.mark.parametrize("form", ["uri raw", "uri percent-encoded", "keyword bare", "keyword quoted"])
def test_web_shows_no_password_in_its_title_pages_answers_or_log_lines(db_dsn, form):
    dsn = dsns_with_the_password(db_dsn)[form]
    with running_web(dsn, "--log-level", "debug", token="correct-horse-battery-staple") as (server, started):
        command_line = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode(errors="replace")
        assert command_line.startswith("cabbage web: http://127.0.0.1:"), command_line
        assert_no_piece_of_the_password(command_line)
        answers = [fetch(started["url"] + path) for path in ("", "jobs", "api/v1/jobs", "api/v1/stats", "metrics")]
        lines, stderr = stop_web(server)
    readable = form in ("uri percent-encoded", "keyword quoted")  # libpq reads these as meant
    assert {status for status, _ in answers} == ({200} if readable else {200, 503}), answers
    for text in [stderr, json.dumps(started), *map(json.dumps, lines), *(body for _, body in answers)]:
        assert_no_piece_of_the_password(text)


@pytest.mark.parametrize("form", ["uri raw", "keyword bare"])
def test_a_command_shows_no_password_in_its_error(db_dsn, form):
    completed = run_script("stats", "--dsn", dsns_with_the_password(db_dsn)[form], "--log-level", "debug", dsn="")
    assert completed.returncode == EXIT_FAILED
    assert completed.stderr.startswith("cabbage: cannot connect to ") and completed.stderr.count("\n") == 1
    assert_no_piece_of_the_password(completed.stdout + completed.stderr)


# -- the access log -------------------------------------------------------------------------------

WEB_TOKEN = "access-log-token-0123456789"


def test_web_logs_each_request_as_json_without_its_token_or_query(db_dsn, jobs):
    failed = jobs.failed()
    with running_web(db_dsn, token=WEB_TOKEN) as (server, started):
        base = started["url"].rstrip("/")
        requests = [
            urllib.request.Request(f"{base}/jobs?status=failed&token={WEB_TOKEN}"),
            urllib.request.Request(f"{base}/login", data=urllib.parse.urlencode({"token": WEB_TOKEN, "next": "/"}).encode()),
            urllib.request.Request(f"{base}/login", data=b"token=wrong-token-guessed-here"),
            urllib.request.Request(f"{base}/api/v1/jobs/{failed}/retry", method="POST",
                                   headers={"Authorization": f"Bearer {WEB_TOKEN}"}),
            urllib.request.Request(f"{base}/no/such/page"),
        ]  # fmt: skip
        statuses = []
        for request in requests:
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    statuses.append(answer.status)
            except urllib.error.HTTPError as error:
                statuses.append(error.code)
        lines, stderr = stop_web(server)
    assert statuses == [200, 200, 401, 200, 404]  # urllib follows the sign-in's 303 to the overview
    served = [(line["method"], line["path"], line["status"]) for line in lines if line["event"] == "web_request_served"]
    assert served == [
        ("GET", "/jobs", 200), ("POST", "/login", 303), ("GET", "/", 200), ("POST", "/login", 401),
        ("POST", f"/api/v1/jobs/{failed}/retry", 200), ("GET", "/no/such/page", 404),
    ]  # fmt: skip
    for line in lines:
        if line["event"] == "web_request_served":
            assert line["duration_ms"] >= 0 and line["remote_addr"] == "127.0.0.1" and line["level"] == "info"
    everything = "\n".join(map(json.dumps, lines)) + stderr
    assert WEB_TOKEN not in everything and "wrong-token-guessed-here" not in everything
    assert "\x1b" not in everything and "\\u001b" not in everything
    assert not [line for line in lines if line.get("logger") == "werkzeug"]


# -- periodic list -------------------------------------------------------------------------------


def declare_report_schedule(dsn: str) -> int:
    """What a supervisor running a report every five minutes leaves in the database: its
    schedule, and a tick recorded with its job; returns the job id."""
    import cabbage
    from cabbage.periodic import PeriodicSchedule, PeriodicTick, tick_job
    from cabbage.postgres import PostgresJobStore

    store = PostgresJobStore(dsn)
    try:
        app = cabbage.TaskManager(dsn=dsn)

        @app.task(name="proj.tasks.report")
        def report(timestamp: int) -> None: ...

        store.declare_periodic_schedules([PeriodicSchedule("proj.tasks.report", "*/5 * * * *", "Europe/Paris")])
        tick_at = datetime.datetime(2026, 1, 1, 12, 5, tzinfo=datetime.timezone.utc)
        (recorded,) = store.record_periodic_ticks([PeriodicTick("proj.tasks.report", "", tick_at, tick_job(report, tick_at))])
        assert recorded.job_id is not None
        return recorded.job_id
    finally:
        store.close()


def test_periodic_list_shows_the_declared_schedules_with_last_and_next_ticks(run, db_dsn):
    status, out, _ = run("periodic", "list")
    assert (status, out) == (EXIT_OK, "(no periodic schedule was declared by a supervisor)\n")
    job_id = declare_report_schedule(db_dsn)
    status, out, _ = run("periodic", "list")
    header, row = out.splitlines()
    assert header.split() == ["TASK", "PERIODIC", "ID", "CRON", "TIMEZONE", "LAST", "TICK", "(UTC)", "JOB", "NEXT", "TICK", "(UTC)", "DECLARED"]
    assert row.startswith("proj.tasks.report  -  ") and "*/5 * * * *" in row and "Europe/Paris" in row
    assert f"2026-01-01 12:05:00  {job_id}  " in row and row.endswith("ago")

    status, out, _ = run("periodic", "list", "--json")
    listing = json.loads(out)
    (schedule,) = listing["schedules"]
    now = datetime.datetime.fromisoformat(listing["database_now"])
    next_tick = datetime.datetime.fromisoformat(schedule["next_tick_at"])
    assert now < next_tick <= now + datetime.timedelta(minutes=5) and next_tick.minute % 5 == 0
    assert schedule["last_tick"] == {
        "task_name": "proj.tasks.report",
        "periodic_id": "",
        "tick_at": "2026-01-01T12:05:00+00:00",
        "job_id": job_id,
        "skipped_ticks": None,
        "recorded_at": schedule["last_tick"]["recorded_at"],
    }
    assert (schedule["cron"], schedule["timezone"], schedule["catch_up_s"]) == ("*/5 * * * *", "Europe/Paris", 600.0)


def test_periodic_list_of_an_app_shows_its_own_schedules(run, db_dsn, tmp_path, monkeypatch):
    declare_report_schedule(db_dsn)
    (tmp_path / "periodic_app.py").write_text(
        "import cabbage\n"
        "task_manager = cabbage.TaskManager()\n"
        "@task_manager.periodic(cron='0 3 * * *', timezone='Europe/Paris', periodic_id='night')\n"
        "@task_manager.periodic(cron='*/5 * * * *', timezone='Europe/Paris')\n"
        "@task_manager.task(name='proj.tasks.report')\n"
        "def report(): ...\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [path for path in sys.path if path != str(tmp_path)])
    status, out, _ = run("periodic", "list", "--app", "periodic_app", "--json")
    assert status == EXIT_OK
    schedules = {schedule["periodic_id"]: schedule for schedule in json.loads(out)["schedules"]}
    assert schedules["night"]["last_declared_at"] is None and schedules["night"]["last_tick"] is None
    night_tick = datetime.datetime.fromisoformat(schedules["night"]["next_tick_at"])
    assert night_tick.astimezone(zoneinfo.ZoneInfo("Europe/Paris")).hour == 3
    assert schedules[""]["last_tick"]["tick_at"] == "2026-01-01T12:05:00+00:00"  # the database's record of it
    status, out, _ = run("periodic", "list", "--app", "periodic_app")
    rows = {line.split()[1]: line for line in out.splitlines()[1:]}
    assert rows["night"].endswith("never") and not rows["-"].endswith("never")  # no supervisor declared it yet


def test_periodic_list_of_an_app_that_cannot_be_imported_says_why(run):
    status, out, err = run("periodic", "list", "--app", "no_such_app_module")
    assert (status, out) == (EXIT_FAILED, "")
    assert err == "cabbage: cannot import app 'no_such_app_module': No module named 'no_such_app_module'\n"
