"""Serializers shared by the pool API: the wire message shape and a safe free-form JSON object."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from pool.models import MessageType


def _check_json(value: Any, path: str = "meta", depth: int = 0) -> None:
    # PostgreSQL text and jsonb refuse NUL characters; refuse them here with a 400 instead.
    if depth > 32:
        raise serializers.ValidationError(f"{path} is nested too deeply.")
    if isinstance(value, str):
        if "\x00" in value:
            raise serializers.ValidationError(f"{path} contains a NUL character.")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_json(key, path, depth + 1)
            _check_json(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]", depth + 1)


class JsonObjectField(serializers.DictField):
    """A free JSON object (the seed's `meta`)."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        value = super().to_internal_value(data)
        _check_json(value)
        return dict(value)


@extend_schema_field(
    {"type": "string", "pattern": "^(done|failed|progress)$", "description": "done | failed | progress"}
)
class ResponseStatusField(serializers.ChoiceField):
    """done | failed | progress; a pattern, not an enum component: `status` enums of other apps clash."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=["done", "failed", "progress"], **kwargs)


def text_field(**kwargs: Any) -> serializers.CharField:
    return serializers.CharField(
        required=False, allow_blank=True, default="", trim_whitespace=False, max_length=100_000, **kwargs
    )


# `from` is a Python keyword, so the wire serializer is built with type().
MessageSerializer = type(
    "PoolMessage",
    (serializers.Serializer,),
    {
        "__doc__": "One message of the pool's log, with the seed's exact keys.",
        "id": serializers.CharField(help_text="msg_<uuid4 hex>"),
        "ts": serializers.CharField(help_text="UTC, second precision, e.g. 2026-06-03T12:34:56Z"),
        "from": serializers.CharField(help_text="user:<email> | device:<id> | backend"),
        "to": serializers.CharField(help_text="device:<id> | device:* | device:[<id>,...] | user:<email>"),
        "type": serializers.ChoiceField(choices=MessageType.choices),
        "title": serializers.CharField(allow_blank=True),
        "body": serializers.CharField(allow_blank=True),
        "parent_id": serializers.CharField(allow_null=True),
        "meta": serializers.DictField(),
    },
)
