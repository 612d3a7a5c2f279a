"""What a system under test holds while it runs: the memory of its processes and its database
connections, sampled every 50 ms by a thread of the harness, kept at their peaks.

Memory is summed over a process tree (a supervisor and its children, or a peer script's worker
processes), read from /proc/<pid>/smaps_rollup: the RSS sum, which counts a page shared by
forked processes once per process (what ``ps`` and most dashboards add up), and the PSS sum,
which splits each shared page between its sharers (what the tree really holds). Connections are
the client backends of the system's database in pg_stat_activity, less the harness's own: every
harness connection carries ``application_name`` HARNESS_APPLICATION_NAME.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import psycopg2

from benchmarks.peers.protocol import HARNESS_APPLICATION_NAME

SAMPLE_INTERVAL_S = 0.05
BACKENDS_OF_DATABASE = """
SELECT backend_type, application_name FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid()
"""


@dataclasses.dataclass(frozen=True)
class Memory:
    rss_kb: int
    pss_kb: int

    def __add__(self, other: Memory) -> Memory:
        return Memory(self.rss_kb + other.rss_kb, self.pss_kb + other.pss_kb)


NO_MEMORY = Memory(0, 0)


def parse_smaps_rollup(text: str) -> Memory:
    """The Rss and Pss lines of /proc/<pid>/smaps_rollup, in kB."""
    fields = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            fields[key] = int(rest.split()[0])
    return Memory(fields.get("Rss", 0), fields.get("Pss", 0))


def parse_vmrss_kb(status_text: str) -> int:
    """The VmRSS line of /proc/<pid>/status, in kB."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError("no VmRSS line")


def children_of(pid: int) -> list[int]:
    """The children of every thread of a process (a child forked by a thread is listed under it)."""
    children = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += [int(child) for child in (task / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass  # the process ended while we looked
    return children


def process_tree(root: int, children: Callable[[int], list[int]] = children_of) -> list[int]:
    """The root and all its descendants, parents before children."""
    tree, pending = [], [root]
    while pending:
        pid = pending.pop(0)
        if pid not in tree:
            tree.append(pid)
            pending += children(pid)
    return tree


def memory_of(pid: int) -> Memory:
    """A process's memory, or nothing for one that has ended."""
    try:
        return parse_smaps_rollup(Path(f"/proc/{pid}/smaps_rollup").read_text())
    except (FileNotFoundError, ProcessLookupError):
        return NO_MEMORY


def count_system_connections(backends: Iterable[tuple[str, str]]) -> int:
    """Client backends (backend_type, application_name) that are not the harness's."""
    return sum(1 for backend_type, application_name in backends
               if backend_type == "client backend" and application_name != HARNESS_APPLICATION_NAME)


@dataclasses.dataclass
class Peaks:
    rss_kb: int = 0
    pss_kb: int = 0
    connections: int = 0
    samples: int = 0

    def record(self, memory: Memory, connections: int) -> None:
        self.rss_kb = max(self.rss_kb, memory.rss_kb)
        self.pss_kb = max(self.pss_kb, memory.pss_kb)
        self.connections = max(self.connections, connections)
        self.samples += 1

    @property
    def rss_mb(self) -> float:
        return round(self.rss_kb / 1024, 1)

    @property
    def pss_mb(self) -> float:
        return round(self.pss_kb / 1024, 1)


class FootprintSampler:
    """Samples a process tree and a database's connections until the ``with`` block ends.

    ``include_root`` False leaves the root process out: a peer script's own process only
    defers the jobs and waits for its workers, as the harness does for cabbage.
    """

    def __init__(self, dsn: str, root_pid: int, *, include_root: bool = True) -> None:
        self.dsn = dsn
        self.root_pid = root_pid
        self.include_root = include_root
        self.peaks = Peaks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, name="footprint", daemon=True)
        self._error: BaseException | None = None

    def __enter__(self) -> FootprintSampler:
        self._connection = psycopg2.connect(self.dsn, application_name=HARNESS_APPLICATION_NAME)
        self._connection.autocommit = True
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._connection.close()
        if self._error is not None:
            raise RuntimeError(f"footprint sampling failed: {self._error}") from self._error

    def sample(self) -> None:
        """One sample: the tree's memory now and the database's connections now."""
        pids = process_tree(self.root_pid)
        if not self.include_root:
            pids = pids[1:]
        memory = sum((memory_of(pid) for pid in pids), NO_MEMORY)
        with self._connection.cursor() as cursor:
            cursor.execute(BACKENDS_OF_DATABASE)
            connections = count_system_connections(cursor.fetchall())
        self.peaks.record(memory, connections)

    def _sample_until_stopped(self) -> None:
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                self.sample()
                self._stop.wait(max(0.0, SAMPLE_INTERVAL_S - (time.monotonic() - started)))
            self.sample()  # the last moment counts too
        except Exception as exc:  # reported by __exit__, in the workload's thread
            self._error = exc

