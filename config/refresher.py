"""Keep a running component's configuration current: re-read the hierarchy every few seconds.

An operator's ``ldapmodify`` takes effect without a restart. A bad value or an unreachable
server never takes the component down: the last good configuration stays in force, the error
is logged and counted, and an unreachable server is warned about once until it recovers.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import structlog

from podgrid.config.errors import ConfigError, ConfigSourceError, ConfigValueError, count_error
from podgrid.config.hierarchy import ResolvedConfig, resolve
from podgrid.config.retry import retry_policy

log = structlog.get_logger("podgrid.config")

REFRESH_ATTEMPTS = 3  # tries per refresh before the last good configuration is kept


class Change(NamedTuple):
    """One setting that changed at a refresh, and the DN its new value came from."""

    field: str
    old: Any
    new: Any
    dn: str


OnChange = Callable[[ResolvedConfig, list[Change]], Awaitable[None] | None]


def diff(old: ResolvedConfig, new: ResolvedConfig) -> list[Change]:
    """The fields whose value differs between two resolutions, in field order."""
    changes = []
    for field in type(new.settings).model_fields:
        before, after = getattr(old.settings, field), getattr(new.settings, field)
        if before != after:
            changes.append(Change(field, before, after, new.sources[field]))
    return changes


class ConfigRefresher:
    """Resolve (site, ce) from ``source`` now and again every ``config_refresh_s`` seconds.

    ``refresh_s`` overrides the interval (tests); otherwise the current ``podConfigRefresh``
    is used, so changing it in the directory changes the pace too.
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        site: str | None = None,
        ce: str | None = None,
        *,
        on_change: OnChange | None = None,
        refresh_s: float | None = None,
    ) -> None:
        self.source = os.fspath(source)
        self.site = site
        self.ce = ce
        self._on_change = on_change
        self._refresh_s = refresh_s
        self._current: ResolvedConfig | None = None
        self._task: asyncio.Task[None] | None = None
        self._unreachable = False

    @property
    def current(self) -> ResolvedConfig:
        """The last good configuration (after :meth:`start`)."""
        if self._current is None:
            raise RuntimeError("ConfigRefresher.start() has not loaded a configuration yet")
        return self._current

    @property
    def interval_s(self) -> float:
        """Seconds until the next re-read."""
        if self._refresh_s is not None:
            return self._refresh_s
        return float(self.current.settings.config_refresh_s)

    async def start(self) -> ResolvedConfig:
        """Load the configuration (errors propagate: the caller exits non-zero), then refresh."""
        try:
            self._current = await asyncio.to_thread(resolve, self.source, self.site, self.ce)
        except ConfigError as e:
            count_error(e)
            raise
        log.info(
            "config.loaded",
            source=self.source,
            site=self.site,
            ce=self.ce,
            missing_levels=list(self._current.missing_levels),
        )
        self._task = asyncio.create_task(self._run(), name="podgrid-config-refresher")
        self._task.add_done_callback(_log_crash)
        return self._current

    async def stop(self) -> None:
        """Cancel the background task, wait for it, and re-raise what it died of, if anything."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.refresh()

    async def refresh(self) -> list[Change]:
        """Re-read now; on success apply and report the changes, on error keep the last good."""
        try:
            new = await self._load()
        except ConfigValueError as e:
            count_error(e)
            log.error(
                "config.invalid",
                source=self.source,
                dn=e.dn,
                attribute=e.attribute,
                value=str(e.value),
                expected=e.expected,
                error=str(e),
            )
            return []
        except ConfigSourceError as e:
            count_error(e)
            if not self._unreachable:
                self._unreachable = True
                log.warning("config.source_unreachable", source=self.source, error=str(e))
            return []
        if self._unreachable:
            self._unreachable = False
            log.info("config.source_recovered", source=self.source)
        changes = diff(self.current, new)
        self._current = new
        if changes:
            log.info(
                "config.changed",
                source=self.source,
                changes=[
                    {"field": c.field, "old": c.old, "new": c.new, "dn": c.dn} for c in changes
                ],
            )
            await self._notify(new, changes)
        return changes

    async def _load(self) -> ResolvedConfig:
        async for attempt in retry_policy(
            "ldap", retry_on=ConfigSourceError, attempts=REFRESH_ATTEMPTS
        ):
            with attempt:
                return await asyncio.to_thread(resolve, self.source, self.site, self.ce)
        raise AssertionError("unreachable: the retry policy re-raises the last error")

    async def _notify(self, new: ResolvedConfig, changes: list[Change]) -> None:
        if self._on_change is None:
            return
        try:
            result = self._on_change(new, changes)
            if inspect.isawaitable(result):
                await result
        except Exception:
            # A faulty listener must not stop the refreshes of everybody else.
            log.exception("config.on_change_failed", source=self.source)


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("config.refresher_crashed", error=repr(task.exception()))
