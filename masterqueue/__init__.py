"""The master queue: the system of record for server requests and batch jobs.

Stores requests and jobs (MariaDB or SQLite through SQLAlchemy Core), matches batch jobs to
agents exactly once, and launches brokers on master hosts.
"""

__all__: list[str] = []
