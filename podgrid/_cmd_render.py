"""How the user commands show requests, workers and jobs: rich tables, lines and a progress bar.

Pure functions of the records (no I/O besides the console they are given), so they are tested
without a server.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from podgrid.config.units import format_duration
from podgrid.protocol import (
    REQUEST_FINAL,
    JobDetail,
    JobRecord,
    RequestDetail,
    RequestRecord,
    WorkerInfo,
)


def console(stderr: bool = False) -> Console:
    """A console on the current stdout (or stderr), resolved at call time (tests capture it)."""
    return Console(file=sys.stderr if stderr else sys.stdout, soft_wrap=True)


def when(at: datetime | None) -> str:
    """A UTC time as ``YYYY-MM-DD HH:MM:SS``; ``-`` when unknown."""
    if at is None:
        return "-"
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def workers_text(record: RequestRecord) -> str:
    """Attached workers against the request's bounds, e.g. ``3 (min 2, max 4)``."""
    req = record.request
    return f"{record.worker_count} (min {req.min_workers}, max {req.max_workers})"


def state_text(record: RequestRecord) -> str:
    """The state, with the reason of a final state (``FAILED: broker exited with 1``)."""
    if record.reason and record.state in REQUEST_FINAL:
        return f"{record.state}: {record.reason}"
    return str(record.state)


def requests_table(records: Iterable[RequestRecord]) -> Table:
    """``podgrid ls``: one row per request."""
    table = Table(title_justify="left")
    for name in ("ID", "NAME", "STATE", "WORKERS", "CREATED (UTC)", "REASON"):
        table.add_column(name, overflow="fold")
    for r in records:
        row = [str(r.id), r.name, str(r.state), workers_text(r), when(r.created_at), r.reason]
        table.add_row(*[cell or "" for cell in row])
    return table


def workers_table(workers: Iterable[WorkerInfo]) -> Table:
    """``podgrid info -l``: every worker with its host, site and startup time."""
    table = Table(title_justify="left")
    for name in ("WORKER", "HOST", "SITE", "AGENT", "ATTACHED (UTC)", "STARTUP"):
        table.add_column(name, overflow="fold")
    for w in workers:
        startup = "-" if w.startup_s is None else f"{w.startup_s:.2f} s"
        table.add_row(w.name, w.host, w.site, w.agent_id, when(w.attached_at), startup)
    return table


def request_table(detail: RequestDetail) -> Table:
    """``podgrid info`` without flags: the request's fields and its timeline."""
    req = detail.request
    table = Table(title=f"request {detail.id}", title_justify="left", show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    rows = [
        ("name", detail.name),
        ("owner", detail.owner),
        ("state", state_text(detail)),
        ("workers", workers_text(detail)),
        ("address", detail.address or "-"),
        ("master host", detail.master_host or "-"),
        ("max wait", format_duration(req.max_wait_s)),
        ("ttl", format_duration(req.ttl_s)),
        ("worker spec", f"{req.worker.cores} cores, {req.worker.memory_mb} MiB"),
        ("packages", ", ".join(req.worker.packages) or "(none)"),
        ("sites", ", ".join(req.worker.sites) or "(any)"),
        ("created", when(detail.created_at)),
        ("last heartbeat", when(detail.last_heartbeat)),
    ]
    for event in detail.timeline:
        reason = f" ({event.reason})" if event.reason else ""
        rows.append((f"  {when(event.at)}", f"{event.state}{reason}"))
    for field, value in rows:
        table.add_row(field, value)
    return table


def jobs_table(jobs: Iterable[JobRecord]) -> Table:
    """``podgrid jobs ls``: one row per batch job."""
    table = Table(title_justify="left")
    for name in ("ID", "STATE", "COMMAND", "ATTEMPTS", "EXIT", "AGENT", "CREATED (UTC)"):
        table.add_column(name, overflow="fold")
    for j in jobs:
        exit_code = "" if j.exit_code is None else str(j.exit_code)
        table.add_row(
            str(j.id),
            str(j.state),
            " ".join(j.spec.command),
            f"{j.attempts}/{j.spec.max_attempts}",
            exit_code,
            j.agent_id or "",
            when(j.created_at),
        )
    return table


def job_table(job: JobDetail) -> Table:
    """``podgrid jobs show``: one job's fields and its history."""
    spec = job.spec
    table = Table(title=f"job {job.id}", title_justify="left", show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    rows = [
        ("state", str(job.state)),
        ("command", " ".join(spec.command)),
        ("env", " ".join(f"{k}={v}" for k, v in sorted(spec.env.items())) or "-"),
        ("requirements", f"{spec.cores} cores, {spec.memory_mb} MiB, ttl {spec.ttl_s} s"),
        ("packages", ", ".join(spec.packages) or "(none)"),
        ("sites", ", ".join(spec.sites) or "(any)"),
        ("priority", str(spec.priority)),
        ("attempts", f"{job.attempts}/{spec.max_attempts}"),
        ("agent", job.agent_id or "-"),
        ("lease expires", when(job.lease_expires_at)),
        ("exit code", "-" if job.exit_code is None else str(job.exit_code)),
        ("created", when(job.created_at)),
        ("updated", when(job.updated_at)),
    ]
    for event in job.history:
        agent = f" on {event.agent_id}" if event.agent_id else ""
        reason = f" ({event.reason})" if event.reason else ""
        rows.append((f"  {when(event.at)}", f"{event.state}{agent}{reason}"))
    for field, value in rows:
        table.add_row(field, value)
    return table


class WaitProgress:
    """``podgrid submit --wait``: a bar of attached workers out of ``max_workers``.

    The bar's label carries the state and ``n/min/max``; :meth:`update` takes each polled record.
    """

    def __init__(self, out: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.fields[state]:<10}"),
            BarColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=out or console(stderr=True),
            transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def update(self, record: RequestRecord) -> None:
        """Show the record's state and attached workers."""
        req = record.request
        counts = f"{record.worker_count}/{req.min_workers}/{req.max_workers} workers (n/min/max)"
        if self._task is None:
            self._task = self._progress.add_task(
                f"request {record.id}", total=req.max_workers, state="", counts=""
            )
        self._progress.update(
            self._task,
            completed=min(record.worker_count, req.max_workers),
            state=str(record.state),
            counts=counts,
        )
