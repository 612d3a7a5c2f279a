-- The cabbage schema as it stands at version 11: every cabbage_ object, read back from
-- the catalog of a database that ran the migrations (`cabbage schema dump`). Generated, do not
-- edit: the migrations in cabbage/sql/migrations/ are the source, and
-- tests/integration/test_schema.py checks that this is what they build.
-- migration 1: 0001_initial.sql
-- migration 2: 0002_place_in_line_only_when_needed.sql
-- migration 3: 0003_notify_from_the_defer_statements.sql
-- migration 4: 0004_claim_and_finish_functions.sql
-- migration 5: 0005_claim_fetches_by_id.sql
-- migration 6: 0006_finish_and_claim.sql
-- migration 7: 0007_priorities_queueing_locks_and_attempts.sql
-- migration 8: 0008_periodic_tasks.sql
-- migration 9: 0009_abort_running_jobs.sql
-- migration 10: 0010_batched_finishes_and_claims.sql
-- migration 11: 0011_retries_wake_idle_workers.sql

CREATE TYPE cabbage_attempt_outcome AS ENUM ('succeeded', 'failed', 'retried', 'lost', 'aborted');

CREATE TYPE cabbage_job_status AS ENUM ('todo', 'doing', 'succeeded', 'failed', 'cancelled');

CREATE SEQUENCE cabbage_jobs_id_seq AS bigint INCREMENT 1 CACHE 1;

CREATE SEQUENCE cabbage_workers_id_seq AS bigint INCREMENT 1 CACHE 1;

CREATE TABLE cabbage_attempts (
    job_id bigint NOT NULL,
    attempt integer NOT NULL,
    worker_id bigint,
    started_at timestamp with time zone NOT NULL,
    finished_at timestamp with time zone NOT NULL,
    outcome cabbage_attempt_outcome NOT NULL,
    error_type text,
    error text,
    traceback text,
    CONSTRAINT cabbage_attempts_deleted_with_their_job FOREIGN KEY (job_id) REFERENCES cabbage_jobs(id) ON DELETE CASCADE,
    CONSTRAINT cabbage_attempts_one_row_per_attempt PRIMARY KEY (job_id, attempt)
);

CREATE TABLE cabbage_jobs (
    id bigint NOT NULL DEFAULT nextval('cabbage_jobs_id_seq'::regclass),
    queue text NOT NULL DEFAULT 'default'::text,
    task_name text NOT NULL,
    args jsonb NOT NULL DEFAULT '[]'::jsonb,
    kwargs jsonb NOT NULL DEFAULT '{}'::jsonb,
    lock text,
    status cabbage_job_status NOT NULL DEFAULT 'todo'::cabbage_job_status,
    is_head boolean NOT NULL DEFAULT true,
    scheduled_at timestamp with time zone NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer DEFAULT 1,
    worker_id bigint,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    started_at timestamp with time zone,
    finished_at timestamp with time zone,
    last_error_type text,
    last_error text,
    last_error_traceback text,
    priority integer NOT NULL DEFAULT 0,
    queueing_lock text,
    abort_requested_at timestamp with time zone,
    aborted_by text,
    CONSTRAINT cabbage_jobs_args_is_array CHECK ((jsonb_typeof(args) = ANY (ARRAY['array'::text, 'object'::text]))),
    CONSTRAINT cabbage_jobs_attempts_positive CHECK ((attempts >= 0)),
    CONSTRAINT cabbage_jobs_doing_has_worker CHECK (((status <> 'doing'::cabbage_job_status) OR (worker_id IS NOT NULL))),
    CONSTRAINT cabbage_jobs_kwargs_is_object CHECK ((jsonb_typeof(kwargs) = 'object'::text)),
    CONSTRAINT cabbage_jobs_max_attempts_positive CHECK (((max_attempts IS NULL) OR (max_attempts >= 1))),
    CONSTRAINT cabbage_jobs_pkey PRIMARY KEY (id)
);

