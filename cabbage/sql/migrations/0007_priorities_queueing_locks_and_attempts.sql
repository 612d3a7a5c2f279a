-- Priorities, queueing locks and the history of attempts (issue 14, items 2, 3 and 5).
--
-- Priorities. cabbage_jobs.priority (integer, higher first, default 0: existing jobs and the
-- previous release's defers keep the order they had). The claim takes the highest priority
-- level that has a due head job, then the oldest (scheduled_at, id) in it. Only heads are in the
-- claimable indexes, so a job waiting behind its lock is never claimable whatever its priority,
-- and a lock's line keeps creation order (invariant 2); a retry changes neither the priority nor
-- the place in line. The claimable indexes are rebuilt with priority leading.
--
-- Why the claim walks one priority level at a time: a single walk ordered by (priority DESC,
-- scheduled_at, id) must step over every job of a higher level that is not due yet (retries
-- waiting out their backoff, jobs scheduled for tomorrow) before it reaches a due job of a
-- lower one. Measured on the project's machine with 100,000 priority-10 jobs due tomorrow
-- ahead of due priority-0 jobs: 3.5 ms a claim, growing with them, against about 0.1 ms on an
-- empty level. cabbage_claim_jobs_v2 instead finds the highest level with a claimable head (one
-- probe of the claimable index, or of the by-queue one for each queue asked for), claims the due
-- jobs of that level as one range of the index (FOR UPDATE SKIP LOCKED, as before), and goes
-- down a level only when that one gave fewer jobs than asked. A claim costs one probe per level
-- in use above the job it takes, never one per job waiting (invariant 6). Its plans are pinned as
-- cabbage_claim_jobs_v1's are (migrations 0004 and 0005).
--
-- Queueing locks. cabbage_jobs.queueing_lock, and the partial unique index
-- cabbage_jobs_one_todo_per_queueing_lock: at most one todo job per queueing lock, whatever the
-- races. A job leaving todo (claimed, cancelled) frees it for the next defer. The defers look
-- for the waiting job first and insert nothing when there is one, answering its id (no error,
-- so the caller's transaction goes on); a defer racing another one for the same key is refused
-- by the index (SQLSTATE 23505 on it), which cabbage.postgres maps to AlreadyEnqueued too.
--
-- A job with a queueing lock can come back to todo while a newer job of its key waits: a retry,
-- a reclaimed attempt, a reserved job given back. The newer job does the same work (that is
-- what sharing a queueing lock says), so the returning job ends instead: cancelled, its last
-- error 'Superseded: not run again: job N with the same queueing lock is waiting', the attempt
-- itself recorded as it ended. Of several returning together with one key, the newest returns.
-- The finish holds the race with a concurrent defer in a subtransaction, entered by retries
-- only; a retry superseded that way never fails the worker's finish. An operator's retry that
-- would make a second todo job is refused instead (cabbage.admin).
--
-- Attempts. cabbage_attempts keeps each attempt's start, end, worker, outcome (succeeded,
-- failed, retried: failed with a retry to follow, lost: reclaimed) and error; the last 20 per
-- job, older ones deleted by the statement that records the 21st. Written in the transaction
-- that ends the attempt: the finish (cabbage_finish_job_v3) and the reclaim (workers.sql). The
-- foreign key deletes them with their job (retention).
--
-- Versions. The new behaviour lives in new functions (cabbage_claim_jobs_v2,
-- cabbage_finish_job_v3, cabbage_defer_job_v2). The functions of the previous release keep
-- their signatures, and the claim and finish ones become wrappers of the new ones: during a
-- rolling upgrade its workers then claim by priority, record their attempts and give way to a
-- waiting job of the same queueing lock like the new ones, rather than claim in another order
-- than their neighbours and fail a retry on the new index. cabbage_defer_job_v1 is unchanged
-- (its jobs have priority 0 and no queueing lock).
--
-- Cost. Adding the columns changes no row (constant defaults). The three indexes are built in
-- the apply's transaction, which holds off writes to cabbage_jobs while they build (about a
-- second per million jobs waiting or running: the indexes are partial).

ALTER TABLE cabbage_jobs
    ADD COLUMN priority integer NOT NULL DEFAULT 0,
    ADD COLUMN queueing_lock text;

-- At most one todo job per queueing lock, whatever the races.
CREATE UNIQUE INDEX cabbage_jobs_one_todo_per_queueing_lock ON cabbage_jobs (queueing_lock)
    WHERE status = 'todo' AND queueing_lock IS NOT NULL;

