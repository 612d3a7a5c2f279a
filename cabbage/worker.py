"""Worker: the fetch-execute loop, one step (``process_next_job``) and two ways to repeat it.

``process_jobs()`` repeats the step until no job is due (the how-to's testing snippet);
``run()`` repeats it until ``stop()``, waiting for a notification or the poll interval in
between. Each attempt runs inside the job's bound log context, ends with one log line, and is
finished by its owner only (the fence of ARCHITECTURE invariant 5). The loop knows the JobStore
contract, never a particular store.

A lost database connection changes no outcome: the worker keeps the outcome of the attempt it
ran and the jobs it holds, and tries the call again (``cabbage.outages``) until the database
answers; a call whose commit the loss may have hidden is checked against the job's row before
it is tried again. It claims nothing while its lease (``cabbage.lease``) is short.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import reprlib
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence, TypeVar

import structlog

from cabbage import outages
from cabbage.exceptions import DatabaseUnavailable, TaskNotFound
from cabbage.heartbeat import DEFAULT_HEARTBEAT_INTERVAL_S, DEFAULT_HEARTBEAT_TIMEOUT_S, HeartbeatThread, register_worker
from cabbage.jobs import Job, JobError, Outcome, Status
from cabbage.lease import Lease, margin_for
from cabbage.retry import RetryPolicy
from cabbage.store import JobStore
from cabbage.task_errors import describe_exception

if TYPE_CHECKING:
    from cabbage.manager import TaskManager

log = structlog.get_logger()

T = TypeVar("T")

# How long a stopping worker keeps trying to give its jobs back through an outage.
WRAP_UP_S = 5.0

# What a task may raise and still have its attempt recorded as failed: a task that calls
# sys.exit() or raises KeyboardInterrupt itself fails its job; the worker goes on.
TASK_EXCEPTIONS = (Exception, KeyboardInterrupt, SystemExit)


class UnrunnableJob(Exception):
    """A job this worker cannot run at all (unknown task, undecodable arguments)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error = JobError(error_type, message)


