"""Helpers shared by the two seed dialects: body parsing and schema fragments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request

from coordinator.api.parsers import loads_strict


class BodyError(Exception):
    pass


# Header on a submission answered with the job that already held its `unique_key`.
EXISTING_HEADER = "Job-Existing"
# The longest delay a submission may ask for (a year and a day).
MAX_DELAY_SECONDS = 366 * 24 * 3600
MAX_UNIQUE_KEY = 200


class SubmissionOptionError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


@dataclass(frozen=True)
class SubmissionOptions:
    run_after: datetime | None = None
    unique_key: str | None = None


def scoped_unique_key(key: str | None, user: Any) -> str | None:
    """A caller's key within the caller's own scope (`<user id>/<key>`, `anonymous/<key>`): a key
    sent over the API never answers with someone else's job (its id, or its pytasks uuid)."""
    if key is None:
        return None
    owner = str(user.pk) if user is not None else "anonymous"
    return f"{owner}/{key}"


def submission_options(body: dict[str, Any]) -> SubmissionOptions:
    """The optional `run_after` (ISO 8601 with an offset) or `delay_seconds`, and `unique_key`, of a
    submission in either dialect; `SubmissionOptionError` names the first bad one."""
    run_after: datetime | None = None
    if "run_after" in body and "delay_seconds" in body:
        raise SubmissionOptionError("run_after", "Give run_after or delay_seconds, not both.")
    if body.get("run_after") is not None:
        raw = body["run_after"]
        try:
            run_after = parse_datetime(raw) if isinstance(raw, str) and "\x00" not in raw else None
        except ValueError:
            run_after = None
        if run_after is None:
            raise SubmissionOptionError("run_after", "run_after must be an ISO 8601 time, e.g. 2030-01-31T23:59:00Z.")
        if timezone.is_naive(run_after):
            raise SubmissionOptionError("run_after", "run_after needs a UTC offset (Z or +hh:mm).")
        try:
            run_after = run_after.astimezone(UTC)
        except OverflowError:  # year 1 with a positive offset lies before the first UTC time there is
            raise SubmissionOptionError("run_after", "run_after is out of range.") from None
        if run_after - timezone.now() > timedelta(seconds=MAX_DELAY_SECONDS):
            raise SubmissionOptionError("run_after", "run_after is more than 366 days away.")
    elif body.get("delay_seconds") is not None:
        delay = body["delay_seconds"]
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= MAX_DELAY_SECONDS:
            raise SubmissionOptionError(
                "delay_seconds", f"delay_seconds must be a number from 0 to {MAX_DELAY_SECONDS}."
            )
        run_after = timezone.now() + timedelta(seconds=float(delay))
    key = body.get("unique_key")
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= MAX_UNIQUE_KEY or not key.isprintable()):
        raise SubmissionOptionError("unique_key", f"unique_key must be 1 to {MAX_UNIQUE_KEY} printable characters.")
    return SubmissionOptions(run_after=run_after, unique_key=key)


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
