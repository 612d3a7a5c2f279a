"""How a worker takes jobs: the ones a finish started, reserved ones started now, or a new claim
of up to its free slots, never with its lease too short; through an outage, what a lost call
may have committed is found in the rows before anything more is claimed.

``JobTaking`` is a part of ``cabbage.worker.Worker``: it uses the worker's store, worker id,
queues, lease and the jobs it holds (``_started``, ``_reserved``, ``_running``).
"""

from __future__ import annotations

import collections
import contextlib
import time
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

import structlog

from cabbage import outages
from cabbage.exceptions import DatabaseUnavailable
from cabbage.jobs import Job
from cabbage.lease import Lease
from cabbage.store import JobStore

if TYPE_CHECKING:
    from cabbage.attempts import Attempt
    from cabbage.worker import RoundTrip, Running

log = structlog.get_logger()

T = TypeVar("T")

# How long a stopping worker keeps trying to give its jobs back through an outage.
WRAP_UP_S = 5.0
# A job the store says is due now though the claim just before found nothing is held by another
# session (a claim about to commit, an operator's transaction), or it became due in between: the
# worker claims again at once, then after this, twice as long each time, up to its poll interval.
DUE_YET_NOT_CLAIMED_FIRST_WAIT_S = 0.01


class JobTaking:
    """The worker's side of claiming (see the module's docstring)."""

    store: JobStore
    worker_id: int | None
    queues: list[str] | None
    lease: Lease | None
    concurrency: int
    batch_size: int
    prefetch: int
    _stopping: bool
    _jobs_left: int | None
    _claim_found_nothing: bool
    _due_yet_not_claimed: int
    _started: collections.deque[Job]
    _reserved: collections.deque[Job]
    _running: dict[int, "Running"]
    _round_trip: "RoundTrip | None"  # outcomes on their way, on the recorder's thread
    _unsent: list["Attempt"]  # attempts that ended while it was: the next round trip records them
    _outage: outages.Outage

    def _outcomes_unrecorded(self) -> set[int]:
        """The jobs whose attempts ended and whose outcomes are on their way on the recorder's
        thread, or wait for that round trip to end."""
        unrecorded = {attempt.job.id for attempt in self._unsent}
        if self._round_trip is not None:
            unrecorded.update(attempt.job.id for attempt in self._round_trip.attempts)
        return unrecorded

    def _is_recording_elsewhere(self) -> bool:
        """Whether a round trip is on its way on the recorder's thread: it has the connection."""
        return self._round_trip is not None

    @property
    def runs_inline(self) -> bool:
        """Whether each attempt runs in the worker loop's own thread, one after the other
        (concurrency 1 without a prefetch); otherwise ``def`` tasks run on a pool of threads, and
        ``async def`` ones on the event loop's."""
        return self.concurrency == 1 and not self.prefetch

    def _is_stopping(self) -> bool:
        return self._stopping

    def _may_take_job(self) -> bool:
        if self._started:
            return True  # their attempts have begun: they run even when stopping
        return not self._stopping and (self._jobs_left is None or self._jobs_left > 0)

    # -- calls that ride out an outage ---------------------------------------------------------

    def _job_logged(self, job: Job) -> contextlib.AbstractContextManager[None]:
        """The log context of a line about one job of this worker."""
        return structlog.contextvars.bound_contextvars(worker_id=self.worker_id, **job.log_context())

    def _until_it_answers(self, call: Callable[[], T], should_give_up: Callable[[], bool] = lambda: False) -> T:
        return outages.until_it_answers(call, self._outage, should_give_up=should_give_up)

    def _for_a_while(self, call: Callable[[], T]) -> T:
        """``call``, tried again for up to WRAP_UP_S: what a stopping worker still owes the
        database (releasing, unregistering); its master reclaims the rest once it can."""
        deadline = time.monotonic() + WRAP_UP_S
        return self._until_it_answers(call, should_give_up=lambda: time.monotonic() >= deadline)

    def _has_lease_for_a_claim(self) -> bool:
        """Whether a claim now leaves the job time to run before the lease ends; when it would
        not, heartbeats first on the worker's own connection. False when the worker row is gone
        (reclaimed while the database was out of reach): then the worker stops."""
        if self.lease is None or self.lease.allows_claim():
            return True
        assert self.worker_id is not None
        worker_id = self.worker_id
        sent_at = self.lease.clock()
        try:
            is_registered = self._until_it_answers(lambda: self.store.record_heartbeat(worker_id), self._is_stopping)
        except DatabaseUnavailable:
            return False  # stopping during an outage: nothing more to claim
        if is_registered:
            self.lease.renew(sent_at)
            return True
        log.warning("worker_reclaimed", reason="the worker's row is gone: its jobs were taken back")
        self._stopping = True
        return False

    # -- taking jobs ---------------------------------------------------------------------------

    def _begin_what_fits(self) -> int:
        """Begins attempts of started, reserved or newly claimed jobs while slots are free."""
        begun = 0
        while self._free_slots() > 0 and self._may_take_job():
            jobs = self._take_jobs(self._free_slots())
            if not jobs:
                break
            self._begin_all(jobs, self._log_context())  # the batch ends before the next claim
            begun += len(jobs)
        return begun

    def _take_jobs(self, free: int) -> list[Job]:
        """Started jobs to run, up to ``free``: those a finish began, reserved ones started now,
        or a new claim's."""
        assert self.worker_id is not None
        taken: list[Job] = []
        while self._started and len(taken) < free:
            taken.append(self._started.popleft())
        if self._is_recording_elsewhere():
            return taken  # the connection is the recorder's until it answers, and its answer claims
        while self._reserved and len(taken) < free and not self._stopping:
            # None: reclaimed since we reserved it (our heartbeat was late); skip it.
            started = self._start_reserved(self._reserved.popleft().id)
            if started is not None:
                taken.append(started)
        if taken:
            return taken
        if self._claim_found_nothing:
            self._claim_found_nothing = False
            return []  # wait instead: a job deferred since then notifies
        if not self._may_take_job() or not self._has_lease_for_a_claim():
            return []
        limit = self._claim_limit(free)
        if limit <= 0:
            return []
        self._take_over(self._claim(limit))
        return [self._started.popleft() for _ in range(min(free, len(self._started)))]

    def _until_next_claim_s(self, timeout_s: float) -> float:
        """How long to wait, after a claim found nothing, before claiming again unless notified:
        ``timeout_s``, or less when a job of the worker's queues is due sooner (store clock)."""
        until_due_s = self.store.seconds_until_next_due(self.queues)
        if until_due_s is None or until_due_s > 0:
            self._due_yet_not_claimed = 0
            return timeout_s if until_due_s is None else min(timeout_s, until_due_s)
        self._due_yet_not_claimed += 1
        return min(timeout_s, wait_for_a_due_job_not_claimed_s(self._due_yet_not_claimed))

    def _claim(self, limit: int) -> list[Job]:
        """claim_jobs; after a lost connection, the jobs the lost claim may have committed are
        taken over (held_jobs) before anything more is claimed."""
        assert self.worker_id is not None
        worker_id = self.worker_id
        # Several at once: every job claimed begins now, so all are started by the claim itself.
        start_all = not self.runs_inline
        try:
            return self.store.claim_jobs(worker_id, self.queues, limit=limit, start_all=start_all)
        except DatabaseUnavailable as exc:
            self._outage.failed(exc)
        try:
            held = self._until_it_answers(lambda: self._unknown_held_jobs(worker_id), self._is_stopping)
            if held:
                return held
            return self._until_it_answers(
                lambda: self.store.claim_jobs(worker_id, self.queues, limit=limit, start_all=start_all), self._is_stopping
            )
        except DatabaseUnavailable:
            return []  # stopping during an outage; what the lost claim took is reclaimed with this worker

    def _unknown_held_jobs(self, worker_id: int) -> list[Job]:
        """The jobs this worker holds that it does not know of (a lost call's commit)."""
        known = {*self._running, *(job.id for job in self._started), *(job.id for job in self._reserved),
                 *self._outcomes_unrecorded()}
        return [job for job in self.store.held_jobs(worker_id) if job.id not in known]

    def _start_reserved(self, job_id: int) -> Job | None:
        """start_job; after a lost connection, the job's row says whether the lost start committed."""
        assert self.worker_id is not None
        worker_id = self.worker_id
        try:
            return self.store.start_job(job_id, worker_id)
        except DatabaseUnavailable as exc:
            self._outage.failed(exc)
        return self._until_it_answers(lambda: self._start_or_find_started(job_id, worker_id))

    def _start_or_find_started(self, job_id: int, worker_id: int) -> Job | None:
        started = self.store.start_job(job_id, worker_id)
        if started is not None:
            return started
        row = self.store.get_job(job_id)
        return row if row is not None and row.worker_id == worker_id and row.is_started else None

    def _claim_limit(self, free: int) -> int:
        """How many jobs a claim may take: a batch at concurrency 1, else the free slots (``free``:
        those no started job held will take) and the prefetch; within run(max_jobs=...)'s budget,
        of which the started jobs held take their share. 0: none."""
        if self.runs_inline:
            return self.batch_size if self._jobs_left is None else max(1, min(self.batch_size, self._jobs_left))
        limit = max(0, free + self.prefetch)
        return limit if self._jobs_left is None else max(0, min(limit, self._jobs_left - len(self._started)))

    def _take_over(self, claimed: Sequence[Job]) -> None:
        """Jobs a claim gave this worker: started ones run next, reserved ones after."""
        known = {job.id for job in self._reserved} | {job.id for job in self._started}
        for job in claimed:
            if job.id in known or job.id in self._running:
                continue
            (self._started if job.started_at is not None else self._reserved).append(job)


def wait_for_a_due_job_not_claimed_s(times_in_a_row: int) -> float:
    """How long to wait before claiming again when the store said a job is due now yet the claim
    before found nothing, the ``times_in_a_row``-th time in a row: none the first time (it may
    have become due between the two), then from DUE_YET_NOT_CLAIMED_FIRST_WAIT_S, doubling."""
    if times_in_a_row <= 1:
        return 0.0
    return DUE_YET_NOT_CLAIMED_FIRST_WAIT_S * 2.0 ** min(times_in_a_row - 2, 30)
