"""``GET /v1/servers``: the PoD servers the master queue vouches for (agent token).

The registry takes values from anyone who can send a datagram, so a published ``Address`` is
only a hint: an agent attaches (and shows its token) only to an attach URL that the master
queue holds for an active request, as reported by that request's own broker.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class VouchedServer(BaseModel):
    """One active request and the attach URL its broker reported."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int
    attach_url: str


class ServerList(BaseModel):
    """Every active request with an attach URL (states PUBLISHING, READY, FULL)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    servers: list[VouchedServer] = Field(default_factory=list)
