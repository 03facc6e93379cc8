"""Server-request parsing: the DESIGN.md examples, errors with line and field, units, cap."""

from __future__ import annotations

from pathlib import Path

import pytest

from podgrid.config import (
    RequestError,
    ServerRequest,
    WorkerSpec,
    load_request,
    parse_duration_s,
    parse_memory_mb,
    parse_request,
)
from podgrid.config.units import UnitError

REPO = Path(__file__).resolve().parents[2]

DESIGN_TOML = """\
[server]
name = "dimuon-scan"
min_workers = 4          # READY from here
max_workers = 32         # stop publishing here
max_wait = "10m"         # how long to wait for max_workers
ttl = "4h"               # cluster lifetime
idle_timeout = "30m"     # no client activity → shut down
[worker]
cores = 1
memory = "2GiB"
packages = ["ROOT::v6-32"]
sites = []               # empty: any site
"""

DESIGN_JDL = """\
Name = "dimuon-scan"; MinWorkers = 4; MaxWorkers = 32; MaxWait = 600; TTL = 14400;
IdleTimeout = 1800; Cores = 1; Memory = "2GiB"; Packages = {"ROOT::v6-32"}; Sites = {};
"""

EXPECTED = ServerRequest(
    name="dimuon-scan",
    min_workers=4,
    max_workers=32,
    max_wait_s=600,
    ttl_s=14400,
    idle_timeout_s=1800,
    worker=WorkerSpec(cores=1, memory_mb=2048, packages=("ROOT::v6-32",), sites=()),
)


def error_of(text: str, **kwargs: object) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse_request(text, **kwargs)  # type: ignore[arg-type]
    return info.value


def test_design_examples_give_the_same_request() -> None:
    toml = parse_request(DESIGN_TOML, fmt="toml")
    jdl = parse_request(DESIGN_JDL, fmt="jdl")
    assert toml == jdl == EXPECTED
    assert parse_request(DESIGN_TOML) == parse_request(DESIGN_JDL)  # sniffed formats


def test_shipped_examples_parse_to_equal_requests() -> None:
    toml = load_request(REPO / "examples" / "dimuon-scan.toml")
    jdl = load_request(REPO / "examples" / "dimuon-scan.jdl")
    assert toml == jdl
    assert toml == EXPECTED.model_copy(update={"adaptive": True})


def test_json_round_trip_of_the_model() -> None:
    text = EXPECTED.model_dump_json()
    assert parse_request(text) == EXPECTED
    assert parse_request(text, fmt="json") == EXPECTED


def test_jdl_syntax_error_names_line_and_column() -> None:
    text = 'Name = "x";\nMinWorkers = 4;\nMaxWorkers = 32\nTTL = 14400;\n'
    err = error_of(text, fmt="jdl", source="req.jdl")
    assert len(err.issues) == 1
    assert (err.line, err.column) == (3, 16)
    assert str(err) == "req.jdl:3:16: expected ';' after value of MaxWorkers, found 'TTL'"


@pytest.mark.parametrize(
    ("text", "line", "column", "problem"),
    [
        ('Name = "x', 1, 8, "unterminated string"),
        ('Name = "a\\qb";', 1, 10, "unknown escape"),
        ("Packages = {\n  'a' };", 2, 3, "unexpected character"),
        ('Sites = {"a" "b"};', 1, 14, "expected ',' or '}'"),
        ("MinWorkers = ;", 1, 14, "expected a value for MinWorkers"),
        ("= 4;", 1, 1, "expected a key"),
        ('Name "x";', 1, 6, "expected '=' after key Name"),
        ("Cores = 1;\ncores = 2;", 2, 1, "duplicate key cores (first set on line 1)"),
    ],
)
def test_jdl_syntax_errors(text: str, line: int, column: int, problem: str) -> None:
    err = error_of(text, fmt="jdl")
    assert (err.line, err.column) == (line, column)
    assert problem in err.problem


def test_jdl_values_keys_and_comments() -> None:
    text = """
    // keys are case-insensitive; comments never live inside strings
    NAME = "a.b-c_1";     # the name
    minworkers = 2; MAXWORKERS = 3;
    MaxWait = "1h30m"; ttl = 1.5e4;
    adaptive = TRUE;
    Memory = 1024;
    Packages = {
        "VO_ALICE@ROOT::v6-32",   # one
        "lib//x"                  // two
    };
    """
    req = parse_request(text, fmt="jdl")
    assert (req.name, req.min_workers, req.max_workers) == ("a.b-c_1", 2, 3)
    assert (req.max_wait_s, req.ttl_s, req.adaptive) == (5400, 15000, True)
    assert req.worker.memory_mb == 1024
    assert req.worker.packages == ("VO_ALICE@ROOT::v6-32", "lib//x")
    err = error_of('Name = "a#b"; # a comment', fmt="jdl")
    assert (err.line, err.field) == (1, "Name")
    assert err.problem.endswith("got 'a#b'")


def test_toml_min_above_max_is_one_error_with_line_and_field() -> None:
    text = '[server]\nname = "x"\nmin_workers = 4\nmax_workers = 2\n'
    err = error_of(text, source="request.toml")
    assert len(err.issues) == 1
    assert str(err) == "request.toml:4: server.max_workers: must be >= min_workers (4), got 2"
    assert (err.field, err.line, err.column) == ("server.max_workers", 4, None)


def test_toml_syntax_error_names_line_and_column() -> None:
    err = error_of('[server]\nname = "x"\nmin_workers = = 4\n', fmt="toml", source="r.toml")
    assert (err.line, err.column) == (3, 15)
    assert str(err).startswith("r.toml:3:15: ")


