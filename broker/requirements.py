"""What a batch slot must offer to host one of the cluster's workers, and how it is published."""

from __future__ import annotations

import json

from podgrid.config.request import ServerRequest
from podgrid.masterqueue.models import SlotDescription


def requirements_json(request: ServerRequest, min_ttl_s: int) -> str:
    """The compact JSON of the ``Requirements`` parameter agents match their slot against."""
    worker = request.worker
    doc = {
        "cores": worker.cores,
        "memory_mb": worker.memory_mb,
        "packages": list(worker.packages),
        "sites": list(worker.sites),
        "min_ttl_s": min_ttl_s,
    }
    return json.dumps(doc, separators=(",", ":"))


def unmet(request: ServerRequest, slot: SlotDescription, min_ttl_s: int) -> list[str]:
    """Every requirement ``slot`` does not meet, in words (empty: the slot fits)."""
    worker = request.worker
    problems: list[str] = []
    if slot.cores < worker.cores:
        problems.append(f"cores: {worker.cores} needed, the slot has {slot.cores}")
    if slot.memory_mb < worker.memory_mb:
        problems.append(f"memory_mb: {worker.memory_mb} needed, the slot has {slot.memory_mb}")
    missing = sorted(set(worker.packages) - set(slot.packages))
    if missing:
        problems.append(f"packages: missing {', '.join(missing)}")
    if worker.sites and slot.site not in worker.sites:
        problems.append(f"site: {slot.site!r} is not one of {', '.join(worker.sites)}")
    if slot.ttl_s < min_ttl_s:
        problems.append(f"ttl_s: at least {min_ttl_s} s needed, the slot has {slot.ttl_s} s")
    return problems
