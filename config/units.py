"""Durations and memory sizes as people write them in request files, as whole numbers.

Durations (stored as whole seconds):

- an int or float is seconds: ``90``, ``90.0``;
- a string is either a bare number of seconds (``"90"``) or one or more ``<number><unit>``
  parts, units ``d``, ``h``, ``m``, ``s`` (case-insensitive), each unit at most once and in
  that order, optionally separated by spaces: ``"90s"``, ``"10m"``, ``"4h"``, ``"1d"``,
  ``"1h30m"``, ``"1.5h"``;
- the total must be a whole number of seconds, greater than zero and at most
  :data:`MAX_DURATION_S`; ``"0.5s"`` is refused rather than silently rounded.

Memory (stored as whole MiB, 1 MiB = 2**20 bytes):

- an int is MiB: ``2048``; a string holding only a number is MiB too (``"2048"``);
- a string ``<number><unit>`` with a case-insensitive unit: binary ``KiB``, ``MiB``, ``GiB``,
  ``TiB`` (2**10 ...), decimal ``KB``, ``MB``, ``GB``, ``TB`` (10**3 ...), and the bare letters
  ``K``, ``M``, ``G``, ``T``, which are binary as in Slurm's ``--mem=2G``; ``B`` is bytes;
- a size that is not a whole number of MiB is rounded UP (``"512MB"`` is 488.28 MiB → 489), so
  a request never gets less memory than it asked for; the result must be 1 MiB to
  :data:`MAX_MEMORY_MB`.

Booleans are refused everywhere (``True`` is an ``int`` in Python, never a duration).
Errors are :class:`UnitError` (a ``ValueError``, so pydantic reports it against the field) and
name the value and what was expected.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

from podgrid.errors import PodGridError

MAX_DURATION_S = 10 * 365 * 86_400  # seconds: ten years, far beyond any grid slot
MAX_MEMORY_MB = 16 * 1024 * 1024  # MiB: 16 TiB per worker

_DURATION_UNITS_S = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_MEMORY_UNITS_BYTES = {
    "b": 1,
    "k": 2**10,
    "kib": 2**10,
    "kb": 10**3,
    "m": 2**20,
    "mib": 2**20,
    "mb": 10**6,
    "g": 2**30,
    "gib": 2**30,
    "gb": 10**9,
    "t": 2**40,
    "tib": 2**40,
    "tb": 10**12,
}
_MIB_BYTES = 2**20
_NUMBER = r"\d+(?:\.\d+)?|\.\d+"
_BARE_NUMBER = re.compile(rf"\s*({_NUMBER})\s*")
_DURATION_PART = re.compile(rf"\s*({_NUMBER})\s*([a-zA-Z]+)")
_MEMORY = re.compile(rf"\s*({_NUMBER})\s*([a-zA-Z]+)\s*")
_DURATION_HINT = "a duration in seconds or like '90s', '10m', '4h', '1d', '1h30m'"
_MEMORY_HINT = "a memory size in MiB or like '512MiB', '2GiB', '512MB', '1.5G'"


class UnitError(PodGridError, ValueError):
    """A duration or memory value that cannot be read; the message names value and expectation."""


def parse_duration_s(value: object) -> int:
    """Read a duration (number of seconds or a string like ``"1h30m"``) as whole seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UnitError(f"expected {_DURATION_HINT}, got {_show(value)}")
    if isinstance(value, str):
        seconds = _duration_from_text(value)
    else:
        seconds = _decimal(value, _DURATION_HINT)
    return _whole(seconds, value, "seconds", upper=MAX_DURATION_S, round_up=False)


def parse_memory_mb(value: object) -> int:
    """Read a memory size (MiB as a number, or a string like ``"2GiB"``) as whole MiB."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UnitError(f"expected {_MEMORY_HINT}, got {_show(value)}")
    if isinstance(value, str):
        mib = _memory_from_text(value)
    elif isinstance(value, float):
        raise UnitError(f"expected {_MEMORY_HINT}, got {_show(value)} (MiB must be whole)")
    else:
        mib = Decimal(value)
    return _whole(mib, value, "MiB", upper=MAX_MEMORY_MB, round_up=True)


def format_duration(seconds: int) -> str:
    """Render whole seconds the way people write them: ``5400`` → ``"1h30m"``."""
    if seconds <= 0:
        return f"{seconds}s"
    parts = []
    rest = seconds
    for unit, size in _DURATION_UNITS_S.items():
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _duration_from_text(text: str) -> Decimal:
    bare = _BARE_NUMBER.fullmatch(text)
    if bare:
        return _decimal(bare.group(1), _DURATION_HINT)
    total = Decimal(0)
    pos = 0
    seen: list[str] = []
    while pos < len(text.rstrip()):
        part = _DURATION_PART.match(text, pos)
        unit = part.group(2).lower() if part else ""
        if part is None or unit not in _DURATION_UNITS_S:
            raise UnitError(f"expected {_DURATION_HINT}, got {_show(text)}")
        order = list(_DURATION_UNITS_S)
        if seen and order.index(unit) <= order.index(seen[-1]):
            raise UnitError(f"expected units in the order d, h, m, s, each once, got {_show(text)}")
        seen.append(unit)
        total += _decimal(part.group(1), _DURATION_HINT) * _DURATION_UNITS_S[unit]
        pos = part.end()
    if not seen:
        raise UnitError(f"expected {_DURATION_HINT}, got {_show(text)}")
    return total


def _memory_from_text(text: str) -> Decimal:
    bare = _BARE_NUMBER.fullmatch(text)
    if bare:
        return _decimal(bare.group(1), _MEMORY_HINT)
    match = _MEMORY.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _MEMORY_UNITS_BYTES:
        raise UnitError(f"expected {_MEMORY_HINT}, got {_show(text)}")
    return _decimal(match.group(1), _MEMORY_HINT) * _MEMORY_UNITS_BYTES[unit] / _MIB_BYTES


def _decimal(number: int | float | str, hint: str) -> Decimal:
    if isinstance(number, float) and not math.isfinite(number):
        raise UnitError(f"expected {hint}, got {_show(number)}")
    try:
        # A long digit string is refused by int() in Python >= 3.11; Decimal has no such limit.
        return Decimal(number) if not isinstance(number, float) else Decimal(repr(number))
    except (InvalidOperation, ValueError) as e:
        raise UnitError(f"expected {hint}, got {_show(number)}") from e


def _whole(amount: Decimal, value: object, unit: str, *, upper: int, round_up: bool) -> int:
    if amount <= 0:
        raise UnitError(f"expected more than 0 {unit}, got {_show(value)}")
    if amount > upper:
        raise UnitError(f"expected at most {upper} {unit}, got {_show(value)}")
    whole = int(amount.to_integral_value(rounding=ROUND_CEILING))
    if whole != amount and not round_up:
        raise UnitError(f"expected a whole number of {unit}, got {_show(value)}")
    return whole


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
