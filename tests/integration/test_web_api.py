"""The admin website and REST API over real HTTP: a werkzeug server thread on a free port.

Covers the OpenAPI document (it validates, and a property-based run of the API against its
parameters finds no 500 and no answer outside it), cursor paging, tokens on writes, and that
SQL- and HTML-like input is shown as text and changes nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import http.cookiejar
import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from contextlib import closing
from typing import Any, Iterator

import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from psycopg2.extensions import make_dsn, parse_dsn
from werkzeug.serving import make_server

from cabbage.admin import MAX_LISTED_ERROR_CHARS, MAX_SHOWN_CHARS
from cabbage.jobs import JobError, NewJob, Outcome, Status
from cabbage.schema import CURRENT_VERSION, apply_schema
from cabbage.web import create_app
from cabbage.web.database import pool_of
from tests.integration.job_states import BOOM, TRACEBACK, execute
from tests.waiting import wait_for

TOKEN = "correct-horse-battery-staple"
HTML_ATTACK = '"><script>alert("owned")</script>'
SQL_ATTACK = "x'; DROP TABLE cabbage_jobs; --"


@dataclasses.dataclass
class Answer:
    status: int
    headers: Any
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None  # the test sees the 303 itself


class Client:
    """A tiny HTTP client with a cookie jar (the signed-in session), on one server."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies), NoRedirect())

    def request(self, method: str, path: str, *, form: dict | None = None, body: Any = None, token: str | None = None) -> Answer:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        data = None
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with self.opener.open(request, timeout=30) as response:
                return Answer(response.status, response.headers, response.read())
        except urllib.error.HTTPError as error:
            return Answer(error.code, error.headers, error.read())

    def get(self, path: str, **query: Any) -> Answer:
        return self.request("GET", path + (f"?{urllib.parse.urlencode(query)}" if query else ""))

    def post(self, path: str, **options: Any) -> Answer:
        return self.request("POST", path, **options)

    def sign_in(self, token: str = TOKEN) -> int:
        return self.post("/login", form={"token": token, "next": "/jobs"}).status

    def csrf_on_job_page(self, job_id: int) -> str:
        match = re.search(r'name="csrf_token" value="([^"]+)"', self.get(f"/jobs/{job_id}").text)
        assert match, "the job page has no form with a CSRF field"
        return match.group(1)


def serve(app: Any) -> Iterator[Client]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Client(f"http://127.0.0.1:{server.port}")
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def client(db_dsn: str) -> Iterator[Client]:
    yield from serve(create_app(db_dsn, token=TOKEN))


@pytest.fixture
def read_only_client(db_dsn: str) -> Iterator[Client]:
    yield from serve(create_app(db_dsn))


@pytest.fixture(scope="module")
def document() -> dict:
    from cabbage.web.openapi import build_document

    return build_document()


def count_jobs(dsn: str) -> int:
    return execute(dsn, "SELECT count(*) FROM cabbage_jobs")[0][0]


def response_validator(document: dict, schema: dict) -> OAS31Validator:
    return OAS31Validator({**schema, "components": document["components"]})


def assert_matches_document(document: dict, path: str, method: str, answer: Answer) -> None:
    """The answer's status is documented for the operation and its body has the documented shape."""
    responses = document["paths"][path][method]["responses"]
    assert str(answer.status) in responses, f"{method.upper()} {path} answered {answer.status}: {answer.body[:300]!r}"
    schema = responses[str(answer.status)]["content"]["application/json"]["schema"]
    response_validator(document, schema).validate(answer.json)


# -- the document -------------------------------------------------------------------------------


def test_openapi_document_is_served_and_valid(client, document):
    served = client.get("/api/v1/openapi.json")
    assert served.status == 200 and served.json == json.loads(json.dumps(document))
    validate(served.json)  # raises on an invalid OpenAPI 3.1 document


# -- reading ------------------------------------------------------------------------------------


def test_jobs_are_listed_newest_first_with_filters_and_a_keyset_cursor(client, jobs, document):
    line = [jobs.todo("tasks.a", queue="q", lock="L") for _ in range(5)]
    jobs.todo("tasks.b", queue="r")
    seen, cursor = [], None
    while True:
        answer = client.get("/api/v1/jobs", queue="q", limit=2, **({"cursor": cursor} if cursor else {}))
        assert_matches_document(document, "/jobs", "get", answer)
        seen += [job["id"] for job in answer.json["jobs"]]
        cursor = answer.json["next_cursor"]
        if cursor is None:
            break
    assert seen == line[::-1]

    # Keyset, not offset: a job deferred between two pages does not shift the next page.
    first = client.get("/api/v1/jobs", queue="q", limit=2).json
    jobs.todo("tasks.a", queue="q")
    second = client.get("/api/v1/jobs", queue="q", limit=2, cursor=first["next_cursor"]).json
    assert [job["id"] for job in second["jobs"]] == line[2:0:-1]

    assert [job["id"] for job in client.get("/api/v1/jobs", task="tasks.b").json["jobs"]] == [line[-1] + 1]
    assert client.get("/api/v1/jobs", lock="L", status="doing").json == {"jobs": [], "next_cursor": None}


