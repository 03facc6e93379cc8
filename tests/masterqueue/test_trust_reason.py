"""Attack: a broker's log lines reach the owner as the FAILED reason.

Whatever the broker logged (bytes an attacker made it log: terminal escapes, control and
undecodable bytes, very long lines) is cleaned before it is stored: printable characters
only, no ANSI sequences, bounded length. A real master queue launches a real process that
prints such bytes and exits.
"""

from __future__ import annotations

import sys
from pathlib import Path

from podgrid.masterqueue.launcher import REASON_MAX_CHARS
from tests.masterqueue.api_helpers import mq_service
from tests.masterqueue.test_launcher import launcher_settings, wait_state

HOSTILE_BROKER = r"""
import sys
line = b"\x1b[2J\x1b[31mred\x1b[0m \x1b]0;pwned\x07 bell\x07 nul\x00 ff\xff rtl\xe2\x80\xae "
sys.stdout.buffer.write(b"x" * 50 + b"\r\n" + line * 40 + b"\n" + line + b"\n")
sys.stdout.flush()
sys.exit(7)
"""


async def test_failed_reason_from_a_hostile_broker_log_is_clean(tmp_path: Path) -> None:
    settings = launcher_settings()
    settings["broker_command"] = [sys.executable, "-c", HOSTILE_BROKER]
    async with mq_service(tmp_path, **settings) as svc:
        alice = await svc.user("alice")
        rid = (await alice.submit()).body["id"]
        await wait_state(alice, rid, "FAILED")
        detail = (await alice.call("GET", f"/v1/requests/{rid}")).body
    reason = detail["reason"]
    assert "exit code 7" in reason
    assert "red" in reason
    assert "pwned" not in reason
    assert reason.isprintable(), repr(reason)
    assert "\x1b" not in reason
    assert "\u202e" not in reason
    assert len(reason) <= REASON_MAX_CHARS
    timeline_reasons = [e["reason"] or "" for e in detail["timeline"]]
    assert all(r.isprintable() for r in timeline_reasons)
