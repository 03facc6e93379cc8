"""HTTP/1.1 over a bare socket, so a test can send header bytes no HTTP client would.

aiohttp and urllib encode header values themselves (and refuse or re-encode non-ASCII);
an attacker's bytes must reach the server exactly as written, so this writes the request
line, the headers and the body byte for byte and reads the answer until the server closes.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class RawAnswer:
    """Status, headers (lower-case names) and the body of one answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


async def raw_request(
    base_url: str,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
) -> RawAnswer:
    """Send exactly these bytes to ``base_url`` (http or https, not verified) and read back."""
    parts = urlsplit(base_url)
    assert parts.hostname is not None
    assert parts.port is not None
    context: ssl.SSLContext | None = None
    if parts.scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port, ssl=context)
    try:
        lines = [f"{method} {path} HTTP/1.1".encode(), f"Host: {parts.netloc}".encode()]
        lines += [name + b": " + value for name, value in headers]
        lines += [f"Content-Length: {len(body)}".encode(), b"Connection: close"]
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    got = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        got[name.strip().lower()] = value.strip()
    if got.get("transfer-encoding") == "chunked":
        rest = _unchunk(rest)
    return RawAnswer(int(status_line.split()[1]), got, rest)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out