class Worker:
    """Runs the jobs of a TaskManager's store.

    ``queues``: the queues to take jobs from (None: all). ``worker_id``: a row the caller
    registered (the supervisor's child, which passes its ``lease`` too); without it the worker
    registers itself for the duration of ``run()`` or ``process_jobs()``, heartbeats every
    ``heartbeat_interval_s``, and unregisters at the end. ``batch_size``: how many jobs one
    claim reserves. ``on_job_started`` / ``on_job_finished`` are called with each job around
    its attempt, ``on_task_returned`` as soon as the task's function returned or raised (its
    outcome may still be on its way to the database). A KeyboardInterrupt raised inside a task fails its job and, unless
    ``stop_on_keyboard_interrupt`` is False (the supervisor's children ignore Ctrl-C), is
    raised again once the outcome is recorded, so that Ctrl-C still stops a worker run by hand.

    >>> cabbage.Worker(task_manager).process_jobs()          # every job due now, then return
    >>> cabbage.Worker(task_manager, queues=["queue"]).run()  # until stop()
    """

    def __init__(
        self,
        task_manager: "TaskManager",
        queues: Sequence[str] | None = None,
        *,
        worker_id: int | None = None,
        lease: Lease | None = None,
        poll_interval_s: float = 5.0,
        batch_size: int = 1,
        hostname: str | None = None,
        heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
        heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S,
        stop_on_keyboard_interrupt: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.task_manager = task_manager
        self.store: JobStore = task_manager.store
        self.queues = None if queues is None else list(queues)
        self.worker_id = worker_id
        self.lease = lease
        self.poll_interval_s = poll_interval_s
        self.batch_size = batch_size
        self.hostname = hostname
        self.heartbeat_interval_s = heartbeat_interval_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.stop_on_keyboard_interrupt = stop_on_keyboard_interrupt
        self.on_job_started: Callable[[Job], None] | None = None
        self.on_job_finished: Callable[[Job], None] | None = None
        self.on_task_returned: Callable[[Job], None] | None = None
        self._stopping = False
        self._jobs_left: int | None = None  # run(max_jobs=...)'s budget
        self._next_job: Job | None = None  # started by finish_and_start, runs next
        self._reserved: collections.deque[Job] = collections.deque()  # claimed, not started
        self._claim_found_nothing = False  # the last finish's claim: no need to claim again at once
        self._current_job: Job | None = None
        self._outage = outages.Outage(log, role_of_calls="worker")

    # -- control -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stops taking jobs; the current job finishes. Safe from a signal handler."""
        self._stopping = True
        self.store.interrupt_wait()

    @property
    def is_stopping(self) -> bool:
        return self._stopping

    def _is_stopping(self) -> bool:
        return self._stopping

    # -- the step and its two loops ------------------------------------------------------------

    def process_next_job(self) -> bool:
        """Claims one due job, runs it, records the outcome; False when none was due."""
        if self.worker_id is None:
            with self._registration():
                return self.process_next_job()
        job = self._take_next_job()
        if job is None:
            return False
        self._run_job(job)
        return True

    def process_jobs(self) -> int:
        """Runs every job due now, in order, then returns how many ran.

        >>> cabbage.Worker(task_manager).process_jobs()
        """
        count = 0
        self._claim_found_nothing = False  # a previous loop's: not this one's
        with self._registration():
            while self._may_take_job() and self.process_next_job():
                count += 1
        return count

    def run(self, max_jobs: int | None = None) -> None:
        """Runs jobs until ``stop()`` (or after ``max_jobs`` jobs), waiting when none is due."""
        self._jobs_left = max_jobs
        self._claim_found_nothing = False  # a previous loop's: not this one's
        count = 0
        with self._registration():
            log.info("worker_started", worker_id=self.worker_id, queues=self.queues, batch_size=self.batch_size)
            # Listen before the first claim: a job deferred between an empty claim and the
            # first wait would otherwise sleep through a whole poll interval.
            self._wait_for_jobs(0)
            try:
                while self._may_take_job():
                    if self.process_next_job():
                        count += 1
                    elif not self._stopping:
                        self._wait_for_jobs(self.poll_interval_s)
                reason = "stop requested" if self._stopping else "max_jobs reached"
                log.info("worker_stopping", worker_id=self.worker_id, reason=reason, jobs_run=count)
            finally:
                self._jobs_left = None
        log.info("worker_exited", worker_id=self.worker_id, jobs_run=count)

    def _may_take_job(self) -> bool:
        if self._next_job is not None:
            return True  # its attempt has begun: it runs even when stopping
        return not self._stopping and (self._jobs_left is None or self._jobs_left > 0)

    def _wait_for_jobs(self, timeout_s: float) -> None:
        """Waits for a notification; an outage shortens it to one retry of the connection (the
        next claim tries the database again), so a worker is never stuck waiting on a dead one."""
        try:
            self.store.wait_for_jobs(self.queues, timeout_s)
        except DatabaseUnavailable as exc:
            self._outage.failed(exc)
            # The next claim rides the outage out with its backoff; this only keeps a worker
            # whose LISTEN alone fails from spinning.
            time.sleep(min(timeout_s, outages.FIRST_DELAY_S))

    # -- registration --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _registration(self) -> Iterator[None]:
        """Registers the worker (and heartbeats) for a loop's duration when no worker_id was
        given; on the way out, reserved jobs are released and such a worker unregisters."""
        if self.worker_id is not None:
            try:
                yield
            finally:
                self._release_reserved()
            return
        self.lease = Lease(self.heartbeat_timeout_s, margin_for(self.heartbeat_interval_s, self.heartbeat_timeout_s))
        sent_at = time.monotonic()
        self.worker_id = self._until_it_answers(lambda: register_worker(self.store, self.queues, self.hostname))
        self.lease.renew(sent_at)
        heartbeat = HeartbeatThread(self.store.open_sibling(), self.worker_id, self.heartbeat_interval_s, lease=self.lease)
        heartbeat.start()
        interruption: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            interruption = exc
            raise
        finally:
            heartbeat.stop()
            heartbeat.join()
            self._unregister(interruption)

    def _unregister(self, interruption: BaseException | None) -> None:
        assert self.worker_id is not None
        worker_id, self.worker_id = self.worker_id, None
        was_interrupted = self._current_job is not None or self._next_job is not None
        self._current_job = self._next_job = None
        self._reserved.clear()  # unregistering and reclaiming both give reserved jobs back
        if not was_interrupted:
            self._for_a_while(lambda: self.store.unregister_worker(worker_id))
            return
        # Interrupted mid-job (a BaseException out of the loop): take the job back now, as a
        # supervisor would, rather than leave it doing without a worker row.
        reason = f"interrupted by {type(interruption).__name__}" if interruption else "interrupted"
        self.store.reclaim_jobs_of([worker_id], reason)

    def _release_reserved(self) -> None:
        """Gives back the jobs claimed in a batch but not started: todo again, no attempt used."""
        if self._reserved and self.worker_id is not None:
            job_ids = [job.id for job in self._reserved]
            self._reserved.clear()
            worker_id = self.worker_id
            self._for_a_while(lambda: self.store.release_jobs(job_ids, worker_id))

    # -- calls that ride out an outage ---------------------------------------------------------

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
        sent_at = time.monotonic()
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

    def _take_next_job(self) -> Job | None:
        """The next started job: the one finish_and_start began, a reserved one, or a new claim."""
        assert self.worker_id is not None
        if self._next_job is not None:
            job, self._next_job = self._next_job, None
            return job
        while self._reserved:
            # None: reclaimed since we reserved it (our heartbeat was late); skip it.
            started = self._start_reserved(self._reserved.popleft().id)
            if started is not None:
                return started
        if self._claim_found_nothing:
            self._claim_found_nothing = False
            return None  # wait instead: a job deferred since then notifies
        if self._stopping or not self._has_lease_for_a_claim():
            return None
        claimed = self._claim(self._claim_limit())
        started = [job for job in claimed if job.started_at is not None]
        self._reserved.extend(job for job in claimed if job.started_at is None)
        return started[0] if started else None

    def _claim(self, limit: int) -> list[Job]:
        """claim_jobs; after a lost connection, the jobs the lost claim may have committed are
        taken over (held_jobs) before anything more is claimed."""
        assert self.worker_id is not None
        worker_id = self.worker_id
        try:
            return self.store.claim_jobs(worker_id, self.queues, limit=limit)
        except DatabaseUnavailable as exc:
            self._outage.failed(exc)
        try:
            held = self._until_it_answers(lambda: self.store.held_jobs(worker_id), self._is_stopping)
            if held:
                return held
            return self._until_it_answers(lambda: self.store.claim_jobs(worker_id, self.queues, limit=limit), self._is_stopping)
        except DatabaseUnavailable:
            return []  # stopping during an outage; what the lost claim took is reclaimed with this worker

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

    def _claim_limit(self) -> int:
        """How many jobs the next claim may take: a batch, within run(max_jobs=...)'s budget."""
        return self.batch_size if self._jobs_left is None else max(1, min(self.batch_size, self._jobs_left))

    # -- one attempt ---------------------------------------------------------------------------

    def _run_job(self, job: Job) -> None:
        self._current_job = job  # until its outcome is recorded
        if self._jobs_left is not None:
            self._jobs_left -= 1
        with structlog.contextvars.bound_contextvars(worker_id=self.worker_id, **job.log_context()):
            if self.on_job_started is not None:
                self.on_job_started(job)
            outcome, interrupt = self._attempt(job)
            if self.on_task_returned is not None:
                self.on_task_returned(job)
            self._finish(job, outcome)
            self._current_job = None
            if self.on_job_finished is not None:
                self.on_job_finished(job)
        if interrupt is not None:
            raise interrupt  # Ctrl-C of a worker run by hand: its job's outcome is recorded

    def _attempt(self, job: Job) -> tuple[Outcome, KeyboardInterrupt | None]:
        """Calls the task and turns what happened into an Outcome, logging one line for it; also
        the KeyboardInterrupt the worker must raise again once the outcome is recorded."""
        log.info("job_started")
        started = time.perf_counter()
        try:
            task, args, kwargs = self._resolve(job)
        except UnrunnableJob as exc:
            log.error("job_failed", error_type=exc.error.type, error=exc.error.message, duration_ms=_ms_since(started))
            return Outcome.failed(exc.error), None
        try:
            task.func(*args, **kwargs)
        except TASK_EXCEPTIONS as exc:  # the boundary around the user's code
            interrupt = exc if isinstance(exc, KeyboardInterrupt) and self.stop_on_keyboard_interrupt else None
            return self._failed_attempt(job, task.retry_policy, exc, started), interrupt
        log.info("job_succeeded", duration_ms=_ms_since(started))
        return Outcome.succeeded(), None

    def _resolve(self, job: Job) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        try:
            task = self.task_manager.get_task(job.task_name)
        except TaskNotFound as exc:
            raise UnrunnableJob("TaskNotFound", str(exc)) from None
        args, kwargs = _decode_arguments(job)
        return task, args, kwargs

    def _failed_attempt(self, job: Job, policy: RetryPolicy, exc: BaseException, started: float) -> Outcome:
        error = describe_exception(exc)
        if policy.max_attempts != job.max_attempts:
            # The job keeps the limit it was deferred with, as reclaim does.
            policy = dataclasses.replace(policy, max_attempts=job.max_attempts)
        retry_in_s = policy.retry_in_s(job.attempts, exc)
        fields = {"error_type": error.type, "error": error.message, "duration_ms": _ms_since(started), "exc_info": exc}
        if retry_in_s is None:
            log.error("job_failed", **fields)
            return Outcome.failed(error)
        log.warning("job_retry_scheduled", retry_in_s=retry_in_s, **fields)
        return Outcome.retry(error, retry_in_s)

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

    def _finish_once(self, job: Job, outcome: Outcome) -> bool:
        assert self.worker_id is not None
        if self._reserved and self._may_take_job():
            next_job_id = self._reserved[0].id
            is_finished, self._next_job = self.store.finish_and_start(
                job.id, self.worker_id, job.attempts, outcome, next_job_id
            )
            self._reserved.popleft()
            return is_finished
        if self._may_take_job() and not self._stopping and self._lease_allows_claim():
            is_finished, claimed = self.store.finish_and_claim(
                job.id, self.worker_id, job.attempts, outcome, self.queues, self._claim_limit()
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
            held = [held_job for held_job in self.store.held_jobs(worker_id) if held_job.id != job.id]
            if self.store.finish_job(job.id, worker_id, job.attempts, outcome):
                is_finished = True
            else:
                is_finished = _holds_outcome(self.store.get_job(job.id), job, outcome)
            self._next_job = None
            self._reserved.clear()
            self._take_over(held)
            return is_finished

        return self._until_it_answers(finish)

    def _take_over(self, claimed: Sequence[Job]) -> None:
        """Jobs a claim gave this worker: the started one runs next, the reserved ones after."""
        known = {reserved.id for reserved in self._reserved}
        for claimed_job in claimed:
            if claimed_job.started_at is not None:
                if self._next_job is None:
                    self._next_job = claimed_job
            elif claimed_job.id not in known:
                self._reserved.append(claimed_job)


def _holds_outcome(row: Job | None, attempt_job: Job, outcome: Outcome) -> bool:
    """Whether the job's row already shows this attempt's outcome, recorded by a finish whose
    answer was lost with the connection (a reclaim would have left a WorkerLost error instead)."""
    if row is None:
        return False  # pruned since: nothing can tell
    error = row.last_error
    ours = (error.type if error else None) == (outcome.error.type if outcome.error else None)
    if outcome.status is Status.SUCCEEDED:
        return row.status is Status.SUCCEEDED and row.attempts == attempt_job.attempts
    if outcome.status is Status.FAILED:
        return row.status is Status.FAILED and row.attempts == attempt_job.attempts and ours
    # A retry: back in line with our error, or already taken by the next attempt.
    return ours and (row.attempts > attempt_job.attempts or row.status is Status.TODO)


def _decode_arguments(job: Job) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A job's positional and keyword arguments; a JSON object stored in ``args`` is kwargs."""
    kwargs = job.kwargs
    if not isinstance(kwargs, Mapping) or not all(isinstance(name, str) for name in kwargs):
        raise UnrunnableJob("UndecodableArguments", f"kwargs of job {job.id} must be a JSON object, got {reprlib.repr(kwargs)}")
    if isinstance(job.args, Mapping):
        if not all(isinstance(name, str) for name in job.args):
            raise UnrunnableJob("UndecodableArguments", f"args of job {job.id} has non-string keys: {reprlib.repr(job.args)}")
        return (), {**job.args, **kwargs}
    if isinstance(job.args, (list, tuple)):
        return tuple(job.args), dict(kwargs)
    raise UnrunnableJob("UndecodableArguments", f"args of job {job.id} must be a JSON array or object, got {reprlib.repr(job.args)}")


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
