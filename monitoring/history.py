"""A compact bounded ring of (timestamp ms, value) points for one series.

Numeric series (the common case) keep their values in a typed ``array('d')`` with one flag
byte per point saying "this was an int", instead of a list of boxed Python numbers: about
17 bytes per point rather than ~60. A series that ever receives a string (or an int too large
for a double) switches to a plain list; repeated equal strings share one object.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

Value = str | int | float

_MAX_EXACT_INT = 2**53  # ints beyond this do not survive a round trip through a double


class History:
    """The last ``capacity`` points, oldest first when iterated."""

    __slots__ = ("_capacity", "_ints", "_start", "_times_ms", "_values")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._times_ms = array("q")
        self._values: array[float] | list[Value] = array("d")
        self._ints = bytearray()
        self._start = 0  # index of the oldest point once the ring is full

    def __len__(self) -> int:
        return len(self._times_ms)

    def append(self, time_ms: int, value: Value) -> None:
        """Add the newest point, overwriting the oldest one when full."""
        values = self._values
        if isinstance(values, array):
            if isinstance(value, str) or (isinstance(value, int) and abs(value) > _MAX_EXACT_INT):
                values = self._to_list()
            else:
                self._append_numeric(values, time_ms, value)
                return
        if isinstance(value, str) and len(self) and value == values[self._newest()]:
            value = values[self._newest()]  # share the object: Address repeats every publish
        if len(self._times_ms) < self._capacity:
            self._times_ms.append(time_ms)
            values.append(value)
        else:
            self._times_ms[self._start] = time_ms
            values[self._start] = value
            self._start = (self._start + 1) % self._capacity

    def _append_numeric(self, values: array[float], time_ms: int, value: int | float) -> None:
        is_int = 1 if isinstance(value, int) else 0
        if len(self._times_ms) < self._capacity:
            self._times_ms.append(time_ms)
            values.append(float(value))
            self._ints.append(is_int)
        else:
            i = self._start
            self._times_ms[i] = time_ms
            values[i] = float(value)
            self._ints[i] = is_int
            self._start = (i + 1) % self._capacity

    def _newest(self) -> int:
        return (self._start - 1) % len(self._times_ms)

    def _to_list(self) -> list[Value]:
        old = self._values
        assert isinstance(old, array)
        values: list[Value] = [
            int(v) if flag else v for v, flag in zip(old, self._ints, strict=True)
        ]
        self._values = values
        self._ints = bytearray()
        return values

    def points(self) -> Iterator[tuple[int, Value]]:
        """Every point, oldest first."""
        n = len(self._times_ms)
        values = self._values
        numeric = isinstance(values, array)
        for k in range(n):
            i = (self._start + k) % n
            v = values[i]
            if numeric and self._ints[i]:
                v = int(v)
            yield self._times_ms[i], v
