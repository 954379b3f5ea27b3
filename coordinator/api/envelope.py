"""The one error body of our own endpoints."""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse


def error_body(code: str, message: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "extra": extra or {}}


def error_response(status: int, code: str, message: str, extra: dict[str, Any] | None = None) -> JsonResponse:
    """A plain Django response carrying the envelope (for code outside DRF views)."""
    return JsonResponse(error_body(code, message, extra), status=status)
