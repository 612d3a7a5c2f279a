-- A job's whole life: insert it, claim the oldest free job (SKIP LOCKED), finish it.
-- Three statements, three commits: a defer, a claim and a finish. A claim that finds nothing
-- yields job_id 0 and the finish changes nothing; the harness counts the jobs actually finished.
INSERT INTO bench_jobs (args) VALUES ('[]');
WITH claimed AS (
    UPDATE bench_jobs SET status = 'doing', started_at = now()
     WHERE id = (SELECT id FROM bench_jobs WHERE status = 'todo'
                  ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING id
)
SELECT coalesce(max(id), 0) AS job_id FROM claimed \gset
UPDATE bench_jobs SET status = 'succeeded', finished_at = now() WHERE id = :job_id;
