"""The master's pure decisions: hung and overrunning children, crash-loop backoff, database retries."""
from __future__ import annotations

import datetime

import pytest

from cabbage.jobs import WorkerInfo
from supervisor.children import Child
from supervisor.health import (
    MAX_RESPAWN_DELAY_S,
    DatabaseLink,
    STABLE_AFTER_S,
    Verdict,
    count_early_exits,
    database_retry_delay_s,
    find_hung_children,
    find_overrunning_children,
    match_heartbeats,
    note_heartbeats,
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


def test_a_child_with_a_fresh_heartbeat_is_fine() -> None:
    assert find_hung_children([child(11, worker_id=1)], {11: row(11, 1, age_s=29.9)}, NOW, TIMEOUT_S) == []


def test_a_child_whose_heartbeat_is_older_than_the_timeout_is_hung() -> None:
    verdicts = find_hung_children([child(11, worker_id=1)], {11: row(11, 1, age_s=31.4)}, NOW, TIMEOUT_S)
    assert verdicts == [Verdict(11, "no heartbeat for 31 s (heartbeat timeout 30 s)")]


def test_a_child_that_never_registered_is_hung_after_the_timeout() -> None:
    assert find_hung_children([child(11, last_seen_at=NOW - 29)], {}, NOW, TIMEOUT_S) == []
    verdicts = find_hung_children([child(11, last_seen_at=NOW - 31)], {}, NOW, TIMEOUT_S)
    assert verdicts == [Verdict(11, "did not register its worker within 30 s")]


def test_a_child_whose_row_vanished_is_hung_once_silent_for_the_timeout() -> None:
    # Its row was reclaimed by another master while it was frozen; a child that just
    # unregistered to recycle itself was seen recently and is left alone.
    assert find_hung_children([child(11, worker_id=1, last_seen_at=NOW - 5)], {}, NOW, TIMEOUT_S) == []
    verdicts = find_hung_children([child(11, worker_id=1, last_seen_at=NOW - 40)], {}, NOW, TIMEOUT_S)
    assert verdicts == [Verdict(11, "its worker row is gone and it gave no sign of life for 40 s")]


def test_children_already_stopping_or_killed_are_left_to_their_own_deadline() -> None:
    stale = {11: row(11, 1, age_s=99), 12: row(12, 2, age_s=99)}
    children = [child(11, worker_id=1, stop_deadline=NOW + 5), child(12, worker_id=2, kill_reason="hung")]
    assert find_hung_children(children, stale, NOW, TIMEOUT_S) == []
    running = {pid: row(pid, pid, current_job_id=7, current_task_name="t", current_job_run_s=99) for pid in (11, 12)}
    assert find_overrunning_children(children, running, {"t": 1}) == []


def test_a_job_past_its_task_timeout_gets_its_child_killed() -> None:
    children = [child(11, worker_id=1), child(12, worker_id=2), child(13, worker_id=3)]
    heartbeats = {
        11: row(11, 1, current_job_id=41, current_task_name="proj.slow", current_job_run_s=1.6),
        12: row(12, 2, current_job_id=42, current_task_name="proj.slow", current_job_run_s=0.9),
        13: row(13, 3, current_job_id=43, current_task_name="proj.unlimited", current_job_run_s=1e6),
    }
    verdicts = find_overrunning_children(children, heartbeats, {"proj.slow": 1.0, "proj.unlimited": None})
    assert verdicts == [Verdict(11, "job 41 (proj.slow) timed out after 2 s (its task's timeout is 1 s)")]


def test_an_idle_child_or_an_unknown_task_never_times_out() -> None:
    heartbeats = {11: row(11, 1), 12: row(12, 2, current_job_id=5, current_task_name="gone", current_job_run_s=1e6)}
    assert find_overrunning_children([child(11), child(12)], heartbeats, {"proj.slow": 1.0}) == []


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


def test_heartbeats_tell_each_child_its_worker_id_and_when_it_was_last_seen() -> None:
    children = {11: child(11, last_seen_at=NOW - 20), 12: child(12, last_seen_at=NOW - 20), 13: child(13, last_seen_at=NOW - 20)}
    noted = note_heartbeats(children, {11: row(11, 1, age_s=2), 12: row(12, 2, age_s=31)}, NOW, TIMEOUT_S)
    assert (noted[11].worker_id, noted[11].last_seen_at) == (1, NOW)
    assert (noted[12].worker_id, noted[12].last_seen_at) == (2, NOW - 20)  # a stale beat is no sign of life
    assert noted[13] == children[13]


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
