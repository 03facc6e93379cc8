"""config.runtime: private files, signal capture, and a cancellation-safe event wait."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
from pathlib import Path

import pytest

from podgrid.config.runtime import (
    capture_signals,
    default_state_dir,
    wait_event,
    write_private_file,
)


def test_private_file_is_0600_and_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "admin.token"
    write_private_file(path, "first\n")
    write_private_file(path, "second\n")
    assert path.read_text() == "second\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["admin.token"]  # no temp file left


def test_state_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / "podgrid"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_state_dir() == Path.home() / ".local" / "state" / "podgrid"


async def test_capture_signals_calls_back_and_restores() -> None:
    got: list[signal.Signals] = []
    with capture_signals(got.append):
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.05)
    assert got == [signal.SIGTERM]
    assert not asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)


async def test_wait_event_wakes_or_times_out() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_event(event, 5.0) is True


async def test_wait_event_never_swallows_a_cancel_racing_with_the_event() -> None:
    # asyncio.wait_for on Python 3.11 returns normally here, and a loop around it never ends.
    event = asyncio.Event()
    task = asyncio.create_task(wait_event(event, 5.0))
    await asyncio.sleep(0)  # the task now waits on the event
    event.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