CREATE TABLE cabbage_periodic_schedules (
    task_name text NOT NULL,
    periodic_id text NOT NULL DEFAULT ''::text,
    cron text NOT NULL,
    timezone text NOT NULL DEFAULT 'UTC'::text,
    catch_up_s double precision NOT NULL,
    first_declared_at timestamp with time zone NOT NULL DEFAULT now(),
    last_declared_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT cabbage_periodic_schedules_one_per_task_and_id PRIMARY KEY (task_name, periodic_id)
);

CREATE TABLE cabbage_periodic_ticks (
    task_name text NOT NULL,
    periodic_id text NOT NULL DEFAULT ''::text,
    tick_at timestamp with time zone NOT NULL,
    job_id bigint,
    skipped_ticks integer,
    recorded_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT cabbage_periodic_ticks_once_per_tick PRIMARY KEY (task_name, periodic_id, tick_at),
    CONSTRAINT cabbage_periodic_ticks_skipped_have_no_job CHECK (((skipped_ticks IS NULL) OR ((job_id IS NULL) AND (skipped_ticks > 0))))
);

CREATE TABLE cabbage_schema_version (
    version integer NOT NULL,
    name text NOT NULL,
    applied_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT cabbage_schema_version_pkey PRIMARY KEY (version)
);

CREATE TABLE cabbage_workers (
    id bigint NOT NULL DEFAULT nextval('cabbage_workers_id_seq'::regclass),
    hostname text NOT NULL DEFAULT ''::text,
    pid integer NOT NULL DEFAULT 0,
    queues text[],
    started_at timestamp with time zone NOT NULL DEFAULT now(),
    last_heartbeat_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT cabbage_workers_pkey PRIMARY KEY (id)
);

CREATE INDEX cabbage_jobs_claimable ON public.cabbage_jobs USING btree (priority DESC, scheduled_at, id) WHERE ((status = 'todo'::cabbage_job_status) AND is_head);

CREATE INDEX cabbage_jobs_claimable_by_queue ON public.cabbage_jobs USING btree (queue, priority DESC, scheduled_at, id) WHERE ((status = 'todo'::cabbage_job_status) AND is_head);

CREATE INDEX cabbage_jobs_finished ON public.cabbage_jobs USING btree (finished_at) WHERE (finished_at IS NOT NULL);

CREATE INDEX cabbage_jobs_held_by_worker ON public.cabbage_jobs USING btree (worker_id) WHERE (status = 'doing'::cabbage_job_status);

CREATE INDEX cabbage_jobs_lock_line ON public.cabbage_jobs USING btree (lock, id) WHERE ((status = 'todo'::cabbage_job_status) AND (lock IS NOT NULL));

CREATE UNIQUE INDEX cabbage_jobs_one_doing_per_lock ON public.cabbage_jobs USING btree (lock) WHERE ((status = 'doing'::cabbage_job_status) AND (lock IS NOT NULL));

CREATE UNIQUE INDEX cabbage_jobs_one_head_per_lock ON public.cabbage_jobs USING btree (lock) WHERE (is_head AND (lock IS NOT NULL));

CREATE UNIQUE INDEX cabbage_jobs_one_todo_per_queueing_lock ON public.cabbage_jobs USING btree (queueing_lock) WHERE ((status = 'todo'::cabbage_job_status) AND (queueing_lock IS NOT NULL));

CREATE INDEX cabbage_workers_by_heartbeat ON public.cabbage_workers USING btree (last_heartbeat_at);

CREATE OR REPLACE FUNCTION public.cabbage_aborted_error(aborted_by text)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE
AS $function$
    SELECT 'aborted by ' || coalesce(nullif(aborted_by, ''), 'an operator')
$function$;

CREATE OR REPLACE FUNCTION public.cabbage_claim_jobs_v1(p_worker_id bigint, p_queues text[], p_limit integer)
 RETURNS SETOF cabbage_jobs
 LANGUAGE plpgsql
