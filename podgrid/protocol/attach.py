"""The broker's attach API: ``POST /v1/attach`` and ``POST /v1/detach`` (agent token).

``POST /v1/attach`` takes an :class:`AttachRequest` (the slot plus a CSR for a key the agent
made) and answers 200 :class:`AttachGrant` (the worker's certificate, never a key), or 409 with
the error body's ``reason`` one of :data:`REFUSALS` (and ``unmet``, the unmet requirements in
words, for ``requirements``). ``POST /v1/sign`` (the master queue only, with the request's
sign secret) takes a :class:`SignRequest` and answers :class:`SignReply`.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from podgrid.protocol.csr import MAX_CSR_CHARS
from podgrid.protocol.records import SlotDescription

Refusal = Literal["full", "closed", "requirements"]
REFUSALS: Final[tuple[Refusal, ...]] = ("full", "closed", "requirements")
Name = Annotated[StrictStr, Field(min_length=1, max_length=128)]
Csr = Annotated[StrictStr, Field(min_length=1, max_length=MAX_CSR_CHARS)]


class AttachRequest(SlotDescription):
    """``POST /v1/attach``: the agent's slot and a PEM CSR for the worker's key (see ``csr``).

    The key stays with the agent; the broker signs the CSR for the reserved worker name.
    """

    csr: Csr


class AttachGrant(BaseModel):
    """What an agent needs to run one Dask worker of the cluster (the key is the agent's own).

    ``tls_cert`` is signed for the agent's CSR, says ``worker:<name>`` and expires with the
    cluster; the scheduler admits it only as the worker called ``name``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    request_id: int
    scheduler_address: str
    tls_ca: str
    tls_cert: str
    nthreads: int
    memory_limit: str  # as ``dask worker --memory-limit`` takes it, e.g. "2048MiB"
    memory_limit_mb: int
    lifetime_s: int
    attach_timeout_s: float


class DetachRequest(BaseModel):
    """``POST /v1/detach``: the place an agent gives back."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_id: Name
    name: Name


class DetachReply(BaseModel):
    """The answer to a detach: a reservation freed, or a running worker retired."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    released: Literal["reservation", "worker"]


class SignRequest(BaseModel):
    """``POST /v1/sign`` (master queue → broker): the owner's CSR to sign."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    csr: Csr


class SignReply(BaseModel):
    """The owner's client certificate (``owner:<user>``, client use only) and the cluster CA."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tls_client_cert: str
    tls_ca: str
