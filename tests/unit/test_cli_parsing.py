"""The `cabbage` command line without a database: what parses, and one-line errors for what does not.

Every bad value stops the command before it connects (these tests have no database), with exit
status 2 and one line on stderr naming the option and the value.
"""

from __future__ import annotations

import io
import socket

import pytest

import cabbage
from cabbage.cli import main
from cabbage.cli.commands import job_to_defer
from cabbage.cli.exit_codes import EXIT_OK, EXIT_USAGE
from cabbage.cli.output import Output, fit_widths, printable
from cabbage.cli.parser import default_log_level, parse_arguments
from cabbage.exceptions import ConfigurationError
from cabbage.testing import InMemoryJobStore

UNREACHABLE_DSN = "host=127.0.0.1 port=1 connect_timeout=1"  # never reached: parsing fails first


# main() configures logging for its process, as an entry point must: undone after each test.
pytestmark = pytest.mark.usefixtures("logging_as_it_was")


@pytest.fixture(autouse=True)
def no_configured_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CABBAGE_DSN", UNREACHABLE_DSN)
    monkeypatch.delenv("CABBAGE_WEB_TOKEN", raising=False)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["jobs", "prune", "--older-than", "7x"], "argument --older-than: unknown unit 'x' in duration '7x'"),
        (["jobs", "prune", "--older-than", "90"], "a bare number has no unit"),
        (["jobs", "prune"], "the following arguments are required: --older-than"),
        (["jobs", "prune", "--older-than", "7d", "--status", "todo"], "invalid choice: 'todo'"),
        (["jobs", "prune", "--older-than", "7d", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["defer", "t", "--args", "{bad"], "argument --args: not valid JSON"),
        (["defer", "t", "--args", "3"], "must be a JSON list (positional arguments) or object (keyword arguments), got a number"),
        (["defer", "t", "--args", "null"], "got a null"),
        (["defer", "t", "--schedule-in", "1h", "--schedule-at", "2038-01-19T03:14:07+00:00"], "not allowed with argument"),
        (["defer", "t", "--schedule-at", "2038-01-19T03:14:07"], "'2038-01-19T03:14:07' has no timezone"),
        (["defer", "t", "--schedule-at", "tomorrow"], "not an ISO 8601 date and time: 'tomorrow'"),
        (["defer", "t", "--schedule-in", "soon"], "cannot read duration 'soon'"),
        (["defer", ""], "must be a non-empty text"),
        (["defer", "t", "--max-attempts", "0"], "must be a whole number from 1, or 'unlimited', got '0'"),
        (["defer"], "the following arguments are required: TASK"),
        (["defer", "t", "--priority", "high"], "argument --priority: must be a whole number from -2147483648 to 2147483647"),
        (["defer", "t", "--priority", "2147483648"], "(higher runs first), got '2147483648'"),
        (["defer", "t", "--queueing-lock", ""], "argument --queueing-lock: must be a non-empty text"),
        (["jobs", "show", "abc"], "job id must be a whole number, got 'abc'"),
        (["jobs", "show", "0"], "job id must be between 1 and"),
        (["jobs", "show", "99999999999999999999"], "job id must be between 1 and"),
        (["jobs", "retry"], "needs job ids, or --status failed|cancelled"),
        (["jobs", "retry", "1", "--status", "failed"], "takes job ids or --status, not both"),
        (["jobs", "retry", "1", "--task", "t"], "--task narrows --status only"),
        (["jobs", "retry", "--status", "todo"], "invalid choice: 'todo'"),
        (["jobs", "cancel"], "the following arguments are required: ID"),
        (["jobs", "list", "--limit", "0"], "limit must be a whole number from 1 to"),
        (["jobs", "list", "--status", "lost"], "invalid choice: 'lost'"),
        (["jobs", "list", "--queue", "a\x00b"], "without NUL characters"),
        (["jobs", "burn"], "invalid choice: 'burn'"),
        (["web", "--port", "99999"], "argument --port: must be a whole number from 0 (any free port) to 65535, got '99999'"),
        (["web", "--port", "65536"], "to 65535, got '65536'"),
        (["web", "--port=-5"], "to 65535, got '-5'"),
        (["web", "--port", "80x"], "to 65535, got '80x'"),
        (["web", "--host", ""], "argument --host: must be a non-empty text"),
        (["web", "--pool-size", "0"], "argument --pool-size: must be a whole number from 1, got '0'"),
        (["launch"], "invalid choice: 'launch'"),
        (["schema"], "the following arguments are required: apply|check"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_command_line_is_one_line_and_exit_status_2(argv, message, capsys):
    assert main(argv) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
    assert captured.err.count("\n") == 1, captured.err
    assert "--help" in captured.err  # says where to read more


def test_help_exits_0(capsys):
    assert main(["jobs", "prune", "--help"]) == EXIT_OK
    assert "--older-than" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "default"),
    [(["web"], "info"), (["stats"], "warning"), (["jobs", "list"], "warning"), ([], "warning; info for web")],
)
def test_help_states_the_log_level_each_command_really_defaults_to(argv, default, capsys):
    assert main([*argv, "--help"]) == EXIT_OK
    assert f"log level (default: {default})" in " ".join(capsys.readouterr().out.split())
    if argv:
        assert default_log_level(parse_arguments(argv).action) == default


