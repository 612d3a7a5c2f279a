"""The demo's command line: ``python -m devdb run [--keep] -- CMD ARGS...``, ``dsn``, ``stop``,
and ``write-schema`` (regenerates cabbage/sql/current/schema.sql from the migrations).

``run`` resolves the DSN (CABBAGE_DSN, libpq's PG* variables, else the demo's persistent
cluster, started if needed and stopped afterwards unless ``--keep``), applies the schema, and
runs the command with CABBAGE_DSN set, forwarding INT, TERM and HUP.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
from pathlib import Path
from types import FrameType
from typing import Sequence

from cabbage.exceptions import CabbageError
from devdb.cluster import PrivateCluster
from devdb.errors import DevDbError, say
from devdb.servers import resolve_dsn

REPO_ROOT = Path(__file__).resolve().parents[1]
CURRENT_SCHEMA_FILE = REPO_ROOT / "cabbage" / "sql" / "current" / "schema.sql"


def persistent_base_dir() -> Path:
    """The demo's cluster: per user, or as root per checkout under /var/tmp (never in the checkout)."""
    if os.geteuid() == 0:
        return Path("/var/tmp") / f"cabbage-devdb-{hashlib.sha256(os.fsencode(REPO_ROOT)).hexdigest()[:8]}"
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "cabbage" / "devdb"


def _demo_cluster() -> PrivateCluster:
    return PrivateCluster.create(str(persistent_base_dir()), durable=True)


def _run(command: list[str], *, keep: bool) -> int:
    command = command[1:] if command[:1] == ["--"] else command
    if not command:
        raise DevDbError("nothing to run: python -m devdb run [--keep] -- CMD ARGS...")
    dsn = resolve_dsn(probe_local=False)
    cluster, started_here = None, False
    if dsn is None:
        cluster = _demo_cluster()
        started_here = not cluster.is_running()
        if not started_here:
            say(f"reusing the PostgreSQL running in {cluster.base_dir}")
        cluster.start()
    try:
        if cluster is not None:
            cluster.create_database("cabbage")
            dsn = cluster.dsn("cabbage")
        else:
            say("using CABBAGE_DSN" if os.environ.get("CABBAGE_DSN") else "using libpq's PG* variables")
        _apply_schema(dsn or "")
        return _run_child(command, dsn or "")
    finally:
        # A cluster that was already running belongs to someone else (`--keep`, another demo).
        if cluster is not None and started_here and not keep:
            say("stopping PostgreSQL (pass --keep to leave it running)")
            cluster.stop()


def _apply_schema(dsn: str) -> None:
    from cabbage.schema import apply_schema  # lazily: the schema module needs the rest of cabbage

    say(f"schema at version {apply_schema(dsn)}")


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
    dsn = resolve_dsn(probe_local=False)
    if dsn is None:
        cluster = _demo_cluster()
        cluster.start()
        cluster.create_database("cabbage")
        dsn = cluster.dsn("cabbage")
        say("it keeps running; stop it with: python -m devdb stop")
    from cabbage.dsn import redact  # lazily: it loads psycopg2, which this module defers

    print(redact(dsn) if dsn else "''  (libpq reads the PG* variables)")
    return 0


def _stop() -> int:
    base = persistent_base_dir()
    if (base / "data" / "PG_VERSION").exists():
        _demo_cluster().stop()
    return 0


def _write_schema() -> int:
    """Regenerates cabbage/sql/current/schema.sql from the migrations, in a throwaway database."""
    from cabbage.schema import apply_schema, dump_schema  # lazily: see _apply_schema
    from devdb.databases import throwaway_database

    with throwaway_database("schema_dump") as dsn:
        apply_schema(dsn)
        CURRENT_SCHEMA_FILE.write_text(dump_schema(dsn))
    say(f"wrote {CURRENT_SCHEMA_FILE}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devdb", description="The demo's PostgreSQL.")
    actions = parser.add_subparsers(dest="action", required=True)
    run = actions.add_parser("run", help="run CMD with CABBAGE_DSN set, starting PostgreSQL if needed")
    run.add_argument("--keep", action="store_true", help="leave PostgreSQL running afterwards")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    actions.add_parser("dsn", help="print the DSN the demo uses, starting PostgreSQL if needed")
    actions.add_parser("stop", help="stop the demo's PostgreSQL")
    actions.add_parser("write-schema", help=f"regenerate {CURRENT_SCHEMA_FILE.relative_to(REPO_ROOT)} from the migrations")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.action == "run":
            return _run(args.command, keep=args.keep)
        if args.action == "write-schema":
            return _write_schema()
        return _print_dsn() if args.action == "dsn" else _stop()
    except CabbageError as error:  # ours, or the schema's: one line, no traceback
        say(f"error: {error}")
        return 1

