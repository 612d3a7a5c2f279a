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
-- that has a new job at the head of its line, once per queue. When a todo job holds the queueing
-- lock of any of them, inserts none and answers, for each such job (by its 1-based position),
-- the waiting job's id instead (a racing defer is refused by the unique index).
WITH waiting AS (
    SELECT k.position, held.id AS waiting_job_id
      FROM json_array_elements_text(%(queueing_locks)s::json) WITH ORDINALITY AS k(queueing_lock, position)
      JOIN cabbage_jobs AS held ON held.queueing_lock = k.queueing_lock AND held.status = 'todo'
), new_jobs AS (
    INSERT INTO cabbage_jobs (queue, task_name, args, kwargs, lock, scheduled_at, max_attempts, priority, queueing_lock)
    SELECT j.queue, j.task_name, j.args::jsonb, j.kwargs::jsonb, j.lock,
           coalesce(j.scheduled_at::timestamptz,
                    -- Months are added in UTC, whatever the session's TimeZone.
                    ((now() AT TIME ZONE 'UTC') + make_interval(months => coalesce(j.months::integer, 0)))
                        AT TIME ZONE 'UTC' + make_interval(secs => coalesce(j.seconds::double precision, 0))),
           j.max_attempts::integer, j.priority::integer, j.queueing_lock
      FROM ROWS FROM (json_array_elements_text(%(queues)s::json),
                      json_array_elements_text(%(task_names)s::json),
                      json_array_elements(%(args)s::json),
                      json_array_elements(%(kwargs)s::json),
                      json_array_elements_text(%(locks)s::json),
                      json_array_elements_text(%(scheduled_at)s::json),
                      json_array_elements_text(%(months)s::json),
                      json_array_elements_text(%(seconds)s::json),
                      json_array_elements_text(%(max_attempts)s::json),
                      json_array_elements_text(%(priorities)s::json),
                      json_array_elements_text(%(queueing_locks)s::json))
           WITH ORDINALITY
           AS j(queue, task_name, args, kwargs, lock, scheduled_at, months, seconds, max_attempts, priority,
                queueing_lock, position)
     WHERE NOT EXISTS (SELECT FROM waiting)
     ORDER BY j.position
    RETURNING id, queue, is_head
), notified AS (
    SELECT count(pg_notify('cabbage_jobs', queue)) AS queues
      FROM (SELECT DISTINCT queue FROM new_jobs WHERE is_head) AS woken_queues
)
SELECT id, NULL::bigint AS position, NULL::bigint AS waiting_job_id FROM new_jobs, notified
UNION ALL
SELECT NULL, position, waiting_job_id FROM waiting
ORDER BY id, position;

-- name: defer_calls
-- defer_jobs for the jobs of one defer_many: they differ only in their arguments, so only the
-- arguments come as arrays (one of positional lists, one of keyword objects) and the schedule
-- is computed once (invariant 7). Ids in input order (invariant 2); one notification per queue.
-- When a todo job holds their queueing lock, inserts none and answers that job's id instead.
WITH schedule AS MATERIALIZED (
    SELECT coalesce(%(scheduled_at)s::timestamptz,
                    -- Months are added in UTC, whatever the session's TimeZone.
                    ((now() AT TIME ZONE 'UTC') + make_interval(months => coalesce(%(months)s::integer, 0)))
                        AT TIME ZONE 'UTC' + make_interval(secs => coalesce(%(seconds)s::double precision, 0)))
           AS scheduled_at
), waiting AS (
    SELECT held.id AS waiting_job_id
      FROM cabbage_jobs AS held
     WHERE held.queueing_lock = %(queueing_lock)s AND held.status = 'todo'
), new_jobs AS (
    INSERT INTO cabbage_jobs (queue, task_name, args, kwargs, lock, scheduled_at, max_attempts, priority, queueing_lock)
    SELECT %(queue)s, %(task_name)s, j.args::jsonb, j.kwargs::jsonb, %(lock)s, schedule.scheduled_at,
           %(max_attempts)s::integer, %(priority)s::integer, %(queueing_lock)s
      FROM schedule,
           ROWS FROM (json_array_elements(%(args)s::json), json_array_elements(%(kwargs)s::json))
           WITH ORDINALITY AS j(args, kwargs, position)
     WHERE NOT EXISTS (SELECT FROM waiting)
     ORDER BY j.position
    RETURNING id, queue, is_head
), notified AS (
    SELECT count(pg_notify('cabbage_jobs', queue)) AS queues
      FROM (SELECT DISTINCT queue FROM new_jobs WHERE is_head) AS woken_queues
)
SELECT id, NULL::bigint AS waiting_job_id FROM new_jobs, notified
UNION ALL
SELECT NULL, waiting_job_id FROM waiting
ORDER BY id;

