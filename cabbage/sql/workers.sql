-- The worker queries of the PostgreSQL store: registration, heartbeats, the supervisor's view,
-- and taking jobs back from lost workers (invariant 4). Times are on the database clock.

-- name: register_worker
-- Adds a worker row, heartbeat now, and returns its id.
INSERT INTO cabbage_workers (hostname, pid, queues)
VALUES (%(hostname)s, %(pid)s, %(queues)s::text[])
RETURNING id;

-- name: record_heartbeat
-- Marks a worker alive on the database clock (invariant 7); no row: it was reclaimed.
UPDATE cabbage_workers SET last_heartbeat_at = now() WHERE id = %(worker_id)s RETURNING id;

-- name: list_workers
-- Every worker with its heartbeat age and the attempt it runs, ages on the database clock
-- (invariant 7); a job it only reserved is not its current job.
SELECT w.id AS worker_id, w.hostname, w.pid, w.started_at, w.last_heartbeat_at,
       extract(epoch FROM now() - w.last_heartbeat_at)::double precision AS heartbeat_age_s,
       current_job.id AS current_job_id,
       current_job.task_name AS current_task_name,
       extract(epoch FROM now() - current_job.started_at)::double precision AS current_job_run_s
  FROM cabbage_workers AS w
  LEFT JOIN LATERAL (
        SELECT j.id, j.task_name, j.started_at
          FROM cabbage_jobs AS j
         WHERE j.worker_id = w.id AND j.status = 'doing' AND j.started_at IS NOT NULL
         ORDER BY j.started_at DESC
         LIMIT 1
       ) AS current_job ON true
 ORDER BY w.id;