AS $function$
BEGIN
    RETURN QUERY SELECT * FROM cabbage_claim_jobs_v2(p_worker_id, p_queues, p_limit);
END
$function$;

CREATE OR REPLACE FUNCTION public.cabbage_claim_jobs_v2(p_worker_id bigint, p_queues text[], p_limit integer)
 RETURNS SETOF cabbage_jobs
 LANGUAGE sql
AS $function$
    SELECT * FROM cabbage_claim_jobs_v3(p_worker_id, p_queues, p_limit, false)
$function$;

CREATE OR REPLACE FUNCTION public.cabbage_claim_jobs_v3(p_worker_id bigint, p_queues text[], p_limit integer, p_start_all boolean)
 RETURNS SETOF cabbage_jobs
 LANGUAGE plpgsql
 SET enable_bitmapscan TO 'off'
 SET enable_hashjoin TO 'off'
 SET enable_mergejoin TO 'off'
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
    -- Levels strictly below this one are looked at; bigint, so that the first look also finds
    -- the highest integer.
    below bigint := 2147483648;
    priority_level integer;
    wanted integer := p_limit;
    claimed integer;
    starts boolean := true;  -- the first job claimed is started, the others reserved (unless p_start_all)
BEGIN
    WHILE wanted > 0 LOOP
        RETURN QUERY
        WITH top_level AS (
            -- The highest level with a claimable head: one probe of the claimable index, or one
            -- of the by-queue index per queue asked for.
            SELECT CASE WHEN p_queues IS NULL THEN
                       (SELECT j.priority FROM cabbage_jobs AS j
                         WHERE j.status = 'todo' AND j.is_head AND j.priority < below
                         ORDER BY j.priority DESC LIMIT 1)
                   ELSE
                       (SELECT max(top.priority)
                          FROM unnest(p_queues) AS asked(queue),
                               LATERAL (SELECT j.priority FROM cabbage_jobs AS j
                                         WHERE j.status = 'todo' AND j.is_head AND j.queue = asked.queue
                                           AND j.priority < below
                                         ORDER BY j.priority DESC LIMIT 1) AS top)
                   END AS priority
        ), candidates AS (
            SELECT j.id, j.scheduled_at
              FROM cabbage_jobs AS j
             WHERE j.status = 'todo' AND j.is_head AND j.priority = (SELECT priority FROM top_level)
               AND j.scheduled_at <= now() AND (p_queues IS NULL OR j.queue = ANY (p_queues))
             ORDER BY j.scheduled_at, j.id
             LIMIT wanted
               FOR UPDATE SKIP LOCKED
        ), claimed AS (
            UPDATE cabbage_jobs AS j
               SET status = 'doing',
                   worker_id = p_worker_id,
                   attempts = j.attempts + CASE WHEN c.starts_now THEN 1 ELSE 0 END,
                   started_at = CASE WHEN c.starts_now THEN clock_timestamp() END
              FROM (SELECT id, p_start_all OR (starts AND row_number() OVER (ORDER BY scheduled_at, id) = 1) AS starts_now
                      FROM candidates) AS c
             WHERE j.id = c.id
            RETURNING j.*
        )
        SELECT * FROM claimed ORDER BY scheduled_at, id;
        GET DIAGNOSTICS claimed = ROW_COUNT;
        IF claimed > 0 THEN
            -- The same level again, for what is left to claim: it gives nothing more, or it
            -- was emptied and the next one is the highest.
            wanted := wanted - claimed;
            starts := false;
            CONTINUE;
        END IF;
        IF p_queues IS NULL THEN
            SELECT j.priority INTO priority_level
              FROM cabbage_jobs AS j
             WHERE j.status = 'todo' AND j.is_head AND j.priority < below
             ORDER BY j.priority DESC
             LIMIT 1;
        ELSE
            SELECT max(top.priority) INTO priority_level
              FROM unnest(p_queues) AS asked(queue),
                   LATERAL (SELECT j.priority FROM cabbage_jobs AS j
                             WHERE j.status = 'todo' AND j.is_head AND j.queue = asked.queue AND j.priority < below
                             ORDER BY j.priority DESC LIMIT 1) AS top;
        END IF;
        EXIT WHEN priority_level IS NULL;
        below := priority_level;
    END LOOP;
