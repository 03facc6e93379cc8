"""The one retry policy: bounded by attempts or a deadline, instrumented, never oversleeping."""

from __future__ import annotations

import time
from typing import Any

import structlog.testing
from prometheus_client import REGISTRY

from podgrid.config import retry as retry_module
from podgrid.config.retry import retry_policy, set_testing


class Flaky(Exception):
    pass


def _attempts_total(kind: str) -> float:
    value = REGISTRY.get_sample_value("podgrid_retry_attempts_total", {"kind": kind})
    return value or 0.0


async def _always_failing(**policy_kwargs: Any) -> int:
    """How many calls the policy made before it gave up and re-raised."""
    calls = 0
    try:
        async for attempt in retry_policy("test", retry_on=Flaky, **policy_kwargs):
            with attempt:
                calls += 1
                raise Flaky
    except Flaky:
        return calls
    raise AssertionError("the policy must re-raise the last error")


async def test_deadline_is_never_overslept() -> None:
    was_testing = retry_module._testing
    set_testing(False)  # real back-off sleeps
    try:
        started = time.monotonic()
        # Back-off sleeps of up to several seconds must not carry the caller past 0.3 s.
        await _always_failing(attempts=None, deadline_s=0.3, initial_s=2.0)
        took = time.monotonic() - started
    finally:
        set_testing(was_testing)
    assert took < 0.5


async def test_attempts_bound_logs_and_counts_each_retry() -> None:
    before = _attempts_total("test")
    with structlog.testing.capture_logs() as logs:
        calls = await _always_failing(attempts=4)
    assert calls == 4
    assert _attempts_total("test") - before == 3  # retries, not the first call
    assert [e["attempt"] for e in logs if e["event"] == "retry.scheduled"] == [1, 2, 3]
