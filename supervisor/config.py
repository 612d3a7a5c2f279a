"""SupervisorConfig: the supervisor's settings, frozen and validated, with the messages for bad values.

Settings come from flags or ``CABBAGE_*`` variables (see ``supervisor.cli``) as strings;
``from_settings`` converts them, and every message names where the bad value came from
(``--workers`` or ``CABBAGE_WORKERS``), shows it, and says what would do.

>>> config = from_settings({"app": Setting("proj.tasks", "--app")}, default_workers=4)
>>> config.workers
4
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Callable, Mapping, TypeVar

from cabbage.durations import parse_duration
from cabbage.exceptions import ConfigurationError
from cabbage.heartbeat import DEFAULT_HEARTBEAT_INTERVAL_S, DEFAULT_HEARTBEAT_TIMEOUT_S
from cabbage.logconfig import LEVELS, LOG_FORMATS
from cabbage.worker import DEFAULT_POLL_INTERVAL_S, MAX_CONCURRENCY

LOG_LEVELS = tuple(LEVELS)
# module or module:attribute, each a dotted Python name.
_APP_SPEC = re.compile(r"[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?")

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Setting:
    """A raw value and where it came from: a flag (``--workers``) or a variable (``CABBAGE_WORKERS``)."""

    value: str
    source: str


@dataclasses.dataclass(frozen=True)
class SupervisorConfig:
    """What one cabbage-supervisor runs: the app, how many workers, and its timings (seconds)."""

    app: str
    workers: int
    queues: tuple[str, ...] | None = None  # None: every queue
    dsn: str | None = dataclasses.field(default=None, repr=False)  # None: CABBAGE_DSN, else PG*
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S
    heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S
    graceful_timeout_s: float = 30.0
    abort_timeout_s: float = 10.0  # after an abort request, how long a task may run before its child is killed
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S  # idle workers claim at least this often
    max_jobs_per_child: int | None = None  # None: children are never recycled
    batch_size: int = 1
    concurrency: int = 1  # jobs each child runs at once: threads for def tasks, one loop for async def
    prefetch: int = 0  # started jobs a child holds beyond its running ones
    synchronous_commit: bool = True  # False: workers' claims and finishes do not wait for the disk
    retention_s: float | None = None  # None: finished jobs are kept (prune them by other means)
    log_format: str = "auto"
    log_level: str = "info"
    # Where each value came from, so that a message names what the user actually typed.
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not _APP_SPEC.fullmatch(self.app):
            self._refuse("app", self.app, "must be 'module' or 'module:attribute', as in proj.tasks:task_manager")
        if self.workers < 1:
            self._refuse("workers", self.workers, "must be 1 or more")
        if self.queues is not None and not self.queues:
            self._refuse("queues", ",".join(self.queues), "must name at least one queue, as in a,b (leave it unset for every queue)")
        timings = ("heartbeat_interval_s", "heartbeat_timeout_s", "graceful_timeout_s", "abort_timeout_s", "poll_interval_s")
        for name in timings:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                self._refuse(name, value, "must be a number of seconds greater than 0")
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise ConfigurationError(
                f"{self.source_of('heartbeat_timeout_s')} ({self.heartbeat_timeout_s:g} s) must be longer than "
                f"{self.source_of('heartbeat_interval_s')} ({self.heartbeat_interval_s:g} s): workers beat once per "
                "interval, so allow a few intervals (the defaults are 5 and 30)"
            )
        if self.max_jobs_per_child is not None and self.max_jobs_per_child < 1:
            self._refuse("max_jobs_per_child", self.max_jobs_per_child, "must be 1 or more (leave it unset to never recycle)")
        if self.batch_size < 1:
            self._refuse("batch_size", self.batch_size, "must be 1 or more")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            self._refuse("concurrency", self.concurrency, f"must be from 1 to {MAX_CONCURRENCY}")
        if not 0 <= self.prefetch <= MAX_CONCURRENCY:
            self._refuse("prefetch", self.prefetch, f"must be from 0 to {MAX_CONCURRENCY}")
        if self.prefetch and self.batch_size > 1 and self.concurrency == 1:
            raise ConfigurationError(
                f"{self.source_of('prefetch')} and {self.source_of('batch_size')} are two ways to hold jobs ahead, got "
                f"{self.prefetch} and {self.batch_size}: choose one (a prefetch starts the jobs it holds and runs them on a "
                "thread while the outcomes before are recorded; a batch reserves them)"
            )
        if self.retention_s is not None and not (math.isfinite(self.retention_s) and self.retention_s > 0):
            self._refuse("retention_s", self.retention_s, "must be a duration greater than 0, as in 7d")
        if self.log_format not in LOG_FORMATS:
            self._refuse("log_format", self.log_format, f"must be one of {', '.join(LOG_FORMATS)}")
        if self.log_level not in LOG_LEVELS:
            self._refuse("log_level", self.log_level, f"must be one of {', '.join(LOG_LEVELS)}")

    def source_of(self, name: str) -> str:
        """The flag or variable a field's value came from."""
        return self.sources.get(name, OPTION_OF_FIELD[name].flag)

    def _refuse(self, name: str, value: object, rule: str) -> None:
        raise ConfigurationError(f"{self.source_of(name)} {rule}, got {_shown(value)}")

    @property
    def app_module(self) -> str:
        return self.app.partition(":")[0]


