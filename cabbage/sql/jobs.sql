-- The job queries of the PostgreSQL store (cabbage/postgres.py): defer, claim, start, finish,
-- release, inspect. The triggers of the migrations keep each lock's line (is_head); the
-- statements that add or free jobs NOTIFY the idle workers themselves.
--
-- Every job-returning query returns whole rows (j.*): postgres.py maps columns by name.

-- started_at and finished_at are clock_timestamp(), not now() (the transaction's start):
-- one lock's attempts then never seem to overlap in the rows when they did not in fact.
--
-- name: defer_jobs
-- Inserts many jobs in one statement from one JSON array per column, and returns their ids in
-- input order: ids are drawn in that order, and a lock's line is ordered by id (invariant 2).
-- Schedules count from the database clock (invariant 7). Wakes the idle workers of each queue
-- that has a new job at the head of its line, once per queue.
WITH new_jobs AS (
    INSERT INTO cabbage_jobs (queue, task_name, args, kwargs, lock, scheduled_at, max_attempts)
    SELECT j.queue, j.task_name, j.args::jsonb, j.kwargs::jsonb, j.lock,
           coalesce(j.scheduled_at::timestamptz,
                    -- Months are added in UTC, whatever the session's TimeZone.
                    ((now() AT TIME ZONE 'UTC') + make_interval(months => coalesce(j.months::integer, 0)))
                        AT TIME ZONE 'UTC' + make_interval(secs => coalesce(j.seconds::double precision, 0))),
           j.max_attempts::integer
      FROM ROWS FROM (json_array_elements_text(%(queues)s::json),
                      json_array_elements_text(%(task_names)s::json),
                      json_array_elements(%(args)s::json),
                      json_array_elements(%(kwargs)s::json),
                      json_array_elements_text(%(locks)s::json),
                      json_array_elements_text(%(scheduled_at)s::json),
                      json_array_elements_text(%(months)s::json),
                      json_array_elements_text(%(seconds)s::json),
                      json_array_elements_text(%(max_attempts)s::json))
           WITH ORDINALITY
           AS j(queue, task_name, args, kwargs, lock, scheduled_at, months, seconds, max_attempts, position)
     ORDER BY j.position
    RETURNING id, queue, is_head
), notified AS (
    SELECT count(pg_notify('cabbage_jobs', queue)) AS queues
      FROM (SELECT DISTINCT queue FROM new_jobs WHERE is_head) AS woken_queues
)
SELECT id FROM new_jobs, notified ORDER BY id;

-- name: defer_calls
-- defer_jobs for the jobs of one defer_many: they differ only in their arguments, so only the
-- arguments come as arrays (one of positional lists, one of keyword objects) and the schedule
-- is computed once (invariant 7). Ids in input order (invariant 2); one notification per queue.
WITH schedule AS MATERIALIZED (
    SELECT coalesce(%(scheduled_at)s::timestamptz,
                    -- Months are added in UTC, whatever the session's TimeZone.
                    ((now() AT TIME ZONE 'UTC') + make_interval(months => coalesce(%(months)s::integer, 0)))
                        AT TIME ZONE 'UTC' + make_interval(secs => coalesce(%(seconds)s::double precision, 0)))
           AS scheduled_at
), new_jobs AS (
    INSERT INTO cabbage_jobs (queue, task_name, args, kwargs, lock, scheduled_at, max_attempts)
    SELECT %(queue)s, %(task_name)s, j.args::jsonb, j.kwargs::jsonb, %(lock)s, schedule.scheduled_at,
           %(max_attempts)s::integer
      FROM schedule,
           ROWS FROM (json_array_elements(%(args)s::json), json_array_elements(%(kwargs)s::json))
           WITH ORDINALITY AS j(args, kwargs, position)
     ORDER BY j.position
    RETURNING id, queue, is_head
), notified AS (
    SELECT count(pg_notify('cabbage_jobs', queue)) AS queues
      FROM (SELECT DISTINCT queue FROM new_jobs WHERE is_head) AS woken_queues
)
SELECT id FROM new_jobs, notified ORDER BY id;

-- name: defer_job
-- Inserts one job through cabbage_defer_job, whose INSERT is planned once per session: it
-- places the job in its lock's line (invariant 2), schedules it on the database clock
-- (invariant 7) and wakes the idle workers of its queue when it heads its line.
SELECT cabbage_defer_job(%(queue)s, %(task_name)s, %(args)s::jsonb, %(kwargs)s::jsonb, %(lock)s,
                         %(scheduled_at)s::timestamptz, %(months)s::integer,
                         %(seconds)s::double precision, %(max_attempts)s::integer);

-- name: claim_job
-- claim_jobs for one job, the worker's usual claim, in a cheaper plan: the due head job first
-- in (scheduled_at, id) order, locked with SKIP LOCKED through the claimable partial indexes
-- (invariants 1, 3, 6), and started at once (attempt + 1).
UPDATE cabbage_jobs
   SET status = 'doing', worker_id = %(worker_id)s, attempts = attempts + 1, started_at = clock_timestamp()
 WHERE id = (SELECT id
               FROM cabbage_jobs
              WHERE status = 'todo' AND is_head AND scheduled_at <= now()
                AND (%(queues)s::text[] IS NULL OR queue = ANY (%(queues)s::text[]))
              ORDER BY scheduled_at, id
              LIMIT 1
                FOR UPDATE SKIP LOCKED)
RETURNING *;

-- name: claim_jobs
-- Claims up to %(limit)s due head jobs in one atomic statement (invariants 1, 3): SKIP LOCKED
-- passes over rows another worker is claiming, and the scan reads the claimable partial
-- indexes only, never finished jobs or jobs waiting behind a busy lock (invariant 6). The
-- first job is started (attempt + 1), the rest only reserved (started_at NULL).
WITH candidates AS (
    SELECT id, scheduled_at
      FROM cabbage_jobs
     WHERE status = 'todo' AND is_head AND scheduled_at <= now()
       AND (%(queues)s::text[] IS NULL OR queue = ANY (%(queues)s::text[]))
     ORDER BY scheduled_at, id
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
), ranked AS (
    SELECT id, row_number() OVER (ORDER BY scheduled_at, id) = 1 AS starts_now
      FROM candidates
), claimed AS (
    UPDATE cabbage_jobs AS j
       SET status = 'doing',
           worker_id = %(worker_id)s,
           attempts = j.attempts + CASE WHEN r.starts_now THEN 1 ELSE 0 END,
           started_at = CASE WHEN r.starts_now THEN clock_timestamp() END
      FROM ranked AS r
     WHERE j.id = r.id
    RETURNING j.*
)
SELECT * FROM claimed ORDER BY scheduled_at, id;

-- name: start_job
-- Begins the attempt of a job this worker reserved; nothing when it was reclaimed (invariant 5).
UPDATE cabbage_jobs
   SET attempts = attempts + 1, started_at = clock_timestamp()
 WHERE id = %(job_id)s AND worker_id = %(worker_id)s AND status = 'doing' AND started_at IS NULL
RETURNING *;

-- name: finish_job
-- Records how an attempt ended, fenced by its owner: job, worker, attempt, started and doing
-- (invariant 5). A retry (todo) stays at the head of its lock's line (invariant 2), due
-- retry_in_s from now on the database clock (invariant 7). With next_job_id, also starts that
-- job if this worker still holds it reserved, in the same round trip. Always one row:
-- whether the attempt was finished, then the started job's columns (NULL: none started).
WITH finished AS (
    UPDATE cabbage_jobs
       SET status = %(status)s::cabbage_job_status,
           worker_id = CASE WHEN %(status)s = 'todo' THEN NULL ELSE worker_id END,
           scheduled_at = CASE WHEN %(status)s = 'todo'
                               THEN now() + make_interval(secs => coalesce(%(retry_in_s)s, 0))
                               ELSE scheduled_at END,
           finished_at = CASE WHEN %(status)s = 'todo' THEN NULL ELSE clock_timestamp() END,
           -- An outcome without an error (a success) keeps the last attempt's error.
           last_error_type = coalesce(%(error_type)s, last_error_type),
           last_error = CASE WHEN %(error_type)s IS NULL THEN last_error ELSE %(error)s END,
           last_error_traceback = CASE WHEN %(error_type)s IS NULL THEN last_error_traceback
                                       ELSE %(traceback)s END
     WHERE id = %(job_id)s AND worker_id = %(worker_id)s AND attempts = %(attempt)s
       AND status = 'doing' AND started_at IS NOT NULL
    RETURNING id
), started AS (
    UPDATE cabbage_jobs
       SET attempts = attempts + 1, started_at = clock_timestamp()
     WHERE id = %(next_job_id)s AND id <> %(job_id)s
       AND worker_id = %(worker_id)s AND status = 'doing' AND started_at IS NULL
    RETURNING *
)
SELECT EXISTS (SELECT FROM finished) AS finished, started.*
  FROM (VALUES (1)) AS one_row
  LEFT JOIN started ON true;

-- name: release_jobs
-- Gives back jobs this worker reserved but did not start: todo again, no attempt used, still
-- at the head of their lines (invariants 2, 4); idle workers of their queues are woken.
WITH released AS (
    UPDATE cabbage_jobs
       SET status = 'todo', worker_id = NULL
     WHERE id = ANY (%(job_ids)s::bigint[]) AND worker_id = %(worker_id)s
       AND status = 'doing' AND started_at IS NULL
    RETURNING queue
), notified AS (
    SELECT count(pg_notify('cabbage_jobs', queue)) AS queues
      FROM (SELECT DISTINCT queue FROM released) AS released_queues
)
SELECT (SELECT count(*) FROM released) AS released FROM notified;

-- name: get_job
-- One job by id (inspection).
SELECT * FROM cabbage_jobs WHERE id = %(job_id)s;

-- name: count_jobs
-- How many jobs each status has, in one queue or all (inspection; statuses absent are zero).
SELECT status, count(*) AS jobs
  FROM cabbage_jobs
 WHERE %(queue)s::text IS NULL OR queue = %(queue)s::text
 GROUP BY status;

-- name: listen_for_jobs
-- Subscribes this session to the notifications of deferred jobs (payload: the queue).
LISTEN cabbage_jobs;
