"""Strict JSON fields: a value of the wrong JSON type is a 400, as the schema says (no coercion)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

# Worker uuids travel back in a cookie, so they are limited to characters valid there.
WORKER_UUID_PATTERN = r"^[A-Za-z0-9._~:@+\-]{1,64}$"


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return int(super().to_internal_value(data))


class StrictFloatField(serializers.FloatField):
    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return float(super().to_internal_value(data))


class StrictBooleanField(serializers.BooleanField):
    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class LabelsField(serializers.ListField):
    """A run's labels: up to 20 short strings."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(child=serializers.CharField(max_length=50), max_length=20, **kwargs)


class HostnameField(serializers.RegexField):
    """A host name: visible ASCII (what `socket.gethostname()` gives; no NUL the database refuses)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(r"^[!-~]{1,255}$", max_length=255, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class WorkerUuidField(serializers.RegexField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(WORKER_UUID_PATTERN, max_length=64, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class TaskNumberListField(serializers.ListField):
    """A list of task numbers (JSON integers in range)."""

    def __init__(self, *, max_value: int, **kwargs: Any) -> None:
        super().__init__(child=StrictIntegerField(min_value=0, max_value=max_value), **kwargs)
