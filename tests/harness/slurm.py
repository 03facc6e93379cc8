"""A throw-away single-host Slurm for tests: munged, slurmctld and two slurmd in a temp dir.

Everything is private to the fixture: a fresh munge key and socket, a ``slurm.conf`` with
its own ports (:func:`tests.harness.ports.free_port`), state, spool, pid and log files under
the temp dir. Two nodes (``<prefix>1``, ``<prefix>2``) run as two ``slurmd -N`` on 127.0.0.1,
so a test can drain one and see jobs land on the other. ``batch_sched_delay=0`` removes the
~3 s scheduling delay; nodes declare more CPUs than this machine has
(``SlurmdParameters=config_overrides``) so a job array of 20 one-CPU agents runs at once.

Used as a pytest plugin through ``tests/slurm/conftest.py``: the session fixture ``slurm`` and
the per-test ``slurm_cluster``, which cancels every job and puts nodes and the partition back
to normal after the test. The daemons are children of the fixture; at the end every job is
cancelled, the daemons are stopped, and any process that still carries this cluster's
``SLURM_CONF`` in its environment (a job's leftover) is killed.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.harness.ports import free_port

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo")
INSTALL_HINT = (
    "apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge "
    "(`bash .ci/setup` does it)"
)
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
CPUS_PER_NODE = 12
MEMORY_PER_NODE_MB = 8000
DEF_MEM_PER_CPU_MB = 100  # without it a job without --mem takes the whole node's memory
KILL_WAIT_S = 5
PARTITION = "debug"

_CONF = """\
ClusterName={cluster}
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool/%n
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd-%n.pid
SlurmctldLogFile={dir}/log/slurmctld.log
SlurmdLogFile={dir}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU={def_mem}
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
KillWait={kill_wait}
MinJobAge=300
"""


def _require_binaries() -> dict[str, str]:
    found: dict[str, str] = {}
    missing = []
    for name in BINARIES:
        path = shutil.which(name) or next(
            (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
        )
        if path is None:
            missing.append(name)
        else:
            found[name] = path
    if missing:
        pytest.fail(
            f"Slurm test fixture: {', '.join(missing)} not found; the Slurm tests need a real "
            f"Slurm. {INSTALL_HINT}",
            pytrace=False,
        )
    return found


@dataclass
class SlurmCluster:
    """A running throw-away Slurm; :attr:`env` is what a client command needs."""

    directory: Path
    bins: dict[str, str]
    nodes: tuple[str, ...]
    partition: str = PARTITION
    ctld_port: int = 0
    node_ports: dict[str, int] = field(default_factory=dict)
    _munged: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _ctld: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _slurmd: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    @property
    def conf(self) -> Path:
        """This cluster's ``slurm.conf``."""
        return self.directory / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        """munged's socket (named in ``AuthInfo``)."""
        return self.directory / "munge" / "munge.socket"

    @property
    def env(self) -> dict[str, str]:
        """This process's environment plus ``SLURM_CONF``: for sbatch, squeue, scontrol."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, check: bool = True, timeout_s: float = 30.0) -> str:
        """Run a Slurm client command against this cluster; its stdout."""
        done = subprocess.run(
            [self.bins.get(argv[0], argv[0]), *argv[1:]],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr}")
        return done.stdout

    # -- the daemons -------------------------------------------------------------------------

    def write_config(self, cpus: int, memory_mb: int) -> None:
        """``slurm.conf`` for this cluster's ports and directories."""
        for sub in ("state", "log", "munge", *(f"spool/{n}" for n in self.nodes)):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory / "munge", 0o755)  # munged insists on it
        text = _CONF.format(
            cluster=f"pg{secrets.token_hex(3)}",
            ctld_port=self.ctld_port,
            user=getpass.getuser(),
            munge_socket=self.munge_socket,
            dir=self.directory,
            def_mem=DEF_MEM_PER_CPU_MB,
            kill_wait=KILL_WAIT_S,
        )
        host = socket.gethostname().split(".")[0]
        for node in self.nodes:
            text += (
                f"NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 "
                f"Port={self.node_ports[node]} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN\n"
            )
        text += f"PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n"
        self.conf.write_text(text)

    def start_munged(self) -> None:
        """munged in the foreground with a fresh 1024-byte key (mode 0400)."""
        key = self.directory / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o400)
        self._munged = self._spawn(
            "munged",
            "--foreground",
            "--force",
            f"--key-file={key}",
            f"--socket={self.munge_socket}",
            f"--pid-file={self.directory / 'munge' / 'munged.pid'}",
            f"--log-file={self.directory / 'log' / 'munged.log'}",
            f"--seed-file={self.directory / 'munge' / 'munged.seed'}",
            log="munged.out",
        )
        self._wait(lambda: self.munge_socket.exists(), "munged's socket", self._munged)

    def start_controller(self, *, clean: bool = False) -> None:
        """slurmctld in the foreground; ``clean`` drops saved state (a first start)."""
        flags = ["-c"] if clean else []
        self._ctld = self._spawn("slurmctld", "-D", "-i", *flags, "-f", str(self.conf))
        self._wait(self._controller_answers, "slurmctld to answer", self._ctld)

    def stop_controller(self) -> None:
        """SIGTERM slurmctld and wait (it saves its state first)."""
        self._stop(self._ctld)
        self._ctld = None

    def restart_controller(self) -> None:
        """Stop slurmctld and start it again on its saved state (jobs survive)."""
        self.stop_controller()
        self.start_controller()

    def start_nodes(self) -> None:
        """One ``slurmd -D -N <node>`` per node; wait until every node is idle."""
        for node in self.nodes:
            self._slurmd[node] = self._spawn(
                "slurmd", "-D", "-N", node, "-f", str(self.conf), log=f"slurmd-{node}.out"
            )
        self._wait(self._nodes_idle, "the nodes to be idle", None)

    def _spawn(self, name: str, *argv: str, log: str | None = None) -> subprocess.Popen[bytes]:
        with open(self.directory / "log" / (log or f"{name}.out"), "ab") as out:
            return subprocess.Popen(
                [self.bins[name], *argv],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def _wait(
        self, ready: Callable[[], bool], what: str, proc: subprocess.Popen[bytes] | None
    ) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                break
            if ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"Slurm fixture: timed out waiting for {what}\n{self.logs()}")

    def _controller_answers(self) -> bool:
        done = subprocess.run(
            [self.bins["scontrol"], "ping"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return "is UP" in done.stdout

    def _nodes_idle(self) -> bool:
        return set(self.node_states().values()) == {"idle"}

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def logs(self) -> str:
        """The tail of every daemon log (for a failure message)."""
        parts = []
        for path in sorted((self.directory / "log").glob("*")):
            lines = path.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel every job, stop the daemons, kill whatever of the jobs is left."""
        if self._ctld is not None and self._ctld.poll() is None:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.cancel_all()
        for proc in self._slurmd.values():
            self._stop(proc)
        self._slurmd.clear()
        self.stop_controller()
        self._stop(self._munged)
        self._munged = None
        self.kill_leftovers()

    def kill_leftovers(self) -> list[int]:
        """SIGKILL every process whose environment names this cluster's ``SLURM_CONF``."""
        marker = f"SLURM_CONF={self.conf}".encode()
        killed = []
        for proc in psutil.process_iter():
            if proc.pid == os.getpid():
                continue
            with contextlib.suppress(psutil.Error, OSError):
                environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
                if marker in environ:
                    proc.kill()
                    killed.append(proc.pid)
        return killed

    # -- what tests look at and change --------------------------------------------------------

    def node_states(self) -> dict[str, str]:
        """Node name -> state as sinfo prints it (``idle``, ``mixed``, ``drained``, ...)."""
        out = self.run("sinfo", "-h", "-N", "-o", "%N|%T", check=False)
        states = {}
        for line in out.splitlines():
            name, _, state = line.partition("|")
            states[name] = state.rstrip("*~#")
        return states

    def jobs(self) -> list[dict[str, str]]:
        """Every job Slurm still knows (all states): id, array id, name, state, node, reason."""
        out = self.run("squeue", "-h", "-t", "all", "-o", "%i|%A|%j|%T|%N|%r")
        found = []
        for line in out.splitlines():
            shown, job_id, name, state, node, reason = line.split("|", 5)
            found.append(
                {"shown": shown, "id": job_id, "name": name, "state": state}
                | {"node": node, "reason": reason}
            )
        return found

    def live_jobs(self) -> list[dict[str, str]]:
        """The jobs that are pending or running."""
        return [j for j in self.jobs() if j["state"] in ("PENDING", "RUNNING", "CONFIGURING")]

    def drain(self, node: str) -> None:
        """``scontrol update nodename=NODE state=drain``: no new jobs there."""
        self.run("scontrol", "update", f"nodename={node}", "state=drain", "reason=podgrid-test")

    def resume(self, node: str) -> None:
        """Back to service."""
        self.run("scontrol", "update", f"nodename={node}", "state=resume")

    def set_partition(self, state: str) -> None:
        """``UP``, ``DOWN`` (jobs queue), ``DRAIN`` / ``INACTIVE`` (sbatch refused)."""
        self.run("scontrol", "update", f"partitionname={self.partition}", f"state={state}")

    def cancel_all(self, timeout_s: float = KILL_WAIT_S + 10.0) -> None:
        """``scancel`` every job and wait until none is left running."""
        self.run("scancel", "--user", getpass.getuser())
        deadline = time.monotonic() + timeout_s
        while self.live_jobs() and time.monotonic() < deadline:
            time.sleep(0.1)

    def reset(self) -> None:
        """After a test: no jobs, every node and the partition back in service."""
        if self._ctld is None or self._ctld.poll() is not None:
            self.start_controller()
        self.set_partition("UP")
        self.cancel_all()
        for node, state in self.node_states().items():
            if state.startswith(("drain", "down", "fail")):
                self.resume(node)
        self._wait(self._nodes_idle, "the nodes to be idle again", None)


@contextlib.contextmanager
def start_slurm(
    nodes: Sequence[str] = ("pgnode1", "pgnode2"),
    cpus: int = CPUS_PER_NODE,
    memory_mb: int = MEMORY_PER_NODE_MB,
) -> Iterator[SlurmCluster]:
    """A fresh single-host Slurm with ``nodes`` on 127.0.0.1; stopped and deleted at exit."""
    bins = _require_binaries()
    tmp = Path(tempfile.mkdtemp(prefix="podgrid-slurm-"))
    os.chmod(tmp, 0o755)  # jobs run as this user; the munge socket's parents must be reachable
    cluster = SlurmCluster(directory=tmp, bins=bins, nodes=tuple(nodes))
    try:
        cluster.ctld_port = free_port()
        cluster.node_ports = {n: free_port() for n in nodes}
        cluster.write_config(cpus, memory_mb)
        cluster.start_munged()
        cluster.start_controller(clean=True)
        cluster.start_nodes()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    """A session-wide single-host Slurm (use ``slurm_cluster`` in tests: it cleans up)."""
    with start_slurm() as cluster:
        yield cluster


@pytest.fixture
def slurm_cluster(slurm: SlurmCluster) -> Iterator[SlurmCluster]:
    """The session's Slurm; after the test no job is left and everything is back in service."""
    try:
        yield slurm
    finally:
        slurm.reset()
