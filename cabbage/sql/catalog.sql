-- The cabbage schema read back from the database's catalog: every cabbage_ object, in an order
-- and a form that two databases with the same schema print alike. cabbage/schema.py renders
-- them as DDL (`cabbage schema dump`, and cabbage/sql/current/schema.sql).

-- name: catalog_types
-- Enum types and their labels, in order.
SELECT t.typname AS name, array_agg(e.enumlabel::text ORDER BY e.enumsortorder) AS labels
  FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
 WHERE t.typname LIKE 'cabbage\_%'
 GROUP BY 1 ORDER BY 1;

-- name: catalog_sequences
-- Sequences (those behind bigserial columns).
SELECT sequencename AS name, data_type::text AS data_type, increment_by, cache_size
  FROM pg_sequences WHERE sequencename LIKE 'cabbage\_%' ORDER BY 1;

-- name: catalog_columns
-- Every column of every table, in table then column order, with type, nullability and default.
SELECT c.relname AS table_name, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
       a.attnotnull AS not_null, pg_get_expr(d.adbin, d.adrelid) AS default_value
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE c.relname LIKE 'cabbage\_%' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY c.relname, a.attnum;

-- name: catalog_constraints
-- Table constraints (primary keys, checks, uniques), by table and name.
SELECT conrelid::regclass::text AS table_name, conname AS name, pg_get_constraintdef(oid) AS definition
  FROM pg_constraint
 WHERE conrelid <> 0 AND conrelid::regclass::text LIKE 'cabbage\_%'
 ORDER BY 1, 2;

-- name: catalog_indexes
-- Indexes that no constraint creates, by name.
SELECT i.indexname AS name, i.indexdef AS definition
  FROM pg_indexes i
 WHERE i.tablename LIKE 'cabbage\_%'
   AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conname = i.indexname)
 ORDER BY 1;

-- name: catalog_functions
-- Functions with their full definitions (SET options included), by name and arguments.
SELECT proname AS name, pg_get_function_identity_arguments(oid) AS arguments,
       pg_get_functiondef(oid) AS definition
  FROM pg_proc WHERE proname LIKE 'cabbage\_%' ORDER BY 1, 2;

-- name: catalog_triggers
-- Triggers, by table and name.
SELECT tgrelid::regclass::text AS table_name, tgname AS name, pg_get_triggerdef(oid) AS definition
  FROM pg_trigger
 WHERE NOT tgisinternal AND tgrelid::regclass::text LIKE 'cabbage\_%'
 ORDER BY 1, 2;

-- name: catalog_migrations
-- The migrations the database ran, in order (the version bookkeeping of schema_version.sql).
SELECT version, name FROM cabbage_schema_version ORDER BY 1;
