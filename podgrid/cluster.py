# mypy: disallow-untyped-calls=False
# (distributed has no type information: every call into Cluster is "untyped")
"""``PodCluster``: a PoD Grid cluster as a real ``distributed.deploy.Cluster``.

.. code-block:: python

    from distributed import Client
    from podgrid import PodCluster

    with PodCluster(min_workers=2, max_workers=16, memory="2GiB") as cluster:
        client = Client(cluster)
        cluster.scale(8)  # the broker asks the grid for 8 workers
        cluster.adapt(minimum=1, maximum=16)  # or follows Dask's adaptive target, on the broker
        print(cluster.dashboard_link)  # the owner's dashboard (client certificate)

Construction submits the request (a request file, a :class:`ServerRequest`, keyword overrides
of either, or defaults) and waits until it is READY, then connects with the owner's TLS
credentials (a key made here, a certificate signed by the cluster's broker), so
``Client(cluster)`` needs nothing else. ``scale``/``adapt`` are calls on the broker
(:mod:`podgrid.owner_client`): they outlive this process, like dask-gateway's. ``close()``
cancels the request unless ``shutdown_on_close=False`` (the default of :meth:`from_id`,
which re-attaches to a running cluster). Sync by default; ``asynchronous=True`` for
``async with``/``await``.

The master queue and token are found like the CLI finds them, first hit wins: arguments,
``dask.config`` keys ``podgrid.url`` / ``podgrid.token``, then
:func:`podgrid.endpoints.discover` (``PODGRID_URL``/``PODGRID_TOKEN``, ``endpoints.json``,
``client.toml``).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, Final

import dask.config
from distributed.core import Status, rpc
from distributed.deploy.cluster import Cluster
from distributed.exceptions import WorkerStartTimeoutError
from distributed.objects import SchedulerInfo

from podgrid.client import PodGrid
from podgrid.config.request import ServerRequest, read_request_text
from podgrid.errors import CallFailed, Conflict
from podgrid.owner_client import OwnerClient
from podgrid.protocol import ConnectionInfo, RequestDetail, ScalingStatus

__all__ = ["PodCluster", "build_request", "list_clusters"]

STATUS_REFRESH_S: Final = 2.0  # seconds between two reads of the broker's scaling status
WAIT_POLL_S: Final = 0.25  # seconds between two looks while waiting for workers
DEFAULT_NAME: Final = "podcluster"
_SERVER_KEYS: Final = {
    "name": "name",
    "min_workers": "min_workers",
    "max_workers": "max_workers",
    "max_wait": "max_wait_s",
    "ttl": "ttl_s",
    "idle_timeout": "idle_timeout_s",
    "adaptive": "adaptive",
}
_WORKER_KEYS: Final = {"cores": "cores", "memory": "memory_mb", "packages": "packages",
                       "sites": "sites"}  # fmt: skip


def build_request(source: str | Path | ServerRequest | None, **overrides: Any) -> ServerRequest:
    """The request ``source`` (a file, a model or the defaults) with keyword overrides.

    Keywords are the request file's keys (``min_workers``, ``max_wait="10m"``,
    ``memory="2GiB"``, ``packages=[...]``, ...); an unknown one is a ``TypeError``.
    """
    if isinstance(source, ServerRequest):
        base = source.model_dump()
    elif source is None:
        base = {"name": DEFAULT_NAME}
    else:
        from podgrid.config.request import parse_request

        path = Path(source)
        fmt = {".jdl": "jdl", ".json": "json"}.get(path.suffix.lower(), "toml")
        base = parse_request(read_request_text(path), fmt=fmt, source=str(path)).model_dump()  # type: ignore[arg-type]
    worker = dict(base.get("worker") or {})
    for key, value in overrides.items():
        if key in _SERVER_KEYS:
            base[_SERVER_KEYS[key]] = value
        elif key in _WORKER_KEYS:
            worker[_WORKER_KEYS[key]] = value
        else:
            raise TypeError(f"PodCluster() got an unexpected keyword argument {key!r}")
    if "max_workers" not in overrides and "min_workers" in overrides:
        base["max_workers"] = max(int(base.get("max_workers", 1)), int(overrides["min_workers"]))
    base["worker"] = worker
    return ServerRequest.model_validate(base)


def _progress_line(detail: RequestDetail) -> str:
    sites: dict[str, int] = {}
    for w in detail.workers:
        sites[w.site] = sites.get(w.site, 0) + 1
    where = ", ".join(f"{s}: {n}" for s, n in sorted(sites.items()))
    return (
        f"request {detail.id} {detail.state.value}: {detail.worker_count}/"
        f"{detail.request.min_workers} workers" + (f" ({where})" if where else "")
    )


class PodCluster(Cluster):
    """A private Dask cluster of PoD Grid (see the module docstring)."""

    def __init__(
        self,
        request: str | Path | ServerRequest | None = None,
        *,
        request_id: int | None = None,
        url: str | None = None,
        token: str | None = None,
        state_dir: str | Path | None = None,
        shutdown_on_close: bool | None = None,
        timeout: float | None = None,
        asynchronous: bool = False,
        loop: Any = None,
        quiet: bool = False,
        **overrides: Any,
    ) -> None:
        if request_id is None:
            self._request: ServerRequest | None = build_request(request, **overrides)
        elif request is not None or overrides:
            raise TypeError("give a request to submit or request_id to re-attach, not both")
        else:
            self._request = None
        self.request_id = request_id
        self.shutdown_on_close = (
            request_id is None if shutdown_on_close is None else shutdown_on_close
        )
        self._endpoint_args = (
            url or dask.config.get("podgrid.url", None),
            token or dask.config.get("podgrid.token", None),
            None if state_dir is None else Path(state_dir),
        )
        self._timeout_s = timeout
        self._grid: PodGrid | None = None
        self._owner: OwnerClient | None = None
        self.connection_info: ConnectionInfo | None = None
        self.security: Any = None
        self.scaling: ScalingStatus | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        super().__init__(asynchronous=asynchronous, loop=loop, quiet=quiet, name=DEFAULT_NAME)
        if not self.asynchronous:
            self._loop_runner.start()
            try:
                self.sync(self._start)
            except BaseException:
                self.close()
                raise

    def __await__(self) -> Any:
        async def started() -> PodCluster:
            if self.status == Status.created:
                self._loop_runner.start()
                try:
                    await self._start()
                except BaseException:
                    await self._close()
                    raise
            return self

        return started().__await__()

    def _say(self, line: str) -> None:
        """Print ``line`` (unless ``quiet``) and keep it for ``get_logs()["Cluster"]``."""
        self._log(line)

    # -- start ----------------------------------------------------------------------------

    async def _start(self) -> None:
        url, token, state_dir = self._endpoint_args
        self._grid = grid = PodGrid.connect(url, token, state_dir=state_dir)
        await grid.__aenter__()
        if self.request_id is None:
            assert self._request is not None
            record = await grid.submit(self._request)
            self.request_id = record.id
            self._say(f"request {record.id} submitted ({record.request.name})")
        rid = self.request_id
        self.name = f"podgrid-{rid}"
        last: list[str] = []

        def progress(detail: RequestDetail) -> None:
            line = _progress_line(detail)
            if line not in last:
                last[:] = [line]
                self._say(line)

        await grid.wait_ready(rid, progress=progress, timeout_s=self._timeout_s)
        info = await grid.connection(rid)
        self.connection_info = info
        self.security = info.security()
        self.scheduler_comm = rpc(
            info.address, connection_args=self.security.get_connection_args("client")
        )
        self._owner = OwnerClient(info)
        self.scaling = await self._owner.scaling()
        await super()._start()
        self._refresh_task = asyncio.ensure_future(self._refresh_scaling())

    async def _refresh_scaling(self) -> None:
        """Keep :attr:`scaling` current for the widget and ``repr`` (best effort)."""
        while self.status == Status.running and self._owner is not None:
            with contextlib.suppress(CallFailed):
                self.scaling = await self._owner.scaling()
            await asyncio.sleep(STATUS_REFRESH_S)

    @classmethod
    def from_id(cls, request_id: int, **kwargs: Any) -> PodCluster:
        """Re-attach to the user's running cluster ``request_id`` (not cancelled on close)."""
        return cls(request_id=request_id, **kwargs)

    @classmethod
    def from_name(cls, name: str) -> PodCluster:
        """Re-attach by :attr:`name` (``podgrid-<id>``), as dask-ctl does."""
        return cls.from_id(int(name.rsplit("-", 1)[-1]))

    # -- scaling --------------------------------------------------------------------------

    def _owner_client(self) -> OwnerClient:
        if self._owner is None:
            raise RuntimeError("the cluster is not started")
        return self._owner

    async def _scale(self, n: int) -> ScalingStatus:
        self.scaling = await self._owner_client().scale(n)
        self._say(f"scale({n}): the broker now asks for {self.scaling.needed} more")
        return self.scaling

    def scale(self, n: int) -> Any:
        """Keep ``n`` workers: the broker publishes the need, or retires the surplus gracefully."""
        return self.sync(self._scale, n)

    async def _adapt(self, minimum: int, maximum: int) -> ScalingStatus:
        self.scaling = await self._owner_client().adapt(minimum, maximum)
        self._say(f"adapt(minimum={minimum}, maximum={maximum}) runs on the broker")
        return self.scaling

    def adapt(
        self, Adaptive: Any = None, *, minimum: int = 0, maximum: int | None = None, **_: Any
    ) -> Any:
        """Adaptive scaling between ``minimum`` and ``maximum``, run by the broker.

        It goes on when this process ends. Dask's other ``Adaptive`` options are not used:
        the broker follows the scheduler's own ``adaptive_target``.
        """
        if maximum is None:
            maximum = self._request.max_workers if self._request is not None else max(minimum, 1)
        return self.sync(self._adapt, minimum, maximum)

    def _scaling_status(self) -> str:
        s = self.scaling
        if s is None:
            return super()._scaling_status()  # type: ignore[no-any-return]
        mode = {"request": "Request", "manual": "Manual", "adaptive": "Adaptive"}[s.mode]
        bounds = f" ({s.minimum} to {s.maximum})" if s.mode == "adaptive" else ""
        sites = ", ".join(f"{k}: {v}" for k, v in sorted(s.sites.items()))
        return f"""
        <table>
            <tr><td style="text-align: left;">Scaling mode: {mode}{bounds}</td></tr>
            <tr><td style="text-align: left;">Workers: {s.workers} / {s.target}</td></tr>
            <tr><td style="text-align: left;">Attaching: {s.pending}, asked: {s.needed}</td></tr>
            <tr><td style="text-align: left;">Sites: {sites or "none yet"}</td></tr>
        </table>
        """

    # -- waiting --------------------------------------------------------------------------

    async def _wait_for_workers(
        self,
        n_workers: int = 0,
        timeout: float | None = None,  # noqa: ASYNC109 - Cluster's own signature
    ) -> None:
        """Wait for ``n_workers`` running workers, logging each change (sites, pending, asked)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + float(timeout)
        last = ""
        while True:
            comm: Any = self.scheduler_comm
            self.scheduler_info = SchedulerInfo(await comm.identity())
            running = sum(
                1 for w in self.scheduler_info["workers"].values() if w["status"] == "running"
            )
            with contextlib.suppress(CallFailed):
                self.scaling = await self._owner_client().scaling()
            line = self._wait_line(running, n_workers)
            if line != last:
                self._say(line)
                last = line
            if running >= n_workers:
                return
            if deadline is not None and loop.time() > deadline:
                raise WorkerStartTimeoutError(running, n_workers, float(timeout or 0))
            await asyncio.sleep(WAIT_POLL_S)

    def _wait_line(self, running: int, wanted: int) -> str:
        s = self.scaling
        if s is None:
            return f"{running}/{wanted} workers"
        sites = ", ".join(f"{k}: {v}" for k, v in sorted(s.sites.items()))
        return (
            f"{running}/{wanted} workers" + (f" ({sites})" if sites else "")
            + f", {s.pending} attaching, {s.needed} asked of the grid's agents"
        )  # fmt: skip

    # -- the rest of the Cluster interface ------------------------------------------------

    @property
    def dashboard_link(self) -> str:
        """The owner's dashboard: open it with the owner's client certificate."""
        info = self.connection_info
        return "" if info is None or info.dashboard_link is None else info.dashboard_link

    async def _close(self) -> None:
        if self.status == Status.closed:
            return
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh_task
        await super()._close()
        if self._owner is not None:
            await self._owner.close()
        if self._grid is not None:
            if self.shutdown_on_close and self.request_id is not None:
                with contextlib.suppress(Conflict):  # already final
                    await self._grid.cancel(self.request_id)
                    self._say(f"request {self.request_id} cancelled")
            await self._grid.__aexit__(None, None, None)

    def close(self, timeout: float | None = None) -> Any:
        """Cancel the request (``shutdown_on_close``) and close the connections."""
        result = super().close(timeout)
        if not self.asynchronous:
            self._loop_runner.stop()
        return result


def list_clusters(
    url: str | None = None, token: str | None = None, *, state_dir: Path | None = None
) -> list[RequestDetail]:
    """The user's active requests (clusters), oldest first; works inside a running loop too."""
    import concurrent.futures

    async def active() -> list[RequestDetail]:
        async with PodGrid.connect(
            url or dask.config.get("podgrid.url", None),
            token or dask.config.get("podgrid.token", None),
            state_dir=state_dir,
        ) as grid:
            return [await grid.request(r.id) for r in await grid.requests()]

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, active()).result()
