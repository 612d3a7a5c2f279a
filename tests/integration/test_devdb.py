"""devdb against the real server binaries: a private cluster's life, stale and leaked
state, DSN resolution, and the test fixtures built on it (pg_dsn, template_dsn, db_dsn)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any, Iterator

import psycopg2
import pytest

from devdb import processes, servers
from devdb.cluster import SOCKET_PATH_MAX, sweep_leaked_clusters
from devdb.errors import DevDbError
from devdb.cluster import PrivateCluster
from tests.waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]


def query_one(dsn: str, statement: str) -> Any:
    with closing(psycopg2.connect(dsn)) as connection, connection.cursor() as cursor:
        cursor.execute(statement)
        row = cursor.fetchone()
        assert row is not None
        return row[0]


def lock_file(cluster: PrivateCluster) -> Path:
    return cluster.data_dir / "postmaster.pid"


def postmaster_pid(cluster: PrivateCluster) -> int:
    return int(lock_file(cluster).read_text().split("\n", 1)[0])


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    cluster = PrivateCluster.create(durable=False)
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def running(cluster: PrivateCluster) -> PrivateCluster:
    cluster.start()
    return cluster


# -- a cluster's life --------------------------------------------------------------------------


def test_cluster_answers_on_its_socket_only(running: PrivateCluster) -> None:
    assert running.is_running()
    assert query_one(running.dsn(), "SELECT current_user") == "postgres"
    assert query_one(running.dsn(), "SHOW listen_addresses") == ""
    assert query_one(running.dsn(), "SHOW fsync") == "off"
    assert query_one(running.dsn(), "SHOW unix_socket_directories") == str(running.socket_dir)


def test_restart_replaces_the_postmaster(running: PrivateCluster) -> None:
    before = postmaster_pid(running)
    running.restart()
    assert running.is_running()
    assert postmaster_pid(running) != before
    assert query_one(running.dsn(), "SELECT 1") == 1


def test_stop_removes_the_lock_file_and_start_brings_it_back(running: PrivateCluster) -> None:
    running.stop()
    assert not running.is_running()
    assert not lock_file(running).exists()
    running.stop()  # stopping a stopped cluster is a no-op
    running.start()
    assert query_one(running.dsn(), "SELECT 1") == 1


def test_create_database_twice_is_harmless(running: PrivateCluster) -> None:
    running.create_database("devdb_check")
    running.create_database("devdb_check")
    assert query_one(running.dsn("devdb_check"), "SELECT current_database()") == "devdb_check"


def test_start_ignores_a_lock_file_of_a_dead_process(running: PrivateCluster) -> None:
    stale = lock_file(running).read_text()
    running.stop()
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock_file(running).write_text(f"{dead.pid}\n" + stale.split("\n", 1)[1])
    running.start()
    assert running.is_running()


def test_start_ignores_a_lock_file_naming_another_live_process_of_the_server_account(
    running: PrivateCluster,
) -> None:
    stale = lock_file(running).read_text()
    running.stop()
    # The case postgres itself refuses: a live pid of its own account (after a reboot).
    uid, gid = (running.account.uid, running.account.gid) if running.account else (None, None)
    with subprocess.Popen(["sleep", "60"], user=uid, group=gid) as other:
        try:
            lock_file(running).write_text(f"{other.pid}\n" + stale.split("\n", 1)[1])
            running.start()
            assert running.is_running()
        finally:
            other.kill()


def test_start_right_after_a_kill_9_waits_for_the_old_postmaster(running: PrivateCluster) -> None:
    # A SIGKILLed postmaster lingers (a zombie, children still attached) and blocks a restart.
    with closing(psycopg2.connect(running.dsn())):
        os.kill(postmaster_pid(running), signal.SIGKILL)
        running.start()
    assert query_one(running.dsn(), "SELECT 1") == 1


def test_long_base_dir_gets_a_short_socket_dir_and_destroy_removes_both() -> None:
    parent = Path(tempfile.mkdtemp(prefix="cabbage-devdb-test-", dir="/tmp"))
    try:
        parent.chmod(0o755)  # the run-as account must traverse it
        base = parent / ("long-" * 20)
        cluster = PrivateCluster.create(str(base), durable=False)
        assert cluster.socket_dir != cluster.data_dir
        assert len(str(cluster.socket_dir / ".s.PGSQL.5432")) <= SOCKET_PATH_MAX
        cluster.start()
        assert query_one(cluster.dsn(), "SELECT 1") == 1
        cluster.destroy()
        assert not base.exists()
        assert not cluster.socket_dir.exists()
    finally:
        subprocess.run(["rm", "-rf", str(parent)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another account")
def test_a_base_dir_the_run_as_account_cannot_reach_is_named_in_the_error(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(DevDbError, match="cannot write"):
        PrivateCluster.create(str(private / "cluster"), durable=False)


def test_a_cluster_whose_owner_died_is_swept() -> None:
    # os._exit skips atexit, as a SIGKILL would: the server outlives its owner.
    code = (
        "import os; from devdb.cluster import PrivateCluster\n"
        "cluster = PrivateCluster.create(durable=False); cluster.start()\n"
        "print(cluster.base_dir, flush=True); os._exit(0)"
    )
    leaked = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert leaked.returncode == 0, leaked.stderr
    base = Path(leaked.stdout.strip())
    pid = int((base / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
    sweep_leaked_clusters()
    assert not base.exists()
    wait_for(lambda: not processes.process_runs(pid), 5, f"leaked postmaster {pid} to exit")


# -- which server ------------------------------------------------------------------------------


@pytest.fixture
def no_configuration(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("CABBAGE_DSN", "CABBAGE_TEST_NO_LOCAL_PG", *servers.LIBPQ_ENV_VARS):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def must_not_probe(dsn: str) -> bool:
    raise AssertionError(f"probed {dsn}")


@pytest.mark.parametrize("probe_local", [True, False])
def test_cabbage_dsn_comes_first(no_configuration: pytest.MonkeyPatch, probe_local: bool) -> None:
    no_configuration.setenv("CABBAGE_DSN", "host=db dbname=app")
    no_configuration.setenv("PGHOST", "elsewhere")
    assert servers.resolve_dsn(probe_local=probe_local) == "host=db dbname=app"


@pytest.mark.parametrize("name", servers.LIBPQ_ENV_VARS)
def test_any_libpq_variable_leaves_the_dsn_to_libpq(no_configuration: pytest.MonkeyPatch, name: str) -> None:
    no_configuration.setenv(name, "x")
    no_configuration.setattr(servers, "can_connect", must_not_probe)
    assert servers.resolve_dsn(probe_local=True) == ""


def test_an_empty_cabbage_dsn_counts_as_unset(no_configuration: pytest.MonkeyPatch) -> None:
    no_configuration.setenv("CABBAGE_DSN", "")
    no_configuration.setenv("PGUSER", "app")
    assert servers.resolve_dsn(probe_local=False) == ""


def test_the_demo_never_probes_the_local_server(no_configuration: pytest.MonkeyPatch) -> None:
    no_configuration.setattr(servers, "can_connect", must_not_probe)
    assert servers.resolve_dsn(probe_local=False) is None


def test_no_local_pg_skips_the_probe(no_configuration: pytest.MonkeyPatch) -> None:
    no_configuration.setenv("CABBAGE_TEST_NO_LOCAL_PG", "1")
    no_configuration.setattr(servers, "can_connect", must_not_probe)
    assert servers.resolve_dsn(probe_local=True) is None


def test_tests_use_a_local_server_that_answers(
    no_configuration: pytest.MonkeyPatch, running: PrivateCluster
) -> None:
    no_configuration.setattr(servers, "LOCAL_DSN", running.dsn())
    assert servers.resolve_dsn(probe_local=True) == running.dsn()


def test_a_local_server_that_refuses_us_means_a_private_cluster(
    no_configuration: pytest.MonkeyPatch, running: PrivateCluster
) -> None:
    no_configuration.setattr(servers, "LOCAL_DSN", running.dsn().replace("user=postgres", "user=ghost"))
    assert servers.resolve_dsn(probe_local=True) is None


# -- the fixtures of tests/conftest.py ---------------------------------------------------------

databases_seen: list[str] = []


@pytest.mark.parametrize("turn", [1, 2])
def test_each_test_gets_a_fresh_copy_of_the_template(db_dsn: str, turn: int) -> None:
    name = query_one(db_dsn, "SELECT current_database()")
    assert name not in databases_seen
    databases_seen.append(name)
    assert query_one(db_dsn, "SELECT to_regclass('devdb_marker')") is None
    assert query_one(db_dsn, r"SELECT count(*) FROM pg_class WHERE relname LIKE 'cabbage\_%'") > 0
    with closing(psycopg2.connect(db_dsn)) as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE devdb_marker ()")
        connection.commit()
