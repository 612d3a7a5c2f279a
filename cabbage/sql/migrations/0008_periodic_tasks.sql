-- Periodic tasks (ARCHITECTURE section 6): each tick of a schedule becomes one job, whatever the
-- number of supervisors racing to defer it, on the database clock.
--
-- cabbage_periodic_schedules holds the schedules the supervisors run, one row per task and
-- periodic id, upserted by each supervisor at start, on reload and every minute: the admin
-- website and `cabbage periodic list` show them (and their next ticks) without the app's code.
-- first_declared_at is when a supervisor first ran the schedule: its ticks before then were never
-- due. A schedule no supervisor runs any more keeps its row, its last_declared_at growing old.
--
-- cabbage_periodic_ticks holds one row per tick recorded: deferred (job_id), or the marker that
-- skipped_ticks ticks up to tick_at were skipped, missed by more than the schedule's catch-up
-- window while no supervisor ran (so the skip is logged once, by the supervisor that recorded it).
-- The primary key cabbage_periodic_ticks_once_per_tick is the rule: one row per task, periodic
-- id and tick. No foreign key to cabbage_jobs: retention deletes finished jobs, and the tick must
-- stay recorded. The table stays small: ticks older than a day are pruned (prune_periodic_ticks),
-- except each schedule's newest, and cabbage_record_periodic_ticks_v1 records only ticks newer
-- than that one, so a pruned tick can never be recorded (nor deferred) again.
CREATE TABLE cabbage_periodic_schedules (
    task_name         text             NOT NULL,
    periodic_id       text             NOT NULL DEFAULT '',
    cron              text             NOT NULL,
    timezone          text             NOT NULL DEFAULT 'UTC',
    catch_up_s        double precision NOT NULL,
    first_declared_at timestamptz      NOT NULL DEFAULT now(),
    last_declared_at  timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT cabbage_periodic_schedules_one_per_task_and_id PRIMARY KEY (task_name, periodic_id)
);

CREATE TABLE cabbage_periodic_ticks (
    task_name     text        NOT NULL,
    periodic_id   text        NOT NULL DEFAULT '',
    tick_at       timestamptz NOT NULL,
    job_id        bigint,
    skipped_ticks integer,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cabbage_periodic_ticks_once_per_tick PRIMARY KEY (task_name, periodic_id, tick_at),
    CONSTRAINT cabbage_periodic_ticks_skipped_have_no_job CHECK (skipped_ticks IS NULL OR (job_id IS NULL AND skipped_ticks > 0))
);

-- Records a batch of ticks in one transaction and returns the rows recorded by this call.
-- p_ticks is a JSON array of {task_name, periodic_id, tick_at, skipped_ticks} objects, with the
-- job's queue, args, kwargs, lock and max_attempts for a tick to defer (skipped_ticks null).
--
-- A tick is recorded when it is due on the database clock (invariant 7) and newer than every
-- tick of its schedule already recorded; INSERT ... ON CONFLICT DO NOTHING makes a caller racing
-- another for the same tick wait for it and then record nothing. The tick's job is inserted by
-- cabbage_defer_job_v1 (its lock's line, invariant 2; the NOTIFY of its queue), due at the tick,
-- in the same transaction: no tick row without its job, no job twice for a tick. Ticks are taken
-- in key order, so that two supervisors recording overlapping batches never deadlock.
CREATE FUNCTION cabbage_record_periodic_ticks_v1(p_ticks jsonb)
    RETURNS SETOF cabbage_periodic_ticks
    LANGUAGE plpgsql
AS $$
DECLARE
    tick record;
    recorded cabbage_periodic_ticks;
BEGIN
    FOR tick IN
        SELECT t.*
          FROM jsonb_to_recordset(p_ticks) AS t(task_name text, periodic_id text, tick_at timestamptz,
                                                skipped_ticks integer, queue text, args jsonb, kwargs jsonb,
                                                lock text, max_attempts integer)
         ORDER BY t.task_name, t.periodic_id, t.tick_at
    LOOP
        CONTINUE WHEN tick.tick_at > now() OR EXISTS (
            SELECT FROM cabbage_periodic_ticks AS known
             WHERE known.task_name = tick.task_name AND known.periodic_id = tick.periodic_id
               AND known.tick_at >= tick.tick_at);
        INSERT INTO cabbage_periodic_ticks (task_name, periodic_id, tick_at, skipped_ticks)
        VALUES (tick.task_name, tick.periodic_id, tick.tick_at, tick.skipped_ticks)
        ON CONFLICT ON CONSTRAINT cabbage_periodic_ticks_once_per_tick DO NOTHING
        RETURNING * INTO recorded;
        CONTINUE WHEN NOT FOUND;  -- another supervisor recorded it first
        IF tick.skipped_ticks IS NULL THEN
            recorded.job_id := cabbage_defer_job_v1(tick.queue, tick.task_name, tick.args, tick.kwargs, tick.lock,
                                                    tick.tick_at, NULL, NULL, tick.max_attempts);
            UPDATE cabbage_periodic_ticks AS t
               SET job_id = recorded.job_id
             WHERE t.task_name = tick.task_name AND t.periodic_id = tick.periodic_id AND t.tick_at = tick.tick_at;
        END IF;
        RETURN NEXT recorded;
    END LOOP;
END
$$;
