"""The trust model, attacked against real processes: a real broker, TLS Dask scheduler and workers.

Every test here performs the attack it names: an agent-token holder attaches with a made-up
slot and tries to use its worker certificate as a Dask client, or to register as another
reserved worker; a CSR that is forged, weak or names someone else; a grant of one cluster
used on another; ``/v1/sign`` without (or with the wrong) sign secret.
"""

from __future__ import annotations

import base64
import datetime as dt
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from distributed import Client, Worker
from distributed.core import rpc
from distributed.security import Security

from podgrid.broker.tls import peer_common_name
from podgrid.jobagent import attach as agent_attach
from podgrid.jobagent.worker import write_tls
from podgrid.protocol import SlotDescription
from podgrid.protocol.csr import csr_for, new_private_key
from tests.broker.grid import Grid, inprocess_worker, slot, vouched, worker_security

# Attach twice (two agents) without waiting for workers.
TWO = """
[server]
name = "trust"
min_workers = 1
max_workers = 2
max_wait = "10m"
ttl = "1h"
[worker]
cores = 1
memory = "256MiB"
"""


def _cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def _cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _spki(public_key: Any) -> bytes:
    return bytes(
        public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _client_security(grant: dict[str, Any]) -> Security:
    return Security(
        require_encryption=True,
        tls_ca_file=grant["tls_ca"],
        tls_client_cert=grant["tls_cert"],
        tls_client_key=grant["tls_key"],
    )


async def _client_error(address: str, security: Security) -> BaseException | None:
    client = Client(address, security=security, asynchronous=True, timeout="3s")
    try:
        await client
    except (OSError, TimeoutError) as e:
        return e
    finally:
        await client.close()
    return None


def _clients(scheduler: Any) -> set[str]:
    return set(scheduler.clients) - {"fire-and-forget"}


async def test_a_worker_grant_cannot_act_as_a_dask_client(grid: Grid) -> None:
    async with grid.broker(TWO) as running:
        scheduler = running.broker.scheduler
        # The attack: any agent token, a made-up slot, and the grant's certificate as a client.
        status, grant = await grid.attach(running.url, slot("mallory", host="evil.example"))
        assert status == 200
        assert isinstance(
            await _client_error(grant["scheduler_address"], _client_security(grant)), OSError
        )
        assert _clients(scheduler) == set()
        # Nor by raw RPC: no code runs on the workers, no plugin is registered.
        args = _client_security(grant).get_connection_args("client")
        for op, kwargs in (
            ("broadcast", {"msg": {"op": "run", "function": b"x"}}),
            ("run_function", {"function": b"x"}),
            ("register_worker_plugin", {"plugin": b"x", "name": "p"}),
            ("identity", {}),
        ):
            r = rpc(grant["scheduler_address"], connection_args=args)
            try:
                with pytest.raises(OSError, match=r"closed|refused|Stream"):
                    await getattr(r, op)(**kwargs)
            finally:
                await r.close_rpc()
        assert running.broker.guard.refused_total >= 5
        # The owner's certificate is the one that works, for the same scheduler.
        info = await grid.owner_connection(running.broker.record.id)
        async with Client(info.address, security=info.security(), asynchronous=True) as client:
            assert (await client.scheduler.identity())["address"] == scheduler.address
            assert len(_clients(scheduler)) == 1


async def test_a_worker_cannot_register_under_another_reserved_name(
    grid: Grid, tmp_path: Path
) -> None:
    async with grid.broker(TWO) as running:
        scheduler = running.broker.scheduler
        _, mine = await grid.attach(running.url, slot("mallory"))
        _, theirs = await grid.attach(running.url, slot("honest"))
        assert mine["name"] != theirs["name"]
        # The attack: mallory's own certificate, registering as the honest agent's place.
        with pytest.raises((OSError, TimeoutError)):
            await Worker(
                mine["scheduler_address"],
                security=worker_security(mine),
                name=theirs["name"],
                nthreads=1,
                memory_limit="256MiB",
                local_directory=str(tmp_path / "evil"),
                dashboard=False,
                death_timeout="3s",
            )
        assert [ws.name for ws in scheduler.workers.values()] == []
        # The honest worker still gets its place; mallory's worker under its own name too.
        honest = await inprocess_worker(theirs, tmp_path / "honest")
        own = await inprocess_worker(mine, tmp_path / "mine")
        async with honest, own:
            names = sorted(str(ws.name) for ws in scheduler.workers.values())
            assert names == sorted([mine["name"], theirs["name"]])


async def test_the_certificate_names_the_reserved_worker_not_the_csr_subject(grid: Grid) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    owner_like = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "owner:alice")])
    csr = (
        x509.CertificateSigningRequestBuilder().subject_name(owner_like).sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    async with grid.broker(TWO) as running:
        body = {**slot("mallory"), "csr": csr.public_bytes(serialization.Encoding.PEM).decode()}
        status, grant = await grid.attach(running.url, body)
        assert status == 200, grant
        assert "tls_key" not in grant  # the broker never sends a key
        cert = _cert(grant["tls_cert"])
        assert _cn(cert) == f"worker:{grant['name']}"
        assert _spki(cert.public_key()) == _spki(key.public_key())
        # Valid for the cluster's life only (ttl 1h), not for the CA's extra margin.
        expires = running.broker.expires_s
        assert cert.not_valid_after_utc <= dt.datetime.fromtimestamp(expires, dt.UTC)
        # Claiming to be the owner in the CSR opens nothing.
        grant["tls_key"] = key_pem
        assert isinstance(
            await _client_error(grant["scheduler_address"], _client_security(grant)), OSError
        )
        assert _clients(running.broker.scheduler) == set()
        # The owner's certificate: client use only, so it can never pose as a scheduler.
        info = await grid.owner_connection(running.broker.record.id)
        assert info.tls_client_cert is not None
        owner = _cert(info.tls_client_cert)
        assert _cn(owner) == "owner:alice"
        usage = owner.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def _forged_csr() -> str:
    """A CSR whose signature was tampered with after signing."""
    der = bytearray(base64.b64decode("".join(csr_for(new_private_key()).splitlines()[1:-1])))
    der[-1] ^= 0x01
    body = base64.encodebytes(bytes(der)).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


def _csr_of(key: Any) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, algorithm)
    return csr.public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(
    ("case", "csr"),
    [
        (
            "garbage",
            "-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n",
        ),
        ("forged", _forged_csr()),
        ("weak rsa", _csr_of(rsa.generate_private_key(public_exponent=65537, key_size=1024))),
        ("ed25519", _csr_of(ed25519.Ed25519PrivateKey.generate())),
        ("too long", "A" * 9000),
    ],
)
async def test_an_unacceptable_csr_is_refused_before_a_place_is_taken(
    grid: Grid, case: str, csr: str
) -> None:
    async with grid.broker(TWO) as running:
        status, body = await grid.attach(running.url, {**slot("mallory"), "csr": csr})
        assert status == 400, (case, body)
        assert body["fields"][0]["loc"] == ["csr"]
        assert running.broker.places.occupied == 0