END
$function$;

CREATE OR REPLACE FUNCTION public.cabbage_defer_job_v1(p_queue text, p_task_name text, p_args jsonb, p_kwargs jsonb, p_lock text, p_scheduled_at timestamp with time zone, p_months integer, p_seconds double precision, p_max_attempts integer)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
    job_id bigint;
    heads_its_line boolean;
BEGIN
    INSERT INTO cabbage_jobs AS j (queue, task_name, args, kwargs, lock, scheduled_at, max_attempts)
    VALUES (p_queue, p_task_name, p_args,
            p_kwargs, p_lock,
            coalesce(p_scheduled_at,
                     ((now() AT TIME ZONE 'UTC') + make_interval(months => coalesce(p_months, 0)))
                         AT TIME ZONE 'UTC' + make_interval(secs => coalesce(p_seconds, 0))),
            p_max_attempts)
    RETURNING j.id, j.is_head INTO job_id, heads_its_line;
    IF heads_its_line THEN
        PERFORM pg_notify('cabbage_jobs', p_queue);
    END IF;
    RETURN job_id;
END
$function$;

CREATE OR REPLACE FUNCTION public.cabbage_defer_job_v2(p_queue text, p_task_name text, p_args jsonb, p_kwargs jsonb, p_lock text, p_scheduled_at timestamp with time zone, p_months integer, p_seconds double precision, p_max_attempts integer, p_priority integer, p_queueing_lock text)
 RETURNS TABLE(job_id bigint, waiting_job_id bigint)
 LANGUAGE plpgsql
AS $function$
DECLARE
    heads_its_line boolean;
BEGIN
    IF p_queueing_lock IS NOT NULL THEN
        SELECT j.id INTO waiting_job_id
          FROM cabbage_jobs AS j
         WHERE j.queueing_lock = p_queueing_lock AND j.status = 'todo';
        IF waiting_job_id IS NOT NULL THEN
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    INSERT INTO cabbage_jobs AS j (queue, task_name, args, kwargs, lock, scheduled_at, max_attempts,
                                   priority, queueing_lock)
    VALUES (p_queue, p_task_name, p_args,
            p_kwargs, p_lock,
            coalesce(p_scheduled_at,
                     ((now() AT TIME ZONE 'UTC') + make_interval(months => coalesce(p_months, 0)))
                         AT TIME ZONE 'UTC' + make_interval(secs => coalesce(p_seconds, 0))),
            p_max_attempts, p_priority, p_queueing_lock)
    RETURNING j.id, j.is_head INTO job_id, heads_its_line;
    IF heads_its_line THEN
        PERFORM pg_notify('cabbage_jobs', p_queue);
    END IF;
    RETURN NEXT;
END
$function$;

CREATE OR REPLACE FUNCTION public.cabbage_finish_job_v1(p_job_id bigint, p_worker_id bigint, p_attempt integer, p_status cabbage_job_status, p_retry_in_s double precision, p_error_type text, p_error text, p_traceback text, p_next_job_id bigint)
 RETURNS TABLE(finished boolean, started cabbage_jobs)
 LANGUAGE plpgsql
AS $function$
BEGIN
    RETURN QUERY SELECT result.finished, result.job
                   FROM cabbage_finish_job_v3(p_job_id, p_worker_id, p_attempt, p_status, p_retry_in_s,
                                              p_error_type, p_error, p_traceback, p_next_job_id, NULL, 0)
                        AS result;
END
$function$;

