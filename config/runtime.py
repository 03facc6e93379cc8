"""What every PoD Grid process shares at run time: its state directory, private files, signals.

Everything a service keeps in its state directory may hold a secret (tokens, the database
with its token digests and connection keys, TLS keys, broker logs), so it is private to the
user whatever the umask: directories this module creates are 0700 (:func:`private_dir`),
files 0600 (:func:`write_private_file`), and a serving process runs with umask 0o077
(:func:`capture_signals`, which every ``serve``/``run`` command enters), so files made by
code that does not ask (SQLite's journals, broker logs, dask's scratch) are private too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
PRIVATE_UMASK = 0o077  # group and others get nothing
PRIVATE_DIR_MODE = 0o700


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/podgrid``, else ``~/.local/state/podgrid`` (the user's state dir)."""
    base = os.environ.get("XDG_STATE_HOME")
    root = Path(base) if base else Path.home() / ".local" / "state"
    return root / "podgrid"


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) with mode 0700 whatever the umask; ``path``.

    A directory that already exists is left as it is: it may be the user's choice (or a
    shared one like ``/tmp``) and is not ours to change.
    """
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    for created in missing:
        os.chmod(created, PRIVATE_DIR_MODE)
    return path


def write_private_file(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable by the owner only (mode 0600 from the first byte).

    Written to a temporary file first and renamed, so a reader never sees half a token.
    """
    private_dir(path.parent)
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


def create_private_once(path: Path, make_text: Callable[[], str]) -> None:
    """Create ``path`` (0600) holding ``make_text()`` unless it exists; never replace it.

    Written to a private temporary file and hard-linked into place, so when two processes
    start at once the first file wins and both read it (a rename would let the second replace
    the first: two master queues on one database must share their keys).
    """
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(make_text())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def capture_signals(on_signal: Callable[[signal.Signals], None]) -> Iterator[None]:
    """Call ``on_signal`` (in the running event loop) on SIGTERM/SIGINT while the block runs.

    This is the block every PoD Grid service serves in, so it also sets the process umask to
    :data:`PRIVATE_UMASK` for its duration (restored after): whatever the user's umask, the
    files the service and its children create are not readable by group or others.
    """
    loop = asyncio.get_running_loop()
    old_umask = os.umask(PRIVATE_UMASK)
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        os.umask(old_umask)


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
