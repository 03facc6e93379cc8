"""The extended job agent (xJA) and the site pilot factory.

An agent runs on a free batch slot: it polls the registry for PoD servers that need workers,
attaches to one and runs a Dask worker for it, or falls back to batch work from the master
queue, so the slot is never wasted. The factory keeps N agents alive on a site.
"""

from podgrid.jobagent.agent import Agent, Tally
from podgrid.jobagent.attach import AttachRefused
from podgrid.jobagent.batch import BatchLimits, BatchResult, BatchRunner
from podgrid.jobagent.factory import AgentSpec, Backend, LocalBackend, SiteFactory, agent_command
from podgrid.jobagent.poller import ServerPoller
from podgrid.jobagent.runner import build_agent, run_agent
from podgrid.jobagent.servers import ServerOffer, fitting, weighted_order
from podgrid.jobagent.settings import AgentSettings
from podgrid.jobagent.slot import Slot, SlotError, SlotFlags, describe_slot
from podgrid.jobagent.status import Accounting, AgentState, StatusReporter

__all__ = [
    "Accounting",
    "Agent",
    "AgentSettings",
    "AgentSpec",
    "AgentState",
    "AttachRefused",
    "Backend",
    "BatchLimits",
    "BatchResult",
    "BatchRunner",
    "LocalBackend",
    "ServerOffer",
    "ServerPoller",
    "SiteFactory",
    "Slot",
    "SlotError",
    "SlotFlags",
    "StatusReporter",
    "Tally",
    "agent_command",
    "build_agent",
    "describe_slot",
    "fitting",
    "run_agent",
    "weighted_order",
]
