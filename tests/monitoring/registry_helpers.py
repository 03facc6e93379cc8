"""Helpers for the registry service tests: a real UDP sender and waiting on the metrics."""

from __future__ import annotations

import asyncio
import socket
import time

from aiohttp import web

from podgrid.monitoring import keys

TOKEN = "test-token-0123456789"


def send_udp(addr: tuple[str, int], *datagrams: bytes) -> None:
    """Send datagrams from a fresh real UDP socket."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for data in datagrams:
            sock.sendto(data, addr)


def sample(app: web.Application, name: str, **labels: str) -> float:
    """The current value of one sample of the app's metrics (0 when absent)."""
    value = app[keys.METRICS].registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def until_received(app: web.Application, count: int, timeout_s: float = 5.0) -> None:
    """Wait until the registry has handled ``count`` datagrams in total."""
    deadline = time.monotonic() + timeout_s
    while sample(app, "podgrid_registry_datagrams_received_total") < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"registry did not receive {count} datagrams in {timeout_s}s")
        await asyncio.sleep(0.005)
