"""Attacks on tokens: a revoked, expired or dead-request token must stop working.

Against a real master queue (SQLite, and MariaDB where one is configured) with the token
cache on, so a revoke has to invalidate it; plus the CLI against a real ``serve`` subprocess
and the file modes of its state directory under a permissive umask.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from podgrid.masterqueue.tokens import FINAL_GRACE_S
from tests.masterqueue.api_helpers import mq_service
from tests.masterqueue.test_serve import START_TIMEOUT_S, Served, http, podgrid


async def test_revoked_user_token_is_401_at_once_despite_the_cache(
    tmp_path: Path, db_url: str
) -> None:
    async with mq_service(tmp_path, db_url=db_url, token_cache_ttl_s=300) as svc:
        alice = await svc.user("alice")
        assert (await alice.call("GET", "/v1/whoami")).status == 200  # now cached
        listed = (await svc.admin.call("GET", "/v1/tokens?name=alice")).body["tokens"]
        assert [t["revoked"] for t in listed] == [None]
        revoked = await svc.admin.call("DELETE", f"/v1/tokens/{listed[0]['id']}")
        assert revoked.status == 200
        assert revoked.body["revoked"] is not None
        again = await alice.call("GET", "/v1/requests")
        assert (again.status, again.body["error"]) == (401, "unauthorized")
        assert (await svc.admin.call("DELETE", f"/v1/tokens/{listed[0]['id']}")).status == 200
        assert (await svc.admin.call("DELETE", "/v1/tokens/99999")).status == 404


async def test_token_listing_never_shows_a_token_or_its_digest(tmp_path: Path) -> None:
    async with mq_service(tmp_path) as svc:
        issued = await svc.admin.call(
            "POST", "/v1/tokens", json={"role": "agent", "name": "site-X", "expires_in_s": 60}
        )
        assert issued.status == 201
        assert issued.body["expires"] is not None
        token = issued.body["token"]
        listing = await svc.admin.call("GET", "/v1/tokens")
        text = repr(listing.body)
        assert token not in text
        assert hashlib.sha256(token.encode()).hexdigest() not in text
        row = next(t for t in listing.body["tokens"] if t["id"] == issued.body["id"])
        assert set(row) == {"id", "role", "name", "request_id", "created", "expires", "revoked"}
        assert (await svc.admin.as_(token).call("GET", "/v1/tokens")).status == 403


async def test_expired_token_is_401_even_while_cached(tmp_path: Path, db_url: str) -> None:
    async with mq_service(tmp_path, db_url=db_url, token_cache_ttl_s=300) as svc:
        token = await svc.store.create_token("user", "alice", expires_in_s=1)
        api = svc.admin.as_(token)
        assert (await api.call("GET", "/v1/whoami")).status == 200
        await asyncio.sleep(1.1)
        assert (await api.call("GET", "/v1/whoami")).status == 401
        refused = await svc.admin.call(
            "POST", "/v1/tokens", json={"role": "user", "name": "x", "expires_in_s": 0}
        )
        assert refused.status == 400


async def test_cancelled_requests_broker_token_dies(tmp_path: Path, db_url: str) -> None:
    async with mq_service(tmp_path, db_url=db_url, token_cache_ttl_s=300) as svc:
        alice = await svc.user("alice")
        rid = (await alice.submit()).body["id"]
        broker = svc.admin.as_(await svc.store.create_token("broker", f"broker-{rid}", rid))
        state = f"/v1/requests/{rid}/state"
        assert (await broker.call("POST", state, json={"state": "WAITING"})).status == 200
        assert (await alice.call("DELETE", f"/v1/requests/{rid}")).status == 200
        (row,) = (await svc.admin.call("GET", f"/v1/tokens?name=broker-{rid}")).body["tokens"]
        assert row["expires"] is not None  # capped at the request's end + FINAL_GRACE_S
        told = await broker.call("POST", state, json={"state": "PUBLISHING"})
        assert (told.status, told.body["cancel"], told.body["state"]) == (200, True, "CANCELLED")
        dead = await broker.call("POST", state, json={"state": "PUBLISHING"})
        assert (dead.status, dead.body["error"]) == (401, "unauthorized")
        assert (await broker.call("GET", f"/v1/requests/{rid}")).status == 401


async def test_broker_token_of_a_swept_request_expires_after_the_grace(tmp_path: Path) -> None:
    async with mq_service(tmp_path) as svc:
        alice = await svc.user("alice")
        rid = (await alice.submit()).body["id"]
        await svc.store.create_token("broker", f"broker-{rid}", rid)
        swept_at = datetime.now(UTC) + timedelta(days=2)  # the request's ttl is long over
        assert [s.state for s in await svc.store.expire_requests(swept_at, 60)] == ["EXPIRED"]
        (row,) = (await svc.admin.call("GET", f"/v1/tokens?name=broker-{rid}")).body["tokens"]
        expires = datetime.fromisoformat(row["expires"])
        assert expires - swept_at <= timedelta(seconds=FINAL_GRACE_S)


def test_cli_token_revoke_by_id_and_by_name(tmp_path: Path) -> None:
    served = Served(tmp_path, "--launcher", "none")
    try:
        served.wait_ready()
        tokens = [served.token_create("--role", "agent", "--name", "site-X") for _ in range(2)]
        one = served.token_create("--role", "user", "--name", "alice", "--ttl", "1h")
        for done in (*tokens, one):
            assert done.returncode == 0, done.stderr
        env = {k: v for k, v in os.environ.items() if k != "PODGRID_TOKEN"}
        env["PODGRID_URL"] = served.url

        def token_cmd(*args: str) -> subprocess.CompletedProcess[str]:
            argv = podgrid("token", *args, "--state-dir", str(served.state_dir))
            return subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S
            )

        listed = token_cmd("ls", "--name", "alice", "--json")
        assert listed.returncode == 0, listed.stderr
        assert one.stdout.strip() not in listed.stdout
        (alice,) = json.loads(listed.stdout)
        assert alice["expires"] is not None
        by_id = token_cmd("revoke", str(alice["id"]))
        assert by_id.returncode == 0, by_id.stderr
        assert http("GET", served.url + "/v1/whoami", one.stdout.strip())[0] == 401
        by_name = token_cmd("revoke", "--name", "site-X")
        assert by_name.returncode == 0
        assert by_name.stdout.count("revoked token") == 2
        for done in tokens:
            assert http("GET", served.url + "/v1/whoami", done.stdout.strip())[0] == 401
        none_left = token_cmd("revoke", "--name", "site-X")
        assert none_left.returncode == 1
        assert "no live token" in none_left.stderr
        assert token_cmd("revoke").returncode == 2  # an id or --name is required
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()


def test_state_dir_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        served = Served(tmp_path, "--launcher", "none")
    finally:
        os.umask(old)
    try:
        served.wait_ready()
        admin = served.admin_token()
        for _ in range(3):  # writes: the WAL and the shared-memory file exist now
            done = served.token_create("--role", "user", "--name", "alice")
            assert done.returncode == 0, done.stderr
        assert http("GET", served.url + "/v1/tokens", admin)[0] == 200
        names = {p.name for p in served.state_dir.iterdir()}
        assert {"masterqueue.db", "masterqueue.db-wal", "masterqueue.db-shm"} <= names, names
        assert "admin.token" in names
        modes = {
            str(p.relative_to(served.state_dir)): stat.S_IMODE(p.stat().st_mode)
            for p in [served.state_dir, *served.state_dir.rglob("*")]
        }
        wrong = {
            name: oct(mode)
            for name, mode in modes.items()
            if mode != (0o700 if (served.state_dir / name).is_dir() else 0o600)
        }
        assert wrong == {}
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()


@pytest.mark.parametrize("ttl", ["0", "-5", "soon", "20y"])
def test_cli_token_create_refuses_a_bad_ttl(tmp_path: Path, ttl: str) -> None:
    done = subprocess.run(
        podgrid("token", "create", "--role", "user", "--name", "a", "--ttl", ttl),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        env={**os.environ, "PODGRID_URL": "http://127.0.0.1:9"},
    )
    assert done.returncode == 2
    assert "--ttl" in done.stderr
