"""The demo's analysis: a histogram of one branch (the dimuon mass ``M``) of real ROOT files.

Two ways, on the same cluster. By hand: :func:`plan_chunks` cuts the files' entries into
chunks, each worker gets its own run of them, :func:`fill_chunk` reads one chunk with uproot
where the worker is and fills a hist histogram, and the client adds the histograms
(:func:`merge`). As a physicist writes it: :func:`lazy_counts` is ``uproot.dask`` and a
``dask.array`` histogram, one graph that the cluster computes.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import hist
import numpy as np

from podgrid.rootfiles import Source

if TYPE_CHECKING:
    import dask.array

BINS: Final = 120  # 1 GeV bins of the dimuon mass
LOW, HIGH = 0.0, 120.0  # the axis' range, in the branch's unit (GeV for M)
CHUNKS_PER_WORKER: Final = 4
PLOT_HALF_WIDTH: Final = 8  # bins shown either side of the peak
PLOT_WIDTH: Final = 40  # characters of the peak bin's bar

Histogram: TypeAlias = "hist.Hist[hist.storage.Int64]"


@dataclass(frozen=True, slots=True)
class Chunk:
    """Entries ``start`` to ``stop`` (exclusive) of one source; ``index`` numbers the plan."""

    index: int
    source: Source
    start: int
    stop: int

    @property
    def entries(self) -> int:
        """How many entries the chunk holds."""
        return self.stop - self.start


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """One chunk's histogram, the entries read and the Dask worker that read them."""

    chunk: Chunk
    histogram: Histogram
    entries: int
    worker: str


@dataclass(frozen=True, slots=True)
class Peak:
    """The fullest bin: its edges and count."""

    index: int
    low: float
    high: float
    count: int


def new_histogram(label: str) -> Histogram:
    """An empty histogram of the analysis' axis (with under- and overflow)."""
    axis = hist.axis.Regular(BINS, LOW, HIGH, name="x", label=label)
    return hist.Hist(axis, storage=hist.storage.Int64())


def plan_chunks(
    sources: Sequence[Source], workers: int, per_worker: int = CHUNKS_PER_WORKER
) -> list[list[Chunk]]:
    """Every entry of ``sources`` in exactly one chunk; one run of chunks for each worker.

    About ``workers * per_worker`` chunks of equal size (a chunk never spans two files), given
    out in order, so each worker reads its own contiguous entry ranges. A worker gets no chunk
    only when there are fewer chunks than workers.
    """
    if workers < 1 or per_worker < 1:
        raise ValueError(f"workers ({workers}) and per_worker ({per_worker}) must be >= 1")
    total = sum(s.entries for s in sources)
    size = max(1, math.ceil(total / (workers * per_worker)))
    chunks: list[Chunk] = []
    for source in sources:
        for start in range(0, source.entries, size):
            stop = min(start + size, source.entries)
            chunks.append(Chunk(len(chunks), source, start, stop))
    bounds = [round(i * len(chunks) / workers) for i in range(workers + 1)]
    return [chunks[bounds[i] : bounds[i + 1]] for i in range(workers)]


def fill_chunk(chunk: Chunk) -> ChunkResult:
    """Read one chunk's branch with uproot (on the worker) and histogram every value in it."""
    import awkward as ak
    import uproot

    source = chunk.source
    with uproot.open(source.path) as file:
        values = file[source.tree][source.branch].array(
            entry_start=chunk.start, entry_stop=chunk.stop, library="ak"
        )
    histogram = new_histogram(source.branch)
    histogram.fill(ak.to_numpy(ak.flatten(values, axis=None)))
    return ChunkResult(chunk, histogram, len(values), _worker_name())


def merge(results: Sequence[ChunkResult]) -> Histogram:
    """The sum of the chunks' histograms."""
    if not results:
        raise ValueError("no chunk results to merge")
    return functools.reduce(operator.add, (r.histogram for r in results))


def peak(histogram: Histogram) -> Peak:
    """The fullest in-range bin (the lowest one on a tie)."""
    counts = histogram.values()
    index = int(np.argmax(counts))
    edges = histogram.axes[0].edges
    return Peak(index, float(edges[index]), float(edges[index + 1]), int(counts[index]))


def text_plot(histogram: Histogram, unit: str = "") -> list[str]:
    """The bins around the peak as text bars, the peak bin's bar ``PLOT_WIDTH`` long."""
    top = peak(histogram)
    counts, edges = histogram.values(), histogram.axes[0].edges
    first, last = max(0, top.index - PLOT_HALF_WIDTH), min(BINS, top.index + PLOT_HALF_WIDTH + 1)
    suffix = f" {unit}" if unit else ""
    labels = [f"{edges[i]:g}-{edges[i + 1]:g}{suffix}" for i in range(first, last)]
    width = max(len(label) for label in labels)
    lines = []
    for i, label in zip(range(first, last), labels, strict=True):
        bar = "#" * round(PLOT_WIDTH * counts[i] / top.count) if top.count else ""
        lines.append(f"{label:>{width}} |{bar:<{PLOT_WIDTH}} {counts[i]:g}")
    return lines


def lazy_counts(sources: Sequence[Source], step_size: int) -> tuple[dask.array.Array, int]:
    """The histogram as a physicist writes it: ``uproot.dask``, then ``dask.array.histogram``.

    Nothing is read yet: computing the counts on a cluster reads ``step_size`` entries per
    partition on the workers. They include under- and overflow, as
    :func:`counts_as_histogram` expects them; the int is the number of partitions.
    """
    import dask.array as da
    import uproot

    branch = sources[0].branch
    files = {s.path: s.tree for s in sources}
    values = uproot.dask(files, filter_name=[branch], step_size=step_size, library="np")[branch]
    if any(s.jagged for s in sources):
        values = values.map_blocks(_flatten_block, dtype=np.float64, chunks=(np.nan,))
    edges = np.concatenate([[-np.inf], new_histogram(branch).axes[0].edges, [np.inf]])
    counts, _ = da.histogram(values, bins=edges)  # type: ignore[no-untyped-call]
    return counts, int(values.numblocks[0])


def counts_as_histogram(counts: Any, label: str) -> Histogram:
    """A histogram holding ``counts`` (underflow, the ``BINS`` bins, overflow)."""
    histogram = new_histogram(label)
    histogram.view(flow=True)[...] = np.asarray(counts)
    return histogram


def _flatten_block(block: Any) -> Any:
    """One partition of a jagged branch (an object array of arrays) as one flat array."""
    parts = [np.asarray(entry, dtype=np.float64).ravel() for entry in block]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.float64)


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except ValueError:  # not on a Dask worker (a local test)
        return "local"
