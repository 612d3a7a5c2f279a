"""The how-to's task middleware: your own ``@task`` decorator wraps every task.

The wrapper below is the how-to's, as written. Its ``log_something_else()`` comes after the
``return``, so it never runs: to log after every task too, put the call in a ``finally:``, or
use a middleware (``@task_manager.middleware``, the how-to's next example). Every task it
wraps is named after its own function (``examples.middleware.shout``), not the wrapper's
``new_func``: cabbage follows a ``(*args, **kwargs)`` wrapper to the one function it closes over.
"""

import structlog

from examples.tasks import task_manager

log = structlog.get_logger()


def log_something():
    log.info("middleware_entered")


def log_something_else():
    log.info("middleware_left")


def task(*args, **kwargs):
    def wrap(func):
        def new_func(*job_args, **job_kwargs):
            log_something()
            return func(*job_args, **job_kwargs)
            log_something_else()

        return task_manager.task(*args, **kwargs)(new_func)
    return wrap


@task(queue="queue")
def shout(word):
    return word.upper()


@task(queue="queue")
def whisper(word):
    return word.lower()
