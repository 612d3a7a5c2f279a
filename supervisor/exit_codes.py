"""The exit statuses of cabbage-supervisor and of its children: who returns each and what it means.

The master's statuses tell systemd (and an operator) why it stopped; the children's let the
master tell "stopped as asked" from "no connection slot" from "crashed".
"""

# -- the master (cabbage-supervisor) ----------------------------------------------------------

# A clean stop: TERM, INT or QUIT was received and every child was reaped.
EXIT_OK = 0
# The master itself failed unexpectedly (a bug): the traceback is logged as exception_uncaught.
EXIT_FAILED = 1
# A bad option or CABBAGE_* variable (argparse also exits 2): one line on stderr names it.
EXIT_USAGE = 2
# --app could not be imported or names no TaskManager: logged as app_import_failed, traceback included.
EXIT_APP_IMPORT = 3
# The database has no cabbage schema or an older one: logged as schema_outdated, naming
# `cabbage schema apply`.
EXIT_SCHEMA = 4
# The database could not be reached at start: logged as database_unreachable, DSN redacted.
# (Once running, the master rides out outages instead of exiting.)
EXIT_DATABASE = 5
# Not one child could be started (fork failed: process or memory limits).
EXIT_CHILDREN_FAILED = 6

# -- the children (worker processes) ----------------------------------------------------------

# The child stopped as asked (TERM from the master) or after --max-jobs-per-child jobs; it
# unregistered itself. The master replaces a recycled child at once.
CHILD_STOPPED = 0
# The worker loop raised something unexpected; logged as worker_crashed. Respawned with backoff.
CHILD_CRASHED = 70
# A database error escaped the worker loop, which rides outages out (a bug, not an outage): the
# master reclaims its jobs and respawns it with growing backoff.
CHILD_DATABASE_UNAVAILABLE = 75
# The heartbeat thread saw the master-alive pipe close: the master died, the child exits at once.
CHILD_MASTER_LOST = 76
# The heartbeat found the child's worker row gone (a master reclaimed it as stale): its attempt
# belongs to nobody now, so the child exits at once rather than finish it.
CHILD_WORKER_LOST = 77
# PostgreSQL had no connection slot left for the child (max_connections, or the slots reserved
# for superusers): after a few tries it exits; the master logs the limit and what to do once,
# and respawns it with growing delays while the children that did connect go on.
CHILD_NO_CONNECTION_SLOT = 78
# A def task run in a thread (--concurrency above 1, or --prefetch) passed its timeout=: a
# thread cannot be stopped, so once the child's other jobs were recorded it exits; the master
# reclaims the overrun job (its reports named it) and replaces the child at once.
CHILD_TASK_TIMED_OUT = 79

# What each child status means, for the reason recorded on a lost worker's jobs.
CHILD_STATUS_MEANINGS = {
    CHILD_CRASHED: "the worker loop crashed",
    CHILD_DATABASE_UNAVAILABLE: "it lost the database",
    CHILD_MASTER_LOST: "its master died",
    CHILD_WORKER_LOST: "its worker row was reclaimed",
    CHILD_NO_CONNECTION_SLOT: "the database had no connection slot left for it",
    CHILD_TASK_TIMED_OUT: "a job of its threads timed out",
}
