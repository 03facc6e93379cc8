"""Wiring one agent: configuration, slot, clients, publisher, HTTP endpoint, signals."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog

from config.refresher import ConfigRefresher
from jobagent.agent import Agent
from jobagent.poller import ServerPoller
from jobagent.service import serve_http
from jobagent.settings import AgentSettings
from jobagent.slot import SlotFlags, describe_slot
from jobagent.status import Accounting, StatusReporter
from masterqueue.client import MasterQueueClient
from monitoring.client import ApMonPublisher, HttpPublisher, Publisher, RegistryClient

log = structlog.get_logger("podgrid.jobagent")

DEFAULT_APMON_PORT = 8884  # MonALISA's ApMon UDP port


def open_publisher(target: str, token: str | None) -> Publisher:
    """``udp://h:p`` → ApMon datagrams; ``http(s)://h:p`` → ``POST /publish`` with ``token``."""
    parts = urlsplit(target)
    if parts.scheme == "udp" and parts.hostname:
        return ApMonPublisher(parts.hostname, parts.port or DEFAULT_APMON_PORT)
    if parts.scheme in ("http", "https") and parts.hostname:
        if not token:
            raise ValueError(f"publishing to {target} needs a registry token")
        return HttpPublisher(target, token, attempts=2, deadline_s=5.0)
    raise ValueError(f"registry publish target must be udp://HOST:PORT or http(s)://…: {target!r}")


def default_publish_target(registry_url: str, token: str | None) -> str:
    """HTTP publish when a registry token is known, else ApMon UDP to the registry's host."""
    if token:
        return registry_url
    return f"udp://{urlsplit(registry_url).hostname}:{DEFAULT_APMON_PORT}"


@contextlib.contextmanager
def capture_signals(agent: Agent) -> Any:
    """SIGTERM/SIGINT → a clean stop of ``agent`` (batch-system pre-emption)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.request_stop, sig.name)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


@contextlib.asynccontextmanager
async def build_agent(settings: AgentSettings, flags: SlotFlags) -> AsyncIterator[Agent]:
    """Load the configuration, describe the slot and open every client the agent uses."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    holder: list[Agent] = []
    refresher = ConfigRefresher(
        settings.config_source, settings.site, settings.ce,
        on_change=lambda new, changes: holder[0].config_changed() if holder else None,
        refresh_s=settings.config_refresh_s,
    )  # fmt: skip
    resolved = await refresher.start()
    pod = resolved.settings
    slot = describe_slot(flags, agent_id=settings.agent_id, site=settings.site,
                         ce=settings.ce or "", default_ttl_s=pod.agent_ttl_s)  # fmt: skip
    registry_url = settings.registry_url or pod.registry_url
    mq_url = settings.masterqueue_url or pod.masterqueue_url
    target = settings.registry_publish or default_publish_target(
        registry_url, settings.registry_token
    )
    publisher = open_publisher(target, settings.registry_token)
    session = aiohttp.ClientSession()
    try:
        registry = RegistryClient(registry_url, session)
        async with MasterQueueClient(mq_url, settings.token, session) as mq:
            poller = ServerPoller(registry, session, longpoll=settings.longpoll)

            def reporter(accounting: Accounting) -> StatusReporter:
                return StatusReporter(
                    publisher, site=settings.site, agent_id=settings.agent_id,
                    state_dir=settings.state_dir, accounting=accounting,
                    remaining_s=slot.remaining_s,
                    interval_s=lambda: float(refresher.current.settings.publish_interval_s),
                )  # fmt: skip

            agent = Agent(settings, slot, refresher, poller, mq, session, reporter)
            holder.append(agent)
            yield agent
    finally:
        await refresher.stop()
        await publisher.close()
        await session.close()


async def run_agent(settings: AgentSettings, flags: SlotFlags) -> int:
    """Run one agent until SIGTERM, the slot's end or the ``exit`` fallback; its exit code."""
    async with build_agent(settings, flags) as agent:
        with capture_signals(agent):
            if settings.http_host is None:
                return await agent.run()
            async with serve_http(
                settings.http_host, settings.http_port, agent_status(agent)
            ) as url:
                agent.status.extra["http_url"] = url
                log.info("jobagent.http", url=url)
                return await agent.run()


def agent_status(agent: Agent) -> Any:
    """What ``/healthz`` shows for ``agent``."""

    def status() -> dict[str, Any]:
        return {"agent_id": agent.slot.agent_id, "params": agent.status.params()}

    return status