def test_one_job_with_its_error_and_traceback(client, jobs, document):
    job_id = jobs.failed("tasks.crash", args=("a",), kwargs={"floor": 2})
    answer = client.get(f"/api/v1/jobs/{job_id}")
    assert_matches_document(document, "/jobs/{job_id}", "get", answer)
    job = answer.json
    assert (job["status"], job["args"], job["kwargs"], job["attempts"]) == ("failed", ["a"], {"floor": 2}, 1)
    assert job["arguments_preview"] is None
    assert job["last_error"]["type"] == "RuntimeError" and "Traceback" in job["last_error"]["traceback"]

    page = client.get(f"/jobs/{job_id}").text
    assert "RuntimeError" in page and "Traceback (most recent call last):" in page and "&#34;floor&#34;" in page


def test_one_job_with_its_priority_queueing_lock_and_attempts(client, jobs, document):
    job_id = jobs.todo("tasks.flaky", queue="flaky", max_attempts=2, priority=4, queueing_lock="flaky-1")
    for outcome in (Outcome.retry(BOOM, retry_in_s=0), Outcome.failed(JobError("ValueError", "<b>bad</b>"))):
        (claimed,) = jobs.store.claim_jobs(jobs.worker_id, ["flaky"])
        assert jobs.store.finish_job(job_id, jobs.worker_id, claimed.attempts, outcome)
    answer = client.get(f"/api/v1/jobs/{job_id}")
    assert_matches_document(document, "/jobs/{job_id}", "get", answer)
    job = answer.json
    assert (job["priority"], job["queueing_lock"], job["state"], job["waiting_behind_job_id"]) == (
        4, "flaky-1", "failed", None
    )
    assert [(attempt["attempt"], attempt["outcome"], attempt["worker_id"]) for attempt in job["attempt_history"]] == [
        (1, "retried", jobs.worker_id), (2, "failed", jobs.worker_id)
    ]
    assert job["attempt_history"][0]["error"] == {"type": "RuntimeError", "message": "boom", "traceback": TRACEBACK}

    page = client.get(f"/jobs/{job_id}").text
    assert 'id="attempt-1"' in page and 'id="attempt-2"' in page and "(the last 2 of 2)" in page
    assert "outcome-retried" in page and "&lt;b&gt;bad&lt;/b&gt;" in page and "<b>bad</b>" not in page
    assert "<dt>queueing lock</dt><dd>flaky-1</dd>" in page and "<dt>priority</dt><dd>4</dd>" in page


def test_the_job_list_tells_todo_jobs_apart(client, jobs, document):
    running = jobs.doing("tasks.slow", lock="printer")
    behind = jobs.todo(queue="busy", lock="printer", queueing_lock="print-1")
    scheduled = jobs.todo(schedule_in={"seconds": 3600.0}, priority=-2)
    waiting = jobs.todo(priority=9)
    answer = client.get("/api/v1/jobs")
    assert_matches_document(document, "/jobs", "get", answer)
    listed = {job["id"]: job for job in answer.json["jobs"]}
    assert [(listed[job_id]["state"], listed[job_id]["waiting_behind_job_id"]) for job_id in (running, behind, scheduled, waiting)] == [
        ("doing", None), ("behind_lock", running), ("scheduled", None), ("waiting", None)
    ]
    page = client.get("/jobs").text
    assert f'waiting behind <a href="/jobs/{running}">job #{running}</a>' in page
    assert '<span class="state state-scheduled">scheduled</span>' in page and "print-1" in page
    assert '<td class="number">-2</td>' in page and '<td class="number">9</td>' in page
    assert f'waiting behind <a href="/jobs/{running}">job #{running}</a>' in client.get(f"/jobs/{behind}").text

    stats = client.get("/api/v1/stats")
    assert_matches_document(document, "/stats", "get", stats)
    assert sorted((count["queue"], count["state"], count["jobs"]) for count in stats.json["todo"]) == [
        ("busy", "behind_lock", 1), ("default", "scheduled", 1), ("default", "waiting", 1)
    ]
    (oldest,) = stats.json["oldest_waiting"]
    assert oldest["job_id"] == waiting, "a job behind its lock or not due yet is not waiting for a worker"
    overview = client.get("/").text
    assert re.search(r'id="todo-waiting">\s*<span class="figure">1</span>', overview)
    assert re.search(r'id="todo-behind_lock">\s*<span class="figure">1</span>', overview)


def test_job_pages_and_api_answers_are_never_stored_and_never_framed(client, jobs):
    job_id = jobs.failed(args=("private",))
    for path in (f"/jobs/{job_id}", "/jobs", f"/api/v1/jobs/{job_id}", "/api/v1/jobs", "/"):
        answer = client.get(path)
        assert answer.status == 200, path
        assert answer.headers["Cache-Control"] == "no-store", path
        assert answer.headers["X-Frame-Options"] == "DENY" and answer.headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'none'" in answer.headers["Content-Security-Policy"]


# -- what a job may weigh ------------------------------------------------------------------------

