"""The one error body every PoD Grid service answers for a 4xx or 5xx."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FieldIssue(BaseModel):
    """One field-level complaint: where (``loc``) and what (``msg``); more keys may follow.

    Request-file problems add ``line`` and ``column``; pydantic problems add ``type``.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    loc: list[str | int] = Field(default_factory=list)
    msg: str = ""


class ErrorBody(BaseModel):
    """``{"error": code, "message": text, "fields": [...]}``; ``reason`` for a refused attach."""

    model_config = ConfigDict(extra="allow", frozen=True)

    error: str
    message: str
    fields: list[FieldIssue] = Field(default_factory=list)

    def field_dicts(self) -> list[dict[str, Any]]:
        """The field complaints as plain dicts (what :class:`podgrid.errors.ServiceError` keeps)."""
        return [f.model_dump() for f in self.fields]
