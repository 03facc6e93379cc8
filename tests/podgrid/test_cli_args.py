"""The shared argparse types: what they accept; errors name the value and what was expected."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from podgrid import _cmd_args as types
from podgrid.cli import main
from podgrid.config import environment

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8886", ("127.0.0.1", 8886)),
        ("localhost:0", ("localhost", 0)),
        ("example.org:65535", ("example.org", 65535)),
        ("[::1]:8080", ("::1", 8080)),
        ("[::]:0", ("::", 0)),
        ("[2001:db8::1]:443", ("2001:db8::1", 443)),
    ],
)
def test_host_port_accepts(text: str, expected: tuple[str, int]) -> None:
    assert types.host_port(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1",  # no port
        "127.0.0.1:",  # empty port
        ":8080",  # no host
        "localhost:65536",  # port too large
        "localhost:99999",
        "localhost:-1",
        "localhost:+80",
        "localhost:8o",
        "::1:8080",  # IPv6 without brackets: which group is the port?
        "[::1]",  # brackets but no port
        "[::1]:",
        "[]:80",
        "[localhost]:80",  # brackets are for IPv6 only
        "[::1:80",
        " localhost:80",
        "nonsense",
        "",
    ],
)
def test_host_port_refuses_with_the_value_and_the_expected_form(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        types.host_port(text)
    message = str(refused.value)
    assert message.startswith(f"{text!r}: expected HOST:PORT")
    assert "[::1]" in message
    assert "0 to 65535" in message


def test_host_port_says_when_the_port_is_too_large() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"port 65536 is too large"):
        types.host_port("[::1]:65536")


@pytest.mark.parametrize(("text", "value"), [("1", 1), ("16", 16), ("007", 7)])
def test_positive_int_accepts(text: str, value: int) -> None:
    assert types.positive_int(text) == value


@pytest.mark.parametrize("text", ["0", "-1", "+1", "1.5", "1e3", " 2", "two", ""])
def test_positive_int_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        types.positive_int(text)
    assert str(refused.value) == f"{text!r}: expected a whole number >= 1"


@pytest.mark.parametrize(("text", "value"), [("1", 1.0), ("0.25", 0.25), ("2e1", 20.0)])
def test_positive_seconds_accepts(text: str, value: float) -> None:
    assert types.positive_seconds(text) == value


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "soon", ""])
def test_positive_seconds_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected a number of seconds > 0$"):
        types.positive_seconds(text)


def test_non_negative_seconds_takes_zero_but_not_less() -> None:
    assert types.non_negative_seconds("0") == 0.0
    assert types.non_negative_seconds("2.5") == 2.5
    for text in ("-0.1", "nan", "-inf", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"expected a number of seconds >= 0"):
            types.non_negative_seconds(text)


def test_int_range() -> None:
    count = types.int_range(1, 64)
    assert (count("1"), count("64")) == (1, 64)
    for text in ("0", "65", "-3", "x"):
        with pytest.raises(
            argparse.ArgumentTypeError, match=r"expected a whole number from 1 to 64"
        ):
            count(text)


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (
            ["jobagent", "run", "--http", "::1:8080"],
            "argument --http: '::1:8080': expected HOST:PORT",
        ),
        (["broker", "serve", "--request-id", "1", "--http", "h:65536"], "port 65536 is too large"),
        (["site", "run", "--agents", "0"], "argument --agents: '0': expected a whole number >= 1"),
        (["jobagent", "run", "--grace", "-1"], "'-1': expected a number of seconds >= 0"),
        (["up", "--agents", "65"], "'65': expected a whole number from 1 to 64"),
    ],
)
def test_commands_report_bad_values_with_the_flag(
    argv: list[str], shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert shown in capsys.readouterr().err


def test_every_podgrid_variable_in_the_code_is_in_the_table() -> None:
    """A new ``PODGRID_*`` name belongs in :mod:`podgrid.config.environment` with a description."""
    sources = [
        path
        for folder in ("podgrid", "config", "monitoring", "masterqueue", "broker", "jobagent")
        for path in (REPO / folder).rglob("*.py")
        if not (folder == "podgrid" and path.relative_to(REPO / folder).parts[0] in _LINKED)
        and path != REPO / "config" / "environment.py"  # the table names test-only ones too
    ]
    found = {
        name
        for path in sources
        for name in re.findall(r"\bPODGRID_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8"))
    }
    assert found
    assert found <= set(environment.VARIABLES), sorted(found - set(environment.VARIABLES))
    assert all(description.strip() for description in environment.VARIABLES.values())


_LINKED = {"config", "monitoring", "masterqueue", "broker", "jobagent"}