async def test_a_grant_of_one_cluster_does_not_open_another(grid: Grid, tmp_path: Path) -> None:
    async with grid.broker(TWO) as a, grid.broker(TWO) as b:
        _, grant_a = await grid.attach(a.url, slot("agent-a"))
        _, grant_b = await grid.attach(b.url, slot("agent-b"))
        assert grant_a["tls_ca"] != grant_b["tls_ca"]
        # A's worker credentials against B's scheduler, as a worker and as a client.
        wrong = {**grant_a, "scheduler_address": grant_b["scheduler_address"]}
        with pytest.raises((OSError, TimeoutError)):
            await Worker(
                wrong["scheduler_address"],
                security=worker_security(wrong),
                name=grant_b["name"],
                nthreads=1,
                memory_limit="256MiB",
                local_directory=str(tmp_path / "cross"),
                dashboard=False,
                death_timeout="3s",
            )
        assert not b.broker.scheduler.workers
        # Even A's owner certificate is nothing to B.
        info_a = await grid.owner_connection(a.broker.record.id)
        foreign = Security(
            require_encryption=True,
            tls_ca_file=grant_b["tls_ca"],
            tls_client_cert=info_a.tls_client_cert,
            tls_client_key=info_a.tls_client_key,
        )
        assert isinstance(await _client_error(grant_b["scheduler_address"], foreign), OSError)
        assert _clients(b.broker.scheduler) == set()


async def test_sign_needs_this_requests_secret(grid: Grid) -> None:
    async with grid.broker(TWO) as a, grid.broker(TWO) as b:
        body = {"csr": csr_for(new_private_key())}
        url = f"{a.url}/v1/sign"
        wrong = [
            {},  # no secret at all
            {"Authorization": f"Bearer {grid.agent_token}"},  # an agent token
            {"Authorization": f"Bearer {grid.ticket(a.broker.record.id)}"},  # an attach ticket
            {"Authorization": f"Bearer {grid.user_token}"},  # the owner's own token
            {"Authorization": f"Bearer {grid.sign_secret(b.broker.record.id)}"},  # another's
        ]
        for headers in wrong:
            async with grid.session.post(url, json=body, headers=headers) as resp:
                assert resp.status == 401, headers
        ok = {"Authorization": f"Bearer {grid.sign_secret(a.broker.record.id)}"}
        async with grid.session.post(url, json=body, headers=ok) as resp:
            assert resp.status == 200
            signed = await resp.json()
        assert _cn(_cert(signed["tls_client_cert"])) == "owner:alice"
        assert "PRIVATE KEY" not in str(signed)


async def test_the_agent_keeps_its_key_private(grid: Grid, tmp_path: Path) -> None:
    """The real agent code: key made in-process, only a CSR sent, files 0600, key not dumped."""
    async with grid.broker(TWO) as running:
        slot_ = SlotDescription.model_validate(
            {k: v for k, v in slot("agent-x").items() if k != "csr"}
        )
        broker = await vouched(grid, running)
        grant = await agent_attach.attach(grid.session, running.url, broker, slot_)
        assert "tls_key" not in grant.model_dump()
        assert "PRIVATE KEY" not in grant.model_dump_json()
        assert "PRIVATE KEY" not in repr(grant)
        tls_dir = tmp_path / "tls"
        write_tls(grant, tls_dir)
        for name in ("ca.pem", "worker.pem", "worker.key"):
            assert stat.S_IMODE((tls_dir / name).stat().st_mode) == 0o600
        assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700
        key = serialization.load_pem_private_key((tls_dir / "worker.key").read_bytes(), None)
        cert = _cert((tls_dir / "worker.pem").read_text())
        assert _spki(cert.public_key()) == _spki(key.public_key())


def test_peer_common_name_reads_getpeercert() -> None:
    peercert = {"subject": ((("organizationName", "PoD Grid"),), (("commonName", "worker:w"),))}
    assert peer_common_name(peercert) == "worker:w"
    assert peer_common_name({}) is None
    assert peer_common_name(None) is None
