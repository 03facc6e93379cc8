"""Server requests: what a user asks for, read from TOML, AliEn-style JDL or JSON.

One frozen pydantic model, :class:`ServerRequest`, and one entry point, :func:`parse_request`
(plus :func:`load_request` for files). Every problem is a :class:`RequestError` naming the
line and the field as the user wrote it (``server.max_workers`` in TOML, ``MaxWorkers`` in JDL).

Rules beyond the field types:

- ``max_workers`` defaults to ``min_workers`` (a fixed-size cluster unless asked otherwise);
- ``1 <= min_workers <= max_workers <= max_workers_cap`` (the operator's cap, passed by the
  caller as validation context; :data:`DEFAULT_MAX_WORKERS_CAP` when absent);
- ``ttl > max_wait`` (a cluster must outlive the wait for its workers);
- ``idle_timeout`` unset is ``None``: the broker then applies the site's
  ``podServerIdleTimeout`` (where ``0`` means never), so an operator's value reaches every
  request that did not choose one; a value the user sets must be positive, as every duration;
- unknown keys are errors, with a "did you mean" when a known key is close.

Durations and memory follow :mod:`podgrid.config.units`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from podgrid.config._request_readers import (
    RawRequest,
    did_you_mean,
    read_jdl,
    read_json,
    read_toml,
    sniff_format,
)
from podgrid.config.request_errors import RequestError, RequestIssue
from podgrid.config.units import format_duration, parse_duration_s, parse_memory_mb

RequestFormat = Literal["toml", "jdl", "json"]

MAX_REQUEST_FILE_BYTES = 1024 * 1024  # the master queue's default body limit
DEFAULT_MAX_WORKERS_CAP = 1000  # workers per request, unless the operator passes another cap
MAX_CORES = 1024  # cores per worker
DEFAULT_MAX_WAIT_S = 600  # seconds
DEFAULT_TTL_S = 4 * 3600  # seconds
DEFAULT_MEMORY_MB = 2048  # MiB

_SUFFIXES: dict[str, RequestFormat] = {".toml": "toml", ".jdl": "jdl", ".json": "json"}
_NAME_PATTERN = r"^[A-Za-z0-9._-]+$"

DurationS = Annotated[int, BeforeValidator(parse_duration_s)]
MemoryMiB = Annotated[int, BeforeValidator(parse_memory_mb)]
PackageName = Annotated[
    StrictStr, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@+/=-]+$")
]
SiteName = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=_NAME_PATTERN)]


class WorkerSpec(BaseModel):
    """What every worker slot must offer: cores, memory, software packages, allowed sites."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cores: StrictInt = Field(default=1, ge=1, le=MAX_CORES)
    memory_mb: MemoryMiB = DEFAULT_MEMORY_MB
    packages: tuple[PackageName, ...] = ()
    sites: tuple[SiteName, ...] = Field(default=(), description="empty: any site")


