-- The operators' queries: the `cabbage` command, the admin website, its REST API and /metrics.
-- Filters left NULL match everything; every value is a bound parameter, never formatted in.

-- name: admin_list_jobs
-- Jobs newest first, filtered, one page after a keyset cursor on id (never an offset); without
-- the arguments and the traceback, which listings do not show, and the error message cut. Each
-- with its state (cabbage_job_state: a todo job is waiting, scheduled or behind_lock), and for
-- one behind its lock, the head job of the line (waiting_behind_job_id, by the one-head index).
SELECT j.id, j.queue, j.task_name, j.lock, j.status, j.scheduled_at, j.attempts, j.max_attempts, j.worker_id,
       j.created_at, j.started_at, j.finished_at, j.last_error_type,
       left(j.last_error, %(max_chars)s) AS last_error, length(j.last_error) AS last_error_chars,
       NULL AS last_error_traceback, j.priority, j.queueing_lock, j.abort_requested_at, j.aborted_by,
       cabbage_job_state(j.status, j.is_head, j.scheduled_at) AS state,
       CASE WHEN j.status = 'todo' AND NOT j.is_head THEN
            (SELECT head.id FROM cabbage_jobs AS head WHERE head.lock = j.lock AND head.is_head) END
           AS waiting_behind_job_id
  FROM cabbage_jobs AS j
 WHERE (%(status)s::cabbage_job_status IS NULL OR j.status = %(status)s::cabbage_job_status)
   AND (%(queue)s::text IS NULL OR j.queue = %(queue)s::text)
   AND (%(task_name)s::text IS NULL OR j.task_name = %(task_name)s::text)
   AND (%(lock)s::text IS NULL OR j.lock = %(lock)s::text)
   AND (%(before_id)s::bigint IS NULL OR j.id < %(before_id)s::bigint)
 ORDER BY j.id DESC
 LIMIT %(limit)s;

-- name: admin_get_job
-- One job for its page and the API, its arguments (as JSON text), error message and traceback
-- cut here to max_chars each, with their whole lengths: a 100 MB argument never leaves the
-- database. The arguments come whole only when they fit. With its state, as admin_list_jobs.
SELECT j.id, j.queue, j.task_name, j.lock, j.status, j.scheduled_at, j.attempts, j.max_attempts, j.worker_id,
       j.created_at, j.started_at, j.finished_at, j.last_error_type,
       left(j.last_error, %(max_chars)s) AS last_error, length(j.last_error) AS last_error_chars,
       left(j.last_error_traceback, %(max_chars)s) AS last_error_traceback,
       length(j.last_error_traceback) AS last_error_traceback_chars,
       CASE WHEN length(arguments.text) <= %(max_chars)s THEN j.args END AS args,
       CASE WHEN length(arguments.text) <= %(max_chars)s THEN j.kwargs END AS kwargs,
       CASE WHEN length(arguments.text) > %(max_chars)s THEN left(arguments.text, %(max_chars)s) END AS arguments_shown,
       length(arguments.text) AS arguments_chars, j.priority, j.queueing_lock, j.abort_requested_at, j.aborted_by,
       cabbage_job_state(j.status, j.is_head, j.scheduled_at) AS state,
       CASE WHEN j.status = 'todo' AND NOT j.is_head THEN
            (SELECT head.id FROM cabbage_jobs AS head WHERE head.lock = j.lock AND head.is_head) END
           AS waiting_behind_job_id
  FROM cabbage_jobs AS j,
       LATERAL (SELECT jsonb_build_object('args', j.args, 'kwargs', j.kwargs)::text AS text) AS arguments
 WHERE j.id = %(job_id)s;

-- name: admin_list_attempts
-- A job's kept attempts (the last 20), oldest first, each error message and traceback cut to
-- max_chars, with their whole lengths.
SELECT job_id, attempt, worker_id, started_at, finished_at, outcome, error_type,
       left(error, %(max_chars)s) AS error, length(error) AS error_chars,
       left(traceback, %(max_chars)s) AS traceback, length(traceback) AS traceback_chars
  FROM cabbage_attempts
 WHERE job_id = %(job_id)s
 ORDER BY attempt;

