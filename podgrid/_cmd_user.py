"""The user's request commands: ``podgrid submit``, ``info``, ``ls`` and ``cancel``.

``submit FILE [--wait]`` validates the file locally (errors name line and field, exit 2), sends
it, and with ``--wait`` shows a progress bar of attached workers until READY/FULL, then prints
the connection snippet (a final state or the timeout: the reason, exit 1). ``info`` follows
pod-info's flags: ``-c`` connection snippet, ``-n`` worker count, ``-l`` workers, ``-s`` status;
``-d`` the owner's dashboard URL, with the owner's certificate written beside its key
(``keys/request-<id>.pem``): a browser or ``curl --cert … --key …`` presents both.

The connection snippet's private key: ``info -c`` and ``submit --wait`` make the owner's key
here (EC P-256), keep it in ``<state dir>/keys/request-<id>.key`` (mode 0600; reused, so every
snippet printed for the request stays valid) and send only a CSR. The snippet embeds the
public CA and certificate and names the key *file*: printed, pasted or logged code never
carries a private key.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from podgrid import _cmd_render as render
from podgrid._cmd_args import positive_seconds
from podgrid._cmd_common import CommandFailed, endpoint_flags, json_flag, print_json, run
from podgrid.client import ConnectionInfo, PodGrid, RequestFailed, WaitTimeout
from podgrid.config.runtime import default_state_dir, write_private_file
from podgrid.protocol import RequestDetail, RequestRecord
from podgrid.protocol.csr import new_private_key

DEFAULT_WAIT_POLL_S = 1.0  # s between two polls while waiting


def register(sub: Any) -> None:
    """Add ``submit``, ``info``, ``ls`` and ``cancel`` to the ``podgrid`` command tree."""
    common = [endpoint_flags(), json_flag()]
    submit = sub.add_parser("submit", parents=common, help="submit a server request")
    submit.add_argument("file", metavar="FILE", help="a .toml, .jdl or .json request file")
    submit.add_argument("--wait", action="store_true", help="wait until READY, then connect info")
    submit.add_argument(
        "--timeout",
        type=positive_seconds,
        default=None,
        metavar="S",
        help="give up waiting after S seconds (exit 1)",
    )
    submit.add_argument(
        "--poll",
        type=positive_seconds,
        default=DEFAULT_WAIT_POLL_S,
        metavar="S",
        help="seconds between two polls while waiting (default: %(default)s)",
    )
    submit.set_defaults(handler=lambda args: run(args, submit_command))

    info = sub.add_parser("info", parents=common, help="a request's state, workers, connection")
    info.add_argument(
        "id",
        metavar="ID",
        nargs="?",
        type=_request_id,
        help="request id (default: your latest active request)",
    )
    info.add_argument(
        "-c",
        dest="connection",
        action="store_true",
        help="connection string: Python code for a distributed.Client",
    )
    info.add_argument("-n", dest="count", action="store_true", help="number of attached workers")
    info.add_argument(
        "-l", dest="workers", action="store_true", help="workers with host, site and startup time"
    )
    info.add_argument("-s", dest="status", action="store_true", help="the request's status")
    info.add_argument(
        "-d",
        dest="dashboard",
        action="store_true",
        help="the owner's dashboard URL and the client certificate and key that open it",
    )
    info.set_defaults(handler=lambda args: run(args, info_command))

    ls = sub.add_parser("ls", parents=common, help="list your requests")
    ls.add_argument("--all", action="store_true", help="include finished requests")
    ls.set_defaults(handler=lambda args: run(args, ls_command))

    cancel = sub.add_parser("cancel", parents=[endpoint_flags()], help="cancel a request")
    cancel.add_argument("id", metavar="ID", type=_request_id)
    cancel.set_defaults(handler=lambda args: run(args, cancel_command))


def _request_id(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(
            f"expected a request id (a whole number >= 1), got {text!r}"
        )
    return int(text)


async def submit_command(args: argparse.Namespace, grid: PodGrid) -> int:
    """``podgrid submit``: send the request; with ``--wait`` follow it to READY."""
    record = await grid.submit(args.file)
    if not args.wait:
        if args.json:
            print_json(record.model_dump(mode="json"))
        else:
            render.console().print(f"request {record.id} submitted ({record.state})")
        return 0
    if not args.json:
        render.console(stderr=True).print(f"request {record.id} submitted, waiting for workers")
    ready = await _wait(args, grid, record)
    key_file, info = await _connection(args, grid, ready.id)
    if args.json:
        print_json(
            {"request": ready.model_dump(mode="json"), "connection": _conn_json(info, key_file)}
        )
        return 0
    out = render.console()
    out.print(f"request {ready.id} is {ready.state}: {render.workers_text(ready)}")
    out.print(info.snippet(str(key_file)), markup=False, highlight=False)
    return 0


def key_path(state_dir: Path | None, request_id: int) -> Path:
    """Where the owner's private key for ``request_id`` lives (mode 0600)."""
    return (state_dir or default_state_dir()) / "keys" / f"request-{request_id}.key"