CREATE OR REPLACE FUNCTION public.cabbage_finish_job_v2(p_job_id bigint, p_worker_id bigint, p_attempt integer, p_status cabbage_job_status, p_retry_in_s double precision, p_error_type text, p_error text, p_traceback text, p_next_job_id bigint, p_queues text[], p_claim_limit integer)
 RETURNS TABLE(finished boolean, job cabbage_jobs)
 LANGUAGE plpgsql
AS $function$
BEGIN
    RETURN QUERY SELECT * FROM cabbage_finish_job_v3(p_job_id, p_worker_id, p_attempt, p_status, p_retry_in_s,
                                                      p_error_type, p_error, p_traceback, p_next_job_id,
                                                      p_queues, p_claim_limit);
END
$function$;

CREATE OR REPLACE FUNCTION public.cabbage_finish_job_v3(p_job_id bigint, p_worker_id bigint, p_attempt integer, p_status cabbage_job_status, p_retry_in_s double precision, p_error_type text, p_error text, p_traceback text, p_next_job_id bigint, p_queues text[], p_claim_limit integer)
 RETURNS TABLE(finished boolean, job cabbage_jobs)
 LANGUAGE plpgsql
AS $function$
BEGIN
    RETURN QUERY SELECT * FROM cabbage_finish_job_v4(p_job_id, p_worker_id, p_attempt, p_status, p_retry_in_s,
                                                      p_error_type, p_error, p_traceback, p_next_job_id,
                                                      p_queues, p_claim_limit);
END
$function$;

CREATE OR REPLACE FUNCTION public.cabbage_finish_job_v4(p_job_id bigint, p_worker_id bigint, p_attempt integer, p_status cabbage_job_status, p_retry_in_s double precision, p_error_type text, p_error text, p_traceback text, p_next_job_id bigint, p_queues text[], p_claim_limit integer)
 RETURNS TABLE(finished boolean, job cabbage_jobs)
 LANGUAGE plpgsql
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
DECLARE
    ended_at timestamptz := clock_timestamp();
    attempt_started_at timestamptz;
    ending cabbage_job_status := p_status;
    attempt_outcome cabbage_attempt_outcome;
    ending_error_type text := p_error_type;
    ending_error text := p_error;
    ending_traceback text := p_traceback;
    attempt_error_type text := p_error_type;  -- an aborted attempt is kept with its job's error
    attempt_error text := p_error;
    abort_requested_by text;
    superseded_by bigint;
    retried_queue text;
    retried_heads_its_line boolean;
    claimed_any boolean := false;