HUGE_CHARS = 3_000_000


def make_huge(dsn: str, job_id: int) -> None:
    """Gives the job arguments, an error message and a traceback of HUGE_CHARS characters each."""
    execute(
        dsn,
        "UPDATE cabbage_jobs SET args = jsonb_build_array(repeat('a', %(n)s)), kwargs = '{\"k\": 1}',"
        " last_error = repeat('m', %(n)s), last_error_traceback = repeat('t', %(n)s) WHERE id = %(id)s",
        {"n": HUGE_CHARS, "id": job_id},
    )


def test_job_listings_carry_no_arguments_and_cut_the_error(client, jobs, document):
    job_id = jobs.failed()
    make_huge(jobs.dsn, job_id)
    listed = client.get("/api/v1/jobs")
    assert_matches_document(document, "/jobs", "get", listed)
    (job,) = listed.json["jobs"]
    assert not {"args", "kwargs", "arguments_preview"} & set(job) and job["last_error"]["traceback"] is None
    assert job["last_error"]["message"] == "m" * MAX_LISTED_ERROR_CHARS + (
        f"… [cut: {HUGE_CHARS - MAX_LISTED_ERROR_CHARS:,} more characters, {HUGE_CHARS:,} in all]"
    )
    assert len(listed.body) < 5_000
    page = client.get("/jobs")
    assert page.status == 200 and len(page.body) < 20_000 and "more characters" in page.text


def test_a_huge_job_is_cut_to_the_documented_size_with_a_marker(client, jobs, document):
    job_id = jobs.failed()
    make_huge(jobs.dsn, job_id)
    answer = client.get(f"/api/v1/jobs/{job_id}")
    assert_matches_document(document, "/jobs/{job_id}", "get", answer)
    job = answer.json
    whole_chars = len(json.dumps({"args": ["a" * HUGE_CHARS], "kwargs": {"k": 1}}))
    assert (job["args"], job["kwargs"]) == (None, None)
    assert job["arguments_preview"] == ('{"args": ["' + "a" * (MAX_SHOWN_CHARS - 11)) + (
        f"… [cut: {whole_chars - MAX_SHOWN_CHARS:,} more characters, {whole_chars:,} in all]"
    )
    for text, letter in ((job["last_error"]["message"], "m"), (job["last_error"]["traceback"], "t")):
        assert text == letter * MAX_SHOWN_CHARS + f"… [cut: {HUGE_CHARS - MAX_SHOWN_CHARS:,} more characters, {HUGE_CHARS:,} in all]"
    assert len(answer.body) < 4 * MAX_SHOWN_CHARS

    page = client.get(f"/jobs/{job_id}")
    assert len(page.body) < 4 * MAX_SHOWN_CHARS + 10_000
    assert f"{whole_chars - MAX_SHOWN_CHARS:,} more characters" in page.text and "Sign in</a> to get the whole arguments" in page.text


def test_the_whole_arguments_are_for_the_token_or_a_signed_in_session(client, read_only_client, jobs, document):
    job_id = jobs.failed()
    make_huge(jobs.dsn, job_id)
    whole = {"args": ["a" * HUGE_CHARS], "kwargs": {"k": 1}}

    refused = client.get(f"/api/v1/jobs/{job_id}/arguments")
    assert_matches_document(document, "/jobs/{job_id}/arguments", "get", refused)
    assert refused.status == 401 and len(refused.body) < 500
    assert client.request("GET", f"/api/v1/jobs/{job_id}/arguments", token="wrong-token").status == 401
    assert read_only_client.get(f"/api/v1/jobs/{job_id}/arguments").status == 403

    with_token = client.request("GET", f"/api/v1/jobs/{job_id}/arguments", token=TOKEN)
    assert with_token.status == 200 and with_token.headers["Content-Type"] == "application/json"
    assert with_token.json == whole and with_token.headers["Cache-Control"] == "no-store"
    assert client.request("GET", "/api/v1/jobs/424242/arguments", token=TOKEN).status == 404

    assert client.sign_in() == 303
    assert f'href="/api/v1/jobs/{job_id}/arguments"' in client.get(f"/jobs/{job_id}").text
    assert client.get(f"/api/v1/jobs/{job_id}/arguments").json == whole


def test_arguments_that_fit_come_whole_and_one_character_more_is_cut(client, jobs):
    room = MAX_SHOWN_CHARS - len('{"args": [""], "kwargs": {}}')
    fits, too_long = jobs.todo(args=("a" * room,)), jobs.todo(args=("a" * (room + 1),))
    whole = client.get(f"/api/v1/jobs/{fits}").json
    assert (whole["args"], whole["kwargs"], whole["arguments_preview"]) == (["a" * room], {}, None)
    cut = client.get(f"/api/v1/jobs/{too_long}").json
    assert cut["args"] is None and cut["arguments_preview"].endswith(
        f"… [cut: 1 more characters, {MAX_SHOWN_CHARS + 1:,} in all]"
    )


