"""The demo's sample analysis: a Monte-Carlo dimuon invariant-mass histogram in pure Python.

Each chunk generates events on a Dask worker (no numpy, so any slot can run it): Z bosons
(Breit-Wigner mass) decaying isotropically to two muons, boosted along z, plus a falling
Drell-Yan-like background; both muons' momenta are smeared like a tracker would, and the
pair's invariant mass is histogrammed. Chunks are summed on the client; the peak sits at
the Z mass.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

Z_MASS_GEV = 91.1876
Z_WIDTH_GEV = 2.4952
MUON_MASS_GEV = 0.10566
MASS_MIN_GEV, MASS_MAX_GEV = 60.0, 120.0
BINS = 60  # 1 GeV bins
SIGNAL_FRACTION = 0.7
BACKGROUND_SLOPE_GEV = 25.0  # the background falls like exp(-m / slope)
MOMENTUM_RESOLUTION = 0.02  # relative, per muon
Vector4 = tuple[float, float, float, float]  # (E, px, py, pz) in GeV


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """One chunk's histogram counts and the Dask worker that filled it."""

    counts: list[int]
    worker: str
    events: int


def _breit_wigner(rng: random.Random) -> float:
    return Z_MASS_GEV + 0.5 * Z_WIDTH_GEV * math.tan(math.pi * (rng.random() - 0.5))


def _background_mass(rng: random.Random) -> float:
    span = 1.0 - math.exp(-(MASS_MAX_GEV - MASS_MIN_GEV) / BACKGROUND_SLOPE_GEV)
    return MASS_MIN_GEV - BACKGROUND_SLOPE_GEV * math.log(1.0 - rng.random() * span)


def _decay(rng: random.Random, mass: float) -> tuple[Vector4, Vector4]:
    """Two muons of a parent of ``mass`` at rest, back to back in a random direction."""
    p = math.sqrt(max(mass * mass / 4.0 - MUON_MASS_GEV**2, 0.0))
    cos_t = rng.uniform(-1.0, 1.0)
    sin_t = math.sqrt(1.0 - cos_t * cos_t)
    phi = rng.uniform(0.0, 2.0 * math.pi)
    px, py, pz = p * sin_t * math.cos(phi), p * sin_t * math.sin(phi), p * cos_t
    energy = mass / 2.0
    return (energy, px, py, pz), (energy, -px, -py, -pz)


def _boost_z(v: Vector4, beta: float) -> Vector4:
    gamma = 1.0 / math.sqrt(1.0 - beta * beta)
    e, px, py, pz = v
    return gamma * (e + beta * pz), px, py, gamma * (pz + beta * e)


def _smear(rng: random.Random, v: Vector4) -> Vector4:
    _, px, py, pz = v
    k = 1.0 + rng.gauss(0.0, MOMENTUM_RESOLUTION)
    px, py, pz = px * k, py * k, pz * k
    return math.sqrt(px * px + py * py + pz * pz + MUON_MASS_GEV**2), px, py, pz


def invariant_mass(a: Vector4, b: Vector4) -> float:
    """The invariant mass (GeV) of two four-vectors."""
    e, px, py, pz = (a[i] + b[i] for i in range(4))
    return math.sqrt(max(e * e - px * px - py * py - pz * pz, 0.0))


def simulate_chunk(seed: int, events: int) -> ChunkResult:
    """Generate ``events`` dimuon events with ``seed``; histogram their invariant mass."""
    rng = random.Random(seed)  # noqa: S311 - a simulation, reproducible per seed
    counts = [0] * BINS
    for _ in range(events):
        is_signal = rng.random() < SIGNAL_FRACTION
        mass = _breit_wigner(rng) if is_signal else _background_mass(rng)
        if not MUON_MASS_GEV * 2 < mass < 2 * MASS_MAX_GEV:
            continue
        mu1, mu2 = _decay(rng, mass)
        beta = math.tanh(rng.gauss(0.0, 1.0))  # the pair's rapidity along the beam
        mu1, mu2 = _smear(rng, _boost_z(mu1, beta)), _smear(rng, _boost_z(mu2, beta))
        m = invariant_mass(mu1, mu2)
        if MASS_MIN_GEV <= m < MASS_MAX_GEV:
            counts[int((m - MASS_MIN_GEV) / (MASS_MAX_GEV - MASS_MIN_GEV) * BINS)] += 1
    return ChunkResult(counts, _worker_name(), events)


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):  # not on a Dask worker (e.g. a local test)
        return "local"


def merge(chunks: Sequence[ChunkResult]) -> list[int]:
    """The summed histogram of several chunks."""
    total = [0] * BINS
    for chunk in chunks:
        total = [a + b for a, b in zip(total, chunk.counts, strict=True)]
    return total


def bin_range_gev(index: int) -> tuple[float, float]:
    """The (low, high) edges of histogram bin ``index`` in GeV."""
    width = (MASS_MAX_GEV - MASS_MIN_GEV) / BINS
    return MASS_MIN_GEV + index * width, MASS_MIN_GEV + (index + 1) * width


def peak_bin(counts: Sequence[int]) -> int:
    """The index of the fullest bin."""
    return max(range(len(counts)), key=lambda i: counts[i])
