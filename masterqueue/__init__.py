"""The master queue: the system of record for server requests and batch jobs.

Stores requests and jobs (MariaDB or SQLite through SQLAlchemy Core), matches batch jobs to
agents exactly once, and launches brokers on master hosts. :class:`Store` is the storage API;
the HTTP layer maps the errors below to status codes (see :mod:`masterqueue.errors`).
"""

from masterqueue.errors import (
    Conflict,
    DatabaseUnavailable,
    IllegalTransition,
    LeaseLost,
    MasterQueueError,
    NotFound,
    NotOwner,
    StaleLease,
)
from masterqueue.hosts import MasterHost
from masterqueue.migrate import migrate
from masterqueue.models import (
    Claim,
    JobEvent,
    JobRecord,
    JobSpec,
    Principal,
    RequestEvent,
    RequestRecord,
    Role,
    SlotDescription,
    WorkerInfo,
)
from masterqueue.states import JobState, RequestState
from masterqueue.store import Store
from masterqueue.sweeps import Swept

__all__ = [
    "Claim",
    "Conflict",
    "DatabaseUnavailable",
    "IllegalTransition",
    "JobEvent",
    "JobRecord",
    "JobSpec",
    "JobState",
    "LeaseLost",
    "MasterHost",
    "MasterQueueError",
    "NotFound",
    "NotOwner",
    "Principal",
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
