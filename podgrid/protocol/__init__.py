"""Every message that crosses a process boundary, defined once and imported by both ends.

Master-queue records and API bodies, the broker's attach API, the connection info a user
gets, the registry's cluster and parameter names, the requirement-fit rule, and the one
error body. The services validate what they receive with these models; the clients decode
what they get back with the same ones.
"""

from podgrid.protocol.api import (
    ConnectionReply,
    Health,
    JobFinish,
    JobHeartbeat,
    JobPage,
    JobRelease,
    LeaseRenewed,
    RequestPage,
    StateReply,
    StateReport,
    TokenCreate,
    TokenCreated,
    WhoAmI,
)
from podgrid.protocol.attach import (
    REFUSALS,
    AttachGrant,
    AttachRequest,
    DetachReply,
    DetachRequest,
    Refusal,
    SignReply,
    SignRequest,
)
from podgrid.protocol.connection import ConnectionInfo, ConnectionRequest
from podgrid.protocol.csr import MAX_CSR_CHARS
from podgrid.protocol.errors import ErrorBody, FieldIssue
from podgrid.protocol.records import (
    DEFAULT_JOB_TTL_S,
    DEFAULT_MAX_ATTEMPTS,
    MAX_JOB_TTL_S,
    ROLES,
    Claim,
    JobDetail,
    JobEvent,
    JobRecord,
    JobSpec,
    RequestDetail,
    RequestEvent,
    RequestRecord,
    Role,
    SlotDescription,
    WorkerInfo,
)
from podgrid.protocol.registry import (
    AGENTS_CLUSTER_PREFIX,
    MASTERS_CLUSTER,
    QUEUE_CLUSTER,
    QUEUE_NODE,
    AgentParam,
    MasterParam,
    QueueParam,
    agents_cluster,
)
from podgrid.protocol.requirements import Requirements, unmet
from podgrid.protocol.servers import ServerList, VouchedServer
from podgrid.protocol.states import (
    JOB_FINAL,
    READY_STATES,
    REQUEST_FINAL,
    JobState,
    RequestState,
)

__all__ = [
    "AGENTS_CLUSTER_PREFIX",
    "DEFAULT_JOB_TTL_S",
    "DEFAULT_MAX_ATTEMPTS",
    "JOB_FINAL",
    "MASTERS_CLUSTER",
    "MAX_CSR_CHARS",
    "MAX_JOB_TTL_S",
    "QUEUE_CLUSTER",
    "QUEUE_NODE",
    "READY_STATES",
    "REFUSALS",
    "REQUEST_FINAL",
    "ROLES",
    "AgentParam",
    "AttachGrant",
    "AttachRequest",
    "Claim",
    "ConnectionInfo",
    "ConnectionReply",
    "ConnectionRequest",
    "DetachReply",
    "DetachRequest",
    "ErrorBody",
    "FieldIssue",
    "Health",
    "JobDetail",
    "JobEvent",
    "JobFinish",
    "JobHeartbeat",
    "JobPage",
    "JobRecord",
    "JobRelease",
    "JobSpec",
    "JobState",
    "LeaseRenewed",
    "MasterParam",
    "QueueParam",
    "Refusal",
    "RequestDetail",
    "RequestEvent",
    "RequestPage",
    "RequestRecord",
    "RequestState",
    "Requirements",
    "Role",
    "ServerList",
    "SignReply",
    "SignRequest",
    "SlotDescription",
    "StateReply",
    "StateReport",
    "TokenCreate",
    "TokenCreated",
    "VouchedServer",
    "WhoAmI",
    "WorkerInfo",
    "agents_cluster",
    "unmet",
]