def test_defer_options_parse_to_arguments_and_schedule():
    arguments = parse_arguments(["defer", "proj.tasks.clean", "--args", '{"floor": "a"}', "--schedule-in", "1h30m"])
    assert arguments.task_name == "proj.tasks.clean"
    assert arguments.task_arguments == ((), {"floor": "a"})
    assert arguments.schedule_in == 5400.0
    job = job_to_defer(arguments, task=None)
    assert (job.queue, job.lock, job.max_attempts, job.kwargs) == ("default", None, 1, {"floor": "a"})
    assert job_to_defer(parse_arguments(["defer", "t", "--max-attempts", "unlimited"]), None).max_attempts is None
    assert job_to_defer(parse_arguments(["defer", "t", "--max-attempts", "4"]), None).max_attempts == 4
    assert (job.priority, job.queueing_lock) == (0, None)
    keyed = job_to_defer(parse_arguments(["defer", "t", "--priority", "-3", "--queueing-lock", "user-42"]), None)
    assert (keyed.priority, keyed.queueing_lock) == (-3, "user-42")

    positional = parse_arguments(["defer", "t", "--args", '["a", 1, null]', "--schedule-at", "2038-01-19T03:14:07Z"])
    assert positional.task_arguments == (("a", 1, None), {})
    assert positional.schedule_at.utcoffset().total_seconds() == 0


def test_defer_with_an_app_takes_the_tasks_options_unless_given():
    task_manager = cabbage.TaskManager(store_class=InMemoryJobStore)

    @task_manager.task(queue="mail", lock="smtp", retry=2, priority=4, queueing_lock="outbox")
    def send() -> None: ...

    task_defaults = job_to_defer(parse_arguments(["defer", send.name, "--app", "proj"]), send)
    assert (task_defaults.queue, task_defaults.lock, task_defaults.max_attempts) == ("mail", "smtp", 3)
    assert (task_defaults.priority, task_defaults.queueing_lock) == (4, "outbox")
    argv = ["defer", send.name, "--app", "proj", "--queue", "q", "--lock", "L", "--max-attempts", "unlimited",
            "--priority", "-1", "--queueing-lock", "K"]  # fmt: skip
    given = job_to_defer(parse_arguments(argv), send)
    assert (given.queue, given.lock, given.max_attempts, given.priority, given.queueing_lock) == ("q", "L", None, -1, "K")


@pytest.mark.parametrize(
    "argv",
    [["--dsn", "dbname=x", "jobs", "list"], ["jobs", "list", "--dsn", "dbname=x"], ["--dsn", "dbname=y", "jobs", "list", "--dsn", "dbname=x"]],
)
def test_dsn_is_taken_before_or_after_the_sub_command(argv):
    assert parse_arguments(argv).dsn == "dbname=x"


