"""End to end: a real broker, two real ``dask worker`` processes, a real TLS client."""

from __future__ import annotations

import asyncio
import operator
import os

from distributed import Client
from distributed.security import Security

from podgrid.client import PodGrid
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.pki import CertificateAuthority
from podgrid.protocol import RequestState
from tests.broker.grid import Grid, slot, until


async def _connect_error(address: str, security: Security | None) -> BaseException | None:
    """The error a client gets when connecting with ``security`` (None: it connected)."""
    client = Client(address, security=security, asynchronous=True, timeout="2s")
    try:
        await client
    except (OSError, TypeError) as e:
        return e
    finally:
        await client.close()
    return None


async def test_two_workers_attach_and_the_owner_computes(grid: Grid) -> None:
    async with grid.broker() as running:
        rid = running.broker.record.id
        await grid.wait_registry(rid, "NeededWorkers", 2)
        assert await grid.registry_value(rid, "Address") == running.url
        assert await grid.registry_value(rid, "State") == "PUBLISHING"
        grants = []
        for i in range(2):
            status, body = await grid.attach(running.url, slot(f"agent-{i}", site=f"S{i}"))
            assert status == 200, body
            assert body["scheduler_address"].startswith("tls://")
            assert 0 < body["lifetime_s"] < 3600
            grants.append(body)
        procs = [grid.start_worker(g) for g in grants]
        await grid.wait_registry(rid, "State", "FULL", timeout_s=30)
        assert await grid.registry_value(rid, "NeededWorkers") == 0
        assert await grid.registry_value(rid, "Workers") == 2

        async def mq_view() -> tuple[str, int, list[str]]:
            r = await grid.request(rid)
            return r.state.value, r.worker_count, sorted(w.site for w in r.workers)

        await until(mq_view, ("FULL", 2, ["S0", "S1"]), 10)
        workers = (await grid.request(rid)).workers
        assert all(w.startup_s is not None and w.startup_s > 0 for w in workers)

        async with PodGrid(MasterQueueClient(grid.mq.url, grid.user_token)) as pod:
            info = await pod.connection(rid)  # the key is made here; only a CSR is sent
        assert info.address == running.broker.scheduler.address
        assert "security = Security(" in info.snippet("/path/of/the.key")
        async with Client(info.address, security=info.security(), asynchronous=True) as client:
            # Builtins only: the workers cannot import this test module.
            futures = client.map(pow, range(20), [2] * 20)
            total = await client.submit(sum, futures)
            ran = await client.run(os.getpid)
            identity = await client.scheduler.identity()
            names = [w["name"] for w in identity["workers"].values()]
        assert total == sum(x * x for x in range(20))
        assert sorted(ran.values()) == sorted(p.pid for p in procs)
        assert sorted(names) == sorted(g["name"] for g in grants)

        # Without the cluster's client certificate the scheduler refuses the connection.
        stranger = CertificateAuthority.create("stranger", 3600).issue("mallory")
        foreign = Security(
            require_encryption=True,
            tls_ca_file=info.tls_ca,
            tls_client_cert=stranger.cert_pem,
            tls_client_key=stranger.key_pem,
        )
        assert isinstance(await _connect_error(info.address, foreign), OSError)
        # No TLS material at all: distributed refuses before sending a byte.
        assert isinstance(await _connect_error(info.address, None), TypeError | OSError)
    # Broker stopped: agents see NeededWorkers=0 and the end state; workers were retired.
    assert await grid.registry_value(rid, "NeededWorkers") == 0
    assert await grid.registry_value(rid, "State") == "DONE"
    assert (await grid.request(rid)).state == RequestState.DONE
    for proc in procs:
        await asyncio.wait_for(asyncio.to_thread(proc.wait), 15)
    assert operator.countOf([p.returncode for p in procs], None) == 0