-- name: admin_get_job_arguments
-- A job's whole arguments as the JSON text {"args": ..., "kwargs": ...} (the download a
-- signed-in reader asks for; admin_get_job shows the first characters of the same text).
SELECT jsonb_build_object('args', args, 'kwargs', kwargs)::text AS arguments
  FROM cabbage_jobs
 WHERE id = %(job_id)s;

-- name: admin_lock_jobs_for_change
-- Locks the named jobs and reads their status, so a multi-id retry or cancel checks every id
-- before it changes any; in id order, so two operators cannot deadlock each other. With each
-- job's queueing lock and the todo job holding it, if any: a retry must not make a second one.
SELECT j.id, j.status, j.queueing_lock,
       (SELECT waiting.id FROM cabbage_jobs AS waiting
         WHERE waiting.queueing_lock = j.queueing_lock AND waiting.status = 'todo') AS waiting_job_id
  FROM cabbage_jobs AS j
 WHERE j.id = ANY(%(job_ids)s::bigint[])
 ORDER BY j.id
   FOR UPDATE OF j;

-- name: admin_retry_jobs
-- A manual retry: todo again and due now, attempts kept, an earlier abort request forgotten; the
-- triggers put each job back in its lock's line at the place its id gives it (invariant 2). The
-- idle workers of their queues are woken, as by a defer (one behind a busy lock claims nothing).
WITH retried AS (
    UPDATE cabbage_jobs
       SET status = 'todo', scheduled_at = now(), worker_id = NULL, started_at = NULL, finished_at = NULL,
           abort_requested_at = NULL, aborted_by = NULL
     WHERE id = ANY(%(job_ids)s::bigint[])
       AND status IN ('failed', 'cancelled')
    RETURNING id, queue
), notified AS (
    SELECT count(pg_notify('cabbage_jobs', queue)) AS queues FROM (SELECT DISTINCT queue FROM retried) AS retried_queues
)
SELECT retried.id FROM retried, notified;

-- name: admin_retry_jobs_matching
-- Retries every job with the given finished status (failed or cancelled), of one task if named;
-- of those with a queueing lock, only the newest of each, and none whose key a todo job holds
-- (one todo job per queueing lock). The idle workers of their queues are woken.
WITH retried AS (
    UPDATE cabbage_jobs AS j
       SET status = 'todo', scheduled_at = now(), worker_id = NULL, started_at = NULL, finished_at = NULL,
           abort_requested_at = NULL, aborted_by = NULL
     WHERE j.status = %(status)s::cabbage_job_status
       AND j.status IN ('failed', 'cancelled')
       AND (%(task_name)s::text IS NULL OR j.task_name = %(task_name)s::text)
       AND (j.queueing_lock IS NULL
            OR NOT EXISTS (SELECT FROM cabbage_jobs AS other
                            WHERE other.queueing_lock = j.queueing_lock
                              AND (other.status = 'todo'
                                   OR (other.status = j.status AND other.id > j.id
                                       AND (%(task_name)s::text IS NULL OR other.task_name = %(task_name)s::text)))))
    RETURNING j.id, j.queue
), notified AS (
    SELECT count(pg_notify('cabbage_jobs', queue)) AS queues FROM (SELECT DISTINCT queue FROM retried) AS retried_queues
)
SELECT retried.id FROM retried, notified;

-- name: admin_cancel_jobs
-- Cancels jobs still waiting (todo); a doing job is never touched: its worker owns it.
UPDATE cabbage_jobs
   SET status = 'cancelled', finished_at = now()
 WHERE id = ANY(%(job_ids)s::bigint[])
   AND status = 'todo'
RETURNING id;