@pytest.mark.parametrize("job_id", ["424242", str(2**63 - 1), str(2**63), "99999999999999999999999"])
def test_unknown_job_is_404(client, document, job_id):
    answer = client.get(f"/api/v1/jobs/{job_id}")
    assert answer.status == 404 and "no job with id" in answer.json["error"]
    assert client.get(f"/jobs/{job_id}").status == 404


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"status": "lost"}, "unknown status 'lost'"),
        ({"limit": "0"}, "limit must be a whole number from 1 to 500"),
        ({"limit": "many"}, "limit must be a whole number"),
        ({"cursor": "-1"}, "cursor must be a whole number"),
        ({"queue": "a\x00b"}, "NUL character"),
    ],
)
def test_bad_parameters_are_400_with_a_message(client, query, message):
    answer = client.get("/api/v1/jobs", **query)
    assert answer.status == 400 and message in answer.json["error"]
    assert client.get("/jobs", **query).status == 400


def test_stats_workers_and_locks(client, jobs, document):
    running = jobs.doing("tasks.slow", lock="printer")
    waiting = [jobs.todo(queue="busy", lock="printer") for _ in range(3)]
    jobs.succeeded()

    stats = client.get("/api/v1/stats")
    assert_matches_document(document, "/stats", "get", stats)
    counts = {(count["queue"], count["status"]): count["jobs"] for count in stats.json["counts"]}
    assert counts == {("busy", "doing"): 1, ("busy", "todo"): 3, ("finishing-succeeded", "succeeded"): 1}
    assert len(stats.json["throughput"]) == 60 and stats.json["throughput"][-1]["succeeded"] == 1

    workers = client.get("/api/v1/workers")
    assert_matches_document(document, "/workers", "get", workers)
    (worker,) = workers.json["workers"]
    assert (worker["hostname"], worker["pid"], worker["current_job_id"]) == ("test-host", 4242, running)

    locks = client.get("/api/v1/locks")
    assert_matches_document(document, "/locks", "get", locks)
    assert locks.json["locks"] == [
        {"lock": "printer", "running_job_id": running, "waiting": len(waiting),
         "oldest_waiting_s": locks.json["locks"][0]["oldest_waiting_s"]}
    ]
    for page in ("/", "/workers", "/locks", "/jobs"):
        assert client.get(page).status == 200


# -- the connection pool ------------------------------------------------------------------------


def admin_backends(dsn: str) -> list[int]:
    """The pids of the admin connections open on the test's database."""
    rows = execute(
        dsn,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'cabbage-admin'",
    )
    return sorted(pid for (pid,) in rows)


def test_requests_beyond_the_pool_wait_for_a_connection_and_never_open_more(db_dsn):
    app = create_app(db_dsn, pool_size=2, pool_wait_s=0.5)
    with closing(psycopg2.connect(db_dsn)) as blocker:
        blocker.cursor().execute("LOCK TABLE cabbage_jobs IN ACCESS EXCLUSIVE MODE")  # every read waits
        for client in serve(app):
            answers: list[Answer] = []
            threads = [threading.Thread(target=lambda: answers.append(client.get("/api/v1/stats"))) for _ in range(5)]
            for thread in threads:
                thread.start()
            wait_for(lambda: len(answers) == 3, 30, "the three requests beyond the pool to give up")
            assert [answer.status for answer in answers] == [503] * 3
            assert all("stayed busy for 0.5 s" in answer.json["error"] for answer in answers)
            assert len(admin_backends(db_dsn)) == 2  # the two lent connections, waiting on the lock
            blocker.rollback()
            for thread in threads:
                thread.join(timeout=30)
            assert [answer.status for answer in answers[3:]] == [200, 200]
            assert len(admin_backends(db_dsn)) == 2  # kept for the next requests


def test_a_request_waits_a_bounded_time_for_a_busy_pool_then_answers_503(db_dsn):
    app = create_app(db_dsn, pool_size=1, pool_wait_s=0.2)
    pool = pool_of(app)
    lent = pool.acquire()  # the pool's only connection, held elsewhere
    for client in serve(app):
        busy = client.get("/api/v1/stats")
        assert busy.status == 503 and busy.json["error"] == (
            "all 1 database connections of this server stayed busy for 0.2 s: try again, "
            "or start cabbage web with a larger --pool-size"
        )
        assert client.get("/").status == 503
        pool.release(lent)
        assert client.get("/api/v1/stats").status == 200


def test_connections_the_database_ended_are_discarded_not_lent_again(db_dsn, jobs):
    app = create_app(db_dsn, pool_size=2)
    for client in serve(app):
        assert client.get("/api/v1/stats").status == 200
        (before,) = admin_backends(db_dsn)
        execute(jobs.dsn, "SELECT pg_terminate_backend(%s)", (before,))  # as a database restart does
        wait_for(lambda: before not in admin_backends(db_dsn), 10, "the admin backend to end")
        assert [client.get(path).status for path in ("/api/v1/stats", "/", "/metrics")] == [200, 200, 200]
        (after,) = admin_backends(db_dsn)
        assert after != before


# -- a database without the schema -----------------------------------------------------------

