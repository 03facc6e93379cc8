"""Ingest: ApMon datagrams and HTTP publishes into the store, waking long-polls.

Never raises for bad input: a datagram that cannot be accepted is dropped and counted by
reason. Per ApMon instance the last sequence number is remembered, so a replayed or late
datagram (seq not above the last one) is dropped instead of overwriting newer values.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Sequence
from typing import Any

import structlog

from podgrid.monitoring.apmon import DatagramError, decode_datagram
from podgrid.monitoring.history import Value
from podgrid.monitoring.longpoll import LongPollHub
from podgrid.monitoring.metrics import RegistryMetrics
from podgrid.monitoring.store import Store

log = structlog.get_logger("podgrid.monitoring")

MAX_INSTANCES = 65_536  # ApMon instances whose last sequence number is remembered
SEQ_RESTART_GAP = 2**30  # a jump back this large is a restarted/wrapped sender, not a replay
MAX_FUTURE_MS = 86_400_000  # timestamps further ahead than this are refused


class Ingestor:
    """Turns decoded input into store updates, counting everything it drops."""

    def __init__(
        self,
        *,
        farm: str,
        store: Store,
        hub: LongPollHub,
        metrics: RegistryMetrics,
        apmon_password: str | None,
    ) -> None:
        self.farm = farm
        self.store = store
        self.hub = hub
        self.metrics = metrics
        self._password = None if apmon_password is None else apmon_password.encode()
        self._last_seq: dict[int, int] = {}

    def datagram(self, data: bytes) -> str | None:
        """Ingest one UDP datagram; returns the drop reason, or None when accepted."""
        self.metrics.datagrams_received.inc()
        try:
            reason = self._datagram(data)
        except DatagramError as e:
            reason = e.reason
        if reason is not None:
            self.metrics.datagrams_dropped.labels(reason=reason).inc()
        return reason

    def _datagram(self, data: bytes) -> str | None:
        dgram = decode_datagram(data)
        if self._password is not None and not hmac.compare_digest(
            dgram.password.encode(), self._password
        ):
            return "bad_password"
        time_ms = None if dgram.time_s is None else dgram.time_s * 1000
        if time_ms is not None and time_ms > self.store.clock_ms() + MAX_FUTURE_MS:
            return "bad_timestamp"
        if not self._fresh_seq(dgram.instance_id, dgram.seq):
            return "replay"
        self.put(dgram.cluster, dgram.node, dgram.params, time_ms)
        return None

    def _fresh_seq(self, instance_id: int, seq: int) -> bool:
        last = self._last_seq.pop(instance_id, None)
        if last is not None and seq <= last and last - seq < SEQ_RESTART_GAP:
            self._last_seq[instance_id] = last
            return False
        if len(self._last_seq) >= MAX_INSTANCES:
            del self._last_seq[next(iter(self._last_seq))]  # forget the least recent sender
        self._last_seq[instance_id] = seq
        return True

    def put(
        self, cluster: str, node: str, params: Sequence[tuple[str, Value]], time_ms: int | None
    ) -> int:
        """Store values of our own farm and wake matching long-polls; returns values stored."""
        result = self.store.put(self.farm, cluster, node, params, time_ms)
        if result.stale:
            self.metrics.values_stale.inc(result.stale)
        if result.refused:
            self.metrics.series_refused.inc(result.refused)
        if result.changed:
            self.hub.notify(self.farm, cluster, node, result.changed)
        return result.accepted


class ApMonProtocol(asyncio.DatagramProtocol):
    """The UDP endpoint: hands every datagram to the ingestor; never lets an error out."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        """Ingest one datagram; failures are counted as ``internal`` and logged."""
        try:
            self.ingestor.datagram(data)
        except Exception:  # one bad datagram must not stop ingest
            self.ingestor.metrics.datagrams_dropped.labels(reason="internal").inc()
            log.exception("registry.datagram_failed", size_bytes=len(data))

    def error_received(self, exc: Exception) -> None:
        """Socket-level errors (ICMP and the like) are logged, never fatal."""
        log.warning("registry.udp_error", error=repr(exc))
