"""The `cabbage` command line: sub-commands, options, and the readers that check their values.

A bad value stops the command before it connects, with one line naming the option, the value
and the form expected, and exit status 2 (``EXIT_USAGE``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any, NoReturn

import cabbage
from cabbage import new_jobs, schedules
from cabbage.admin import MAX_JOB_ID, MAX_PAGE_SIZE, RETRYABLE_STATUSES
from cabbage.cli.exit_codes import EXIT_USAGE
from cabbage.durations import parse_duration
from cabbage.exceptions import ConfigurationError, ScheduleError
from cabbage.logconfig import LEVELS
from cabbage.retention import PRUNE_BATCH_SIZE
from cabbage.jobs import FINISHED_STATUSES, MAX_PRIORITY, MIN_PRIORITY, Status

DEFAULT_QUEUE = "default"  # the column default of cabbage_jobs.queue
LOG_LEVELS = tuple(LEVELS)
DEFAULT_LOG_LEVEL = "warning"  # keeps stdout for the command's results
WEB_LOG_LEVEL = "info"  # a server's log is its output: requests, sign-ins, writes
HIGHEST_PORT = 65535
WEB_POOL_SIZE = 4  # cabbage.web.database.DEFAULT_POOL_SIZE, without importing Flask to parse
JSON_KINDS = {bool: "boolean", int: "number", float: "number", str: "string", type(None): "null"}


class CommandParser(argparse.ArgumentParser):
    """argparse with one-line errors: what is wrong and where the help is, no usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


# -- value readers (argparse types) -------------------------------------------------------------


def duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def job_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"job id must be a whole number, got {text!r}") from None
    if not 1 <= value <= MAX_JOB_ID:
        raise argparse.ArgumentTypeError(f"job id must be between 1 and {MAX_JOB_ID}, got {text}")
    return value


def page_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}, got {text!r}")
    return value


def task_arguments(text: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``--args``: a JSON list is positional arguments, a JSON object keyword arguments.

    What JSON can write but a job cannot carry (a key given twice, a long int, deep nesting)
    is refused here, by the store if it gets through (a NUL, a surrogate).
    """
    try:
        value = json.loads(text, object_pairs_hook=_object_without_repeated_keys, parse_int=_integer)
    except RecursionError:
        raise argparse.ArgumentTypeError(
            f"nests lists and objects more than {new_jobs.MAX_NESTING_DEPTH} deep, more than a job can carry"
        ) from None
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if isinstance(value, list):
        return tuple(value), {}
    if isinstance(value, dict):
        return (), value
    kind = JSON_KINDS.get(type(value), type(value).__name__)
    raise argparse.ArgumentTypeError(
        f"must be a JSON list (positional arguments) or object (keyword arguments), got a {kind}: {text!r}"
    )


def _object_without_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise argparse.ArgumentTypeError(f"has the key {key!r} more than once; JSON would keep only its last value")
        seen.add(key)
    return dict(pairs)


def _integer(digits: str) -> int:
    if len(digits.lstrip("-")) > new_jobs.MAX_INTEGER_DIGITS:
        raise argparse.ArgumentTypeError(
            f"has an int of {len(digits.lstrip('-'))} digits, more than a job can carry ({new_jobs.MAX_INTEGER_DIGITS}); "
            "pass it as a string"
        )
    return int(digits)


def aware_datetime(text: str) -> datetime.datetime:
    try:
        value = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date and time: {text!r}; write 2038-01-19T03:14:07+00:00") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no timezone; add one, as in {text}+00:00")
    try:
        return schedules.check_schedule_at(value)
    except ScheduleError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def delay(text: str) -> float:
    """``--schedule-in``: a duration that ends, counted from now, within the schedule range."""
    seconds = duration(text)
    try:
        schedules.check_schedule(None, {"seconds": seconds})
    except ScheduleError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return seconds


def max_attempts(text: str) -> int | None:
    """``--max-attempts``: a whole number from 1, or ``unlimited`` (None)."""
    if text == "unlimited":
        return None
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1, or 'unlimited', got {text!r}")
    return int(text)


def priority(text: str) -> int:
    """``--priority``: a whole number in PostgreSQL's integer range, higher first."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise argparse.ArgumentTypeError(
            f"must be a whole number from {MIN_PRIORITY} to {MAX_PRIORITY} (higher runs first), got {text!r}"
        )
    return value


