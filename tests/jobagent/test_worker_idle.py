"""podWorkerIdleTimeout: after an ldapmodify, a worker with no task retires; the agent polls again.

Real pieces only: slapd, registry, master queue launching a real broker process, an agent
process and its ``dask worker`` (with the idle preload) on loopback.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.harness.slapd import LdapSite, SlapdServer
from tests.jobagent.grid import eventually, running_grid
from tests.jobagent.test_config_live import set_attrs

IDLE_S = 2  # the new podWorkerIdleTimeout
REQUEST = """
[server]
name = "idle-worker"
min_workers = 1
max_workers = 1
max_wait = "10m"
ttl = "1h"
[worker]
cores = 1
memory = "512MiB"
"""
BROKER = [sys.executable, "-m", "podgrid", "broker", "serve", "--publish-interval", "0.5"]


async def test_ldapmodify_of_worker_idle_timeout_retires_an_idle_worker(
    tmp_path: Path, slapd: SlapdServer, ldap_site: LdapSite
) -> None:
    set_attrs(
        slapd,
        ldap_site.ce_dn,
        podWorkerIdleTimeout=3600,
        podPollInterval=1,
        podPollDuration=3600,  # no batch fallback: an agent without a server keeps polling
    )
    async with running_grid(tmp_path, launcher="local", broker_command=BROKER) as grid:
        agent = grid.start_agent(
            "idle",
            slapd.url,
            "--config-refresh",
            "1",
            "--slot-ttl",
            "600",
            "--cores",
            "1",
            "--memory",
            "2048",
            site=ldap_site.site,
            ce=ldap_site.ce,
        )
        await eventually(lambda: agent.state == "POLLING", 30, "the agent polling")
        set_attrs(slapd, ldap_site.ce_dn, podWorkerIdleTimeout=IDLE_S)

        def changed() -> bool:
            return any(
                c["field"] == "worker_idle_timeout_s" and c["new"] == IDLE_S
                for e in agent.events("config.changed")
                for c in e["changes"]
            )

        await eventually(changed, 10, "the agent seeing the new podWorkerIdleTimeout")

        record = await grid.user.submit_request(REQUEST, "toml")
        await eventually(lambda: bool(agent.events("jobagent.attached")), 60, "worker registered")
        await eventually(lambda: bool(agent.events("jobagent.worker_idle")), 15, "idle retirement")
        ended = agent.events("jobagent.worker_ended")
        assert [e["reason"] for e in ended] == ["idle"]
        assert ended[0]["server"] == str(record.id)
        # Counted from the worker's start; it registered a little after that.
        assert IDLE_S <= ended[0]["worked_s"] <= IDLE_S + 5
        await eventually(lambda: agent.state == "POLLING", 5, "the agent polling again")
        # Not straight back to the cluster that left it idle (for one idle timeout).
        assert len(agent.events("jobagent.attach_granted")) == 1
        assert agent.process.poll() is None
        assert not agent.events("jobagent.worker_start_failed")
