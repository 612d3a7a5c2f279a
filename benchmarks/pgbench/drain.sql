-- Draining, one job per transaction of this script: claim the oldest free job (SKIP LOCKED),
-- then finish it. Two statements, two commits, as a worker that claims one job at a time.
-- A claim that finds nothing yields job_id 0 and the finish changes nothing; the harness counts
-- the jobs actually finished.
WITH claimed AS (
    UPDATE bench_jobs SET status = 'doing', started_at = now()
     WHERE id = (SELECT id FROM bench_jobs WHERE status = 'todo'
                  ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING id
)
SELECT coalesce(max(id), 0) AS job_id FROM claimed \gset
UPDATE bench_jobs SET status = 'succeeded', finished_at = now() WHERE id = :job_id;
