"""The OpenAPI 3.1 document of the REST API, served at /api/v1/openapi.json.

Built from the same constants the API checks (statuses, page size, id range), so the document
and the behaviour cannot drift apart; the tests validate it and fuzz the API against it.
"""

from __future__ import annotations

from typing import Any, Sequence

from cabbage.admin import (
    DEFAULT_PAGE_SIZE,
    MAX_ATTEMPT_CHARS,
    MAX_JOB_ID,
    MAX_LISTED_ERROR_CHARS,
    MAX_PAGE_SIZE,
    MAX_SHOWN_CHARS,
    TODO_STATES,
    JobState,
)
from cabbage.jobs import FINISHED_STATUSES, KEPT_ATTEMPTS, MAX_PRIORITY, MIN_PRIORITY, AttemptOutcome, Status
from cabbage.manual_changes import MAX_ABORTED_BY_CHARS
from cabbage.web.throttle import WINDOW_S, WRONG_TOKENS_ALLOWED

MAX_IDS_PER_CHANGE = 1000
STATUSES = [status.value for status in Status]
STATES = [state.value for state in JobState]
TIME = {"type": "string", "format": "date-time"}
OPTIONAL_TIME = {"type": ["string", "null"], "format": "date-time"}
JOB_ID = {"type": "integer", "minimum": 1, "maximum": MAX_JOB_ID}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def record(properties: dict[str, Any], description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "required": list(properties), "properties": properties}
    if description:
        schema["description"] = description
    return schema


def listing_of(name: str, item: str) -> dict[str, Any]:
    return record({name: {"type": "array", "items": ref(item)}})


JOB_SUMMARY: dict[str, Any] = {
    "id": JOB_ID,
    "queue": {"type": "string"},
    "task_name": {"type": "string"},
    "lock": {"type": ["string", "null"]},
    "status": {"type": "string", "enum": STATUSES},
    "scheduled_at": TIME,
    "attempts": {"type": "integer", "minimum": 0},
    "max_attempts": {"type": ["integer", "null"], "minimum": 1},
    "worker_id": {"type": ["integer", "null"]},
    "created_at": TIME,
    "started_at": OPTIONAL_TIME,
    "finished_at": OPTIONAL_TIME,
    "last_error": {"oneOf": [ref("JobError"), {"type": "null"}]},
    "priority": {"type": "integer", "minimum": MIN_PRIORITY, "maximum": MAX_PRIORITY,
                 "description": "higher is claimed first among due jobs"},
    "queueing_lock": {"type": ["string", "null"], "description": "at most one todo job per queueing lock"},
    "state": {
        "type": "string",
        "enum": STATES,
        "description": "the status, with todo told apart: waiting (due, claimable), scheduled (not due yet), "
        "behind_lock (behind the head job of its lock's line)",
    },
    "waiting_behind_job_id": {
        "type": ["integer", "null"],
        "description": "for a job behind its lock: the head job of the line; else null",
    },
    "abort_requested_at": {**OPTIONAL_TIME, "description": "when an operator first asked to abort the job; else null"},
    "aborted_by": {"type": ["string", "null"], "description": "who asked to abort the job; else null"},
}


