"""The ``cabbage-supervisor`` command: options (each also a ``CABBAGE_*`` variable), logging, exit codes.

    cabbage-supervisor --app proj.tasks --workers 8
    CABBAGE_APP=proj.tasks CABBAGE_WORKERS=8 cabbage-supervisor      # as a systemd EnvironmentFile sets it

A flag wins over its variable; an empty variable counts as unset. Startup imports the app
once and checks the database schema, then hands over to the master loop. Every failure is one
log line naming its cause and an exit status from ``supervisor.exit_codes``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Mapping, Sequence

import structlog

import cabbage
from cabbage import dsn as dsn_module
from cabbage import logconfig
from cabbage.exceptions import AppImportError, ConfigurationError, DatabaseUnavailable, SchemaError
from supervisor import exit_codes, proctitle
from supervisor.app_import import LoadedApp, import_app
from supervisor.config import OPTIONS, Setting, SupervisorConfig, from_settings
from supervisor.master import Master
from supervisor.systemd import SystemdNotifier

log = structlog.get_logger()

PROGRAM = "cabbage-supervisor"


DESCRIPTION = """\
Runs the workers of a cabbage app: imports the app once, forks the workers, replaces dead and
hung ones (reclaiming their jobs at once), reclaims the jobs of workers on other hosts whose
heartbeats stopped, and speaks the systemd notify protocol.
"""
EPILOG = """\
signals: TERM, INT   graceful stop (workers finish their job; killed after --graceful-timeout)
         a second TERM or INT, or QUIT   fast stop (workers killed now, their jobs reclaimed)
         HUP         reload: new workers with a fresh import of the app, old ones stop gracefully
         TTIN, TTOU  one worker more, one fewer
exit status: 0 clean stop, 2 bad option, 3 app import failed, 4 schema missing or old
(run 'cabbage schema apply'), 5 database unreachable at start, 6 no worker could be started.
Every option can also be set by its CABBAGE_* variable; the flag wins. See docs/supervisor.md.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the supervisor until it stops; returns its exit status."""
    try:
        config = parse_config(sys.argv[1:] if argv is None else argv, os.environ)
    except SystemExit as stop:  # --help, or argparse's own usage error (already printed)
        return stop.code if isinstance(stop.code, int) else exit_codes.EXIT_USAGE
    except ConfigurationError as exc:
        sys.stderr.write(f"{PROGRAM}: {exc}\n")
        return exit_codes.EXIT_USAGE
    # At once: a --dsn on the command line must not stay readable in ps.
    proctitle.set_title(proctitle.master_title(config.app, 0, "starting"))
    if config.dsn is not None:
        os.environ[dsn_module.DSN_VARIABLE] = config.dsn  # before the app's TaskManager reads it
    notifier = SystemdNotifier.from_environment()
    # As `python -m` would: --app proj.tasks works from the project's folder without PYTHONPATH.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    logconfig.configure(config.log_format, config.log_level)
    logconfig.bind_worker_context(role="master")
    try:
        app = import_app(config.app)
    except AppImportError as exc:
        log.critical("app_import_failed", app=config.app, reload=False, error=str(exc), exc_info=exc)
        return exit_codes.EXIT_APP_IMPORT
    return _run_master(config, app, notifier)


def _run_master(config: SupervisorConfig, app: LoadedApp, notifier: SystemdNotifier) -> int:
    store = app.task_manager.store.open_sibling()
    # A table an operator locked must not freeze the master's loop: its statements give up.
    store.lock_timeout_s = config.heartbeat_interval_s
    store.application_name = "cabbage-supervisor"
    try:
        store.check_schema()
    except SchemaError as exc:
        log.critical("schema_outdated", error=str(exc))
        return exit_codes.EXIT_SCHEMA
    except DatabaseUnavailable as exc:
        log.critical("database_unreachable", error=str(exc))
        return exit_codes.EXIT_DATABASE
    return Master(config, app, store, notifier).run()


def parse_config(argv: Sequence[str], environ: Mapping[str, str]) -> SupervisorConfig:
    """Flags, then ``CABBAGE_*`` variables, then defaults; ConfigurationError names the culprit."""
    arguments = _parser().parse_args(argv)
    settings: dict[str, Setting] = {}
    for option in OPTIONS:
        flag_value = getattr(arguments, option.field)
        if flag_value is not None:
            settings[option.field] = Setting(flag_value, option.flag)
        elif environ.get(option.variable, "").strip():
            settings[option.field] = Setting(environ[option.variable], option.variable)
    return from_settings(settings, default_workers=_usable_cpus())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"{PROGRAM} {cabbage.__version__} (cabbage-queue)")
    for option in OPTIONS:
        # Strings here: from_settings converts flags and variables alike, with the same messages.
        parser.add_argument(
            option.flag, dest=option.field, metavar=option.metavar, help=f"{option.help} [{option.variable}]"
        )
    return parser


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
