"""Who may do what on the scheduler: the peer certificate's common name decides, per message.

Every cluster certificate is signed by the same cluster CA, so "signed by the CA" says only
"belongs to this cluster". The name inside says who: ``owner:<user>`` (the one client),
``worker:<reserved name>`` (one worker), ``scheduler:<cluster>`` (the scheduler itself,
e.g. when it talks to its workers). :class:`PeerGuard` replaces the scheduler's ``handlers``
with a mapping that wraps each handler in a check of the calling connection's certificate
(``comm.extra_info["peercert"]``, which Dask's TLS comm fills in), so handlers added later by
Dask extensions are checked too:

- the owner and the scheduler may call everything;
- a worker may call only what a worker sends a scheduler (:data:`WORKER_OPS`), may register
  only under the name its certificate carries, and may heartbeat, unregister, retire or
  resize only itself; in particular it can never ``register-client``, ``run_function``,
  ``broadcast`` or register plugins, i.e. never run code on the other workers;
- anything else (no certificate, another name) may call nothing.

A refused call is logged and its connection aborted, so the caller sees the connection drop
(a ``distributed.Client`` raises ``OSError``) and nothing was registered.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Final

import structlog
from distributed.comm.core import CommClosedError

from podgrid.broker.tls import WORKER_PREFIX, peer_common_name

log = structlog.get_logger("podgrid.broker")

# What a Dask worker (no nanny) asks its scheduler outside its batched stream.
WORKER_OPS: Final = frozenset(
    {
        "register-worker",
        "heartbeat_worker",
        "unregister",
        "retire_workers",
        "set_resources",
        "who_has",
        "log_event",
        "shuffle_barrier",
        "shuffle_get",
        "shuffle_get_or_create",
        "shuffle_restrict_task",
    }
)
# Ops whose address argument must be the calling worker's own address.
_SELF_ADDRESS: Final = {"heartbeat_worker": "address", "unregister": "address"}
_SELF_ADDRESS_OPTIONAL: Final = {"set_resources": "worker"}

Handler = Callable[..., Any]


class Refused(Exception):
    """A call the caller's certificate does not allow."""


def _expects_comm(func: Handler) -> bool:
    params = inspect.signature(func).parameters
    return bool(params) and next(iter(params)) == "comm"


class PeerGuard:
    """The admission rule of one cluster's scheduler (see the module docstring)."""

    def __init__(self, owner_cn: str, scheduler_cn: str) -> None:
        self.owner_cn = owner_cn
        self.scheduler_cn = scheduler_cn
        self.scheduler: Any = None
        self.refused_total = 0

    def install(self, scheduler: Any) -> None:
        """Put the check in front of every handler of ``scheduler`` (before it starts)."""
        self.scheduler = scheduler
        scheduler.handlers = GuardedHandlers(self, scheduler.handlers)

    def _worker_of(self, address: object) -> str | None:
        """The name of the registered worker at ``address`` (None when there is none)."""
        ws = self.scheduler.workers.get(address) if isinstance(address, str) else None
        return None if ws is None else str(ws.name)

    def _own(self, worker: str, address: object) -> bool:
        """Whether ``address`` is not some *other* registered worker's."""
        other = self._worker_of(address)
        return other is None or other == worker

    def check(self, op: str, comm: Any, msg: Mapping[str, Any]) -> None:
        """Raise :class:`Refused` unless the connection's certificate may call ``op``."""
        cn = peer_common_name((getattr(comm, "extra_info", None) or {}).get("peercert"))
        if cn is not None and cn in (self.owner_cn, self.scheduler_cn):
            return
        if cn is None or not cn.startswith(WORKER_PREFIX):
            raise Refused(f"certificate {cn!r} is neither the owner's nor a worker's")
        worker = cn[len(WORKER_PREFIX) :]
        if op not in WORKER_OPS:
            raise Refused(f"a worker certificate may not call {op!r}")
        if op == "register-worker" and str(msg.get("name")) != worker:
            raise Refused(f"worker {worker!r} may not register as {msg.get('name')!r}")
        if op in _SELF_ADDRESS and not self._own(worker, msg.get(_SELF_ADDRESS[op])):
            raise Refused(f"worker {worker!r} may not {op} another worker")
        if op in _SELF_ADDRESS_OPTIONAL and not self._own(
            worker, msg.get(_SELF_ADDRESS_OPTIONAL[op])
        ):
            raise Refused(f"worker {worker!r} may not {op} another worker")
        if op == "retire_workers":
            addresses = msg.get("workers")
            names = msg.get("names")
            if msg.get("n") or not isinstance(addresses, list | tuple) or names:
                raise Refused(f"worker {worker!r} may retire only itself, by address")
            if not all(self._worker_of(a) == worker for a in addresses):
                raise Refused(f"worker {worker!r} may retire only itself")

    def guarded(self, op: str, handler: Handler) -> Handler:
        """``handler`` behind the check; same signature (with ``comm`` first) for Dask."""
        takes_comm = _expects_comm(handler)

        async def call(comm: Any, **msg: Any) -> Any:
            try:
                self.check(op, comm, msg)
            except Refused as e:
                self.refused_total += 1
                log.warning(
                    "broker.peer_refused",
                    op=op,
                    peer=str(getattr(comm, "peer_address", "?")),
                    reason=str(e),
                )
                comm.abort()
                raise CommClosedError(f"refused: {e}") from None
            result = handler(comm, **msg) if takes_comm else handler(**msg)
            if inspect.isawaitable(result):
                result = await result
            return result

        sig = inspect.signature(handler)
        params = list(sig.parameters.values())
        if not takes_comm:
            comm_param = inspect.Parameter("comm", inspect.Parameter.POSITIONAL_OR_KEYWORD)
            params = [comm_param, *params]
        call.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        call.__name__ = getattr(handler, "__name__", op)
        return call


class GuardedHandlers(dict[str, Handler]):
    """The scheduler's ``handlers``: every lookup hands out the handler behind the guard."""

    def __init__(self, guard: PeerGuard, handlers: Mapping[str, Handler]) -> None:
        super().__init__(handlers)
        self._guard = guard
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def __getitem__(self, op: str) -> Handler:
        handler = super().__getitem__(op)
        cached = self._wrapped.get(op)
        if cached is None or cached[0] is not handler:
            cached = (handler, self._guard.guarded(op, handler))
            self._wrapped[op] = cached
        return cached[1]
