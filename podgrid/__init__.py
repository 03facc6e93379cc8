"""The ``podgrid`` command and the Python client API users import.

Also home of the embedded local grid behind ``podgrid up`` and ``podgrid demo``.

.. code-block:: python

    from distributed import Client
    from podgrid import PodCluster

    with PodCluster("request.toml") as cluster, Client(cluster) as client:
        cluster.scale(8)

or, for scripts that manage many requests, the async handle:

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
    from podgrid.cluster import PodCluster, list_clusters
    from podgrid.endpoints import Endpoint, EndpointError, EndpointNotFound, discover

# ``python -m podgrid broker serve`` imports this package first: the client API (aiohttp,
# the master-queue client) loads on first use, not for every command.
_LAZY = {
    "PodCluster": "podgrid.cluster",
    "list_clusters": "podgrid.cluster",
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
    "PodCluster",
    "PodGrid",
    "RequestFailed",
    "WaitTimeout",
    "discover",
    "list_clusters",
]