BEGIN
    finished := false;
    IF p_status <> 'succeeded' THEN
        SELECT j.aborted_by INTO abort_requested_by
          FROM cabbage_jobs AS j
         WHERE j.id = p_job_id AND j.abort_requested_at IS NOT NULL AND j.started_at IS NOT NULL
           AND (j.worker_id, j.attempts, j.status) IS NOT DISTINCT FROM (p_worker_id, p_attempt, 'doing'::cabbage_job_status);
        IF FOUND OR p_status = 'cancelled' THEN
            ending := 'cancelled';
            ending_error_type := 'Aborted';
            ending_error := cabbage_aborted_error(abort_requested_by);
            attempt_error_type := ending_error_type;
            attempt_error := ending_error;
        END IF;
    END IF;
    attempt_outcome := CASE ending WHEN 'todo' THEN 'retried' WHEN 'cancelled' THEN 'aborted'
                                   ELSE ending::text END::cabbage_attempt_outcome;
    IF ending = 'todo' THEN
        FOR pass IN 1..2 LOOP
            SELECT waiting.id INTO superseded_by
              FROM cabbage_jobs AS j
              JOIN cabbage_jobs AS waiting ON waiting.queueing_lock = j.queueing_lock AND waiting.status = 'todo'
             WHERE j.id = p_job_id;
            EXIT WHEN superseded_by IS NOT NULL;
            BEGIN
                UPDATE cabbage_jobs
                   SET status = 'todo',
                       worker_id = NULL,
                       scheduled_at = now() + make_interval(secs => coalesce(p_retry_in_s, 0)),
                       finished_at = NULL,
                       last_error_type = coalesce(p_error_type, last_error_type),
                       last_error = CASE WHEN p_error_type IS NULL THEN last_error ELSE p_error END,
                       last_error_traceback = CASE WHEN p_error_type IS NULL THEN last_error_traceback
                                                   ELSE p_traceback END
                 WHERE id = p_job_id AND started_at IS NOT NULL
                   AND (worker_id, attempts, status) IS NOT DISTINCT FROM (p_worker_id, p_attempt, 'doing'::cabbage_job_status)
                RETURNING started_at, queue, is_head INTO attempt_started_at, retried_queue, retried_heads_its_line;
                finished := FOUND;
                IF finished AND retried_heads_its_line THEN
                    -- Idle workers wait no longer than their next due job; the retry is one.
                    PERFORM pg_notify('cabbage_jobs', retried_queue);
                END IF;
                EXIT;
            EXCEPTION WHEN unique_violation THEN
                IF pass = 2 THEN
                    RAISE;
                END IF;
            END;
        END LOOP;
        IF superseded_by IS NOT NULL THEN
            attempt_outcome := 'failed';
            ending := 'cancelled';
            ending_error_type := 'Superseded';
            ending_error := cabbage_superseded_error(superseded_by);
            ending_traceback := NULL;
        END IF;
    END IF;
    IF ending <> 'todo' THEN
        UPDATE cabbage_jobs
           SET status = ending,
               is_head = false,
               finished_at = ended_at,
               last_error_type = coalesce(ending_error_type, last_error_type),
               last_error = CASE WHEN ending_error_type IS NULL THEN last_error ELSE ending_error END,
               last_error_traceback = CASE WHEN ending_error_type IS NULL THEN last_error_traceback
                                           ELSE ending_traceback END
         WHERE id = p_job_id AND started_at IS NOT NULL
           AND (worker_id, attempts, status) IS NOT DISTINCT FROM (p_worker_id, p_attempt, 'doing'::cabbage_job_status)
        RETURNING started_at INTO attempt_started_at;
        finished := FOUND;
    END IF;
    IF finished THEN
        INSERT INTO cabbage_attempts (job_id, attempt, worker_id, started_at, finished_at, outcome,
                                      error_type, error, traceback)
        VALUES (p_job_id, p_attempt, p_worker_id, attempt_started_at, ended_at, attempt_outcome,
                attempt_error_type, attempt_error, p_traceback);
        IF p_attempt > 20 THEN
            DELETE FROM cabbage_attempts WHERE job_id = p_job_id AND attempt <= p_attempt - 20;
        END IF;
    END IF;
    IF p_next_job_id IS NOT NULL THEN
        IF p_next_job_id <> p_job_id THEN
            UPDATE cabbage_jobs AS j
               SET attempts = j.attempts + 1, started_at = clock_timestamp()
             WHERE j.id = p_next_job_id AND j.started_at IS NULL
               AND (j.worker_id, j.status) IS NOT DISTINCT FROM (p_worker_id, 'doing'::cabbage_job_status)
            RETURNING j.* INTO job;
        END IF;
    ELSIF finished AND p_claim_limit > 0 THEN
        FOR job IN SELECT * FROM cabbage_claim_jobs_v3(p_worker_id, p_queues, p_claim_limit, false) LOOP
            claimed_any := true;
            RETURN NEXT;
        END LOOP;
        IF claimed_any THEN
            RETURN;
        END IF;
    END IF;
    RETURN NEXT;
END
$function$;

CREATE OR REPLACE FUNCTION public.cabbage_finish_jobs_v1(p_worker_id bigint, p_job_ids bigint[], p_attempts integer[], p_statuses cabbage_job_status[], p_retry_in_s double precision[], p_error_types text[], p_errors text[], p_tracebacks text[], p_queues text[], p_claim_limit integer)
 RETURNS TABLE(finished_job_ids bigint[], job cabbage_jobs)
 LANGUAGE plpgsql
