"""What the user commands print, from records alone (no server needed)."""

from __future__ import annotations

import ast
import io
import ssl
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from rich.console import Console

from podgrid import _cmd_render as render
from podgrid.protocol import ConnectionInfo, RequestDetail, RequestEvent, RequestState, WorkerInfo
from tests.masterqueue.factories import request

AT = datetime(2026, 11, 22, 10, 30, 5, tzinfo=UTC)


def _detail(**kw: object) -> RequestDetail:
    parsed, _ = request(min_workers=2, max_workers=4)
    values: dict[str, object] = {
        "id": 7,
        "owner": "alice",
        "name": parsed.name,
        "state": RequestState.READY,
        "reason": None,
        "request": parsed,
        "created_at": AT,
        "updated_at": AT,
        "workers": [
            WorkerInfo(
                name="w-1",
                host="wn017.cern.ch",
                site="CERN",
                agent_id="a-1",
                attached_at=AT,
                startup_s=1.5,
            ),
            WorkerInfo(name="w-2", host="wn4.gsi.de", site="GSI", agent_id="a-2", attached_at=AT),
        ],
        "worker_count": 2,
        "timeline": [RequestEvent(state=RequestState.WAITING, reason=None, at=AT)],
    }
    values.update(kw)
    return RequestDetail.model_validate(values)


def _text(renderable: object) -> str:
    out = Console(width=200, file=io.StringIO())
    out.print(renderable)
    assert isinstance(out.file, io.StringIO)
    return out.file.getvalue()


def test_ls_table_shows_state_and_workers_against_bounds() -> None:
    text = _text(render.requests_table([_detail(), _detail(id=8, state="FAILED", reason="boom")]))
    assert "dimuon-scan" in text
    assert "2 (min 2, max 4)" in text
    assert "2026-11-22 10:30:05" in text
    assert "FAILED" in text
    assert "boom" in text


def test_worker_list_has_host_site_and_startup_time() -> None:
    text = _text(render.workers_table(_detail().workers))
    assert "wn017.cern.ch" in text
    assert "CERN" in text
    assert "1.50 s" in text
    assert "wn4.gsi.de" in text


def test_state_text_carries_the_reason() -> None:
    assert render.state_text(_detail()) == "READY"
    failed = _detail(state="FAILED", reason="broker exited with 1")
    assert render.state_text(failed) == "FAILED: broker exited with 1"


def test_request_table_shows_the_timeline() -> None:
    text = _text(render.request_table(_detail()))
    assert "request 7" in text
    assert "WAITING" in text
    assert "ROOT::v6-32" in text


def test_connection_snippet_is_python_that_builds_a_working_tls_context(tmp_path: Path) -> None:
    from distributed.security import Security

    tls = Security.temporary()  # a real CA, certificate and key, as a broker would make
    info = ConnectionInfo(
        address="tls://127.0.0.1:8786",
        tls_ca=tls.tls_ca_file,
        tls_client_cert=tls.tls_client_cert,
        tls_client_key=tls.tls_client_key,
    )
    key_file = tmp_path / "owner.key"  # Security.temporary keeps PEM text: write it out
    key_file.write_text(str(tls.tls_client_key))
    snippet = info.snippet(str(key_file))
    assert "PRIVATE KEY" not in snippet  # the key by its file name, never its text
    ast.parse(snippet)
    assert 'Client("tls://127.0.0.1:8786", security=security)' in snippet
    namespace: dict[str, object] = {}
    setup = snippet[: snippet.index("client = Client(")]  # everything but the connect itself
    exec(setup, namespace)
    security = namespace["security"]
    assert isinstance(security, Security)
    context = security.get_connection_args("client")["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_connection_without_tls_and_without_address() -> None:
    info = ConnectionInfo(address="tcp://10.0.0.1:8786")
    assert info.snippet().endswith('client = Client("tcp://10.0.0.1:8786")\n')
    assert info.security() is None
    with pytest.raises(ValidationError, match="address"):
        ConnectionInfo.model_validate({"tls_ca": "x"})
    with pytest.raises(ValidationError, match="scheduler"):  # one spelling: no key guessing
        ConnectionInfo.model_validate({"scheduler": "tcp://10.0.0.1:8786"})