def port_number(text: str) -> int:
    """``--port``: a whole number from 0 (any free port) to 65535."""
    if not text.isascii() or not text.isdigit() or int(text) > HIGHEST_PORT:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 (any free port) to {HIGHEST_PORT}, got {text!r}")
    return int(text)


def pool_size(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1, got {text!r}")
    return int(text)


def non_empty(text: str) -> str:
    """A non-empty text PostgreSQL can store: no NUL, and no byte that is not UTF-8 (Python
    reads such bytes of the command line as surrogates)."""
    if text and _is_storable(text):
        return text
    raise argparse.ArgumentTypeError(f"must be a non-empty text without NUL characters or bytes that are not UTF-8, got {text!r}")


def _is_storable(text: str) -> bool:
    try:
        new_jobs.check_text("value", text)
    except ConfigurationError:
        return False
    return True


# -- the parser ---------------------------------------------------------------------------------


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="cabbage",
        description="Operate cabbage: the schema, jobs, workers, statistics, health, the admin website.",
    )
    parser.add_argument("--version", action="version", version=f"cabbage {cabbage.__version__} (cabbage-queue)")
    _add_common_options(parser, default=None, log_level=f"{DEFAULT_LOG_LEVEL}; {WEB_LOG_LEVEL} for web")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=CommandParser)
    _add_schema_commands(commands)
    _add_defer_command(commands)
    _add_jobs_commands(commands)
    _add_periodic_commands(commands)
    _leaf(commands, "workers", "list the registered workers: host, pid, heartbeat age, current job", json=True)
    _leaf(commands, "stats", "jobs by queue and status, oldest waiting job, jobs per minute", json=True)
    _leaf(commands, "healthcheck", "exit 0 only if the database answers and its schema is current", json=True)
    web = _leaf(
        commands, "web", "serve the admin website, REST API and /metrics (pip install 'cabbage-queue[web]')",
        log_level=WEB_LOG_LEVEL,
    )
    web.add_argument("--host", type=non_empty, default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    web.add_argument("--port", type=port_number, default=8080, help="port to listen on, 0 for any free one (default 8080)")
    web.add_argument(
        "--pool-size",
        type=pool_size,
        default=WEB_POOL_SIZE,
        metavar="N",
        help=f"database connections the server may open, at most; more requests at once wait for one "
        f"(default {WEB_POOL_SIZE})",
    )
    web.add_argument(
        "--trust-proxy",
        action="store_true",
        help="believe one reverse proxy's X-Forwarded-Proto (HTTPS: Secure cookies) and X-Forwarded-For "
        "(the client address); only behind a proxy that sets both",
    )
    return parser


def default_log_level(action: str) -> str:
    return WEB_LOG_LEVEL if action == "web" else DEFAULT_LOG_LEVEL


def _add_common_options(parser: argparse.ArgumentParser, default: Any, log_level: str = DEFAULT_LOG_LEVEL) -> None:
    # Sub-commands repeat these with SUPPRESS, so `cabbage jobs list --dsn X` works and an
    # absent sub-command option does not overwrite the value given before the sub-command.
    parser.add_argument(
        "--dsn", default=default, help="PostgreSQL DSN (default: $CABBAGE_DSN, else libpq's PG* variables)"
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, default=default, help=f"log level (default: {log_level})")


def _leaf(
    commands: Any, name: str, help_text: str, json: bool = False, log_level: str = DEFAULT_LOG_LEVEL
) -> argparse.ArgumentParser:
    command = commands.add_parser(name, help=help_text, description=help_text)
    _add_common_options(command, default=argparse.SUPPRESS, log_level=log_level)
    if json:
        command.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    command.set_defaults(action=name.replace(" ", "_"))
    return command


def _add_schema_commands(commands: Any) -> None:
    schema = commands.add_parser("schema", help="apply or check the database schema")
    steps = schema.add_subparsers(dest="schema_command", required=True, metavar="apply|check|dump", parser_class=CommandParser)
    _leaf(steps, "apply", "bring the database to the current schema version (idempotent)", json=True).set_defaults(
        action="schema_apply"
    )
    _leaf(steps, "check", "exit 0 if the schema is current, else say which command fixes it", json=True).set_defaults(
        action="schema_check"
    )
    _leaf(steps, "dump", "print every cabbage_ object of the database as DDL, read from its catalog").set_defaults(
        action="schema_dump"
    )


def _add_defer_command(commands: Any) -> None:
    defer = _leaf(commands, "defer", "defer a job of a task, by task name (no app import needed without --app)", json=True)
    defer.add_argument("task_name", metavar="TASK", type=non_empty, help="the task's name")
    defer.add_argument(
        "--app",
        type=non_empty,
        metavar="MODULE[:ATTR]",
        help="the app's TaskManager, as for cabbage-supervisor: TASK must be one of its tasks, and the task's "
        "queue, lock and retry limit apply unless given",
    )
    defer.add_argument(
        "--args",
        dest="task_arguments",
        type=task_arguments,
        default=((), {}),
        metavar="JSON",
        help='a JSON list (positional) or object (keyword arguments), e.g. \'["a"]\' or \'{"floor": "a"}\'',
    )
    defer.add_argument("--queue", type=non_empty, help=f"queue (default: the task's with --app, else {DEFAULT_QUEUE})")
    defer.add_argument(
        "--lock", type=non_empty, help="lock: jobs sharing it run one at a time, in order (default: the task's with --app)"
    )
    defer.add_argument(
        "--queueing-lock",
        type=non_empty,
        metavar="KEY",
        help="at most one waiting (todo) job per key: refused, exit 1, while one waits",
    )
    defer.add_argument(
        "--priority", type=priority, metavar="N",
        help="higher is claimed first among due jobs (default: the task's with --app, else 0)"
    )
    defer.add_argument(
        "--max-attempts",
        type=max_attempts,
        default=argparse.SUPPRESS,  # absent, not None: None is 'unlimited' (commands.job_to_defer)
        metavar="N",
        help="attempts the job may use, first included, or 'unlimited' (default: the task's retry= with --app, "
        "else 1; the job keeps this limit, whatever the task's retry= says when it runs)",
    )
    when = defer.add_mutually_exclusive_group()
    when.add_argument("--schedule-in", type=delay, metavar="DURATION", help="run after a delay: 90s, 15m, 1h30m, 7d")
    when.add_argument("--schedule-at", type=aware_datetime, metavar="ISO", help="run at 2038-01-19T03:14:07+00:00")


def _add_jobs_commands(commands: Any) -> None:
    jobs = commands.add_parser("jobs", help="list, show, retry, cancel, abort and prune jobs")
    actions = jobs.add_subparsers(
        dest="jobs_command", required=True, metavar="list|show|retry|cancel|abort|prune", parser_class=CommandParser
    )
    statuses = [status.value for status in Status]

    listing = _leaf(actions, "list", "jobs newest first, filtered", json=True)
    listing.set_defaults(action="jobs_list")
    listing.add_argument("--status", choices=statuses)
    listing.add_argument("--queue", type=non_empty)
    listing.add_argument("--task", dest="task_name", type=non_empty)
    listing.add_argument("--lock", type=non_empty)
    listing.add_argument("--limit", type=page_size, default=50, help=f"jobs per page, 1 to {MAX_PAGE_SIZE} (default 50)")
    listing.add_argument("--before", type=job_id, metavar="ID", help="the next page: jobs older than this id")

    show = _leaf(actions, "show", "one job: arguments, attempts, last error with traceback, times", json=True)
    show.set_defaults(action="jobs_show")
    show.add_argument("job_id", metavar="ID", type=job_id)

    retry = _leaf(actions, "retry", "send failed or cancelled jobs back to todo (all or none)", json=True)
    retry.set_defaults(action="jobs_retry")
    retry.add_argument("job_ids", metavar="ID", type=job_id, nargs="*")
    retry.add_argument("--status", choices=sorted(status.value for status in RETRYABLE_STATUSES))
    retry.add_argument("--task", dest="task_name", type=non_empty, help="with --status: only jobs of this task")

    cancel = _leaf(actions, "cancel", "cancel jobs still waiting (todo); all or none", json=True)
    cancel.set_defaults(action="jobs_cancel")
    cancel.add_argument("job_ids", metavar="ID", type=job_id, nargs="+")

    abort = _leaf(
        actions, "abort", "stop jobs: cancel waiting ones, ask the workers of running ones to stop them (all or none)",
        json=True,
    )  # fmt: skip
    abort.set_defaults(action="jobs_abort")
    abort.add_argument("job_ids", metavar="ID", type=job_id, nargs="+")
    abort.add_argument("--by", dest="aborted_by", metavar="NAME", default=None,
                       help="who asks, stored on the job and shown in its error (default: user@host)")  # fmt: skip

    prune = _leaf(actions, "prune", "delete finished jobs older than a duration, in batches", json=True)
    prune.set_defaults(action="jobs_prune")
    prune.add_argument("--older-than", type=duration, required=True, metavar="DURATION", help="e.g. 7d, 12h")
    prune.add_argument(
        "--status",
        dest="statuses",
        action="append",
        choices=sorted(status.value for status in FINISHED_STATUSES),
        help="only jobs with this status (repeatable; default: succeeded, failed and cancelled)",
    )
    prune.add_argument(
        "--batch-size", type=int, default=PRUNE_BATCH_SIZE, help=f"rows deleted per statement (default {PRUNE_BATCH_SIZE})"
    )


def _add_periodic_commands(commands: Any) -> None:
    periodic = commands.add_parser("periodic", help="the periodic schedules, their last and next ticks")
    actions = periodic.add_subparsers(dest="periodic_command", required=True, metavar="list", parser_class=CommandParser)
    listing = _leaf(actions, "list", "periodic schedules: cron, timezone, last tick recorded, next tick", json=True)
    listing.set_defaults(action="periodic_list")
    listing.add_argument(
        "--app",
        type=non_empty,
        metavar="MODULE[:ATTR]",
        help="import this app and show its schedules (default: those the supervisors declared in the database)",
    )


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """The parsed command line, or exit 2 with one line; cross-option rules are checked here."""
    parser = build_parser()
    arguments = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if arguments.action == "jobs_retry":
        _check_retry_selection(parser, arguments)
    if arguments.action == "jobs_prune" and arguments.batch_size < 1:
        CommandParser(prog="cabbage jobs prune").error(f"--batch-size must be at least 1, got {arguments.batch_size}")
    return arguments


def _check_retry_selection(parser: CommandParser, arguments: argparse.Namespace) -> None:
    retry = CommandParser(prog="cabbage jobs retry")
    if arguments.job_ids and arguments.status:
        retry.error("takes job ids or --status, not both")
    if not arguments.job_ids and not arguments.status:
        retry.error("needs job ids, or --status failed|cancelled to retry every such job")
    if arguments.task_name and not arguments.status:
        retry.error("--task narrows --status only; with ids, the ids say which jobs")