-- name: defer_job
-- Inserts one job through cabbage_defer_job_v2, whose INSERT is planned once per session: it
-- places the job in its lock's line (invariant 2), schedules it on the database clock
-- (invariant 7) and wakes the idle workers of its queue when it heads its line. One row: the
-- new job's id, or, when a todo job holds its queueing lock, none and that job's id.
SELECT job_id, waiting_job_id
  FROM cabbage_defer_job_v2(%(queue)s, %(task_name)s, %(args)s::jsonb, %(kwargs)s::jsonb, %(lock)s,
                            %(scheduled_at)s::timestamptz, %(months)s::integer,
                            %(seconds)s::double precision, %(max_attempts)s::integer,
                            %(priority)s::integer, %(queueing_lock)s);

-- name: open_defer_savepoint
-- Sent with a defer that joins the caller's transaction (connection=), in the same round trip:
-- a database refusal of the defer then undoes the defer alone (undo_defer).
SAVEPOINT cabbage_defer;

-- name: release_defer_savepoint
-- After a defer in the caller's transaction went through: its rows stay in that transaction,
-- to commit or roll back with the caller's own.
RELEASE SAVEPOINT cabbage_defer;

-- name: undo_defer
-- After a defer in the caller's transaction was refused: back to the savepoint, then without it,
-- so the caller's transaction is usable again, as it was before the defer.
ROLLBACK TO SAVEPOINT cabbage_defer;
RELEASE SAVEPOINT cabbage_defer;

-- name: prepare_worker_statements
-- The worker's statements, prepared once per session: the server then neither parses nor plans
-- them on each call (about a tenth of a job's time on the server for the claim and the finish;
-- measured in docs/performance.md). Sent on a connection's first claim, finish or look at the
-- next due job.
--
-- cabbage_claim_jobs: up to $3 due head jobs of queues $2 (NULL: all) for worker $1, claimed
-- atomically, the first started and the rest reserved (all started with $4), the highest
-- priority first, then in (scheduled_at, id) order: cabbage_claim_jobs_v3 of migration 0010
-- keeps its plans on the claimable partial indexes (invariants 1, 3, 4, 6).
--
-- cabbage_finish_job: how an attempt ended, fenced by its owner (invariant 5), recorded with
-- the attempt, and with a next job id $9, the start of that reserved job in the same round
-- trip. One row: whether the attempt was finished, then the started job's columns (NULL: none).
--
-- cabbage_finish_and_claim: the same finish, then a claim of up to $10 jobs of queues $9 (NULL:
-- all) in the same round trip. Rows: whether the attempt was finished, then the columns of each
-- claimed job; one row of NULL columns when there is none.
--
-- Both finishes are cabbage_finish_job_v4 of migration 0009.
--
-- cabbage_finish_jobs: the outcomes of several attempts of worker $1, each fenced by its own
-- attempt, then a claim of up to $10 jobs of queues $9, all started, in one round trip and one
-- commit (cabbage_finish_jobs_v1 of migration 0010). Rows: the ids finished, then the columns
-- of each claimed job; one row of NULL columns when there is none.
--
-- cabbage_seconds_until_next_due: how long until the earliest todo head job of queues $1 (NULL:
-- all) is due, on the database clock (invariant 7); negative when one is overdue, NULL when none
-- waits. An idle worker waits for a notification no longer than that (cabbage/taking.py), so a
-- scheduled job starts when it is due rather than at the next poll. It walks the claimable
-- indexes one priority level at a time, as the claim does (migration 0007): a level's first
-- entry is its earliest job, so it costs one probe per level in use (per queue asked for), never
-- one per job waiting, however many are scheduled for later (invariant 6). The walk starts above
-- the highest priority an integer holds.
--
-- DEALLOCATE first: a PREPARE that failed half-way (a schema being migrated) may have left the
-- first statement behind, and preparing it again would fail.
DEALLOCATE ALL;
PREPARE cabbage_claim_jobs (bigint, text[], integer, boolean) AS
    SELECT * FROM cabbage_claim_jobs_v3($1, $2, $3, $4);
PREPARE cabbage_finish_job (bigint, bigint, integer, cabbage_job_status, double precision,
                            text, text, text, bigint) AS
    SELECT result.finished, (result.job).*
      FROM cabbage_finish_job_v4($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, 0) AS result;
PREPARE cabbage_finish_and_claim (bigint, bigint, integer, cabbage_job_status, double precision,
                                  text, text, text, text[], integer) AS
    SELECT result.finished, (result.job).*
      FROM cabbage_finish_job_v4($1, $2, $3, $4, $5, $6, $7, $8, NULL, $9, $10) AS result;
PREPARE cabbage_finish_jobs (bigint, bigint[], integer[], cabbage_job_status[], double precision[],
                             text[], text[], text[], text[], integer) AS
    SELECT result.finished_job_ids, (result.job).*
      FROM cabbage_finish_jobs_v1($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) AS result;
