"""The peers' side of a run: their virtualenv (benchmarks/.peers-venv) and their scripts.

procrastinate 3.x and pgqueuer 1.x are installed from PyPI into a virtualenv of their own, so
that their dependencies never meet cabbage's. Each peer has a script in benchmarks/peers/ that
the harness runs with that virtualenv's python; it prints JSON lines that come back here as
figures.
"""
from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
VENV = BENCHMARKS / ".peers-venv"
# Each peer: what pip installs for it, and its script in benchmarks/peers/.
PEERS: dict[str, tuple[list[str], str]] = {
    "procrastinate": (["procrastinate>=3,<4", "psycopg[binary]"], "procrastinate_bench.py"),
    "pgqueuer": (["pgqueuer>=1,<2", "asyncpg", "psycopg[binary]"], "pgqueuer_bench.py"),
}


def python() -> Path:
    return VENV / "bin" / "python"


def ensure_installed(peers: list[str]) -> None:
    """Creates the virtualenv if needed and installs the peers it lacks (once; later runs reuse it)."""
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        raise SystemExit(f"benchmarks: unknown peer(s) {', '.join(unknown)}; known: {', '.join(PEERS)}")
    if not python().exists():
        print(f"benchmarks: creating {VENV}", file=sys.stderr, flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    missing = [peer for peer in peers if not _imports(peer)]
    if missing:
        requirements = sorted({requirement for peer in missing for requirement in PEERS[peer][0]})
        print(f"benchmarks: installing {' '.join(requirements)} into {VENV}", file=sys.stderr, flush=True)
        subprocess.run([str(python()), "-m", "pip", "install", "--quiet", *requirements], check=True)


def _imports(peer: str) -> bool:
    return subprocess.run([str(python()), "-c", f"import {peer}"], capture_output=True).returncode == 0


def run(peer: str, workload: str, dsn: str, timeout_s: float, **options: Any) -> list[dict[str, Any]]:
    """Runs one workload of a peer's script; its figures, as parsed JSON lines."""
    script = BENCHMARKS / "peers" / PEERS[peer][1]
    command = [str(python()), str(script), workload, "--dsn", dsn]
    for option, value in options.items():
        command += [f"--{option}", str(value)]
    # The script's progress lines and warnings go straight to our stderr.
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=timeout_s)
    if result.returncode != 0:
        print(f"benchmarks: {peer} {workload} exited with {result.returncode}", file=sys.stderr)
    figures = []
    for line in result.stdout.splitlines():
        try:
            figures.append(json.loads(line))
        except ValueError:
            print(f"  {peer}: {line}", file=sys.stderr)
    return figures
