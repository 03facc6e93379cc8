"""Typed keys of the agent's HTTP app state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

StatusFn = Callable[[], dict[str, Any]]
STATUS: web.AppKey[StatusFn] = web.AppKey("status")
