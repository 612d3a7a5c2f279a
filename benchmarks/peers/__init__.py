"""The peers side of the benchmarks: one script per peer, run with the peers virtualenv."""
