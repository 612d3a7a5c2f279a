"""The README's demo: the how-to's alphabet written in order thanks to a lock, and a job scheduled for later.

    ./demo                       # sets up PostgreSQL and CABBAGE_DSN, then runs this
    python -m examples.demo      # with CABBAGE_DSN set and the schema applied

It defers ``write_alphabet`` for a, b, c, d with one lock and ``create_bug`` a few seconds
ahead, runs ``cabbage-supervisor --workers 2 --app examples.tasks`` to work them off, shows
alphabet.txt growing in order, then stops the supervisor with SIGTERM. Ctrl-C stops it early,
cleanly. It takes about ten seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from cabbage import logconfig
from cabbage.jobs import Status
from cabbage.store import JobStore

LETTERS = "abcd"
SCHEDULE_IN_S = 6
MAX_SLEEP_S = "1.5"  # write_alphabet sleeps up to this long (5 s in the how-to)
DEADLINE_S = 25
STOP_TIMEOUT_S = 15
EXIT_INTERRUPTED = 130


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def main() -> int:
    folder = tempfile.mkdtemp(prefix="cabbage-demo-")
    # examples.tasks reads both when it is imported, here and in the supervisor.
    os.environ["CABBAGE_EXAMPLES_DIR"] = folder
    os.environ.setdefault("CABBAGE_EXAMPLES_MAX_SLEEP_S", MAX_SLEEP_S)
    signal.signal(signal.SIGTERM, _stop_on_signal)  # ./demo forwards TERM and HUP as TERM
    logconfig.configure(level="warning")  # the supervisor's lines tell the story; ours stay quiet
    try:
        return run(Path(folder))
    except KeyboardInterrupt:
        say("interrupted")
        return EXIT_INTERRUPTED
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(folder: Path) -> int:
    from examples import tasks

    alphabet = folder / "alphabet.txt"
    # A queue of this run's own: jobs an interrupted earlier run left behind stay out of it.
    queue = f"demo-{os.getpid()}"
    say(f"deferring write_alphabet('a') .. ('d') with lock={str(alphabet)!r}: one at a time, in order")
    letters = tasks.write_alphabet.configure(lock=str(alphabet), queue=queue)
    letter_jobs = {letters.defer(letter): letter for letter in LETTERS}
    bug_job = tasks.create_bug.configure(schedule_in={"seconds": SCHEDULE_IN_S}, queue=queue).defer()
    say(f"deferring create_bug() to run in {SCHEDULE_IN_S} s")

    command = [_supervisor_command(), "--workers", "2", "--app", "examples.tasks", "--queues", queue]
    say(f"starting {' '.join(['cabbage-supervisor', *command[1:]])}")
    # Its own session: a terminal's Ctrl-C reaches only us, and we stop it once, gracefully.
    supervisor = subprocess.Popen(command, start_new_session=True)
    try:
        is_done = watch(tasks.task_manager.store, supervisor, letter_jobs, bug_job, alphabet)
    finally:
        stop(supervisor)
    return 0 if is_done and supervisor.returncode == 0 else 1


def watch(store: JobStore, supervisor: subprocess.Popen[bytes], letter_jobs: dict[int, str], bug_job: int, alphabet: Path) -> bool:
    """Reports each job as it finishes; True once all did, False on a deadline or a dead supervisor."""
    pending = {*letter_jobs, bug_job}
    deadline = time.monotonic() + DEADLINE_S
    while pending:
        if supervisor.poll() is not None:
            say(f"the supervisor exited with status {supervisor.returncode}")
            return False
        if time.monotonic() > deadline:
            say(f"jobs {sorted(pending)} did not finish within {DEADLINE_S} s")
            return False
        for job_id in sorted(pending):
            job = store.get_job(job_id)
            if job is None or not job.status.is_finished:
                continue
            pending.discard(job_id)
            if job.status is not Status.SUCCEEDED:
                say(f"job {job_id} ({job.task_name}) ended {job.status}: {job.last_error}")
            elif job_id == bug_job and job.started_at is not None:
                waited_s = (job.started_at - job.created_at).total_seconds()
                say(
                    f"create_bug, scheduled {SCHEDULE_IN_S} s ahead, ran {waited_s:.1f} s after it was deferred "
                    "(an idle worker starts a scheduled job when it is due)"
                )
            else:
                say(f"alphabet.txt now reads {alphabet.read_text()!r}")
        time.sleep(0.1)
    say(f"alphabet.txt: {alphabet.read_text()!r}, in order: the lock let one letter run at a time")
    return True


def stop(supervisor: subprocess.Popen[bytes]) -> None:
    if supervisor.poll() is not None:
        return  # it stopped by itself, and watch() said so
    say("stopping the supervisor with SIGTERM: running jobs finish, then it exits")
    supervisor.send_signal(signal.SIGTERM)
    try:
        supervisor.wait(STOP_TIMEOUT_S)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        # Impatient (a second Ctrl-C) or stuck: a second TERM is the supervisor's fast stop.
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait()
    say(f"the supervisor exited with status {supervisor.returncode}")


def _supervisor_command() -> str:
    beside_python = Path(sys.executable).with_name("cabbage-supervisor")
    return str(beside_python) if beside_python.exists() else shutil.which("cabbage-supervisor") or "cabbage-supervisor"


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
