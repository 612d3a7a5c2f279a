-- Aborting a running job (issue 14, item 4): `cabbage jobs abort ID`, the API and the job page.
--
-- An operator's abort of a doing job whose attempt began writes abort_requested_at and
-- aborted_by on its row and notifies its worker (NOTIFY cabbage_aborts, payload the worker id):
-- the worker's heartbeat connection listens, and each heartbeat also looks, in case the
-- notification was lost with a connection. The task sees it (cabbage.current_job().should_abort()),
-- an async one is cancelled, and the supervisor kills the child after --abort-timeout. A job
-- that was only waiting (todo) or only reserved (doing, not begun) is cancelled at once.
--
-- The request is the database's, not the worker's: however the attempt ends short of success
-- (the task raised, was cancelled, or its child was killed and the attempt reclaimed), the job
-- ends cancelled, with the last error 'Aborted: aborted by <who>', and never retries; the
-- attempt is kept with the new outcome 'aborted'. An attempt that succeeded before it learned
-- of the abort stays succeeded: its work was done. A manual retry clears the request.
--
-- Versions. cabbage_finish_job_v4 is cabbage_finish_job_v3 plus the abort; v3 becomes a wrapper
-- of v4 (same signature), so that a previous release's worker finishing an aborted attempt ends
-- its job cancelled like a new one. The reclaim (workers.sql) reads the two columns itself.
--
-- Cost. The columns change no row (no default). A finish that succeeds reads nothing more; one
-- that failed reads its row once more by primary key.

ALTER TABLE cabbage_jobs
    ADD COLUMN abort_requested_at timestamptz,
    ADD COLUMN aborted_by text;

-- Used from the next transaction on (the finish and the reclaim), as ADD VALUE requires.
ALTER TYPE cabbage_attempt_outcome ADD VALUE 'aborted';

-- The error an aborted attempt ends its job with.
CREATE FUNCTION cabbage_aborted_error(aborted_by text) RETURNS text
    LANGUAGE sql IMMUTABLE
AS $$
    SELECT 'aborted by ' || coalesce(nullif(aborted_by, ''), 'an operator')
$$;

-- cabbage_finish_job_v3, and: a failed or retried attempt of a job whose abort was requested
-- ends it cancelled ('Aborted'), the attempt kept as 'aborted'; p_status 'cancelled' (a worker
-- that knew of the abort) does the same.
CREATE FUNCTION cabbage_finish_job_v4(
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
    ending cabbage_job_status := p_status;
    attempt_outcome cabbage_attempt_outcome;
    ending_error_type text := p_error_type;
    ending_error text := p_error;
    ending_traceback text := p_traceback;
    attempt_error_type text := p_error_type;  -- an aborted attempt is kept with its job's error
    attempt_error text := p_error;
    abort_requested_by text;
    superseded_by bigint;
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
                RETURNING started_at INTO attempt_started_at;
                finished := FOUND;
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

CREATE OR REPLACE FUNCTION cabbage_finish_job_v3(
    p_job_id bigint, p_worker_id bigint, p_attempt integer, p_status cabbage_job_status,
    p_retry_in_s double precision, p_error_type text, p_error text, p_traceback text,
    p_next_job_id bigint, p_queues text[], p_claim_limit integer
)
    RETURNS TABLE (finished boolean, job cabbage_jobs)
    LANGUAGE plpgsql
AS $$
BEGIN
    RETURN QUERY SELECT * FROM cabbage_finish_job_v4(p_job_id, p_worker_id, p_attempt, p_status, p_retry_in_s,
                                                      p_error_type, p_error, p_traceback, p_next_job_id,
                                                      p_queues, p_claim_limit);
END
$$;