-- name: admin_abort_jobs
-- Aborts jobs (migration 0009): one waiting (todo), or only reserved by a worker (doing, its
-- attempt not begun: the worker's start finds it gone), is cancelled now; for one whose attempt
-- runs, the request is written (the first one's time and author are kept) and its worker is
-- notified. The rows were locked and checked first (admin_lock_jobs_for_change).
WITH changed AS (
    UPDATE cabbage_jobs
       SET status = CASE WHEN started_at IS NULL OR status = 'todo' THEN 'cancelled' ELSE status END,
           finished_at = CASE WHEN started_at IS NULL OR status = 'todo' THEN now() ELSE finished_at END,
           worker_id = CASE WHEN started_at IS NULL OR status = 'todo' THEN NULL ELSE worker_id END,
           abort_requested_at = coalesce(abort_requested_at, now()),
           aborted_by = coalesce(aborted_by, %(aborted_by)s)
     WHERE id = ANY(%(job_ids)s::bigint[])
       AND status IN ('todo', 'doing')
    RETURNING id, status, worker_id
), notified AS (
    SELECT count(pg_notify('cabbage_aborts', worker_id::text)) AS workers
      FROM (SELECT DISTINCT worker_id FROM changed WHERE status = 'doing') AS running
)
SELECT changed.id, changed.status = 'doing' AS is_running
  FROM changed, notified
 ORDER BY changed.id;

-- name: admin_count_jobs_by_queue_and_status
-- How many jobs each queue holds in each status (overview, stats, /metrics).
SELECT queue, status, count(*) AS jobs
  FROM cabbage_jobs
 GROUP BY queue, status
 ORDER BY queue, status;

-- name: admin_count_todo_jobs_by_state
-- How many todo jobs each queue holds in each state: waiting (due, claimable), scheduled (not
-- due yet), behind_lock (behind the head of their lock's line); on the database clock.
SELECT queue, cabbage_job_state(status, is_head, scheduled_at) AS state, count(*) AS jobs
  FROM cabbage_jobs
 WHERE status = 'todo'
 GROUP BY 1, 2
 ORDER BY 1, 2;

-- name: admin_oldest_waiting_jobs
-- The oldest waiting job of each queue (todo, due, at the head of its line: what a worker would
-- take) and how long it has waited, on the database clock.
SELECT DISTINCT ON (queue) queue, id AS job_id, EXTRACT(EPOCH FROM now() - scheduled_at)::float8 AS waiting_s
  FROM cabbage_jobs
 WHERE status = 'todo' AND is_head AND scheduled_at <= now()
 ORDER BY queue, scheduled_at, id;

-- name: admin_throughput_per_minute
-- Jobs finished in each of the last N minutes (the current one last), by outcome.
SELECT minute, coalesce(finished.succeeded, 0) AS succeeded, coalesce(finished.failed, 0) AS failed,
       coalesce(finished.cancelled, 0) AS cancelled
  FROM generate_series(date_trunc('minute', now()) - make_interval(mins => %(minutes)s - 1),
                       date_trunc('minute', now()), interval '1 minute') AS minute
  LEFT JOIN (SELECT date_trunc('minute', finished_at) AS minute,
                    count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                    count(*) FILTER (WHERE status = 'failed') AS failed,
                    count(*) FILTER (WHERE status = 'cancelled') AS cancelled
               FROM cabbage_jobs
              WHERE finished_at >= date_trunc('minute', now()) - make_interval(mins => %(minutes)s - 1)
              GROUP BY 1) AS finished USING (minute)
 ORDER BY minute;

-- name: admin_count_recently_finished
-- Jobs finished within the window, by task and outcome (/metrics).
SELECT task_name, status AS outcome, count(*) AS jobs
  FROM cabbage_jobs
 WHERE finished_at >= now() - make_interval(secs => %(window_s)s)
 GROUP BY task_name, status
 ORDER BY task_name, status;

-- name: admin_count_workers
-- Registered workers, and those whose heartbeat is younger than the timeout (/metrics).
SELECT count(*) AS registered,
       count(*) FILTER (WHERE last_heartbeat_at > now() - make_interval(secs => %(heartbeat_timeout_s)s)) AS alive
  FROM cabbage_workers;

-- name: admin_list_busy_locks
-- Locks with a running job or jobs waiting in line, busiest first (the locks page).
SELECT lock,
       max(id) FILTER (WHERE status = 'doing') AS running_job_id,
       count(*) FILTER (WHERE status = 'todo') AS waiting,
       EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE status = 'todo'))::float8 AS oldest_waiting_s
  FROM cabbage_jobs
 WHERE status IN ('todo', 'doing') AND lock IS NOT NULL
 GROUP BY lock
HAVING count(*) > 1 OR bool_or(status = 'doing')
 ORDER BY waiting DESC, lock
 LIMIT %(limit)s;

-- name: admin_database_clock
-- A round trip that proves the database answers, and its clock (healthcheck).
SELECT now() AS database_now;
