"""``GET /v1/servers`` and ``POST /v1/requests/{id}/certificate``: how agents know real servers.

The registry takes values from anyone who can send a datagram, so a published ``Address`` is
only a hint: an agent attaches only to an attach URL that the master queue holds for an active
request, as reported by that request's own broker. Each entry carries an attach *ticket*: a
short-lived credential for that one broker, made for the asking agent (the agent's own token
never leaves the agent and the master queue; a broker runs its owner's code in its
scheduler). The broker's HTTPS certificate is signed by the master queue's broker CA
(``broker_ca``) for the name ``request-<id>.brokers.podgrid`` (``server_name``): an agent
trusts that CA alone for brokers and checks that name, so nobody else can pose as a server.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from podgrid.protocol.csr import MAX_CSR_CHARS


class VouchedServer(BaseModel):
    """One active request, the attach URL its broker reported and a ticket to attach there."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int
    attach_url: str
    server_name: str = Field(description="the name in the broker's HTTPS certificate")
    ticket: str = Field(repr=False, description="Authorization: Bearer <ticket> at this broker")
    ticket_expires: int = Field(description="epoch seconds")


class ServerList(BaseModel):
    """Every active request with an attach URL (PUBLISHING, READY, FULL) and the broker CA."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    servers: list[VouchedServer] = Field(default_factory=list)
    broker_ca: str = Field(description="PEM: the only CA an agent trusts for brokers")


class ServerCertificateRequest(BaseModel):
    """A broker's CSR for its HTTPS key (which never leaves the broker)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    csr: str = Field(min_length=1, max_length=MAX_CSR_CHARS)


class ServerCertificate(BaseModel):
    """The broker's HTTPS certificate, the CA that signed it and the name it certifies."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    certificate: str
    ca: str
    server_name: str
