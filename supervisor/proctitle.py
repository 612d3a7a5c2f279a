"""Process titles, for ps and top: the master with its app and worker count, each child with its state.

    cabbage-supervisor: master proj.tasks (4 workers)
    cabbage-supervisor: worker 3 idle
    cabbage-supervisor: worker 3 running proj.tasks.write_alphabet job=1042
    cabbage-supervisor: worker 4 running 7/10          (with --concurrency 10)

A title never carries a DSN: it is made of the --app name, numbers and task names only.
"""

from __future__ import annotations

import re

import setproctitle

PREFIX = "cabbage-supervisor"
# A task name is the user's text: keep titles on one line.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def master_title(app: str, workers: int, note: str | None = None) -> str:
    plural = "worker" if workers == 1 else "workers"
    details = f"{workers} {plural}" + (f", {note}" if note else "")
    return f"{PREFIX}: master {app} ({details})"


def idle_worker_title(worker_number: int) -> str:
    return f"{PREFIX}: worker {worker_number} idle"


def running_worker_title(worker_number: int, task_name: str, job_id: int) -> str:
    return f"{PREFIX}: worker {worker_number} running {task_name} job={job_id}"


def busy_worker_title(worker_number: int, running: int, concurrency: int) -> str:
    """A worker of concurrency above 1: ``worker 3 running 7/10``."""
    return f"{PREFIX}: worker {worker_number} running {running}/{concurrency}"


def stopping_worker_title(worker_number: int) -> str:
    return f"{PREFIX}: worker {worker_number} stopping"


def set_title(title: str) -> None:
    setproctitle.setproctitle(_CONTROL_CHARACTERS.sub(" ", title))
