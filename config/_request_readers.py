"""Front-ends of the request parser: TOML, JDL and JSON text → a model-shaped dict.

Each reader returns a :class:`RawRequest`: the data keyed by the model's field paths, how the
user spelled each field, and the line where each was set, so validation errors can be reported
against the user's own key and line. Syntax errors and unknown keys raise ``RequestError``.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from podgrid.config.jdl import parse_jdl
from podgrid.config.request_errors import RequestError, RequestIssue

# Model field path → how the user writes it, per format.
TOML_NAMES: Mapping[str, str] = {
    "name": "server.name",
    "min_workers": "server.min_workers",
    "max_workers": "server.max_workers",
    "max_wait_s": "server.max_wait",
    "ttl_s": "server.ttl",
    "idle_timeout_s": "server.idle_timeout",
    "adaptive": "server.adaptive",
    "engine": "server.engine",
    "worker.cores": "worker.cores",
    "worker.memory_mb": "worker.memory",
    "worker.packages": "worker.packages",
    "worker.sites": "worker.sites",
}
JDL_NAMES: Mapping[str, str] = {
    "name": "Name",
    "min_workers": "MinWorkers",
    "max_workers": "MaxWorkers",
    "max_wait_s": "MaxWait",
    "ttl_s": "TTL",
    "idle_timeout_s": "IdleTimeout",
    "adaptive": "Adaptive",
    "engine": "Engine",
    "worker.cores": "Cores",
    "worker.memory_mb": "Memory",
    "worker.packages": "Packages",
    "worker.sites": "Sites",
}
JSON_NAMES: Mapping[str, str] = {path: path for path in TOML_NAMES}

_TOML_PATHS = {user: path for path, user in TOML_NAMES.items()}
_JDL_PATHS = {user.lower(): path for path, user in JDL_NAMES.items()}
_TOML_ERROR = re.compile(r"(?s)(.*) \(at line (\d+), column (\d+)\)")
_TOML_HEADER = re.compile(r"\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?")
_TOML_ASSIGN = re.compile(r"\s*([A-Za-z0-9_\-\"' .]+?)\s*=")


@dataclass
class RawRequest:
    """Model-shaped data plus, per model field path, the user's spelling and line."""

    data: dict[str, Any]
    names: Mapping[str, str]
    lines: dict[str, int] = field(default_factory=dict)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a candidate is close to ``word``, else ``""``."""
    options = list(candidates)
    folded = {c.lower(): c for c in options}
    close = difflib.get_close_matches(word.lower(), list(folded), n=1, cutoff=0.6)
    return f" (did you mean '{folded[close[0]]}'?)" if close else ""


def _put(data: dict[str, Any], path: str, value: Any) -> None:
    if path.startswith("worker."):
        data.setdefault("worker", {})[path.removeprefix("worker.")] = value
    else:
        data[path] = value


def read_toml(text: str, source: str) -> RawRequest:
    """Read the ``[server]`` / ``[worker]`` TOML form."""
    doc = _load_toml(text, source)
    key_lines = _toml_key_lines(text)
    raw = RawRequest({}, TOML_NAMES)
    issues: list[RequestIssue] = []
    for table, content in doc.items():
        table_line = key_lines.get((table,))
        if table not in ("server", "worker"):
            hint = did_you_mean(table, ["server", "worker", *_TOML_PATHS])
            issues.append(RequestIssue(source, f"unknown key{hint}", table_line, None, table))
            continue
        if not isinstance(content, dict):
            issues.append(RequestIssue(source, "must be a table", table_line, None, table))
            continue
        for key, value in content.items():
            user = f"{table}.{key}"
            line = key_lines.get((table, key), table_line)
            path = _TOML_PATHS.get(user)
            if path is None:
                hint = did_you_mean(user, _TOML_PATHS)
                issues.append(RequestIssue(source, f"unknown key{hint}", line, None, user))
                continue
            _put(raw.data, path, value)
            if line is not None:
                raw.lines[path] = line
    if issues:
        raise RequestError(issues)
    return raw


def _load_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        match = _TOML_ERROR.fullmatch(message)
        if match:
            problem, line, column = match.group(1), int(match.group(2)), int(match.group(3))
            raise RequestError.single(source, problem, line=line, column=column) from e
        line = text.count("\n") + 1
        column = len(text.rsplit("\n", 1)[-1]) + 1
        problem = message.replace(" (at end of document)", "") + " at end of document"
        raise RequestError.single(source, problem, line=line, column=column) from e
    except (ValueError, RecursionError) as e:  # int() digit limit, absurd nesting
        raise RequestError.single(source, f"cannot read TOML: {e}") from e


def _toml_key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Best-effort line of each ``(table,)`` and ``(table, key)``; first definition wins."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.split("\n"), start=1):
        if header := _TOML_HEADER.fullmatch(line):
            table = _toml_key_parts(header.group(1))
            lines.setdefault(table[:1], number)
        elif assign := _TOML_ASSIGN.match(line):
            parts = (*table, *_toml_key_parts(assign.group(1)))
            lines.setdefault(parts[:2], number)
            lines.setdefault(parts[:1], number)
    return lines


def _toml_key_parts(dotted: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in dotted.split("."))


def read_jdl(text: str, source: str) -> RawRequest:
    """Read the AliEn-style JDL form (keys case-insensitive)."""
    names = dict(JDL_NAMES)  # present keys are reported as the user spelled them
    raw = RawRequest({}, names)
    issues: list[RequestIssue] = []
    for entry in parse_jdl(text, source=source):
        path = _JDL_PATHS.get(entry.key.lower())
        if path is None:
            hint = did_you_mean(entry.key, JDL_NAMES.values())
            issues.append(RequestIssue(source, f"unknown key{hint}", entry.line, None, entry.key))
            continue
        _put(raw.data, path, entry.value)
        raw.lines[path] = entry.line
        names[path] = entry.key
    if issues:
        raise RequestError(issues)
    return raw


def read_json(text: str, source: str) -> RawRequest:
    """Read the JSON form: the model's own shape (what ``model_dump_json`` writes)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise RequestError.single(source, e.msg, line=e.lineno, column=e.colno) from e
    except (ValueError, RecursionError) as e:
        raise RequestError.single(source, f"cannot read JSON: {e}") from e
    if not isinstance(data, dict):
        raise RequestError.single(source, "expected a JSON object", line=1, column=1)
    return RawRequest(data, JSON_NAMES, _json_key_lines(text, data))


