"""Endpoint discovery: flags > env > ``podgrid up``'s endpoints.json > the user's client.toml."""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from podgrid.cli import main
from podgrid.endpoints import (
    EndpointError,
    EndpointNotFound,
    LocalGridEndpoints,
    discover,
    user_config_file,
)


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    """A state dir and a config home, both empty."""
    state = tmp_path / "state" / "podgrid"
    config_home = tmp_path / "config"
    return {"state": state, "config_home": config_home}


def _env(places: dict[str, Path], **extra: str) -> dict[str, str]:
    return {
        "XDG_STATE_HOME": str(places["state"].parent),
        "XDG_CONFIG_HOME": str(places["config_home"]),
        **extra,
    }


def _write_endpoints(state: Path, url: str, token: str) -> None:
    LocalGridEndpoints(
        masterqueue_url=url,
        registry_url="http://127.0.0.1:9/",
        dashboard_url="http://127.0.0.1:9/",
        user_token=token,
        admin_token="admin-secret",
    ).write(state / "endpoints.json")


def _write_client_toml(config_home: Path, url: str, token: str) -> None:
    path = config_home / "podgrid" / "client.toml"
    path.parent.mkdir(parents=True)
    path.write_text(f'url = "{url}"\ntoken = "{token}"\n')


def test_precedence_flags_env_endpoints_file_config_file(places: dict[str, Path]) -> None:
    _write_client_toml(places["config_home"], "http://config:1", "tok-config")
    env = _env(places)
    found = discover(env=env)
    assert (found.url, found.token) == ("http://config:1", "tok-config")
    assert found.url_source.endswith("client.toml (url)")

    _write_endpoints(places["state"], "http://up:2/", "tok-up")
    found = discover(env=env)
    assert (found.url, found.token) == ("http://up:2", "tok-up")
    assert found.token_source.endswith("endpoints.json (user_token)")
    assert found.registry_url == "http://127.0.0.1:9/"

    env = _env(places, PODGRID_URL="http://env:3", PODGRID_TOKEN="tok-env")
    found = discover(env=env)
    assert (found.url, found.token) == ("http://env:3", "tok-env")
    assert (found.url_source, found.token_source) == ("$PODGRID_URL", "$PODGRID_TOKEN")

    found = discover("http://flag:4", "tok-flag", env=env)
    assert (found.url, found.token) == ("http://flag:4", "tok-flag")
    assert (found.url_source, found.token_source) == ("--url", "--token")


def test_each_value_is_looked_up_on_its_own(places: dict[str, Path]) -> None:
    _write_endpoints(places["state"], "http://up:2", "tok-up")
    found = discover(env=_env(places, PODGRID_TOKEN="tok-env"))
    assert (found.url, found.token) == ("http://up:2", "tok-env")


def test_explicit_state_dir_is_used(places: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    _write_endpoints(other, "http://other:5", "tok-other")
    found = discover(env=_env(places), state_dir=other)
    assert (found.url, found.token) == ("http://other:5", "tok-other")


def test_nothing_found_names_every_place(places: dict[str, Path]) -> None:
    with pytest.raises(EndpointNotFound) as info:
        discover(env=_env(places))
    message = str(info.value)
    assert message.startswith("no master-queue URL found")
    for place in ("--url", "$PODGRID_URL", "endpoints.json", "client.toml"):
        assert place in message
    assert str(places["state"] / "endpoints.json") in message
    assert str(user_config_file(_env(places))) in message


def test_a_url_that_is_not_http_is_refused_naming_its_source(places: dict[str, Path]) -> None:
    with pytest.raises(EndpointError, match=r"^\$PODGRID_URL: expected an http:// or https:// URL"):
        discover(env=_env(places, PODGRID_URL="masterqueue:8886", PODGRID_TOKEN="t"))


def test_token_missing_is_named(places: dict[str, Path]) -> None:
    with pytest.raises(EndpointNotFound, match=r"no master-queue token found .*\$PODGRID_TOKEN"):
        discover(env=_env(places, PODGRID_URL="http://env:3"))


def test_malformed_files_are_reported_with_their_path(places: dict[str, Path]) -> None:
    places["state"].mkdir(parents=True)
    (places["state"] / "endpoints.json").write_text("{not json")
    with pytest.raises(EndpointError, match=r"endpoints\.json: not a valid endpoints file"):
        discover(env=_env(places))
    (places["state"] / "endpoints.json").unlink()
    _write_client_toml(places["config_home"], "http://config:1", "tok")
    (places["config_home"] / "podgrid" / "client.toml").write_text("url = 5\n")
    with pytest.raises(EndpointError, match=r"client.toml: url: expected a string, got 5"):
        discover(env=_env(places))


def test_endpoints_file_is_private_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "s" / "endpoints.json"
    written = LocalGridEndpoints(masterqueue_url="http://a:1", user_token="u", admin_token="a")
    written.write(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert LocalGridEndpoints.read(path) == written


def test_cli_without_any_endpoint_exits_1_naming_the_places(
    reset_logging: None,
    places: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in _env(places).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PODGRID_URL", raising=False)
    monkeypatch.delenv("PODGRID_TOKEN", raising=False)
    assert main(["ls"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "podgrid: error: no master-queue URL found (looked at: --url; $PODGRID_URL"
    )
    assert err.count("\n") == 1


@pytest.fixture
def reset_logging() -> Iterator[None]:
    """``main`` binds logging to the captured stderr: undo that afterwards."""
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []
