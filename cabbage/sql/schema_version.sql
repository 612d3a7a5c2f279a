-- The schema's own bookkeeping: which migrations a database has, and applying them one at a time.
-- Used by cabbage/schema.py (`cabbage schema apply`) and by the stores' check_schema().

-- name: lock_schema_changes
-- Serialises concurrent `cabbage schema apply` runs until the applying transaction ends.
SELECT pg_advisory_xact_lock(hashtextextended('cabbage_schema_apply', 0));

-- name: create_schema_version_table
-- The table that records each applied migration; created before the first one runs.
CREATE TABLE IF NOT EXISTS cabbage_schema_version (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: find_schema_version_table
-- Whether the database has a cabbage schema at all (no table: never applied).
SELECT to_regclass('cabbage_schema_version') IS NOT NULL AS has_schema;

-- name: read_schema_version
-- The highest migration applied to this database (NULL when the table is empty).
SELECT max(version) AS version FROM cabbage_schema_version;

-- name: record_schema_version
-- Records that one migration ran, in the transaction that ran it.
INSERT INTO cabbage_schema_version (version, name) VALUES (%(version)s, %(name)s);
