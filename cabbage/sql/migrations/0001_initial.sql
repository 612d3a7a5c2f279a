-- The initial schema of cabbage: jobs, workers, and the rules of ARCHITECTURE section 2.
-- Every object is prefixed cabbage_. Applied by `cabbage schema apply` inside one transaction.

CREATE TYPE cabbage_job_status AS ENUM ('todo', 'doing', 'succeeded', 'failed', 'cancelled');

CREATE TABLE cabbage_workers (
    id                bigserial PRIMARY KEY,
    hostname          text        NOT NULL DEFAULT '',
    pid               integer     NOT NULL DEFAULT 0,
    queues            text[],
    started_at        timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- Serves the stale-worker scan of every master (invariant 4).
CREATE INDEX cabbage_workers_by_heartbeat ON cabbage_workers (last_heartbeat_at);

CREATE TABLE cabbage_jobs (
    id                   bigserial PRIMARY KEY,
    queue                text               NOT NULL DEFAULT 'default',
    task_name            text               NOT NULL,
    args                 jsonb              NOT NULL DEFAULT '[]',
    kwargs               jsonb              NOT NULL DEFAULT '{}',
    lock                 text,
    status               cabbage_job_status NOT NULL DEFAULT 'todo',
    -- True for the one job at the front of its lock's line (and every job without a lock):
    -- only head jobs are claimable (invariants 2 and 6). Maintained by the triggers below.
    is_head              boolean            NOT NULL DEFAULT true,
    scheduled_at         timestamptz        NOT NULL DEFAULT now(),
    attempts             integer            NOT NULL DEFAULT 0,
    max_attempts         integer            DEFAULT 1,  -- NULL: no limit
    worker_id            bigint,
    created_at           timestamptz        NOT NULL DEFAULT now(),
    started_at           timestamptz,
    finished_at          timestamptz,
    last_error_type      text,
    last_error           text,
    last_error_traceback text,
    CONSTRAINT cabbage_jobs_doing_has_worker CHECK (status <> 'doing' OR worker_id IS NOT NULL),
    CONSTRAINT cabbage_jobs_attempts_positive CHECK (attempts >= 0),
    CONSTRAINT cabbage_jobs_max_attempts_positive CHECK (max_attempts IS NULL OR max_attempts >= 1),
    CONSTRAINT cabbage_jobs_args_is_array CHECK (jsonb_typeof(args) IN ('array', 'object')),
    CONSTRAINT cabbage_jobs_kwargs_is_object CHECK (jsonb_typeof(kwargs) = 'object')
);

-- Invariant 1: at most one job with a given lock is doing, whatever the races.
CREATE UNIQUE INDEX cabbage_jobs_one_doing_per_lock ON cabbage_jobs (lock)
    WHERE status = 'doing' AND lock IS NOT NULL;

-- Invariants 2 and 6: one head per lock; the next job of a line is found by (lock, id).
CREATE UNIQUE INDEX cabbage_jobs_one_head_per_lock ON cabbage_jobs (lock)
    WHERE is_head AND lock IS NOT NULL;
CREATE INDEX cabbage_jobs_lock_line ON cabbage_jobs (lock, id)
    WHERE status = 'todo' AND lock IS NOT NULL;

-- Invariant 6: the claim reads this index only; finished jobs and jobs waiting behind a busy
-- lock are not in it, so claim cost does not grow with them.
CREATE INDEX cabbage_jobs_claimable ON cabbage_jobs (scheduled_at, id)
    WHERE status = 'todo' AND is_head;
CREATE INDEX cabbage_jobs_claimable_by_queue ON cabbage_jobs (queue, scheduled_at, id)
    WHERE status = 'todo' AND is_head;

-- Reclaim and the supervisor's view of what each worker runs.
CREATE INDEX cabbage_jobs_held_by_worker ON cabbage_jobs (worker_id) WHERE status = 'doing';

-- Retention and the admin views of finished jobs.
CREATE INDEX cabbage_jobs_finished ON cabbage_jobs (finished_at) WHERE finished_at IS NOT NULL;

-- Lines of one lock are serialised on an advisory lock so that an insert and the promotion
-- of the next head never miss each other (invariant 2).
CREATE FUNCTION cabbage_lock_line_key(lock_name text) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT hashtextextended('cabbage_lock:' || lock_name, 0) $$;

-- A new job with a lock is the head of its line only when the line is empty (invariant 2).
CREATE FUNCTION cabbage_jobs_place_in_line() RETURNS trigger
    LANGUAGE plpgsql AS $$
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
$$;

CREATE TRIGGER cabbage_jobs_place_in_line BEFORE INSERT ON cabbage_jobs
    FOR EACH ROW EXECUTE FUNCTION cabbage_jobs_place_in_line();

-- A job that leaves the line (finished, cancelled) stops being its head.
CREATE FUNCTION cabbage_jobs_leave_line() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status NOT IN ('todo', 'doing') THEN
        NEW.is_head := false;
    ELSIF NEW.lock IS NULL THEN
        NEW.is_head := true;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER cabbage_jobs_leave_line BEFORE UPDATE OF status ON cabbage_jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION cabbage_jobs_leave_line();

-- When a head leaves its line, or a job comes back into a line with no head (a manual
-- retry), the oldest waiting job of the lock becomes the head (invariant 2).
CREATE FUNCTION cabbage_promote_next_head(lock_name text) RETURNS void
    LANGUAGE plpgsql AS $$
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
$$;

CREATE FUNCTION cabbage_jobs_after_line_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
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
$$;

CREATE TRIGGER cabbage_jobs_after_status_change AFTER UPDATE OF status ON cabbage_jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION cabbage_jobs_after_line_change();

CREATE TRIGGER cabbage_jobs_after_delete AFTER DELETE ON cabbage_jobs
    FOR EACH ROW WHEN (OLD.is_head AND OLD.lock IS NOT NULL)
    EXECUTE FUNCTION cabbage_jobs_after_line_change();

-- Idle workers LISTEN on cabbage_jobs; the payload is the queue. One notification per queue
-- per statement, so a bulk defer costs one notification, not one per job.
CREATE FUNCTION cabbage_notify_new_jobs() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cabbage_jobs', queue)
       FROM (SELECT DISTINCT queue FROM cabbage_new_jobs WHERE is_head) AS queues;
    RETURN NULL;
END
$$;

CREATE TRIGGER cabbage_jobs_notify_new AFTER INSERT ON cabbage_jobs
    REFERENCING NEW TABLE AS cabbage_new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION cabbage_notify_new_jobs();
