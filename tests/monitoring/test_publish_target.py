"""The one rule that picks how brokers, agents and the master queue publish."""

from __future__ import annotations

import pytest

from podgrid.monitoring.apmon_publisher import ApMonPublisher
from podgrid.monitoring.client import HttpPublisher
from podgrid.monitoring.publish_target import open_publisher, publish_target


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
