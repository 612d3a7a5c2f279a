-- Retries wake idle workers; the finish claims through cabbage_claim_jobs_v3 directly.
--
-- A retry is a job scheduled for later (its backoff), and an idle worker waits for a
-- notification no longer than its next due job, which it learns when it looks (the claim that
-- found nothing, cabbage_seconds_until_next_due). A retry recorded by a busy worker (one job at
-- a time, or all its slots taken) notified nobody: the idle workers of its queue learned of it
-- at their next poll, up to --poll-interval (5 s) after it was due. cabbage_finish_job_v4 now
-- notifies the job's queue (NOTIFY cabbage_jobs, '<queue>') when the retried job heads its
-- lock's line, as a defer does; the woken workers look, find it not yet due, and wait until it
-- is. Retries are the rare outcome: the notification's cost (NOTIFY serialises commits) is
-- paid by them only.
--
-- The claim after a finish called cabbage_claim_jobs_v2, since migration 0010 a SQL wrapper of
-- v3 that starts the first job only; it now calls v3 with p_start_all false itself: the same
-- jobs claimed, one function call and one materialised result fewer per job (a job of the
-- default configuration: 1.22 -> 1.14 ms in a bare loop, docs/performance.md).
--
-- The signature is migration 0009's and so is the behaviour, the notification aside: a worker of
-- the previous release calls it as before.

CREATE OR REPLACE FUNCTION cabbage_finish_job_v4(
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
$$;
