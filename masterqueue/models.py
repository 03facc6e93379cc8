"""Records of the master queue that never leave it (the wire ones: :mod:`podgrid.protocol`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from podgrid.protocol import Role


class Principal(BaseModel):
    """Who a bearer token belongs to; ``request_id`` is set for a per-request broker token."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token_id: int
    name: str
    role: Role
    request_id: int | None = None
