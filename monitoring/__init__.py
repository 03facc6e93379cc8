"""The monitoring registry (MonALISA-compatible) and its client.

ApMon UDP and HTTP ingest, MonALISA REST queries with a long-poll extension, Prometheus
metrics and a live dashboard: where PoD servers advertise themselves and agents look.
"""

__all__: list[str] = []
