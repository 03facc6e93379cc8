"""Reading the JSON log lines (structlog's ``--log-format json``) a test's processes wrote."""

from __future__ import annotations

import contextlib
import json
from typing import Any


def log_events(text: str, name: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``text`` whose event is ``name`` (other lines are skipped)."""
    found = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict) and doc.get("event") == name:
                found.append(doc)
    return found
