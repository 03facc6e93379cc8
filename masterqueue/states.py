"""Request and batch-job states and the legal moves between them."""

from __future__ import annotations

from enum import StrEnum


class RequestState(StrEnum):
    """Lifecycle of a server request (DESIGN.md, "Master queue")."""

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


R = RequestState
REQUEST_FINAL: frozenset[RequestState] = frozenset({R.DONE, R.CANCELLED, R.EXPIRED, R.FAILED})
# The main chain a broker walks through; broker_report may skip ahead along it.
REQUEST_CHAIN: tuple[RequestState, ...] = (R.WAITING, R.STARTING, R.PUBLISHING, R.READY, R.FULL)
_FORWARD: dict[RequestState, frozenset[RequestState]] = {
    R.WAITING: frozenset({R.STARTING}),
    R.STARTING: frozenset({R.PUBLISHING}),
    R.PUBLISHING: frozenset({R.READY, R.DONE}),
    R.READY: frozenset({R.FULL, R.DONE}),
    R.FULL: frozenset({R.READY, R.DONE}),
}
_ABORT: frozenset[RequestState] = frozenset({R.CANCELLED, R.EXPIRED, R.FAILED})

J = JobState
JOB_FINAL: frozenset[JobState] = frozenset({J.DONE, J.ERROR_E, J.EXPIRED, J.KILLED})
JOB_LEASED: frozenset[JobState] = frozenset({J.ASSIGNED, J.STARTED, J.RUNNING})


def request_move_allowed(current: RequestState, wanted: RequestState) -> bool:
    """Whether a request in ``current`` may move to ``wanted`` (never to itself)."""
    if current in REQUEST_FINAL:
        return False
    return wanted in _ABORT or wanted in _FORWARD.get(current, frozenset())


def request_path(current: RequestState, wanted: RequestState) -> list[RequestState]:
    """The states to pass through from ``current`` to ``wanted``, each one a legal move.

    A direct legal move gives ``[wanted]``; a target further along the main chain gives every
    state in between (a broker reporting FULL while PUBLISHING passes READY first). Empty when
    no legal path exists.
    """
    if request_move_allowed(current, wanted):
        return [wanted]
    if current in REQUEST_CHAIN and wanted in REQUEST_CHAIN:
        start, end = REQUEST_CHAIN.index(current), REQUEST_CHAIN.index(wanted)
        if end > start:
            return list(REQUEST_CHAIN[start + 1 : end + 1])
    return []
