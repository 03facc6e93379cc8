"""The slot's end on Slurm: the job's end time, asked of ``squeue`` from inside the job.

Slurm 22.05 tells a job its cores (``SLURM_CPUS_ON_NODE``) and memory (``SLURM_MEM_PER_NODE``
or ``SLURM_MEM_PER_CPU``) in the environment (:mod:`podgrid.jobagent.slot` reads those), but
not when it ends: ``squeue -h -j $SLURM_JOB_ID -o %e`` with ``SLURM_TIME_FORMAT=%s`` prints
the end time (start + time limit) as epoch seconds. A job without a time limit has none.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from typing import Final

import structlog

log = structlog.get_logger("podgrid.jobagent")

JOB_ID_ENV: Final = "SLURM_JOB_ID"
SQUEUE_TIMEOUT_S: Final = 15.0  # seconds for one squeue
SQUEUE_ATTEMPTS: Final = 3
SQUEUE_RETRY_S: Final = 2.0  # seconds between two attempts


def job_end_epoch(env: Mapping[str, str], attempts: int = SQUEUE_ATTEMPTS) -> int | None:
    """When this Slurm job reaches its time limit (epoch s); None outside Slurm or unlimited.

    squeue is asked up to ``attempts`` times (slurmctld may be restarting as the agent starts):
    falling back to the site's default slot TTL would overrun the job's real limit.
    """
    job_id = env.get(JOB_ID_ENV, "")
    squeue = shutil.which("squeue", path=env.get("PATH", os.defpath))
    if not job_id.isdigit() or squeue is None:
        return None
    for attempt in range(attempts):
        if attempt:
            time.sleep(SQUEUE_RETRY_S)
        found = _ask(squeue, job_id, env)
        if found is not _FAILED:
            return found
    return None


_FAILED: Final = -1


def _ask(squeue: str, job_id: str, env: Mapping[str, str]) -> int | None:
    """The end time, None for no limit, or _FAILED when squeue could not say."""
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, the job's own id
            [squeue, "-h", "-j", job_id, "-o", "%e"],
            env={**env, "SLURM_TIME_FORMAT": "%s"},
            capture_output=True,
            text=True,
            timeout=SQUEUE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("jobagent.slurm_end_unknown", job_id=job_id, error=str(e))
        return _FAILED
    text = done.stdout.strip()
    if done.returncode != 0:
        log.warning("jobagent.slurm_end_unknown", job_id=job_id, error=done.stderr.strip())
        return _FAILED
    return int(text) if text.isdigit() else None  # "NONE" / "Unknown": no time limit