async def _connection(
    args: argparse.Namespace, grid: PodGrid, request_id: int
) -> tuple[Path, ConnectionInfo]:
    """The connection with a certificate for the owner's key file (made 0600 when missing)."""
    path = key_path(args.state_dir, request_id)
    try:
        key_pem = path.read_text(encoding="ascii")
    except FileNotFoundError:
        key_pem = new_private_key()
        write_private_file(path, key_pem)
    return path, await grid.connection(request_id, key_pem=key_pem)


def _conn_json(info: ConnectionInfo, key_file: Path) -> dict[str, Any]:
    return {
        **info.model_dump(mode="json"),
        "tls_client_key_file": str(key_file),
        "snippet": info.snippet(str(key_file)),
    }


async def _wait(args: argparse.Namespace, grid: PodGrid, record: RequestRecord) -> RequestDetail:
    try:
        if args.json:
            return await grid.wait_ready(
                record.id, timeout_s=args.timeout, poll_interval_s=args.poll
            )
        with render.WaitProgress() as bar:
            return await grid.wait_ready(
                record.id, progress=bar.update, timeout_s=args.timeout, poll_interval_s=args.poll
            )
    except (RequestFailed, WaitTimeout) as e:
        if args.json:
            print_json(e.record.model_dump(mode="json"))
        raise


async def _chosen_request(args: argparse.Namespace, grid: PodGrid) -> RequestDetail:
    if args.id is not None:
        return await grid.request(args.id)
    latest = await grid.latest_active()
    if latest is None:
        raise CommandFailed(
            "you have no active request; give a request id (see `podgrid ls --all`)"
        )
    return await grid.request(latest.id)


async def info_command(args: argparse.Namespace, grid: PodGrid) -> int:
    """``podgrid info``: the whole request, or the parts pod-info's flags ask for."""
    detail = await _chosen_request(args, grid)
    wanted = [args.status, args.count, args.workers, args.connection, args.dashboard]
    if not any(wanted):
        if args.json:
            print_json(detail.model_dump(mode="json"))
        else:
            render.console().print(render.request_table(detail))
        return 0
    want_info = args.connection or args.dashboard
    key_file, info = await _connection(args, grid, detail.id) if want_info else (None, None)
    cert_file = _dashboard_cert(info, key_file) if args.dashboard else None
    if args.json:
        print_json(_info_json(args, detail, info, key_file))
        return 0
    out = render.console()
    if args.status:
        out.print(render.state_text(detail), markup=False, highlight=False)
    if args.count:
        out.print(str(detail.worker_count), highlight=False)
    if args.workers:
        out.print(render.workers_table(detail.workers))
    if info is not None and args.connection:
        out.print(info.snippet(str(key_file)), markup=False, highlight=False)
    if info is not None and cert_file is not None:
        out.print(
            f"dashboard: {info.dashboard_link}\n"
            f"  opens with the owner's client certificate {cert_file} and key {key_file}",
            markup=False,
            highlight=False,
        )
    return 0


def _dashboard_cert(info: ConnectionInfo | None, key_file: Path | None) -> Path | None:
    """Write the owner's certificate beside its key (0600); the browser or curl presents both."""
    if info is None or key_file is None or info.tls_client_cert is None:
        return None
    path = key_file.with_suffix(".pem")
    write_private_file(path, info.tls_client_cert)
    return path


def _info_json(
    args: argparse.Namespace,
    detail: RequestDetail,
    info: ConnectionInfo | None,
    key_file: Path | None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"id": detail.id}
    if args.status:
        data.update(state=detail.state.value, reason=detail.reason)
    if args.count:
        data["worker_count"] = detail.worker_count
    if args.workers:
        data["workers"] = [w.model_dump(mode="json") for w in detail.workers]
    if info is not None and key_file is not None and args.connection:
        data["connection"] = _conn_json(info, key_file)
    if info is not None and key_file is not None and args.dashboard:
        data["dashboard"] = {
            "url": info.dashboard_link,
            "cert_file": str(key_file.with_suffix(".pem")),
            "key_file": str(key_file),
        }
    return data


async def ls_command(args: argparse.Namespace, grid: PodGrid) -> int:
    """``podgrid ls``: the user's active requests (all with ``--all``)."""
    records = await grid.requests(include_finished=args.all)
    if args.json:
        print_json([r.model_dump(mode="json") for r in records])
    elif not records:
        render.console().print("no requests" if args.all else "no active requests")
    else:
        render.console().print(render.requests_table(records))
    return 0


async def cancel_command(args: argparse.Namespace, grid: PodGrid) -> int:
    """``podgrid cancel ID``."""
    record = await grid.cancel(args.id)
    render.console().print(f"request {record.id} {record.state}")
    return 0
