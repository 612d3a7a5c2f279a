"""Exit statuses: distinct, documented, and a child's status readable by its master."""
from __future__ import annotations

import re
from pathlib import Path

from supervisor import exit_codes
from supervisor.children import ExitStatus

DOCS = Path(__file__).resolve().parents[2] / "docs" / "supervisor.md"


def _codes(prefix: str) -> dict[str, int]:
    return {name: value for name, value in vars(exit_codes).items() if name.startswith(prefix) and isinstance(value, int)}


def test_master_statuses_are_distinct_and_clean_stop_is_zero() -> None:
    master = _codes("EXIT_")
    assert master["EXIT_OK"] == 0
    assert len(set(master.values())) == len(master)


def test_child_statuses_are_distinct_and_their_failures_mean_nothing_else() -> None:
    child = _codes("CHILD_")
    assert child["CHILD_STOPPED"] == 0
    assert len(set(child.values())) == len(child)
    failures = set(child.values()) - {0}
    # Not a master status, not Python's 1 (uncaught) or 2 (usage), not a shell's 128+signal.
    assert not failures & set(_codes("EXIT_").values())
    assert all(2 < value < 128 for value in failures)
    assert set(exit_codes.CHILD_STATUS_MEANINGS) == failures


def test_every_status_is_documented_with_its_value() -> None:
    text = DOCS.read_text()
    for name, value in {**_codes("EXIT_"), **_codes("CHILD_")}.items():
        assert re.search(rf"^\| {value} \| `{name}` \|", text, re.MULTILINE), f"{name} = {value} is not in {DOCS.name}"


def test_a_child_exit_reads_as_a_reason() -> None:
    assert ExitStatus.from_wait_status(1234, 9).describe() == "process 1234 was killed by signal SIGKILL"
    assert ExitStatus.from_wait_status(1234, 3 << 8).describe() == "process 1234 exited with status 3"
    database_lost = ExitStatus.from_wait_status(1234, exit_codes.CHILD_DATABASE_UNAVAILABLE << 8)
    assert database_lost.describe() == "process 1234 exited with status 75 (it lost the database)"
    assert ExitStatus.from_wait_status(1234, 0).is_clean
    assert not database_lost.is_clean
