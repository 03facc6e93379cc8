"""The one rule that picks how brokers, agents and the master queue publish."""

from __future__ import annotations

from pathlib import Path

import pytest

from podgrid.config import default_ldif, resolve
from podgrid.config.errors import ConfigValueError
from podgrid.monitoring.apmon_publisher import ApMonPublisher
from podgrid.monitoring.client import HttpPublisher
from podgrid.monitoring.publish_target import FanOutPublisher, open_publisher, publish_target
from podgrid.monitoring.registries import split_urls


@pytest.mark.parametrize(
    ("registry", "token", "expected"),
    [
        ("udp://10.0.0.5:9999", None, "udp://10.0.0.5:9999"),
        ("udp://reg.example", "tok", "udp://reg.example:8884"),
        ("http://127.0.0.1:8885/", "tok", "http://127.0.0.1:8885"),
        ("https://reg.example", "tok", "https://reg.example"),
        # No token for POST /publish: ApMon datagrams to the registry's host instead.
        ("http://127.0.0.1:8885", None, "udp://127.0.0.1:8884"),
        ("http://127.0.0.1:8885", "", "udp://127.0.0.1:8884"),
    ],
)
def test_publish_target(registry: str, token: str | None, expected: str) -> None:
    assert publish_target(registry, token) == expected


@pytest.mark.parametrize(
    "registry", ["", "127.0.0.1:8884", "tcp://h:1", "udp://", "http://h:notaport", "udp://h:70000"]
)
def test_bad_registry_names_the_value(registry: str) -> None:
    with pytest.raises(ValueError, match="registry"):
        publish_target(registry, None)


async def test_open_publisher_picks_the_transport() -> None:
    udp = open_publisher("http://127.0.0.1:8885", None)
    http = open_publisher("http://127.0.0.1:8885", "tok")
    try:
        assert isinstance(udp, ApMonPublisher)
        assert isinstance(http, HttpPublisher)
    finally:
        await udp.close()
        await http.close()


@pytest.mark.parametrize(
    ("registry", "token", "expected"),
    [
        ("udp://a:1, udp://b:2", None, "udp://a:1,udp://b:2"),
        ("https://r1:8885 https://r2:8885/", "tok", "https://r1:8885,https://r2:8885"),
        # Without a token two registries of one host would share its ApMon port: sent once.
        ("http://h:1,http://h:2", None, "udp://h:8884"),
    ],
)
def test_a_registry_list_publishes_to_each(registry: str, token: str | None, expected: str) -> None:
    assert publish_target(registry, token) == expected


async def test_open_publisher_fans_out_over_a_list() -> None:
    fan = open_publisher("udp://127.0.0.1:9,http://127.0.0.1:8885", "tok")
    try:
        assert isinstance(fan, FanOutPublisher)
        assert [type(p) for p in fan.publishers] == [ApMonPublisher, HttpPublisher]
    finally:
        await fan.close()


def test_pod_registry_url_takes_several_values_and_lists(tmp_path: Path) -> None:
    entry = "podRegistryURL: http://127.0.0.1:8885\n"
    ldif = tmp_path / "c.ldif"
    text = Path(default_ldif()).read_text()
    two = "podRegistryURL: https://r1.example:8885\npodRegistryURL: https://r2.example:8885\n"
    ldif.write_text(text.replace(entry, two))
    assert resolve(ldif).settings.registry_url == "https://r1.example:8885,https://r2.example:8885"
    ldif.write_text(text.replace(entry, "podRegistryURL: https://r1:1, https://r2:2\n"))
    assert split_urls(resolve(ldif).settings.registry_url) == ["https://r1:1", "https://r2:2"]
    ldif.write_text(text.replace(entry, "podRegistryURL: https://r1:1, ftp://r2\n"))
    with pytest.raises(ConfigValueError, match="podRegistryURL"):
        resolve(ldif)
