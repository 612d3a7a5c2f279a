"""The master's pure decisions: children to kill (timeouts, leases, hung), crash-loop backoff, database retries."""
from __future__ import annotations

import datetime
import math
import os
from typing import Callable

import pytest

from cabbage.jobs import WorkerInfo
from supervisor import reports
from supervisor.children import Child, RunningJob
from supervisor.health import (
    MAX_RESPAWN_DELAY_S,
    DatabaseLink,
    STABLE_AFTER_S,
    Verdict,
    count_early_exits,
    database_retry_delay_s,
    find_children_to_kill,
    match_heartbeats,
    next_kill_deadline,
    respawn_delay_s,
)

HOST = "web-1"
NOW = 1000.0
TIMEOUT_S = 30.0
EPOCH = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def child(pid: int, *, worker_id: int | None = None, last_seen_at: float = NOW, **fields: object) -> Child:
    return Child(pid, worker_number=pid % 10, generation=1, started_at=last_seen_at, last_seen_at=last_seen_at, worker_id=worker_id, **fields)  # type: ignore[arg-type]


def row(pid: int, worker_id: int, age_s: float = 1.0, hostname: str = HOST, **fields: object) -> WorkerInfo:
    return WorkerInfo(worker_id, hostname, pid, EPOCH, EPOCH, age_s, **fields)  # type: ignore[arg-type]


def test_rows_are_matched_to_children_by_hostname_and_pid() -> None:
    children = [child(11), child(12)]
    rows = [row(11, 1), row(12, 2, hostname="web-2"), row(13, 3)]
    assert match_heartbeats([child.pid for child in children], rows, HOST) == {11: rows[0]}


MARGIN_S = 5.0


def running(job_id: int = 7, *, started_at: float = NOW - 1, timeout_s: float | None = None, task_name: str = "proj.task") -> RunningJob:
    return RunningJob(job_id, task_name, started_at, timeout_s)


def kill(children: list[Child], *, now: float = NOW, database_reachable: bool = True) -> list[Verdict]:
    return find_children_to_kill(children, now, TIMEOUT_S, MARGIN_S, database_reachable)


def test_a_child_heard_from_lately_is_fine() -> None:
    assert kill([child(11, worker_id=1, last_seen_at=NOW - 3), child(12, worker_id=2, last_seen_at=NOW - 3, running=(running(),))]) == []


def test_a_job_past_its_timeout_gets_its_child_killed_at_the_deadline() -> None:
    job = running(42, started_at=NOW - 2.0, timeout_s=2.0, task_name="proj.slow")
    before = child(11, worker_id=1, running=(running(42, started_at=NOW - 1.95, timeout_s=2.0),))
    assert kill([before]) == []
    [verdict] = kill([child(11, worker_id=1, running=(job,))])
    assert verdict.pid == 11
    assert verdict.reason == "job 42 (proj.slow) timed out after 2.0 s (its task's timeout is 2 s)"


def test_a_running_child_is_killed_before_its_lease_ends_even_while_the_database_is_down() -> None:
    silent = child(11, worker_id=1, last_seen_at=NOW - (TIMEOUT_S - MARGIN_S) - 0.1, running=(running(7),))
    just_in_time = child(12, worker_id=2, last_seen_at=NOW - (TIMEOUT_S - MARGIN_S) + 0.1, running=(running(8),))
    [verdict] = kill([silent, just_in_time], database_reachable=False)
    assert verdict.pid == 11
    assert verdict.reason.startswith("no heartbeat for 25.1 s accepted by the database")
    assert "lease on job 7" in verdict.reason


def test_an_idle_silent_child_is_hung_only_while_the_database_answers() -> None:
    idle = child(11, worker_id=1, last_seen_at=NOW - TIMEOUT_S - 1)
    assert kill([idle], database_reachable=False) == []  # an outage: silence is expected
    [verdict] = kill([idle])
    assert verdict.reason == f"no heartbeat for 31 s (heartbeat timeout {TIMEOUT_S:g} s)"


def test_a_child_that_never_registered_is_killed_after_the_timeout() -> None:
    assert kill([child(11, last_seen_at=NOW - 29)]) == []
    [verdict] = kill([child(11, last_seen_at=NOW - 31)])
    assert verdict.reason == f"did not register its worker within {TIMEOUT_S:g} s"


def test_children_being_killed_are_left_alone_and_stopping_ones_only_for_their_jobs() -> None:
    killed = child(11, last_seen_at=NOW - 100, kill_reason="already")
    stopping_idle = child(12, worker_id=2, last_seen_at=NOW - 100, stop_deadline=NOW + 5)
    stopping_running = child(13, worker_id=3, last_seen_at=NOW - 100, stop_deadline=NOW + 5, running=(running(),))
    assert [verdict.pid for verdict in kill([killed, stopping_idle, stopping_running])] == [13]