def _json_key_lines(text: str, data: dict[str, Any]) -> dict[str, int]:
    """Best-effort line of each top-level key and of each key inside ``worker``."""
    lines: dict[str, int] = {}
    worker_at = _find_key(text, "worker", 0)
    for key in data:
        at = _find_key(text, key, 0)
        if at is not None:
            lines[key] = text.count("\n", 0, at) + 1
    worker = data.get("worker")
    if isinstance(worker, dict) and worker_at is not None:
        for key in worker:
            at = _find_key(text, key, worker_at)
            if at is not None:
                lines[f"worker.{key}"] = text.count("\n", 0, at) + 1
    return lines


def _find_key(text: str, key: str, start: int) -> int | None:
    match = re.compile(re.escape(json.dumps(key)) + r"\s*:").search(text, start)
    return match.start() if match else None


def sniff_format(text: str) -> str:
    """Guess ``json``, ``toml`` or ``jdl`` from the first line that is not blank or a comment.

    ``{`` starts JSON, ``[`` a TOML table; a statement ending in ``;`` (strings aside) is JDL;
    anything else is TOML.
    """
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "//")):
            continue
        if stripped.startswith("{"):
            return "json"
        if stripped.startswith("["):
            return "toml"
        without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', stripped)
        return "jdl" if ";" in without_strings.split("#")[0] else "toml"
    return "toml"
