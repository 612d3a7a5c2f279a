"""The benchmarks' footprint helpers: /proc parsing, process trees, connection counting, peaks."""
from __future__ import annotations

import os

import pytest

from benchmarks.footprint import (
    Memory,
    Peaks,
    count_system_connections,
    memory_of,
    parse_smaps_rollup,
    parse_vmrss_kb,
    process_tree,
)
from benchmarks.peers.protocol import HARNESS_APPLICATION_NAME, as_harness

SMAPS_ROLLUP = """\
55d0c8a1a000-7ffd5a3f1000 ---p 00000000 00:00 0                          [rollup]
Rss:               23456 kB
Pss:               12345 kB
Pss_Anon:           8000 kB
Shared_Clean:       9000 kB
Private_Dirty:      7000 kB
"""


def test_smaps_rollup_gives_rss_and_pss_not_their_breakdowns() -> None:
    assert parse_smaps_rollup(SMAPS_ROLLUP) == Memory(rss_kb=23456, pss_kb=12345)


def test_vmrss_is_read_from_status() -> None:
    assert parse_vmrss_kb("Name:\tpython\nVmHWM:\t  9000 kB\nVmRSS:\t  8123 kB\n") == 8123


def test_status_without_vmrss_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_vmrss_kb("Name:\tkthreadd\n")


def test_memories_add_up() -> None:
    assert Memory(1, 2) + Memory(10, 20) == Memory(11, 22)


def test_process_tree_lists_the_root_then_every_descendant_once() -> None:
    children = {1: [2, 3], 2: [4], 3: [], 4: [2]}  # 4 -> 2: a cycle must not loop forever
    assert process_tree(1, lambda pid: children.get(pid, [])) == [1, 2, 3, 4]


def test_process_tree_of_this_process_starts_with_it() -> None:
    assert process_tree(os.getpid())[0] == os.getpid()


def test_an_ended_process_holds_no_memory() -> None:
    assert memory_of(2**22 + 1) == Memory(0, 0)  # above the kernel's pid_max


def test_only_client_backends_outside_the_harness_count() -> None:
    backends = [
        ("client backend", "cabbage"),
        ("client backend", ""),
        ("client backend", HARNESS_APPLICATION_NAME),
        ("autovacuum worker", ""),
    ]
    assert count_system_connections(backends) == 2


def test_peaks_keep_the_largest_of_each_sample() -> None:
    peaks = Peaks()
    peaks.record(Memory(3 * 1024, 1024), connections=4)
    peaks.record(Memory(2 * 1024, 2 * 1024), connections=6)
    assert (peaks.rss_mb, peaks.pss_mb, peaks.connections, peaks.samples) == (3.0, 2.0, 6, 2)


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("host=/tmp dbname=x", f"host=/tmp dbname=x application_name={HARNESS_APPLICATION_NAME}"),
        ("postgresql://u@h/db", f"postgresql://u@h/db?application_name={HARNESS_APPLICATION_NAME}"),
        ("postgres://h/db?sslmode=off", f"postgres://h/db?sslmode=off&application_name={HARNESS_APPLICATION_NAME}"),
    ],
)
def test_a_peer_scripts_own_connections_carry_the_harness_name(dsn: str, expected: str) -> None:
    assert as_harness(dsn) == expected
