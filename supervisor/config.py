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

LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# module or module:attribute, each a dotted Python name.
_APP_SPEC = re.compile(r"[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?")

# The flag each field is set by, for messages about values given in code (tests).
FLAGS = {
    "app": "--app",
    "workers": "--workers",
    "queues": "--queues",
    "dsn": "--dsn",
    "heartbeat_interval_s": "--heartbeat-interval",
    "heartbeat_timeout_s": "--heartbeat-timeout",
    "graceful_timeout_s": "--graceful-timeout",
    "max_jobs_per_child": "--max-jobs-per-child",
    "batch_size": "--batch-size",
    "synchronous_commit": "--synchronous-commit",
    "retention_s": "--retention",
    "log_format": "--log-format",
    "log_level": "--log-level",
}

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
    heartbeat_interval_s: float = 5.0
    heartbeat_timeout_s: float = 30.0
    graceful_timeout_s: float = 30.0
    max_jobs_per_child: int | None = None  # None: children are never recycled
    batch_size: int = 1
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
        for name in ("heartbeat_interval_s", "heartbeat_timeout_s", "graceful_timeout_s"):
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
        if self.retention_s is not None and not (math.isfinite(self.retention_s) and self.retention_s > 0):
            self._refuse("retention_s", self.retention_s, "must be a duration greater than 0, as in 7d")
        if self.log_format not in LOG_FORMATS:
            self._refuse("log_format", self.log_format, f"must be one of {', '.join(LOG_FORMATS)}")
        if self.log_level not in LOG_LEVELS:
            self._refuse("log_level", self.log_level, f"must be one of {', '.join(LOG_LEVELS)}")

    def source_of(self, name: str) -> str:
        """The flag or variable a field's value came from."""
        return self.sources.get(name, FLAGS[name])

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
    values: dict[str, object] = {"app": app.value.strip(), "workers": default_workers}
    converters: dict[str, Callable[[Setting], object]] = {
        "workers": _whole_number,
        "queues": _queue_list,
        "dsn": lambda setting: setting.value,
        "heartbeat_interval_s": _seconds,
        "heartbeat_timeout_s": _seconds,
        "graceful_timeout_s": _seconds,
        "max_jobs_per_child": _whole_number,
        "batch_size": _whole_number,
        "synchronous_commit": _on_off,
        "retention_s": _duration,
        "log_format": _lowercase_word,
        "log_level": _lowercase_word,
    }
    for name, convert in converters.items():
        if name in settings:
            values[name] = convert(settings[name])
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


def _shown(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)
