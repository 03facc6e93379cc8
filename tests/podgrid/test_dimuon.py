"""The demo's analysis functions on the real CMS files, against uproot + numpy done here."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import dask
import numpy as np
import uproot
from hypothesis import given
from hypothesis import strategies as st

from podgrid import dimuon
from podgrid.rootfiles import Source, find_sources, sample_sources

REPO = Path(__file__).resolve().parents[2]
ZMUMU = REPO / "examples" / "data" / "uproot-Zmumu.root"
NANOAOD = REPO / "examples" / "data" / "nanoAOD_2015_CMS_Open_Data_ttbar.root"


def expected_counts(values: np.ndarray) -> np.ndarray:
    """1-unit bins from 0 to 120, counted without hist: floor of every value in range."""
    inside = values[(values >= 0) & (values < 120)]
    return np.bincount(np.floor(inside).astype(int), minlength=120)


def zmumu_mass() -> np.ndarray:
    with uproot.open(ZMUMU) as file:
        return np.asarray(file["events"]["M"].array(library="np"))


def fill_all(sources: list[Source], workers: int) -> list[dimuon.ChunkResult]:
    return [dimuon.fill_chunk(c) for run in dimuon.plan_chunks(sources, workers) for c in run]


def test_chunks_filled_and_merged_give_the_z_peak_numpy_finds() -> None:
    mass = zmumu_mass()
    expected = expected_counts(mass)
    results = fill_all(sample_sources(), workers=2)
    merged = dimuon.merge(results)
    assert sum(r.entries for r in results) == len(mass) == 2304
    assert np.array_equal(merged.values(), expected)
    flow = merged.view(flow=True)
    assert (flow[0], flow[-1]) == ((mass < 0).sum(), (mass >= 120).sum())
    peak = dimuon.peak(merged)
    assert peak.index == int(np.argmax(expected))
    assert (peak.low, peak.high, peak.count) == (peak.index, peak.index + 1, expected.max())
    assert 88 <= peak.low <= 93  # the Z boson, 91.19 GeV: a sanity check on the data itself


def test_the_dask_collections_version_gives_the_same_counts() -> None:
    lazy, partitions = dimuon.lazy_counts(sample_sources(), step_size=300)
    with dask.config.set(scheduler="sync"):
        histogram = dimuon.counts_as_histogram(lazy.compute(), "M")
    assert partitions == 8  # ceil(2304 / 300)
    assert np.array_equal(histogram.values(), expected_counts(zmumu_mass()))
    assert int(histogram.sum(flow=True)) == 2304


def test_a_jagged_branch_fills_every_value_in_both_versions() -> None:
    sources = find_sources([str(NANOAOD)], "Events", "Muon_pt")
    with uproot.open(NANOAOD) as file:
        pt = ak.to_numpy(ak.flatten(file["Events"]["Muon_pt"].array())).astype(np.float64)
    merged = dimuon.merge(fill_all(sources, workers=3))
    assert np.array_equal(merged.values(), expected_counts(pt))
    assert int(merged.sum(flow=True)) == len(pt) > 0
    lazy, _ = dimuon.lazy_counts(sources, step_size=60)
    with dask.config.set(scheduler="sync"):
        other = dimuon.counts_as_histogram(lazy.compute(), "Muon_pt")
    assert np.array_equal(other.view(flow=True), merged.view(flow=True))


def test_the_text_plot_shows_the_peak_region_with_the_longest_bar() -> None:
    merged = dimuon.merge(fill_all(sample_sources(), workers=1))
    lines = dimuon.text_plot(merged, "GeV")
    peak = dimuon.peak(merged)
    assert len(lines) == 2 * dimuon.PLOT_HALF_WIDTH + 1
    middle = lines[dimuon.PLOT_HALF_WIDTH]
    assert middle.startswith(f"{peak.low:g}-{peak.high:g} GeV |")
    assert middle.endswith("#" * dimuon.PLOT_WIDTH + f" {peak.count}")
    assert all(line.count("#") <= dimuon.PLOT_WIDTH for line in lines)


def _source(i: int, entries: int) -> Source:
    return Source(f"/data/file{i}.root", "events", "M", entries)


@given(
    entries=st.lists(st.integers(0, 5000), min_size=1, max_size=6),
    workers=st.integers(1, 8),
    per_worker=st.integers(1, 6),
)
def test_the_chunks_cover_every_entry_exactly_once(
    entries: list[int], workers: int, per_worker: int
) -> None:
    sources = [_source(i, n) for i, n in enumerate(entries)]
    plan = dimuon.plan_chunks(sources, workers, per_worker)
    assert len(plan) == workers
    chunks = [c for run in plan for c in run]
    assert [c.index for c in chunks] == list(range(len(chunks)))  # each worker: a run
    for source in sources:
        read = [e for c in chunks if c.source == source for e in range(c.start, c.stop)]
        assert read == list(range(source.entries))  # all, once each, in order
    assert all(c.entries > 0 for c in chunks)
    sizes = [len(run) for run in plan]
    assert max(sizes) - min(sizes) <= 1


def test_the_sample_on_two_workers_is_four_equal_chunks_each() -> None:
    plan = dimuon.plan_chunks(sample_sources(), workers=2)
    assert [[(c.start, c.stop) for c in run] for run in plan] == [
        [(i * 288, (i + 1) * 288) for i in range(4)],
        [(i * 288, (i + 1) * 288) for i in range(4, 8)],
    ]