def test_unknown_keys_are_errors_with_a_suggestion() -> None:
    err = error_of('[server]\nname = "x"\nmax_worker = 4\n[wroker]\ncores = 1\n')
    assert [(i.line, i.field) for i in err.issues] == [(3, "server.max_worker"), (4, "wroker")]
    assert "did you mean 'server.max_workers'?" in err.issues[0].problem
    assert "did you mean 'worker'?" in err.issues[1].problem
    jdl = error_of('Name = "x";\nMaxWorker = 4;', fmt="jdl")
    assert (jdl.line, jdl.field) == (2, "MaxWorker")
    assert "did you mean 'MaxWorkers'?" in jdl.problem
    json_err = error_of('{"name": "x",\n "worker": {"memory": 3}}')
    assert (json_err.line, json_err.field) == (2, "worker.memory")
    assert "did you mean 'memory_mb'?" in json_err.problem


def test_every_validation_error_is_reported_with_its_own_line() -> None:
    text = '[server]\nname = "bad name"\nmin_workers = 0\nttl = "4x"\n[worker]\nmemory = "2 PB"\n'
    err = error_of(text)
    found = [(i.line, i.field) for i in err.issues]
    assert found == [
        (2, "server.name"),
        (3, "server.min_workers"),
        (4, "server.ttl"),
        (6, "worker.memory"),
    ]
    assert len(str(err).splitlines()) == 4
    assert "'4x'" in err.issues[2].problem
    assert "'10m'" in err.issues[2].problem


def test_max_workers_cap_is_the_callers() -> None:
    text = '[server]\nname = "x"\nmax_workers = 50\n'
    assert parse_request(text).max_workers == 50
    err = error_of(text, max_workers_cap=40)
    assert (err.line, err.field) == (3, "server.max_workers")
    assert err.problem == "must be <= the operator's cap of 40 workers, got 50"
    only_min = error_of('[server]\nname = "x"\nmin_workers = 50\n', max_workers_cap=40)
    assert [(i.line, i.field) for i in only_min.issues] == [(3, "server.min_workers")]


def test_defaults_and_max_defaults_to_min() -> None:
    req = parse_request('[server]\nname = "x"\nmin_workers = 7\n')
    assert (req.min_workers, req.max_workers) == (7, 7)
    assert (req.max_wait_s, req.ttl_s, req.idle_timeout_s) == (600, 14400, None)
    assert req.worker == WorkerSpec(cores=1, memory_mb=2048, packages=(), sites=())
    assert (req.adaptive, req.engine) == (False, "dask")


def test_ttl_must_outlive_max_wait() -> None:
    err = error_of('Name = "x"; MaxWait = "2h";\nTTL = "1h";', fmt="jdl")
    assert (err.line, err.field) == (2, "TTL")
    assert err.problem == "must be longer than max_wait (2h), got 1h"
    default = error_of('[server]\nname = "x"\nmax_wait = "5h"\n')
    assert (
        str(default)
        == "<request>: server.ttl: must be longer than max_wait (5h), got 4h (the default)"
    )


def test_missing_name_and_wrong_types() -> None:
    err = error_of("[server]\nmin_workers = true\n")
    assert [(i.line, i.field) for i in err.issues] == [
        (None, "server.name"),
        (2, "server.min_workers"),
    ]
    assert str(err.issues[0]) == "<request>: server.name: required, but not given"
    assert err.issues[1].problem.endswith("got True")


def test_request_is_frozen() -> None:
    with pytest.raises(ValueError, match="frozen"):
        EXPECTED.name = "other"


def test_load_request_errors(tmp_path: Path) -> None:
    with pytest.raises(RequestError, match="no such file"):
        load_request(tmp_path / "absent.toml")
    weird = tmp_path / "req.txt"
    weird.write_text('Name = "sniffed";\n')
    assert load_request(weird).name == "sniffed"
    binary = tmp_path / "req.jdl"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(RequestError, match="cannot read file"):
        load_request(binary)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90),
        (90.0, 90),
        ("90", 90),
        ("90s", 90),
        ("10m", 600),
        ("4h", 14400),
        ("1d", 86400),
        ("1h30m", 5400),
        ("1h 30m 5s", 5405),
        ("1.5h", 5400),
        ("2H", 7200),
    ],
)
def test_durations(value: object, seconds: int) -> None:
    assert parse_duration_s(value) == seconds


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10x", "got '10x'"),
        ("30m1h", "in the order d, h, m, s"),
        ("0.5s", "whole number"),
        (0, "more than 0"),
        (-5, "more than 0"),
        (True, "got True"),
        ("", "got ''"),
        (float("inf"), "got inf"),
        ("1m1m", "each once"),
        (10**12, "at most"),
    ],
)
def test_bad_durations(value: object, expected: str) -> None:
    with pytest.raises(UnitError, match="expected") as info:
        parse_duration_s(value)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("value", "mib"),
    [
        (2048, 2048),
        ("2048", 2048),
        ("2GiB", 2048),
        ("2gib", 2048),
        ("1.5G", 1536),
        ("512MiB", 512),
        ("512MB", 489),
        ("1GB", 954),
        ("1 TiB", 1048576),
        ("1KiB", 1),
        ("1048576B", 1),
    ],
)
def test_memory(value: object, mib: int) -> None:
    assert parse_memory_mb(value) == mib


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2 PB", "got '2 PB'"),
        (0, "more than 0"),
        (1.5, "must be whole"),
        (False, "got False"),
        ("GiB", "got 'GiB'"),
        ("64TiB", "at most"),
    ],
)
def test_bad_memory(value: object, expected: str) -> None:
    with pytest.raises(UnitError, match="expected") as info:
        parse_memory_mb(value)
    assert expected in str(info.value)
