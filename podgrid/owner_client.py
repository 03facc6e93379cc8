"""The owner's client of its broker: scale, adapt and the scaling status, over mutual TLS.

The broker's HTTPS certificate is checked against the master queue's broker CA and must name
the request (``request-<id>.brokers.podgrid``: :attr:`ConnectionInfo.broker_name`); the
owner proves who it is with its own client certificate of the cluster CA
(:attr:`ConnectionInfo.tls_client_cert` and the key made by ``PodGrid.connection``). No token
is sent to a broker. ``ssl`` loads a key only from a file, so :func:`owner_context` writes
the key to a private temporary directory (0700, the file 0600) and removes it at once.
"""

from __future__ import annotations

import json
import ssl
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp

from podgrid.config.runtime import write_private_file
from podgrid.errors import PodGridError, Unreachable
from podgrid.protocol import AdaptRequest, ConnectionInfo, ScaleRequest, ScalingStatus
from podgrid.web import decode_error

__all__ = ["NoOwnerAccess", "OwnerClient", "owner_context"]

TIMEOUT_S = 30.0  # seconds for one owner call


class NoOwnerAccess(PodGridError):
    """The connection info lacks what reaching the broker as its owner needs."""


def owner_context(info: ConnectionInfo) -> ssl.SSLContext:
    """A client context trusting the broker CA alone and presenting the owner's certificate."""
    if info.broker_ca is None or info.tls_client_cert is None or info.tls_client_key is None:
        raise NoOwnerAccess(
            "the connection has no broker CA or owner certificate: get it with "
            "PodGrid.connection() from a master queue that gives them"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cadata=info.broker_ca)
    with tempfile.TemporaryDirectory(prefix="podgrid-owner-") as tmp:
        cert, key = Path(tmp) / "owner.pem", Path(tmp) / "owner.key"
        write_private_file(cert, info.tls_client_cert)
        write_private_file(key, info.tls_client_key)
        context.load_cert_chain(cert, key)
    return context


class OwnerClient:
    """Calls on one broker's owner routes (``/v1/owner/*``)."""

    def __init__(self, info: ConnectionInfo) -> None:
        if info.attach_url is None or info.broker_name is None:
            raise NoOwnerAccess("the connection has no broker URL or name yet")
        self.base_url = info.attach_url.rstrip("/")
        self.server_name = info.broker_name
        self.context = owner_context(info)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.context),
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
            )
        return self._session

    async def __aenter__(self) -> Self:
        self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """One call; the decoded JSON answer, or the ``ServiceError`` of the error answer."""
        url = self.base_url + path
        try:
            async with self._open().request(
                method, url, json=body, server_hostname=self.server_name
            ) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    raise decode_error(resp.status, resp.reason or "", text, "broker")
                return json.loads(text)
        except (aiohttp.ClientConnectionError, TimeoutError) as e:
            raise Unreachable(f"broker at {self.base_url}: {e}") from e

    async def scaling(self) -> ScalingStatus:
        """How the broker sizes the cluster now."""
        return ScalingStatus.model_validate(await self.call("GET", "/v1/owner/scaling"))

    async def scale(self, n: int) -> ScalingStatus:
        """Keep ``n`` workers."""
        body = ScaleRequest(n=n).model_dump()
        return ScalingStatus.model_validate(await self.call("POST", "/v1/owner/scale", body))

    async def adapt(self, minimum: int, maximum: int) -> ScalingStatus:
        """Adaptive scaling between ``minimum`` and ``maximum``, run by the broker."""
        body = AdaptRequest(minimum=minimum, maximum=maximum).model_dump()
        return ScalingStatus.model_validate(await self.call("POST", "/v1/owner/adapt", body))
