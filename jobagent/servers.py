"""PoD servers seen in the registry, whether they fit a slot, and the order to try them in.

A crowd of agents must spread over the servers that need workers instead of stampeding the
first one: candidates are drawn at random, weighted by how many workers each still needs.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel, ConfigDict, ValidationError

from podgrid.jobagent.slot import Slot
from podgrid.monitoring.client import Sample

CLUSTER: Final = "PoD_Masters"
STALE_FACTOR: Final = 3  # a server silent for this many publish intervals is presumed gone
STALE_MARGIN_MS: Final = 2000  # ms added to the staleness bound (clock and network slack)


class Requirements(BaseModel):
    """A server's ``Requirements`` (compact JSON); missing keys demand nothing."""

    model_config = ConfigDict(extra="ignore")

    cores: int = 1
    memory_mb: int = 0
    packages: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    min_ttl_s: int = 0


@dataclass(frozen=True, slots=True)
class ServerOffer:
    """One server that needs workers, as last published."""

    request_id: str
    address: str
    needed: int
    requirements: Requirements
    published_ms: int


def parse_requirements(raw: object) -> Requirements | None:
    """The server's requirements; ``None`` when they are unreadable (such a server is skipped)."""
    if raw is None or raw == "":
        return Requirements()
    try:
        return Requirements.model_validate(json.loads(str(raw)))
    except (ValueError, ValidationError):
        return None


def offers_from_samples(
    samples: Iterable[Sample], now_ms: int, stale_after_ms: int
) -> list[ServerOffer]:
    """Servers with an ``Address`` and a recent ``NeededWorkers`` >= 1."""
    by_node: dict[str, dict[str, Sample]] = {}
    for s in samples:
        if s.cluster != CLUSTER:
            continue
        node = by_node.setdefault(s.node, {})
        old = node.get(s.parameter)
        if old is None or s.timestamp_ms >= old.timestamp_ms:
            node[s.parameter] = s
    offers = []
    for request_id, params in sorted(by_node.items()):
        needed, address = params.get("NeededWorkers"), params.get("Address")
        if needed is None or address is None or not isinstance(needed.value, int | float):
            continue
        if needed.value < 1 or now_ms - needed.timestamp_ms > stale_after_ms:
            continue
        reqs = parse_requirements(
            params["Requirements"].value if "Requirements" in params else None
        )
        if reqs is None:
            continue
        offers.append(
            ServerOffer(
                request_id, str(address.value), int(needed.value), reqs, needed.timestamp_ms
            )
        )
    return offers


def misfit(slot: Slot, reqs: Requirements, remaining_s: float) -> str | None:
    """Why the slot cannot serve a server with ``reqs`` (None: it fits)."""
    if reqs.cores > slot.cores:
        return f"needs {reqs.cores} cores, slot has {slot.cores}"
    if reqs.memory_mb > slot.memory_mb:
        return f"needs {reqs.memory_mb} MB, slot has {slot.memory_mb}"
    missing = set(reqs.packages) - set(slot.packages)
    if missing:
        return f"needs packages {sorted(missing)}"
    if reqs.sites and slot.site not in reqs.sites:
        return f"wants sites {list(reqs.sites)}, slot is at {slot.site}"
    if reqs.min_ttl_s > remaining_s:
        return f"needs {reqs.min_ttl_s} s of slot time, {int(remaining_s)} s left"
    return None


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