PREPARE cabbage_seconds_until_next_due (text[]) AS
    WITH RECURSIVE every_queue AS (
        SELECT 2147483648 AS priority, NULL::timestamptz AS scheduled_at WHERE $1 IS NULL
        UNION ALL
        SELECT next_level.priority::bigint, next_level.scheduled_at
          FROM every_queue AS level,
               LATERAL (SELECT j.priority, j.scheduled_at
                          FROM cabbage_jobs AS j
                         WHERE j.status = 'todo' AND j.is_head AND j.priority < level.priority
                         ORDER BY j.priority DESC, j.scheduled_at
                         LIMIT 1) AS next_level
    ), each_queue AS (
        SELECT asked.queue, 2147483648 AS priority, NULL::timestamptz AS scheduled_at
          FROM unnest($1) AS asked(queue)
        UNION ALL
        SELECT level.queue, next_level.priority::bigint, next_level.scheduled_at
          FROM each_queue AS level,
               LATERAL (SELECT j.priority, j.scheduled_at
                          FROM cabbage_jobs AS j
                         WHERE j.status = 'todo' AND j.is_head AND j.queue = level.queue
                           AND j.priority < level.priority
                         ORDER BY j.priority DESC, j.scheduled_at
                         LIMIT 1) AS next_level
    )
    SELECT extract(epoch FROM min(level_head.scheduled_at) - now())::double precision
      FROM (SELECT scheduled_at FROM every_queue UNION ALL SELECT scheduled_at FROM each_queue) AS level_head;

-- name: claim_jobs
-- Claims up to %(limit)s due head jobs, all started with %(start_all)s (prepare_worker_statements).
EXECUTE cabbage_claim_jobs(%(worker_id)s, %(queues)s, %(limit)s, %(start_all)s);