-- Invariant 6, with priorities: each level's due heads are one range of these indexes.
DROP INDEX cabbage_jobs_claimable;
DROP INDEX cabbage_jobs_claimable_by_queue;
CREATE INDEX cabbage_jobs_claimable ON cabbage_jobs (priority DESC, scheduled_at, id)
    WHERE status = 'todo' AND is_head;
CREATE INDEX cabbage_jobs_claimable_by_queue ON cabbage_jobs (queue, priority DESC, scheduled_at, id)
    WHERE status = 'todo' AND is_head;

CREATE TYPE cabbage_attempt_outcome AS ENUM ('succeeded', 'failed', 'retried', 'lost');

CREATE TABLE cabbage_attempts (
    job_id      bigint                  NOT NULL,
    attempt     integer                 NOT NULL,
    worker_id   bigint,
    started_at  timestamptz             NOT NULL,
    finished_at timestamptz             NOT NULL,
    outcome     cabbage_attempt_outcome NOT NULL,
    error_type  text,
    error       text,
    traceback   text,
    CONSTRAINT cabbage_attempts_one_row_per_attempt PRIMARY KEY (job_id, attempt),
    CONSTRAINT cabbage_attempts_deleted_with_their_job FOREIGN KEY (job_id)
        REFERENCES cabbage_jobs (id) ON DELETE CASCADE
);

-- A job's state as the admin views show it (cabbage/sql/admin.sql): its status, with todo told
-- apart: behind_lock (behind the head of its lock's line), scheduled (not due yet), waiting (due,
-- claimable). On the database clock (invariant 7).
CREATE FUNCTION cabbage_job_state(status cabbage_job_status, is_head boolean, scheduled_at timestamptz)
    RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN status <> 'todo' THEN status::text
                      WHEN NOT is_head THEN 'behind_lock'
                      WHEN scheduled_at > now() THEN 'scheduled'
                      ELSE 'waiting' END $$;

-- The last error of a job that a newer job of its queueing lock superseded (see the header).
CREATE FUNCTION cabbage_superseded_error(waiting_job_id bigint) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT 'not run again: job ' || waiting_job_id || ' with the same queueing lock is waiting' $$;

-- Claims up to p_limit due head jobs of p_queues (NULL: all) for a worker, the highest priority
-- first, then in (scheduled_at, id) order: the first started (attempt + 1), the rest reserved
-- (invariants 1, 3, 4). One priority level at a time, highest first (see the header): each
-- statement finds the highest level below `below` with a claimable head and claims that level's
-- due jobs as one range of the claimable index, FOR UPDATE SKIP LOCKED (invariants 3, 6). The
-- common claim is that one statement. A level that gave nothing (its heads not due, or being
-- claimed by others) is looked up once more, to go below it.
CREATE FUNCTION cabbage_claim_jobs_v2(p_worker_id bigint, p_queues text[], p_limit integer)
    RETURNS SETOF cabbage_jobs
    LANGUAGE plpgsql
    -- As cabbage_claim_jobs_v1 (migrations 0004, 0005): index walks that stop at the limit, and
    -- the claimed rows fetched by primary key, whatever the statistics say.
    SET enable_bitmapscan = off
    SET enable_hashjoin = off
    SET enable_mergejoin = off
    SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    -- Levels strictly below this one are looked at; bigint, so that the first look also finds
    -- the highest integer.
    below bigint := 2147483648;
    priority_level integer;
    wanted integer := p_limit;
    claimed integer;
    starts boolean := true;  -- the first job claimed is started, the others reserved
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
              FROM (SELECT id, starts AND row_number() OVER (ORDER BY scheduled_at, id) = 1 AS starts_now
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
$$;

-- Records how an attempt ended, fenced by its owner (invariant 5), and the attempt itself in
-- cabbage_attempts (the last 20 per job); then, as cabbage_finish_job_v2, starts p_next_job_id
-- if this worker still holds it reserved, or else claims up to p_claim_limit jobs of p_queues
-- through cabbage_claim_jobs_v2. A retry (todo) keeps its priority and its place at the head of
-- its lock's line (invariant 2), due p_retry_in_s from now on the database clock (invariant 7),
-- unless a newer job of its queueing lock waits: then it ends, cancelled as superseded (see the
-- header). Rows: whether the attempt was finished, with each started or claimed job in claim
-- order; one row with a NULL job when there is none.
CREATE FUNCTION cabbage_finish_job_v3(
    p_job_id bigint, p_worker_id bigint, p_attempt integer, p_status cabbage_job_status,
    p_retry_in_s double precision, p_error_type text, p_error text, p_traceback text,
    p_next_job_id bigint, p_queues text[], p_claim_limit integer
)
    RETURNS TABLE (finished boolean, job cabbage_jobs)
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    ended_at timestamptz := clock_timestamp();
    attempt_started_at timestamptz;
    attempt_outcome cabbage_attempt_outcome :=
        CASE WHEN p_status = 'todo' THEN 'retried' ELSE p_status::text END::cabbage_attempt_outcome;
    ending cabbage_job_status := p_status;
    ending_error_type text := p_error_type;
    ending_error text := p_error;
    ending_traceback text := p_traceback;
    superseded_by bigint;
    claimed_any boolean := false;
BEGIN
    finished := false;
    IF p_status = 'todo' THEN
        FOR pass IN 1..2 LOOP
            SELECT waiting.id INTO superseded_by
              FROM cabbage_jobs AS j
              JOIN cabbage_jobs AS waiting ON waiting.queueing_lock = j.queueing_lock AND waiting.status = 'todo'
             WHERE j.id = p_job_id;
            EXIT WHEN superseded_by IS NOT NULL;
            BEGIN
                -- The fence is compared as one row so that the job is found by its primary key
                -- (as in cabbage_finish_job_v1).
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
                RETURNING started_at INTO attempt_started_at;
                finished := FOUND;
                EXIT;
            EXCEPTION WHEN unique_violation THEN
                -- A defer of the same queueing lock committed since the look-up above: the next
                -- pass sees its job waiting. Twice is not that race.
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
               -- An outcome without an error (a success) keeps the last attempt's error.
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
                p_error_type, p_error, p_traceback);
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
        FOR job IN SELECT * FROM cabbage_claim_jobs_v2(p_worker_id, p_queues, p_claim_limit) LOOP
            claimed_any := true;
            RETURN NEXT;
        END LOOP;
        IF claimed_any THEN
            RETURN;
        END IF;
    END IF;
    RETURN NEXT;
