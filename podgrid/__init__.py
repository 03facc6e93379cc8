"""The ``podgrid`` command and the Python client API users import.

Also home of the embedded local grid behind ``podgrid up`` and ``podgrid demo``.

.. code-block:: python

    from podgrid import PodGrid

    async with PodGrid.connect() as grid:
        req = await grid.submit("request.toml")
        await grid.wait_ready(req.id)
        info = await grid.connection(req.id)
"""

from podgrid.client import (
    ConnectionInfo,
    NoConnectionYet,
    PodGrid,
    RequestFailed,
    WaitTimeout,
)
from podgrid.endpoints import Endpoint, EndpointError, EndpointNotFound, discover

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
