"""podServerIdleTimeout: an operator's ldapmodify sets the idle timeout of requests that set none.

A private slapd (the test changes ``ou=Config``, which every broker reads), refreshed every
second; the broker's scheduler is idle from its start, so the new timeout applies at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import ldap3
import pytest

from podgrid.masterqueue.states import RequestState
from tests.broker.grid import Grid
from tests.broker.test_stop import request_text
from tests.harness.slapd import SlapdServer, start_slapd

CONFIG_DN = "ou=Config,o=podgrid"


@pytest.fixture
def private_slapd() -> Iterator[SlapdServer]:
    """A slapd of our own whose ``ou=Config`` is refreshed every second."""
    with start_slapd() as server:
        set_config(server, podConfigRefresh=1)
        yield server


def set_config(slapd: SlapdServer, **attrs: object) -> None:
    conn = slapd.admin_connection()
    try:
        conn.modify(CONFIG_DN, {k: [(ldap3.MODIFY_REPLACE, [str(v)])] for k, v in attrs.items()})
    finally:
        conn.unbind()


async def test_ldapmodify_of_server_idle_timeout_stops_an_idle_cluster(
    grid: Grid, private_slapd: SlapdServer
) -> None:
    set_config(private_slapd, podServerIdleTimeout=3600)
    text = request_text(1, 1)  # no idle_timeout: the site's value applies
    async with grid.broker(text, config_source=private_slapd.url) as running:
        broker = running.broker
        assert broker.request.idle_timeout_s is None
        assert broker.server_idle_timeout_s == 3600
        idle_since = broker.scheduler.idle_since  # epoch seconds: idle from the start
        assert idle_since is not None
        await asyncio.sleep(1.5)
        assert not broker.finished.is_set(), "an idle hour has not passed"

        set_config(private_slapd, podServerIdleTimeout=2)
        changed = time.monotonic()
        await asyncio.wait_for(broker.finished.wait(), 10)
        took_s = time.monotonic() - changed
        idle_s = time.time() - idle_since
    assert broker.server_idle_timeout_s == 2
    assert took_s <= 1.0 + 1.5, f"one refresh (1 s) and a watch step; took {took_s:.2f} s"
    assert idle_s >= 2
    assert broker.final is not None
    assert broker.final[0] == RequestState.DONE
    assert "podServerIdleTimeout" in broker.final[1]
    assert (await grid.request(broker.record.id)).state == RequestState.DONE


async def test_the_requests_own_idle_timeout_wins(grid: Grid, private_slapd: SlapdServer) -> None:
    set_config(private_slapd, podServerIdleTimeout=1)
    text = request_text(1, 1, idle_timeout='"1h"')
    async with grid.broker(text, config_source=private_slapd.url) as running:
        await asyncio.sleep(2.0)
        assert not running.broker.finished.is_set(), "the request asked for an idle hour"