def from_settings(settings: Mapping[str, Setting], *, default_workers: int) -> SupervisorConfig:
    """Converts raw settings (field name -> Setting) into a validated SupervisorConfig.

    Missing fields take their defaults; ``workers`` defaults to ``default_workers`` (the CPU count).
    """
    app = settings.get("app")
    if app is None or not app.value.strip():
        raise ConfigurationError(
            "--app is required (or set CABBAGE_APP): name the module holding your TaskManager, as in --app proj.tasks"
        )
    values: dict[str, object] = {"workers": default_workers}
    for name, setting in settings.items():
        values[name] = OPTION_OF_FIELD[name].convert(setting)
    sources = {name: setting.source for name, setting in settings.items()}
    return SupervisorConfig(**values, sources=sources)  # type: ignore[arg-type]


def _whole_number(setting: Setting) -> int:
    return _converted(setting, int, "must be a whole number")


def _seconds(setting: Setting) -> float:
    return _converted(setting, float, "must be a number of seconds")


def _converted(setting: Setting, kind: Callable[[str], T], rule: str) -> T:
    try:
        return kind(setting.value.strip())
    except ValueError:
        raise ConfigurationError(f"{setting.source} {rule}, got {_shown(setting.value)}") from None


def _duration(setting: Setting) -> float:
    try:
        return parse_duration(setting.value)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{setting.source}: {exc}") from None


def _on_off(setting: Setting) -> bool:
    word = setting.value.strip().lower()
    if word not in ("on", "off"):
        raise ConfigurationError(f"{setting.source} must be on or off, got {_shown(setting.value)}")
    return word == "on"


def _queue_list(setting: Setting) -> tuple[str, ...]:
    queues = tuple(queue.strip() for queue in setting.value.split(",") if queue.strip())
    if not queues:  # refused here, where the text typed can still be shown
        raise ConfigurationError(f"{setting.source} must name at least one queue, as in a,b, got {_shown(setting.value)}")
    return queues


def _lowercase_word(setting: Setting) -> str:
    return setting.value.strip().lower()


def _stripped(setting: Setting) -> str:
    return setting.value.strip()


def _as_given(setting: Setting) -> str:
    return setting.value


# -- the options: one row each, for the parser, the messages and the conversions -------------------


@dataclasses.dataclass(frozen=True)
class Option:
    """A setting of SupervisorConfig: its flag, its CABBAGE_* variable, how its text is read."""

    field: str  # of SupervisorConfig
    flag: str
    metavar: str
    convert: Callable[[Setting], object]
    help: str

    @property
    def variable(self) -> str:
        """``--heartbeat-interval`` is also ``CABBAGE_HEARTBEAT_INTERVAL``."""
        return "CABBAGE_" + self.flag.removeprefix("--").replace("-", "_").upper()


_DEFAULTS = {field.name: field.default for field in dataclasses.fields(SupervisorConfig)}

