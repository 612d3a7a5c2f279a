-- Draining as a cabbage worker does one job at a time: one statement, one commit per job, that
-- finishes the job this client claimed last time and claims (starts) the next, so the start
-- of every job is committed before it would run. pgbench keeps :job_id from one transaction
-- of a client to the next (the harness starts it at 0, which finishes nothing); the last job
-- each client claims stays doing, and the harness counts the jobs actually finished.
WITH finished AS (
    UPDATE bench_jobs SET status = 'succeeded', finished_at = now() WHERE id = :job_id
), claimed AS (
    UPDATE bench_jobs SET status = 'doing', started_at = now()
     WHERE id = (SELECT id FROM bench_jobs WHERE status = 'todo'
                  ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING id
)
SELECT coalesce(max(id), 0) AS job_id FROM claimed \gset
