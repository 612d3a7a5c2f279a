"""cabbage-supervisor as a real process, seen from a test: its parsed logs, its processes, its task events.

Used through the fixtures of conftest.py (``start_supervisor``, ``jobs``, ``write_tasks``);
imported by the tests for their types and helpers (``is_gone``, ``title_of``).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from cabbage.exceptions import DatabaseUnavailable
from cabbage.jobs import Job, NewJob, Status
from cabbage.postgres import PostgresJobStore
from cabbage.schema import apply_schema
from devdb.cluster import PrivateCluster
from tests.waiting import wait_for

SUPERVISOR = Path(sys.executable).with_name("cabbage-supervisor")
TASKS_MODULE = "acceptance_tasks"
TITLE_PREFIX = "cabbage-supervisor: "
# Fast enough for tests: a check a second, a hang noticed in five.
DEFAULT_OPTIONS = ("--workers", "2", "--heartbeat-interval", "1", "--heartbeat-timeout", "5", "--graceful-timeout", "10")

TASKS_PREAMBLE = '''\
import json
import os
import time

import cabbage

task_manager = cabbage.TaskManager()


def record(event, **fields):
    """Appends one JSON line to the test's events file; O_APPEND keeps lines whole."""
    line = json.dumps({"event": event, "pid": os.getpid(), "at": time.time(), **fields}) + "\\n"
    with open(os.environ["CABBAGE_TEST_EVENTS"], "a") as events:
        events.write(line)

'''


class SupervisorProcess:
    """A running cabbage-supervisor: its parsed log lines, its processes, and its task events."""

    def __init__(self, process: subprocess.Popen[str], events_path: Path) -> None:
        self.process = process
        self.events_path = events_path
        self.logs: list[dict[str, Any]] = []
        self.unparsed: list[str] = []  # stdout lines that are not JSON objects
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                parsed = json.loads(line)
            except ValueError:
                self.unparsed.append(line)
                continue
            if isinstance(parsed, dict):
                self.logs.append(parsed)
            else:
                self.unparsed.append(line)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)

    # -- logs ----------------------------------------------------------------------------------

    def events(self, event: str, /, **fields: Any) -> list[dict[str, Any]]:
        """Log lines with that event whose fields have the given values."""
        return [line for line in list(self.logs) if line.get("event") == event and all(line.get(k) == v for k, v in fields.items())]

    def wait_for_event(self, event: str, /, timeout_s: float = 10, **fields: Any) -> dict[str, Any]:
        found = wait_for(lambda: self.events(event, **fields), timeout_s, f"log event {event} {fields or ''}", context=self.last_log_lines)
        return found[0]

    def last_log_lines(self, count: int = 40) -> str:
        lines = [json.dumps(line) for line in self.logs[-count:]]
        return "\n".join(["last log lines:", *lines, *self.unparsed[-10:], *self.stderr[-10:]])

    # -- processes -----------------------------------------------------------------------------

    def children(self) -> list[int]:
        """Pids of the master's live children (zombies not counted)."""
        return [pid for pid, (ppid, state) in _process_table().items() if ppid == self.pid and state != "Z"]

    def titles(self) -> dict[int, str]:
        """Process title of the master and of each child."""
        return {pid: title_of(pid) for pid in [self.pid, *self.children()]}

    def wait_for_children(self, count: int, timeout_s: float = 10, excluding: Sequence[int] = ()) -> list[int]:
        """Waits until the master has ``count`` children, none of them in ``excluding``, all registered."""

        def ready() -> list[int]:
            pids = self.children()
            registered = {line["pid"] for line in self.events("worker_started")}
            fresh = [pid for pid in pids if pid not in excluding and pid in registered]
            return pids if len(pids) == count and len(fresh) == count else []

        return wait_for(ready, timeout_s, f"{count} registered children", context=self.last_log_lines)

    def send(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait_exit(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"cabbage-supervisor did not exit within {timeout_s} s\n{self.last_log_lines()}") from None

    def kill_session(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)  # its session's only group: master and children
        except ProcessLookupError:
            pass  # every process of it has exited already
        self.process.wait(10)
        for reader in self._readers:
            reader.join(5)

    # -- task events ---------------------------------------------------------------------------

    def task_events(self, event: str | None = None, /, **fields: Any) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        lines = [json.loads(line) for line in self.events_path.read_text().splitlines() if line]
        return [line for line in lines if (event is None or line["event"] == event) and all(line.get(k) == v for k, v in fields.items())]

    def wait_for_task_event(self, event: str, /, timeout_s: float = 10, **fields: Any) -> dict[str, Any]:
        found = wait_for(lambda: self.task_events(event, **fields), timeout_s, f"task event {event} {fields or ''}", context=self.last_log_lines)
        return found[0]


def title_of(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part).strip()


def is_gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its reaper counts as gone)."""
    return _process_table().get(pid, (0, "Z"))[1] == "Z"


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process, from /proc/<pid>/stat."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        table[int(entry)] = (int(fields[1]), fields[0])
    return table


def session_members(session_id: int) -> list[int]:
    members = []
    for pid in _process_table():
        try:
            if os.getsid(pid) == session_id and not is_gone(pid):
                members.append(pid)
        except OSError:
            continue
    return members


class Jobs:
    """The test's side of the job table: defer by task name, read jobs back (through the store)."""

    def __init__(self, dsn: str) -> None:
        self.store = PostgresJobStore(dsn)

    def defer(self, task: str, *args: Any, lock: str | None = None, max_attempts: int | None = 1, schedule_in_s: float | None = None) -> int:
        return self.defer_many(task, [args], lock=lock, max_attempts=max_attempts, schedule_in_s=schedule_in_s)[0]

    def defer_many(
        self, task: str, arguments: Sequence[Sequence[Any]], *, lock: str | None = None, max_attempts: int | None = 1, schedule_in_s: float | None = None
    ) -> list[int]:
        schedule_in = {"seconds": schedule_in_s} if schedule_in_s else None
        jobs = [
            NewJob("default", f"{TASKS_MODULE}.{task}", tuple(args), lock=lock, max_attempts=max_attempts, schedule_in=schedule_in)
            for args in arguments
        ]
        return self.store.defer_jobs(jobs)

    def get(self, job_id: int) -> Job:
        job = self.store.get_job(job_id)
        assert job is not None, f"job {job_id} does not exist"
        return job

    def status(self, job_id: int) -> Status | None:
        """The job's status, None while the database cannot be reached (a restart under way)."""
        try:
            return self.get(job_id).status
        except DatabaseUnavailable:
            return None

    def counts(self) -> dict[Status, int]:
        return self.store.count_jobs()

    def close(self) -> None:
        self.store.close()



def elapsed_since(started: float) -> float:
    return time.monotonic() - started


def cluster_with_schema(database: str, **options: Any) -> Iterator[PrivateCluster]:
    """A durable private PostgreSQL of a test's own (to restart, crash or cut off), with a
    database holding the schema; destroyed afterwards. ``options``: of PrivateCluster.create."""
    cluster = PrivateCluster.create(base_dir=None, durable=True, **options)
    try:
        cluster.start()
        cluster.create_database(database)
        apply_schema(cluster.dsn(database))
        yield cluster
    finally:
        cluster.destroy()

