"""An operator's ldapmodify of podPollDuration changes a running agent within one refresh."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import ldap3

from tests.harness.slapd import LdapSite, SlapdServer
from tests.jobagent.grid import eventually, running_grid

REFRESH_S = 1.0


def set_attrs(slapd: SlapdServer, dn: str, **attrs: object) -> None:
    conn = slapd.admin_connection()
    try:
        conn.modify(dn, {k: [(ldap3.MODIFY_REPLACE, [str(v)])] for k, v in attrs.items()})
    finally:
        conn.unbind()


async def test_ldapmodify_of_poll_duration_applies_within_one_refresh(
    tmp_path: Path, slapd: SlapdServer, ldap_site: LdapSite
) -> None:
    set_attrs(slapd, ldap_site.ce_dn, podPollDuration=3600, podPollInterval=1, podFallback="batch")
    async with running_grid(tmp_path) as grid:
        job = await grid.submit_job("true")
        agent = grid.start_agent(
            "live",
            slapd.url,
            "--config-refresh",
            str(REFRESH_S),
            "--slot-ttl",
            "600",
            site=ldap_site.site,
            ce=ldap_site.ce,
        )
        await eventually(lambda: agent.state == "POLLING", 30, "the agent polling")
        await eventually(lambda: bool(agent.events("jobagent.registry_mode")), 10, "first window")
        await asyncio.sleep(1.5)
        assert await grid.job_state(job) == "WAITING", "x = 1 h: the agent must still be polling"

        set_attrs(slapd, ldap_site.ce_dn, podPollDuration=1)
        changed = time.monotonic()

        async def taken() -> bool:
            return await grid.job_state(job) != "WAITING"

        took = await eventually(taken, 15, "the batch job taken after the change")
        # One refresh to see the change, then the (already elapsed) 1 s window ends at once.
        assert took <= REFRESH_S + 2.0, f"the change took {took:.2f}s to apply"
        assert time.monotonic() - changed < 5
        events = agent.events("config.changed")
        assert events
        assert events[0]["changes"][0]["field"] == "poll_duration_s"
        assert events[0]["changes"][0]["new"] == 1

        async def done() -> bool:
            return await grid.job_state(job) == "DONE"

        await eventually(done, 15, "the job DONE")
