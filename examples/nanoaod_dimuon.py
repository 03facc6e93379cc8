"""Dimuon masses of opposite-charge muon pairs in CMS NanoAOD, on a PoD Grid cluster.

A script to copy: change the files, the request and the selection. With a grid running (for
one on this machine, ``podgrid up`` in another terminal) run it from a clone of PoD Grid:

    .venv/bin/python examples/nanoaod_dimuon.py [--workers N] [NANOAOD.root ...]

It asks the grid for a cluster and sends the workers entry ranges of the files, where uproot
reads the jagged ``Muon_*`` branches as awkward arrays: every muon's pt is histogrammed, and
every pair of muons in an event gives an invariant mass, opposite-charge pairs histogrammed
(same-charge ones counted). The client adds the workers' histograms, prints them and cancels
the cluster. The files must be readable where the workers run: on this machine a path is
enough, on a real grid give paths on shared storage or ``root://`` URLs.

The default file, 200 ttbar events of CMS 2015 open data, holds 41 muons but only one event
with two, of the same charge: no opposite-charge pair. On a dimuon dataset the Z peak shows.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import operator
from pathlib import Path
from typing import Any

import awkward as ak
import hist
import numpy as np
import uproot
from distributed import Client, get_worker

from podgrid import PodGrid

SAMPLE = Path(__file__).resolve().parent / "data" / "nanoAOD_2015_CMS_Open_Data_ttbar.root"
TREE = "Events"
MUON = ["Muon_pt", "Muon_eta", "Muon_phi", "Muon_mass", "Muon_charge"]
ENTRIES_PER_TASK = 50
READY_TIMEOUT_S = 120
REQUEST = """
[server]
name = "nanoaod-dimuon"
min_workers = {workers}
max_workers = {workers}
max_wait = "2m"
ttl = "30m"
[worker]
cores = 1
memory = "1GiB"
"""


def four_momentum(muons: ak.Array) -> tuple[ak.Array, ak.Array, ak.Array, ak.Array]:
    """(E, px, py, pz) in GeV from NanoAOD's pt, eta, phi and mass."""
    px, py = muons.pt * np.cos(muons.phi), muons.pt * np.sin(muons.phi)
    pz = muons.pt * np.sinh(muons.eta)
    return np.sqrt(px**2 + py**2 + pz**2 + muons.mass**2), px, py, pz


def pair_mass(a: ak.Array, b: ak.Array) -> ak.Array:
    """The invariant mass (GeV) of muon pairs."""
    e, px, py, pz = (x + y for x, y in zip(four_momentum(a), four_momentum(b), strict=True))
    return np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0))


def analyse(path: str, start: int, stop: int) -> dict[str, Any]:
    """On a worker: entries ``start`` to ``stop`` of ``path``, read, paired and histogrammed."""
    with uproot.open(path) as file:
        events = file[TREE].arrays(MUON, entry_start=start, entry_stop=stop)
    muons = ak.zip({name.removeprefix("Muon_"): events[name] for name in MUON})
    pairs = ak.combinations(muons, 2, fields=["a", "b"])  # every pair within an event
    opposite = pairs.a.charge * pairs.b.charge < 0
    masses = ak.flatten(pair_mass(pairs.a[opposite], pairs.b[opposite]))
    mass = hist.Hist.new.Reg(30, 0, 300, name="mass", label="m(mu+ mu-) [GeV]").Int64()
    mass.fill(ak.to_numpy(masses))
    pt = hist.Hist.new.Reg(20, 0, 200, name="pt", label="muon pt [GeV]").Int64()
    pt.fill(ak.to_numpy(ak.flatten(muons.pt)))
    return {
        "worker": str(get_worker().name),
        "events": len(events),
        "opposite": ak.to_list(masses),
        "same": ak.to_list(ak.flatten(pair_mass(pairs.a[~opposite], pairs.b[~opposite]))),
        "mass": mass,
        "pt": pt,
    }


def tasks(paths: list[str]) -> list[tuple[str, int, int]]:
    """(path, start, stop): ranges of ``ENTRIES_PER_TASK`` entries covering every file."""
    ranges = []
    for path in paths:
        with uproot.open(path) as file:
            entries = file[TREE].num_entries
        for start in range(0, entries, ENTRIES_PER_TASK):
            ranges.append((path, start, min(start + ENTRIES_PER_TASK, entries)))
    return ranges


async def main(paths: list[str], workers: int) -> None:
    work = tasks(paths)  # opens the files here first: a wrong path fails before the cluster
    async with PodGrid.connect() as grid:  # finds `podgrid up`, or $PODGRID_URL and _TOKEN
        request = await grid.submit_text(REQUEST.format(workers=workers), "toml")
        try:
            await grid.wait_ready(request.id, timeout_s=READY_TIMEOUT_S)
            info = await grid.connection(request.id)
            print(f"cluster {request.id} READY at {info.address}")
            async with Client(info.address, security=info.security(), asynchronous=True) as client:
                futures = [client.submit(analyse, *task, pure=False) for task in work]
                results = await client.gather(futures)
        finally:
            await grid.cancel(request.id)
    report(results)


def report(results: list[dict[str, Any]]) -> None:
    """What the workers found, added up here."""
    by_worker: dict[str, int] = {}
    for r in results:
        by_worker[r["worker"]] = by_worker.get(r["worker"], 0) + 1
    opposite = sorted(m for r in results for m in r["opposite"])
    same = sorted(m for r in results for m in r["same"])
    tasks_run = ", ".join(f"{w}: {n}" for w, n in sorted(by_worker.items()))
    events = sum(r["events"] for r in results)
    print(f"read {events} events in {len(results)} tasks ({tasks_run})")
    print(f"opposite-charge pairs: {len(opposite)}, masses (GeV): {_numbers(opposite)}")
    print(f"same-charge pairs: {len(same)}, masses (GeV): {_numbers(same)}")
    for name in ("mass", "pt"):
        total = functools.reduce(operator.add, (r[name] for r in results))
        print(f"{total.axes[0].label}, {int(total.sum(flow=True))} entries:")
        for (low, high), count in zip(total.axes[0], total.values(), strict=True):
            if count:
                print(f"  {low:5g}-{high:<5g} {'#' * int(count)} {int(count)}")


def _numbers(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values) or "none"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("files", nargs="*", default=[str(SAMPLE)], help="default: the sample")
    parser.add_argument("--workers", type=int, default=2, help="default: %(default)s")
    args = parser.parse_args()
    asyncio.run(main(args.files, args.workers))
