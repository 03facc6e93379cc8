"""The batch slot an agent runs on: cores, memory, remaining TTL and packages.

Each value comes from the first source that has it: the command-line flags, then the
environment a batch system sets (Slurm's ``SLURM_*`` and, for the TTL, the job's end time from
``squeue``; PBS/Torque's ``PBS_*``/``NCPUS``), then
the machine itself (psutil) and, for the TTL, the configuration's ``podAgentTTL``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import psutil

from podgrid.config import environment
from podgrid.errors import PodGridError
from podgrid.jobagent.slot_slurm import job_end_epoch
from podgrid.protocol import SlotDescription

PACKAGES_ENV: Final = environment.SLOT_PACKAGES  # comma-separated packages the slot offers
BYTES_PER_MB: Final = 1024 * 1024


class SlotError(PodGridError, ValueError):
    """A slot value (flag or batch-system variable) could not be read; the message names it."""


@dataclass(frozen=True, slots=True)
class SlotFlags:
    """What the operator gave on the command line (None: not given)."""

    cores: int | None = None
    memory_mb: int | None = None
    ttl_s: float | None = None
    packages: Sequence[str] | None = None


@dataclass(frozen=True)
class Slot:
    """One batch slot; ``deadline`` is on the ``time.monotonic()`` clock."""

    agent_id: str
    site: str
    ce: str
    host: str
    cores: int
    memory_mb: int
    packages: tuple[str, ...]
    deadline: float
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def remaining_s(self, now: float | None = None) -> float:
        """Seconds left before the slot ends (never negative)."""
        return max(0.0, self.deadline - (time.monotonic() if now is None else now))

    def description(self, now: float | None = None) -> SlotDescription:
        """What the master queue and brokers are told about this slot right now."""
        return SlotDescription(
            agent_id=self.agent_id,
            site=self.site,
            ce=self.ce,
            host=self.host,
            cores=self.cores,
            memory_mb=self.memory_mb,
            ttl_s=max(1, int(self.remaining_s(now))),
            packages=self.packages,
        )


def _int_env(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    # Slurm writes e.g. SLURM_CPUS_ON_NODE=4 and SLURM_MEM_PER_NODE=2048 (MB), sometimes "4(x2)".
    head = raw.split("(", 1)[0].strip()
    try:
        value = int(head)
    except ValueError as e:
        raise SlotError(f"{name}={raw!r}: expected an integer") from e
    if value < 0:
        raise SlotError(f"{name}={raw!r}: expected an integer >= 0")
    return value


def cores_from_env(env: Mapping[str, str]) -> tuple[int, str] | None:
    """Cores granted by the batch system, and the variable it came from."""
    for name in (
        "SLURM_CPUS_ON_NODE",
        "SLURM_CPUS_PER_TASK",
        "SLURM_JOB_CPUS_PER_NODE",
        "NCPUS",
        "PBS_NUM_PPN",
    ):
        value = _int_env(env, name)
        if value:
            return value, name
    return None


def memory_from_env(env: Mapping[str, str], cores: int) -> tuple[int, str] | None:
    """Memory (MB) granted by the batch system, and the variable(s) it came from."""
    per_node = _int_env(env, "SLURM_MEM_PER_NODE")
    if per_node:
        return per_node, "SLURM_MEM_PER_NODE"
    per_cpu = _int_env(env, "SLURM_MEM_PER_CPU")
    if per_cpu:
        return per_cpu * cores, "SLURM_MEM_PER_CPU"
    return None


def ttl_from_env(env: Mapping[str, str], now_epoch_s: float) -> tuple[float, str] | None:
    """Seconds left in the batch job: ``SLURM_JOB_END_TIME`` (an epoch time) where Slurm sets
    it, else the job's end time as ``squeue`` tells it (:mod:`podgrid.jobagent.slot_slurm`)."""
    end = _int_env(env, "SLURM_JOB_END_TIME")
    if end:
        return max(0.0, end - now_epoch_s), "SLURM_JOB_END_TIME"
    end = job_end_epoch(env)
    if end:
        return max(0.0, end - now_epoch_s), "squeue %e"
    return None


def packages_from_env(env: Mapping[str, str]) -> tuple[str, ...] | None:
    """Packages the site announces for the slot (``PODGRID_SLOT_PACKAGES=a,b``)."""
    raw = env.get(PACKAGES_ENV)
    if raw is None:
        return None
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def _cores(flags: SlotFlags, env: Mapping[str, str]) -> tuple[int, str]:
    if flags.cores is not None:
        return flags.cores, "flag"
    return cores_from_env(env) or (psutil.cpu_count() or 1, "machine")


def _memory_mb(flags: SlotFlags, env: Mapping[str, str], cores: int) -> tuple[int, str]:
    if flags.memory_mb is not None:
        return flags.memory_mb, "flag"
    return memory_from_env(env, cores) or (psutil.virtual_memory().total // BYTES_PER_MB, "machine")


def _ttl_s(flags: SlotFlags, env: Mapping[str, str], default_ttl_s: float) -> tuple[float, str]:
    if flags.ttl_s is not None:
        return flags.ttl_s, "flag"
    return ttl_from_env(env, time.time()) or (float(default_ttl_s), "podAgentTTL")


def _packages(flags: SlotFlags, env: Mapping[str, str]) -> tuple[tuple[str, ...], str]:
    if flags.packages is not None:
        return tuple(flags.packages), "flag"
    found = packages_from_env(env)
    return (found, PACKAGES_ENV) if found is not None else ((), "none")


def describe_slot(
    flags: SlotFlags,
    *,
    agent_id: str,
    site: str,
    ce: str,
    default_ttl_s: float,
    env: Mapping[str, str] | None = None,
) -> Slot:
    """Build the slot from flags > batch-system environment > machine (see module doc)."""
    env = os.environ if env is None else env
    sources: dict[str, str] = {}
    cores, sources["cores"] = _cores(flags, env)
    memory_mb, sources["memory_mb"] = _memory_mb(flags, env, cores)
    ttl_s, sources["ttl_s"] = _ttl_s(flags, env, default_ttl_s)
    packages, sources["packages"] = _packages(flags, env)
    if cores < 1 or memory_mb < 1:
        raise SlotError(
            f"the slot needs at least 1 core and 1 MB (cores={cores}, "
            f"memory_mb={memory_mb}, from {sources})"
        )
    return Slot(
        agent_id=agent_id,
        site=site,
        ce=ce,
        host=socket.gethostname(),
        cores=cores,
        memory_mb=memory_mb,
        packages=packages,
        deadline=time.monotonic() + ttl_s,
        sources=sources,
    )
