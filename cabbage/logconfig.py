"""structlog configuration for the entry points: one processor chain, every line on stdout.

Only entry points (``cabbage``, ``cabbage-supervisor``) call ``configure``; importing cabbage
configures nothing. structlog events and stdlib ``logging`` records (user task code,
libraries), uncaught exceptions of every thread and warnings all go through the same chain:
context variables, level, pid, UTC timestamp, exceptions as structured data without local
variables, secret scrubbing, then one JSON object per line (off a terminal, or ``json``) or
console lines (on a terminal, or ``console``).

>>> from cabbage import logconfig
>>> logconfig.configure("json", "info")
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
import threading
import types
from typing import Any, TextIO

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from cabbage.redaction import scrub
from cabbage.exceptions import ConfigurationError

LOG_FORMATS = ("auto", "json", "console")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}
# JSON lines start with these keys, in this order; the rest follow as they were bound.
LEADING_KEYS = ("timestamp", "level", "event", "pid")

log = structlog.get_logger()


def configure(log_format: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Configures structlog, stdlib logging, excepthooks and warnings; call once per process.

    ``log_format``: ``json``, ``console``, or ``auto`` (console on a terminal, else JSON).
    ``level``: ``debug``, ``info``, ``warning``, ``error`` or ``critical``. ``stream``:
    where lines go (stdout by default).
    """
    level_number = _level_number(level)
    stream = sys.stdout if stream is None else stream
    as_json = _is_json(log_format, stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_shared_processors(as_json, foreign=True),
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _renderer(as_json, stream),
            ],
        )
    )
    root = logging.getLogger()
    for old_handler in list(root.handlers):
        root.removeHandler(old_handler)
    root.addHandler(handler)
    root.setLevel(level_number)
    # structlog's own events are rendered and written here, not handed to stdlib logging: a
    # LogRecord and its handler cost more than the line itself (a fifth of a worker's time per
    # no-op job). One line is one write, so lines of both paths never mix.
    structlog.configure(
        processors=[*_shared_processors(as_json, foreign=False), _renderer(as_json, stream)],
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        # Not cached: tests reconfigure (capture_logs), and a cached logger would keep the old chain.
        cache_logger_on_first_use=False,
    )
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught_exception
    threading.excepthook = _log_uncaught_thread_exception


def bind_worker_context(**fields: Any) -> None:
    """Binds fields every later line of this thread carries (``role``, ``worker_number``, ...)."""
    structlog.contextvars.bind_contextvars(**fields)


def clear_context() -> None:
    """Forgets every bound field, such as those a forked child inherited from its master."""
    structlog.contextvars.clear_contextvars()


# -- the chain -----------------------------------------------------------------------------------


def _shared_processors(as_json: bool, *, foreign: bool) -> list[Processor]:
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        add_pid,
        add_timestamp,
    ]
    if foreign:
        processors.append(structlog.stdlib.add_logger_name)  # which library logged it
    processors.append(_exception_renderer(as_json))
    processors.append(scrub_secrets)
    if as_json:
        processors.append(order_keys)
    return processors


def _exception_renderer(as_json: bool) -> Processor:
    if as_json:
        # Locals are left out: a frame's variables may hold a DSN, a password, a user's data.
        return structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
    # Rendered to text here, before scrubbing, so the console renderer never formats it itself.
    return structlog.processors.format_exc_info


def _renderer(as_json: bool, stream: TextIO) -> Processor:
    if as_json:
        return render_json
    return structlog.dev.ConsoleRenderer(colors=_is_terminal(stream), exception_formatter=structlog.dev.plain_traceback)


def render_json(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
    """The line as one JSON object. One encoder serves every line (structlog's JSONRenderer
    builds one per line); values JSON has no type for were made text by ``scrub_secrets``."""
    return _ENCODE_JSON(event_dict)


def _as_scrubbed_text(value: Any) -> str:
    return scrub(repr(value))


_ENCODE_JSON = json.JSONEncoder(default=_as_scrubbed_text).encode


def add_pid(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    # Read on every line: a forked child must not print its master's pid.
    event_dict["pid"] = os.getpid()
    return event_dict


def add_timestamp(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """UTC, ISO 8601 with milliseconds and ``Z``: ``2026-11-28T17:03:21.512Z``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    event_dict["timestamp"] = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return event_dict


def scrub_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Hides passwords in every value, nested ones and rendered exceptions included.

    Values JSON has no type for are turned into their scrubbed ``repr`` here, before a renderer
    would print them unscrubbed.
    """
    for key, value in event_dict.items():
        # Most values of a job's line are numbers or None: nothing to hide, nothing to convert.
        if type(value) not in _PLAIN_TYPES and not key.startswith("_"):
            event_dict[key] = _scrubbed(value)  # same keys: safe while iterating
    return event_dict


_PLAIN_TYPES = frozenset({int, float, bool, type(None)})


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, dict):
        return {key: _scrubbed(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed(item) for item in value]
    return scrub(repr(value))


def order_keys(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    ordered = {key: event_dict.pop(key) for key in LEADING_KEYS if key in event_dict}
    ordered.update(event_dict)
    return ordered


# -- uncaught exceptions -------------------------------------------------------------------------


def _log_uncaught_exception(
    exc_type: type[BaseException], exc: BaseException, exc_traceback: types.TracebackType | None
) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, exc_traceback)
        return
    log.critical("exception_uncaught", thread=threading.current_thread().name, exc_info=(exc_type, exc, exc_traceback))


def _log_uncaught_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return  # as the default hook: a thread that exits is not an error
    thread_name = args.thread.name if args.thread is not None else None
    exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
    log.error("exception_uncaught", thread=thread_name, exc_info=exc_info)


# -- options -------------------------------------------------------------------------------------


def _level_number(level: str) -> int:
    number = LEVELS.get(str(level).lower())
    if number is None:
        raise ConfigurationError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    return number


def _is_json(log_format: str, stream: TextIO) -> bool:
    if log_format not in LOG_FORMATS:
        raise ConfigurationError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    return log_format == "json" or (log_format == "auto" and not _is_terminal(stream))


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


__all__ = ["configure", "bind_worker_context", "clear_context"]
