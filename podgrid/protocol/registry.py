"""The registry names PoD Grid publishes under: clusters and parameters (MonALISA series).

Brokers publish ``PoD_Masters/<request id>/<MasterParam>``, agents
``PoD_Agents_<site>/<agent id>/<AgentParam>`` and the master queue
``PoD_MasterQueue/batch/<QueueParam>``; agents, the dashboard and ``/metrics`` read them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

MASTERS_CLUSTER: Final = "PoD_Masters"
AGENTS_CLUSTER_PREFIX: Final = "PoD_Agents_"
QUEUE_CLUSTER: Final = "PoD_MasterQueue"
QUEUE_NODE: Final = "batch"


class MasterParam(StrEnum):
    """What a broker publishes about its cluster (node = the request id)."""

    ADDRESS = "Address"  # the attach URL
    NEEDED_WORKERS = "NeededWorkers"
    MIN_WORKERS = "MinWorkers"
    MAX_WORKERS = "MaxWorkers"
    WORKERS = "Workers"
    STATE = "State"
    OWNER = "Owner"
    REQUIREMENTS = "Requirements"  # compact JSON of podgrid.protocol.Requirements
    EXPIRES = "Expires"  # epoch seconds


class AgentParam(StrEnum):
    """What a job agent publishes about itself (node = the agent id)."""

    STATE = "State"
    SERVER = "Server"
    JOB_ID = "JobId"
    REMAINING_TTL = "RemainingTTL"
    SECONDS_POLLING = "SecondsPolling"
    SECONDS_WORKER = "SecondsWorker"
    SECONDS_BATCH = "SecondsBatch"
    SECONDS_IDLE = "SecondsIdle"


class QueueParam(StrEnum):
    """What the master queue publishes about its batch queue."""

    WAITING_JOBS = "WaitingJobs"
    RUNNING_JOBS = "RunningJobs"
    ACTIVE_REQUESTS = "ActiveRequests"


def agents_cluster(site: str) -> str:
    """The registry cluster of a site's agents."""
    return f"{AGENTS_CLUSTER_PREFIX}{site}"
