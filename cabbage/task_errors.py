"""What a task's exception becomes on its job: type, message and traceback, whatever the exception
does when it is shown.

A library's exception may have a ``__str__`` or ``__repr__`` that raises, a cause chain that loops,
a message of megabytes, or a traceback that cannot be formatted; none of that may kill the
worker loop or lose the exception's type. Every text is scrubbed of passwords (a task's error
is shown on the admin site and API) and bounded, cut with a marker that says how much is gone.
"""

from __future__ import annotations

import traceback

from cabbage.jobs import JobError
from cabbage.redaction import scrub

# What one error may store of its message and of its traceback (characters).
MAX_MESSAGE_CHARS = 64_000
MAX_TRACEBACK_CHARS = 200_000


def describe_exception(exc: BaseException) -> JobError:
    """The JobError a failed attempt records for ``exc``; never raises."""
    return JobError(
        type_name(exc),
        bounded(scrub(_message_of(exc)), MAX_MESSAGE_CHARS),
        bounded(scrub(_traceback_of(exc)), MAX_TRACEBACK_CHARS),
    )


def type_name(exc: BaseException) -> str:
    """``ValueError`` for builtins, ``module.Qualified`` for the rest."""
    kind = type(exc)
    module = getattr(kind, "__module__", None)
    qualname = getattr(kind, "__qualname__", None) or getattr(kind, "__name__", "Exception")
    return qualname if module in (None, "builtins") else f"{module}.{qualname}"


def bounded(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and a marker saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [cut: {len(text) - limit} more characters, {len(text)} in all]"


def _message_of(exc: BaseException) -> str:
    # str() first, as the logs show it; then repr(); then what can be said without calling either.
    for render in (str, repr):
        try:
            text = render(exc)
        except BaseException as failure:  # whatever a broken __str__ raises, SystemExit included
            last_failure = failure
            continue
        if isinstance(text, str):
            return text
    return f"(the message of this {type_name(exc)} could not be rendered: {type(last_failure).__name__})"


def _traceback_of(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(exc))
    except BaseException as failure:  # a broken __str__ anywhere in the chain
        stack = _stack_of(exc)
        return f"{stack}{type_name(exc)}: (the traceback could not be rendered: {type(failure).__name__})\n"


def _stack_of(exc: BaseException) -> str:
    """The frames alone, which format without calling the exception."""
    try:
        return "Traceback (most recent call last):\n" + "".join(traceback.format_tb(exc.__traceback__))
    except BaseException:
        return ""


__all__ = ["describe_exception", "type_name", "bounded", "MAX_MESSAGE_CHARS", "MAX_TRACEBACK_CHARS"]