def test_the_next_kill_deadline_is_the_soonest_lease_end_or_job_deadline() -> None:
    children = [
        child(11, worker_id=1, last_seen_at=NOW, running=(running(started_at=NOW, timeout_s=60),)),
        child(12, worker_id=2, last_seen_at=NOW - 10, running=(running(started_at=NOW, timeout_s=3),)),
        child(13, worker_id=3, last_seen_at=NOW - 20),  # idle: no deadline of its own
    ]
    assert next_kill_deadline(children, TIMEOUT_S, MARGIN_S) == NOW + 3
    assert next_kill_deadline(children[:1], TIMEOUT_S, MARGIN_S) == NOW + TIMEOUT_S - MARGIN_S
    assert next_kill_deadline(children[2:], TIMEOUT_S, MARGIN_S) == math.inf


def test_reports_tell_a_child_its_worker_heartbeats_and_jobs() -> None:
    started = child(11, last_seen_at=NOW - 20)
    registered = started.noting(reports.Registered(worker_id=5, sent_at=NOW - 19))
    assert (registered.worker_id, registered.last_seen_at) == (5, NOW - 19)
    beating = registered.noting(reports.HeartbeatAccepted(NOW - 2)).noting(reports.HeartbeatAccepted(NOW - 9))
    assert beating.last_seen_at == NOW - 2  # a late answer to an older heartbeat proves nothing newer
    busy = beating.noting(reports.JobStarted(7, "proj.task", NOW - 1, 5.0))
    assert busy.running == (RunningJob(7, "proj.task", NOW - 1, 5.0),) and busy.running[0].deadline == NOW + 4
    assert busy.noting(reports.JobFinished(7)).running == ()


ABORT_TIMEOUT_S = 10.0


def test_a_job_still_running_after_its_abort_timeout_gets_its_child_killed() -> None:
    reported = child(11, worker_id=1, running=(running(7), running(8))).noting(
        reports.AbortRequested(7, requested_at=NOW - ABORT_TIMEOUT_S, aborted_by="alice")
    )
    assert reported.running[0].abort_requested_at == NOW - ABORT_TIMEOUT_S and reported.running[1].abort_requested_at is None
    assert find_children_to_kill([reported], NOW - 0.1, TIMEOUT_S, MARGIN_S, True, ABORT_TIMEOUT_S) == []
    [verdict] = find_children_to_kill([reported], NOW, TIMEOUT_S, MARGIN_S, True, ABORT_TIMEOUT_S)
    assert verdict.pid == 11 and "job 7 (proj.task) was aborted by alice and still ran 10 s later" in verdict.reason
    assert next_kill_deadline([reported], TIMEOUT_S, MARGIN_S, ABORT_TIMEOUT_S) == NOW
    again = reported.noting(reports.AbortRequested(7, requested_at=NOW, aborted_by="bob"))
    assert again.running[0].aborted_by == "alice", "the first request's deadline holds"


def test_an_abort_report_survives_the_pipe() -> None:
    report = reports.AbortRequested(7, NOW, "ops: ünïcode\n")
    assert reports.decode(reports.encode(report).rstrip(b"\n")) == report
    long_name = reports.encode(reports.AbortRequested(7, NOW, "x" * 10_000))
    assert len(long_name) < 1024, "one atomic write"


def test_early_exits_count_up_and_start_over_after_a_stable_child() -> None:
    assert count_early_exits(0, 0.1) == 1
    assert count_early_exits(4, STABLE_AFTER_S - 0.1) == 5
    assert count_early_exits(4, STABLE_AFTER_S) == 1


def test_respawn_delay_grows_from_the_second_early_exit_and_is_capped() -> None:
    delays = [respawn_delay_s(exits) for exits in range(0, 9)]
    assert delays == [0.0, 0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, MAX_RESPAWN_DELAY_S]
    assert respawn_delay_s(10_000) == MAX_RESPAWN_DELAY_S


@pytest.mark.parametrize(("failures", "delay_s"), [(0, 0.0), (1, 0.5), (2, 1.0), (4, 4.0), (5, 8.0), (6, 10.0), (10_000, 10.0)])
def test_database_retries_back_off(failures: int, delay_s: float) -> None:
    assert database_retry_delay_s(failures) == delay_s


def test_the_database_link_reports_an_outage_once_and_backs_off() -> None:
    link = DatabaseLink()
    assert link.is_due(NOW) and link.succeeded(NOW) is None
    assert link.failed(NOW) is True
    assert not link.is_due(NOW + 0.4) and link.is_due(NOW + 0.5)
    assert link.failed(NOW + 1) is False  # the same outage
    assert link.retry_at == NOW + 2
    assert link.succeeded(NOW + 7.5) == 7.5
    assert link.succeeded(NOW + 8) is None
    assert link.failed(NOW + 9) is True  # a new outage


