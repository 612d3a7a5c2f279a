"""Which PostgreSQL server to use: a configured one, else the local one if it answers, else none.

None means "start a private cluster" (``devdb.cluster``). The demo never probes the local
server (it keeps a persistent cluster of its own); the tests and the benchmarks do.
"""
from __future__ import annotations

import os
from typing import Mapping

# The local server tried before starting a cluster: trust auth, as on CI machines.
LOCAL_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=2"
LIBPQ_ENV_VARS = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")


def configured_dsn(environ: Mapping[str, str] | None = None) -> str | None:
    """CABBAGE_DSN; else "" when libpq's own PG* variables are set (libpq reads them); else None."""
    env = os.environ if environ is None else environ
    if env.get("CABBAGE_DSN"):
        return env["CABBAGE_DSN"]
    if any(env.get(name) for name in LIBPQ_ENV_VARS):
        return ""
    return None


def resolve_dsn(*, probe_local: bool) -> str | None:
    """The configured DSN, else (``probe_local``) the local server if it answers, else None: use
    a private cluster."""
    dsn = configured_dsn()
    if dsn is not None or not probe_local:
        return dsn
    # CABBAGE_TEST_NO_LOCAL_PG=1 skips the probe, so that the private-cluster path is exercised on
    # machines that also run a local server (.ci/run does it for tests/integration/test_devdb.py).
    if os.environ.get("CABBAGE_TEST_NO_LOCAL_PG") == "1":
        return None
    return LOCAL_DSN if can_connect(LOCAL_DSN) else None


def can_connect(dsn: str) -> bool:
    """Whether a session opens; any failure, authentication included, means no."""
    import psycopg2  # lazily: `import devdb` stays cheap for unit tests

    try:
        psycopg2.connect(dsn).close()
    except psycopg2.Error:
        return False
    return True
