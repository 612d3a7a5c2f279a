"""The master's periodic duty: deferring the due ticks of the app's schedules, each once across
hosts.

Every master runs it. It declares the app's schedules to the store (at start, after a reload,
and every minute), reads the database clock with each schedule's last recorded tick, asks
``cabbage.periodic.plan_ticks`` what is due, and has the store record those ticks with their
jobs: the database's unique tick makes sure each one is deferred once, however many masters
race. It then sleeps until the next tick, mapped from the database clock onto
``time.monotonic()``: the master's database thread wakes within milliseconds of it.
``DatabaseDuties`` runs it on that thread with the other duties, so it backs off with them
during an outage and never holds up the master's loop. No SQL here.
"""

from __future__ import annotations

import dataclasses
import math
import time
import structlog

from cabbage import TaskManager
from cabbage.periodic import (
    TICK_RETENTION_S,
    PeriodicSchedule,
    PeriodicTick,
    RecordedTick,
    RefusedTick,
    SkippedTicks,
    plan_ticks,
    since_of,
    tick_job,
)
from cabbage.store import JobStore

log = structlog.get_logger()

DECLARE_INTERVAL_S = 60.0  # how often the schedules' last_declared_at is refreshed
PRUNE_INTERVAL_S = 600.0
PRUNE_BATCH_SIZE = 10_000
RETRY_AFTER_S = 1.0


class PeriodicDuty:
    """When the app's schedules next need the master (``next_run_at``, monotonic), and the run
    itself."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.next_run_at = 0.0
        self.declared: tuple[PeriodicSchedule, ...] = ()
        self.next_declare_at = 0.0
        self.next_prune_at = 0.0
        self.task_manager: TaskManager | None = None  # whose schedules the last run deferred

    def is_due(self, now: float, task_manager: TaskManager) -> bool:
        """When its next tick (or declaration, or prune) is due, and at once for a new app (a
        reload)."""
        return task_manager is not self.task_manager or now >= self.next_run_at

    def run(self, task_manager: TaskManager) -> None:
        """Defers what is due of ``task_manager``'s schedules (the app of the current generation,
        so a reload's changes count from its first run); raises DatabaseUnavailable."""
        # Until this run succeeds: a run the database refused is tried again in a second (or
        # when the outage's backoff says), not in a tight loop.
        self.next_run_at, self.task_manager = time.monotonic() + RETRY_AFTER_S, task_manager
        schedules = tuple(task_manager.periodic_schedules.values())
        if not schedules:
            self.next_run_at = math.inf  # until a reload brings some
            return
        self.declare(schedules)
        overview = self.store.list_periodic_schedules()
        read_at = time.monotonic()
        stored = overview.by_key()
        ticks: list[PeriodicTick] = []
        skipped: dict[tuple[str, str], SkippedTicks] = {}
        wait_s = math.inf
        for schedule in schedules:
            plan = plan_ticks(schedule, since_of(stored.get(schedule.key), overview.now), overview.now)
            if plan.skipped is not None:
                skipped[schedule.key] = plan.skipped
                ticks.append(PeriodicTick(*schedule.key, plan.skipped.last_at, None, skipped_ticks=plan.skipped.count))
            task = task_manager.tasks[schedule.task_name]
            ticks += [PeriodicTick(*schedule.key, tick_at, tick_job(task, tick_at)) for tick_at in plan.due]
            if plan.next_tick_at is not None:
                wait_s = min(wait_s, (plan.next_tick_at - overview.now).total_seconds())
        for recorded in self.store.record_periodic_ticks(ticks):
            log_recorded(recorded, task_manager.periodic_schedules[recorded.task_name, recorded.periodic_id], skipped)
        self.prune()
        self.next_run_at = min(read_at + max(wait_s, 0.0), self.next_declare_at, self.next_prune_at)

    def declare(self, schedules: tuple[PeriodicSchedule, ...]) -> None:
        now = time.monotonic()
        if schedules == self.declared and now < self.next_declare_at:
            return
        self.store.declare_periodic_schedules(schedules)
        self.next_declare_at = now + DECLARE_INTERVAL_S
        if schedules != self.declared:
            log.info("periodic_schedules_declared", schedules=[dataclasses.asdict(schedule) for schedule in schedules])
            self.declared = schedules

    def prune(self) -> None:
        now = time.monotonic()
        if now < self.next_prune_at:
            return
        deleted = self.store.prune_periodic_ticks(TICK_RETENTION_S, PRUNE_BATCH_SIZE)
        self.next_prune_at = now + PRUNE_INTERVAL_S
        if deleted:
            log.info("periodic_ticks_pruned", deleted=deleted, older_than_s=TICK_RETENTION_S)


def log_recorded(recorded: RecordedTick, schedule: PeriodicSchedule, skipped: dict[tuple[str, str], SkippedTicks]) -> None:
    """One line per tick this master recorded: the others' are theirs to log, so each is logged
    once."""
    key = {"task_name": recorded.task_name, "periodic_id": recorded.periodic_id}
    if recorded.job_id is not None:
        late_s = (recorded.recorded_at - recorded.tick_at).total_seconds()
        log.info("periodic_tick_deferred", **key, tick_at=recorded.tick_at.isoformat(), job_id=recorded.job_id, late_s=round(late_s, 3))
        return
    if isinstance(recorded, RefusedTick):
        # The task's queueing lock at work (its previous job still waits), not a fault: info.
        log.info("periodic_tick_skipped", **key, tick_at=recorded.tick_at.isoformat(),
                 queueing_lock=recorded.queueing_lock, waiting_job_id=recorded.waiting_job_id)  # fmt: skip
        return
    missed = skipped[recorded.task_name, recorded.periodic_id]
    log.warning("periodic_ticks_skipped", **key, skipped_ticks=missed.count, counted_all=missed.counted_all,
                first_skipped_at=missed.first_at.isoformat(), last_skipped_at=missed.last_at.isoformat(),
                catch_up_s=schedule.catch_up_s)  # fmt: skip
