"""A datagram is not a PoD server: agents attach only where the master queue vouches.

The attack (done against ``podgrid up`` before the fix): publish a ``PoD_Masters`` entry
whose ``Address`` points at a listener of one's own; every polling agent then POSTed its slot
and ``Authorization: Bearer <agent token>`` there. Now the agent asks the master queue which
attach URLs belong to active requests, and the listener hears nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.jobagent.grid import eventually, ldif_with, running_grid

SITE, CE = "TestSite", "test-ce"


async def test_a_fake_server_in_the_registry_never_receives_an_agent_token(
    tmp_path: Path,
) -> None:
    heard: list[dict[str, str]] = []

    async def trap(request: web.Request) -> web.Response:
        heard.append(dict(request.headers))
        return web.json_response({}, status=500)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", trap)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config = ldif_with(tmp_path / "c.ldif", SITE, CE, podPollDuration=30, podPollInterval=1)
    try:
        async with running_grid(tmp_path) as grid:
            # The attacker needs no token at all for this: a UDP datagram would do the same.
            await grid.publish_server("4242", f"http://127.0.0.1:{port}/v1/attach", 5)
            agent = grid.start_agent("a1", config, "--slot-ttl", "600", site=SITE, ce=CE)
            await eventually(
                lambda: bool(agent.events("jobagent.server_unvouched")),
                20,
                "the agent refusing the fake server",
            )
            await asyncio.sleep(1.5)  # more poll rounds: still nothing may reach the trap
            assert heard == [], "the fake server received a request from an agent"
            refused = agent.events("jobagent.server_unvouched")
            assert refused[0]["server"] == "4242"
            assert not agent.events("jobagent.attach_granted")
            assert agent.process.poll() is None, "the agent keeps running and polling"

            # The list agents check is for agents (and admins): a user cannot read it.
            async with aiohttp.ClientSession() as http:
                user_headers = {"Authorization": f"Bearer {grid.user._token}"}
                async with http.get(f"{grid.mq_url}/v1/servers", headers=user_headers) as resp:
                    assert resp.status == 403
                agent_headers = {"Authorization": f"Bearer {grid.agent_token}"}
                async with http.get(f"{grid.mq_url}/v1/servers", headers=agent_headers) as resp:
                    assert resp.status == 200
                    listing = await resp.json()
                    assert listing["servers"] == []
                    assert listing["broker_ca"].startswith("-----BEGIN CERTIFICATE-----")
    finally:
        await runner.cleanup()
