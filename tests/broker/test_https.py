"""HTTPS everywhere: brokers certified by the master queue, services that refuse plain HTTP.

The attacks: a listener that is not the genuine broker of a request (a port squatter with a
self-signed certificate, another request's genuine broker certificate, plain HTTP) must never
receive an agent's attach ticket; the master queue signs a broker certificate only for the
broker token of that very request; a service asked to serve plain HTTP where other hosts can
reach it refuses to start.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from podgrid.jobagent import attach as agent_attach
from podgrid.localca import make_local_tls
from podgrid.masterqueue import keys as mq_keys
from podgrid.masterqueue.broker_ca import server_name
from podgrid.masterqueue.client import MasterQueueClient
from podgrid.pki import CertificateAuthority, load_csr
from podgrid.protocol import RequestState, SlotDescription
from podgrid.protocol.csr import csr_for, new_private_key
from tests.broker.grid import Grid, slot, vouched
from tests.harness.ports import free_port

TWO = """
[server]
name = "https"
min_workers = 1
max_workers = 2
[worker]
cores = 1
memory = "256MiB"
"""


class Listener:
    """A TLS (or plain) TCP listener on 127.0.0.1 that keeps every byte it was sent."""

    def __init__(self, context: ssl.SSLContext | None) -> None:
        self.context = context
        self.received = bytearray()
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                self.received += chunk
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        port = self.server.sockets[0].getsockname()[1]
        return f"https://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def _server_context(cert_pem: str, key_pem: str, directory: Path) -> ssl.SSLContext:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "c.pem").write_text(cert_pem)
    (directory / "k.pem").write_text(key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "c.pem", directory / "k.pem")
    return context


def _slot() -> SlotDescription:
    return SlotDescription.model_validate({k: v for k, v in slot("a1").items() if k != "csr"})


async def test_an_agent_shows_its_ticket_only_to_the_genuine_broker(
    grid: Grid, tmp_path: Path
) -> None:
    async with grid.broker(TWO) as a, grid.broker(TWO) as b:
        ticket_a = await vouched(grid, a)
        assert ticket_a.server_name == server_name(a.broker.record.id)
        # Another request's genuine broker certificate (as B's owner could take from B's
        # process): signed by the right CA, for the wrong name.
        key_b = new_private_key()
        broker_ca = grid.mq.app[mq_keys.BROKER_CA]
        far = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        cert_b = broker_ca.sign_server(
            load_csr(csr_for(key_b)), [server_name(b.broker.record.id)], far
        )
        # A port squatter's own CA, with the right name.
        evil = CertificateAuthority.create("evil", 3600).issue(ticket_a.server_name)
        impostors = {
            "another request's broker": _server_context(cert_b, key_b, tmp_path / "b"),
            "a self-made certificate": _server_context(evil.cert_pem, evil.key_pem, tmp_path / "e"),
            "plain TCP": None,
        }
        for what, context in impostors.items():
            listener = Listener(context)
            async with listener as address:
                with pytest.raises(agent_attach.AttachRefused) as refused:
                    await agent_attach.attach(grid.session, address, ticket_a, _slot())
                assert refused.value.reason == "unreachable", what
                await asyncio.sleep(0.05)
            assert ticket_a.ticket.encode() not in bytes(listener.received), what
            assert b"Authorization" not in bytes(listener.received), what
        # The genuine broker, same pass: granted.
        grant = await agent_attach.attach(grid.session, a.url, ticket_a, _slot())
        assert grant.request_id == a.broker.record.id


async def test_the_master_queue_certifies_only_a_requests_own_broker(grid: Grid) -> None:
    rid, token = await grid.submit()
    other_rid, other_token = await grid.submit()
    csr = csr_for(new_private_key())
    async with MasterQueueClient(grid.mq.url, token) as broker:
        reply = await broker.server_certificate(rid, csr)
        cert = x509.load_pem_x509_certificate(reply.certificate.encode())
        assert reply.server_name == f"request-{rid}.brokers.podgrid"
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [reply.server_name]
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]  # never a client certificate
        assert reply.ca == grid.mq.app[mq_keys.BROKER_CA].cert_pem
        assert "PRIVATE KEY" not in reply.model_dump_json()
    calls = [
        (token, other_rid, csr, 403),  # another request's broker token
        (grid.user_token, rid, csr, 403),  # the owner
        (grid.agent_token, rid, csr, 403),  # an agent
        (token, rid, "not a CSR", 400),
    ]
    for who, request_id, body, status in calls:
        url = f"{grid.mq.url}/v1/requests/{request_id}/certificate"
        headers = {"Authorization": f"Bearer {who}"}
        async with grid.session.post(url, json={"csr": body}, headers=headers) as resp:
            assert resp.status == status, (who, request_id)
    await grid.mq.store.transition(other_rid, RequestState.CANCELLED, "test")
    url = f"{grid.mq.url}/v1/requests/{other_rid}/certificate"
    headers = {"Authorization": f"Bearer {other_token}"}
    async with grid.session.post(url, json={"csr": csr}, headers=headers) as resp:
        assert resp.status == 409


def _podgrid(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "podgrid", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


SERVE_COMMANDS = {
    "masterqueue": ["masterqueue", "serve"],
    "monitoring": ["monitoring", "serve", "--udp", "127.0.0.1:0"],
    "jobagent": ["jobagent", "run"],
    "site": ["site", "run", "--agents", "1"],
}


@pytest.mark.parametrize("service", sorted(SERVE_COMMANDS))
def test_plain_http_off_loopback_is_refused(service: str, tmp_path: Path) -> None:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path), "PODGRID_TOKEN": "not-used"}
    args = [*SERVE_COMMANDS[service], "--http", "0.0.0.0:0", "--state-dir", str(tmp_path / "s")]
    proc = _podgrid(*args, env=env)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "refusing plain HTTP on 0.0.0.0" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("service", ["masterqueue", "monitoring"])
async def test_a_service_with_a_certificate_serves_https_only(service: str, tmp_path: Path) -> None:
    tls = make_local_tls(tmp_path / "tls", [service])
    port = free_port()
    files = tls.services[service]
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path)}
    args = [service, "serve", "--http", f"0.0.0.0:{port}", "--state-dir", str(tmp_path / "s")]
    args += ["--tls-cert", str(files.cert), "--tls-key", str(files.key)]
    if service == "monitoring":
        args += ["--udp", "127.0.0.1:0"]
    proc = _podgrid(*args, env=env)
    trusted = ssl.create_default_context(cafile=tls.ca_file)
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(
                        f"https://127.0.0.1:{port}/healthz", ssl=trusted
                    ) as resp:
                        assert resp.status == 200
                        break
                except aiohttp.ClientConnectorError:
                    assert proc.poll() is None, proc.communicate()[1]
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("the service never answered over HTTPS")
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(f"https://127.0.0.1:{port}/healthz")  # system CAs only
            with pytest.raises(aiohttp.ClientError):
                await session.get(f"http://127.0.0.1:{port}/healthz")  # plain HTTP
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_a_key_without_its_certificate_is_a_usage_error(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path)}
    proc = _podgrid(
        "masterqueue", "serve", "--http", "127.0.0.1:0", "--state-dir", str(tmp_path / "s"),
        "--tls-key", str(tmp_path / "missing.key"), env=env,
    )  # fmt: skip
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "--tls-cert and --tls-key go together" in err
