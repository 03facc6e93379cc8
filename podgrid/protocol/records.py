"""The master queue's records as every part sees them: requests, jobs, slots and claims.

Times are timezone-aware UTC ``datetime`` objects (ISO 8601 strings on the wire); the
database keeps them as integer epoch milliseconds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr, field_validator

from podgrid.config.request import PackageName, ServerRequest, SiteName
from podgrid.protocol.connection import ConnectionInfo
from podgrid.protocol.states import JobState, RequestState

Role = Literal["user", "agent", "broker", "admin"]
ROLES: tuple[Role, ...] = ("user", "agent", "broker", "admin")

MAX_JOB_TTL_S = 30 * 86400  # seconds
DEFAULT_JOB_TTL_S = 3600  # seconds
DEFAULT_MAX_ATTEMPTS = 3
AgentId = Annotated[StrictStr, Field(min_length=1, max_length=128)]
# What execve(2) can carry, checked at submit so a job that no agent can start never enters
# the queue (a NUL or an "=" in an env name used to escape the agent's runner and kill it).
MAX_ARGV_ITEMS: Final = 4096
MAX_ARGV_BYTES: Final = 128 * 1024  # UTF-8 bytes of all argv elements together
MAX_ENV_ITEMS: Final = 1024
MAX_ENV_BYTES: Final = 128 * 1024  # UTF-8 bytes of every NAME=value together


def _no_nul(text: str) -> str:
    """``text`` unless it holds a NUL, which no C string (argv, environment) can carry."""
    if "\0" in text:
        raise ValueError(f"must not contain a NUL byte (at character {text.index(chr(0))})")
    return text


def _env_name(name: str) -> str:
    """``name`` unless execve could not pass it: a NUL, or an ``=`` (it ends the name)."""
    _no_nul(name)
    if "=" in name:
        raise ValueError("an environment variable name must not contain '='")
    return name


ArgvItem = Annotated[StrictStr, Field(min_length=1), AfterValidator(_no_nul)]
EnvName = Annotated[StrictStr, Field(min_length=1), AfterValidator(_env_name)]
EnvValue = Annotated[StrictStr, AfterValidator(_no_nul)]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WorkerInfo(_Record):
    """One Dask worker attached to a request's cluster, as its broker reports it."""

    name: str
    host: str
    site: str
    agent_id: str
    attached_at: datetime
    startup_s: float | None = None


class RequestRecord(_Record):
    """A server request and what its broker last reported.

    ``connection`` is for the owner only: use :meth:`public` before showing the record to
    anyone else (the API never includes it; see ``GET /v1/requests/{id}/connection``).
    """

    id: int
    owner: str
    name: str
    state: RequestState
    reason: str | None
    request: ServerRequest
    created_at: datetime
    updated_at: datetime
    broker_token_id: int | None = None
    master_host: str | None = None
    address: str | None = None
    workers: list[WorkerInfo] = Field(default_factory=list)
    worker_count: int = 0
    connection: ConnectionInfo | None = None
    last_heartbeat: datetime | None = None

    def public(self) -> RequestRecord:
        """The record without the owner-only connection."""
        return self.model_copy(update={"connection": None})


class RequestEvent(_Record):
    """One entry of a request's timeline."""

    state: RequestState
    reason: str | None
    at: datetime


class RequestDetail(RequestRecord):
    """``GET /v1/requests/{id}``: the record plus its timeline (every state change)."""

    timeline: list[RequestEvent] = Field(default_factory=list)
    version: str = Field(
        "", description="for ?since= of a long-poll: changes with the timeline, workers, address"
    )


class JobSpec(_Record):
    """A batch job as submitted: an argv (no shell), its environment and requirements."""

    command: list[ArgvItem] = Field(min_length=1, max_length=MAX_ARGV_ITEMS)
    env: dict[EnvName, EnvValue] = Field(default_factory=dict, max_length=MAX_ENV_ITEMS)
    cores: int = Field(1, ge=1, le=1024)
    memory_mb: int = Field(1024, ge=1)
    ttl_s: int = Field(DEFAULT_JOB_TTL_S, ge=1, le=MAX_JOB_TTL_S)
    packages: tuple[PackageName, ...] = ()
    sites: tuple[SiteName, ...] = Field((), description="empty: any site")
    priority: int = Field(0, ge=-1000, le=1000)
    max_attempts: int = Field(DEFAULT_MAX_ATTEMPTS, ge=1, le=100)

    @field_validator("command")
    @classmethod
    def _argv_fits(cls, command: list[str]) -> list[str]:
        """The whole argv within MAX_ARGV_BYTES (each element already checked alone)."""
        size = sum(len(arg.encode()) + 1 for arg in command)
        if size > MAX_ARGV_BYTES:
            raise ValueError(f"the argv is {size} bytes; at most {MAX_ARGV_BYTES} are allowed")
        return command

    @field_validator("env")
    @classmethod
    def _env_fits(cls, env: dict[str, str]) -> dict[str, str]:
        """The whole environment within MAX_ENV_BYTES (as NAME=value strings)."""
        size = sum(len(k.encode()) + len(v.encode()) + 2 for k, v in env.items())
        if size > MAX_ENV_BYTES:
            raise ValueError(f"the env is {size} bytes; at most {MAX_ENV_BYTES} are allowed")
        return env


class JobRecord(_Record):
    """A batch job and where it stands; ``lease_expires_at`` only while an agent holds it."""

    id: int
    owner: str
    spec: JobSpec
    state: JobState
    attempts: int
    agent_id: str | None
    lease_expires_at: datetime | None
    exit_code: int | None
    created_at: datetime
    updated_at: datetime


class JobEvent(_Record):
    """One entry of a job's history (who held it, what happened)."""

    state: JobState
    agent_id: str | None
    reason: str | None
    at: datetime


class JobDetail(JobRecord):
    """``GET /v1/jobs/{id}``: the job plus its history."""

    history: list[JobEvent] = Field(default_factory=list)


class SlotDescription(_Record):
    """What a job agent's batch slot offers (``POST /v1/match`` and ``POST /v1/attach``)."""

    agent_id: AgentId
    site: SiteName
    ce: str = ""
    host: str = ""
    cores: int = Field(ge=1)
    memory_mb: int = Field(ge=1)
    ttl_s: int = Field(ge=1)
    packages: tuple[PackageName, ...] = ()


class Claim(_Record):
    """A job handed to one agent: ``lease_token`` fences every later heartbeat and finish."""

    job: JobRecord
    lease_token: str
    lease_s: float
