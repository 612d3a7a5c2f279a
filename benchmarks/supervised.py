"""Running cabbage-supervisor for a workload: start it, wait for its workers and for the queue to
drain, read its processes' memory and CPU from /proc, and stop it.

The supervisor runs the app ``benchmarks.apps.tasks`` in its own session, so a stop ends every
process it started, with its JSON logs written to a temporary file (as a service's would be),
removed after a clean run and kept, with its path printed, after a failure.
"""
from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.footprint import parse_vmrss_kb
from benchmarks.servers import cursor_on

APP = "benchmarks.apps.tasks:task_manager"
REPOSITORY = Path(__file__).resolve().parent.parent
POLL_S = 0.1
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def supervisor_command() -> list[str]:
    """The cabbage-supervisor of this Python environment (the virtualenv's console script)."""
    beside_python = Path(sys.executable).parent / "cabbage-supervisor"
    if beside_python.exists():
        return [str(beside_python)]
    found = shutil.which("cabbage-supervisor")
    if found:
        return [found]
    return [sys.executable, "-m", "supervisor.cli"]


@functools.cache
def supervisor_has_option(flag: str) -> bool:
    """Whether this cabbage-supervisor takes an option (its --help names it)."""
    result = subprocess.run(supervisor_command() + ["--help"], capture_output=True, text=True)
    return flag in result.stdout.split()


class Supervisor:
    """One cabbage-supervisor process; use as a context manager so it is always stopped."""

    def __init__(
        self,
        dsn: str,
        workers: int,
        *,
        batch_size: int | None = None,
        concurrency: int = 1,
        prefetch: int = 0,
        synchronous_commit: bool = True,
        log_level: str = "info",
        environment: dict[str, str] | None = None,
        options: tuple[str, ...] = (),
    ) -> None:
        self.dsn = dsn
        self.options = options
        self.workers = workers
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.synchronous_commit = synchronous_commit
        self.log_level = log_level
        self.environment = environment or {}
        self.log_file = tempfile.NamedTemporaryFile(prefix="cabbage-bench-supervisor-", suffix=".jsonl", delete=False)
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Supervisor:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self.stop()
        self.log_file.close()
        if exc_type is None:
            os.unlink(self.log_file.name)  # a clean run's logs are tens of MB of job lines
        else:
            print(f"benchmarks: the supervisor's logs are in {self.log_file.name}", file=sys.stderr)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        command = supervisor_command() + [
            "--app", APP, "--workers", str(self.workers), "--log-format", "json", "--log-level", self.log_level,
        ]
        if self.batch_size is not None:
            command += ["--batch-size", str(self.batch_size)]
        if self.concurrency != 1:
            command += ["--concurrency", str(self.concurrency)]
        if self.prefetch:
            command += ["--prefetch", str(self.prefetch)]
        if not self.synchronous_commit:
            command += ["--synchronous-commit", "off"]
        command += self.options
        environment = {
            **os.environ,
            **self.environment,
            "CABBAGE_DSN": self.dsn,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")])),
        }
        self.process = subprocess.Popen(
            command, env=environment, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_for_workers(self, timeout_s: float = 30.0) -> None:
        """Until every child registered itself in cabbage_workers."""
        with cursor_on(self.dsn) as cursor:
            deadline = time.monotonic() + timeout_s
            while True:
                self._check_running()
                cursor.execute("SELECT count(*) FROM cabbage_workers")
                if cursor.fetchone()[0] >= self.workers:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.workers} workers did not register in {timeout_s:.0f} s; {self.log_tail()}")
                time.sleep(POLL_S)

    def wait_until_drained(self, expected: int, timeout_s: float) -> None:
        """Until ``expected`` jobs are finished (succeeded or failed)."""
        with cursor_on(self.dsn) as cursor:
            deadline = time.monotonic() + timeout_s
            while True:
                self._check_running()
                cursor.execute("SELECT count(*) FROM cabbage_jobs WHERE finished_at IS NOT NULL")
                if cursor.fetchone()[0] >= expected:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{expected} jobs were not finished in {timeout_s:.0f} s; {self.log_tail()}")
                time.sleep(POLL_S * 2)

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def stop(self, grace_s: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            self._cleanup_group()
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            print(f"benchmarks: supervisor {self.pid} did not stop in {grace_s:.0f} s; killing it", file=sys.stderr)
        self._cleanup_group()

    def _cleanup_group(self) -> None:
        # Whatever the session still holds (a child that outlived its master) is ours to end.
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def _check_running(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"cabbage-supervisor exited with {self.process.returncode}; {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        text = Path(self.log_file.name).read_text(errors="replace").splitlines()
        return "its last log lines:\n" + "\n".join(text[-lines:])


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc/<pid>/status (VmRSS), in MB."""
    return round(parse_vmrss_kb(Path(f"/proc/{pid}/status").read_text()) / 1024, 1)


def private_mb(pid: int) -> float:
    """Memory only this process holds (Private_Clean + Private_Dirty of /proc/<pid>/smaps_rollup),
    in MB: for a forked child, what it holds beyond the pages it still shares with its master."""
    private_kb = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            private_kb += int(line.split()[1])
    return round(private_kb / 1024, 1)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process used, from /proc/<pid>/stat (utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S
