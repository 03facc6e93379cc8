"""What a batch slot must offer to host a worker, and the one rule that says whether it does.

The broker publishes :class:`Requirements` as compact JSON (``PoD_Masters/<id>/Requirements``)
and checks an attaching slot with :func:`unmet`; the agent reads the same JSON and skips
servers its slot does not fit with the same function, so the two ends can never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Collection

from pydantic import BaseModel, ConfigDict, ValidationError

from podgrid.config.request import ServerRequest


class Requirements(BaseModel):
    """A server's demands on a slot; a key missing from the JSON demands nothing."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    cores: int = 1
    memory_mb: int = 0
    packages: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    min_ttl_s: int = 0

    @classmethod
    def of(cls, request: ServerRequest, min_ttl_s: int) -> Requirements:
        """The requirements of a server request's workers."""
        worker = request.worker
        return cls(
            cores=worker.cores,
            memory_mb=worker.memory_mb,
            packages=tuple(worker.packages),
            sites=tuple(worker.sites),
            min_ttl_s=min_ttl_s,
        )

    def to_json(self) -> str:
        """The compact JSON of the ``Requirements`` parameter."""
        return json.dumps(self.model_dump(mode="json"), separators=(",", ":"))

    @classmethod
    def parse(cls, raw: object) -> Requirements | None:
        """Read a published value; ``None`` when unreadable (such a server is skipped)."""
        if raw is None or raw == "":
            return cls()
        try:
            return cls.model_validate(json.loads(str(raw)))
        except (ValueError, ValidationError):
            return None


def unmet(
    reqs: Requirements,
    *,
    cores: int,
    memory_mb: int,
    packages: Collection[str],
    site: str,
    ttl_s: float,
) -> list[str]:
    """Every requirement a slot with these figures does not meet, in words (empty: it fits)."""
    problems: list[str] = []
    if cores < reqs.cores:
        problems.append(f"cores: {reqs.cores} needed, the slot has {cores}")
    if memory_mb < reqs.memory_mb:
        problems.append(f"memory_mb: {reqs.memory_mb} needed, the slot has {memory_mb}")
    missing = sorted(set(reqs.packages) - set(packages))
    if missing:
        problems.append(f"packages: missing {', '.join(missing)}")
    if reqs.sites and site not in reqs.sites:
        problems.append(f"site: {site!r} is not one of {', '.join(reqs.sites)}")
    if ttl_s < reqs.min_ttl_s:
        problems.append(f"ttl_s: at least {reqs.min_ttl_s} s needed, the slot has {int(ttl_s)} s")
    return problems
