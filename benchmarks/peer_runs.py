"""The peers' side of a run: their virtualenvs, the interpreters those need, and their scripts.

Each peer is installed from PyPI into a virtualenv of the benchmarks' own, so that its
dependencies never meet cabbage's: procrastinate 3.x and pgqueuer 1.x into
``benchmarks/.peers-venv`` (the harness's own Python), oban 0.7 and chancy 0.26 into
``benchmarks/.peers-venv-3.12``, made with the first Python >= 3.12 found (oban requires it;
chancy sits beside it so that the first virtualenv, and the figures of the first two peers, stay
as they were). Each peer has a script in benchmarks/peers/ that the harness runs with its
virtualenv's python; it prints JSON lines that come back here as figures.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

from benchmarks.footprint import process_tree

BENCHMARKS = Path(__file__).resolve().parent
# Names an interpreter >= 3.12 for the second virtualenv; searched for when unset.
PYTHON312_VARIABLE = "CABBAGE_BENCH_PYTHON312"


@dataclasses.dataclass(frozen=True)
class PeerVenv:
    """A virtualenv for peers; ``minimum_python`` None means the harness's own interpreter."""

    path: Path
    minimum_python: tuple[int, int] | None = None

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


@dataclasses.dataclass(frozen=True)
class Peer:
    name: str
    requirements: tuple[str, ...]  # what pip installs for it
    script: str  # in benchmarks/peers/
    venv: PeerVenv


VENV = PeerVenv(BENCHMARKS / ".peers-venv")
VENV_312 = PeerVenv(BENCHMARKS / ".peers-venv-3.12", minimum_python=(3, 12))
# 0.x releases pinned to their minor version: their APIs still change between minors.
PEERS: dict[str, Peer] = {peer.name: peer for peer in (
    Peer("procrastinate", ("procrastinate>=3,<4", "psycopg[binary]"), "procrastinate_bench.py", VENV),
    Peer("pgqueuer", ("pgqueuer>=1,<2", "asyncpg", "psycopg[binary]"), "pgqueuer_bench.py", VENV),
    Peer("oban", ("oban>=0.7,<0.8",), "oban_bench.py", VENV_312),
    Peer("chancy", ("chancy>=0.26,<0.27",), "chancy_bench.py", VENV_312),
)}


def ensure_installed(peers: list[str]) -> list[str]:
    """Creates the virtualenvs and installs the peers they lack (once; later runs reuse them).

    Returns the peers that can run, in the order given; each one left out is named on stderr
    with the reason, once, and the run goes on without it.
    """
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        raise SystemExit(f"benchmarks: unknown peer(s) {', '.join(unknown)}; known: {', '.join(PEERS)}")
    ready_venvs: dict[PeerVenv, str | None] = {}  # None: ready, else why not
    for name in peers:
        venv_ = PEERS[name].venv
        if venv_ not in ready_venvs:
            ready_venvs[venv_] = create_venv(venv_)
    available = []
    for name in peers:
        peer = PEERS[name]
        reason = ready_venvs[peer.venv] or install(peer)
        if reason is None:
            available.append(name)
        else:
            print(f"benchmarks: {name} skipped: {reason}", file=sys.stderr, flush=True)
    return available