END
$$;

-- One job, as cabbage_defer_job_v1, with its priority and queueing lock. When a todo job holds
-- the queueing lock, inserts nothing and answers that job's id (job_id NULL). Rows: one.
CREATE FUNCTION cabbage_defer_job_v2(
    p_queue text, p_task_name text, p_args jsonb, p_kwargs jsonb, p_lock text,
    p_scheduled_at timestamptz, p_months integer, p_seconds double precision, p_max_attempts integer,
    p_priority integer, p_queueing_lock text
) RETURNS TABLE (job_id bigint, waiting_job_id bigint)
    LANGUAGE plpgsql AS $$
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
$$;

-- The previous release's claim and finish, kept under their signatures for its workers during a
-- rolling upgrade, now apply the rules above (see the header).
CREATE OR REPLACE FUNCTION cabbage_claim_jobs_v1(p_worker_id bigint, p_queues text[], p_limit integer)
    RETURNS SETOF cabbage_jobs
    LANGUAGE plpgsql
AS $$
BEGIN
    RETURN QUERY SELECT * FROM cabbage_claim_jobs_v2(p_worker_id, p_queues, p_limit);
END
$$;

CREATE OR REPLACE FUNCTION cabbage_finish_job_v1(
    p_job_id bigint, p_worker_id bigint, p_attempt integer, p_status cabbage_job_status,
    p_retry_in_s double precision, p_error_type text, p_error text, p_traceback text,
    p_next_job_id bigint
)
    RETURNS TABLE (finished boolean, started cabbage_jobs)
    LANGUAGE plpgsql
AS $$
BEGIN
    RETURN QUERY SELECT result.finished, result.job
                   FROM cabbage_finish_job_v3(p_job_id, p_worker_id, p_attempt, p_status, p_retry_in_s,
                                              p_error_type, p_error, p_traceback, p_next_job_id, NULL, 0)
                        AS result;
END
$$;

CREATE OR REPLACE FUNCTION cabbage_finish_job_v2(
    p_job_id bigint, p_worker_id bigint, p_attempt integer, p_status cabbage_job_status,
    p_retry_in_s double precision, p_error_type text, p_error text, p_traceback text,
    p_next_job_id bigint, p_queues text[], p_claim_limit integer
)
    RETURNS TABLE (finished boolean, job cabbage_jobs)
    LANGUAGE plpgsql
AS $$
BEGIN
    RETURN QUERY SELECT * FROM cabbage_finish_job_v3(p_job_id, p_worker_id, p_attempt, p_status, p_retry_in_s,
                                                      p_error_type, p_error, p_traceback, p_next_job_id,
                                                      p_queues, p_claim_limit);
END
$$;
