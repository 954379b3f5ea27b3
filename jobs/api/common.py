"""Helpers shared by the two seed dialects: body parsing and schema fragments."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request

from coordinator.api.parsers import loads_strict


class BodyError(Exception):
    pass


def json_body(request: Request) -> Any:
    """The JSON body of any request, GET included (pytasks' `/token`); None when empty."""
    raw = request.body
    if not raw or not raw.strip():
        return None
    try:
        return loads_strict(raw)
    except ValueError as exc:
        raise BodyError("The request body is not valid JSON.") from exc


def message_response(name: str, description: str) -> OpenApiResponse:
    return OpenApiResponse(
        response=inline_serializer(name=name, fields={"message": serializers.CharField()}),
        description=description,
    )


def booklogr_error(name: str, description: str) -> OpenApiResponse:
    """BookLogr's `{"error", "message"}`; a URL that matches no route answers the platform
    envelope `{"code", "message", "extra"}` instead, so both shapes fit this schema."""
    return OpenApiResponse(
        response=inline_serializer(
            name=name,
            fields={
                "message": serializers.CharField(),
                "error": serializers.CharField(required=False),
                "code": serializers.CharField(required=False),
                "extra": serializers.DictField(required=False),
            },
        ),
        description=description,
    )