-- name: start_job
-- Begins the attempt of a job this worker reserved; nothing when it was reclaimed (invariant 5).
-- The fence is compared as one row, as in cabbage_finish_job_v4, so that the job is found by its
-- primary key rather than among every job the worker holds (a large batch's reservations).
UPDATE cabbage_jobs
   SET attempts = attempts + 1, started_at = clock_timestamp()
 WHERE id = %(job_id)s AND started_at IS NULL
   AND (worker_id, status) IS NOT DISTINCT FROM (%(worker_id)s, 'doing'::cabbage_job_status)
RETURNING *;

-- name: finish_job
-- Records how an attempt ended and, with next_job_id, starts that reserved job
-- (prepare_worker_statements).
EXECUTE cabbage_finish_job(%(job_id)s, %(worker_id)s, %(attempt)s, %(status)s, %(retry_in_s)s,
                           %(error_type)s, %(error)s, %(traceback)s, %(next_job_id)s);

-- name: finish_and_claim
-- Records how an attempt ended and claims up to claim_limit jobs of queues
-- (prepare_worker_statements).
EXECUTE cabbage_finish_and_claim(%(job_id)s, %(worker_id)s, %(attempt)s, %(status)s, %(retry_in_s)s,
                                 %(error_type)s, %(error)s, %(traceback)s, %(queues)s, %(claim_limit)s);

-- name: finish_jobs_and_claim
-- Records how several attempts ended, then claims up to claim_limit jobs of queues, all started
-- (prepare_worker_statements).
EXECUTE cabbage_finish_jobs(%(worker_id)s, %(job_ids)s, %(attempts)s, %(statuses)s::cabbage_job_status[],
                            %(retry_in_s)s::double precision[], %(error_types)s::text[], %(errors)s::text[],
                            %(tracebacks)s::text[], %(queues)s, %(claim_limit)s);

-- name: seconds_until_next_due
-- How long until the next job of queues is due, on the database clock (prepare_worker_statements).
EXECUTE cabbage_seconds_until_next_due(%(queues)s);

-- name: held_jobs
-- The jobs a worker holds (doing), in claim order: what a claim that committed while the
-- connection broke left to the worker (started or reserved).
SELECT * FROM cabbage_jobs
 WHERE worker_id = %(worker_id)s AND status = 'doing'
 ORDER BY priority DESC, scheduled_at, id;

-- name: commit_without_waiting
-- Sent before a worker's claim or finish when the store was made with synchronous_commit off:
-- that one transaction commits without waiting for its WAL to reach disk. A database crash
-- can lose the last such commits; the jobs then run again through reclaim (docs/performance.md).
SET LOCAL synchronous_commit = off;

-- name: unstart_jobs
-- Takes back the start of jobs a lost worker had started but never begun (a prefetch): reserved
-- again (started_at NULL), the attempt their start counted unused, so that the reclaim after
-- gives them back to todo without using one (invariant 4). Only jobs still doing and started
-- under that worker change (invariant 5); the attempt history has no row for a start.
UPDATE cabbage_jobs
   SET attempts = attempts - 1, started_at = NULL
 WHERE id = ANY (%(job_ids)s::bigint[]) AND started_at IS NOT NULL
   AND (worker_id, status) IS NOT DISTINCT FROM (%(worker_id)s, 'doing'::cabbage_job_status);

-- name: release_jobs
-- Gives back jobs this worker reserved but did not start: todo again, no attempt used, still
-- at the head of their lines (invariants 2, 4); idle workers of their queues are woken. One
-- whose queueing lock a newer job holds, waiting or given back with it, ends instead: cancelled
-- as superseded (migration 0007). Returns how many the worker no longer holds.
WITH reserved AS (
    SELECT r.id, r.queueing_lock
      FROM cabbage_jobs AS r
     WHERE r.id = ANY (%(job_ids)s::bigint[]) AND r.worker_id = %(worker_id)s
       AND r.status = 'doing' AND r.started_at IS NULL
       FOR UPDATE
), fates AS (
    SELECT reserved.id,
           CASE WHEN reserved.queueing_lock IS NOT NULL THEN
               coalesce((SELECT waiting.id FROM cabbage_jobs AS waiting
                          WHERE waiting.queueing_lock = reserved.queueing_lock AND waiting.status = 'todo'),
                        nullif(max(reserved.id) OVER (PARTITION BY reserved.queueing_lock), reserved.id))
           END AS superseded_by
      FROM reserved
), released AS (
    UPDATE cabbage_jobs AS j
       SET status = CASE WHEN f.superseded_by IS NULL THEN 'todo' ELSE 'cancelled' END::cabbage_job_status,
           worker_id = NULL,
           finished_at = CASE WHEN f.superseded_by IS NOT NULL THEN now() END,
           last_error_type = CASE WHEN f.superseded_by IS NULL THEN j.last_error_type ELSE 'Superseded' END,
           last_error = CASE WHEN f.superseded_by IS NULL THEN j.last_error
                             ELSE cabbage_superseded_error(f.superseded_by) END,
           last_error_traceback = CASE WHEN f.superseded_by IS NULL THEN j.last_error_traceback END
      FROM fates AS f
     WHERE j.id = f.id
    RETURNING j.queue, j.status
), notified AS (
    SELECT count(pg_notify('cabbage_jobs', queue)) AS queues
      FROM (SELECT DISTINCT queue FROM released WHERE status = 'todo') AS released_queues
)
SELECT (SELECT count(*) FROM released) AS released FROM notified;

-- name: prune_finished_jobs
-- Retention: deletes one bounded batch of jobs finished before the cutoff, found through the
-- cabbage_jobs_finished index; SKIP LOCKED: it never waits on a row someone else holds.
DELETE FROM cabbage_jobs
 WHERE id IN (SELECT id
                FROM cabbage_jobs
               WHERE finished_at < now() - make_interval(secs => %(older_than_s)s)
                 AND status = ANY(%(statuses)s::cabbage_job_status[])
               LIMIT %(batch_size)s
                 FOR UPDATE SKIP LOCKED);

-- name: get_job
-- One job by id (inspection).
SELECT * FROM cabbage_jobs WHERE id = %(job_id)s;

-- name: list_attempts
-- A job's attempt history, oldest first: the last 20 attempts, kept by the finish and the
-- reclaim (migration 0007), deleted with the job.
SELECT * FROM cabbage_attempts WHERE job_id = %(job_id)s ORDER BY attempt;

-- name: count_jobs
-- How many jobs each status has, in one queue or all (inspection; statuses absent are zero).
SELECT status, count(*) AS jobs
  FROM cabbage_jobs
 WHERE %(queue)s::text IS NULL OR queue = %(queue)s::text
 GROUP BY status;

-- name: listen_for_jobs
-- Subscribes this session to the notifications of deferred jobs (payload: the queue).
LISTEN cabbage_jobs;

-- name: abort_requests_of
-- The running jobs of a worker whose abort an operator requested (migration 0009), and who
-- asked: what its heartbeat looks for on each beat and on each NOTIFY cabbage_aborts. A table
-- locked by an operator must not hold the heartbeat thread (its next beat would be late): the
-- look gives up after a moment, and the next beat looks again. The two statements are sent as
-- one, so SET LOCAL holds for this look only.
SET LOCAL lock_timeout = '200ms';
SELECT id AS job_id, aborted_by
  FROM cabbage_jobs
 WHERE worker_id = %(worker_id)s AND status = 'doing' AND abort_requested_at IS NOT NULL
 ORDER BY id;

-- name: listen_for_aborts
-- Subscribes this session (a worker's heartbeat connection) to abort requests (payload: the
-- worker id).
LISTEN cabbage_aborts;
