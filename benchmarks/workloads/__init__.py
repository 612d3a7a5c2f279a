"""The workloads, one module each; cli.py runs them in order."""
