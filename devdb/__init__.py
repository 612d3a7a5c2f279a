"""The private PostgreSQL of the repository's demo, tests and benchmarks; not part of the library.

- ``devdb.servers``: which server to use (CABBAGE_DSN, libpq's PG* variables, the local one);
- ``devdb.binaries``: the server's programs and the account that runs them (not root);
- ``devdb.cluster``: a private, socket-only cluster's life, and the sweep of leaked ones;
- ``devdb.cli``: ``python -m devdb run [--keep] -- CMD ARGS...``, ``dsn``, ``stop``.

It prints short progress lines on stderr, never a password. The failure modes it handles are
in shared/notes/dev-database.md.
"""
