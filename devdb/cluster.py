"""One private cluster's life: initdb, settings, start, stop, destroy; and the sweep of leaked ones.

A cluster listens on a unix socket only, in its own folder, so no port can clash, even with
parallel runs. Temporary clusters live in /tmp/cabbage-pg-* with the creator's pid in
owner.pid; a later run removes those whose creator died. The failure modes each step handles
are in shared/notes/dev-database.md.
"""
from __future__ import annotations

import atexit
import dataclasses
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import closing
from pathlib import Path

from devdb.binaries import REQUIRED_BINARIES, Account, account_exists, choose_run_as, find_bindir, run_tool
from devdb.errors import DevDbError, say
from devdb.processes import cmdline, process_runs, read_pid, wait_until
from devdb.servers import can_connect

# With no TCP listener the port only names the socket file, so every cluster can use the same one.
PORT = 5432
SOCKET_PATH_MAX = 107  # bytes: sun_path is 108 on Linux, less the terminating NUL
TEMP_ROOT = Path("/tmp")  # not $TMPDIR: the run-as account must traverse it, and sweeps look here
TEMP_PREFIX = "cabbage-pg-"
OWNER_FILE = "owner.pid"
START_RETRY_S = 5.0  # a SIGKILLed postmaster lingered ~2 s as a zombie and blocked restarts
STOP_GRACE_S = 30.0


def choose_socket_dir(data_dir: Path, uid: int, port: int = PORT) -> Path:
    """The data folder when the socket path fits in sun_path, else a short folder under /tmp."""
    if len(os.fsencode(data_dir / f".s.PGSQL.{port}")) <= SOCKET_PATH_MAX:
        return data_dir
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:8]
    return TEMP_ROOT / f"cabbage-{uid}-{digest}"


def _dsn_quote(value: str) -> str:
    """A libpq keyword value, quoted when it holds a space, quote or backslash."""
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no {path.name})"
    return f"last lines of {path}:\n" + "\n".join(text.splitlines()[-lines:])


# -- leaked clusters ---------------------------------------------------------------------------


def sweep_leaked_clusters(root: Path = TEMP_ROOT, *, min_age_s: float = 60.0) -> None:
    """Removes temporary clusters whose owner died without stopping them (a SIGKILLed pytest)."""
    for base in sorted(root.glob(TEMP_PREFIX + "*")):
        if base.is_dir() and _is_leaked(base, min_age_s):
            say(f"removing a leaked cluster in {base}")
            _kill_leaked_postmaster(base)
            socket_dir = choose_socket_dir(base / "data", base.stat().st_uid)
            shutil.rmtree(base, ignore_errors=True)  # another session may be sweeping it too
            if socket_dir != base / "data":
                shutil.rmtree(socket_dir, ignore_errors=True)


def _is_leaked(base: Path, min_age_s: float) -> bool:
    owner = read_pid(base / OWNER_FILE)
    if owner is None:
        # mkdtemp and writing owner.pid are two steps: a young folder without one is being made.
        try:
            return time.time() - base.stat().st_mtime > min_age_s
        except FileNotFoundError:
            return False
    return not process_runs(owner)


def _kill_leaked_postmaster(base: Path) -> None:
    data_dir = str(base / "data")
    pid = read_pid(base / "data" / "postmaster.pid")
    if pid is None or not process_runs(pid) or data_dir not in (cmdline(pid) or []):
        return  # gone, or the pid now belongs to someone else
    os.kill(pid, signal.SIGQUIT)  # immediate shutdown: the folder goes next, nothing to save
    wait_until(lambda: not process_runs(pid), 5.0)


