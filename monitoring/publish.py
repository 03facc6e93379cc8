"""``POST /publish``: JSON batches of values, with a bearer token, validated at the edge."""

from __future__ import annotations

import hmac
import json
import math
from typing import Annotated, Any

from aiohttp import web
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from podgrid.errors import BadRequest, PodGridError, Unauthorized
from podgrid.monitoring import keys
from podgrid.monitoring.apmon import MAX_NAME_CHARS, MAX_VALUE_CHARS
from podgrid.monitoring.history import Value
from podgrid.monitoring.ingest import MAX_FUTURE_MS
from podgrid.web import bearer_token

MAX_BATCH_ITEMS = 10_000

Name = Annotated[
    str,
    StringConstraints(
        strict=True, min_length=1, max_length=MAX_NAME_CHARS, pattern=r"^[^/|\r\n\t\x00]+$"
    ),
]


def _param_value(value: object) -> Value:
    """One parameter value: a string without line breaks, an int64, or a finite float."""
    if isinstance(value, str):
        if len(value) > MAX_VALUE_CHARS or "\n" in value or "\r" in value:
            raise ValueError(f"string values hold at most {MAX_VALUE_CHARS} chars, one line")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if not -(2**63) <= value < 2**63:
            raise ValueError("integer values must fit in 64 bits")
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise ValueError(f"expected a string, an integer or a finite number, got {value!r:.40}")


ParamValue = Annotated[Value, PlainValidator(_param_value)]


class PublishItem(BaseModel):
    """Values of one node of one cluster, optionally stamped (ms since the epoch)."""

    model_config = ConfigDict(extra="forbid")

    cluster: Name
    node: Name
    params: dict[Name, ParamValue]
    time_ms: Annotated[int, Field(strict=True, gt=0)] | None = None


_BATCH = TypeAdapter(list[PublishItem])


class PublishError(PodGridError, ValueError):
    """A publish body that is not a valid batch; ``fields`` name what is wrong where."""

    def __init__(self, message: str, fields: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.fields = fields or []


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_batch(body: bytes, now_ms: int) -> list[PublishItem]:
    """A single item or a list of items, or PublishError with field-level messages."""
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise PublishError(f"body is not valid JSON: {e}") from e
    if isinstance(data, dict):
        data = [data]
    if isinstance(data, list) and len(data) > MAX_BATCH_ITEMS:
        raise PublishError(f"batch of {len(data)} items: at most {MAX_BATCH_ITEMS} allowed")
    try:
        items = _BATCH.validate_python(data)
    except ValidationError as e:
        fields = [
            {"loc": list(err["loc"]), "msg": err["msg"], "input": _short(err.get("input"))}
            for err in e.errors(include_url=False)[:50]
        ]
        raise PublishError("invalid publish batch", fields) from e
    for i, item in enumerate(items):
        if item.time_ms is not None and item.time_ms > now_ms + MAX_FUTURE_MS:
            msg = f"{item.time_ms} is more than a day in the future"
            raise PublishError("invalid publish batch", [{"loc": [i, "time_ms"], "msg": msg}])
    return items


def _short(value: Any) -> Any:
    text = repr(value)
    return value if len(text) <= 80 and not isinstance(value, dict | list) else text[:80]


def _authorized(request: web.Request, tokens: frozenset[str]) -> bool:
    token = bearer_token(request)
    if token is None:
        return False
    given = token.encode("ascii")  # bearer_token returns printable ASCII only
    ok = False
    for accepted in tokens:  # compare with every token: no early exit to time
        ok |= hmac.compare_digest(given, accepted.encode("utf-8", "replace"))
    return ok


async def publish(request: web.Request) -> web.Response:
    """Accept a batch of values for the registry's own farm."""
    app = request.app
    metrics = app[keys.METRICS]
    metrics.publishes_received.inc()
    if not _authorized(request, app[keys.SETTINGS].publish_tokens):
        metrics.publishes_rejected.labels(reason="unauthorized").inc()
        raise Unauthorized("missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        metrics.publishes_rejected.labels(reason="too_large").inc()
        raise
    ingestor = app[keys.INGESTOR]
    try:
        items = parse_batch(body, ingestor.store.clock_ms())
    except PublishError as e:
        metrics.publishes_rejected.labels(reason="invalid").inc()
        raise BadRequest(str(e), code="invalid_body", fields=e.fields) from e
    accepted = 0
    for item in items:
        accepted += ingestor.put(item.cluster, item.node, list(item.params.items()), item.time_ms)
    return web.json_response({"accepted": accepted})
