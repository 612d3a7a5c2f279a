"""Worker: the fetch-execute loop, one step (``process_next_job``) and two ways to repeat it.

``process_jobs()`` runs jobs until none is due (the how-to's testing snippet); ``run()`` runs
them until ``stop()``, waiting in between for a notification, the next scheduled job of its
queues to be due, or the poll interval, whichever comes first. With ``concurrency`` M, up to M
attempts run at once: ``def`` tasks on a pool of M threads, ``async def`` tasks on one event
loop (``cabbage.executors``); a claim takes up to the free slots, and each outcome is recorded
by this loop, fenced by its attempt (ARCHITECTURE invariant 5). With M = 1 a ``def`` task runs
in the worker's own thread, unless a prefetch is held. With a prefetch, the round trip that
records outcomes (and claims the next jobs) runs on a thread of its own, one at a time, while
prefetched jobs take the freed slots; the attempts that end meanwhile go with the next one. The
loop knows the JobStore contract, never a particular store.

A lost database connection changes no outcome: the worker keeps the outcomes of the attempts it
ran and the jobs it holds, and tries the call again (``cabbage.outages``) until the database
answers; a call whose commit the loss may have hidden is checked against the job's row before
it is tried again. It claims nothing while its lease (``cabbage.lease``) is short.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import queue
import time
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence, TypeVar

import structlog

from cabbage import outages
from cabbage.attempts import Attempt, is_async
from cabbage.exceptions import DatabaseUnavailable
from cabbage.executors import InlineExecutor, LoopExecutor, ThreadExecutor
from cabbage.heartbeat import DEFAULT_HEARTBEAT_INTERVAL_S, DEFAULT_HEARTBEAT_TIMEOUT_S, HeartbeatThread, register_worker
from cabbage.job_context import AbortRequest
from cabbage.jobs import Job, Outcome
from cabbage.lease import Lease, margin_for
from cabbage.recording import OutcomeRecording, finishes_of
from cabbage.store import JobStore


if TYPE_CHECKING:
    from cabbage.manager import TaskManager

log = structlog.get_logger()

T = TypeVar("T")

MAX_CONCURRENCY = 10_000
# How often an idle worker claims without a notification: for one it missed (a reconnect) and for
# retries other workers scheduled (their finish notifies nobody); scheduled jobs of its queues it
# waits for until they are due, however long the interval.
DEFAULT_POLL_INTERVAL_S = 5.0


@dataclasses.dataclass(frozen=True)
class Running:
    """An attempt in flight: its job, when it began (monotonic), whether its task is an ``async
    def`` one (run on the event loop), the deadline of a ``def`` task run in a thread (which
    cannot be stopped), whether it passed that deadline, and its abort request
    (``cabbage.job_context``)."""

    job: Job
    began_at: float
    is_async: bool = False
    deadline: float | None = None
    overran: bool = False
    abort: AbortRequest = dataclasses.field(default_factory=AbortRequest)


@dataclasses.dataclass
class RoundTrip:
    """The outcomes of ``attempts`` on their way to the database on the recorder's thread, with
    the claim of up to ``limit`` next jobs (``finish_jobs_and_claim``); ``answer`` once sent."""

    attempts: list[Attempt]
    limit: int
    answer: "concurrent.futures.Future[tuple[set[int], list[Job]]] | None" = None

    @property
    def ended(self) -> list[tuple[Job, Outcome]]:
        return [(attempt.job, attempt.outcome) for attempt in self.attempts]


class Worker(OutcomeRecording):
    """Runs the jobs of a TaskManager's store.

    ``queues``: the queues to take jobs from (None: all). ``concurrency``: how many attempts run
    at once (threads for ``def`` tasks, one event loop for ``async def`` ones). ``worker_id``: a
    row the caller registered (the supervisor's child, which passes its ``lease`` too); without
    it the worker registers itself for the duration of ``run()`` or ``process_jobs()``,
    heartbeats every ``heartbeat_interval_s``, and unregisters at the end. ``batch_size``: how
    many jobs one claim reserves when the concurrency is 1 (with more, a claim takes the free
    slots). ``prefetch``: how many started jobs the worker holds beyond the ones it runs, so that
    a slot freed takes one at once while the round trip recording the outcomes (and claiming the
    next jobs) is on its way; each has begun its attempt and holds its lock while it waits;
    ``stop()`` gives back those not begun, unused (``on_jobs_prefetched`` hears of them, so that a
    supervisor's master can do the same for a dead child). With a prefetch, even at concurrency 1,
    ``def`` tasks run on the pool's threads, not the loop's (``runs_inline`` is False).
    ``poll_interval_s``: how often an idle ``run()`` claims without a notification; a
    job of its queues scheduled for later wakes it when due, whatever the interval. Hooks, each
    called in the worker loop's thread: ``on_job_started`` and ``on_job_finished`` around each
    attempt, ``on_task_returned`` once its task returned (its outcome may still be on its way to
    the database), ``on_abort_requested`` (in the heartbeat's thread) when an operator asked to
    abort a running job, ``on_overrun`` when the only attempts left are ``def`` tasks of threads
    past their ``timeout=`` (a thread cannot be stopped: the supervisor's child then exits, to be
    replaced; without the hook they run on, logged once as ``job_timed_out``), and
    ``on_batch_end`` after each batch of the others (the jobs one claim began, the tasks whose
    outcomes are recorded together, before the round trip that records them), so that what they
    gathered can be sent at once; unless the attempts run inline a batch of starts ends before any
    of its tasks runs. ``on_jobs_prefetched`` hears of the prefetched jobs the worker holds, each
    once, at the end of a batch or before a wait. A
    KeyboardInterrupt raised inside a task fails its job and, unless
    ``stop_on_keyboard_interrupt`` is False (the supervisor's children ignore Ctrl-C), is raised
    again once the outcomes in flight are recorded, so that Ctrl-C stops a worker run by hand.

    >>> cabbage.Worker(task_manager).process_jobs()                   # every job due now, then return
    >>> cabbage.Worker(task_manager, queues=["queue"], concurrency=20).run()  # until stop()
    >>> cabbage.Worker(task_manager, concurrency=50, prefetch=50).run()  # many short jobs
    >>> cabbage.Worker(task_manager, prefetch=50).run()  # short jobs, one at a time
    """

    def __init__(
        self,
        task_manager: "TaskManager",
        queues: Sequence[str] | None = None,
        *,
        concurrency: int = 1,
        worker_id: int | None = None,
        lease: Lease | None = None,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        batch_size: int = 1,
        prefetch: int = 0,
        hostname: str | None = None,
        heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
        heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S,
        stop_on_keyboard_interrupt: bool = True,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be a whole number from 1 to {MAX_CONCURRENCY}, got {concurrency!r}")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or not 0 <= prefetch <= MAX_CONCURRENCY:
            raise ValueError(f"prefetch must be a whole number from 0 to {MAX_CONCURRENCY}, got {prefetch!r}")
        if prefetch and batch_size > 1 and concurrency == 1:
            raise ValueError(
                f"prefetch and batch_size are two ways to hold jobs ahead, got prefetch={prefetch} with "
                f"batch_size={batch_size}: choose one (a prefetch starts the jobs it holds, a batch reserves them)"
            )
        self.task_manager = task_manager
        self.store: JobStore = task_manager.store
        self.queues = None if queues is None else list(queues)
        self.concurrency = concurrency
        self.worker_id = worker_id
        self.lease = lease
        self.poll_interval_s = poll_interval_s
        self.batch_size = batch_size
        self.prefetch = prefetch
        self.hostname = hostname
        self.heartbeat_interval_s = heartbeat_interval_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.stop_on_keyboard_interrupt = stop_on_keyboard_interrupt
        self.on_job_started: Callable[[Job], None] | None = None
        self.on_job_finished: Callable[[Job], None] | None = None
        self.on_task_returned: Callable[[Job], None] | None = None
        self.on_overrun: Callable[[Sequence[Job]], None] | None = None
        self.on_abort_requested: Callable[[Job, str | None], None] | None = None
        self.on_batch_end: Callable[[], None] | None = None
        self.on_jobs_prefetched: Callable[[Sequence[Job]], None] | None = None
        self._stopping = False
        self._jobs_left: int | None = None  # run(max_jobs=...)'s budget
        self._begun = 0  # attempts begun by this worker, ever
        self._prefetch_told: set[int] = set()  # prefetched jobs on_jobs_prefetched heard of
        self._started: collections.deque[Job] = collections.deque()  # begun by a claim or a finish, to run next
        self._reserved: collections.deque[Job] = collections.deque()  # claimed, not started
        self._claim_found_nothing = False  # the last finish's claim: no need to claim again at once
        self._due_yet_not_claimed = 0  # waits in a row that a job due now, held elsewhere, cut short
        self._running: dict[int, Running] = {}  # job id -> the attempt in flight
        # Aborts requested of jobs this worker started but has not begun running, by (job id,
        # attempt) -> who: the attempt keys it, so that a later attempt of the job (an operator's
        # retry) is never taken for the aborted one.
        self._abort_requests: dict[tuple[int, int], str | None] = {}
        # Attempts whose outcome is to record, and round trips that came back; None wakes a loop
        # waiting for one (a stop).
        self._ended: queue.SimpleQueue[Attempt | RoundTrip | None] = queue.SimpleQueue()
        # With a prefetch, outcomes are recorded on a thread of their own while prefetched jobs
        # take the freed slots: one round trip on its way at a time, the attempts that end
        # meanwhile wait for the next.
        self._round_trip: RoundTrip | None = None
        self._unsent: list[Attempt] = []
        self._recorder: concurrent.futures.ThreadPoolExecutor | None = None
        self._waiting_for_jobs = False  # in store.wait_for_jobs: an attempt that ends must wake it
        self._interrupt: KeyboardInterrupt | None = None
        self._overrun_reported = False
        self._recording: int | None = None  # the job whose outcome is being recorded
        self._outage = outages.Outage(log, role_of_calls="worker")
        self._inline = InlineExecutor(task_manager)
        self._threads: ThreadExecutor | None = None
        self._loop = LoopExecutor(task_manager)

    # -- control -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stops taking jobs; the attempts in flight finish. Safe from a signal handler."""
        self._stopping = True
        self.store.interrupt_wait()
        self._ended.put(None)  # a loop whose slots are all taken waits for an end instead

    def request_aborts(self, requests: Mapping[int, str | None]) -> None:
        """The heartbeat found these jobs of this worker asked to abort (job id -> who asked):
        each running attempt learns it (``should_abort()``), an async one is cancelled. Called
        from the heartbeat's thread; a request seen again is not acted on twice."""
        waiting = {job.id: job for job in list(self._started)}  # a copy: the loop's thread changes it
        for job_id, aborted_by in requests.items():
            running = self._running.get(job_id)
            if running is not None:
                self._abort(running, aborted_by)
            elif job_id in waiting:
                self._abort_requests[(job_id, waiting[job_id].attempts)] = aborted_by

    def _abort(self, running: Running, aborted_by: str | None) -> None:
        if not running.abort.request(aborted_by):
            return
        job = running.job
        log.warning("job_abort_requested", aborted_by=aborted_by, worker_id=self.worker_id, **job.log_context())
        if running.is_async:
            self._loop.cancel(job.id)
        if self.on_abort_requested is not None:
            self.on_abort_requested(job, aborted_by)

    @property
    def is_stopping(self) -> bool:
        return self._stopping

    @property
    def running_count(self) -> int:
        """Attempts in flight now."""
        return len(self._running)

    # -- the step and its two loops ------------------------------------------------------------

    def process_next_job(self) -> bool:
        """Claims one due job, runs it, records the outcome; False when none was due."""
        if self.worker_id is None:
            # Registered for this one job: its finish claims nothing more, as nothing would run it.
            budget, self._jobs_left = self._jobs_left, 1
            try:
                with self._registration():
                    return self.process_next_job()
            finally:
                self._jobs_left = budget
        job = self._take_jobs(1)
        if not job:
            return False
        self._begin_all(job, self._log_context())
        while self._running or self._round_trip is not None:
            self._record_ended(self._ended.get())
        self._raise_interrupt()
        return True

    def process_jobs(self) -> int:
        """Runs every job due now, up to ``concurrency`` at once, then returns how many ran.

        >>> cabbage.Worker(task_manager).process_jobs()
        """
        self._claim_found_nothing = False  # a previous loop's: not this one's
        with self._registration():
            return self._work(until_idle=True)

    def run(self, max_jobs: int | None = None) -> None:
        """Runs jobs until ``stop()`` (or after ``max_jobs`` jobs), waiting when none is due; the
        attempts in flight finish before it returns."""
        self._jobs_left = max_jobs
        self._claim_found_nothing = False  # a previous loop's: not this one's
        with self._registration():
            log.info("worker_started", worker_id=self.worker_id, queues=self.queues, batch_size=self.batch_size, prefetch=self.prefetch,
                     concurrency=self.concurrency)  # fmt: skip
            # Listen before the first claim: a job deferred between an empty claim and the
            # first wait would otherwise sleep through a whole poll interval.
            self._wait_for_jobs(0)
            try:
                count = self._work(until_idle=False)
                reason = "stop requested" if self._stopping else "max_jobs reached"
                log.info("worker_stopping", worker_id=self.worker_id, reason=reason, jobs_run=count)
            finally:
                self._jobs_left = None
        log.info("worker_exited", worker_id=self.worker_id, jobs_run=count)

    def _work(self, *, until_idle: bool) -> int:
        """Begins attempts while slots are free and jobs are due, records each outcome as its
        attempt ends, and waits in between; returns how many attempts it began. Ends when no job
        is due and none runs (``until_idle``), or once stopped or out of budget and none runs."""
        begun_before = self._begun
        try:
            while True:
                self._record_ended()
                self._watch_deadlines()
                if self._stopping and self._started and self.prefetch:
                    if self._round_trip is not None:
                        self._wait_for_an_end()  # its answer may bring more to give back
                        continue
                    self._give_back_prefetch()
                begun = self._begin_what_fits()
                if begun:
                    continue
                if self._has_untold_prefetch():
                    self._end_batch()  # what it holds, told before a wait that may be long
                if self._running or self._round_trip is not None:
                    self._wait_for_an_end()
                elif until_idle or not self._may_take_job():
                    break
                else:
                    self._wait_for_jobs(self.poll_interval_s)
        finally:
            if self._round_trip is not None and self._round_trip.answer is not None:
                # Left by an exception: the connection is the recorder's until its call returns;
                # what it claimed is reclaimed with the worker (``_unregister``, or its master).
                concurrent.futures.wait([self._round_trip.answer])
            self._close_executors()
        self._raise_interrupt()
        return self._begun - begun_before

    def _wait_for_jobs(self, timeout_s: float) -> None:
        """Waits for a notification (or an attempt's end, which interrupts the wait), no longer
        than until the next job of the worker's queues is due; an outage shortens it: the next
        claim rides the outage out with its backoff."""
        # The flag first, the queue next: an attempt that ends in between sees the flag and
        # wakes the wait, one that ended before is seen here.
        self._waiting_for_jobs = True
        try:
            if not self._ended.empty():
                return
            if timeout_s > 0:
                timeout_s = self._until_next_claim_s(timeout_s)
            self.store.wait_for_jobs(self.queues, timeout_s)
        except DatabaseUnavailable as exc:
            self._outage.failed(exc)
            # Only keeps a worker whose LISTEN alone fails from spinning.
            time.sleep(min(timeout_s, outages.FIRST_DELAY_S))
        finally:
            self._waiting_for_jobs = False

    def _wait_for_an_end(self) -> None:
        """Waits for an attempt to end, a job to be deferred when a slot is free, or a thread's
        deadline, whichever comes first."""
        timeout_s = self._until_next_deadline()
        if self._free_slots() > 0 and self._may_take_job() and self._round_trip is None:
            self._wait_for_jobs(timeout_s)  # an attempt's end interrupts it
            return
        try:
            ended = self._ended.get(timeout=timeout_s)
        except queue.Empty:
            return  # a deadline: the loop looks at it next
        if ended is not None:  # None: a stop, which the loop looks at next
            self._record_ended(ended)  # with those that ended with it

    def _raise_interrupt(self) -> None:
        interrupt, self._interrupt = self._interrupt, None
        if interrupt is not None:
            raise interrupt

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
        heartbeat = HeartbeatThread(
            self.store.open_sibling(), self.worker_id, self.heartbeat_interval_s, lease=self.lease,
            on_abort_requests=self.request_aborts,
        )  # fmt: skip
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
        was_interrupted = bool(self._running or self._started or self._recording is not None
                               or self._round_trip is not None or self._unsent)
        self._round_trip = None
        self._unsent.clear()
        self._running.clear()
        self._started.clear()
        self._reserved.clear()  # unregistering and reclaiming both give reserved jobs back
        if not was_interrupted:
            self._for_a_while(lambda: self.store.unregister_worker(worker_id))
            return
        # Interrupted mid-job (a BaseException out of the loop): take the jobs back now, as a
        # supervisor would, rather than leave them doing without a worker row.
        reason = f"interrupted by {type(interruption).__name__}" if interruption else "interrupted"
        self.store.reclaim_jobs_of([worker_id], reason)

    def _give_back_prefetch(self) -> None:
        """A stopping worker gives back the prefetched jobs it has not begun: ``todo`` again, no
        attempt used, so that a stop waits for the running jobs only. Through an outage longer
        than WRAP_UP_S they stay held; whoever reclaims this worker gives them back (its master,
        unused) or charges them (a reclaim of a stale worker elsewhere)."""
        assert self.worker_id is not None
        worker_id, job_ids = self.worker_id, [job.id for job in self._started]
        self._started.clear()

        def give_back() -> int:
            self.store.unstart_jobs(job_ids, worker_id)
            return self.store.release_jobs(job_ids, worker_id)

        try:
            released = self._for_a_while(give_back)
        except DatabaseUnavailable as exc:
            log.warning("prefetch_not_given_back", worker_id=worker_id, job_ids=job_ids, error=str(exc))
            return
        log.info("prefetch_given_back", worker_id=worker_id, jobs=released)

    def _release_reserved(self) -> None:
        """Gives back the jobs claimed in a batch but not started: todo again, no attempt used."""
        if self._reserved and self.worker_id is not None:
            job_ids = [job.id for job in self._reserved]
            self._reserved.clear()
            worker_id = self.worker_id
            self._for_a_while(lambda: self.store.release_jobs(job_ids, worker_id))

    # -- attempts ------------------------------------------------------------------------------

    def _log_context(self) -> dict[str, object]:
        """The log fields the worker loop's thread has bound, for the attempts it begins now."""
        return {**structlog.contextvars.get_contextvars(), "worker_id": self.worker_id}

    def _end_batch(self) -> None:
        """Hands the hooks what a batch gathered: the prefetched jobs not yet told of, then the
        batch's end."""
        if self._started and self.on_jobs_prefetched is not None and self.prefetch:
            fresh = [job for job in self._started if job.id not in self._prefetch_told]
            if fresh:
                self._prefetch_told = {job.id for job in self._started}  # forgets those gone elsewhere
                self.on_jobs_prefetched(fresh)
        if self.on_batch_end is not None:
            self.on_batch_end()

    def _has_untold_prefetch(self) -> bool:
        return self.on_jobs_prefetched is not None and any(job.id not in self._prefetch_told for job in self._started)

    def _begin_all(self, jobs: Sequence[Job], context: Mapping[str, object]) -> None:
        """Begins the attempts of started jobs and ends the batch. Unless they run inline, the
        batch ends before any of them runs: whoever the hooks tell (the supervisor's master) knows of
        every start before its task can do anything, a prefetched job's included."""
        if self.runs_inline:
            for job in jobs:
                self._submit(self._register(job), context)
        else:
            begun = [self._register(job) for job in jobs]
            self._end_batch()
            for running in begun:
                self._submit(running, context)
            return
        self._end_batch()

    def _register(self, job: Job) -> Running:
        """A started job's attempt is in flight from now on; the hooks hear of it."""
        self._begun += 1
        if self._jobs_left is not None:
            self._jobs_left -= 1
        self._prefetch_told.discard(job.id)
        task = self.task_manager.tasks.get(job.task_name)
        on_the_loop = is_async(self.task_manager, job)
        threaded = not self.runs_inline and not on_the_loop
        deadline = time.monotonic() + task.timeout_s if threaded and task is not None and task.timeout_s else None
        running = self._running[job.id] = Running(job, time.monotonic(), on_the_loop, deadline)
        if self.on_job_started is not None:
            self.on_job_started(job)
        if (job.id, job.attempts) in self._abort_requests:
            self._abort(running, self._abort_requests.pop((job.id, job.attempts)))
        return running

    def _submit(self, running: Running, context: Mapping[str, object]) -> None:
        """Hands a registered attempt to its executor; its end is recorded by ``_record``."""
        job = running.job
        if running.is_async:
            self._loop.submit(job, context, running.abort, self._ended_elsewhere)
        elif not self.runs_inline:
            self._thread_pool().submit(job, context, running.abort, self._ended_elsewhere)
        else:
            # Ends before submit returns: nothing to wake, and no wake-up left pending for the
            # next wait (it would cost a claim that finds nothing).
            self._inline.submit(job, context, running.abort, self._ended.put)

    def _thread_pool(self) -> ThreadExecutor:
        if self._threads is None:
            self._threads = ThreadExecutor(self.task_manager, self.concurrency)
        return self._threads

    def _ended_elsewhere(self, attempt: Attempt) -> None:
        # Called in the attempt's thread (or the event loop's): hand it over, and wake the loop
        # if it waits for jobs. A loop busy elsewhere looks at the ended attempts before it
        # waits (``_wait_for_jobs``), so a write(2) per attempt would be spent for nothing.
        self._ended.put(attempt)
        if self._waiting_for_jobs:
            self.store.interrupt_wait()

    def _record_ended(self, first: Attempt | RoundTrip | None = None) -> None:
        """Records every attempt that ended meanwhile (``first``, one taken off the queue
        already, among them), once the answer of a round trip that came back is taken."""
        ended = [] if first is None else [first]
        while True:
            try:
                ended.append(self._ended.get_nowait())
            except queue.Empty:
                break
        for round_trip in ended:
            if isinstance(round_trip, RoundTrip):
                self._take_round_trip(round_trip)
        self._record([attempt for attempt in ended if isinstance(attempt, Attempt)])
        self._send_unsent()

    def _record(self, attempts: Sequence[Attempt]) -> None:
        """Records attempts that ended: run inline, each on its own, in the round trip that
        starts or claims the next job; else all in one round trip with the claim of the next jobs
        (``finish_jobs_and_claim``), which a prefetch sends on the recorder's thread."""
        # An attempt given up for its timeout is not ours to record: its process is replaced.
        ours = [attempt for attempt in attempts if attempt.job.id in self._running]
        if not ours:
            return
        for attempt in ours:
            if self.on_task_returned is not None:
                self.on_task_returned(attempt.job)
            # Out of the running set first: the finish may claim this very job again (a retry due now).
            del self._running[attempt.job.id]
        # Before the round trip, which an outage may hold up, the batch ends; prefetched jobs take
        # the freed slots first, and run while the round trip is on its way (it refills the prefetch).
        if self.prefetch and self._started and self._free_slots() > 0 and not self._stopping:
            taken = [self._started.popleft() for _ in range(min(len(self._started), self._free_slots()))]
            self._begin_all(taken, self._log_context())
        else:
            self._end_batch()
        if self.prefetch:
            self._unsent.extend(ours)  # sent by _send_unsent, now or when the round trip on its way is back
            return
        for batch in ([[attempt] for attempt in ours] if self.runs_inline else [ours]):
            if not batch:
                continue
            self._recording = batch[0].job.id
            try:
                if self.runs_inline:  # a batch of one
                    with self._job_logged(batch[0].job):
                        self._finish(batch[0].job, batch[0].outcome)
                else:
                    self._finish_together([(attempt.job, attempt.outcome) for attempt in batch])
            finally:
                self._recording = None
        self._after_recorded(ours)

    def _after_recorded(self, attempts: Sequence[Attempt]) -> None:
        for attempt in attempts:
            if self.on_job_finished is not None:
                self.on_job_finished(attempt.job)
            if attempt.interrupt is not None and self.stop_on_keyboard_interrupt:
                self._interrupt = attempt.interrupt  # raised once the attempts in flight are recorded
                self._stopping = True

    def _send_unsent(self) -> None:
        """Sends the outcomes of the attempts that ended, with the claim of the next jobs, on the
        recorder's thread; unless a round trip is on its way already: its end sends them."""
        if self._round_trip is not None or not self._unsent:
            return
        assert self.worker_id is not None
        attempts, self._unsent = self._unsent, []
        round_trip = self._round_trip = RoundTrip(attempts, self._limit_of_a_finish())
        self._recording = attempts[0].job.id
        if self._recorder is None:
            self._recorder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cabbage-recorder")
        finishes = finishes_of(round_trip.ended)
        answer = self._recorder.submit(
            self.store.finish_jobs_and_claim, self.worker_id, finishes, self.queues, round_trip.limit
        )
        round_trip.answer = answer
        answer.add_done_callback(lambda _: self._ended.put(round_trip))

    def _take_round_trip(self, round_trip: RoundTrip) -> None:
        """What a round trip of the recorder's thread answered; after a lost connection each of
        its outcomes is recorded as ``_finish`` does, in this thread."""
        assert round_trip.answer is not None
        ended = round_trip.ended
        try:
            answer = round_trip.answer.result()
        except DatabaseUnavailable as exc:
            # While the round trip is still on record: none of its jobs is taken for a held one.
            self._finish_each_after_loss(ended, exc)
        else:
            self._take_answer(ended, round_trip.limit, answer)
        finally:
            self._round_trip = None
            self._recording = None
        self._after_recorded(round_trip.attempts)

    # -- deadlines of threads ------------------------------------------------------------------

    def _until_next_deadline(self) -> float:
        deadlines = [running.deadline for running in self._running.values() if running.deadline and not running.overran]
        if not deadlines:
            return self.poll_interval_s
        return max(0.0, min(min(deadlines) - time.monotonic(), self.poll_interval_s))

    def _watch_deadlines(self) -> None:
        """A ``def`` task in a thread past its timeout cannot be stopped: the worker takes no more
        jobs, and once the others are recorded, ``on_overrun`` decides (the supervisor's child
        exits and its master reclaims the overrun jobs)."""
        if not any(running.deadline for running in self._running.values()):
            return
        now = time.monotonic()
        for job_id, running in list(self._running.items()):
            if running.deadline is not None and not running.overran and now >= running.deadline:
                self._running[job_id] = dataclasses.replace(running, overran=True)
                with self._job_logged(running.job):
                    log.warning("job_timed_out", run_s=round(now - running.began_at, 1))
                self._stopping = self.on_overrun is not None
        overran = [running.job for running in self._running.values() if running.overran]
        others_recorded = len(overran) == len(self._running) and self._round_trip is None and not self._unsent
        if overran and others_recorded and self.on_overrun is not None and not self._overrun_reported:
            self._overrun_reported = True
            self.on_overrun(overran)

    def _close_executors(self) -> None:
        if self._threads is not None and not any(running.overran for running in self._running.values()):
            self._threads.close()
            self._threads = None
        self._loop.close()
        if self._recorder is not None and self._round_trip is None:
            self._recorder.shutdown()
            self._recorder = None
