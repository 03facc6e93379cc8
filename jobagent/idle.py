"""Worker idle timeout: a Dask preload that retires a worker nobody gives work to.

The operator's ``podWorkerIdleTimeout`` (N seconds, the agent's CE/site value) reaches the
worker as ``--preload <this file> --idle-timeout N`` on the ``dask worker`` command line (see
:func:`podgrid.jobagent.worker.worker_command`). Inside the worker, :func:`dask_setup` starts a
watcher: once the worker has held no task at all (none executing, queued, being fetched or
kept in memory) and seen no task transition for N seconds, counted from the worker's start,
it prints :data:`IDLE_MARK` and calls ``Worker.close_gracefully()``, so the scheduler moves
anything left away first. The process then ends normally and the agent, which reads the mark
from the worker's output, ends the run as ``idle`` and goes back to polling: the slot is
handed back instead of being held by a cluster that does not use it. ``0`` means never.

A worker that still keeps results in memory is not idle: retiring it could lose the only
copy of a result a client still holds. The server idle timeout covers such clusters.

The worker loads this file by path, not as ``podgrid.jobagent.idle``: importing the module
by name would import the whole agent package into every worker (about 0.3 s more before the
worker registers). So it uses only the standard library and click, nothing else of PoD Grid.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import Any, Final

import click

IDLE_MARK: Final = "podgrid.idle: retiring the worker, no task for"
IDLE_REASON: Final = "podgrid-worker-idle-timeout"  # the reason Dask logs for the close
MAX_CHECK_S: Final = 1.0  # seconds between two checks, at most (shorter for short timeouts)
MIN_CHECK_S: Final = 0.05  # seconds between two checks, at least

_watchers: dict[int, asyncio.Task[None]] = {}  # id(worker) -> its watcher


def check_interval_s(idle_timeout_s: float) -> float:
    """How often to look: a tenth of the timeout, within [MIN_CHECK_S, MAX_CHECK_S]."""
    return min(MAX_CHECK_S, max(MIN_CHECK_S, idle_timeout_s / 10))


def busy(worker: Any) -> bool:
    """Whether the worker holds any task (executing, queued, fetching or in memory)."""
    return bool(worker.state.tasks)


async def watch(worker: Any, idle_timeout_s: float) -> None:
    """Close ``worker`` gracefully after ``idle_timeout_s`` seconds without a task."""
    step_s = check_interval_s(idle_timeout_s)
    idle_since = time.monotonic()
    seen = worker.state.transition_counter
    while True:
        await asyncio.sleep(step_s)
        status = worker.status.name
        if status in ("closing", "closing_gracefully", "closed", "failed"):
            return
        now = time.monotonic()
        counter = worker.state.transition_counter
        if counter != seen or busy(worker):
            seen, idle_since = counter, now  # every task resets the clock
            continue
        if status == "running" and now - idle_since >= idle_timeout_s:
            # The agent reads this line from the worker's output: keep it on one line.
            print(f"{IDLE_MARK} {idle_timeout_s:g} s", file=sys.stderr, flush=True)
            _watchers.pop(id(worker), None)  # the close runs teardown: it must not cancel us
            await worker.close_gracefully(reason=IDLE_REASON)
            return


@click.command()
@click.option(
    "--idle-timeout",
    "idle_timeout_s",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds without a task before the worker retires (0: never).",
)
async def dask_setup(worker: Any, idle_timeout_s: float) -> None:
    """Dask preload hook: start the idle watcher of ``worker`` (none for a timeout of 0)."""
    if idle_timeout_s <= 0:
        return
    task = asyncio.get_running_loop().create_task(
        watch(worker, idle_timeout_s), name="podgrid-idle-watch"
    )
    _watchers[id(worker)] = task


async def dask_teardown(worker: Any) -> None:
    """Dask preload hook: stop the watcher when the worker closes for any other reason."""
    task = _watchers.pop(id(worker), None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
