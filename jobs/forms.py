"""The admin's submit-a-job form, generated from the job function's signature."""

from __future__ import annotations

import enum
import types
from typing import Any, Literal, Union, get_args, get_origin

from django import forms
from django.forms.fields import InvalidJSONInput

from coordinator.api.parsers import loads_strict
from jobs.registry import JobSpec, Param

_INT_LIMIT = 2**63


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        options = [option for option in get_args(annotation) if option is not type(None)]
        if len(options) == 1 and len(get_args(annotation)) == 2:
            return options[0], True
    return annotation, False


class StrictJSONField(forms.JSONField):
    """Django's JSON form field read by the API's parser (`loads_strict`): `NaN`, `1e999`, numbers
    past 4,300 digits, deep nesting and lone surrogates are a form error, as in the API, where
    Django's own reading answered 500 (or stored what the database then refused)."""

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str) and value not in self.empty_values:
            try:
                loads_strict(value)
            except ValueError as exc:
                raise forms.ValidationError(
                    f"Not JSON this platform accepts: {str(exc)[:200]}", code="invalid"
                ) from exc
        return super().to_python(value)

    def bound_data(self, data: Any, initial: Any) -> Any:
        # The form shown again with its errors reads the posted text once more.
        if isinstance(data, str) and not self.disabled:
            try:
                loads_strict(data)
            except ValueError:
                return InvalidJSONInput(data)
        return super().bound_data(data, initial)


def field_for(param: Param) -> forms.Field:
    """A form field for one parameter; kinds without a natural widget take JSON."""
    annotation, optional = _unwrap_optional(param.annotation)
    required = param.required and not optional
    initial = None if param.required else param.default
    help_text = f"type: {param.annotation}"
    if annotation is bool:
        return forms.BooleanField(required=False, initial=initial, help_text=help_text)
    if annotation is int:
        return forms.IntegerField(
            required=required, initial=initial, help_text=help_text, min_value=-_INT_LIMIT, max_value=_INT_LIMIT - 1
        )
    if annotation is float:
        return forms.FloatField(required=required, initial=initial, help_text=help_text)
    if annotation is str:
        return forms.CharField(required=required, initial=initial, help_text=help_text)
    if get_origin(annotation) is Literal:
        choices = [(str(choice), str(choice)) for choice in get_args(annotation)]
        return forms.ChoiceField(
            choices=([("", "---")] if not required else []) + choices,
            required=required,
            initial=initial,
            help_text=help_text,
        )
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        choices = [(str(member.value), member.name) for member in annotation]
        initial_value = initial.value if isinstance(initial, enum.Enum) else initial
        return forms.ChoiceField(
            choices=([("", "---")] if not required else []) + choices,
            required=required,
            initial=initial_value,
            help_text=help_text,
        )
    return StrictJSONField(required=required, initial=initial, help_text=f"JSON; {help_text}")


def _json_value(param: Param, value: Any) -> Any:
    annotation, _optional = _unwrap_optional(param.annotation)
    if get_origin(annotation) is Literal:
        for choice in get_args(annotation):
            if str(choice) == value:
                return choice
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        for member in annotation:
            if str(member.value) == value:
                return member.value
    return value


class JobSubmitForm(forms.Form):
    def __init__(self, spec: JobSpec, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spec = spec
        for param in spec.params:
            self.fields[param.name] = field_for(param)

    def job_data(self) -> dict[str, Any]:
        """The cleaned values as the job's JSON arguments (empty optional fields left out)."""
        data: dict[str, Any] = {}
        for param in self.spec.params:
            value = self.cleaned_data.get(param.name)
            if value in (None, "") and not param.required:
                continue
            data[param.name] = _json_value(param, value)
        return data


class ScheduleForm(JobSubmitForm):
    """*Submit a job*'s generated argument fields, plus when to run them (`schedule_*` fields, so
    they never clash with a job's own parameter names)."""

    def __init__(self, spec: JobSpec, *args: Any, instance: Any = None, **kwargs: Any) -> None:
        if instance is not None and not (args and args[0] is not None):
            kwargs["initial"] = {
                **{name: value for name, value in (instance.data or {}).items()},
                "schedule_cron": instance.cron,
                "schedule_interval_seconds": instance.interval_seconds,
                "schedule_run_at": instance.run_at,
                "schedule_timezone": instance.timezone,
                "schedule_enabled": instance.enabled,
                "schedule_missed": instance.missed,
            }
        super().__init__(spec, *args, **kwargs)
        self.fields["schedule_cron"] = forms.CharField(
            label="cron",
            required=False,
            max_length=200,
            help_text="5 fields, e.g. 59 23 * * * (or an interval, or a time)",
        )
        self.fields["schedule_interval_seconds"] = forms.IntegerField(
            label="every (seconds)", required=False, min_value=1
        )
        self.fields["schedule_run_at"] = forms.DateTimeField(label="once at", required=False)
        self.fields["schedule_timezone"] = forms.CharField(label="time zone", initial="UTC", max_length=64)
        self.fields["schedule_enabled"] = forms.BooleanField(label="enabled", required=False, initial=True)
        self.fields["schedule_missed"] = forms.ChoiceField(
            label="missed runs", choices=[("skip", "Skip"), ("catch_up", "Run once to catch up")], initial="skip"
        )

    def schedule_fields(self) -> dict[str, Any]:
        """The timing, as `jobs.schedules.schedule_create` takes it."""
        data = self.cleaned_data
        return {
            "cron": data.get("schedule_cron") or "",
            "interval_seconds": data.get("schedule_interval_seconds"),
            "run_at": data.get("schedule_run_at"),
            "timezone": data.get("schedule_timezone") or "UTC",
            "enabled": bool(data.get("schedule_enabled")),
            "missed": data.get("schedule_missed") or "skip",
        }
