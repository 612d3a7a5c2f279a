"""cabbage's benchmarks: one command, one JSON line per figure.

    python -m benchmarks [--quick] [--only NAME,...] [--compare procrastinate,pgqueuer,oban,chancy] [--dsn DSN]

Each workload runs in a fresh database and prints its figures as JSON lines on stdout, each with
the figure recorded last time (benchmarks/results/latest.jsonl) and the change since. Progress
and a summary of the targets go to stderr. Benchmarks are not tests: no timing ever fails a run.
"""
