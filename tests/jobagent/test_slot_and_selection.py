"""The slot description (flags > batch system > machine) and the choice among servers."""

from __future__ import annotations

import collections
import random
import time

import psutil
import pytest

from podgrid.jobagent.servers import (
    ServerOffer,
    fitting,
    misfit,
    offers_from_samples,
    weighted_order,
)
from podgrid.jobagent.slot import Slot, SlotError, SlotFlags, describe_slot
from podgrid.monitoring.client import Sample
from podgrid.protocol import Requirements


def slot(**env: str) -> Slot:
    return describe_slot(SlotFlags(), agent_id="a", site="S", ce="c", default_ttl_s=7200, env=env)


def test_machine_values_when_nothing_else_says() -> None:
    s = slot()
    assert s.cores == psutil.cpu_count()
    assert s.memory_mb == psutil.virtual_memory().total // (1024 * 1024)
    assert 7190 < s.remaining_s() <= 7200
    assert s.sources == {
        "cores": "machine",
        "memory_mb": "machine",
        "ttl_s": "podAgentTTL",
        "packages": "none",
    }


def test_slurm_environment_beats_the_machine() -> None:
    end = int(time.time()) + 1800
    s = slot(
        SLURM_CPUS_ON_NODE="4",
        SLURM_MEM_PER_NODE="8000",
        SLURM_JOB_END_TIME=str(end),
        PODGRID_SLOT_PACKAGES="ROOT::v6-32, Python::3.11",
    )
    assert (s.cores, s.memory_mb) == (4, 8000)
    assert 1790 < s.remaining_s() <= 1800
    assert s.packages == ("ROOT::v6-32", "Python::3.11")
    d = s.description()
    assert d.ttl_s <= 1800
    assert d.cores == 4


def test_memory_per_cpu_is_multiplied_by_cores() -> None:
    assert slot(SLURM_CPUS_PER_TASK="3", SLURM_MEM_PER_CPU="1000").memory_mb == 3000


def test_flags_beat_the_batch_system() -> None:
    flags = SlotFlags(cores=2, memory_mb=1024, ttl_s=60, packages=["X::1"])
    s = describe_slot(
        flags,
        agent_id="a",
        site="S",
        ce="c",
        default_ttl_s=7200,
        env={"SLURM_CPUS_ON_NODE": "16", "SLURM_MEM_PER_NODE": "64000"},
    )
    assert (s.cores, s.memory_mb, s.packages) == (2, 1024, ("X::1",))
    assert s.remaining_s() <= 60


def test_bad_batch_variable_is_named() -> None:
    with pytest.raises(SlotError, match="SLURM_MEM_PER_NODE='lots'"):
        slot(SLURM_MEM_PER_NODE="lots")


def sample(node: str, param: str, value: object, ts: int) -> Sample:
    return Sample("podgrid", "PoD_Masters", node, param, value, ts)  # type: ignore[arg-type]


def test_offers_skip_stale_full_and_unreadable_servers() -> None:
    now = 100_000
    samples = [
        sample("1", "Address", "http://h:1", now),
        sample("1", "NeededWorkers", 3, now - 100),
        sample("2", "Address", "http://h:2", now),
        sample("2", "NeededWorkers", 2, now - 60_000),
        sample("3", "Address", "http://h:3", now),
        sample("3", "NeededWorkers", 0, now),
        sample("4", "Address", "http://h:4", now),
        sample("4", "NeededWorkers", 1, now),
        sample("4", "Requirements", "{not json", now),
        sample("5", "NeededWorkers", 4, now),
        sample("6", "Address", "http://h:6/v1/attach", now),
        sample("6", "NeededWorkers", 1, now),
        sample("6", "Requirements", '{"cores":2,"memory_mb":100,"packages":["A::1"]}', now),
    ]
    offers = offers_from_samples(samples, now, stale_after_ms=8000)
    assert [o.request_id for o in offers] == ["1", "6"]
    assert offers[1].requirements == Requirements(cores=2, memory_mb=100, packages=("A::1",))


def test_misfit_names_the_unmet_requirement() -> None:
    s = describe_slot(
        SlotFlags(cores=2, memory_mb=2048, ttl_s=100, packages=["A::1"]),
        agent_id="a",
        site="CERN",
        ce="c",
        default_ttl_s=0,
        env={},
    )
    # The broker's own words (one rule: podgrid.protocol.unmet), so agent and broker agree.
    assert misfit(s, Requirements(cores=4), 100) == "cores: 4 needed, the slot has 2"
    assert (
        misfit(s, Requirements(memory_mb=4096), 100) == "memory_mb: 4096 needed, the slot has 2048"
    )
    assert misfit(s, Requirements(packages=("B::2",)), 100) == "packages: missing B::2"
    assert misfit(s, Requirements(sites=("GSI",)), 100) == "site: 'CERN' is not one of GSI"
    assert misfit(s, Requirements(min_ttl_s=200), 100) == (
        "ttl_s: at least 200 s needed, the slot has 100 s"
    )
    assert misfit(s, Requirements(cores=2, sites=("CERN",), packages=("A::1",)), 100) is None
    offer = ServerOffer("9", "http://h", 1, Requirements(cores=8), 0)
    assert fitting([offer], s) == []


def test_weighted_order_spreads_a_crowd_by_need() -> None:
    rng = random.Random(7)
    offers = [
        ServerOffer(str(i), f"http://h:{i}", need, Requirements(), 0)
        for i, need in enumerate([1, 3, 6])
    ]
    firsts = collections.Counter(weighted_order(offers, rng)[0].request_id for _ in range(6000))
    # P(first) is proportional to need: 1/10, 3/10, 6/10.
    assert 400 < firsts["0"] < 800
    assert 1500 < firsts["1"] < 2100
    assert 3300 < firsts["2"] < 3900
    assert sorted(o.request_id for o in weighted_order(offers, rng)) == ["0", "1", "2"]