OPTIONS = (
    Option("app", "--app", "MODULE[:ATTR]", _stripped,
           "the module holding your TaskManager, e.g. proj.tasks, or proj.tasks:task_manager when it "
           "has another name or several (required)"),
    Option("workers", "--workers", "N", _whole_number,
           "worker processes to run (default: the number of CPUs this process may use)"),
    Option("queues", "--queues", "A,B", _queue_list,
           "comma-separated queues to take jobs from (default: every queue)"),
    Option("dsn", "--dsn", "DSN", _as_given,
           "PostgreSQL URI or libpq keyword string (default: CABBAGE_DSN, else libpq's PG* variables); "
           "prefer the variable: a command line is visible to every user of the host"),
    Option("heartbeat_interval_s", "--heartbeat-interval", "SECONDS", _seconds,
           "how often workers record a heartbeat and the master checks them and reclaims stale "
           f"workers of every host (default: {_DEFAULTS['heartbeat_interval_s']:g})"),
    Option("heartbeat_timeout_s", "--heartbeat-timeout", "SECONDS", _seconds,
           "a worker silent for longer is killed (here) or reclaimed (any host), its jobs retried "
           f"or failed (default: {_DEFAULTS['heartbeat_timeout_s']:g})"),
    Option("graceful_timeout_s", "--graceful-timeout", "SECONDS", _seconds,
           "on TERM/INT or reload, how long workers may take to finish their job before they are "
           f"killed and their jobs reclaimed (default: {_DEFAULTS['graceful_timeout_s']:g})"),
    Option("abort_timeout_s", "--abort-timeout", "SECONDS", _seconds,
           "after an operator aborts a running job (cabbage jobs abort), how long its task may run on "
           "before its worker process is killed and the job ends cancelled "
           f"(default: {_DEFAULTS['abort_timeout_s']:g})"),
    Option("poll_interval_s", "--poll-interval", "SECONDS", _seconds,
           "how often an idle worker claims even without a notification, for one that was missed; "
           "a scheduled job wakes it when due, whatever the interval "
           f"(default: {_DEFAULTS['poll_interval_s']:g})"),
    Option("max_jobs_per_child", "--max-jobs-per-child", "N", _whole_number,
           "replace a worker process after it ran N jobs, e.g. to bound a leak (default: never)"),
    Option("concurrency", "--concurrency", "M", _whole_number,
           "jobs each worker process runs at once: def tasks in M threads, async def tasks on one "
           f"event loop (default: {_DEFAULTS['concurrency']}: one at a time, in the process's own thread)"),
    Option("prefetch", "--prefetch", "N", _whole_number,
           "jobs each worker process holds started beyond the ones it runs, so that a slot freed takes one "
           "at once, while the round trip recording the outcomes is on its way; for short jobs, at any "
           "concurrency (a prefetched job waits for a slot, its attempt begun, its lock held; def tasks "
           "run on a thread) "
           f"(default: {_DEFAULTS['prefetch']})"),
    Option("batch_size", "--batch-size", "N", _whole_number,
           f"jobs a worker claims per round trip to the database at concurrency 1 (default: {_DEFAULTS['batch_size']})"),
    Option("synchronous_commit", "--synchronous-commit", "on|off", _on_off,
           "off: workers' claims and finishes do not wait for the disk; a database crash may then "
           "lose the last of them and those jobs run again (default: on)"),
    Option("retention_s", "--retention", "DURATION", _duration,
           "delete jobs finished longer ago than this, e.g. 7d or 12h, a bounded batch at a time "
           "(default: keep them; or run 'cabbage jobs prune' from cron)"),
    Option("log_format", "--log-format", "|".join(LOG_FORMATS), _lowercase_word,
           "json (one object per line), console, or auto: console on a terminal, else json "
           f"(default: {_DEFAULTS['log_format']})"),
    Option("log_level", "--log-level", "|".join(LOG_LEVELS), _lowercase_word,
           f"the lowest level logged (default: {_DEFAULTS['log_level']})"),
)  # fmt: skip
OPTION_OF_FIELD = {option.field: option for option in OPTIONS}


def _shown(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)
