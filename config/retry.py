"""One tenacity retry policy per kind of call, instrumented in one place.

Every retry logs one ``retry.scheduled`` event and bumps ``podgrid_retry_attempts_total``
labelled with the kind of call, so operators see flapping dependencies in logs and metrics.
Tests call :func:`set_testing` to switch the back-off off instead of sleeping.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
import tenacity
from prometheus_client import Counter

log = structlog.get_logger("podgrid.retry")

RETRY_ATTEMPTS = Counter(
    "podgrid_retry_attempts_total",
    "Calls retried after a transient failure, by kind of call.",
    ["kind"],
)

_testing = False


def set_testing(on: bool = True) -> None:
    """Make every policy built afterwards retry without waiting (for tests)."""
    global _testing
    _testing = on


def _before_sleep(kind: str) -> Callable[[tenacity.RetryCallState], None]:
    def hook(state: tenacity.RetryCallState) -> None:
        RETRY_ATTEMPTS.labels(kind=kind).inc()
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "retry.scheduled",
            kind=kind,
            attempt=state.attempt_number,
            sleep_s=round(state.upcoming_sleep, 3),
            error=repr(exc),
        )

    return hook


def retry_policy(
    kind: str,
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    attempts: int | None = 5,
    initial_s: float = 0.1,
    max_backoff_s: float = 5.0,
    deadline_s: float | None = None,
) -> tenacity.AsyncRetrying:
    """An async retry policy: exponential back-off with jitter, bounded by attempts/deadline.

    ``attempts=None`` with ``deadline_s=None`` retries forever (background refreshers).
    The last exception is re-raised unchanged when the policy gives up.
    """
    stops: list[tenacity.stop.stop_base] = []
    if attempts is not None:
        stops.append(tenacity.stop_after_attempt(attempts))
    if deadline_s is not None:
        # Give up rather than sleep past the deadline (stop_after_delay would sleep first).
        stops.append(tenacity.stop_before_delay(deadline_s))
    stop: tenacity.stop.stop_base = tenacity.stop_never
    for s in stops:
        stop = s if stop is tenacity.stop_never else stop | s
    wait: tenacity.wait.wait_base = (
        tenacity.wait_none()
        if _testing
        else tenacity.wait_random_exponential(multiplier=initial_s, max=max_backoff_s)
    )
    return tenacity.AsyncRetrying(
        stop=stop,
        wait=wait,
        retry=tenacity.retry_if_exception_type(retry_on),
        before_sleep=_before_sleep(kind),
        reraise=True,
    )
