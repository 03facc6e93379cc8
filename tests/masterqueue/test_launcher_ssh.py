"""The ssh launcher against a real, throw-away ``sshd`` on 127.0.0.1 (Debian's openssh-server).

The sshd runs as this user with its own host key, an authorized_keys holding a fresh client
key, and no PAM; the fake broker is started on "the master host" (this machine) through it.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.harness.ports import free_port
from tests.masterqueue.api_helpers import mq_service
from tests.masterqueue.test_launcher import FAKE_BROKER, gone, handle_of, wait_state

SSHD = "/usr/sbin/sshd"
INSTALL_HINT = "apt-get install -y openssh-server"


@dataclass
class Sshd:
    """A running throw-away sshd and the client material to reach it."""

    port: int
    client_key: Path
    known_hosts: Path
    proc: subprocess.Popen[bytes]
    log: Path


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30
    )


def _start(tmp: Path) -> Sshd:
    if not os.access(SSHD, os.X_OK) or shutil.which("ssh-keygen") is None:
        pytest.fail(f"{SSHD} not found: the ssh launcher tests need a real sshd. {INSTALL_HINT}")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege-separation directory
    _keygen(tmp / "host_key")
    _keygen(tmp / "client_key")
    shutil.copy(tmp / "client_key.pub", tmp / "authorized_keys")
    port = free_port()
    config = tmp / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp / 'host_key'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\nPidFile {tmp / 'sshd.pid'}\n"
        "UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
    )
    host_pub = (tmp / "host_key.pub").read_text().split()
    known = tmp / "known_hosts"
    known.write_text(
        "".join(f"[{h}]:{port} {host_pub[0]} {host_pub[1]}\n" for h in ("127.0.0.1", "localhost"))
    )
    log = tmp / "sshd.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=out, stderr=out)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        if any(c.laddr.port == port for c in psutil.Process(proc.pid).net_connections()):
            return Sshd(port, tmp / "client_key", known, proc, log)
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"sshd did not listen on {port}: {log.read_text()}")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A throw-away sshd on 127.0.0.1 for this module."""
    server = _start(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=10)


def ssh_settings(server: Sshd, tmp_path: Path, *flags: str, **overrides: Any) -> dict[str, Any]:
    """Service settings with the ssh launcher running the fake broker on 'localhost'."""
    values: dict[str, Any] = {
        "launcher": "ssh",
        "broker_command": [sys.executable, FAKE_BROKER, *flags],
        "ssh_port": server.port,
        "ssh_user": getpass.getuser(),
        "ssh_client_keys": [server.client_key],
        "ssh_known_hosts": server.known_hosts,
        "ssh_log_dir": str(tmp_path / "remote-brokers"),
        "launcher_interval_s": 0.1,
        "sweep_interval_s": 0.1,
        "broker_stop_grace_s": 0.5,
        "stop_brokers_on_exit": True,
    }
    values.update(overrides)
    return values


async def test_ssh_broker_reaches_full_then_stops_on_cancel(sshd: Sshd, tmp_path: Path) -> None:
    # No master_hosts override: the hosts come from podMasterHosts of the embedded LDIF.
    async with mq_service(tmp_path, **ssh_settings(sshd, tmp_path)) as svc:
        alice = await svc.user("alice")
        rid = (await alice.submit()).body["id"]
        await wait_state(alice, rid, "FULL")
        body = (await alice.call("GET", f"/v1/requests/{rid}")).body
        assert body["master_host"] == "localhost"
        handle = await handle_of(svc, rid)
        log = (tmp_path / "remote-brokers" / f"{rid}.log").read_text()
        broker = int(re.findall(r"fake broker pid (\d+)", log)[0])
        assert os.getpgid(broker) == handle.pgid == handle.pid  # its own session on the host
        await alice.call("DELETE", f"/v1/requests/{rid}")
        await gone(broker)
        await gone(handle.pid)
        assert (tmp_path / "remote-brokers" / f"{rid}.exit").read_text().strip() == "0"


async def test_ssh_broker_killed_fails_the_request_and_leaves_nothing(
    sshd: Sshd, tmp_path: Path
) -> None:
    settings = ssh_settings(sshd, tmp_path, "--spawn-child", master_hosts=["127.0.0.1"])
    async with mq_service(tmp_path, **settings) as svc:
        alice = await svc.user("alice")
        rid = (await alice.submit()).body["id"]
        await wait_state(alice, rid, "FULL")
        log_path = tmp_path / "remote-brokers" / f"{rid}.log"
        child = int(re.findall(r"child pid (\d+)", log_path.read_text())[0])
        broker = int(re.findall(r"fake broker pid (\d+)", log_path.read_text())[0])
        os.kill(broker, signal.SIGKILL)
        await wait_state(alice, rid, "FAILED")
        reason = (await alice.call("GET", f"/v1/requests/{rid}")).body["reason"]
        assert re.match(
            r"broker exited while (READY|FULL): killed by SIGKILL on 127.0.0.1;", reason
        )
        await gone(child, timeout_s=5)


async def test_unreachable_master_host_fails_the_request(sshd: Sshd, tmp_path: Path) -> None:
    closed = free_port()
    settings = ssh_settings(sshd, tmp_path, master_hosts=["127.0.0.1"], ssh_port=closed)
    async with mq_service(tmp_path, **settings) as svc:
        alice = await svc.user("alice")
        rid = (await alice.submit()).body["id"]
        await wait_state(alice, rid, "FAILED")
        reason = (await alice.call("GET", f"/v1/requests/{rid}")).body["reason"]
        assert reason.startswith(f"broker could not start on 127.0.0.1: ssh to 127.0.0.1:{closed}")
