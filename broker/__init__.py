"""The PoD server: a Dask scheduler with per-cluster TLS, an attach API and stop rules.

A helper around ``distributed.Scheduler`` (it does not schedule anything itself): it
publishes the cluster's needs to the registry, hands places to job agents, reports to the
master queue and shuts the cluster down on cancel, TTL, idle timeout or SIGTERM.
"""

from podgrid.broker.settings import BrokerSettings

__all__ = ["BrokerSettings"]
