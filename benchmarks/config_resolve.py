"""How long configuration takes: a throw-away slapd's start, and resolve() over LDAP and LDIF.

Run: .venv/bin/python benchmarks/config_resolve.py [--repeats N]
Prints medians (and p90) in milliseconds; nothing is asserted. Agents re-resolve every
podConfigRefresh seconds, so resolve() must stay cheap next to that interval.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from podgrid.config import default_ldif, resolve
from tests.harness.slapd import start_slapd

SITE, CE = "Local", "local-ce"


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return f"median {statistics.median(ordered) * 1e3:7.2f} ms   p90 {p90 * 1e3:7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=25)
    args = parser.parse_args()

    starts: list[float] = []
    over_ldap: list[float] = []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        with start_slapd() as server:
            resolve(server.url, SITE, CE)  # start counts until the first answer
            starts.append(time.perf_counter() - t0)
            if i == 0:
                for _ in range(args.repeats):
                    t1 = time.perf_counter()
                    resolve(server.url, SITE, CE)
                    over_ldap.append(time.perf_counter() - t1)
    over_ldif: list[float] = []
    for _ in range(args.repeats):
        t1 = time.perf_counter()
        resolve(default_ldif(), SITE, CE)
        over_ldif.append(time.perf_counter() - t1)

    print(f"config resolution, {args.repeats} repeats each (site {SITE}, CE {CE})")
    print(f"  slapd start -> first resolve   {_ms(starts)}")
    print(f"  resolve over LDAP (new conn)   {_ms(over_ldap)}")
    print(f"  resolve from the LDIF          {_ms(over_ldif)}")


if __name__ == "__main__":
    main()
