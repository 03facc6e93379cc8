"""Request and batch-job states, as every part and the API spell them."""

from __future__ import annotations

from enum import StrEnum


class RequestState(StrEnum):
    """Lifecycle of a server request."""

    WAITING = "WAITING"
    STARTING = "STARTING"
    PUBLISHING = "PUBLISHING"
    READY = "READY"
    FULL = "FULL"
    DONE = "DONE"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    FAILED = "FAILED"


class JobState(StrEnum):
    """AliEn's batch-job states."""

    WAITING = "WAITING"
    ASSIGNED = "ASSIGNED"
    STARTED = "STARTED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    ERROR_E = "ERROR_E"
    EXPIRED = "EXPIRED"
    KILLED = "KILLED"


REQUEST_FINAL: frozenset[RequestState] = frozenset(
    {RequestState.DONE, RequestState.CANCELLED, RequestState.EXPIRED, RequestState.FAILED}
)
READY_STATES: frozenset[RequestState] = frozenset({RequestState.READY, RequestState.FULL})
JOB_FINAL: frozenset[JobState] = frozenset(
    {JobState.DONE, JobState.ERROR_E, JobState.EXPIRED, JobState.KILLED}
)
