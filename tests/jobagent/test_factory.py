"""The site pilot factory: keep N agents alive, replace those that exit, bound restarts."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import psutil
import pytest

from podgrid.jobagent.factory import AgentSpec, LocalBackend, SiteFactory, agent_command
from tests.jobagent.grid import eventually, ldif_with, running_grid


async def test_exiting_agents_are_replaced_within_the_restart_bound(tmp_path: Path) -> None:
    def make(n: int) -> AgentSpec:
        argv = [sys.executable, "-c", "import sys; sys.exit(3)"]
        return AgentSpec(f"crash-{n}", argv, dict(os.environ), tmp_path / "agents" / str(n))

    factory = SiteFactory(
        LocalBackend(),
        agents=2,
        make_spec=make,
        state_dir=tmp_path,
        max_restarts_per_min=3,
        poll_s=0.05,
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(factory.run(stopping))
    await eventually(lambda: factory.throttled > 0 and len(factory.exits) >= 5, 20, "throttling")
    await asyncio.sleep(0.5)
    stopping.set()
    await task
    # 2 initial agents + at most 3 replacements in the minute, however fast they crash.
    assert factory._serial == 5
    assert all(code == 3 for _, code in factory.exits)
    site = json.loads((tmp_path / "site.json").read_text())
    assert site["started"] == 5
    assert site["throttled"] > 0


async def test_factory_keeps_real_agents_alive_and_sums_their_time(tmp_path: Path) -> None:
    site, ce = "FactorySite", "f-ce"
    config = ldif_with(tmp_path / "c.ldif", site, ce, podPollDuration=1, podPublishInterval=1)
    async with running_grid(tmp_path) as grid:
        env = {**os.environ, "PODGRID_TOKEN": grid.agent_token}

        def make(n: int) -> AgentSpec:
            agent_dir = tmp_path / "site" / f"a{n}"
            # The first agent's slot ends after 8 s: it leaves and must be replaced.
            ttl = "8" if n == 1 else "600"
            argv = [
                *agent_command(),
                "--site",
                site,
                "--ce",
                ce,
                "--agent-id",
                f"a{n}",
                "--state-dir",
                str(agent_dir),
                "--config",
                config,
                "--slot-ttl",
                ttl,
                "--registry-url",
                grid.registry_url,
                "--masterqueue-url",
                grid.mq_url,
                "--registry-publish",
                f"udp://{grid.udp[0]}:{grid.udp[1]}",
            ]
            return AgentSpec(f"a{n}", argv, env, agent_dir)

        factory = SiteFactory(
            LocalBackend(),
            agents=2,
            make_spec=make,
            state_dir=tmp_path / "site",
            poll_s=0.2,
            grace_s=10,
        )
        stopping = asyncio.Event()
        task = asyncio.create_task(factory.run(stopping))
        await eventually(lambda: len(factory.exits) >= 1, 40, "the short slot's agent exit")
        assert factory.exits[0] == ("a1", 0)
        await eventually(lambda: len(factory.running) == 2, 10, "a replacement running")
        pids = [int(r.handle.split(":")[1]) for r in factory.running]
        await eventually(
            lambda: all((d / "agent.json").exists() for d in factory.started_dirs),
            20,
            "the replacement agent up",
        )
        await asyncio.sleep(1.0)
        stopping.set()
        totals = await task
        for pid in pids:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        each = [json.loads((d / "agent.json").read_text())["params"] for d in factory.started_dirs]
        assert len(each) == 3
        assert all(p["SecondsPolling"] > 0.5 for p in each), each
        # The site's figure is the sum over its agents, the one that left included.
        assert totals["polling"] == pytest.approx(sum(p["SecondsPolling"] for p in each))
        assert totals["polling"] > 4, totals
        summed = json.loads((tmp_path / "site" / "site.json").read_text())["seconds"]
        assert summed == totals


def test_the_site_passes_the_payload_user_to_every_agent(tmp_path: Path) -> None:
    from podgrid._cmd_site import spec_maker
    from podgrid.cli import build_parser

    args = build_parser().parse_args(
        ["site", "run", "--agents", "2", "--payload-user", "nobody", "--state-dir", str(tmp_path)]
    )
    make = spec_maker(args, tmp_path)
    for n in (0, 1):
        argv = list(make(n).argv)
        assert argv[argv.index("--payload-user") + 1] == "nobody"
