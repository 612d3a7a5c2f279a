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
from cabbage.cli.commands import ADMIN_COMMANDS, DSN_COMMANDS, NEEDS_SCHEMA
from cabbage.cli.exit_codes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_NOT_FOUND, EXIT_USAGE
from cabbage.cli.output import Output, printable
from cabbage.cli.parser import default_log_level, parse_arguments
from cabbage.exceptions import (
    ArgumentsTooLargeError,
    CabbageError,
    ConfigurationError,
    JobNotFound,
    ScheduleError,
    SchemaError,
    StoreError,
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
        error = schema_problem_behind(exc, dsn) if arguments.action in NEEDS_SCHEMA else exc
        sys.stderr.write(f"cabbage: {printable(str(error))}\n")
        return exit_status_of(error)
    except KeyboardInterrupt:
        sys.stderr.write("cabbage: interrupted\n")
        return EXIT_INTERRUPTED


def schema_problem_behind(error: CabbageError, dsn: str) -> CabbageError:
    """``error``, or the SchemaError behind it. On a database without the cabbage schema, or
    with an older one, a query fails with libpq's text (SQL included); the schema's version
    says instead which command fixes it."""
    if type(error) not in (StoreError, SchemaError):  # not lost, not a job's state, not bad input
        return error
    from cabbage.schema import check_schema

    try:
        check_schema(dsn)
    except SchemaError as schema_error:
        return schema_error
    except CabbageError:
        return error  # the database went away meanwhile: the first error says more
    return error


def exit_status_of(error: CabbageError) -> int:
    if isinstance(error, JobNotFound):
        return EXIT_NOT_FOUND
    # Bad input the command line let through, refused before anything was done.
    if isinstance(error, (ConfigurationError, ScheduleError, UnserialisableArgumentError, ArgumentsTooLargeError, TaskNotFound)):
        return EXIT_USAGE
    return EXIT_FAILED