def create_venv(venv_: PeerVenv) -> str | None:
    """Makes the virtualenv if it is missing; None when it is ready, else why it cannot be."""
    if venv_.python.exists():
        return None
    if venv_.minimum_python is None:
        interpreter: str | None = sys.executable
    else:
        interpreter, reason = find_interpreter(venv_.minimum_python)
        if interpreter is None:
            return reason
    print(f"benchmarks: creating {venv_.path} with {interpreter}", file=sys.stderr, flush=True)
    if interpreter == sys.executable:
        venv.EnvBuilder(with_pip=True).create(venv_.path)
        return None
    result = subprocess.run([interpreter, "-m", "venv", str(venv_.path)], capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(venv_.path, ignore_errors=True)  # a half-made virtualenv would pass for ready next time
        last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"{interpreter} -m venv {venv_.path} failed: {last_line}"
    return None


def find_interpreter(minimum: tuple[int, int]) -> tuple[str | None, str]:
    """The first Python >= minimum: $CABBAGE_BENCH_PYTHON312 if set (and then only it), else
    pyenv's versions, else python3.N on PATH. With None, the reason nothing was found."""
    wanted = ".".join(map(str, minimum))
    named = os.environ.get(PYTHON312_VARIABLE)
    if named:
        version = python_version(named)
        if version is not None and version >= minimum:
            return named, ""
        found = "not runnable" if version is None else f"Python {'.'.join(map(str, version))}"
        return None, f"{PYTHON312_VARIABLE}={named} is {found}, not a Python >= {wanted}"
    for candidate in candidate_interpreters(minimum):
        version = python_version(candidate)
        if version is not None and version >= minimum:
            return candidate, ""
    return None, (f"it needs Python >= {wanted} and none was found (pyenv versions, python{wanted} and later "
                  f"on PATH); set {PYTHON312_VARIABLE} to one")


def candidate_interpreters(minimum: tuple[int, int]) -> list[str]:
    pyenv_versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = []
    if pyenv_versions.is_dir():
        # Oldest first: the first interpreter that qualifies, not the newest.
        for folder in sorted(pyenv_versions.iterdir(), key=lambda path: version_key(path.name)):
            candidates.append(str(folder / "bin" / "python3"))
    for minor in range(minimum[1], minimum[1] + 8):
        found = shutil.which(f"python{minimum[0]}.{minor}")
        if found:
            candidates.append(found)
    return candidates


def version_key(name: str) -> tuple[int, ...]:
    """'3.12.1' -> (3, 12, 1); a name that is not a version (a virtualenv, 'pypy3.10-7.3') sorts last."""
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return (sys.maxsize,)


def python_version(interpreter: str) -> tuple[int, int] | None:
    try:
        result = subprocess.run([interpreter, "-c", "import sys; print(*sys.version_info[:2])"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    major, minor = result.stdout.split()
    return int(major), int(minor)


def install(peer: Peer) -> str | None:
    """Installs the peer into its virtualenv unless it imports already; None when it is ready."""
    if imports(peer):
        return None
    print(f"benchmarks: installing {' '.join(peer.requirements)} into {peer.venv.path}", file=sys.stderr, flush=True)
    result = subprocess.run([str(peer.venv.python), "-m", "pip", "install", "--quiet", *peer.requirements])
    if result.returncode != 0:
        return f"pip could not install {' '.join(peer.requirements)} into {peer.venv.path} (exit {result.returncode}; its output is above)"
    return None


def imports(peer: Peer) -> bool:
    return subprocess.run([str(peer.venv.python), "-c", f"import {peer.name}"], capture_output=True).returncode == 0


def run(peer: str, workload: str, dsn: str, timeout_s: float, **options: Any) -> list[dict[str, Any]]:
    """Runs one workload of a peer's script; its figures, as parsed JSON lines."""
    return collect(peer, workload, start(peer, workload, dsn, **options), timeout_s)


def start(peer: str, workload: str, dsn: str, **options: Any) -> subprocess.Popen[str]:
    """Starts one workload of a peer's script, for a caller that watches it while it runs."""
    script = BENCHMARKS / "peers" / PEERS[peer].script
    command = [str(PEERS[peer].venv.python), str(script), workload, "--dsn", dsn]
    for option, value in options.items():
        command += [f"--{option.replace('_', '-')}", str(value)]
    # The script's progress lines and warnings go straight to our stderr.
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def collect(peer: str, workload: str, process: subprocess.Popen[str], timeout_s: float) -> list[dict[str, Any]]:
    """Waits for a started script; its figures, as parsed JSON lines."""
    try:
        stdout, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        # Its workers too: they would go on draining into the next workload's minutes.
        for pid in reversed(process_tree(process.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stdout, _ = process.communicate()
        print(f"benchmarks: {peer} {workload} did not finish in {timeout_s:.0f} s; killed", file=sys.stderr)
    if process.returncode != 0:
        print(f"benchmarks: {peer} {workload} exited with {process.returncode}", file=sys.stderr)
    figures = []
    for line in stdout.splitlines():
        try:
            figures.append(json.loads(line))
        except ValueError:
            print(f"  {peer}: {line}", file=sys.stderr)
    return figures
