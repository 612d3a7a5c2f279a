"""Worker: the fetch-execute loop, one step (``process_next_job``) and two ways to repeat it.

``process_jobs()`` repeats the step until no job is due (the how-to's testing snippet);
``run()`` repeats it until ``stop()``, waiting for a notification or the poll interval in
between. Each attempt runs inside the job's bound log context, ends with one log line, and is
finished by its owner only (the fence of ARCHITECTURE invariant 5). The loop knows the JobStore
contract, never a particular store.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import reprlib
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import structlog

from cabbage.exceptions import DatabaseUnavailable, TaskNotFound
from cabbage.heartbeat import DEFAULT_HEARTBEAT_INTERVAL_S, HeartbeatThread, register_worker
from cabbage.jobs import Job, JobError, Outcome
from cabbage.retry import RetryPolicy
from cabbage.store import JobStore

if TYPE_CHECKING:
    from cabbage.manager import TaskManager

log = structlog.get_logger()


class UnrunnableJob(Exception):
    """A job this worker cannot run at all (unknown task, undecodable arguments)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error = JobError(error_type, message)


class Worker:
    """Runs the jobs of a TaskManager's store.

    ``queues``: the queues to take jobs from (None: all). ``worker_id``: a row the caller
    registered (the supervisor's child); without it the worker registers itself for the
    duration of ``run()`` or ``process_jobs()``, heartbeats, and unregisters at the end.
    ``batch_size``: how many jobs one claim reserves. ``on_job_started`` / ``on_job_finished``
    are called with each job around its attempt.

    >>> cabbage.Worker(task_manager).process_jobs()          # every job due now, then return
    >>> cabbage.Worker(task_manager, queues=["queue"]).run()  # until stop()
    """

    def __init__(
        self,
        task_manager: "TaskManager",
        queues: Sequence[str] | None = None,
        *,
        worker_id: int | None = None,
        poll_interval_s: float = 5.0,
        batch_size: int = 1,
        hostname: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.task_manager = task_manager
        self.store: JobStore = task_manager.store
        self.queues = None if queues is None else list(queues)
        self.worker_id = worker_id
        self.poll_interval_s = poll_interval_s
        self.batch_size = batch_size
        self.hostname = hostname
        self.on_job_started: Callable[[Job], None] | None = None
        self.on_job_finished: Callable[[Job], None] | None = None
        self._stopping = False
        self._jobs_left: int | None = None  # run(max_jobs=...)'s budget
        self._next_job: Job | None = None  # started by finish_and_start, runs next
        self._reserved: collections.deque[Job] = collections.deque()  # claimed, not started
        self._claim_found_nothing = False  # the last finish's claim: no need to claim again at once
        self._current_job: Job | None = None

    # -- control -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stops taking jobs; the current job finishes. Safe from a signal handler."""
        self._stopping = True
        self.store.interrupt_wait()

    @property
    def is_stopping(self) -> bool:
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
            self.store.wait_for_jobs(self.queues, 0)
            try:
                while self._may_take_job():
                    if self.process_next_job():
                        count += 1
                    elif not self._stopping:
                        self.store.wait_for_jobs(self.queues, self.poll_interval_s)
                reason = "stop requested" if self._stopping else "max_jobs reached"
                log.info("worker_stopping", worker_id=self.worker_id, reason=reason, jobs_run=count)
            finally:
                self._jobs_left = None
        log.info("worker_exited", worker_id=self.worker_id, jobs_run=count)

    def _may_take_job(self) -> bool:
        if self._next_job is not None:
            return True  # its attempt has begun: it runs even when stopping
        return not self._stopping and (self._jobs_left is None or self._jobs_left > 0)

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
        self.worker_id = register_worker(self.store, self.queues, self.hostname)
        heartbeat = HeartbeatThread(self.store, self.worker_id, DEFAULT_HEARTBEAT_INTERVAL_S)
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
            self.store.unregister_worker(worker_id)
            return
        # Interrupted mid-job (KeyboardInterrupt, a store error): take the job back now, as a
        # supervisor would, rather than leave it doing without a worker row.
        reason = f"interrupted by {type(interruption).__name__}" if interruption else "interrupted"
        self.store.reclaim_jobs_of([worker_id], reason)

    def _release_reserved(self) -> None:
        """Gives back the jobs claimed in a batch but not started: todo again, no attempt used."""
        if self._reserved and self.worker_id is not None:
            job_ids = [job.id for job in self._reserved]
            self._reserved.clear()
            self.store.release_jobs(job_ids, self.worker_id)

    # -- taking jobs ---------------------------------------------------------------------------

    def _take_next_job(self) -> Job | None:
        """The next started job: the one finish_and_start began, a reserved one, or a new claim."""
        assert self.worker_id is not None
        if self._next_job is not None:
            job, self._next_job = self._next_job, None
            return job
        while self._reserved:
            # None: reclaimed since we reserved it (our heartbeat was late); skip it.
            started = self.store.start_job(self._reserved.popleft().id, self.worker_id)
            if started is not None:
                return started
        if self._claim_found_nothing:
            self._claim_found_nothing = False
            return None  # wait instead: a job deferred since then notifies
        claimed = self.store.claim_jobs(self.worker_id, self.queues, limit=self._claim_limit())
        if not claimed:
            return None
        self._reserved.extend(claimed[1:])
        return claimed[0]

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
            outcome = self._attempt(job)
            self._finish(job, outcome)
            self._current_job = None
            if self.on_job_finished is not None:
                self.on_job_finished(job)

    def _attempt(self, job: Job) -> Outcome:
        """Calls the task and turns what happened into an Outcome, logging one line for it."""
        log.info("job_started")
        started = time.perf_counter()
        try:
            task, args, kwargs = self._resolve(job)
        except UnrunnableJob as exc:
            log.error("job_failed", error_type=exc.error.type, error=exc.error.message, duration_ms=_ms_since(started))
            return Outcome.failed(exc.error)
        try:
            task.func(*args, **kwargs)
        except Exception as exc:  # the boundary around the user's code; BaseException passes
            return self._failed_attempt(job, task.retry_policy, exc, started)
        log.info("job_succeeded", duration_ms=_ms_since(started))
        return Outcome.succeeded()

    def _resolve(self, job: Job) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        try:
            task = self.task_manager.get_task(job.task_name)
        except TaskNotFound as exc:
            raise UnrunnableJob("TaskNotFound", str(exc)) from None
        args, kwargs = _decode_arguments(job)
        return task, args, kwargs

    def _failed_attempt(self, job: Job, policy: RetryPolicy, exc: Exception, started: float) -> Outcome:
        error = JobError(_type_name(exc), str(exc), "".join(traceback.format_exception(exc)))
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

    def _finish(self, job: Job, outcome: Outcome) -> None:
        """Records the outcome as this attempt's owner and, in the same round trip, starts the
        next reserved job or claims the next jobs."""
        assert self.worker_id is not None
        if self._reserved and self._may_take_job():
            next_job_id = self._reserved.popleft().id
            is_finished, self._next_job = self.store.finish_and_start(
                job.id, self.worker_id, job.attempts, outcome, next_job_id
            )
        elif self._may_take_job():
            is_finished = self._finish_and_claim(job, outcome)
        else:
            is_finished = self._finish_retrying_once(job, outcome)
        if not is_finished:
            log.warning("job_fence_lost", outcome=outcome.status.value)

    def _finish_and_claim(self, job: Job, outcome: Outcome) -> bool:
        """finish_and_claim. When the connection is lost during it, the outcome is recorded once
        more on a fresh connection, as in ``_finish_retrying_once``, and the worker takes over
        what the claim may have committed before the loss: the jobs it holds are never left to
        a worker that forgot them."""
        assert self.worker_id is not None
        try:
            is_finished, claimed = self.store.finish_and_claim(
                job.id, self.worker_id, job.attempts, outcome, self.queues, self._claim_limit()
            )
            self._claim_found_nothing = is_finished and not claimed
        except DatabaseUnavailable as exc:
            is_finished = self._finish_again(job, outcome, exc)
            claimed = [held for held in self.store.held_jobs(self.worker_id) if held.id != job.id]
        # A claim starts its first job and reserves the rest.
        started = [claimed_job for claimed_job in claimed if claimed_job.started_at is not None]
        self._next_job = started[0] if started else None
        self._reserved.extend(claimed_job for claimed_job in claimed if claimed_job.started_at is None)
        return is_finished

    def _finish_retrying_once(self, job: Job, outcome: Outcome) -> bool:
        """finish_job, tried once more on a fresh connection when the first one was lost.

        The fence makes the second try safe: if the first one did commit, the second finds the
        attempt over and changes nothing. Without it, a job that ended during a short outage
        would be reclaimed and run again.
        """
        assert self.worker_id is not None
        try:
            return self.store.finish_job(job.id, self.worker_id, job.attempts, outcome)
        except DatabaseUnavailable as exc:
            return self._finish_again(job, outcome, exc)

    def _finish_again(self, job: Job, outcome: Outcome, lost: DatabaseUnavailable) -> bool:
        """finish_job on a fresh connection after ``lost`` cut off the first try."""
        assert self.worker_id is not None
        log.warning("job_finish_retried", error_type=type(lost).__name__, error=str(lost))
        return self.store.finish_job(job.id, self.worker_id, job.attempts, outcome)


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


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
