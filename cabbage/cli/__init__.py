"""The `cabbage` command: schema, defer, jobs, workers, stats, healthcheck, and the admin website.

    cabbage schema apply --dsn postgresql://app@db/app
    cabbage jobs list --status failed --json
    cabbage jobs retry 41 42
    cabbage jobs prune --older-than 7d

Tables for people, ``--json`` for scripts. An error is one line on stderr and a non-zero exit
status (``cabbage.cli.exit_codes``); a multi-job change is all or nothing. The full reference
is docs/cli.md.
"""

from __future__ import annotations

import sys

from cabbage import dsn as dsn_module
from cabbage import logconfig
from cabbage.admin import Admin
from cabbage.cli.commands import ADMIN_COMMANDS, DSN_COMMANDS
from cabbage.cli.exit_codes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_NOT_FOUND, EXIT_USAGE
from cabbage.cli.output import Output, printable
from cabbage.cli.parser import default_log_level, parse_arguments
from cabbage.exceptions import (
    ArgumentsTooLargeError,
    CabbageError,
    ConfigurationError,
    JobNotFound,
    ScheduleError,
    TaskNotFound,
    UnserialisableArgumentError,
)


def main(argv: list[str] | None = None) -> int:
    """Runs one command line (``sys.argv[1:]`` when None) and returns its exit status."""
    try:
        arguments = parse_arguments(argv)
    except SystemExit as stop:  # --help, or a usage error already printed on one line
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    logconfig.configure(level=arguments.log_level or default_log_level(arguments.action))
    dsn = dsn_module.resolve_dsn(arguments.dsn)
    output = Output(as_json=getattr(arguments, "json", False))
    try:
        if arguments.action in DSN_COMMANDS:
            return DSN_COMMANDS[arguments.action](arguments, dsn, output)
        admin = Admin.connect(dsn)
        try:
            return ADMIN_COMMANDS[arguments.action](arguments, admin, output)
        finally:
            admin.close()
    except CabbageError as exc:
        sys.stderr.write(f"cabbage: {printable(str(exc))}\n")
        return exit_status_of(exc)
    except KeyboardInterrupt:
        sys.stderr.write("cabbage: interrupted\n")
        return EXIT_INTERRUPTED


def exit_status_of(error: CabbageError) -> int:
    if isinstance(error, JobNotFound):
        return EXIT_NOT_FOUND
    # Bad input the command line let through, refused before anything was done.
    if isinstance(error, (ConfigurationError, ScheduleError, UnserialisableArgumentError, ArgumentsTooLargeError, TaskNotFound)):
        return EXIT_USAGE
    return EXIT_FAILED

