"""What every PoD Grid process shares at run time: its state directory, private files, signals."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/podgrid``, else ``~/.local/state/podgrid`` (the user's state dir)."""
    base = os.environ.get("XDG_STATE_HOME")
    root = Path(base) if base else Path.home() / ".local" / "state"
    return root / "podgrid"


def write_private_file(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable by the owner only (mode 0600 from the first byte).

    Written to a temporary file first and renamed, so a reader never sees half a token.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def capture_signals(on_signal: Callable[[signal.Signals], None]) -> Iterator[None]:
    """Call ``on_signal`` (in the running event loop) on SIGTERM/SIGINT while the block runs."""
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until ``event`` is set or ``timeout_s`` passes; True when it was set.

    Loops that sleep "until woken or the interval ends" use this instead of
    ``asyncio.wait_for(event.wait(), t)``: on Python 3.11 that can swallow a cancellation
    arriving as the event is set (CPython gh-86296), and the loop then never stops.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(timeout_s, 0.0)):
            await event.wait()
    return event.is_set()
