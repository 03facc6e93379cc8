"""The ``podgrid`` command and the Python client API users import.

Also home of the embedded local grid behind ``podgrid up`` and ``podgrid demo``.

.. code-block:: python

    from podgrid import PodGrid

    async with PodGrid.connect() as grid:
        req = await grid.submit("request.toml")
        await grid.wait_ready(req.id)
        info = await grid.connection(req.id)
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from podgrid.client import (
        ConnectionInfo,
        NoConnectionYet,
        PodGrid,
        RequestFailed,
        WaitTimeout,
    )
    from podgrid.endpoints import Endpoint, EndpointError, EndpointNotFound, discover

# ``python -m podgrid broker serve`` imports this package first: the client API (aiohttp,
# the master-queue client) loads on first use, not for every command.
_LAZY = {
    "ConnectionInfo": "podgrid.client",
    "NoConnectionYet": "podgrid.client",
    "PodGrid": "podgrid.client",
    "RequestFailed": "podgrid.client",
    "WaitTimeout": "podgrid.client",
    "Endpoint": "podgrid.endpoints",
    "EndpointError": "podgrid.endpoints",
    "EndpointNotFound": "podgrid.endpoints",
    "discover": "podgrid.endpoints",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'podgrid' has no attribute {name!r}")


__all__ = [
    "ConnectionInfo",
    "Endpoint",
    "EndpointError",
    "EndpointNotFound",
    "NoConnectionYet",
    "PodGrid",
    "RequestFailed",
    "WaitTimeout",
    "discover",
]