AS $function$
DECLARE
    is_finished boolean;
    claimed_any boolean := false;
BEGIN
    -- Successes, the common case, as one statement each for the jobs and their attempts (what
    -- cabbage_finish_job_v4 does for one success, without its look for an abort, which a success
    -- ignores); the other outcomes one by one through cabbage_finish_job_v4.
    WITH succeeded AS (
        UPDATE cabbage_jobs AS j
           SET status = 'succeeded', is_head = false, finished_at = clock_timestamp()
          FROM unnest(p_job_ids, p_attempts, p_statuses) AS f(id, attempt, status)
         WHERE f.status = 'succeeded' AND j.id = f.id AND j.started_at IS NOT NULL
           AND (j.worker_id, j.attempts, j.status) IS NOT DISTINCT FROM (p_worker_id, f.attempt, 'doing'::cabbage_job_status)
        RETURNING j.id, j.attempts, j.started_at, j.finished_at
    ), recorded AS (
        INSERT INTO cabbage_attempts (job_id, attempt, worker_id, started_at, finished_at, outcome)
        SELECT id, attempts, p_worker_id, started_at, finished_at, 'succeeded' FROM succeeded
    ), trimmed AS (
        DELETE FROM cabbage_attempts AS a
         USING succeeded
         WHERE succeeded.attempts > 20 AND a.job_id = succeeded.id AND a.attempt <= succeeded.attempts - 20
    )
    SELECT coalesce(array_agg(id), '{}') INTO finished_job_ids FROM succeeded;
    FOR i IN 1..coalesce(array_length(p_job_ids, 1), 0) LOOP
        CONTINUE WHEN p_statuses[i] = 'succeeded';
        SELECT result.finished INTO is_finished
          FROM cabbage_finish_job_v4(p_job_ids[i], p_worker_id, p_attempts[i], p_statuses[i], p_retry_in_s[i],
                                     p_error_types[i], p_errors[i], p_tracebacks[i], NULL, NULL, 0) AS result
         LIMIT 1;
        IF is_finished THEN
            finished_job_ids := finished_job_ids || p_job_ids[i];
        END IF;
    END LOOP;
    IF cardinality(finished_job_ids) > 0 AND p_claim_limit > 0 THEN
        FOR job IN SELECT * FROM cabbage_claim_jobs_v3(p_worker_id, p_queues, p_claim_limit, true) LOOP
            claimed_any := true;
            RETURN NEXT;
        END LOOP;
    END IF;
    IF NOT claimed_any THEN
        job := NULL;
        RETURN NEXT;
    END IF;
END
$function$;

CREATE OR REPLACE FUNCTION public.cabbage_job_state(status cabbage_job_status, is_head boolean, scheduled_at timestamp with time zone)
 RETURNS text
 LANGUAGE sql
 STABLE PARALLEL SAFE
AS $function$ SELECT CASE WHEN status <> 'todo' THEN status::text
                      WHEN NOT is_head THEN 'behind_lock'
                      WHEN scheduled_at > now() THEN 'scheduled'
                      ELSE 'waiting' END $function$;

CREATE OR REPLACE FUNCTION public.cabbage_jobs_after_line_change()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.is_head AND OLD.lock IS NOT NULL THEN
            PERFORM cabbage_promote_next_head(OLD.lock);
        END IF;
        RETURN OLD;
    END IF;
    IF NEW.lock IS NOT NULL AND (
        (OLD.is_head AND NOT NEW.is_head)
        OR (NEW.status = 'todo' AND NOT NEW.is_head AND OLD.status NOT IN ('todo', 'doing'))
    ) THEN
        PERFORM cabbage_promote_next_head(NEW.lock);
    END IF;
    RETURN NEW;
END
$function$;

