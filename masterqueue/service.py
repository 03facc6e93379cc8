"""The master-queue service: ``create_app(settings, store=None)`` and ``run_masterqueue``.

Resources open in ``cleanup_ctx`` in this order and close in reverse: the configuration
(registry URL, master hosts), the store (opened from ``settings.db_url`` unless one is injected;
migrations run every time, they are idempotent; a first start on an empty database creates the
admin token and writes it to ``<state dir>/admin.token``, mode 0600, never logged), then the
background loops (launcher, sweeps). Shutdown: stop accepting, finish in-flight answers, stop
the loops, close the store. Brokers are separate processes and keep running when the master
queue stops (they re-report to the next master queue on the same database) unless
``stop_brokers_on_exit`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web
from sqlalchemy.engine import make_url

from podgrid.config.hierarchy import default_ldif, resolve
from podgrid.config.runtime import write_private_file
from podgrid.errors import PodGridError
from podgrid.https import listen_tls
from podgrid.masterqueue import keys, views, views_jobs, views_servers
from podgrid.masterqueue.broker_ca import load_broker_ca
from podgrid.masterqueue.http_errors import masterqueue_middleware
from podgrid.masterqueue.launcher import Launcher, LocalLauncher
from podgrid.masterqueue.launcher_slurm import SlurmLauncher
from podgrid.masterqueue.launcher_ssh import SshLauncher
from podgrid.masterqueue.loops import LaunchLoop, QueueDepthPublisher, SweepLoop, run_every
from podgrid.masterqueue.metrics import MasterQueueMetrics
from podgrid.masterqueue.settings import MasterQueueSettings
from podgrid.masterqueue.signing import load_sign_key
from podgrid.masterqueue.store import Store
from podgrid.masterqueue.token_cache import TokenCache
from podgrid.monitoring.publish_target import open_publisher
from podgrid.web import start_site

log = structlog.get_logger("podgrid.masterqueue")

SHUTDOWN_TIMEOUT_S = 5.0
ADMIN_TOKEN_NAME = "admin"  # noqa: S105 - the token's name, not a secret
# The registry URL brokers are given (from the settings or the config hierarchy).
_REGISTRY_URL = web.AppKey("registry_url", str)
# The master hosts the ssh launcher uses (from the settings or podMasterHosts).
_MASTER_HOSTS = web.AppKey("master_hosts", list[str])
CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


class LauncherUnavailable(PodGridError, RuntimeError):
    """The configured launcher cannot run here."""


async def _config(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    registry_url, master_hosts = settings.registry_url, settings.master_hosts
    if registry_url is None or (master_hosts is None and settings.launcher == "ssh"):
        source = settings.config_source or default_ldif()
        resolved = (await asyncio.to_thread(resolve, source)).settings
        registry_url = registry_url or str(resolved.registry_url)
        master_hosts = master_hosts or list(resolved.master_hosts)
    app[_REGISTRY_URL] = registry_url
    app[_MASTER_HOSTS] = list(master_hosts or [])
    yield


async def bootstrap_admin(store: Store, settings: MasterQueueSettings) -> str | None:
    """On an empty database: create the admin token and write it (0600); else None."""
    if await store.has_tokens():
        return None
    token = await store.create_token("admin", ADMIN_TOKEN_NAME)
    write_private_file(settings.admin_token_path, token + "\n")
    log.info("masterqueue.admin_token_created", path=str(settings.admin_token_path))
    return token


def _store_ctx(injected: Store | None) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[keys.SETTINGS]
        if settings.db_url.startswith("sqlite") and injected is None:
            settings.state_dir.mkdir(parents=True, exist_ok=True)
        store = (
            injected
            if injected is not None
            else await Store.connect(settings.db_url, pool_size=settings.db_pool_size)
        )
        try:
            await store.migrate()
            app[keys.STORE] = store
            app[keys.TOKENS] = TokenCache(store, settings.token_cache_ttl_s)
            app[keys.RUNTIME].admin_token = await bootstrap_admin(store, settings)
            yield
        finally:
            if injected is None:
                await store.close()

    return ctx


def make_launcher(settings: MasterQueueSettings, master_hosts: list[str]) -> Launcher | None:
    """The launcher the settings ask for (None for ``none``)."""
    if settings.launcher == "local":
        host = settings.master_host or socket.gethostname()
        sign_key = load_sign_key(settings.sign_key_path)
        return LocalLauncher(
            settings.broker_command,
            settings.broker_log_dir,
            host,
            sign_key=sign_key,
            warm=settings.warm_brokers,
        )
    if settings.launcher == "ssh":
        if not master_hosts:
            raise LauncherUnavailable("the ssh launcher needs master hosts (podMasterHosts)")
        return SshLauncher(
            master_hosts,
            settings.broker_command,
            settings.ssh_log_dir,
            port=settings.ssh_port,
            username=settings.ssh_user,
            client_keys=settings.ssh_client_keys,
            known_hosts=settings.ssh_known_hosts,
            sign_key=load_sign_key(settings.sign_key_path),
        )
    if settings.launcher == "slurm":
        return SlurmLauncher(
            settings.broker_command,
            settings.broker_log_dir,
            partition=settings.slurm_partition,
            account=settings.slurm_account,
            directives=settings.slurm_options,
            sign_key=load_sign_key(settings.sign_key_path),
        )
    return None


async def _loops(app: web.Application) -> AsyncIterator[None]:
    settings, store, metrics = app[keys.SETTINGS], app[keys.STORE], app[keys.METRICS]
    runtime = app[keys.RUNTIME]
    tasks: list[asyncio.Task[None]] = []
    sweep = SweepLoop(
        store,
        metrics,
        heartbeat_timeout_s=settings.broker_heartbeat_timeout_s,
        retention_s=settings.retention_s,
        on_requests_swept=runtime.wake_launcher.set,
    )
    tasks.append(
        asyncio.create_task(
            run_every("sweep", sweep.tick, settings.sweep_interval_s, metrics), name="mq-sweep"
        )
    )
    publisher = open_publisher(
        settings.registry_publish or app[_REGISTRY_URL],
        settings.registry_token,
        settings.apmon_password,
    )
    if settings.queue_publish_interval_s is not None:
        depth = QueueDepthPublisher(store, publisher)
        tick = run_every("queue_depth", depth.tick, settings.queue_publish_interval_s, metrics)
        tasks.append(asyncio.create_task(tick, name="mq-queue-depth"))
    launcher = make_launcher(settings, app[_MASTER_HOSTS])
    launch: LaunchLoop | None = None
    if launcher is not None:
        launch = LaunchLoop(
            store,
            launcher,
            metrics,
            url=lambda: settings.public_url or runtime.url,
            registry_url=app[_REGISTRY_URL],
            stop_grace_s=settings.broker_stop_grace_s,
            apmon_password=settings.apmon_password,
            ca_file=settings.ca_file,
        )
        app[keys.LAUNCH_LOOP] = launch
        tick = run_every(
            "launcher", launch.tick, settings.launcher_interval_s, metrics, runtime.wake_launcher
        )
        tasks.append(asyncio.create_task(tick, name="mq-launcher"))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if launch is not None and settings.stop_brokers_on_exit:
            await launch.stop_all()
        if launcher is not None:
            await launcher.close()
        await publisher.close()


def create_app(settings: MasterQueueSettings, store: Store | None = None) -> web.Application:
    """Build the master-queue app; nothing is opened until the app starts."""
    app = web.Application(
        middlewares=[masterqueue_middleware()], client_max_size=settings.max_body_bytes
    )
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = MasterQueueMetrics()
    app[keys.RUNTIME] = keys.Runtime()
    app[keys.BROKER_CA] = load_broker_ca(settings.broker_ca_path)
    app.cleanup_ctx.append(_config)
    app.cleanup_ctx.append(_store_ctx(store))
    app.cleanup_ctx.append(_loops)
    r = app.router
    r.add_post("/v1/requests", views.submit_request)
    r.add_get("/v1/requests", views.list_requests)
    r.add_get("/v1/requests/{id}", views.get_request)
    r.add_get("/v1/requests/{id}/connection", views.get_connection)
    r.add_post("/v1/requests/{id}/connection", views.post_connection)
    r.add_delete("/v1/requests/{id}", views.cancel_request)
    r.add_post("/v1/requests/{id}/state", views.broker_state)
    r.add_post("/v1/requests/{id}/certificate", views_servers.broker_certificate)
    r.add_post("/v1/jobs", views_jobs.submit_job)
    r.add_get("/v1/jobs", views_jobs.list_jobs)
    r.add_get("/v1/jobs/{id}", views_jobs.get_job)
    r.add_delete("/v1/jobs/{id}", views_jobs.kill_job)
    r.add_post("/v1/jobs/{id}/heartbeat", views_jobs.heartbeat_job)
    r.add_post("/v1/jobs/{id}/finish", views_jobs.finish_job)
    r.add_post("/v1/jobs/{id}/release", views_jobs.release_job)
    r.add_post("/v1/match", views_jobs.match)
    r.add_get("/v1/servers", views_servers.list_servers)
    r.add_post("/v1/tokens", views.create_token)
    r.add_get("/v1/tokens", views.list_tokens)
    r.add_delete("/v1/tokens/{id}", views.revoke_token)
    r.add_get("/v1/whoami", views.whoami)
    r.add_get("/healthz", views.healthz)
    r.add_get("/metrics", views.metrics)
    return app


@dataclass(frozen=True, slots=True)
class RunningMasterQueue:
    """A started master queue: its URL, its app, and the admin token if it created one."""

    url: str
    app: web.Application
    admin_token: str | None

    @property
    def store(self) -> Store:
        """The app's store (for tests and embedding)."""
        return self.app[keys.STORE]


@contextlib.asynccontextmanager
async def run_masterqueue(
    settings: MasterQueueSettings, store: Store | None = None
) -> AsyncIterator[RunningMasterQueue]:
    """Serve the master queue on ``settings.http_host:http_port`` (0: a free port) until exit."""
    context = listen_tls(
        settings.http_host,
        settings.tls_cert,
        settings.tls_key,
        insecure_http=settings.insecure_http,
    )
    app = create_app(settings, store)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        url = await start_site(runner, settings.http_host, settings.http_port, context)
        runtime = app[keys.RUNTIME]
        runtime.url = url
        runtime.wake_launcher.set()
        log.info("masterqueue.started", url=url, db=_safe_db(settings.db_url))
        yield RunningMasterQueue(url, app, runtime.admin_token)
    finally:
        await runner.cleanup()
        log.info("masterqueue.stopped")


def _safe_db(url: str) -> str:
    """The database URL without its password (for logs)."""
    return make_url(url).render_as_string(hide_password=True)
