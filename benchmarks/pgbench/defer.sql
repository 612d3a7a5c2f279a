-- A defer: one single-row insert, one commit.
INSERT INTO bench_jobs (args) VALUES ('[]') RETURNING id;