MARKED_PASSWORD = "Q1w2?Secret/k9+"
READ_PATHS = ["/", "/jobs", "/jobs/1", "/periodic", "/workers", "/locks", "/api/v1/jobs", "/api/v1/jobs/1",
              "/api/v1/stats", "/api/v1/periodic", "/api/v1/workers", "/api/v1/locks"]  # fmt: skip


def with_a_password(dsn: str) -> tuple[str, str]:
    """The DSN and a password it carries, which no answer may show: its own, else one added (a
    server that asks for none, as the local test servers, never reads it)."""
    own = parse_dsn(dsn).get("password")
    return (dsn, own) if own else (make_dsn(dsn, password=MARKED_PASSWORD), MARKED_PASSWORD)


def assert_names_only_the_fix(answer: Answer, message: str, password: str) -> None:
    assert answer.status == 503
    shown = answer.json["error"] if answer.headers["Content-Type"] == "application/json" else answer.text
    assert message in shown.replace("&#39;", "'")
    for leak in ("LINE", "FROM", "does not exist", "relation", password, "dbname", "host="):
        assert leak not in shown, f"{leak!r} shown to a reader"


@pytest.mark.parametrize("path", READ_PATHS)
def test_a_database_without_the_schema_answers_503_naming_the_command_that_fixes_it(empty_dsn, events, path):
    dsn, password = with_a_password(empty_dsn)
    missing = f"database has no cabbage schema, this cabbage needs version {CURRENT_VERSION}: run 'cabbage schema apply'"
    for client in serve(create_app(dsn)):
        assert_names_only_the_fix(client.get(path), missing, password)
    (failed,) = [event for event in events if event["event"] == "web_request_failed"]
    assert (failed["error_type"], failed["error"]) == ("SchemaError", missing)


@pytest.mark.parametrize("version, path", [(1, "/api/v1/jobs"), (6, "/jobs"), (7, "/api/v1/periodic")])
def test_an_older_schema_answers_503_naming_its_version_and_the_fix(empty_dsn, version, path):
    # Version 1 lacks the state function, 6 the priority column, 7 the periodic tables.
    dsn, password = with_a_password(empty_dsn)
    apply_schema(dsn, target_version=version)
    older = f"database schema is at version {version}, this cabbage needs {CURRENT_VERSION}: run 'cabbage schema apply'"
    for client in serve(create_app(dsn)):
        assert_names_only_the_fix(client.get(path), older, password)


# -- writing: tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x", TOKEN.upper()])
def test_api_writes_without_the_token_are_401_and_change_nothing(client, jobs, token):
    failed, todo = jobs.failed(), jobs.todo()
    assert client.post(f"/api/v1/jobs/{failed}/retry", token=token).status == 401
    assert client.post(f"/api/v1/jobs/{todo}/cancel", token=token).status == 401
    answer = client.post("/api/v1/jobs/retry", body={"job_ids": [failed]}, token=token)
    assert answer.status == 401 and answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert (jobs.status_of(failed), jobs.status_of(todo)) == (Status.FAILED, Status.TODO)


def test_api_writes_with_the_token(client, jobs, document):
    failed, todo = jobs.failed(), jobs.todo()
    retried = client.post(f"/api/v1/jobs/{failed}/retry", token=TOKEN)
    assert_matches_document(document, "/jobs/{job_id}/retry", "post", retried)
    assert retried.json == {"retried": [failed]} and jobs.status_of(failed) is Status.TODO
    cancelled = client.post("/api/v1/jobs/cancel", body={"job_ids": [todo]}, token=TOKEN)
    assert cancelled.json == {"cancelled": [todo]} and jobs.status_of(todo) is Status.CANCELLED


def test_api_multi_job_writes_are_all_or_nothing(client, jobs, document):
    failed, doing = jobs.failed(), jobs.doing()
    answer = client.post("/api/v1/jobs/retry", body={"job_ids": [failed, doing]}, token=TOKEN)
    assert_matches_document(document, "/jobs/retry", "post", answer)
    assert answer.status == 409 and f"job {doing} is doing" in answer.json["error"]
    assert jobs.status_of(failed) is Status.FAILED

    cancel = client.post(f"/api/v1/jobs/{doing}/cancel", token=TOKEN)
    assert cancel.status == 409 and "belongs to its worker" in cancel.json["error"]
    assert jobs.status_of(doing) is Status.DOING

    for body in ({"job_ids": []}, {"job_ids": [True]}, {"job_ids": ["1"]}, [1], {"ids": [1]}):
        assert client.post("/api/v1/jobs/cancel", body=body, token=TOKEN).status == 400


