"""The owner's broker routes: scale and adapt over mutual TLS, and the confined dashboard.

Only the owner's client certificate (cluster CA, ``owner:<user>``) opens ``/v1/owner/*`` and
``/dashboard``: no certificate is 401, a worker's is 403. The scheduler's own dashboard never
listens on TCP: its loopback port is closed and the Unix socket it moved to is the broker's
alone (0600 in a 0700 directory).
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import uuid
from pathlib import Path

import pytest
from distributed import Client

from podgrid.errors import Forbidden
from podgrid.owner_client import OwnerClient
from tests.broker.grid import Grid, inprocess_worker, slot, until


async def test_owner_scales_and_others_are_refused(grid: Grid) -> None:
    async with grid.broker() as running:
        rid = running.broker.record.id
        info = await grid.owner_connection(rid)
        async with OwnerClient(info) as owner:
            status = await owner.scaling()
            assert (status.mode, status.target, status.needed) == ("request", 2, 2)
            status = await owner.scale(3)  # beyond the request's max_workers
            assert (status.mode, status.target, status.maximum) == ("manual", 3, 3)
        await grid.wait_registry(rid, "NeededWorkers", 3)
        await grid.wait_registry(rid, "MaxWorkers", 3)

        _, grant = await grid.attach(running.url, slot("a-worker"))
        as_worker = info.model_copy(
            update={"tls_client_cert": grant["tls_cert"], "tls_client_key": grant["tls_key"]}
        )
        async with OwnerClient(as_worker) as worker:
            with pytest.raises(Forbidden):
                await worker.scale(0)
        for path in ("/v1/owner/scaling", "/dashboard/status"):
            async with grid.session.get(running.url + path) as resp:  # no client certificate
                assert resp.status == 401, path
        assert running.broker.target == 3


async def test_dashboard_only_through_the_broker(grid: Grid) -> None:
    async with grid.broker() as running:
        broker = running.broker
        info = await grid.owner_connection(broker.record.id)
        assert info.dashboard_link == f"{running.url}/dashboard/status"
        async with OwnerClient(info) as owner:
            session = owner._open()
            async with session.get(info.dashboard_link, server_hostname=owner.server_name) as r:
                page = await r.text()
            assert r.status == 200
            assert "Bokeh" in page, page[:300]

        port = broker.scheduler.http_server.port  # what Dask bound while building it
        with socket.socket() as s, pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", port))
        sock = broker.dashboard_socket
        assert sock is not None
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o700
    assert not sock.exists()


async def test_scale_down_keeps_what_the_workers_hold(grid: Grid, tmp_path: Path) -> None:
    async with grid.broker() as running, contextlib.AsyncExitStack() as stack:
        broker = running.broker
        for i in range(2):
            _, grant = await grid.attach(running.url, slot(f"a{i}"))
            await stack.enter_async_context(await inprocess_worker(grant, tmp_path / f"w{i}"))
        info = await grid.owner_connection(broker.record.id)
        client = await stack.enter_async_context(
            Client(info.address, security=info.security(), asynchronous=True)
        )
        # Random values: a recomputed one would differ.
        futures = [
            client.submit(uuid.uuid4, pure=False, workers=[w])
            for w in list(broker.scheduler.workers)
            for _ in range(5)
        ]
        before = await client.gather(futures)
        async with OwnerClient(info) as owner:
            await owner.scale(1)

        async def connected() -> int:
            return broker.places.connected

        await until(connected, 1, 20)
        assert await client.gather(futures) == before
        assert await grid.registry_value(broker.record.id, "NeededWorkers") == 0
