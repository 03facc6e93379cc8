"""The demo's analysis on a cluster: by hand, chunk by chunk, then with Dask collections.

:func:`analyse` takes any connected asynchronous ``distributed.Client`` (the demo's is the
cluster owner's, over TLS; a test's may be a ``LocalCluster``'s), so the same code runs
wherever the workers are. :func:`summary_lines` is what the demo prints of it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from podgrid.dimuon import (
    Chunk,
    ChunkResult,
    Histogram,
    Peak,
    counts_as_histogram,
    fill_chunk,
    lazy_counts,
    merge,
    peak,
    plan_chunks,
    text_plot,
)
from podgrid.rootfiles import Source


@dataclass
class Collections:
    """The ``uproot.dask`` version's histogram, its partitions and how long it took."""

    histogram: Histogram
    partitions: int
    seconds: float


@dataclass
class Analysis:
    """What the analysis read and found; ``chunks_by_worker``: worker name → chunks it read."""

    sources: list[Source]
    unit: str
    histogram: Histogram
    entries: int
    chunks_by_worker: dict[str, list[Chunk]] = field(default_factory=dict)
    seconds: float = 0.0
    collections: Collections | None = None

    @property
    def peak(self) -> Peak:
        """The merged histogram's fullest bin."""
        return peak(self.histogram)

    @property
    def agree(self) -> bool:
        """Whether both versions filled the same counts, under- and overflow included."""
        if self.collections is None:
            return False
        mine, theirs = self.histogram.view(flow=True), self.collections.histogram.view(flow=True)
        return bool(np.array_equal(mine, theirs))


async def by_chunks(client: Any, sources: Sequence[Source]) -> list[ChunkResult]:
    """Each worker reads its own run of chunks (:func:`plan_chunks`); their results, in order.

    The chunks are pinned to their worker, so the split shown is the split that ran.
    """
    identity = await client.scheduler.identity()
    workers = sorted(identity["workers"], key=lambda a: str(identity["workers"][a]["name"]))
    plan = plan_chunks(sources, len(workers))
    futures = [
        client.submit(fill_chunk, chunk, workers=[address], allow_other_workers=False, pure=False)
        for address, chunks in zip(workers, plan, strict=True)
        for chunk in chunks
    ]
    results: list[ChunkResult] = await client.gather(futures)
    return results


async def by_collections(client: Any, sources: Sequence[Source], partitions: int) -> Collections:
    """The same histogram from ``uproot.dask``, about ``partitions`` partitions, on ``client``."""
    began = time.monotonic()
    step = max(1, math.ceil(sum(s.entries for s in sources) / partitions))
    lazy, parts = await asyncio.to_thread(lazy_counts, sources, step)  # opens every file
    counts = await client.compute(lazy)
    histogram = counts_as_histogram(counts, sources[0].branch)
    return Collections(histogram, parts, time.monotonic() - began)


async def analyse(client: Any, sources: Sequence[Source], *, unit: str = "") -> Analysis:
    """The by-hand version on ``client``'s cluster; :func:`by_collections` is the other one."""
    began = time.monotonic()
    results = await by_chunks(client, sources)
    analysis = Analysis(
        sources=list(sources),
        unit=unit,
        histogram=merge(results),
        entries=sum(r.entries for r in results),
        seconds=time.monotonic() - began,
    )
    for result in results:
        analysis.chunks_by_worker.setdefault(result.worker, []).append(result.chunk)
    return analysis


def _entry_ranges(chunks: Sequence[Chunk]) -> str:
    """``file first-last, first-last; other ...`` (entries inclusive), grouped by file."""
    groups: list[tuple[Source, list[str]]] = []
    for chunk in chunks:
        span = f"{chunk.start}-{chunk.stop - 1}"
        if groups and groups[-1][0] == chunk.source:
            groups[-1][1].append(span)
        else:
            groups.append((chunk.source, [span]))
    return "; ".join(f"{source.name} entries {', '.join(spans)}" for source, spans in groups)


def _indexes(chunks: Sequence[Chunk]) -> str:
    first, last = chunks[0].index, chunks[-1].index
    contiguous = [c.index for c in chunks] == list(range(first, last + 1))
    if contiguous and last > first:
        return f"{first}-{last}"
    return ",".join(str(c.index) for c in chunks)


def summary_lines(analysis: Analysis, agents: Mapping[str, str] | None = None) -> list[str]:
    """What the demo prints: events read, who read what, the peak and a plot of its region.

    ``agents`` maps a worker's name to the job agent it runs in, where known.
    """
    sources, agents = analysis.sources, agents or {}
    files = sources[0].name if len(sources) == 1 else f"{len(sources)} files"
    chunks = sum(len(c) for c in analysis.chunks_by_worker.values())
    unit = f" {analysis.unit}" if analysis.unit else ""
    top, flow = analysis.peak, analysis.histogram.view(flow=True)
    values = int(analysis.histogram.sum(flow=True))
    several = f" ({values} values)" if any(s.jagged for s in sources) else ""
    lines = [
        f"analysis: uproot read {analysis.entries} events{several} of branch {sources[0].branch!r} "
        f"(tree {sources[0].tree!r}, {files}) in {chunks} chunks on "
        f"{len(analysis.chunks_by_worker)} workers, {analysis.seconds:.2f} s",
    ]
    for worker, mine in sorted(analysis.chunks_by_worker.items()):
        agent = f" (agent {agents[worker]})" if worker in agents else ""
        lines.append(
            f"  worker {worker}{agent} read chunks {_indexes(mine)}, "
            f"{sum(c.entries for c in mine)} events: {_entry_ranges(mine)}"
        )
    lines.append(
        f"merged on the client: peak bin {top.low:g}-{top.high:g}{unit} with {top.count} "
        f"entries ({int(flow[0])} below {analysis.histogram.axes[0].edges[0]:g}, "
        f"{int(flow[-1])} above {analysis.histogram.axes[0].edges[-1]:g})"
    )
    lines += ["  " + line for line in text_plot(analysis.histogram, analysis.unit)]
    if analysis.collections is not None:
        verdict = "the same histogram" if analysis.agree else "A DIFFERENT HISTOGRAM"
        other = peak(analysis.collections.histogram)
        lines.append(
            f"dask collections: uproot.dask + dask.array.histogram, "
            f"{analysis.collections.partitions} partitions, {analysis.collections.seconds:.2f} s: "
            f"{verdict} (peak bin {other.low:g}-{other.high:g}{unit} with {other.count} entries)"
        )
    return lines


def as_json(analysis: Analysis) -> dict[str, Any]:
    """The analysis as JSON (``podgrid demo --json``)."""
    top = analysis.peak
    return {
        "files": [s.path for s in analysis.sources],
        "tree": analysis.sources[0].tree,
        "branch": analysis.sources[0].branch,
        "events": analysis.entries,
        "peak": {"low": top.low, "high": top.high, "count": top.count, "unit": analysis.unit},
        "counts": [int(c) for c in analysis.histogram.values()],
        "chunks_by_worker": {
            worker: [{"file": c.source.path, "start": c.start, "stop": c.stop} for c in chunks]
            for worker, chunks in sorted(analysis.chunks_by_worker.items())
        },
        "seconds": round(analysis.seconds, 3),
        "dask_collections": None
        if analysis.collections is None
        else {
            "partitions": analysis.collections.partitions,
            "same_histogram": analysis.agree,
            "seconds": round(analysis.collections.seconds, 3),
        },
    }
