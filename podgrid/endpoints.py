"""Where the master queue is and which token to use: endpoint discovery in one place.

Each value (the master-queue URL and the token) is looked up on its own, first hit wins:

1. explicit arguments (``--url`` / ``--token``, or ``PodGrid.connect(url=..., token=...)``);
2. the environment: ``PODGRID_URL`` / ``PODGRID_TOKEN``;
3. ``<state dir>/endpoints.json``, written by ``podgrid up`` (keys ``masterqueue_url``,
   ``registry_url``, ``dashboard_url``, ``user_token``, ``admin_token``, ``ca_file``; the user
   token is used);
4. the user's config file ``$XDG_CONFIG_HOME/podgrid/client.toml`` (``~/.config`` when unset)
   with ``url = "..."``, ``token = "..."`` and ``ca_file = "..."``.

The CA file (``PODGRID_CA_FILE``, then those files) is the PEM bundle that signed the master
queue's HTTPS certificate when no system CA did; ``podgrid up`` makes one per run.

When a value is found nowhere, :class:`EndpointNotFound` names every place that was looked at.
The state dir is ``$XDG_STATE_HOME/podgrid`` or ``~/.local/state/podgrid``
(:func:`podgrid.config.runtime.default_state_dir`, shared with the services).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from podgrid.config import environment
from podgrid.config.runtime import default_state_dir, write_private_file
from podgrid.errors import PodGridError

__all__ = [
    "ENDPOINTS_FILE_NAME",
    "ENV_TOKEN",
    "ENV_URL",
    "Endpoint",
    "EndpointError",
    "EndpointNotFound",
    "LocalGridEndpoints",
    "default_state_dir",
    "discover",
    "user_config_file",
]

ENV_URL = environment.URL
ENV_TOKEN = environment.TOKEN
ENDPOINTS_FILE_NAME = "endpoints.json"
CLIENT_CONFIG_NAME = "client.toml"


class EndpointError(PodGridError):
    """The master queue's URL or the token could not be determined."""


class EndpointNotFound(EndpointError):
    """No source gave a value; ``looked_at`` lists every place tried, in order."""

    def __init__(self, what: str, looked_at: list[str]) -> None:
        places = "; ".join(looked_at)
        super().__init__(f"no master-queue {what} found (looked at: {places})")
        self.what = what
        self.looked_at = looked_at


class LocalGridEndpoints(BaseModel):
    """The content of ``<state dir>/endpoints.json`` (what ``podgrid up`` writes)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    masterqueue_url: str | None = None
    registry_url: str | None = None
    dashboard_url: str | None = None
    user_token: str | None = None
    admin_token: str | None = None
    ca_file: str | None = None

    @classmethod
    def read(cls, path: Path) -> LocalGridEndpoints | None:
        """The file's content; ``None`` when it does not exist. Raises on a malformed file."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as e:
            raise EndpointError(f"{path}: cannot read: {e}") from e
        try:
            return cls.model_validate_json(text)
        except ValidationError as e:
            raise EndpointError(f"{path}: not a valid endpoints file: {_first_error(e)}") from e

    def write(self, path: Path) -> None:
        """Write the file with mode 0600 (it holds tokens), replacing any previous one."""
        write_private_file(path, self.model_dump_json(indent=2))


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A master-queue URL and a bearer token, with where each one came from."""

    url: str
    token: str
    url_source: str
    token_source: str
    registry_url: str | None = None
    dashboard_url: str | None = None
    ca_file: Path | None = None


def user_config_file(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/podgrid/client.toml`` (``~/.config/podgrid/client.toml`` when unset)."""
    environ = os.environ if env is None else env
    base = environ.get("XDG_CONFIG_HOME")
    root = Path(base) if base else Path.home() / ".config"
    return root / "podgrid" / CLIENT_CONFIG_NAME


def discover(
    url: str | None = None,
    token: str | None = None,
    *,
    state_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Endpoint:
    """Find the master-queue URL and token (module docstring: the order of the sources).

    ``env`` defaults to ``os.environ``; ``state_dir`` to the user's state dir; ``config_file``
    to :func:`user_config_file`. Raises :class:`EndpointNotFound` naming every place looked at.
    """
    environ = os.environ if env is None else env
    endpoints_path = (state_dir or _state_dir(environ)) / ENDPOINTS_FILE_NAME
    config_path = config_file or user_config_file(environ)
    local = LocalGridEndpoints.read(endpoints_path)
    user = _read_user_config(config_path)
    urls = [
        ("--url", url),
        (f"${ENV_URL}", environ.get(ENV_URL)),
        (f"{endpoints_path} (masterqueue_url)", local.masterqueue_url if local else None),
        (f"{config_path} (url)", user.get("url")),
    ]
    tokens = [
        ("--token", token),
        (f"${ENV_TOKEN}", environ.get(ENV_TOKEN)),
        (f"{endpoints_path} (user_token)", local.user_token if local else None),
        (f"{config_path} (token)", user.get("token")),
    ]
    url_source, found_url = _first("URL", urls)
    if not found_url.startswith(("http://", "https://")):
        raise EndpointError(f"{url_source}: expected an http:// or https:// URL, got {found_url!r}")
    token_source, found_token = _first("token", tokens)
    cas = [environ.get(environment.CA_FILE), local.ca_file if local else None, user.get("ca_file")]
    ca_file = next((Path(c) for c in cas if c is not None and c.strip()), None)
    return Endpoint(
        url=found_url.rstrip("/"),
        token=found_token,
        url_source=url_source,
        token_source=token_source,
        registry_url=local.registry_url if local else None,
        dashboard_url=local.dashboard_url if local else None,
        ca_file=ca_file,
    )


def _state_dir(environ: Mapping[str, str]) -> Path:
    if environ is os.environ:
        return default_state_dir()
    base = environ.get("XDG_STATE_HOME")
    root = Path(base) if base else Path.home() / ".local" / "state"
    return root / "podgrid"


def _first(what: str, candidates: list[tuple[str, str | None]]) -> tuple[str, str]:
    for source, value in candidates:
        if value is not None and value.strip():
            return source, value.strip()
    raise EndpointNotFound(what, [source for source, _ in candidates])


def _read_user_config(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise EndpointError(f"{path}: cannot read: {e}") from e
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise EndpointError(f"{path}: not valid TOML: {e}") from e
    result: dict[str, str] = {}
    for key in ("url", "token", "ca_file"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise EndpointError(f"{path}: {key}: expected a string, got {value!r}")
        result[key] = value
    return result


def _first_error(e: ValidationError) -> str:
    err = e.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" if loc else str(err["msg"])