class ServerRequest(BaseModel):
    """A request for a private Dask cluster; see the module docstring for the rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=_NAME_PATTERN)]
    min_workers: StrictInt = Field(default=1, ge=1)
    max_workers: StrictInt = Field(default=1, ge=1)
    max_wait_s: DurationS = DEFAULT_MAX_WAIT_S
    ttl_s: DurationS = Field(default=DEFAULT_TTL_S, validate_default=True)
    idle_timeout_s: DurationS | None = Field(
        default=None, description="None: the site's podServerIdleTimeout"
    )
    adaptive: StrictBool = False
    engine: Literal["dask"] = "dask"
    worker: WorkerSpec = WorkerSpec()  # frozen, so one shared default is safe

    @model_validator(mode="before")
    @classmethod
    def _max_defaults_to_min(cls, data: Any, info: ValidationInfo) -> Any:
        # Only a valid min_workers is copied, so one mistake is reported once, on its own line.
        if isinstance(data, dict) and "max_workers" not in data:
            min_workers = data.get("min_workers")
            if type(min_workers) is int and 1 <= min_workers <= _cap(info):
                return {**data, "max_workers": min_workers}
        return data

    @field_validator("min_workers", "max_workers")
    @classmethod
    def _workers_within_bounds(cls, value: int, info: ValidationInfo) -> int:
        min_workers = info.data.get("min_workers")
        if info.field_name == "max_workers" and min_workers is not None and value < min_workers:
            raise ValueError(f"must be >= min_workers ({min_workers}), got {value}")
        cap = _cap(info)
        if value > cap:
            raise ValueError(f"must be <= the operator's cap of {cap} workers, got {value}")
        return value

    @field_validator("ttl_s")
    @classmethod
    def _ttl_outlives_wait(cls, value: int, info: ValidationInfo) -> int:
        max_wait_s = info.data.get("max_wait_s")
        if max_wait_s is not None and value <= max_wait_s:
            wait, ttl = format_duration(max_wait_s), format_duration(value)
            raise ValueError(f"must be longer than max_wait ({wait}), got {ttl}")
        return value


def _cap(info: ValidationInfo) -> int:
    context = info.context if isinstance(info.context, dict) else {}
    cap = context.get("max_workers_cap", DEFAULT_MAX_WORKERS_CAP)
    return int(cap)


def parse_request(
    text: str,
    *,
    fmt: RequestFormat | None = None,
    source: str = "<request>",
    max_workers_cap: int = DEFAULT_MAX_WORKERS_CAP,
) -> ServerRequest:
    """Parse and validate a request written as TOML, JDL or JSON (guessed when ``fmt`` is None).

    Raises :class:`RequestError` naming every problem with its line and field.
    """
    chosen = fmt or sniff_format(text)
    readers = {"toml": read_toml, "jdl": read_jdl, "json": read_json}
    if chosen not in readers:
        raise RequestError.single(source, f"unknown format {chosen!r}, expected toml, jdl or json")
    raw = readers[chosen](text, source)
    return validate_raw(raw, source=source, max_workers_cap=max_workers_cap)


def read_request_text(path: Path) -> str:
    """The text of the request file ``path``: a regular file of at most
    :data:`MAX_REQUEST_FILE_BYTES`, UTF-8; a :class:`RequestError` naming the file otherwise.

    ``podgrid submit /dev/urandom`` (or a FIFO, a directory, a 10 GB file) must not read
    without end: the file is opened without blocking, checked to be a regular file on the
    open descriptor (no race with a rename), and read no further than one byte past the cap.
    The cap is the master queue's default request body limit.
    """
    where = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError as e:
        raise RequestError.single(where, "no such file") from e
    except OSError as e:
        raise RequestError.single(where, f"cannot read file: {e.strerror or e}") from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RequestError.single(where, "not a regular file")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(MAX_REQUEST_FILE_BYTES + 1)
        except OSError as e:
            raise RequestError.single(where, f"cannot read file: {e.strerror or e}") from e
    if len(data) > MAX_REQUEST_FILE_BYTES:
        raise RequestError.single(
            where, f"file too large: a request file is at most {MAX_REQUEST_FILE_BYTES} bytes"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError.single(where, f"cannot read file: not UTF-8 ({e.reason})") from e


def load_request(
    path: str | Path,
    *,
    fmt: RequestFormat | None = None,
    max_workers_cap: int = DEFAULT_MAX_WORKERS_CAP,
) -> ServerRequest:
    """Read a request file; the format comes from the suffix (.toml, .jdl, .json) or content."""
    file = Path(path)
    text = read_request_text(file)
    chosen = fmt or _SUFFIXES.get(file.suffix.lower())
    return parse_request(text, fmt=chosen, source=str(file), max_workers_cap=max_workers_cap)


def validate_raw(raw: RawRequest, *, source: str, max_workers_cap: int) -> ServerRequest:
    """Validate reader output, turning pydantic errors into one ``RequestError``."""
    try:
        return ServerRequest.model_validate(raw.data, context={"max_workers_cap": max_workers_cap})
    except ValidationError as e:
        issues = [_issue(detail, raw, source) for detail in e.errors(include_url=False)]
        issues.sort(key=lambda issue: issue.line or 0)
        raise RequestError(issues) from None


def _issue(detail: ErrorDetails, raw: RawRequest, source: str) -> RequestIssue:
    keys = [str(part) for part in detail["loc"] if isinstance(part, str)]
    indexes = "".join(f"[{part}]" for part in detail["loc"] if isinstance(part, int))
    path = ".".join(keys)
    parent = keys[0] if keys else ""
    field = raw.names.get(path, path) + indexes if path else None
    line = raw.lines.get(path, raw.lines.get(parent))
    problem = _problem(detail, keys)
    if path and path not in raw.lines and detail["type"] != "missing":
        problem += " (the default)"  # e.g. a max_wait longer than the default ttl
    return RequestIssue(source, problem, line, None, field)


def _problem(detail: ErrorDetails, keys: list[str]) -> str:
    kind = detail["type"]
    if kind == "missing":
        return "required, but not given"
    if kind == "extra_forbidden":
        model = WorkerSpec if keys[:1] == ["worker"] and len(keys) > 1 else ServerRequest
        return "unknown key" + did_you_mean(keys[-1], model.model_fields)
    message = detail["msg"].removeprefix("Value error, ")
    if kind == "value_error" or isinstance(detail["input"], dict):
        return message
    shown = repr(detail["input"])
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"{message}, got {shown}"
