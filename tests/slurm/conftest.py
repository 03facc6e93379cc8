"""The Slurm tests run against the real throw-away Slurm of :mod:`tests.harness.slurm`."""

from tests.harness.slurm import slurm, slurm_cluster

__all__ = ["slurm", "slurm_cluster"]
