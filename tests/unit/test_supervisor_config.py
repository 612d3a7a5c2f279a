"""SupervisorConfig and the command line: flags, CABBAGE_* variables, defaults, and the messages for bad values."""
from __future__ import annotations

from pathlib import Path

import pytest

from cabbage.exceptions import ConfigurationError
from supervisor.cli import main, parse_config
from supervisor.config import OPTIONS, Setting, SupervisorConfig, from_settings
from supervisor.exit_codes import EXIT_USAGE


def test_flags_become_a_typed_config() -> None:
    config = parse_config(
        [
            "--app", "proj.tasks:tm", "--workers", "3", "--queues", "a, b", "--dsn", "postgresql://app@db/app",
            "--heartbeat-interval", "1.5", "--heartbeat-timeout", "10", "--graceful-timeout", "2", "--poll-interval", "30",
            "--max-jobs-per-child", "100", "--batch-size", "5", "--synchronous-commit", "OFF", "--retention", "7d", "--log-format", "json", "--log-level", "DEBUG",
        ],
        {},
    )  # fmt: skip
    assert config == SupervisorConfig(
        app="proj.tasks:tm",
        workers=3,
        queues=("a", "b"),
        dsn="postgresql://app@db/app",
        heartbeat_interval_s=1.5,
        heartbeat_timeout_s=10.0,
        graceful_timeout_s=2.0,
        poll_interval_s=30.0,
        max_jobs_per_child=100,
        batch_size=5,
        synchronous_commit=False,
        retention_s=7 * 86400,
        log_format="json",
        log_level="debug",
    )
    assert config.app_module == "proj.tasks"


def test_every_option_can_come_from_its_variable() -> None:
    environ = {
        "CABBAGE_APP": "proj.tasks",
        "CABBAGE_WORKERS": "2",
        "CABBAGE_QUEUES": "emails",
        "CABBAGE_DSN": "host=db",
        "CABBAGE_HEARTBEAT_INTERVAL": "2",
        "CABBAGE_HEARTBEAT_TIMEOUT": "20",
        "CABBAGE_GRACEFUL_TIMEOUT": "7",
        "CABBAGE_ABORT_TIMEOUT": "3",
        "CABBAGE_POLL_INTERVAL": "0.5",
        "CABBAGE_MAX_JOBS_PER_CHILD": "9",
        "CABBAGE_BATCH_SIZE": "4",
        "CABBAGE_CONCURRENCY": "50",
        "CABBAGE_PREFETCH": "25",
        "CABBAGE_SYNCHRONOUS_COMMIT": "off",
        "CABBAGE_RETENTION": "1d 12h",
        "CABBAGE_LOG_FORMAT": "console",
        "CABBAGE_LOG_LEVEL": "warning",
    }
    assert {option.variable for option in OPTIONS} == set(environ)
    config = parse_config([], environ)
    assert (config.app, config.workers, config.queues, config.dsn) == ("proj.tasks", 2, ("emails",), "host=db")
    assert (config.heartbeat_interval_s, config.heartbeat_timeout_s, config.graceful_timeout_s) == (2.0, 20.0, 7.0)
    assert (config.max_jobs_per_child, config.batch_size, config.log_format, config.log_level) == (9, 4, "console", "warning")
    assert (config.concurrency, config.prefetch) == (50, 25)
    assert config.abort_timeout_s == 3.0
    assert config.poll_interval_s == 0.5
    assert config.retention_s == 36 * 3600
    assert config.synchronous_commit is False


def test_a_flag_wins_over_its_variable_and_an_empty_variable_counts_as_unset() -> None:
    config = parse_config(["--workers", "5"], {"CABBAGE_APP": "proj.tasks", "CABBAGE_WORKERS": "2", "CABBAGE_MAX_JOBS_PER_CHILD": ""})
    assert config.workers == 5
    assert config.max_jobs_per_child is None


def test_defaults() -> None:
    config = from_settings({"app": Setting("proj.tasks", "--app")}, default_workers=6)
    assert config.workers == 6
    assert config.queues is None and config.dsn is None and config.max_jobs_per_child is None and config.retention_s is None
    assert (config.heartbeat_interval_s, config.heartbeat_timeout_s, config.graceful_timeout_s) == (5.0, 30.0, 30.0)
    assert config.poll_interval_s == 5.0
    assert (config.batch_size, config.log_format, config.log_level) == (1, "auto", "info")
    assert config.synchronous_commit is True


def test_workers_default_to_the_usable_cpus() -> None:
    import os

    assert parse_config(["--app", "proj.tasks"], {}).workers == len(os.sched_getaffinity(0))


