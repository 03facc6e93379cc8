"""Wiring one agent: configuration, slot, clients, publisher, HTTP endpoint, signals.

Before anything else the agent decides who runs the user's code (:mod:`podgrid.jobagent.payload`;
a warning when that is the agent's own uid), makes itself non-dumpable, so a payload of the
same uid cannot read ``/proc/<agent>/environ`` (the token) or attach to it, and kills a batch
job an earlier agent on the same state dir left running.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import AsyncIterator
from typing import Any, Final

import structlog

from podgrid.config.refresher import ConfigRefresher
from podgrid.config.runtime import capture_signals
from podgrid.https import client_session, listen_tls
from podgrid.jobagent.agent import Agent
from podgrid.jobagent.payload import resolve_payload, warn_if_not_isolated
from podgrid.jobagent.poller import ServerPoller
from podgrid.jobagent.service import serve_http
from podgrid.jobagent.settings import AgentSettings
from podgrid.jobagent.slot import SlotFlags, describe_slot
from podgrid.jobagent.status import Accounting, StatusReporter
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.monitoring.client import RegistryClient
from podgrid.monitoring.publish_target import open_publisher

log = structlog.get_logger("podgrid.jobagent")

PR_SET_DUMPABLE: Final = 4


def make_undumpable() -> bool:
    """``prctl(PR_SET_DUMPABLE, 0)``: /proc/<pid>/environ, mem and ptrace become root-only.

    Without a payload user, workers and jobs run under the agent's uid; this keeps them from
    reading the token out of the agent's environment. Children get their own flag at exec.
    """
    try:
        return int(ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0
    except OSError:
        return False


@contextlib.asynccontextmanager
async def build_agent(settings: AgentSettings, flags: SlotFlags) -> AsyncIterator[Agent]:
    """Load the configuration, describe the slot and open every client the agent uses."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    payload = resolve_payload(settings.payload_user)
    payload.check_reachable(settings.state_dir)
    warn_if_not_isolated(payload)
    if not make_undumpable():
        log.warning("jobagent.dumpable", reason="prctl(PR_SET_DUMPABLE, 0) failed")
    holder: list[Agent] = []
    refresher = ConfigRefresher(
        settings.config_source,
        settings.site,
        settings.ce,
        on_change=lambda new, changes: holder[0].config_changed() if holder else None,
        refresh_s=settings.config_refresh_s,
    )
    resolved = await refresher.start()
    pod = resolved.settings
    slot = describe_slot(
        flags,
        agent_id=settings.agent_id,
        site=settings.site,
        ce=settings.ce or "",
        default_ttl_s=pod.agent_ttl_s,
    )
    registry_url = settings.registry_url or pod.registry_url
    mq_url = settings.masterqueue_url or pod.masterqueue_url
    publisher = open_publisher(
        settings.registry_publish or registry_url, settings.registry_token, settings.apmon_password
    )
    session = client_session()
    try:
        registry = RegistryClient(registry_url, session)
        async with MasterQueueClient(mq_url, settings.token, session) as mq:
            poller = ServerPoller(registry, session, longpoll=settings.longpoll)

            def reporter(accounting: Accounting) -> StatusReporter:
                return StatusReporter(
                    publisher,
                    site=settings.site,
                    agent_id=settings.agent_id,
                    state_dir=settings.state_dir,
                    accounting=accounting,
                    remaining_s=slot.remaining_s,
                    interval_s=lambda: float(refresher.current.settings.publish_interval_s),
                )

            agent = Agent(settings, slot, refresher, poller, mq, session, reporter, payload)
            agent.batch.reap_leftover()
            holder.append(agent)
            yield agent
    finally:
        await refresher.stop()
        await publisher.close()
        await session.close()


async def run_agent(settings: AgentSettings, flags: SlotFlags) -> int:
    """Run one agent until SIGTERM, the slot's end or the ``exit`` fallback; its exit code."""
    async with build_agent(settings, flags) as agent:
        # SIGTERM/SIGINT: a clean stop (batch-system pre-emption).
        with capture_signals(lambda sig: agent.request_stop(sig.name)):
            if settings.http_host is None:
                return await agent.run()
            context = listen_tls(
                settings.http_host,
                settings.tls_cert,
                settings.tls_key,
                insecure_http=settings.insecure_http,
            )
            async with serve_http(
                settings.http_host, settings.http_port, agent_status(agent), context
            ) as url:
                agent.status.extra["http_url"] = url
                log.info("jobagent.http", url=url)
                return await agent.run()


def agent_status(agent: Agent) -> Any:
    """What ``/healthz`` shows for ``agent``."""

    def status() -> dict[str, Any]:
        return {"agent_id": agent.slot.agent_id, "params": agent.status.params()}

    return status
