"""How many requests and jobs are in each state (for the ``/metrics`` gauges).

Read-only and cheap: ``GROUP BY state`` on indexed columns.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from podgrid.masterqueue.schema import jobs, requests


async def state_counts(conn: AsyncConnection) -> tuple[dict[str, int], dict[str, int]]:
    """(requests by state, jobs by state)."""
    req = await conn.execute(
        sa.select(requests.c.state, sa.func.count()).group_by(requests.c.state)
    )
    request_counts = {str(state): int(n) for state, n in req.all()}
    job = await conn.execute(sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state))
    job_counts = {str(state): int(n) for state, n in job.all()}
    return request_counts, job_counts
