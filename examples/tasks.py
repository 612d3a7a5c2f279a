"""The how-to's tasks, runnable as written: ``cabbage-supervisor --app examples.tasks``.

``write_alphabet`` appends to ``/tmp/alphabet.txt``; set ``CABBAGE_EXAMPLES_DIR`` to write
``$CABBAGE_EXAMPLES_DIR/alphabet.txt`` instead, and ``CABBAGE_EXAMPLES_MAX_SLEEP_S`` to
shorten the random wait of up to 5 seconds (the tests do both).

    write_alphabet.configure(lock="/tmp/alphabet.txt").defer("a")
    create_bug.configure(schedule_at=dt).defer(crash_everything=True)
    clean.configure(schedule_in={"hours": 1, "minutes": 30}).defer()
"""

import os
import random
import time

import structlog

import cabbage

task_manager = cabbage.TaskManager()

ALPHABET_PATH = os.path.join(os.environ.get("CABBAGE_EXAMPLES_DIR", "/tmp"), "alphabet.txt")
MAX_SLEEP_S = float(os.environ.get("CABBAGE_EXAMPLES_MAX_SLEEP_S", "5"))

log = structlog.get_logger()


@task_manager.task(queue="queue")
def write_alphabet(floor):
    time.sleep(random.random() * MAX_SLEEP_S)
    with open(ALPHABET_PATH, "a") as f:
        f.write(floor)


@task_manager.task
def create_bug(crash_everything=False):
    """The infamous 2038 bug: a signed 32-bit clock wraps one second after 03:14:07 UTC."""
    if crash_everything:
        raise OverflowError("2038-01-19 03:14:08 UTC does not fit in a signed 32-bit time_t")
    log.info("bug_created", crash_everything=crash_everything)


@task_manager.task
def clean():
    """Removes what write_alphabet wrote."""
    try:
        os.remove(ALPHABET_PATH)
    except FileNotFoundError:
        pass
