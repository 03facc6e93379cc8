"""The refresher against a real slapd: changes picked up, bad values and outages survived."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import ldap3
import pytest
import structlog
from prometheus_client import REGISTRY
from structlog.typing import EventDict

from podgrid.config import Change, ConfigRefresher, ConfigSourceError, ResolvedConfig, set_testing
from tests.config.ldif_samples import CE_DN, with_lines
from tests.harness.ports import free_port
from tests.harness.slapd import LdapSite, SlapdServer, start_slapd

REFRESH_S = 0.05
WAIT_S = 10.0
POLL_S = 0.02


@pytest.fixture(autouse=True)
def _no_backoff() -> Iterator[None]:
    set_testing(True)
    yield
    set_testing(False)


@pytest.fixture
def logs() -> Iterator[list[EventDict]]:
    # Another test may have left a level filter (podgrid.cli sets WARNING): capture everything.
    saved = structlog.get_config()
    structlog.reset_defaults()
    try:
        with structlog.testing.capture_logs() as captured:
            yield captured
    finally:
        structlog.configure(**saved)


def errors_counted(reason: str) -> float:
    value = REGISTRY.get_sample_value("podgrid_config_errors_total", {"reason": reason})
    return value or 0.0


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(int(WAIT_S / POLL_S)):
        if condition():
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"timed out after {WAIT_S} s waiting for: {what}")


def modify(slapd: SlapdServer, dn: str, attribute: str, values: list[object]) -> None:
    conn = slapd.admin_connection()
    try:
        conn.modify(dn, {attribute: [(ldap3.MODIFY_REPLACE, values)]})
    finally:
        conn.unbind()


def events(logs: list[EventDict], name: str) -> list[EventDict]:
    return [e for e in logs if e["event"] == name]


async def test_an_ldap_modify_on_the_ce_is_picked_up_and_reported(
    slapd: SlapdServer, ldap_site: LdapSite, logs: list[EventDict]
) -> None:
    seen: list[list[Change]] = []

    async def on_change(new: ResolvedConfig, changes: list[Change]) -> None:
        seen.append(changes)

    refresher = ConfigRefresher(
        slapd.url, ldap_site.site, ldap_site.ce, on_change=on_change, refresh_s=REFRESH_S
    )
    first = await refresher.start()
    try:
        assert first.settings.poll_interval_s == 5
        modify(slapd, ldap_site.ce_dn, "podPollInterval", [7])
        await until(lambda: refresher.current.settings.poll_interval_s == 7, "new value applied")
        assert refresher.current.sources["poll_interval_s"] == ldap_site.ce_dn
        await until(lambda: bool(seen), "on_change called")
        assert seen[0] == [Change("poll_interval_s", 5, 7, ldap_site.ce_dn)]
        changed = events(logs, "config.changed")
        assert changed
        assert changed[0]["changes"][0]["dn"] == ldap_site.ce_dn
    finally:
        await refresher.stop()


async def test_a_bad_value_keeps_the_last_good_config_and_is_counted(
    slapd: SlapdServer, ldap_site: LdapSite, logs: list[EventDict]
) -> None:
    refresher = ConfigRefresher(slapd.url, ldap_site.site, ldap_site.ce, refresh_s=REFRESH_S)
    await refresher.start()
    before = errors_counted("invalid_value")
    try:
        modify(slapd, ldap_site.ce_dn, "podPollInterval", [-3])
        await until(lambda: errors_counted("invalid_value") > before, "error counted")
        assert refresher.current.settings.poll_interval_s == 5
        invalid = events(logs, "config.invalid")
        assert invalid[0]["dn"] == ldap_site.ce_dn
        assert invalid[0]["attribute"] == "podPollInterval"
        assert invalid[0]["value"] == "-3"
        modify(slapd, ldap_site.ce_dn, "podPollInterval", [4])
        await until(lambda: refresher.current.settings.poll_interval_s == 4, "recovered")
    finally:
        await refresher.stop()


async def test_an_outage_keeps_the_last_good_config_and_warns_once(
    logs: list[EventDict],
) -> None:
    with start_slapd() as private:
        modify(private, CE_DN, "podPollInterval", [3])
        refresher = ConfigRefresher(private.url, "Local", "local-ce", refresh_s=REFRESH_S)
        await refresher.start()
        try:
            before = errors_counted("source_unreachable")
            private.stop()
            await until(lambda: errors_counted("source_unreachable") >= before + 3, "3 failures")
            assert len(events(logs, "config.source_unreachable")) == 1
            assert refresher.current.settings.poll_interval_s == 3
            assert refresher.current.sources["poll_interval_s"] == CE_DN
            private.start()
            await until(lambda: bool(events(logs, "config.source_recovered")), "recovered")
            assert len(events(logs, "config.source_unreachable")) == 1
            assert events(logs, "retry.scheduled")[0]["kind"] == "ldap"
        finally:
            await refresher.stop()


async def test_unreachable_at_first_start_raises() -> None:
    before = errors_counted("source_unreachable")
    refresher = ConfigRefresher(f"ldap://127.0.0.1:{free_port()}/o=podgrid")
    with pytest.raises(ConfigSourceError, match="Connection refused"):
        await refresher.start()
    assert errors_counted("source_unreachable") == before + 1
    with pytest.raises(RuntimeError, match="start"):
        _ = refresher.current


async def test_ldif_edits_are_picked_up_and_a_failing_listener_does_not_stop_refreshes(
    tmp_path: Path, logs: list[EventDict]
) -> None:
    path = with_lines(tmp_path, CE_DN, "podFallback: batch")

    def broken(new: ResolvedConfig, changes: list[Change]) -> None:
        raise ValueError("listener bug")

    refresher = ConfigRefresher(path, "Local", "local-ce", on_change=broken, refresh_s=REFRESH_S)
    await refresher.start()
    try:
        with_lines(tmp_path, CE_DN, "podFallback: exit")
        await until(lambda: refresher.current.settings.fallback == "exit", "first edit")
        with_lines(tmp_path, CE_DN, "podFallback: batch")
        await until(lambda: refresher.current.settings.fallback == "batch", "second edit")
        assert len(events(logs, "config.on_change_failed")) == 2
    finally:
        await refresher.stop()


async def test_the_interval_follows_podconfigrefresh(tmp_path: Path) -> None:
    path = with_lines(tmp_path, CE_DN, "podConfigRefresh: 7")
    refresher = ConfigRefresher(path, "Local", "local-ce")
    await refresher.start()
    try:
        assert refresher.interval_s == 7
    finally:
        await refresher.stop()
