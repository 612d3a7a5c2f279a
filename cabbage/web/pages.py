"""The admin website's pages: overview, jobs, one job, workers, locks, periodic schedules; retry
and cancel forms.

Server-rendered HTML (Jinja, autoescaped: whatever a job carries is shown as text). A write is
a POST form that ``auth.require_page_writer`` checks, then redirects back with a message.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flask
from flask.typing import ResponseReturnValue

from cabbage.admin import RETRYABLE_STATUSES, TODO_STATES, counts_by_queue, todo_counts_by_queue
from cabbage.exceptions import JobStateError
from cabbage.jobs import Status
from cabbage.web import auth
from cabbage.web.charts import throughput_chart
from cabbage.web.database import get_admin
from cabbage.web.params import read_listing

blueprint = flask.Blueprint("pages", __name__)

CHART_MINUTES = 60
ADMIN_SITE = "the admin website"  # who aborts from a job's page: the site has one token, no user names


@blueprint.route("/")
def overview() -> ResponseReturnValue:
    admin = get_admin()
    by_queue = counts_by_queue(admin.count_jobs())
    totals = {status: sum(numbers[status] for numbers in by_queue.values()) for status in Status}
    todo_by_queue = todo_counts_by_queue(admin.count_todo_jobs())
    todo_totals = {state: sum(numbers[state] for numbers in todo_by_queue.values()) for state in TODO_STATES}
    throughput = admin.throughput(CHART_MINUTES)
    return flask.render_template(
        "overview.html",
        statuses=list(Status),
        todo_states=TODO_STATES,
        by_queue=by_queue.items(),
        todo_by_queue=todo_by_queue,
        totals=totals,
        todo_totals=todo_totals,
        waiting=admin.oldest_waiting_jobs(),
        chart=throughput_chart(throughput),
        finished_last_hour=sum(minute.finished for minute in throughput),
        workers=admin.count_workers(flask.current_app.config["CABBAGE_HEARTBEAT_TIMEOUT_S"]),
    )


@blueprint.route("/jobs")
def jobs() -> ResponseReturnValue:
    listing = read_listing(flask.request.args)
    page = get_admin().list_jobs(listing.job_filter, listing.limit, listing.cursor)
    return flask.render_template(
        "jobs.html",
        listing=listing,
        page=page,
        statuses=[status.value for status in Status],
        next_query=listing.query(cursor=page.next_cursor) if page.next_cursor else None,
        first_query=listing.query(cursor=None) if listing.cursor else None,
    )


@blueprint.route("/jobs/<int:job_id>")
def job(job_id: int) -> ResponseReturnValue:
    found = get_admin().get_job(job_id)
    return flask.render_template(
        "job.html",
        job=found,
        can_retry=found.status in RETRYABLE_STATUSES,
        can_cancel=found.status is Status.TODO,
        can_abort=found.status is Status.DOING and found.abort_requested_at is None,
    )


@blueprint.route("/jobs/<int:job_id>/retry", methods=["POST"])
def retry(job_id: int) -> ResponseReturnValue:
    auth.require_page_writer()
    return change_and_return(job_id, "retried", get_admin().retry_jobs)


@blueprint.route("/jobs/<int:job_id>/cancel", methods=["POST"])
def cancel(job_id: int) -> ResponseReturnValue:
    auth.require_page_writer()
    return change_and_return(job_id, "cancelled", get_admin().cancel_jobs)


@blueprint.route("/jobs/<int:job_id>/abort", methods=["POST"])
def abort(job_id: int) -> ResponseReturnValue:
    auth.require_page_writer()
    return change_and_return(
        job_id, "asked to stop: its worker was told", lambda job_ids: get_admin().abort_jobs(job_ids, ADMIN_SITE)
    )


def change_and_return(job_id: int, done: str, change: Callable[[Sequence[int]], object]) -> ResponseReturnValue:
    """Runs the change and goes back to the job page; a job in the wrong state is a message there."""
    try:
        change([job_id])
    except JobStateError as exc:
        flask.flash(str(exc), "error")
    else:
        flask.flash(f"job {job_id} {done}", "info")
    return flask.redirect(flask.url_for("pages.job", job_id=job_id), code=303)


@blueprint.route("/workers")
def workers() -> ResponseReturnValue:
    return flask.render_template("workers.html", workers=get_admin().list_workers())


@blueprint.route("/locks")
def locks() -> ResponseReturnValue:
    return flask.render_template("locks.html", locks=get_admin().list_busy_locks())


@blueprint.route("/periodic")
def periodic() -> ResponseReturnValue:
    overview = get_admin().list_periodic_schedules()
    return flask.render_template("periodic.html", overview=overview)
