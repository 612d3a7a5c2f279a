"""The distribution as pip would get it: the sdist and the wheel built from this checkout.

The wheel carries the library and the supervisor with their SQL files and templates, nothing
of the repository's development packages; the sdist carries the docs, the systemd units, the
examples and the tests with what they need.
"""
from __future__ import annotations

import email.parser
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import cabbage

REPO_ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = "cabbage-queue"


def build(command: str, source: Path, out: Path) -> Path:
    """Runs setuptools' build backend in ``source`` (``build_sdist`` or ``build_wheel``)."""
    code = f"import sys; from setuptools import build_meta; print('built:', build_meta.{command}(sys.argv[1]))"
    result = subprocess.run([sys.executable, "-c", code, str(out)], cwd=source, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    # The build's own lines go to stdout too.
    (built_line,) = [line for line in result.stdout.splitlines() if line.startswith("built: ")]
    return out / built_line.split()[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist of this checkout, and the wheel built from that sdist as pip would build it."""
    out = tmp_path_factory.mktemp("dist")
    sdist = build("build_sdist", REPO_ROOT, out)
    with tarfile.open(sdist) as archive:
        archive.extractall(out, filter="data")
    unpacked = out / sdist.name.removesuffix(".tar.gz")
    return {"sdist": sdist, "wheel": build("build_wheel", unpacked, out)}


def wheel_files(built: dict[str, Path]) -> set[str]:
    with zipfile.ZipFile(built["wheel"]) as wheel:
        return set(wheel.namelist())


def sdist_files(built: dict[str, Path]) -> set[str]:
    with tarfile.open(built["sdist"]) as sdist:
        return {name.partition("/")[2] for name in sdist.getnames()}


def test_the_wheel_holds_the_library_the_supervisor_and_their_data_files(built: dict[str, Path]) -> None:
    files = wheel_files(built)
    for expected in (
        "cabbage/__init__.py",
        "cabbage/py.typed",
        "cabbage/sql/jobs.sql",
        "cabbage/sql/migrations/0001_initial.sql",
        "cabbage/web/templates/base.html",
        "supervisor/master.py",
    ):
        assert expected in files
    top_level = {name.split("/")[0] for name in files if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"cabbage", "supervisor"}  # no devdb, benchmarks, tests or examples


def test_the_wheel_names_the_distribution_its_version_licence_and_commands(built: dict[str, Path]) -> None:
    with zipfile.ZipFile(built["wheel"]) as wheel:
        info = next(name for name in wheel.namelist() if name.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(wheel.read(info).decode())
        entry_points = wheel.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert metadata["Name"] == DISTRIBUTION
    assert metadata["Version"] == cabbage.__version__
    assert "MIT" in (metadata["License"] or "") + " ".join(metadata.get_all("Classifier") or [])
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload().startswith("# cabbage")  # the README
    assert "cabbage = cabbage.cli:main" in entry_points
    assert "cabbage-supervisor = supervisor.cli:main" in entry_points


def test_the_sdist_carries_docs_units_examples_and_tests(built: dict[str, Path]) -> None:
    files = sdist_files(built)
    for expected in (
        "LICENSE",
        "README.md",
        "pyproject.toml",
        "docs/howto.rst",
        "systemd/cabbage.service",
        "systemd/cabbage@.service",
        "examples/tasks.py",
        "tests/conftest.py",
        "devdb/cluster.py",
        "run-tests",
        "demo",
    ):
        assert expected in files
    assert not any("__pycache__" in name or ".peers-venv" in name for name in files)