def test_api_abort_cancels_waiting_jobs_and_asks_the_workers_of_running_ones(client, jobs, document):
    todo, doing, done = jobs.todo(), jobs.doing(), jobs.succeeded()
    assert client.post(f"/api/v1/jobs/{doing}/abort", token=None).status == 401
    assert jobs.store.abort_requests_of(jobs.worker_id) == {}

    answer = client.post("/api/v1/jobs/abort", body={"job_ids": [todo, doing], "by": "alice"}, token=TOKEN)
    assert_matches_document(document, "/jobs/abort", "post", answer)
    assert answer.json == {"cancelled": [todo], "abort_requested": [doing], "aborted_by": "alice"}
    assert (jobs.status_of(todo), jobs.status_of(doing)) == (Status.CANCELLED, Status.DOING)
    assert jobs.store.abort_requests_of(jobs.worker_id) == {doing: "alice"}
    shown = client.get(f"/api/v1/jobs/{doing}").json
    assert shown["aborted_by"] == "alice" and shown["abort_requested_at"] is not None

    by_path = client.post(f"/api/v1/jobs/{doing}/abort", token=TOKEN)
    assert_matches_document(document, "/jobs/{job_id}/abort", "post", by_path)
    assert by_path.json["abort_requested"] == [doing]

    refused = client.post(f"/api/v1/jobs/{done}/abort", body={"by": "bob"}, token=TOKEN)
    assert refused.status == 409 and f"job {done} is succeeded" in refused.json["error"]
    for body in ({"by": ""}, {"by": 7}, {"by": "x" * 201}, {"by": "a\nb"}, ["alice"]):
        assert client.post(f"/api/v1/jobs/{doing}/abort", body=body, token=TOKEN).status == 400, body


def test_the_job_page_aborts_a_running_job_and_shows_who_asked(client, jobs):
    doing = jobs.doing()
    assert 'id="abort"' not in client.get(f"/jobs/{doing}").text, "signed out: no button"
    assert client.post(f"/jobs/{doing}/abort", form={}).status == 401
    assert client.sign_in() == 303
    assert 'id="abort"' in client.get(f"/jobs/{doing}").text
    done = client.post(f"/jobs/{doing}/abort", form={"csrf_token": client.csrf_on_job_page(doing)})
    assert done.status == 303
    page = client.get(f"/jobs/{doing}").text
    assert "abort requested by the admin website" in page and 'id="abort"' not in page
    assert jobs.store.abort_requests_of(jobs.worker_id) == {doing: "the admin website"}


def test_wrong_bearer_tokens_are_throttled_per_address_with_429_and_retry_after(client, jobs, document):
    failed = jobs.failed()
    wrong = [client.post(f"/api/v1/jobs/{failed}/retry", token=f"wrong-token-{number}").status for number in range(5)]
    assert wrong == [401] * 5
    throttled = client.post(f"/api/v1/jobs/{failed}/retry", token=TOKEN)
    assert_matches_document(document, "/jobs/{job_id}/retry", "post", throttled)
    assert throttled.status == 429 and 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert throttled.json["error"].startswith("too many wrong tokens from 127.0.0.1: try again in")
    assert client.post(f"/jobs/{failed}/retry", form={"token": TOKEN}).status == 429  # the form's token field too
    assert client.sign_in() == 429
    assert jobs.status_of(failed) is Status.FAILED


def test_the_throttle_counts_each_client_behind_a_trusted_proxy_apart(db_dsn, jobs):
    failed = jobs.failed()
    app = create_app(db_dsn, token=TOKEN, trust_proxy=True).test_client()

    def retry(client_address: str, token: str) -> int:
        headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": client_address}
        return app.post(f"/api/v1/jobs/{failed}/retry", headers=headers).status_code

    assert [retry("203.0.113.7", "wrong-token") for _ in range(6)] == [401] * 5 + [429]
    assert retry("198.51.100.2", TOKEN) == 200 and jobs.status_of(failed) is Status.TODO


def test_read_only_server_refuses_writes_with_403(read_only_client, jobs):
    failed = jobs.failed()
    assert read_only_client.post(f"/api/v1/jobs/{failed}/retry", token=TOKEN).status == 403
    assert read_only_client.post(f"/jobs/{failed}/retry", form={"token": TOKEN}).status == 403
    assert read_only_client.sign_in() == 403
    page = read_only_client.get(f"/jobs/{failed}").text
    assert "read-only" in page and 'id="retry"' not in page
    assert jobs.status_of(failed) is Status.FAILED


def test_page_writes_need_a_signed_in_session_and_its_csrf_field(client, jobs):
    failed = jobs.failed()
    assert client.post(f"/jobs/{failed}/retry", form={}).status == 401
    assert client.sign_in("wrong") == 401
    assert client.post(f"/jobs/{failed}/retry", form={}).status == 401
    assert 'id="retry"' not in client.get(f"/jobs/{failed}").text
    assert jobs.status_of(failed) is Status.FAILED

    assert client.sign_in() == 303
    csrf = client.csrf_on_job_page(failed)
    assert client.post(f"/jobs/{failed}/retry", form={"csrf_token": "forged"}).status == 403
    assert client.post(f"/jobs/{failed}/retry", form={}).status == 403
    assert jobs.status_of(failed) is Status.FAILED

    done = client.post(f"/jobs/{failed}/retry", form={"csrf_token": csrf})
    assert done.status == 303 and done.headers["Location"].endswith(f"/jobs/{failed}")
    assert jobs.status_of(failed) is Status.TODO
    assert f"job {failed} retried" in client.get(f"/jobs/{failed}").text


