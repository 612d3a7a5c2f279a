-- The minimal job table of the limit workload: what any PostgreSQL queue must at least write.
-- A job is a row; claimable jobs are found through a partial index, so finished rows cost
-- nothing to the claim (cabbage's cabbage_jobs_claimable plays this part).
CREATE TABLE bench_jobs (
    id          bigserial   PRIMARY KEY,
    queue       text        NOT NULL DEFAULT 'default',
    task_name   text        NOT NULL DEFAULT 'noop',
    args        jsonb       NOT NULL DEFAULT '[]',
    status      text        NOT NULL DEFAULT 'todo',
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz
);
CREATE INDEX bench_jobs_todo ON bench_jobs (id) WHERE status = 'todo';