CREATE OR REPLACE FUNCTION public.cabbage_jobs_leave_line()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF NEW.status NOT IN ('todo', 'doing') THEN
        NEW.is_head := false;
    ELSIF NEW.lock IS NULL THEN
        NEW.is_head := true;
    END IF;
    RETURN NEW;
END
$function$;

CREATE OR REPLACE FUNCTION public.cabbage_jobs_place_in_line()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF NEW.lock IS NULL THEN
        NEW.is_head := NEW.status IN ('todo', 'doing');
        RETURN NEW;
    END IF;
    IF NEW.status NOT IN ('todo', 'doing') THEN
        NEW.is_head := false;
        RETURN NEW;
    END IF;
    PERFORM pg_advisory_xact_lock(cabbage_lock_line_key(NEW.lock));
    NEW.is_head := NOT EXISTS (
        SELECT 1 FROM cabbage_jobs WHERE lock = NEW.lock AND is_head
    );
    RETURN NEW;
END
$function$;

CREATE OR REPLACE FUNCTION public.cabbage_lock_line_key(lock_name text)
 RETURNS bigint
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$ SELECT hashtextextended('cabbage_lock:' || lock_name, 0) $function$;

CREATE OR REPLACE FUNCTION public.cabbage_promote_next_head(lock_name text)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
    PERFORM pg_advisory_xact_lock(cabbage_lock_line_key(lock_name));
    IF EXISTS (SELECT 1 FROM cabbage_jobs WHERE lock = lock_name AND is_head) THEN
        RETURN;
    END IF;
    UPDATE cabbage_jobs SET is_head = true
     WHERE id = (SELECT id FROM cabbage_jobs
                  WHERE lock = lock_name AND status = 'todo'
                  ORDER BY id LIMIT 1);
    IF FOUND THEN
        PERFORM pg_notify('cabbage_jobs', (SELECT queue FROM cabbage_jobs
                                            WHERE lock = lock_name AND is_head));
    END IF;
END
$function$;

CREATE OR REPLACE FUNCTION public.cabbage_record_periodic_ticks_v1(p_ticks jsonb)
 RETURNS SETOF cabbage_periodic_ticks
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION public.cabbage_superseded_error(waiting_job_id bigint)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$ SELECT 'not run again: job ' || waiting_job_id || ' with the same queueing lock is waiting' $function$;

CREATE TRIGGER cabbage_jobs_after_delete AFTER DELETE ON public.cabbage_jobs FOR EACH ROW WHEN ((old.is_head AND (old.lock IS NOT NULL))) EXECUTE FUNCTION cabbage_jobs_after_line_change();

CREATE TRIGGER cabbage_jobs_after_status_change AFTER UPDATE OF status ON public.cabbage_jobs FOR EACH ROW WHEN (((old.status IS DISTINCT FROM new.status) AND (new.lock IS NOT NULL))) EXECUTE FUNCTION cabbage_jobs_after_line_change();

CREATE TRIGGER cabbage_jobs_leave_line BEFORE UPDATE OF status ON public.cabbage_jobs FOR EACH ROW WHEN (((old.status IS DISTINCT FROM new.status) AND (((new.status <> ALL (ARRAY['todo'::cabbage_job_status, 'doing'::cabbage_job_status])) AND new.is_head) OR ((new.status = ANY (ARRAY['todo'::cabbage_job_status, 'doing'::cabbage_job_status])) AND (new.lock IS NULL) AND (NOT new.is_head))))) EXECUTE FUNCTION cabbage_jobs_leave_line();

CREATE TRIGGER cabbage_jobs_place_in_line BEFORE INSERT ON public.cabbage_jobs FOR EACH ROW WHEN (((new.lock IS NOT NULL) OR (new.status <> ALL (ARRAY['todo'::cabbage_job_status, 'doing'::cabbage_job_status])) OR (NOT new.is_head))) EXECUTE FUNCTION cabbage_jobs_place_in_line();
