"""HUP reloads the app from disk; TTIN and TTOU change the number of workers."""
from __future__ import annotations

import signal
from typing import Callable

from cabbage.jobs import Status
from tests.acceptance.supervisor_process import Jobs, SupervisorProcess, is_gone, title_of
from tests.waiting import wait_for

Start = Callable[..., SupervisorProcess]

VERSION_1 = """
@task_manager.task
def which_version(n):
    record("ran", n=n, version=1)
"""
# A different length too: even a cached .pyc could not pass for the new source.
VERSION_2 = """
@task_manager.task
def which_version(n):
    record("ran", n=n, version=2, note="the second version, deployed while running")
"""


def test_hup_runs_new_jobs_on_the_changed_module(start_supervisor: Start, write_tasks: Callable[[str], object], jobs: Jobs) -> None:
    supervisor = start_supervisor(VERSION_1)
    old_children = supervisor.wait_for_children(2)
    jobs.defer("which_version", 1)
    assert supervisor.wait_for_task_event("ran", n=1)["version"] == 1

    write_tasks(VERSION_2)
    supervisor.send(signal.SIGHUP)
    supervisor.wait_for_event("supervisor_reloading")
    new_children = supervisor.wait_for_children(2, excluding=old_children)
    assert all(is_gone(pid) for pid in old_children)
    assert {line["child_pid"] for line in supervisor.events("worker_exited", role="master")} == set(old_children)
    assert not supervisor.events("jobs_reclaimed")  # the old ones stopped gracefully

    job_id = jobs.defer("which_version", 2)
    assert supervisor.wait_for_task_event("ran", n=2)["version"] == 2
    wait_for(lambda: jobs.status(job_id) is Status.SUCCEEDED, 5, "the job to succeed")

    # A broken deploy: the reload fails, the running workers keep the last good code.
    write_tasks(VERSION_2 + "\ndef broken(:\n")
    supervisor.send(signal.SIGHUP)
    failure = supervisor.wait_for_event("app_import_failed")
    assert failure["reload"] is True and failure["level"] == "error"
    assert failure["error"].startswith("cannot import app 'acceptance_tasks': SyntaxError: invalid syntax")
    jobs.defer("which_version", 3)
    assert supervisor.wait_for_task_event("ran", n=3)["version"] == 2
    assert sorted(supervisor.children()) == sorted(new_children)


def test_ttin_and_ttou_add_and_remove_a_worker(start_supervisor: Start) -> None:
    supervisor = start_supervisor(VERSION_1)
    supervisor.wait_for_children(2)
    supervisor.send(signal.SIGTTIN)
    three = supervisor.wait_for_children(3)
    wait_for(lambda: title_of(supervisor.pid) == "cabbage-supervisor: master acceptance_tasks (3 workers)", 5, "the master's title")
    numbers = {line["pid"]: line["worker_number"] for line in supervisor.events("worker_started")}
    assert sorted(numbers[pid] for pid in three) == [1, 2, 3]

    # One at a time: two identical signals sent at once may arrive as one.
    supervisor.send(signal.SIGTTOU)
    wait_for(lambda: len(supervisor.children()) == 2, 10, "two workers left", context=supervisor.last_log_lines)
    supervisor.send(signal.SIGTTOU)
    (last,) = wait_for(lambda: len(supervisor.children()) == 1 and supervisor.children(), 10, "one worker left", context=supervisor.last_log_lines)
    assert numbers[last] == 1  # the highest numbers went
    supervisor.send(signal.SIGTTOU)  # one is the minimum
    effect = wait_for(lambda: [line for line in supervisor.events("signal_received", signal="SIGTTOU")][2:], 5, "the third TTOU")
    assert effect[0]["effect"] == "none: 1 worker is the minimum"
    wait_for(lambda: title_of(supervisor.pid) == "cabbage-supervisor: master acceptance_tasks (1 worker)", 5, "the master's title")
    assert supervisor.children() == [last]
