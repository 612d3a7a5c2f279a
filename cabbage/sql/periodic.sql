-- The periodic tasks' queries (cabbage/postgres.py; list_periodic_schedules also for the admin
-- views): the schedules the supervisors declare, and the ticks recorded once each (migration 8).

-- name: declare_periodic_schedules
-- Upserts the schedules a supervisor runs, from a JSON array, in key order (two supervisors
-- declaring at once never deadlock); a known one keeps its first_declared_at. Database clock.
INSERT INTO cabbage_periodic_schedules AS s (task_name, periodic_id, cron, timezone, catch_up_s)
SELECT d.task_name, d.periodic_id, d.cron, d.timezone, d.catch_up_s
  FROM jsonb_to_recordset(%(schedules)s::jsonb)
       AS d(task_name text, periodic_id text, cron text, timezone text, catch_up_s double precision)
 ORDER BY d.task_name, d.periodic_id
    ON CONFLICT ON CONSTRAINT cabbage_periodic_schedules_one_per_task_and_id
    DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone, catch_up_s = excluded.catch_up_s,
                  last_declared_at = now();

-- name: list_periodic_schedules
-- The database clock, and every declared schedule with its newest tick (read backwards on the
-- primary key, one row per schedule); one row of NULL schedule columns when none is declared.
SELECT clock.database_now, s.task_name, s.periodic_id, s.cron, s.timezone, s.catch_up_s,
       s.first_declared_at, s.last_declared_at, t.tick_at AS last_tick_at, t.job_id AS last_job_id,
       t.skipped_ticks AS last_skipped_ticks, t.recorded_at AS last_recorded_at
  FROM (SELECT now() AS database_now) AS clock
  LEFT JOIN cabbage_periodic_schedules AS s ON true
  LEFT JOIN LATERAL (SELECT *
                       FROM cabbage_periodic_ticks AS t
                      WHERE t.task_name = s.task_name AND t.periodic_id = s.periodic_id
                      ORDER BY t.tick_at DESC
                      LIMIT 1) AS t ON true
 ORDER BY s.task_name, s.periodic_id;

-- name: record_periodic_ticks
-- Records each tick once (the primary key cabbage_periodic_ticks_once_per_tick; a racing caller
-- waits for the other's transaction, then records nothing) when it is due on the database
-- clock (invariant 7) and newer than its schedule's newest tick, in key order, so that two
-- callers never deadlock; returns the rows recorded. The caller's transaction then defers their
-- jobs with the defer statements of jobs.sql and names them (record_periodic_tick_jobs).
-- Not cabbage_record_periodic_ticks_v1 of migration 0008, which inserts the jobs itself through
-- cabbage_defer_job_v1: without their priority and queueing lock.
INSERT INTO cabbage_periodic_ticks AS t (task_name, periodic_id, tick_at, skipped_ticks)
SELECT d.task_name, d.periodic_id, d.tick_at, d.skipped_ticks
  FROM jsonb_to_recordset(%(ticks)s::jsonb)
       AS d(task_name text, periodic_id text, tick_at timestamptz, skipped_ticks integer)
 WHERE d.tick_at <= now()
   AND NOT EXISTS (SELECT FROM cabbage_periodic_ticks AS known
                    WHERE known.task_name = d.task_name AND known.periodic_id = d.periodic_id
                      AND known.tick_at >= d.tick_at)
 ORDER BY d.task_name, d.periodic_id, d.tick_at
    ON CONFLICT ON CONSTRAINT cabbage_periodic_ticks_once_per_tick DO NOTHING
RETURNING t.*;

-- name: record_periodic_tick_jobs
-- Names the job of each tick this transaction recorded, or (its queueing lock refused the job)
-- records the tick as one skipped: a tick row never stays without its job or its skip.
UPDATE cabbage_periodic_ticks AS t
   SET job_id = d.job_id, skipped_ticks = d.skipped_ticks
  FROM jsonb_to_recordset(%(ticks)s::jsonb)
       AS d(task_name text, periodic_id text, tick_at timestamptz, job_id bigint, skipped_ticks integer)
 WHERE (t.task_name, t.periodic_id, t.tick_at) = (d.task_name, d.periodic_id, d.tick_at);

-- name: prune_periodic_ticks
-- Deletes one bounded batch of ticks older than the cutoff, never a schedule's newest (which
-- keeps older ticks from being recorded again); SKIP LOCKED: it never waits on a supervisor.
DELETE FROM cabbage_periodic_ticks AS t
 USING (SELECT old.task_name, old.periodic_id, old.tick_at
          FROM cabbage_periodic_ticks AS old
         WHERE old.tick_at < now() - make_interval(secs => %(older_than_s)s)
           AND EXISTS (SELECT FROM cabbage_periodic_ticks AS newer
                        WHERE newer.task_name = old.task_name AND newer.periodic_id = old.periodic_id
                          AND newer.tick_at > old.tick_at)
         LIMIT %(batch_size)s
           FOR UPDATE SKIP LOCKED) AS doomed
 WHERE (t.task_name, t.periodic_id, t.tick_at) = (doomed.task_name, doomed.periodic_id, doomed.tick_at);