def copy_of(client: Client) -> Client:
    """Another browser holding the same cookies, as someone who copied them would."""
    thief = Client(client.base_url)
    for cookie in client.cookies:
        thief.cookies.set_cookie(copy.copy(cookie))
    return thief


def sign_out_form(client: Client) -> dict[str, str]:
    match = re.search(r'action="/logout"[^>]*>\s*<input type="hidden" name="csrf_token" value="([^"]+)"', client.get("/").text)
    assert match, "the page has no sign-out form with a CSRF field"
    return {"csrf_token": match.group(1)}


def test_sign_out_ends_every_session_cookie_issued_before_it(client, jobs):
    failed, todo = jobs.failed(), jobs.todo()
    assert client.sign_in() == 303
    thief, other_browser = copy_of(client), Client(client.base_url)
    assert other_browser.sign_in() == 303
    csrf, other_csrf = client.csrf_on_job_page(failed), other_browser.csrf_on_job_page(todo)

    signed_out = client.post("/logout", form=sign_out_form(client))
    assert signed_out.status == 303 and "sign in" in client.get("/").text

    for holder, job_id, token, verb in ((thief, failed, csrf, "retry"), (other_browser, todo, other_csrf, "cancel")):
        assert holder.post(f"/jobs/{job_id}/{verb}", form={"csrf_token": token}).status == 401
        assert 'id="retry"' not in holder.get(f"/jobs/{failed}").text
    assert (jobs.status_of(failed), jobs.status_of(todo)) == (Status.FAILED, Status.TODO)

    assert client.sign_in() == 303  # signing in again works, with a new session
    assert client.post(f"/jobs/{failed}/retry", form={"csrf_token": client.csrf_on_job_page(failed)}).status == 303
    assert jobs.status_of(failed) is Status.TODO


def test_a_sign_out_without_the_form_field_signs_no_one_out(client, jobs):
    failed = jobs.failed()
    assert client.sign_in() == 303
    stranger = Client(client.base_url)
    assert stranger.post("/logout", form={}).status == 303  # another site's form: no session, no field
    assert copy_of(client).post("/logout", form={}).status == 303  # the cookie, but no CSRF field
    assert client.post(f"/jobs/{failed}/retry", form={"csrf_token": client.csrf_on_job_page(failed)}).status == 303


def test_a_form_may_carry_the_token_instead_of_a_session(client, jobs):
    todo = jobs.todo()
    assert client.post(f"/jobs/{todo}/cancel", form={"token": "nope"}).status == 401
    assert client.post(f"/jobs/{todo}/cancel", form={"token": TOKEN}).status == 303
    assert jobs.status_of(todo) is Status.CANCELLED


def test_sign_in_only_returns_to_local_pages(client):
    answer = client.post("/login", form={"token": TOKEN, "next": "//evil.example/"})
    assert answer.status == 303 and answer.headers["Location"] in ("/", "http://" + client.base_url.split("//")[1] + "/")


# -- hostile input ------------------------------------------------------------------------------


def test_html_in_job_fields_and_filters_is_shown_as_text(client, jobs):
    job_id = jobs.failed(HTML_ATTACK, args=(HTML_ATTACK,), lock=HTML_ATTACK)
    for page in (f"/jobs/{job_id}", "/jobs", "/locks"):
        text = client.get(page).text
        assert "<script>" not in text, page
    assert "&lt;script&gt;alert(" in client.get(f"/jobs/{job_id}").text

    filtered = client.get("/jobs", lock=HTML_ATTACK, queue=HTML_ATTACK)
    assert filtered.status == 200 and "<script>" not in filtered.text
    assert 'value="&#34;&gt;&lt;script&gt;' in filtered.text
    assert client.get(f"/api/v1/jobs/{job_id}").json["lock"] == HTML_ATTACK  # data unchanged, only shown safely


def test_sql_in_filters_is_a_value_and_changes_nothing(client, jobs):
    jobs.todo(lock=SQL_ATTACK)
    jobs.todo()
    for name in ("queue", "task", "lock"):
        answer = client.get("/api/v1/jobs", **{name: "x' OR '1'='1"})
        assert answer.status == 200 and answer.json["jobs"] == []
        assert client.get("/jobs", **{name: SQL_ATTACK}).status == 200
    assert [job["lock"] for job in client.get("/api/v1/jobs", lock=SQL_ATTACK).json["jobs"]] == [SQL_ATTACK]
    assert count_jobs(jobs.dsn) == 2


# -- property-based: the API against its own document --------------------------------------------


def parameter_values(schema: dict) -> st.SearchStrategy[str]:
    """Values for a parameter: mostly valid ones from its schema, else strings of any kind."""
    anything = st.sampled_from([SQL_ATTACK, HTML_ATTACK, "\x00", "a\x00b", "-1", "1e3", "\u0663", " 1", ""]) | st.text(max_size=40)
    if "enum" in schema:
        valid = st.sampled_from(schema["enum"])
    elif schema.get("type") == "integer":
        valid = st.integers(schema.get("minimum", -(2**64)), schema.get("maximum", 2**64)).map(str)
        anything = anything | st.integers(-(2**70), 2**70).map(str)
    else:
        return anything
    # One branch in four is invalid, so most requests get past the first check to the rest.
    return st.one_of(valid, valid, valid, anything)


