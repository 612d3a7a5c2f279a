"""Jobs put in each status through the real PostgreSQL store, for the admin tests (CLI, web, metrics).

The jobs go the way a worker takes them (defer, claim, finish), so the admin sees rows the
library really writes; only ages are set by SQL (`age_finished_jobs`), since waiting is slow.
"""

from __future__ import annotations

import dataclasses
from contextlib import closing

import psycopg2

from cabbage.jobs import JobError, NewJob, Outcome, Status
from cabbage.postgres import PostgresJobStore

TRACEBACK = 'Traceback (most recent call last):\n  File "tasks.py", line 3, in crash\nRuntimeError: boom\n'
BOOM = JobError("RuntimeError", "boom", TRACEBACK)


@dataclasses.dataclass
class JobStates:
    """A store on the test database and a worker registered in it."""

    dsn: str
    store: PostgresJobStore
    worker_id: int

    @classmethod
    def open(cls, dsn: str) -> "JobStates":
        store = PostgresJobStore(dsn)
        return cls(dsn, store, store.register_worker("test-host", 4242, None))

    def todo(self, task_name: str = "tasks.write", **fields: object) -> int:
        fields.setdefault("queue", "default")
        return self.store.defer_job(NewJob(task_name=task_name, **fields))  # type: ignore[arg-type]

    def doing(self, task_name: str = "tasks.write", **fields: object) -> int:
        job_id = self.todo(task_name, queue="busy", **fields)
        (claimed,) = self.store.claim_jobs(self.worker_id, ["busy"])
        assert claimed.id == job_id
        return job_id

    def finished(self, outcome: Outcome, task_name: str = "tasks.write", **fields: object) -> int:
        queue = f"finishing-{outcome.status.value}"
        job_id = self.todo(task_name, queue=queue, **fields)
        (claimed,) = self.store.claim_jobs(self.worker_id, [queue])
        assert claimed.id == job_id
        assert self.store.finish_job(job_id, self.worker_id, claimed.attempts, outcome)
        return job_id

    def failed(self, task_name: str = "tasks.write", **fields: object) -> int:
        return self.finished(Outcome.failed(BOOM), task_name, **fields)

    def succeeded(self, task_name: str = "tasks.write", **fields: object) -> int:
        return self.finished(Outcome.succeeded(), task_name, **fields)

    def status_of(self, job_id: int) -> Status:
        job = self.store.get_job(job_id)
        assert job is not None, f"job {job_id} is gone"
        return job.status

    def close(self) -> None:
        self.store.close()


def execute(dsn: str, statement: str, params: object = None) -> list[tuple]:
    """Runs one statement in its own committed transaction; the rows it returns, if any."""
    with closing(psycopg2.connect(dsn)) as connection, connection, connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def age_finished_jobs(dsn: str, job_ids: list[int], seconds: float) -> None:
    """Moves the jobs' finished_at (and created_at) ``seconds`` into the past."""
    execute(
        dsn,
        "UPDATE cabbage_jobs SET finished_at = finished_at - make_interval(secs => %(s)s),"
        " created_at = created_at - make_interval(secs => %(s)s) WHERE id = ANY(%(ids)s)",
        {"s": seconds, "ids": job_ids},
    )
