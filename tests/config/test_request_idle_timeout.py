"""``idle_timeout`` left out is None (the site's podServerIdleTimeout), in every format.

A set value is kept as before, and None survives the JSON round trip the master queue relies on
(it stores the request as ``model_dump`` JSON and validates it back).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from podgrid.cli import main
from podgrid.config import RequestError, ServerRequest, parse_request
from podgrid.config.request import RequestFormat

WITHOUT: dict[RequestFormat, str] = {
    "toml": '[server]\nname = "x"\nmin_workers = 2\n',
    "jdl": 'Name = "x"; MinWorkers = 2;\n',
    "json": '{"name": "x", "min_workers": 2}\n',
}
WITH: dict[RequestFormat, str] = {
    "toml": '[server]\nname = "x"\nmin_workers = 2\nidle_timeout = "45m"\n',
    "jdl": 'Name = "x"; MinWorkers = 2; IdleTimeout = "45m";\n',
    "json": '{"name": "x", "min_workers": 2, "idle_timeout_s": 2700}\n',
}


@pytest.mark.parametrize("fmt", ["toml", "jdl", "json"])
def test_no_idle_timeout_is_none(fmt: RequestFormat) -> None:
    assert parse_request(WITHOUT[fmt], fmt=fmt).idle_timeout_s is None


@pytest.mark.parametrize("fmt", ["toml", "jdl", "json"])
def test_an_idle_timeout_keeps_its_value(fmt: RequestFormat) -> None:
    assert parse_request(WITH[fmt], fmt=fmt).idle_timeout_s == 2700


def test_json_null_is_the_site_default_too() -> None:
    assert parse_request('{"name": "x", "idle_timeout_s": null}').idle_timeout_s is None


@pytest.mark.parametrize("text", [WITHOUT["toml"], WITH["toml"]])
def test_the_stored_json_round_trips(text: str) -> None:
    request = parse_request(text)
    assert ServerRequest.model_validate_json(request.model_dump_json()) == request
    assert ServerRequest.model_validate(request.model_dump(mode="json")) == request
    assert parse_request(request.model_dump_json(), fmt="json") == request


def test_an_explicit_zero_is_still_refused() -> None:
    # Durations a user writes are positive; "never" is only for the operator (0 in LDAP).
    with pytest.raises(RequestError) as info:
        parse_request('[server]\nname = "x"\nidle_timeout = 0\n')
    assert info.value.field == "server.idle_timeout"


def test_check_shows_the_site_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "req.toml"
    path.write_text(WITHOUT["toml"])
    assert main(["request", "check", str(path)]) == 0
    assert "site default (podServerIdleTimeout)" in capsys.readouterr().out
    path.write_text(WITH["toml"])
    assert main(["request", "check", str(path)]) == 0
    assert "45m (2700 s)" in capsys.readouterr().out
