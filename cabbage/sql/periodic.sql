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
-- Records each due tick once with its job, in one transaction (cabbage_record_periodic_ticks_v1:
-- the unique tick, the database clock); returns the ticks this call recorded.
SELECT * FROM cabbage_record_periodic_ticks_v1(%(ticks)s::jsonb);

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
