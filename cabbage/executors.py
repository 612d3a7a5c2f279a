"""Where a worker's attempts run: in the worker's own thread (one job at a time), in a pool of
threads (``def`` tasks, several at once), or on one event loop (``async def`` tasks).

Each executor takes a job, its abort request, and a function to call with its Attempt once it
ended; the worker loop records outcomes in its own thread, in the order the attempts end. Threads do not
inherit context variables: each attempt binds the log fields the worker had bound (its role,
number, worker id) with its job's.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping

from cabbage.attempts import Attempt, run_async_attempt, run_attempt
from cabbage.job_context import AbortRequest
from cabbage.jobs import Job

if TYPE_CHECKING:
    from cabbage.manager import TaskManager

Done = Callable[[Attempt], None]


class InlineExecutor:
    """Runs a ``def`` task in the calling thread: one job at a time, as a worker of concurrency 1."""

    def __init__(self, task_manager: "TaskManager") -> None:
        self.task_manager = task_manager

    def submit(self, job: Job, context: Mapping[str, Any], abort: AbortRequest, done: Done) -> None:
        done(run_attempt(self.task_manager, job, context, abort))

    def close(self) -> None:
        pass


class ThreadExecutor:
    """Runs ``def`` tasks on a pool of threads, as many at once as the worker's concurrency."""

    def __init__(self, task_manager: "TaskManager", threads: int) -> None:
        self.task_manager = task_manager
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cabbage-job")

    def submit(self, job: Job, context: Mapping[str, Any], abort: AbortRequest, done: Done) -> None:
        self._pool.submit(lambda: done(run_attempt(self.task_manager, job, context, abort)))

    def close(self) -> None:
        # Not waiting: a task past its timeout may never return, and its process is replaced.
        self._pool.shutdown(wait=False, cancel_futures=True)


class LoopExecutor:
    """Runs ``async def`` tasks on one event loop, in a thread of its own, started on first use
    (so that a forked child never inherits a running loop).

    Submitted attempts wait in a queue that the loop empties in one turn: the jobs of one claim
    wake the loop once, not once each."""

    def __init__(self, task_manager: "TaskManager") -> None:
        self.task_manager = task_manager
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: dict[int, asyncio.Task[Attempt]] = {}  # job id -> its attempt; the loop's own
        self._submitted: collections.deque[tuple[Job, Mapping[str, Any], AbortRequest, Done]] = collections.deque()
        self._wake_scheduled = False

    def submit(self, job: Job, context: Mapping[str, Any], abort: AbortRequest, done: Done) -> None:
        loop = self._running_loop()
        self._submitted.append((job, context, abort, done))
        if not self._wake_scheduled:
            self._wake_scheduled = True
            loop.call_soon_threadsafe(self._create_submitted_tasks)

    def _create_submitted_tasks(self) -> None:
        # Cleared before the queue is emptied: a job submitted meanwhile is either taken below
        # or schedules a turn of its own.
        self._wake_scheduled = False
        assert self._loop is not None
        while self._submitted:
            job, context, abort, done = self._submitted.popleft()
            task = self._loop.create_task(self._run(job, context, abort))
            task.add_done_callback(functools.partial(_report_attempt, done))

    async def _run(self, job: Job, context: Mapping[str, Any], abort: AbortRequest) -> Attempt:
        current = asyncio.current_task()
        assert current is not None
        self._tasks[job.id] = current
        if abort.is_requested:
            current.cancel()  # asked before it began: a cancel sent earlier found no task
        try:
            return await run_async_attempt(self.task_manager, job, context, abort)
        finally:
            self._tasks.pop(job.id, None)

    def cancel(self, job_id: int) -> None:
        """Cancels the attempt of a job from any thread (its abort was requested): CancelledError
        is raised inside its task, and the attempt ends aborted."""
        loop = self._loop
        if loop is None:
            return

        def cancel_in_loop() -> None:
            task = self._tasks.get(job_id)
            if task is not None:
                task.cancel()

        try:
            loop.call_soon_threadsafe(cancel_in_loop)
        except RuntimeError:
            pass  # the loop is closed: its attempts have ended

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="cabbage-event-loop", daemon=True)
            self._thread.start()
        return self._loop

    def close(self) -> None:
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()
        self._loop = self._thread = None
        self._submitted.clear()
        self._wake_scheduled = False


def _report_attempt(done: Done, task: "asyncio.Task[Attempt]") -> None:
    if not task.cancelled():  # cancelled by the loop's shutdown: no outcome of the task's own
        done(task.result())
