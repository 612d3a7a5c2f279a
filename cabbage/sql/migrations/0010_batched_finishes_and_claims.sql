-- Claims that start every job they take, and finishes recorded together (issue 15, item 2;
-- issue 13, item 5).
--
-- A worker running several jobs at once (--concurrency above 1) claims only its free slots, and
-- begins every job it claims at once: reserving all but the first, then starting each with a
-- round trip of its own (start_job), cost one round trip per job. cabbage_claim_jobs_v3 takes
-- p_start_all: every job it claims is started (attempts + 1, started_at now), which a worker
-- lost before it ran them pays as a lost attempt each, as for any started job.
--
-- The same worker records the outcomes of the attempts that ended while it was busy in one
-- round trip and one commit (one WAL flush, with synchronous_commit on, instead of one per job):
-- cabbage_finish_jobs_v1 records the successes with one UPDATE and one INSERT, and each other
-- outcome with cabbage_finish_job_v4, every one fenced by its own attempt (invariant 5: a fence
-- lost on one changes nothing for the others), then claims up to
-- p_claim_limit jobs started (cabbage_claim_jobs_v3) when any was finished. Rows: the ids of the
-- attempts that were finished, then the columns of each claimed job; one row of NULL columns
-- when none was claimed. A worker of the previous release keeps cabbage_claim_jobs_v2, now a
-- wrapper of v3 that starts the first job only, as before.

CREATE FUNCTION cabbage_claim_jobs_v3(p_worker_id bigint, p_queues text[], p_limit integer, p_start_all boolean)
    RETURNS SETOF cabbage_jobs
    LANGUAGE plpgsql
    -- As cabbage_claim_jobs_v2 (migration 0007): the plans stay index walks, whatever the statistics.
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
$$;

CREATE OR REPLACE FUNCTION cabbage_claim_jobs_v2(p_worker_id bigint, p_queues text[], p_limit integer)
    RETURNS SETOF cabbage_jobs
    LANGUAGE sql
AS $$
    SELECT * FROM cabbage_claim_jobs_v3(p_worker_id, p_queues, p_limit, false)
$$;

CREATE FUNCTION cabbage_finish_jobs_v1(
    p_worker_id bigint, p_job_ids bigint[], p_attempts integer[], p_statuses cabbage_job_status[],
    p_retry_in_s double precision[], p_error_types text[], p_errors text[], p_tracebacks text[],
    p_queues text[], p_claim_limit integer
)
    RETURNS TABLE (finished_job_ids bigint[], job cabbage_jobs)
    LANGUAGE plpgsql
AS $$
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
$$;