-- name: reclaim_workers
-- Removes lost workers and takes back what they held, in one statement (invariant 4). The
-- workers are those of %(worker_ids)s (NULL: any) whose heartbeat is older than
-- %(heartbeat_timeout_s)s on the database clock (NULL: whatever its age; invariant 7).
-- A reserved job goes back to todo without using an attempt; a started one to todo (due now)
-- when it has attempts left, else failed; either way with the worker-lost error given
-- (%(error_type)s, %(error)s: cabbage.jobs.JobError.worker_lost), and the attempt is kept as
-- lost in cabbage_attempts. One going back whose queueing lock a newer job holds is cancelled
-- as superseded instead (migration 0007); a started one whose abort was requested ends
-- cancelled as aborted, its attempt kept as aborted (migration 0009). The worker rows
-- are locked first, in id order: of several callers racing, one reclaims each job and the
-- others find nothing, and a worker that beats while waiting for its row lock is not stale
-- any more (the lock's recheck spares it). Doing jobs of these ids whose worker row is already
-- gone (claimed by a worker after it was reclaimed) are taken back too. Workers of
-- %(excluding)s are left alone: a master's own live children, whose heartbeats it knows better.
WITH lost_workers AS (
    DELETE FROM cabbage_workers
     WHERE id IN (SELECT id FROM cabbage_workers
                   WHERE (%(worker_ids)s::bigint[] IS NULL OR id = ANY (%(worker_ids)s::bigint[]))
                     AND id <> ALL (%(excluding)s::bigint[])
                     AND (%(heartbeat_timeout_s)s::double precision IS NULL
                          OR last_heartbeat_at < now() - make_interval(secs => %(heartbeat_timeout_s)s))
                   ORDER BY id
                     FOR UPDATE)
    RETURNING id
), orphaned_workers AS (
    -- Read from this statement's snapshot, so a job claimed meanwhile by a new worker, whose
    -- row this snapshot cannot see, is never mistaken for an orphan when its lock is rechecked.
    SELECT DISTINCT j.worker_id AS id
      FROM cabbage_jobs AS j
     WHERE j.status = 'doing'
       AND (%(worker_ids)s::bigint[] IS NULL OR j.worker_id = ANY (%(worker_ids)s::bigint[]))
       AND j.worker_id <> ALL (%(excluding)s::bigint[])
       AND NOT EXISTS (SELECT FROM cabbage_workers AS w WHERE w.id = j.worker_id)
), held AS (
    SELECT j.id, j.worker_id, j.attempts, j.started_at, j.queueing_lock, j.started_at IS NOT NULL AS was_started,
           j.started_at IS NOT NULL AND j.abort_requested_at IS NOT NULL AS was_aborted,
           cabbage_aborted_error(j.aborted_by) AS aborted_error,
           -- Back to todo: a reserved job, or a started one with attempts left and no abort asked.
           (j.started_at IS NULL
            OR (j.abort_requested_at IS NULL AND (j.max_attempts IS NULL OR j.attempts < j.max_attempts))) AS goes_back
      FROM cabbage_jobs AS j
     WHERE j.status = 'doing'
       AND j.worker_id IN (SELECT id FROM lost_workers UNION ALL SELECT id FROM orphaned_workers)
     ORDER BY j.id
       FOR UPDATE OF j
), fates AS (
    -- A job going back whose queueing lock a newer job holds, waiting or going back with it,
    -- ends instead: cancelled as superseded (migration 0007).
    SELECT held.*,
           CASE WHEN held.goes_back AND held.queueing_lock IS NOT NULL THEN
               coalesce((SELECT waiting.id FROM cabbage_jobs AS waiting
                          WHERE waiting.queueing_lock = held.queueing_lock AND waiting.status = 'todo'),
                        nullif(max(held.id) FILTER (WHERE held.goes_back) OVER (PARTITION BY held.queueing_lock),
                               held.id))
           END AS superseded_by
      FROM held
), reclaimed AS (
    UPDATE cabbage_jobs AS j
       SET status = CASE WHEN f.was_aborted OR f.superseded_by IS NOT NULL THEN 'cancelled'
                         WHEN NOT f.goes_back THEN 'failed'
                         ELSE 'todo' END::cabbage_job_status,
           worker_id = NULL,
           scheduled_at = CASE WHEN f.was_started THEN now() ELSE j.scheduled_at END,
           finished_at = CASE WHEN NOT f.goes_back OR f.superseded_by IS NOT NULL THEN now() END,
           last_error_type = CASE WHEN f.was_aborted THEN 'Aborted'
                                  WHEN f.superseded_by IS NOT NULL THEN 'Superseded'
                                  WHEN f.was_started THEN %(error_type)s ELSE j.last_error_type END,
           last_error = CASE WHEN f.was_aborted THEN f.aborted_error
                             WHEN f.superseded_by IS NOT NULL THEN cabbage_superseded_error(f.superseded_by)
                             WHEN f.was_started THEN %(error)s ELSE j.last_error END,
           last_error_traceback = CASE WHEN f.superseded_by IS NOT NULL OR f.was_started THEN NULL
                                       ELSE j.last_error_traceback END
      FROM fates AS f
     WHERE j.id = f.id
    RETURNING j.id AS job_id, j.task_name, j.queue, j.lock, f.worker_id, j.attempts, j.status, f.was_started
), recorded AS (
    -- A started attempt is kept as lost, with why, or as aborted (the last 20 per job, as the
    -- finish keeps them).
    INSERT INTO cabbage_attempts (job_id, attempt, worker_id, started_at, finished_at, outcome, error_type, error)
    SELECT f.id, f.attempts, f.worker_id, f.started_at, now(),
           CASE WHEN f.was_aborted THEN 'aborted' ELSE 'lost' END::cabbage_attempt_outcome,
           CASE WHEN f.was_aborted THEN 'Aborted' ELSE %(error_type)s END,
           CASE WHEN f.was_aborted THEN f.aborted_error ELSE %(error)s END
      FROM fates AS f
     WHERE f.was_started
), trimmed AS (
    DELETE FROM cabbage_attempts AS a
     USING fates AS f
     WHERE f.was_started AND a.job_id = f.id AND a.attempt <= f.attempts - 20
), notified AS (
    -- Jobs back in todo are claimable at once: wake the idle workers of their queues.
    SELECT count(pg_notify('cabbage_jobs', queue)) AS queues
      FROM (SELECT DISTINCT queue FROM reclaimed WHERE status = 'todo') AS todo_queues
)
SELECT reclaimed.* FROM reclaimed, notified ORDER BY job_id;

-- name: connection_limits
-- The server's session limits and how many client sessions it holds now: what a master reports
-- when workers were refused a connection for want of a free slot.
SELECT current_setting('max_connections')::integer AS max_connections,
       current_setting('superuser_reserved_connections')::integer AS reserved_connections,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::integer AS in_use;

-- name: set_lock_timeout
-- How long this session's statements wait for a lock (a master's: a table an operator locked
-- must not freeze its loop); fails with lock_not_available after it.
SELECT set_config('lock_timeout', %(lock_timeout)s, false);
