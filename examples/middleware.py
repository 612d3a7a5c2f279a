"""The how-to's task middleware: your own ``@task`` decorator wraps every task.

The wrapper below is the how-to's, as written. Its ``log_something_else()`` comes after the
``return``, so it never runs: to log after every task too, put the call in a ``finally:``.
Every task wrapped this way is a function named ``new_func``, so give each one a ``name=``:
the default name (``module.qualname``) would be the same for all of them.
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


@task(queue="queue", name="examples.middleware.shout")
def shout(word):
    return word.upper()
