"""The benchmarks' peers: which interpreter the Python >= 3.12 virtualenv is made with, and what
happens without one. Nothing here installs a peer or runs one."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchmarks import peer_runs
from benchmarks.peer_runs import PYTHON312_VARIABLE, PeerVenv


@pytest.fixture(autouse=True)
def no_interpreter_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PYTHON312_VARIABLE, raising=False)


def test_the_named_interpreter_is_used_when_it_qualifies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PYTHON312_VARIABLE, sys.executable)
    assert peer_runs.find_interpreter(sys.version_info[:2]) == (sys.executable, "")


def test_a_named_interpreter_too_old_is_refused_without_searching_further(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PYTHON312_VARIABLE, sys.executable)
    found, reason = peer_runs.find_interpreter((sys.version_info[0], sys.version_info[1] + 1))
    assert found is None
    assert f"{PYTHON312_VARIABLE}={sys.executable} is Python {sys.version_info[0]}.{sys.version_info[1]}" in reason


def test_a_named_interpreter_that_does_not_run_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(PYTHON312_VARIABLE, str(tmp_path / "python3.12"))
    found, reason = peer_runs.find_interpreter((3, 12))
    assert found is None and "not runnable" in reason


def test_pyenv_versions_come_oldest_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("3.13.0", "3.9.18", "3.12.1", "pypy3.10-7.3"):
        (tmp_path / "versions" / name / "bin").mkdir(parents=True)
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    names = [Path(path).parents[1].name for path in peer_runs.candidate_interpreters((3, 12))]
    assert names == ["3.9.18", "3.12.1", "3.13.0", "pypy3.10-7.3"]


def test_without_any_interpreter_the_reason_says_what_to_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    found, reason = peer_runs.find_interpreter((3, 99))
    assert found is None
    assert "needs Python >= 3.99" in reason and PYTHON312_VARIABLE in reason


def test_a_virtualenv_that_cannot_be_made_is_not_made(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    reason = peer_runs.create_venv(PeerVenv(tmp_path / "venv", minimum_python=(3, 99)))
    assert reason is not None and "needs Python >= 3.99" in reason
    assert not (tmp_path / "venv").exists()


def test_every_new_peer_names_its_interpreter_floor() -> None:
    assert peer_runs.PEERS["oban"].venv.minimum_python == (3, 12)
    assert peer_runs.PEERS["chancy"].venv == peer_runs.PEERS["oban"].venv
    assert peer_runs.PEERS["procrastinate"].venv.minimum_python is None
