"""The legal moves between request and batch-job states (the states: :mod:`podgrid.protocol`)."""

from __future__ import annotations

from podgrid.protocol.states import JOB_FINAL, REQUEST_FINAL, JobState, RequestState

__all__ = [
    "JOB_FINAL",
    "JOB_LEASED",
    "REQUEST_CHAIN",
    "REQUEST_FINAL",
    "JobState",
    "RequestState",
    "request_move_allowed",
    "request_path",
]

R = RequestState
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