def _lines_written_by(write: Callable[[reports.ReportWriter], None]) -> list[bytes]:
    """The writes one ReportWriter made through a real pipe, each as read back."""
    read_fd, write_fd = os.pipe()
    try:
        write(reports.ReportWriter(write_fd))
        os.close(write_fd)
        data = b""
        while chunk := os.read(read_fd, 65536):
            data += chunk
        return data.splitlines(keepends=True)
    finally:
        os.close(read_fd)


def test_gathered_job_reports_reach_the_master_as_one_line_per_batch() -> None:
    def write(writer: reports.ReportWriter) -> None:
        for job_id in range(1, 51):
            writer.gather(reports.JobStarted(job_id, "proj.task", NOW, None))
        writer.flush()
        for job_id in range(1, 51):
            writer.gather(reports.JobFinished(job_id))
        writer.flush()

    lines = _lines_written_by(write)
    decoded = [reports.decode(line.rstrip(b"\n")) for line in lines]
    assert all(len(line) <= reports.MAX_LINE_BYTES for line in lines)
    started = [job for report in decoded if isinstance(report, reports.JobsStarted) for job in report.jobs]
    assert started == [reports.JobStarted(job_id, "proj.task", NOW, None) for job_id in range(1, 51)]
    assert [job_id for report in decoded if isinstance(report, reports.JobsFinished) for job_id in report.job_ids] == list(range(1, 51))
    assert len(lines) <= 4, "a batch costs a line or two, not one per job"
    busy = child(11, worker_id=1)
    for report in decoded:
        busy = busy.noting(report)
    assert busy.running == ()


def test_a_batch_too_long_for_one_atomic_write_is_split_on_whole_jobs() -> None:
    long_name = "proj." + "t" * 400  # beyond MAX_TASK_NAME_CHARS: cut to it
    jobs = [reports.JobStarted(job_id, long_name, NOW, 5.0) for job_id in range(40)]
    lines = reports.encode_all(jobs)
    assert len(lines) > 1 and all(len(line) <= reports.MAX_LINE_BYTES for line in lines)
    decoded = [reports.decode(line.rstrip(b"\n")) for line in lines]
    assert [job.job_id for report in decoded for job in report.jobs] == list(range(40))
    assert {len(job.task_name) for report in decoded for job in report.jobs} == {reports.MAX_TASK_NAME_CHARS}


def test_a_report_sent_at_once_follows_what_was_gathered_before_it() -> None:
    # An abort of a job must not reach the master before the job's start does.
    def write(writer: reports.ReportWriter) -> None:
        writer.gather(reports.JobStarted(7, "proj.task", NOW, None))
        writer.send(reports.AbortRequested(7, NOW, "alice"))

    decoded = [reports.decode(line.rstrip(b"\n")) for line in _lines_written_by(write)]
    assert decoded == [reports.JobsStarted([reports.JobStarted(7, "proj.task", NOW, None)]),
                       reports.AbortRequested(7, NOW, "alice")]
    reported = child(11, worker_id=1)
    for report in decoded:
        reported = reported.noting(report)
    assert reported.running[0].aborted_by == "alice"


def test_a_child_holds_as_prefetched_only_the_jobs_it_has_not_begun() -> None:
    def write(writer: reports.ReportWriter) -> None:
        writer.gather(reports.JobsPrefetched([3, 4, 5]))
        writer.gather(reports.JobsPrefetched([6]))
        writer.flush()
        writer.gather(reports.JobStarted(4, "proj.task", NOW, None))
        writer.gather(reports.JobStarted(5, "proj.task", NOW, None))
        writer.flush()
        writer.send(reports.JobStarted(6, "proj.task", NOW, None))  # one at a time, as at concurrency 1

    decoded = [reports.decode(line.rstrip(b"\n")) for line in _lines_written_by(write)]
    assert decoded[0] == reports.JobsPrefetched([3, 4, 5, 6]), "one line for the batch"
    holding = child(11, worker_id=1)
    for report in decoded:
        holding = holding.noting(report)
    assert holding.prefetched == {3}
    assert [job.job_id for job in holding.running] == [4, 5, 6]
    assert holding.noting(reports.JobsFinished([4, 5, 6])).prefetched == {3}


def test_a_long_prefetch_is_split_into_atomic_lines() -> None:
    lines = reports.encode_all([reports.JobsPrefetched(list(range(10**9, 10**9 + 2_000)))])
    assert len(lines) > 1 and all(len(line) <= reports.MAX_LINE_BYTES for line in lines)
    decoded = [reports.decode(line.rstrip(b"\n")) for line in lines]
    assert [job_id for report in decoded for job_id in report.job_ids] == list(range(10**9, 10**9 + 2_000))