def test_dsn_defaults_to_none_so_that_the_environment_decides():
    assert parse_arguments(["stats"]).dsn is None
    assert parse_arguments(["--dsn", "dbname=z", "stats"]).dsn == "dbname=z"


def test_prune_statuses_repeat_and_retry_by_status_narrows_by_task():
    prune = parse_arguments(["jobs", "prune", "--older-than", "12h", "--status", "failed", "--status", "cancelled"])
    assert prune.older_than == 43200.0 and prune.statuses == ["failed", "cancelled"]
    retry = parse_arguments(["jobs", "retry", "--status", "failed", "--task", "t"])
    assert retry.job_ids == [] and retry.status == "failed" and retry.task_name == "t"


def test_web_port_numbers_from_0_to_65535_are_taken():
    assert [parse_arguments(["web", "--port", text]).port for text in ("0", "8080", "65535")] == [0, 8080, 65535]
    assert (parse_arguments(["web"]).trust_proxy, parse_arguments(["web", "--trust-proxy"]).trust_proxy) == (False, True)


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("nonexistent.invalid", "cannot listen on nonexistent.invalid:0: no address of this machine has that name"),
        ("999.0.0.1", "cannot listen on 999.0.0.1:0: no address of this machine has that name"),
        ("a" * 70, f"cannot listen on {'a' * 70}:0: no address of this machine has that name (not a host name)"),
        ("192.0.2.1", "cannot listen on 192.0.2.1:0: Cannot assign requested address; the address is not one of this machine"),
    ],
)
def test_a_host_that_cannot_be_bound_is_one_line(host, message, capsys, monkeypatch):
    pytest.importorskip("flask", reason="the web extra is not installed")
    monkeypatch.setenv("CABBAGE_WEB_TOKEN", "correct-horse-battery-staple")
    assert main(["web", "--host", host, "--port", "0"]) == EXIT_USAGE
    error = capsys.readouterr().err
    assert error.startswith(f"cabbage: {message}") and error.count("\n") == 1, error
    assert "pass --host" in error


def test_a_port_in_use_is_one_line_saying_so():
    pytest.importorskip("flask", reason="the web extra is not installed")
    from cabbage.web.server import listen

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError) as raised:
            listen("127.0.0.1", port)
    assert str(raised.value) == (
        f"cannot listen on 127.0.0.1:{port}: Address already in use; another program listens on that port: "
        "stop it, or pass another --port"
    )


def test_web_without_a_token_refuses_a_public_address_before_binding(capsys):
    pytest.importorskip("flask", reason="the web extra is not installed")
    assert main(["web", "--host", "0.0.0.0", "--port", "1"]) == EXIT_USAGE
    error = capsys.readouterr().err
    assert "refusing to serve the admin website on 0.0.0.0 without a token" in error
    assert "CABBAGE_WEB_TOKEN" in error


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("[::1]", True), ("127.8.0.1", True),
     ("0.0.0.0", False), ("10.0.0.5", False), ("example.org", False), ("::", False)],
)
def test_loopback_addresses(host, loopback):
    pytest.importorskip("flask", reason="the web extra is not installed")
    from cabbage.web.server import is_loopback

    assert is_loopback(host) is loopback


def test_job_text_cannot_drive_the_terminal():
    assert printable("lock\x1b[31mred\nnext") == "lock\\x1b[31mred\\nnext"
    stream = io.StringIO()
    Output(stream=stream).table(["A", "B"], [["\x1b[2J", "ok"]], empty="none")
    assert "\x1b" not in stream.getvalue() and "\\x1b[2J" in stream.getvalue()


def test_tables_fit_the_terminal_by_narrowing_the_widest_column():
    assert fit_widths([4, 60, 10], 50) == [4, 32, 10]
    assert fit_widths([4, 10], 80) == [4, 10]
    assert fit_widths([20, 20], 10) == [8, 8]  # never below the minimum, even if it overflows
