"""Helpers of the master-queue API tests: a real service on 127.0.0.1 and a tiny JSON client."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDict

from podgrid.config.retry import set_testing
from podgrid.masterqueue.service import RunningMasterQueue, run_masterqueue
from podgrid.masterqueue.settings import MasterQueueSettings
from podgrid.masterqueue.store import Store
from tests.masterqueue.factories import request_text


@dataclass
class Answer:
    """One HTTP answer: status, parsed JSON body (None when empty) and headers."""

    status: int
    body: Any
    headers: CIMultiDict[str]


class Api:
    """A bearer-token JSON client of one running master queue."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str | None) -> None:
        self.session = session
        self.url = url
        self.token = token

    def as_(self, token: str | None) -> Api:
        """The same client with another token."""
        return Api(self.session, self.url, token)

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: str | bytes | io.BytesIO | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """Send one request; the body is parsed as JSON when there is one."""
        hdrs = dict(headers or {})
        if self.token is not None:
            hdrs.setdefault("Authorization", f"Bearer {self.token}")
        async with self.session.request(
            method, self.url + path, json=json, data=data, headers=hdrs
        ) as resp:
            raw = await resp.read()
            body: Any = None
            if raw and resp.content_type == "application/json":
                body = await resp.json()
            elif raw:
                body = raw.decode()
            return Answer(resp.status, body, CIMultiDict(resp.headers))

    async def issue(self, role: str, name: str, request_id: int | None = None) -> str:
        """Issue a token through ``POST /v1/tokens`` (this client must hold an admin token)."""
        answer = await self.call(
            "POST", "/v1/tokens", json={"role": role, "name": name, "request_id": request_id}
        )
        assert answer.status == 201, answer.body
        return str(answer.body["token"])

    async def submit(self, text: str | None = None, key: str | None = None, **kw: Any) -> Answer:
        """Submit a TOML request (the factories' default unless ``text`` is given)."""
        headers = {"Content-Type": "application/toml"}
        if key is not None:
            headers["Idempotency-Key"] = key
        body = text if text is not None else request_text(**kw)
        return await self.call("POST", "/v1/requests", data=body, headers=headers)


@dataclass
class Service:
    """A running master queue, an admin client, and the store under it."""

    running: RunningMasterQueue
    admin: Api
    settings: MasterQueueSettings

    @property
    def store(self) -> Store:
        """The service's store."""
        return self.running.store

    async def user(self, name: str = "alice") -> Api:
        """A client holding a fresh user token."""
        return self.admin.as_(await self.admin.issue("user", name))


def service_settings(tmp_path: Path, **overrides: Any) -> MasterQueueSettings:
    """Settings for a service on a free port, with no launcher unless asked."""
    values: dict[str, Any] = {
        "http_port": 0,
        "state_dir": tmp_path / "state",
        "launcher": "none",
        "registry_url": "http://127.0.0.1:9",
        "queue_publish_interval_s": None,  # test_queue_depth turns it on
        "token_cache_ttl_s": 0,
    }
    values.update(overrides)
    return MasterQueueSettings(**values)


@contextlib.asynccontextmanager
async def mq_service(tmp_path: Path, **overrides: Any) -> AsyncIterator[Service]:
    """Run a master queue (SQLite under ``tmp_path`` unless ``db_url`` is given)."""
    set_testing()
    settings = service_settings(tmp_path, **overrides)
    async with run_masterqueue(settings) as running, aiohttp.ClientSession() as session:
        admin = running.admin_token or await running.store.create_token("admin", "test-admin")
        yield Service(running, Api(session, running.url, admin), settings)
