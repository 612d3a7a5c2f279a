"""cabbage-supervisor: the pre-fork master that runs a cabbage app's workers.

    cabbage-supervisor --app proj.tasks --workers 8

The master imports the app once, forks the workers, watches them through the OS and through
their heartbeats in PostgreSQL, and drives stops and reloads on signals. ``supervisor.cli`` is
the command; ``supervisor.master`` the loop; docs/supervisor.md the reference.
"""