SCHEMAS: dict[str, Any] = {
    "Error": record({"error": {"type": "string", "description": "what is wrong, on one line"}}),
    "JobError": record(
        {"type": {"type": "string"}, "message": {"type": "string"}, "traceback": {"type": ["string", "null"]}},
        "what the last failed attempt left behind",
    ),
    "JobSummary": record(
        JOB_SUMMARY,
        f"a job as listings show it: no arguments, no traceback, the error message cut to {MAX_LISTED_ERROR_CHARS} "
        "characters",
    ),
    "Job": record(
        {
            **JOB_SUMMARY,
            "args": {"type": ["array", "null"], "description": "positional arguments; null when cut"},
            "kwargs": {"type": ["object", "null"], "description": "keyword arguments; null when cut"},
            "arguments_preview": {
                "type": ["string", "null"],
                "description": f'null when the arguments fit in {MAX_SHOWN_CHARS:,} characters of JSON; else the first '
                f'{MAX_SHOWN_CHARS:,} characters of {{"args": ..., "kwargs": ...}} and a marker saying how many were '
                "cut; GET /jobs/{job_id}/arguments has them whole",
            },
            "attempt_history": {
                "type": "array",
                "items": ref("Attempt"),
                "maxItems": KEPT_ATTEMPTS,
                "description": f"the job's last {KEPT_ATTEMPTS} attempts that ended, oldest first",
            },
        },
        f"one job; its error message and traceback cut to {MAX_SHOWN_CHARS:,} characters each, marked where cut",
    ),
    "Attempt": record(
        {
            "job_id": JOB_ID,
            "attempt": {"type": "integer", "minimum": 1},
            "worker_id": {"type": ["integer", "null"]},
            "started_at": TIME,
            "finished_at": TIME,
            "outcome": {
                "type": "string",
                "enum": [outcome.value for outcome in AttemptOutcome],
                "description": "retried: failed, and a retry was scheduled; lost: its worker was lost (reclaimed)",
            },
            "error": {"oneOf": [ref("JobError"), {"type": "null"}]},
        },
        f"one attempt of a job; its error message and traceback cut to {MAX_ATTEMPT_CHARS:,} characters each, "
        "marked where cut",
    ),
    "Arguments": record(
        {
            "args": {"type": ["array", "object"], "description": "positional arguments, as stored"},
            "kwargs": {"type": "object", "description": "keyword arguments"},
        },
        "a job's whole arguments, however long",
    ),
    "JobPage": record(
        {
            "jobs": {"type": "array", "items": ref("JobSummary")},
            "next_cursor": {
                "type": ["integer", "null"],
                "description": "pass as `cursor` for the next page; null on the last page",
            },
        }
    ),
    "JobIds": record(
        {"job_ids": {"type": "array", "items": JOB_ID, "minItems": 1, "maxItems": MAX_IDS_PER_CHANGE}}
    ),
    "Retried": record({"retried": {"type": "array", "items": JOB_ID}}),
    "Cancelled": record({"cancelled": {"type": "array", "items": JOB_ID}}),
    "AbortRequest": {
        "type": "object",
        "properties": {
            "job_ids": {"type": "array", "items": JOB_ID, "minItems": 1, "maxItems": MAX_IDS_PER_CHANGE},
            "by": {"type": "string", "minLength": 1, "maxLength": MAX_ABORTED_BY_CHARS,
                   "description": "who asks, stored on the job and shown in its error (default: 'API client')"},
        },
        "additionalProperties": False,
    },
    "Aborted": record(
        {
            "cancelled": {"type": "array", "items": JOB_ID, "description": "waiting or only reserved jobs: cancelled now"},
            "abort_requested": {
                "type": "array", "items": JOB_ID,
                "description": "running jobs: their workers were told, and the jobs end cancelled when their attempts end",
            },
            "aborted_by": {"type": "string"},
        }
    ),
    "QueueCount": record(
        {"queue": {"type": "string"}, "status": {"type": "string", "enum": STATUSES}, "jobs": {"type": "integer"}}
    ),
    "TodoCount": record(
        {
            "queue": {"type": "string"},
            "state": {"type": "string", "enum": [state.value for state in TODO_STATES]},
            "jobs": {"type": "integer"},
        },
        "todo jobs of a queue in one state",
    ),
    "WaitingJob": record(
        {"queue": {"type": "string"}, "job_id": JOB_ID, "waiting_s": {"type": "number"}},
        "the oldest waiting job of a queue: todo, due, at the head of its lock's line",
    ),
    "MinuteThroughput": record(
        {
            "minute": TIME,
            **{status.value: {"type": "integer", "minimum": 0} for status in sorted(FINISHED_STATUSES)},
        }
    ),
    "Stats": record(
        {
            "counts": {"type": "array", "items": ref("QueueCount")},
            "todo": {
                "type": "array",
                "items": ref("TodoCount"),
                "description": "the todo jobs of counts, by state: waiting, scheduled, behind_lock",
            },
            "oldest_waiting": {"type": "array", "items": ref("WaitingJob")},
            "jobs_per_minute": {"type": "number", "description": "averaged over the last five minutes"},
            "throughput": {"type": "array", "items": ref("MinuteThroughput"), "description": "the last hour"},
        }
    ),
    "Worker": record(
        {
            "worker_id": {"type": "integer"},
            "hostname": {"type": "string"},
            "pid": {"type": "integer"},
            "started_at": TIME,
            "last_heartbeat_at": TIME,
            "heartbeat_age_s": {"type": "number"},
            "current_job_id": {"type": ["integer", "null"]},
            "current_task_name": {"type": ["string", "null"]},
            "current_job_run_s": {"type": ["number", "null"]},
        }
    ),
    "Lock": record(
        {
            "lock": {"type": "string"},
            "running_job_id": {"type": ["integer", "null"]},
            "waiting": {"type": "integer", "minimum": 0},
            "oldest_waiting_s": {"type": ["number", "null"]},
        }
    ),
    "PeriodicTick": record(
        {
            "task_name": {"type": "string"},
            "periodic_id": {"type": "string"},
            "tick_at": TIME,
            "job_id": {"type": ["integer", "null"], "description": "the tick's job; null for skipped ticks"},
            "skipped_ticks": {
                "type": ["integer", "null"],
                "description": "null for a deferred tick; else how many ticks up to tick_at were skipped (missed by "
                "more than the catch-up while no supervisor ran), counted up to 10,000",
            },
            "recorded_at": TIME,
        },
        "a tick recorded in the database, once",
    ),
    "PeriodicSchedule": record(
        {
            "task_name": {"type": "string"},
            "periodic_id": {"type": "string"},
            "cron": {"type": "string", "description": "5 fields, or 6 with the seconds first"},
            "timezone": {"type": "string", "description": "the IANA time zone the expression is read in"},
            "catch_up_s": {"type": "number", "description": "ticks missed by more are skipped, not deferred late"},
            "first_declared_at": OPTIONAL_TIME,
            "last_declared_at": {**OPTIONAL_TIME, "description": "supervisors running it declare it every minute"},
            "last_tick": {"oneOf": [ref("PeriodicTick"), {"type": "null"}]},
            "next_tick_at": {**OPTIONAL_TIME, "description": "after database_now; null if it never fires again"},
        },
        "a schedule the supervisors declared, with its last recorded and next ticks",
    ),
    "Periodic": record(
        {"database_now": TIME, "schedules": {"type": "array", "items": ref("PeriodicSchedule")}}
    ),
    "Workers": listing_of("workers", "Worker"),
    "Locks": listing_of("locks", "Lock"),
}