def operation_requests(document: dict, path: str, method: str) -> st.SearchStrategy[tuple[str, Any, str | None]]:
    """(URL path with query, JSON body, token) for one operation of the document."""
    parameters = document["components"]["parameters"]
    operation = document["paths"][path][method]
    declared = [parameters[reference["$ref"].rsplit("/", 1)[1]] for reference in operation.get("parameters", [])]
    query = st.fixed_dictionaries({}, optional={p["name"]: parameter_values(p["schema"]) for p in declared if p["in"] == "query"})
    in_path = st.fixed_dictionaries(
        {p["name"]: parameter_values(p["schema"]).filter(lambda value: value.isascii() and value.isdigit())
         for p in declared if p["in"] == "path"}
    )
    body: st.SearchStrategy[Any] = st.none()
    if "requestBody" in operation:
        job_ids = st.lists(st.integers(-5, 2**64) | st.text(max_size=5) | st.booleans(), max_size=4)
        body = st.fixed_dictionaries({"job_ids": job_ids}) | st.lists(st.integers()) | st.none()
    token = st.sampled_from([None, TOKEN, "wrong"]) if "security" in operation else st.none()

    def url(path_args: dict, query_args: dict) -> str:
        concrete = path
        for name, value in path_args.items():
            concrete = concrete.replace("{" + name + "}", value)
        encoded = urllib.parse.urlencode(query_args)
        return "/api/v1" + concrete + (f"?{encoded}" if encoded else "")

    return st.tuples(st.builds(url, in_path, query), body, token)


def all_operations() -> list[tuple[str, str]]:
    from cabbage.web.openapi import build_document

    return [(path, method) for path, methods in build_document()["paths"].items() for method in methods]


@pytest.mark.parametrize(("path", "method"), all_operations())
def test_the_api_answers_generated_requests_within_its_document(client, jobs, document, path, method):
    for number in range(2):
        jobs.failed(HTML_ATTACK, lock=f"L{number}")
        jobs.todo(lock=f"L{number}")
    jobs.doing()
    jobs_before = count_jobs(jobs.dsn)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(request=operation_requests(document, path, method))
    def answers_within_document(request: tuple) -> None:
        url, body, token = request
        answer = client.request(method.upper(), url, body=body, token=token)
        assert answer.status < 500, f"{method.upper()} {url} -> {answer.status}: {answer.body[:300]!r}"
        assert_matches_document(document, path, method, answer)

    answers_within_document()
    assert count_jobs(jobs.dsn) == jobs_before  # writes may change statuses, never add or delete jobs


# -- periodic schedules ---------------------------------------------------------------------------


def test_periodic_schedules_with_their_last_and_next_ticks(client, db_dsn, document):
    from cabbage.periodic import PeriodicSchedule, PeriodicTick
    from cabbage.postgres import PostgresJobStore

    empty = client.get("/api/v1/periodic")
    assert_matches_document(document, "/periodic", "get", empty)
    assert empty.json["schedules"] == []
    assert "No periodic schedule was declared" in client.get("/periodic").text

    store = PostgresJobStore(db_dsn)
    try:
        report = PeriodicSchedule("proj.tasks.report", "*/5 * * * *", "Europe/Paris", periodic_id="<b>often</b>")
        store.declare_periodic_schedules([report, PeriodicSchedule("proj.tasks.clean", "0 3 * * *")])
        tick_at = datetime.datetime(2026, 1, 1, 12, 5, tzinfo=datetime.timezone.utc)
        job = NewJob("default", report.task_name, scheduled_at=tick_at)
        (recorded,) = store.record_periodic_ticks([PeriodicTick(*report.key, tick_at, job)])
        skipped_at = datetime.datetime(2026, 1, 1, 3, 0, tzinfo=datetime.timezone.utc)
        store.record_periodic_ticks([PeriodicTick("proj.tasks.clean", "", skipped_at, None, skipped_ticks=4)])
    finally:
        store.close()

    answer = client.get("/api/v1/periodic")
    assert_matches_document(document, "/periodic", "get", answer)
    clean, often = answer.json["schedules"]
    assert (often["cron"], often["timezone"], often["last_tick"]["job_id"]) == ("*/5 * * * *", "Europe/Paris", recorded.job_id)
    assert (clean["last_tick"]["job_id"], clean["last_tick"]["skipped_ticks"]) == (None, 4)
    now = datetime.datetime.fromisoformat(answer.json["database_now"])
    assert now < datetime.datetime.fromisoformat(often["next_tick_at"]) <= now + datetime.timedelta(minutes=5)

    page = client.get("/periodic").text
    assert "&lt;b&gt;often&lt;/b&gt;" in page and "<b>often</b>" not in page  # shown as text
    assert f'href="/jobs/{recorded.job_id}"' in page and "2026-01-01 12:05:00 UTC" in page
    assert "(4 skipped)" in page and 'href="/periodic"' in page
