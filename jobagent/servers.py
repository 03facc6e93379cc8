"""PoD servers seen in the registry, whether they fit a slot, and the order to try them in.

A crowd of agents must spread over the servers that need workers instead of stampeding the
first one: candidates are drawn at random, weighted by how many workers each still needs.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from podgrid.jobagent.slot import Slot
from podgrid.monitoring.client import Sample
from podgrid.protocol import MASTERS_CLUSTER, MasterParam, Requirements, unmet

STALE_FACTOR: Final = 3  # a server silent for this many publish intervals is presumed gone
STALE_MARGIN_MS: Final = 2000  # ms added to the staleness bound (clock and network slack)


@dataclass(frozen=True, slots=True)
class ServerOffer:
    """One server that needs workers, as last published."""

    request_id: str
    address: str
    needed: int
    requirements: Requirements
    published_ms: int


def offers_from_samples(
    samples: Iterable[Sample], now_ms: int, stale_after_ms: int
) -> list[ServerOffer]:
    """Servers with an ``Address`` and a recent ``NeededWorkers`` >= 1."""
    by_node: dict[str, dict[str, Sample]] = {}
    for s in samples:
        if s.cluster != MASTERS_CLUSTER:
            continue
        node = by_node.setdefault(s.node, {})
        old = node.get(s.parameter)
        if old is None or s.timestamp_ms >= old.timestamp_ms:
            node[s.parameter] = s
    offers = []
    for request_id, params in sorted(by_node.items()):
        needed, address = params.get(MasterParam.NEEDED_WORKERS), params.get(MasterParam.ADDRESS)
        if needed is None or address is None or not isinstance(needed.value, int | float):
            continue
        if needed.value < 1 or now_ms - needed.timestamp_ms > stale_after_ms:
            continue
        published = params.get(MasterParam.REQUIREMENTS)
        reqs = Requirements.parse(published.value if published is not None else None)
        if reqs is None:
            continue
        offers.append(
            ServerOffer(
                request_id, str(address.value), int(needed.value), reqs, needed.timestamp_ms
            )
        )
    return offers


def misfit(slot: Slot, reqs: Requirements, remaining_s: float) -> str | None:
    """Why the slot cannot serve a server with ``reqs`` (None: it fits); the broker's own rule."""
    problems = unmet(
        reqs,
        cores=slot.cores,
        memory_mb=slot.memory_mb,
        packages=slot.packages,
        site=slot.site,
        ttl_s=remaining_s,
    )
    return "; ".join(problems) or None


def fitting(offers: Iterable[ServerOffer], slot: Slot) -> list[ServerOffer]:
    """The offers this slot can serve now."""
    left = slot.remaining_s()
    return [o for o in offers if misfit(slot, o.requirements, left) is None]


def weighted_order(offers: Iterable[ServerOffer], rng: random.Random) -> list[ServerOffer]:
    """All offers in a random order where a server needing more workers tends to come first.

    Weighted sampling without replacement (Efraimidis-Spirakis: key = u ** (1 / weight)).
    """
    keyed = [(rng.random() ** (1.0 / max(o.needed, 1)), o) for o in offers]
    keyed.sort(key=lambda pair: pair[0], reverse=True)
    return [o for _, o in keyed]


def stale_after_ms(publish_interval_s: float) -> int:
    """How old a ``NeededWorkers`` value may be before its server counts as gone."""
    return int(STALE_FACTOR * publish_interval_s * 1000) + STALE_MARGIN_MS