def text_filter(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": {"type": "string"}}


PARAMETERS: dict[str, Any] = {
    "status": {"name": "status", "in": "query", "required": False, "schema": {"type": "string", "enum": STATUSES}},
    "queue": text_filter("queue", "only jobs of this queue"),
    "task": text_filter("task", "only jobs of this task name"),
    "lock": text_filter("lock", "only jobs with this lock"),
    "cursor": {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "the `next_cursor` of the previous page: jobs with a smaller id",
        "schema": JOB_ID,
    },
    "limit": {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE},
    },
    "job_id": {"name": "job_id", "in": "path", "required": True, "schema": JOB_ID},
}


def answer(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref(schema)}}}


ERRORS = {
    "400": answer("a parameter has a value the API cannot use", "Error"),
    "503": answer("the database is unreachable or its schema is not current", "Error"),
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}}
TOKEN_ERRORS = {
    "401": answer("no valid bearer token", "Error"),
    "429": {
        **answer(f"{WRONG_TOKENS_ALLOWED} wrong tokens from this address in {WINDOW_S:g} s: wait Retry-After seconds", "Error"),
        "headers": RETRY_AFTER,
    },
}
WRITE_ERRORS = {
    **ERRORS,
    **TOKEN_ERRORS,
    "403": answer("the server is read-only (started without a token)", "Error"),
    "404": answer("no job has that id", "Error"),
    "409": answer("a job is not in a state that allows the change; none was changed", "Error"),
}


