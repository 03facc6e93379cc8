"""The demo's analysis on real Dask workers (two worker processes): the split that ran, the
merged histogram and the ``uproot.dask`` version, against uproot + numpy done here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uproot
from distributed import Client, LocalCluster

from podgrid.demo_analysis import analyse, as_json, by_collections, summary_lines
from podgrid.dimuon import plan_chunks
from podgrid.rootfiles import sample_sources

ZMUMU = Path(__file__).resolve().parents[2] / "examples" / "data" / "uproot-Zmumu.root"


@pytest.fixture
async def client() -> AsyncIterator[Any]:
    """A client of a two-worker cluster: separate processes, as a grid's workers are."""
    async with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            asynchronous=True,
        ) as cluster,
        Client(cluster, asynchronous=True) as dask_client,
    ):
        yield dask_client


async def test_each_worker_reads_its_chunks_and_the_client_gets_the_z_peak(client: Any) -> None:
    with uproot.open(ZMUMU) as file:
        mass = np.asarray(file["events"]["M"].array(library="np"))
    counts = np.bincount(np.floor(mass[mass < 120]).astype(int), minlength=120)
    low = int(np.argmax(counts))

    sources = sample_sources()
    analysis = await analyse(client, sources, unit="GeV")

    assert analysis.entries == len(mass)
    assert np.array_equal(analysis.histogram.values(), counts)
    assert (analysis.peak.low, analysis.peak.count) == (low, counts[low])
    identity = await client.scheduler.identity()
    names = sorted(str(w["name"]) for w in identity["workers"].values())
    plan = plan_chunks(sources, len(names))
    assert sorted(analysis.chunks_by_worker) == names  # every worker read
    assert [analysis.chunks_by_worker[n] for n in names] == plan  # exactly its planned run

    analysis.collections = await by_collections(client, sources, partitions=8)
    assert analysis.collections.partitions == 8
    assert analysis.agree

    text = "\n".join(summary_lines(analysis, {names[0]: "Local-1"}))
    assert f"uproot read {len(mass)} events of branch 'M'" in text
    assert f"worker {names[0]} (agent Local-1) read chunks 0-3, 1152 events" in text
    assert f"peak bin {low}-{low + 1} GeV with {counts[low]} entries" in text
    assert "8 partitions" in text
    assert "the same histogram" in text
    doc = as_json(analysis)
    assert doc["events"] == len(mass)
    assert doc["counts"] == counts.tolist()
    assert doc["dask_collections"]["same_histogram"] is True
