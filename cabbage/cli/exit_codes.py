"""The `cabbage` command's exit statuses: each says who returns it and what it means."""

EXIT_OK = 0
# The command could not do what was asked: a job in the wrong state, the database unreachable,
# the schema missing or old (`schema check`), or unhealthy (`healthcheck`).
EXIT_FAILED = 1
# A bad command line: an unknown option, a bad duration, bad JSON, conflicting options.
EXIT_USAGE = 2
# A job id that no job has (`jobs show`, `jobs retry`, `jobs cancel`).
EXIT_NOT_FOUND = 3
# Ctrl-C (SIGINT) stopped the command; what was committed before stays (prune batches, for one).
EXIT_INTERRUPTED = 130
