-- A worker's finish also claims its next jobs: one round trip per job when it claims one job
-- at a time, as when it works through a batch (the finish starting the next reserved job).
--
-- cabbage_finish_job_v2 records the outcome and starts p_next_job_id exactly as
-- cabbage_finish_job_v1 does; when no next job is named, the attempt was this worker's, and
-- p_claim_limit > 0, it then claims up to p_claim_limit jobs of p_queues (NULL: all) exactly as
-- cabbage_claim_jobs_v1 does: the first started, the rest reserved (invariants 1-6 hold by
-- those two functions). Claiming after the finish, in the same transaction, lets the next job of
-- the finished job's lock be claimed at once.
--
-- Rows: whether the attempt was finished, with each started or claimed job in claim order; one
-- row with a NULL job when there is none. v1 stays: the workers of the previous release call it
-- during a rolling upgrade, and a finish that only starts a reserved job calls it directly,
-- one function call cheaper than through v2.
CREATE FUNCTION cabbage_finish_job_v2(
    p_job_id bigint, p_worker_id bigint, p_attempt integer, p_status cabbage_job_status,
    p_retry_in_s double precision, p_error_type text, p_error text, p_traceback text,
    p_next_job_id bigint, p_queues text[], p_claim_limit integer
)
    RETURNS TABLE (finished boolean, job cabbage_jobs)
    LANGUAGE plpgsql
    SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    ended record;
    claimed_any boolean := false;
BEGIN
    SELECT * INTO ended
      FROM cabbage_finish_job_v1(p_job_id, p_worker_id, p_attempt, p_status, p_retry_in_s,
                                 p_error_type, p_error, p_traceback, p_next_job_id);
    finished := ended.finished;
    IF p_next_job_id IS NULL AND finished AND p_claim_limit > 0 THEN
        FOR job IN SELECT * FROM cabbage_claim_jobs_v1(p_worker_id, p_queues, p_claim_limit) LOOP
            claimed_any := true;
            RETURN NEXT;
        END LOOP;
        IF claimed_any THEN
            RETURN;
        END IF;
    END IF;
    job := ended.started;
    RETURN NEXT;
END
$$;
