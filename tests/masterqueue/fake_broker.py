"""A minimal stand-in for ``podgrid broker serve`` until the broker issue lands.

Started by the master queue's local launcher exactly like the real broker
(``... --request-id ID --masterqueue URL`` with ``PODGRID_TOKEN`` in the environment), it
reports PUBLISHING → READY → FULL through the real HTTP API, then keeps heart-beating until
an answer says ``"cancel": true`` and exits 0. Flags make it misbehave for the fault tests:
``--spawn-child`` (a ``sleep`` in its process group, pid printed), ``--exit-after-publishing N``
(exit with code N), ``--hang-after-full`` (stop heart-beating, keep running), and
``--ignore-sigterm``.
Only the standard library, so it starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

BEAT_S = 0.2


def report(url: str, request_id: int, token: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST one state report; the master queue's answer."""
    req = urllib.request.Request(
        f"{url}/v1/requests/{request_id}/state",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    print(f"reported {body['state']}: {answer}", flush=True)
    return answer


def worker(i: int) -> dict[str, Any]:
    """A fake attached worker."""
    return {
        "name": f"w{i}",
        "host": f"wn{i:03d}",
        "site": "CERN",
        "agent_id": f"agent-{i}",
        "attached_at": "2026-01-01T00:00:00Z",
        "startup_s": 1.5,
    }


def main() -> int:
    """Report states through the API; exit 0 when told to cancel."""
    p = argparse.ArgumentParser()
    p.add_argument("--request-id", type=int, required=True)
    p.add_argument("--masterqueue", required=True)
    p.add_argument("--spawn-child", action="store_true")
    p.add_argument("--exit-after-publishing", type=int, default=None)
    p.add_argument("--hang-after-full", action="store_true")
    p.add_argument("--ignore-sigterm", action="store_true")
    args = p.parse_args()
    token = os.environ["PODGRID_TOKEN"]
    print(f"fake broker pid {os.getpid()} registry {os.environ.get('PODGRID_REGISTRY_URL')}")
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.spawn_child:
        child = subprocess.Popen(["sleep", "300"])
        print(f"child pid {child.pid}", flush=True)
    url, rid = args.masterqueue, args.request_id
    conn = {
        "address": "tls://127.0.0.1:8786",
        "tls_ca": "CA-PEM",
        "tls_client_cert": "C",
        "tls_client_key": "K",
    }
    steps = [
        {"state": "PUBLISHING", "address": "https://127.0.0.1:1/v1/attach"},
        {"state": "READY", "workers": [worker(1)], "connection": conn},
        {"state": "FULL", "workers": [worker(1), worker(2)]},
    ]
    for step in steps:
        if report(url, rid, token, step)["cancel"]:
            return 0
        if args.exit_after_publishing is not None:
            print("exiting early on purpose", flush=True)
            return args.exit_after_publishing
        time.sleep(BEAT_S)
    if args.hang_after_full:
        print("hanging without heartbeats", flush=True)
        time.sleep(3600)
    while True:
        try:
            answer = report(url, rid, token, steps[-1])
        except OSError as e:  # the master queue restarting: keep running, like a real broker
            print(f"report failed: {e}", flush=True)
            time.sleep(BEAT_S)
            continue
        if answer["cancel"]:
            print(f"stopping: request is {answer['state']}", flush=True)
            return 0
        time.sleep(BEAT_S)


if __name__ == "__main__":
    sys.exit(main())
