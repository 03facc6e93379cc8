"""A REST answer rendered once and written as bytes: what a long-poll wake sends to a group.

Every waiter parked on the same query gets the same answer, so a wake renders it once
(:func:`render`) and writes ``head + waiter's own X-Request-Id line + body`` straight to each
waiter's transport (:meth:`Rendered.frame`): no per-waiter rendering, header building or
aiohttp response machinery. The handler then returns :class:`AlreadySent`, a response that
aiohttp finishes without writing anything, keeping the connection alive for the next poll.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from email.utils import formatdate

from aiohttp import web

from podgrid.monitoring.formats import render_names, render_rows
from podgrid.monitoring.query import Query
from podgrid.monitoring.search import find_names, find_rows
from podgrid.monitoring.store import Store

NOW_HEADER = "X-Registry-Now-Ms"
REQUEST_ID_HEADER = "X-Request-Id"
MAX_REQUEST_ID_CHARS = 64  # as podgrid.web: a client's id beyond this is cut


@dataclass(frozen=True, slots=True)
class Rendered:
    """One answer: its body, the registry clock it was computed at, and the wire head."""

    body: bytes
    content_type: str
    now_ms: int

    def head(self) -> bytes:
        """Status line and the headers every waiter of the group shares (no final CRLF)."""
        return (
            "HTTP/1.1 200 OK\r\n"
            f"Content-Type: {self.content_type}; charset=utf-8\r\n"
            f"Content-Length: {len(self.body)}\r\n"
            f"{NOW_HEADER}: {self.now_ms}\r\n"
            f"Date: {formatdate(self.now_ms / 1000, usegmt=True)}\r\n"
            "Server: podgrid-registry\r\n"
        ).encode("ascii")

    def response(self) -> web.Response:
        """The same answer as an ordinary aiohttp response (timeouts, plain queries)."""
        resp = web.Response(body=self.body, content_type=self.content_type, charset="utf-8")
        resp.headers[NOW_HEADER] = str(self.now_ms)
        return resp


def render(store: Store, query: Query) -> Rendered:
    """Compute and encode the answer to ``query`` now."""
    now_ms = store.clock_ms()
    if query.param is None:
        text = render_names(find_names(store, query), query.fmt)
    else:
        text = render_rows(find_rows(store, query, now_ms), query.fmt)
    return Rendered(text.encode("utf-8"), query.fmt, now_ms)


def request_id_line(request: web.Request) -> bytes:
    """``X-Request-Id: <id>`` plus the blank line ending the head, for one waiter.

    The client's id when it sent a usable one (as the error middleware keeps it), else a new
    one; computed when the waiter parks, so the wake itself does no per-waiter formatting.
    """
    given = request.headers.get(REQUEST_ID_HEADER, "")[:MAX_REQUEST_ID_CHARS]
    rid = given if given and given.isascii() and given.isprintable() else uuid.uuid4().hex
    return f"{REQUEST_ID_HEADER}: {rid}\r\n\r\n".encode("ascii")


class AlreadySent(web.StreamResponse):
    """A response whose bytes the long-poll hub already wrote to the transport."""

    async def prepare(self, request: web.BaseRequest) -> None:
        """Nothing to send: the hub wrote status, headers and body."""
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        """Nothing to finish: the answer had a Content-Length."""
        return None

    @property
    def keep_alive(self) -> bool:
        """Keep the connection for the agent's next long-poll."""
        return True
