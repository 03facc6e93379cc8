"""The master queue: the system of record for server requests and batch jobs.

Stores requests and jobs (MariaDB or SQLite through SQLAlchemy Core), matches batch jobs to
agents exactly once, and launches brokers on master hosts. :class:`Store` is the storage API;
the HTTP layer maps the errors below to status codes (see :mod:`podgrid.masterqueue.errors`).
"""

from typing import TYPE_CHECKING, Any

from podgrid.masterqueue.errors import (
    DatabaseUnavailable,
    IdempotencyConflict,
    IllegalTransition,
    LeaseLost,
    MasterQueueError,
    NotOwner,
    RecordNotFound,
    StaleLease,
)
from podgrid.masterqueue.models import Principal
from podgrid.protocol import (
    Claim,
    JobEvent,
    JobRecord,
    JobSpec,
    JobState,
    RequestEvent,
    RequestRecord,
    RequestState,
    Role,
    SlotDescription,
    WorkerInfo,
)

if TYPE_CHECKING:
    from podgrid.masterqueue.hosts import MasterHost
    from podgrid.masterqueue.migrate import migrate
    from podgrid.masterqueue.store import Store
    from podgrid.masterqueue.sweeps import Swept

# The storage layer pulls in SQLAlchemy and Alembic (~0.6 s); brokers and agents import this
# package only for the client and the models, so these names load on first use.
_LAZY = {
    "MasterHost": "podgrid.masterqueue.hosts",
    "migrate": "podgrid.masterqueue.migrate",
    "Store": "podgrid.masterqueue.store",
    "Swept": "podgrid.masterqueue.sweeps",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'masterqueue' has no attribute {name!r}")


__all__ = [
    "Claim",
    "DatabaseUnavailable",
    "IdempotencyConflict",
    "IllegalTransition",
    "JobEvent",
    "JobRecord",
    "JobSpec",
    "JobState",
    "LeaseLost",
    "MasterHost",
    "MasterQueueError",
    "NotOwner",
    "Principal",
    "RecordNotFound",
    "RequestEvent",
    "RequestRecord",
    "RequestState",
    "Role",
    "SlotDescription",
    "StaleLease",
    "Store",
    "Swept",
    "WorkerInfo",
    "migrate",
]
