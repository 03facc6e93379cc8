"""Property tests: request parsing never fails with anything but RequestError, and the TOML
and JDL forms of one request parse to the same model."""

from __future__ import annotations

import json
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from podgrid.config import RequestError, ServerRequest, WorkerSpec, format_duration, parse_request
from podgrid.config.jdl import parse_jdl

SETTINGS = settings(max_examples=200, deadline=None)
FORMATS = st.sampled_from(["toml", "jdl", "json", None])

VALID_TOML = """\
[server]
name = "dimuon-scan"
min_workers = 4          # READY from here
max_workers = 32
max_wait = "10m"
ttl = "4h"
idle_timeout = "30m"
adaptive = true
[worker]
cores = 1
memory = "2GiB"
packages = ["ROOT::v6-32", "a"]
sites = []
"""
VALID_JDL = """\
Name = "dimuon-scan"; // a comment
MinWorkers = 4; MaxWorkers = 32; MaxWait = 600;
TTL = "4h"; IdleTimeout = 1800; Adaptive = true;
# another comment
Cores = 1; Memory = "2GiB"; Packages = {"ROOT::v6-32", "a"};
Sites = {};
"""
VALID_JSON = ServerRequest(name="x", min_workers=2, max_workers=3).model_dump_json(indent=1)
SYNTAX_CHARS = '"{}[];=,#/\\\n .-_:0123456789aeEfmhtrsuGiBx\t\x00é'


def parses_or_request_error(text: str, fmt: str | None) -> None:
    result: ServerRequest | RequestError
    try:
        result = parse_request(text, fmt=fmt)  # type: ignore[arg-type]
    except RequestError as e:
        result = e
    if isinstance(result, RequestError):
        assert result.issues
        assert str(result).startswith("<request>")
    else:
        assert isinstance(result, ServerRequest)


@st.composite
def mutated(draw: st.DrawFn, base: str) -> str:
    text = base
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        if draw(st.booleans()) and pos < len(text):
            text = text[:pos] + text[pos + draw(st.integers(1, 6)) :]
        else:
            text = text[:pos] + draw(st.text(SYNTAX_CHARS, min_size=1, max_size=4)) + text[pos:]
    return text


@SETTINGS
@given(text=st.text(), fmt=FORMATS)
def test_any_text_parses_or_raises_request_error(text: str, fmt: str | None) -> None:
    parses_or_request_error(text, fmt)


@SETTINGS
@given(text=st.text(SYNTAX_CHARS, max_size=80), fmt=FORMATS)
def test_syntax_soup_parses_or_raises_request_error(text: str, fmt: str | None) -> None:
    parses_or_request_error(text, fmt)


@SETTINGS
@given(
    pair=st.one_of(
        st.tuples(mutated(VALID_TOML), st.sampled_from(["toml", None])),
        st.tuples(mutated(VALID_JDL), st.sampled_from(["jdl", None])),
        st.tuples(mutated(VALID_JSON), st.sampled_from(["json", None])),
    )
)
def test_mutated_requests_parse_or_raise_request_error(pair: tuple[str, str | None]) -> None:
    parses_or_request_error(*pair)


NAME_CHARS = string.ascii_letters + string.digits + "._-"
names = st.text(NAME_CHARS, min_size=1, max_size=64)
packages = st.text(NAME_CHARS + ":@+/=", min_size=1, max_size=30)
durations = st.integers(1, 30 * 86_400)


@st.composite
def requests(draw: st.DrawFn) -> ServerRequest:
    min_workers = draw(st.integers(1, 1000))
    max_wait_s = draw(durations)
    return ServerRequest(
        name=draw(names),
        min_workers=min_workers,
        max_workers=draw(st.integers(min_workers, 1000)),
        max_wait_s=max_wait_s,
        ttl_s=draw(st.integers(max_wait_s + 1, max_wait_s + 10 * 86_400)),
        idle_timeout_s=draw(durations),
        adaptive=draw(st.booleans()),
        worker=WorkerSpec(
            cores=draw(st.integers(1, 1024)),
            memory_mb=draw(st.integers(1, 4 * 1024 * 1024)),
            packages=tuple(draw(st.lists(packages, max_size=4))),
            sites=tuple(draw(st.lists(names, max_size=4))),
        ),
    )


def duration_text(seconds: int, style: int) -> str:
    """One of the accepted spellings: bare int, quoted seconds, '<n>s', or '1h30m' style."""
    return [str(seconds), f'"{seconds}"', f'"{seconds}s"', f'"{format_duration(seconds)}"'][style]


def memory_text(mib: int, style: int) -> str:
    if style == 1 and mib % 1024 == 0:
        return f'"{mib // 1024}GiB"'
    if style == 2:
        return f'"{mib}MiB"'
    return str(mib)


def quoted_list(items: tuple[str, ...], open_: str, close: str) -> str:
    return open_ + ", ".join(json.dumps(item) for item in items) + close


def to_toml(req: ServerRequest, style: int) -> str:
    w = req.worker
    return "\n".join(
        [
            "# generated",
            "[server]",
            f"name = {json.dumps(req.name)}",
            f"min_workers = {req.min_workers}",
            f"max_workers = {req.max_workers}",
            f"max_wait = {duration_text(req.max_wait_s, style)}",
            f"ttl = {duration_text(req.ttl_s, (style + 1) % 4)}",
            f"idle_timeout = {duration_text(req.idle_timeout_s, (style + 2) % 4)}",
            f"adaptive = {str(req.adaptive).lower()}",
            "[worker]",
            f"cores = {w.cores}",
            f"memory = {memory_text(w.memory_mb, style % 3)}",
            f"packages = {quoted_list(w.packages, '[', ']')}",
            f"sites = {quoted_list(w.sites, '[', ']')}",
        ]
    )


def to_jdl(req: ServerRequest, style: int, upper: bool) -> str:
    w = req.worker
    statements = [
        ("Name", json.dumps(req.name)),
        ("MinWorkers", str(req.min_workers)),
        ("MaxWorkers", str(req.max_workers)),
        ("MaxWait", duration_text(req.max_wait_s, style)),
        ("TTL", duration_text(req.ttl_s, (style + 3) % 4)),
        ("IdleTimeout", duration_text(req.idle_timeout_s, (style + 1) % 4)),
        ("Adaptive", "TRUE" if req.adaptive else "false"),
        ("Cores", str(w.cores)),
        ("Memory", memory_text(w.memory_mb, (style + 1) % 3)),
        ("Packages", quoted_list(w.packages, "{", "}")),
        ("Sites", quoted_list(w.sites, "{\n  ", "\n}")),
    ]
    sep = " // x\n" if style % 2 else " "
    return sep.join(f"{key.upper() if upper else key} = {value};" for key, value in statements)


@SETTINGS
@given(req=requests(), style=st.integers(0, 3), upper=st.booleans())
def test_toml_and_jdl_of_one_request_give_equal_models(
    req: ServerRequest, style: int, upper: bool
) -> None:
    from_toml = parse_request(to_toml(req, style), fmt="toml")
    from_jdl = parse_request(to_jdl(req, style, upper), fmt="jdl")
    from_json = parse_request(req.model_dump_json(), fmt="json")
    assert from_toml == from_jdl == from_json == req
    assert parse_request(to_toml(req, style)) == parse_request(to_jdl(req, style, upper))


@SETTINGS
@given(value=st.text(st.characters(blacklist_characters="\n\r", codec="utf-8")))
def test_jdl_strings_round_trip_through_escapes(value: str) -> None:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t")
    (entry,) = parse_jdl(f'Key = "{escaped}";')
    assert entry.value == value
