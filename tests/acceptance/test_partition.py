"""A host cut off from the database by a real network partition: it stops its locked job before
another host may take it over, and its stale attempt writes nothing when the link returns.

Host A is a cabbage-supervisor in a network namespace of its own, reaching PostgreSQL over a
veth pair; host B is one in the test's namespace, on the same database. The cut is the link
going down while A runs a long job on lock L and has just run a short one on lock M. Needs root
(``ip netns``); the namespace and the link are removed even when the test fails.
"""
from __future__ import annotations

import dataclasses
import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from cabbage.jobs import Status
from devdb.cluster import PrivateCluster
from tests.acceptance.supervisor_process import Jobs, SupervisorProcess, cluster_with_schema
from tests.waiting import wait_for

Start = Callable[..., SupervisorProcess]
HEARTBEAT = ("--heartbeat-interval", "1", "--heartbeat-timeout", "5")
TIMEOUT_S = 5.0
DATABASE = "cabbage_partition"
NAMESPACE_PREFIX = "cabbage-test-"

TASKS = """
@task_manager.task(retry=3)
def hold(n, seconds, after_file=None):
    host = os.environ["CABBAGE_TEST_HOST"]
    started = time.time()
    record("began", n=n, host=host, start=started)
    while after_file and host == "A" and not os.path.exists(after_file):
        time.sleep(0.05)  # on host A: ends only once the test has cut the link
    until = time.time() + seconds
    while time.time() < until:
        record("tick", n=n, host=host)  # the run's own clock: when it was running
        time.sleep(0.1)
    record("worked", n=n, host=host, start=started, end=time.time())
"""

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="network namespaces need root and iproute2 (ip netns)"
)


def ip(*arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *arguments], capture_output=True, text=True, check=check, timeout=30)


@dataclasses.dataclass(frozen=True)
class Network:
    """A namespace for host A, linked to the test's namespace by a veth pair."""

    namespace: str
    host_link: str  # the test's end of the pair; down means the cut
    database_address: str  # on host_link: where A reaches PostgreSQL

    def cut(self) -> None:
        ip("link", "set", self.host_link, "down")

    def heal(self) -> None:
        ip("link", "set", self.host_link, "up")


def remove_leftover_namespaces() -> None:
    """Namespaces of earlier runs whose pytest died before its cleanup (named after its pid)."""
    for line in ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name.startswith(NAMESPACE_PREFIX):
            continue
        pid = name.removeprefix(NAMESPACE_PREFIX).split("-")[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            ip("netns", "delete", name, check=False)


@pytest.fixture
def network() -> Iterator[Network]:
    remove_leftover_namespaces()
    subnet = random.randint(1, 254)
    namespace = f"{NAMESPACE_PREFIX}{os.getpid()}-{subnet}"
    host_link, namespace_link = f"cbh{subnet}", f"cbn{subnet}"
    database_address, host_a_address = f"10.231.{subnet}.1", f"10.231.{subnet}.2"
    try:
        ip("netns", "add", namespace)
        ip("link", "add", host_link, "type", "veth", "peer", "name", namespace_link)
        ip("link", "set", namespace_link, "netns", namespace)
        ip("addr", "add", f"{database_address}/24", "dev", host_link)
        ip("link", "set", host_link, "up")
        ip("netns", "exec", namespace, "ip", "addr", "add", f"{host_a_address}/24", "dev", namespace_link)
        ip("netns", "exec", namespace, "ip", "link", "set", namespace_link, "up")
        ip("netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        yield Network(namespace, host_link, database_address)
    finally:
        ip("link", "delete", host_link, check=False)  # removes both ends
        ip("netns", "delete", namespace, check=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def cluster(network: Network) -> Iterator[PrivateCluster]:
    yield from cluster_with_schema(DATABASE, tcp_address=network.database_address, port=free_port())


def runs_of(supervisor: SupervisorProcess, n: int, host: str) -> list[float]:
    return [event["at"] for event in supervisor.task_events("tick", n=n, host=host)]


@pytest.mark.timeout(180)
def test_a_cut_off_host_stops_its_locked_job_before_another_host_takes_it_over(
    start_supervisor: Start, network: Network, cluster: PrivateCluster, tmp_path: Path
) -> None:
    cut_file = tmp_path / "cut"
    host_a = start_supervisor(
        TASKS, *HEARTBEAT, dsn=cluster.tcp_dsn(DATABASE), env={"CABBAGE_TEST_HOST": "A"},
        wrapper=("ip", "netns", "exec", network.namespace),
    )  # fmt: skip
    host_a.wait_for_children(2, timeout_s=20)
    jobs = Jobs(cluster.dsn(DATABASE))
    long_job = jobs.defer("hold", 0, 20.0, lock="L", max_attempts=3)
    short_job = jobs.defer("hold", 1, 1.0, str(cut_file), lock="M", max_attempts=3)  # ends inside the cut
    host_a.wait_for_task_event("began", n=0, host="A", timeout_s=10)
    host_a.wait_for_task_event("began", n=1, host="A", timeout_s=10)
    host_b = start_supervisor(None, *HEARTBEAT, dsn=cluster.dsn(DATABASE), env={"CABBAGE_TEST_HOST": "B"})
    host_b.wait_for_children(2, timeout_s=20)

    network.cut()
    cut_at = time.time()
    cut_file.touch()
    # B takes both jobs over by the database clock, once A's heartbeats are older than the timeout.
    host_b.wait_for_task_event("began", n=0, host="B", timeout_s=30)
    host_b.wait_for_task_event("began", n=1, host="B", timeout_s=30)
    time.sleep(max(0.0, cut_at + 2 * TIMEOUT_S - time.time()))  # a cut of twice the timeout: the condition under test
    network.heal()

    final = wait_for(
        lambda: all(jobs.status(job_id) is Status.SUCCEEDED for job_id in (long_job, short_job)),
        60, "both jobs to succeed on host B", context=host_b.last_log_lines,
    )  # fmt: skip
    assert final
    # A's run of L ended before B's began, each by its own clock; A never finished it.
    a_ticks, b_ticks = runs_of(host_a, 0, "A"), runs_of(host_b, 0, "B")
    assert a_ticks and b_ticks and max(a_ticks) < min(b_ticks)
    assert not host_a.task_events("worked", n=0, host="A")
    killed = host_a.wait_for_event("worker_killed", timeout_s=5)
    assert "stopped before its lease" in killed["reason"]
    # M's run on A ended inside the cut; its outcome could not be recorded before B re-ran it.
    assert host_a.task_events("worked", n=1, host="A")

    # Once A is back in touch, its stale attempts change no row: B's outcomes stand.
    rows_after_b = {job_id: jobs.get(job_id) for job_id in (long_job, short_job)}
    wait_for(
        lambda: host_a.events("job_fence_lost") or [line for line in host_a.events("worker_exited") if line.get("exit_code") == 77],
        30, "host A's stale worker to find it lost its jobs", context=host_a.last_log_lines,
    )  # fmt: skip
    for job_id, row in rows_after_b.items():
        now = jobs.get(job_id)
        assert (now.status, now.attempts, now.worker_id, now.finished_at) == (row.status, row.attempts, row.worker_id, row.finished_at)
        assert now.attempts == 2  # A's attempt, lost to the cut, and B's
    jobs.close()
