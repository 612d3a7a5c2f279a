"""The REST API under /api/v1/: the website's data as JSON, described by /api/v1/openapi.json.

Listings page by cursor (keyset on id, newest first): pass a response's ``next_cursor`` as
``cursor`` for the next page; they carry no arguments. One job's arguments, error and
traceback are cut to ``MAX_SHOWN_CHARS``; the whole arguments need the token or a session. Writes need ``Authorization: Bearer <token>``; multi-job writes
are all or nothing.
"""

from __future__ import annotations

from typing import Any

import flask
from flask.typing import ResponseReturnValue

from cabbage.admin import MAX_JOB_ID, jsonable
from cabbage.exceptions import ConfigurationError
from cabbage.web import auth
from cabbage.web.database import get_admin
from cabbage.web.openapi import MAX_IDS_PER_CHANGE, build_document
from cabbage.web.params import read_listing

API_CLIENT = "API client"  # who aborts, when an API call does not say

blueprint = flask.Blueprint("api", __name__, url_prefix="/api/v1")

THROUGHPUT_MINUTES = 60


def as_json(value: Any, status: int = 200) -> ResponseReturnValue:
    return flask.jsonify(jsonable(value)), status


@blueprint.route("/openapi.json")
def openapi() -> ResponseReturnValue:
    return flask.jsonify(build_document())


@blueprint.route("/jobs")
def list_jobs() -> ResponseReturnValue:
    listing = read_listing(flask.request.args)
    page = get_admin().list_jobs(listing.job_filter, listing.limit, listing.cursor)
    return as_json({"jobs": page.jobs, "next_cursor": page.next_cursor})


@blueprint.route("/jobs/<int:job_id>")
def get_job(job_id: int) -> ResponseReturnValue:
    return as_json(get_admin().get_job(job_id))


@blueprint.route("/jobs/<int:job_id>/arguments")
def job_arguments(job_id: int) -> ResponseReturnValue:
    """The whole arguments, for the token or a signed-in session only: they may be 100 MB."""
    auth.require_trusted_reader()
    return flask.Response(get_admin().get_job_arguments(job_id), mimetype="application/json")


@blueprint.route("/jobs/<int:job_id>/retry", methods=["POST"])
def retry_job(job_id: int) -> ResponseReturnValue:
    auth.require_api_writer()
    return as_json({"retried": get_admin().retry_jobs([job_id])})


@blueprint.route("/jobs/<int:job_id>/cancel", methods=["POST"])
def cancel_job(job_id: int) -> ResponseReturnValue:
    auth.require_api_writer()
    return as_json({"cancelled": get_admin().cancel_jobs([job_id])})


@blueprint.route("/jobs/retry", methods=["POST"])
def retry_jobs() -> ResponseReturnValue:
    auth.require_api_writer()
    return as_json({"retried": get_admin().retry_jobs(job_ids_in_body())})


@blueprint.route("/jobs/cancel", methods=["POST"])
def cancel_jobs() -> ResponseReturnValue:
    auth.require_api_writer()
    return as_json({"cancelled": get_admin().cancel_jobs(job_ids_in_body())})


@blueprint.route("/jobs/<int:job_id>/abort", methods=["POST"])
def abort_job(job_id: int) -> ResponseReturnValue:
    auth.require_api_writer()
    return aborted([job_id], aborted_by_in_body())


@blueprint.route("/jobs/abort", methods=["POST"])
def abort_jobs() -> ResponseReturnValue:
    auth.require_api_writer()
    return aborted(job_ids_in_body(), aborted_by_in_body())


def aborted(job_ids: list[int], aborted_by: str) -> ResponseReturnValue:
    result = get_admin().abort_jobs(job_ids, aborted_by)
    return as_json({"cancelled": result.cancelled, "abort_requested": result.requested, "aborted_by": aborted_by})


def aborted_by_in_body() -> str:
    """The ``by`` of an abort's JSON body: who asks (checked by the abort); 'API client' without one."""
    body = flask.request.get_json(silent=True) if flask.request.content_length else None
    if body is None:
        return API_CLIENT
    by = body.get("by", API_CLIENT) if isinstance(body, dict) else None
    if not isinstance(by, str):
        raise ConfigurationError('the body must be a JSON object whose "by" is a string: who asks for the abort')
    return by


def job_ids_in_body() -> list[int]:
    """The ``job_ids`` of a ``{"job_ids": [1, 2]}`` body, or a 400 saying what is wrong."""
    body = flask.request.get_json(silent=True)
    job_ids = body.get("job_ids") if isinstance(body, dict) else None
    if (
        not isinstance(job_ids, list)
        or not 1 <= len(job_ids) <= MAX_IDS_PER_CHANGE
        or not all(type(job_id) is int and 1 <= job_id <= MAX_JOB_ID for job_id in job_ids)
    ):
        raise ConfigurationError(
            f'the body must be JSON {{"job_ids": [...]}} with 1 to {MAX_IDS_PER_CHANGE} job ids (whole numbers from 1)'
        )
    return job_ids


@blueprint.route("/stats")
def stats() -> ResponseReturnValue:
    admin = get_admin()
    return as_json(
        {
            "counts": admin.count_jobs(),
            "todo": admin.count_todo_jobs(),
            "oldest_waiting": admin.oldest_waiting_jobs(),
            "jobs_per_minute": admin.jobs_per_minute(),
            "throughput": admin.throughput(THROUGHPUT_MINUTES),
        }
    )


@blueprint.route("/workers")
def workers() -> ResponseReturnValue:
    return as_json({"workers": get_admin().list_workers()})


@blueprint.route("/locks")
def locks() -> ResponseReturnValue:
    return as_json({"locks": get_admin().list_busy_locks()})


@blueprint.route("/periodic")
def periodic() -> ResponseReturnValue:
    overview = get_admin().list_periodic_schedules()
    return as_json({"database_now": overview.now, "schedules": overview.schedules})
