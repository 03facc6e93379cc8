"""The PoD server: one Dask scheduler with per-cluster TLS per server request.

It publishes its attach address and how many workers it still needs to the monitoring
registry, grants attach reservations to job agents, and reports its state to the master queue.
"""

__all__: list[str] = []
