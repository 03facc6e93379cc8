"""Master hosts: where the launcher may start brokers (``podMasterHosts``)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncConnection

from podgrid.masterqueue.db import from_ms, from_ms_required, now_ms
from podgrid.masterqueue.schema import master_hosts


class MasterHost(BaseModel):
    """A PoD-aware master host and how brokers are started there."""

    model_config = ConfigDict(frozen=True)

    name: str
    address: str
    launcher: str
    enabled: bool
    created_at: datetime
    seen_at: datetime | None


async def upsert(
    conn: AsyncConnection, name: str, address: str, launcher: str, enabled: bool
) -> MasterHost:
    """Create or update a host by name (marks it seen now)."""
    h = master_hosts.c
    at = now_ms()
    values = {"address": address, "launcher": launcher, "enabled": enabled, "seen_ms": at}
    result = await conn.execute(master_hosts.update().where(h.name == name).values(**values))
    if result.rowcount == 0:
        await conn.execute(master_hosts.insert().values(name=name, created_ms=at, **values))
    return (await listing(conn, name=name))[0]


async def listing(
    conn: AsyncConnection, *, name: str | None = None, enabled_only: bool = False
) -> list[MasterHost]:
    """Hosts by name."""
    q = sa.select(master_hosts).order_by(master_hosts.c.name)
    if name is not None:
        q = q.where(master_hosts.c.name == name)
    if enabled_only:
        q = q.where(master_hosts.c.enabled.is_(True))
    return [
        MasterHost(
            name=r["name"],
            address=r["address"],
            launcher=r["launcher"],
            enabled=bool(r["enabled"]),
            created_at=from_ms_required(r["created_ms"]),
            seen_at=from_ms(r["seen_ms"]),
        )
        for r in (await conn.execute(q)).mappings()
    ]
