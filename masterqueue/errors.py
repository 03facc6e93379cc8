"""Domain errors of the master queue; the HTTP layer maps each one to a status code.

Suggested mapping: :class:`RecordNotFound` and :class:`NotOwner` → 404 (a user must not learn that
another user's request exists), :class:`IllegalTransition`, :class:`StaleLease` and
:class:`IdempotencyConflict` → 409, :class:`DatabaseUnavailable` → 503.
"""

from __future__ import annotations

from podgrid.errors import PodGridError


class MasterQueueError(PodGridError):
    """Base class of every error the store raises on purpose."""


class RecordNotFound(MasterQueueError):
    """No request, job or token with that id."""

    def __init__(self, kind: str, ident: int) -> None:
        super().__init__(f"{kind} {ident} not found")
        self.kind = kind
        self.ident = ident


class NotOwner(MasterQueueError):
    """The caller is not the owner of the record it tried to change or read privately."""

    def __init__(self, kind: str, ident: int) -> None:
        super().__init__(f"{kind} {ident} belongs to another user")
        self.kind = kind
        self.ident = ident


class IllegalTransition(MasterQueueError):
    """The record is in ``current`` and cannot move to ``wanted``."""

    def __init__(self, kind: str, ident: int, current: str, wanted: str) -> None:
        super().__init__(f"{kind} {ident} is {current}; cannot move to {wanted}")
        self.kind = kind
        self.ident = ident
        self.current = current
        self.wanted = wanted


class StaleLease(MasterQueueError):
    """A job heartbeat or finish carried a fencing token that no longer holds the lease."""

    def __init__(self, job_id: int, state: str) -> None:
        super().__init__(f"job {job_id}: lease lost (job is now {state})")
        self.job_id = job_id
        self.state = state


LeaseLost = StaleLease


class IdempotencyConflict(MasterQueueError):
    """An idempotency key was reused for a different submission."""


class DatabaseUnavailable(MasterQueueError):
    """The database kept failing with transient errors after every retry."""