def read(summary: str, schema: str, parameters: Sequence[str] = (), not_found: bool = False) -> dict[str, Any]:
    responses = {"200": answer(summary, schema), **ERRORS}
    if not_found:
        responses["404"] = answer("no job has that id", "Error")
    references = [{"$ref": f"#/components/parameters/{name}"} for name in parameters]
    return {"get": {"summary": summary, "parameters": references, "responses": responses}}


def write(summary: str, schema: str, by_path: bool) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "security": [{"bearer": []}],
        "responses": {"200": answer(summary, schema), **WRITE_ERRORS},
    }
    if by_path:
        operation["parameters"] = [{"$ref": "#/components/parameters/job_id"}]
    else:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref("JobIds")}}}
    return {"post": operation}


def abort(by_path: bool) -> dict[str, Any]:
    """An abort: a body with ``by`` (and, for several jobs, ``job_ids``)."""
    summary = "abort a job" if by_path else "abort several jobs: all or none"
    operation = write(summary, "Aborted", by_path)["post"]
    operation["description"] = (
        "A todo job (or one only reserved by a worker) is cancelled at once. A running job's worker learns it "
        "within a second: a def task sees should_abort(), an async one is cancelled, and after the supervisor's "
        "--abort-timeout its process is killed; the job ends cancelled, 'Aborted: aborted by <by>', unless its "
        "attempt succeeded first. Only todo and doing jobs can be aborted."
    )
    operation["requestBody"] = {
        "required": not by_path, "content": {"application/json": {"schema": ref("AbortRequest")}},
    }
    return {"post": operation}


def whole_arguments() -> dict[str, Any]:
    operation = read("a job's whole arguments, however long", "Arguments", ["job_id"], not_found=True)["get"]
    operation["description"] = (
        "For the bearer token or a signed-in session (the website's cookie) only: a job page and "
        f"GET /jobs/{{job_id}} show {MAX_SHOWN_CHARS:,} characters of them to anyone."
    )
    operation["security"] = [{"bearer": []}, {"session": []}]
    operation["responses"].update({key: WRITE_ERRORS[key] for key in ("401", "403", "429")})
    return {"get": operation}


def build_document() -> dict[str, Any]:
    listing = ["status", "queue", "task", "lock", "cursor", "limit"]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cabbage admin API",
            "version": "1",
            "description": "Jobs, workers, locks, periodic schedules and statistics of a cabbage database. Reads are open; "
            "writes need `Authorization: Bearer <CABBAGE_WEB_TOKEN>`.",
        },
        "servers": [{"url": "/api/v1"}],
        "paths": {
            "/jobs": read("jobs newest first, filtered, one page", "JobPage", listing),
            "/jobs/{job_id}": read(
                "one job, with its last error and traceback, and its last attempts", "Job", ["job_id"], not_found=True
            ),
            "/jobs/{job_id}/arguments": whole_arguments(),
            "/jobs/{job_id}/retry": write("send a failed or cancelled job back to todo", "Retried", by_path=True),
            "/jobs/{job_id}/cancel": write("cancel a todo job", "Cancelled", by_path=True),
            "/jobs/retry": write("retry several jobs: all or none", "Retried", by_path=False),
            "/jobs/cancel": write("cancel several todo jobs: all or none", "Cancelled", by_path=False),
            "/jobs/{job_id}/abort": abort(by_path=True),
            "/jobs/abort": abort(by_path=False),
            "/stats": read("counts by queue and status, oldest waiting jobs, throughput", "Stats"),
            "/workers": read("registered workers, heartbeat ages and current jobs", "Workers"),
            "/locks": read("locks with a running job or jobs waiting behind them", "Locks"),
            "/periodic": read("periodic schedules with their last recorded and next ticks", "Periodic"),
        },
        "components": {
            "schemas": SCHEMAS,
            "parameters": PARAMETERS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "cabbage_session", "description": "signed in on /login"},
            },
        },
    }
