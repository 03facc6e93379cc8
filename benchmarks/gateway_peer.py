"""dask-gateway's time to cluster: the peer of ``benchmarks/time_to_cluster.py``.

Runs inside ``benchmarks/.venv-gateway`` (dask-gateway-server with its local backends, the
dask-gateway client, the same ``distributed`` as PoD Grid). Starts a real gateway server on
loopback (``UnsafeLocalBackend``: scheduler and workers as local processes of this user,
simple password auth, scheduler proxy on its own port), then per N: ``new_cluster()``,
``scale(N)``, a client ``wait_for_workers(N)``; a warm-up and ``--runs`` timed runs. Prints one
JSON line ``{"N": [seconds, ...]}``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dask_gateway import BasicAuth, Gateway

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(path: Path, api: int, proxy: int) -> None:
    path.write_text(
        "c.DaskGateway.backend_class = "
        "'dask_gateway_server.backends.local.UnsafeLocalBackend'\n"
        "c.DaskGateway.authenticator_class = 'dask_gateway_server.auth.SimpleAuthenticator'\n"
        "c.SimpleAuthenticator.password = 'bench'\n"
        f"c.DaskGateway.address = '127.0.0.1:{api}'\n"
        f"c.Proxy.address = '127.0.0.1:{proxy}'\n"
        f"c.ClusterConfig.scheduler_cmd = ['{BIN / 'dask'}', 'scheduler']\n"
        f"c.ClusterConfig.worker_cmd = ['{BIN / 'dask'}', 'worker']\n"
        "c.ClusterConfig.worker_cores = 1\n"
        "c.ClusterConfig.worker_memory = '256 M'\n"
    )


def one(gateway: Gateway, n: int) -> float:
    """new_cluster → scale(n) → wait_for_workers(n); seconds."""
    started = time.monotonic()
    cluster = gateway.new_cluster()
    cluster.scale(n)
    client = cluster.get_client(set_as_default=False)
    client.wait_for_workers(n, timeout=120)
    took = time.monotonic() - started
    client.close()
    cluster.shutdown()
    del client, cluster
    gc.collect()  # a later wait_for_workers can hang otherwise (the note)
    return took


def main() -> int:
    """Serve a gateway, measure, print JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="2,4,8")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    api, proxy = _free_port(), _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "gateway_config.py"
        _config(config, api, proxy)
        log = (Path(tmp) / "gateway.log").open("w")
        server = subprocess.Popen(
            [str(BIN / "dask-gateway-server"), "-f", str(config)],
            cwd=tmp, stdout=log, stderr=subprocess.STDOUT, env={**os.environ},
        )  # fmt: skip
        try:
            gateway = Gateway(
                f"http://127.0.0.1:{api}",
                proxy_address=f"gateway://127.0.0.1:{proxy}",
                auth=BasicAuth("bench", "bench"),
            )
            for _ in range(300):
                try:
                    gateway.list_clusters()
                    break
                except Exception:  # not up yet
                    time.sleep(0.1)
            out: dict[int, list[float]] = {}
            for n in sizes:
                one(gateway, n)  # warm-up
                out[n] = [one(gateway, n) for _ in range(args.runs)]
                print(f"dask-gateway N={n}: {out[n]}", file=sys.stderr, flush=True)
            gateway.close()
        finally:
            server.terminate()
            server.wait(30)
            log.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
