-- The claim fetches the rows it claims by primary key, whatever the table's size.
--
-- A plpgsql function plans its statements once per session (plan_cache_mode =
-- force_generic_plan). A session whose first claim ran while the table held a few thousand
-- jobs planned the UPDATE as a hash join of the candidates with a sequential scan of the whole
-- table: 1.2 ms per claim on 5,000 jobs against 0.5 ms by primary key, and a plan kept until
-- the next ANALYZE, reading every row on every claim while a backlog arrives (invariant 6).
-- The candidates are at most p_limit rows: a nested loop over the primary key is always the
-- right join.
ALTER FUNCTION cabbage_claim_jobs_v1(bigint, text[], integer) SET enable_hashjoin = off;
ALTER FUNCTION cabbage_claim_jobs_v1(bigint, text[], integer) SET enable_mergejoin = off;
