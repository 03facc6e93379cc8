"""Who runs the user's code (workers, batch jobs) and with which environment.

The payload (a Dask worker running a user's tasks, a batch job's argv) is not trusted with
anything of the agent's: it gets an allow-list environment (never the agent's token or any
other variable the agent happens to have), and when the agent is configured with a
``payload_user`` it runs under that uid/gid with no supplementary groups, in directories
chowned to it, so it cannot read the agent's 0600 files nor ``/proc/<agent>/environ``.
Switching uid needs root (or CAP_SETUID and CAP_SETGID); an agent that cannot isolate logs
``jobagent.payload_not_isolated`` once at start-up.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from podgrid.config import environment

log = structlog.get_logger("podgrid.jobagent")

DEFAULT_PATH: Final = "/usr/local/bin:/usr/bin:/bin"
# Passed on from the agent's own environment when set: locale and the slot's Dask config.
_PASSED_NAMES: Final = frozenset({"LANG", "LANGUAGE", "TZ"})
_PASSED_PREFIXES: Final = ("LC_", "DASK_")
# PODGRID_* that say where the payload runs; none of them is a secret.
_PUBLIC_PODGRID: Final = (environment.SITE, environment.CE, environment.SLOT_PACKAGES)
_CAP_SETGID, _CAP_SETUID = 6, 7


class PayloadUserError(ValueError):
    """The configured payload user cannot be used (unknown, or the agent may not switch)."""


@dataclass(frozen=True, slots=True)
class Payload:
    """The identity payloads run under: ``uid``/``gid`` None means the agent's own."""

    user: str | None = None
    uid: int | None = None
    gid: int | None = None

    @property
    def isolated(self) -> bool:
        """Whether payloads run under a uid other than the agent's."""
        return self.uid is not None and self.uid != os.geteuid()

    def chown(self, path: Path) -> None:
        """Give ``path`` to the payload user (nothing to do without one)."""
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)

    def check_reachable(self, directory: Path) -> None:
        """PayloadUserError unless the payload user can traverse to ``directory``.

        Every ancestor must be searchable by it (others' x bit, or its group's, or its own);
        a state dir under a 0700 home would make every job fail at ``chdir``.
        """
        if self.uid is None or self.gid is None:
            return
        for d in [directory.resolve(), *directory.resolve().parents]:
            st = d.stat()
            if st.st_uid == self.uid:
                ok = bool(st.st_mode & stat.S_IXUSR)
            elif st.st_gid == self.gid:
                ok = bool(st.st_mode & stat.S_IXGRP)
            else:
                ok = bool(st.st_mode & stat.S_IXOTH)
            if not ok:
                raise PayloadUserError(
                    f"payload user {self.user!r} cannot reach {directory}: {d} is mode "
                    f"{stat.S_IMODE(st.st_mode):04o}; choose a --state-dir it can traverse"
                )


def _may_switch_uid() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                caps = int(line.split()[1], 16)
                return bool(caps >> _CAP_SETUID & 1 and caps >> _CAP_SETGID & 1)
    except OSError:
        pass
    return False


def resolve_payload(user: str | None) -> Payload:
    """The :class:`Payload` for a configured user name or uid (None: the agent's own)."""
    if user is None:
        return Payload()
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise PayloadUserError(f"payload user {user!r}: no such user") from None
    if entry.pw_uid == 0:
        raise PayloadUserError(f"payload user {user!r} is root: that isolates nothing")
    if entry.pw_uid != os.geteuid() and not _may_switch_uid():
        raise PayloadUserError(
            f"payload user {user!r}: the agent runs as uid {os.geteuid()} and may not switch "
            "to another uid (run it as root, or with CAP_SETUID and CAP_SETGID)"
        )
    return Payload(entry.pw_name, entry.pw_uid, entry.pw_gid)


def warn_if_not_isolated(payload: Payload) -> None:
    """Log ``jobagent.payload_not_isolated`` when user code runs under the agent's own uid."""
    if payload.isolated:
        log.info("jobagent.payload_user", user=payload.user, uid=payload.uid, gid=payload.gid)
        return
    uid = os.geteuid()
    log.warning(
        "jobagent.payload_not_isolated",
        uid=uid,
        reason=(
            "workers and batch jobs run as the agent's own uid: they cannot see its "
            "environment, but can read its files and /proc/<agent>/environ"
            + ("; as root, with full control of this machine" if uid == 0 else "")
        ),
        fix="start the agent as root with --payload-user NAME (a dedicated unprivileged user)",
    )


def base_environment(
    home: Path, tmpdir: Path, source: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The allow-list every payload starts from: PATH, HOME, TMPDIR, locale, DASK_*, site.

    ``source`` (default: the agent's environment) is only read for those names; nothing else
    of it, in particular no token, is passed on.
    """
    src = os.environ if source is None else source
    env = {"PATH": src.get("PATH", DEFAULT_PATH), "HOME": str(home), "TMPDIR": str(tmpdir)}
    for name, value in src.items():
        if name in _PASSED_NAMES or name.startswith(_PASSED_PREFIXES):
            env[name] = value
    for name in _PUBLIC_PODGRID:
        if name in src:
            env[name] = src[name]
    return env