APP = ["--app", "proj.tasks"]


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        ([], {}, "--app is required (or set CABBAGE_APP): name the module holding your TaskManager, as in --app proj.tasks"),
        (["--app", "proj/tasks.py"], {}, "--app must be 'module' or 'module:attribute', as in proj.tasks:task_manager, got 'proj/tasks.py'"),
        ([], {"CABBAGE_APP": "a:b:c"}, "CABBAGE_APP must be 'module' or 'module:attribute', as in proj.tasks:task_manager, got 'a:b:c'"),
        ([*APP, "--workers", "four"], {}, "--workers must be a whole number, got 'four'"),
        (APP, {"CABBAGE_WORKERS": "0"}, "CABBAGE_WORKERS must be 1 or more, got 0"),
        ([*APP, "--queues", " , "], {}, "--queues must name at least one queue, as in a,b, got ' , '"),
        ([*APP, "--heartbeat-interval", "soon"], {}, "--heartbeat-interval must be a number of seconds, got 'soon'"),
        ([*APP, "--graceful-timeout", "-1"], {}, "--graceful-timeout must be a number of seconds greater than 0, got -1"),
        ([*APP, "--heartbeat-timeout", "nan"], {}, "--heartbeat-timeout must be a number of seconds greater than 0, got nan"),
        (APP, {"CABBAGE_POLL_INTERVAL": "0"}, "CABBAGE_POLL_INTERVAL must be a number of seconds greater than 0, got 0"),
        ([*APP, "--max-jobs-per-child", "0"], {}, "--max-jobs-per-child must be 1 or more (leave it unset to never recycle), got 0"),
        (APP, {"CABBAGE_BATCH_SIZE": "0"}, "CABBAGE_BATCH_SIZE must be 1 or more, got 0"),
        ([*APP, "--concurrency", "4", "--prefetch", "-3"], {}, "--prefetch must be from 0 to 10000, got -3"),
        ([*APP, "--concurrency", "4", "--prefetch", "lots"], {}, "--prefetch must be a whole number, got 'lots'"),
        (
            [*APP, "--batch-size", "5"],
            {"CABBAGE_PREFETCH": "10"},
            "CABBAGE_PREFETCH and --batch-size are two ways to hold jobs ahead, got 10 and 5: choose one (a prefetch "
            "starts the jobs it holds and runs them on a thread while the outcomes before are recorded; a batch "
            "reserves them)",
        ),
        ([*APP, "--synchronous-commit", "false"], {}, "--synchronous-commit must be on or off, got 'false'"),
        ([*APP, "--retention", "7x"], {}, "--retention: unknown unit 'x' in duration '7x': use w, d, h, m or s, as in 90s, 15m, 1h30m, 7d or 2w"),
        (APP, {"CABBAGE_RETENTION": "0s"}, "CABBAGE_RETENTION must be a duration greater than 0, as in 7d, got 0"),
        ([*APP, "--log-format", "xml"], {}, "--log-format must be one of auto, json, console, got 'xml'"),
        (APP, {"CABBAGE_LOG_LEVEL": "loud"}, "CABBAGE_LOG_LEVEL must be one of debug, info, warning, error, critical, got 'loud'"),
        (
            [*APP, "--heartbeat-timeout", "5"],
            {"CABBAGE_HEARTBEAT_INTERVAL": "5"},
            "--heartbeat-timeout (5 s) must be longer than CABBAGE_HEARTBEAT_INTERVAL (5 s): workers beat once per "
            "interval, so allow a few intervals (the defaults are 5 and 30)",
        ),
    ],
)
def test_bad_values_are_refused_naming_where_they_came_from(argv: list[str], environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        parse_config(argv, environ)
    assert str(refused.value) == message


def test_a_config_made_in_code_is_validated_too() -> None:
    with pytest.raises(ConfigurationError, match=r"^--workers must be 1 or more, got 0$"):
        SupervisorConfig(app="proj.tasks", workers=0)


def test_the_dsn_is_not_in_the_config_repr() -> None:
    config = SupervisorConfig(app="proj.tasks", workers=1, dsn="postgresql://app:hunter2@db/app")
    assert "hunter2" not in repr(config)


def test_main_prints_one_line_and_exits_with_the_usage_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--app", "proj.tasks", "--workers", "0"]) == EXIT_USAGE
    assert capsys.readouterr().err == "cabbage-supervisor: --workers must be 1 or more, got 0\n"


def test_help_explains_every_option_and_its_variable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in OPTIONS:
        assert option.flag in text and option.variable in text
    for word in ("TERM", "QUIT", "HUP", "TTIN", "TTOU", "cabbage schema apply"):
        assert word in text


def test_every_option_is_in_the_documented_table() -> None:
    table = (Path(__file__).resolve().parents[2] / "docs" / "supervisor.md").read_text()
    for option in OPTIONS:
        assert f"`{option.flag} " in table or f"`{option.flag}`" in table, option.flag
        assert f"`{option.variable}`" in table, option.variable
