"""The scheduler's own dashboard (bokeh), reachable by the broker process alone.

The Dask dashboard has no authentication of its own, and a TCP port on 127.0.0.1 is open to
every user of the host. So the scheduler's HTTP server (dashboard, ``/health``, ``/metrics``,
the JSON routes) is moved off TCP onto a Unix socket in the broker's private directory
(0700, the socket 0600) right after the scheduler is built: Dask binds a free loopback port
while constructing the scheduler, and :func:`confine` closes it before the event loop has run
once, so nothing ever accepts a connection there. The directory is a fresh ``mkdtemp`` (a
socket path must stay under 108 bytes, which a state dir need not). Only the broker's own
HTTPS server (:mod:`podgrid.broker.dashboard`) forwards to the socket, for the owner.

Every dashboard route lives under :data:`DASHBOARD_PREFIX` (the scheduler's
``http_prefix``), so the proxy forwards paths unchanged.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Final

from tornado.netutil import bind_unix_socket

DASHBOARD_PREFIX: Final = "/dashboard"
DASHBOARD_PATH: Final = f"{DASHBOARD_PREFIX}/status"  # the page dashboard_link opens
SOCKET_NAME: Final = "dashboard.sock"


def confine(scheduler: Any) -> Path:
    """Serve ``scheduler``'s HTTP server on a private Unix socket only; the socket's path.

    Call it with no ``await`` between building the scheduler and this: its TCP listener is
    closed before anything could be accepted on it.
    """
    server = scheduler.http_server
    server.stop()  # closes the loopback TCP listeners Dask opened
    directory = Path(tempfile.mkdtemp(prefix="podgrid-dashboard-"))  # 0700
    path = directory / SOCKET_NAME
    server.add_socket(bind_unix_socket(str(path), mode=0o600))
    return path


def remove(path: Path) -> None:
    """Remove the socket's private directory (the broker stops)."""
    shutil.rmtree(path.parent, ignore_errors=True)