# -- one cluster -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PrivateCluster:
    """A socket-only PostgreSQL cluster in base_dir; temporary ones go away at exit.

        cluster = PrivateCluster.create(durable=False)
        cluster.start()
        psycopg2.connect(cluster.dsn())
        cluster.destroy()
    """

    base_dir: Path
    bindir: Path
    socket_dir: Path
    account: Account | None  # the run-as account when we are root, else None (ourselves)
    durable: bool
    temporary: bool
    creator_pid: int
    port: int = PORT
    # Lines for cabbage.conf beyond the defaults (a test's max_connections, say), and an address
    # to listen on over TCP besides the socket, trusted for its /24 (a test's network namespace).
    settings: tuple[str, ...] = ()
    tcp_address: str | None = None

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "server.log"

    @property
    def run_as(self) -> str | None:
        return self.account.name if self.account else None

    @classmethod
    def create(
        cls,
        base_dir: str | None = None,
        *,
        durable: bool,
        settings: tuple[str, ...] = (),
        tcp_address: str | None = None,
        port: int = PORT,
    ) -> PrivateCluster:
        """A cluster in base_dir (persistent), or in a fresh /tmp/cabbage-pg-* folder removed at
        exit; runs initdb when the folder holds no cluster yet. durable=False trades crash
        safety for speed (fsync, synchronous_commit and full_page_writes off). ``settings``:
        more postgresql.conf lines; ``tcp_address``: also listen there (trust for its /24)."""
        bindir = find_bindir()
        run_as = choose_run_as(os.geteuid(), os.environ, account_exists)
        account = Account.lookup(run_as) if run_as else None
        temporary = base_dir is None
        base = _make_temporary_base() if base_dir is None else _make_base(Path(base_dir).absolute())
        if account is not None:
            os.chown(base, account.uid, account.gid)
            _check_access(base, bindir, account)
        uid = account.uid if account else os.getuid()
        socket_dir = choose_socket_dir(base / "data", uid, port)
        cluster = cls(base, bindir, socket_dir, account, durable, temporary, os.getpid(), port=port, settings=settings,
                      tcp_address=tcp_address)  # fmt: skip
        if temporary:
            atexit.register(cluster._destroy_at_exit)  # before initdb, which may fail
        if not (cluster.data_dir / "PG_VERSION").exists():
            cluster._initdb()
        cluster._write_settings()
        return cluster

    def dsn(self, dbname: str = "postgres") -> str:
        host = _dsn_quote(str(self.socket_dir))
        return f"host={host} port={self.port} user=postgres dbname={_dsn_quote(dbname)}"

    def is_running(self) -> bool:
        """Our postmaster is alive and accepts sessions."""
        return self._postmaster_pid() is not None and can_connect(self.dsn() + " connect_timeout=2")

    def start(self) -> None:
        """Starts the server, or does nothing when it already runs."""
        if self.is_running():
            return
        self._prepare_socket_dir()
        started = time.monotonic()
        while True:
            self._clear_foreign_lock()
            result = self._run_tool("pg_ctl", "start", "-w", "-D", str(self.data_dir), "-l", str(self.log_path))
            if result.returncode == 0 or self.is_running():
                break
            if time.monotonic() - started >= START_RETRY_S:
                said = (result.stdout.strip().splitlines() or ["pg_ctl failed"])[-1]
                raise DevDbError(f"PostgreSQL did not start in {self.data_dir}: {said}\n{_tail(self.log_path)}")
            time.sleep(0.2)
        say(f"PostgreSQL started in {time.monotonic() - started:.2f} s (socket in {self.socket_dir})")

    def stop(self) -> None:
        """Fast shutdown (SIGINT); SIGQUIT if it has not stopped after 30 s."""
        pid = self._postmaster_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGINT)
        if self._wait_for_exit(pid, STOP_GRACE_S):
            return
        say(f"PostgreSQL (pid {pid}) did not stop in {STOP_GRACE_S:.0f} s; sending SIGQUIT")
        os.kill(pid, signal.SIGQUIT)
        if not self._wait_for_exit(pid, 10.0):
            raise DevDbError(f"PostgreSQL (pid {pid}) does not stop\n{_tail(self.log_path)}")

    def restart(self) -> None:
        self.stop()
        self.start()

    def crash(self) -> None:
        """Immediate shutdown (SIGQUIT), as a crash: the next start runs crash recovery."""
        pid = self._postmaster_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGQUIT)
        if not self._wait_for_exit(pid, 10.0):
            raise DevDbError(f"PostgreSQL (pid {pid}) did not stop on SIGQUIT\n{_tail(self.log_path)}")

    def create_database(self, name: str) -> None:
        """Creates the database unless it exists."""
        import psycopg2  # lazily: see can_connect
        from psycopg2 import errors, sql

        with closing(psycopg2.connect(self.dsn())) as conn:
            conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    try:
                        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                    except errors.DuplicateDatabase:
                        pass  # created meanwhile by another process: same outcome

    def destroy(self) -> None:
        """Stops the server and removes every file of the cluster."""
        self.stop()
        for folder in (self.base_dir, self.socket_dir):
            if folder.exists():
                shutil.rmtree(folder)
        atexit.unregister(self._destroy_at_exit)

    def _destroy_at_exit(self) -> None:
        # A forked child (a test's worker process) inherits this hook; only the creator cleans up.
        if os.getpid() == self.creator_pid:
            self.destroy()

    def _postmaster_pid(self) -> int | None:
        """The pid in postmaster.pid if it is our running postmaster."""
        pid = read_pid(self.data_dir / "postmaster.pid")
        if pid is None or not process_runs(pid):
            return None
        arguments = cmdline(pid)
        return pid if arguments is None or str(self.data_dir) in arguments else None

    def _clear_foreign_lock(self) -> None:
        # postmaster.pid naming a live process of the server's own account that is not our
        # postmaster (pids reused after a reboot) makes postgres refuse to start: case 2c.
        lock = self.data_dir / "postmaster.pid"
        pid = read_pid(lock)
        if pid is not None and process_runs(pid) and self._postmaster_pid() is None:
            say(f"removing a stale postmaster.pid (pid {pid} is another process)")
            lock.unlink(missing_ok=True)

    def _wait_for_exit(self, pid: int, timeout_s: float) -> bool:
        lock = self.data_dir / "postmaster.pid"
        return wait_until(lambda: not lock.exists() or not process_runs(pid), timeout_s)

    def _initdb(self) -> None:
        say(f"creating a PostgreSQL cluster in {self.base_dir}")
        argv = ["-D", str(self.data_dir), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"]
        if not self.durable:
            argv.append("--no-sync")  # a throwaway cluster need not survive a power cut
        result = self._run_tool("initdb", *argv)
        if result.returncode != 0:
            raise DevDbError(f"initdb failed in {self.base_dir}:\n{result.stdout.strip()}")

    def _write_settings(self) -> None:
        """Writes cabbage.conf afresh each time, so that `durable` and the socket folder hold."""
        socket_dir = str(self.socket_dir).replace("'", "''")
        listen = self.tcp_address or ""
        lines = [f"listen_addresses = '{listen}'", f"port = {self.port}", f"unix_socket_directories = '{socket_dir}'"]
        if not self.durable:
            lines += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        lines += list(self.settings)
        if self.tcp_address is not None:
            self._trust_network_of(self.tcp_address)
        (self.data_dir / "cabbage.conf").write_text("\n".join(lines) + "\n")
        self._hand_over(self.data_dir / "cabbage.conf")
        main_conf = self.data_dir / "postgresql.conf"
        include = "include_if_exists = 'cabbage.conf'\n"
        if include not in main_conf.read_text():
            with main_conf.open("a") as conf:
                conf.write(include)

    def _trust_network_of(self, address: str) -> None:
        network = ".".join(address.split(".")[:3]) + ".0/24"
        line = f"host all all {network} trust\n"
        hba = self.data_dir / "pg_hba.conf"
        if line not in hba.read_text():
            with hba.open("a") as rules:
                rules.write(line)

    def tcp_dsn(self, dbname: str = "postgres") -> str:
        """The DSN over TCP to ``tcp_address``."""
        assert self.tcp_address is not None, "this cluster listens on its socket only"
        return f"host={self.tcp_address} port={self.port} user=postgres dbname={_dsn_quote(dbname)}"

    def _prepare_socket_dir(self) -> None:
        if self.socket_dir == self.data_dir:
            return
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        self._hand_over(self.socket_dir)
        uid = self.account.uid if self.account else os.getuid()
        if self.socket_dir.stat().st_uid != uid:
            raise DevDbError(f"socket folder {self.socket_dir} belongs to another user; remove it")

    def _hand_over(self, path: Path) -> None:
        if self.account is not None:
            os.chown(path, self.account.uid, self.account.gid)

    def _run_tool(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        # PG* variables would steer the tools (PGDATA, PGPORT); everything is passed explicitly.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        return run_tool([str(self.bindir / tool), *args], self.base_dir, self.account, env)


def _make_temporary_base() -> Path:
    sweep_leaked_clusters()
    base = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=TEMP_ROOT))
    (base / OWNER_FILE).write_text(f"{os.getpid()}\n")
    return base


def _make_base(base: Path) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o700)
    return base


def _check_access(base: Path, bindir: Path, account: Account) -> None:
    """Asks, as the run-as account, whether it can write base and run the binaries."""
    if run_tool(["test", "-w", str(base)], base, account).returncode != 0:
        raise DevDbError(f"the {account.name} account cannot write {base}; set CABBAGE_PG_RUN_AS")
    executable = [arg for name in REQUIRED_BINARIES for arg in ("-a", "-x", str(bindir / name))][1:]
    if run_tool(["test", *executable], base, account).returncode != 0:
        raise DevDbError(
            f"the {account.name} account cannot run the binaries in {bindir} (is a parent folder private,"
            " like /root?); set CABBAGE_PG_BINDIR to binaries it can reach, or CABBAGE_PG_RUN_AS"
        )
