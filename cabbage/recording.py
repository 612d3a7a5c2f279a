"""How a worker records an attempt's outcome: fenced by the attempt, in the same round trip as
the start of its next reserved job or the claim of its next jobs, and never given up for an
outage: tried again until the database answers, a hidden commit recognised in the rows.

``OutcomeRecording`` is a part of ``cabbage.worker.Worker``, beside ``cabbage.taking``.
"""

from __future__ import annotations

from typing import Sequence

import structlog

from cabbage.exceptions import DatabaseUnavailable
from cabbage.jobs import ABORTED_ERROR_TYPE, Job, Outcome, Status
from cabbage.taking import JobTaking

log = structlog.get_logger()


class OutcomeRecording(JobTaking):
    """The worker's side of finishing (see the module's docstring)."""

    def _free_slots(self) -> int:
        return self.concurrency - len(self._running)

    # -- recording the outcome -----------------------------------------------------------------

    def _finish(self, job: Job, outcome: Outcome) -> None:
        """Records the outcome as this attempt's owner and, in the same round trip, starts the
        next reserved job or claims the next jobs. An outcome is never given up for an outage:
        the finish is tried until the database answers."""
        assert self.worker_id is not None
        try:
            is_finished = self._finish_once(job, outcome)
        except DatabaseUnavailable as exc:
            is_finished = self._finish_after_loss(job, outcome, exc)
        if not is_finished:
            log.warning("job_fence_lost", outcome=outcome.status.value)

    def _finish_together(self, ended: Sequence[tuple[Job, Outcome]]) -> None:
        """Records the outcomes of several attempts in one round trip, each fenced by its own
        attempt, and claims the next jobs in it; after a lost connection each outcome is
        recorded as ``_finish`` does, and what the lost call committed is found in the rows."""
        assert self.worker_id is not None
        if not ended:
            return
        limit = self._limit_of_a_finish()
        try:
            answer = self.store.finish_jobs_and_claim(self.worker_id, finishes_of(ended), self.queues, limit)
        except DatabaseUnavailable as exc:
            self._finish_each_after_loss(ended, exc)
            return
        self._take_answer(ended, limit, answer)

    def _limit_of_a_finish(self) -> int:
        """How many jobs a finish of the attempts that left the running set may claim."""
        may_claim = self._may_take_job() and not self._stopping and self._lease_allows_claim()
        return self._claim_limit(self._free_slots_after()) if may_claim else 0

    def _take_answer(self, ended: Sequence[tuple[Job, Outcome]], limit: int, answer: tuple[set[int], list[Job]]) -> None:
        """What ``finish_jobs_and_claim`` answered: the jobs it claimed are held from now on, and
        each outcome its fence refused is logged."""
        finished, claimed = answer
        self._claim_found_nothing = limit > 0 and bool(finished) and not claimed
        self._take_over(claimed)
        for job, outcome in ended:
            if job.id not in finished:
                with self._job_logged(job):
                    log.warning("job_fence_lost", outcome=outcome.status.value)

    def _finish_each_after_loss(self, ended: Sequence[tuple[Job, Outcome]], lost: DatabaseUnavailable) -> None:
        for job, outcome in ended:
            with self._job_logged(job):
                if not self._finish_after_loss(job, outcome, lost):
                    log.warning("job_fence_lost", outcome=outcome.status.value)

    def _free_slots_after(self) -> int:
        """The slots free once the attempt being recorded is over (it left the running set) and
        the started jobs held have begun: below 0 when a prefetch holds more than the free slots."""
        return self._free_slots() - len(self._started)

    def _finish_once(self, job: Job, outcome: Outcome) -> bool:
        assert self.worker_id is not None
        if self._reserved and self._may_take_job() and not self._stopping and self._free_slots_after() > 0:
            next_job_id = self._reserved[0].id
            is_finished, started = self.store.finish_and_start(job.id, self.worker_id, job.attempts, outcome, next_job_id)
            self._reserved.popleft()
            if started is not None:
                self._started.append(started)
            return is_finished
        free = self._free_slots_after()
        if self._may_take_job() and not self._stopping and free > 0 and self._lease_allows_claim():
            is_finished, claimed = self.store.finish_and_claim(
                job.id, self.worker_id, job.attempts, outcome, self.queues, self._claim_limit(free)
            )
            self._claim_found_nothing = is_finished and not claimed
            self._take_over(claimed)
            return is_finished
        return self.store.finish_job(job.id, self.worker_id, job.attempts, outcome)

    def _lease_allows_claim(self) -> bool:
        # A finish never waits for a heartbeat; when the lease is short, it only finishes.
        return self.lease is None or self.lease.allows_claim()

    def _finish_after_loss(self, job: Job, outcome: Outcome, lost: DatabaseUnavailable) -> bool:
        """The finish again on a fresh connection, until the database answers. Whatever the lost
        call committed (the finish, a next job started or claimed) is found in the rows first:
        the jobs this worker holds are taken over, and a finish refused by the fence counts as
        recorded when the row already holds this very outcome (the lost call's commit)."""
        assert self.worker_id is not None
        worker_id = self.worker_id
        log.warning("job_finish_retried", error_type=type(lost).__name__, error=str(lost))
        self._outage.failed(lost)

        def finish() -> bool:
            held = [held_job for held_job in self._unknown_or_waiting_held_jobs(worker_id) if held_job.id != job.id]
            if self.store.finish_job(job.id, worker_id, job.attempts, outcome):
                is_finished = True
            else:
                is_finished = _holds_outcome(self.store.get_job(job.id), job, outcome)
            self._started.clear()
            self._reserved.clear()
            self._take_over(held)
            return is_finished

        return self._until_it_answers(finish)

    def _unknown_or_waiting_held_jobs(self, worker_id: int) -> list[Job]:
        """The jobs this worker holds but does not run, nor ran (outcomes still to record): as
        the rows say, which a lost call may have changed (a reserved job started, jobs claimed)."""
        ran = self._outcomes_unrecorded()
        return [held for held in self.store.held_jobs(worker_id) if held.id not in self._running and held.id not in ran]


def finishes_of(ended: Sequence[tuple[Job, Outcome]]) -> list[tuple[int, int, Outcome]]:
    """What ``finish_jobs_and_claim`` takes: each job's id, the attempt that ended, its outcome."""
    return [(job.id, job.attempts, outcome) for job, outcome in ended]


def _holds_outcome(row: Job | None, attempt_job: Job, outcome: Outcome) -> bool:
    """Whether the job's row already shows this attempt's outcome, recorded by a finish whose
    answer was lost with the connection (a reclaim would have left a WorkerLost error instead)."""
    if row is None:
        return False  # pruned since: nothing can tell
    error = row.last_error
    ours = (error.type if error else None) == (outcome.error.type if outcome.error else None)
    if outcome.status is Status.SUCCEEDED:
        return row.status is Status.SUCCEEDED and row.attempts == attempt_job.attempts
    if row.status is Status.CANCELLED and error is not None and error.type == ABORTED_ERROR_TYPE:
        # Any other outcome of an attempt whose abort was requested ends it so (migration 0009).
        return row.attempts == attempt_job.attempts
    if outcome.status is Status.FAILED:
        return row.status is Status.FAILED and row.attempts == attempt_job.attempts and ours
    # A retry: back in line with our error, or already taken by the next attempt.
    return ours and (row.attempts > attempt_job.attempts or row.status is Status.TODO)
