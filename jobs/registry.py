"""The typed registry of job functions (pytasks' taskpacks) and argument validation.

Declare a job anywhere in an installed app's `jobs.py`:

    @job(name="csv_export", timeout=600)
    def csv_export(ctx: JobContext, dataset: Literal["jobs", "pool", "farm"] = "jobs") -> dict: ...

A parameter annotated `JobContext` receives the running job's context (owner, progress); every
other parameter is a caller argument validated against its annotation before a job is created.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from django_q.conf import Conf

from jobs.errors import ArgumentError

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_QUEUE = "default"


def queue_list_key(queue: str) -> str:
    """The django-q2 cluster name (the broker's list key) of a job queue: `default` is the site's
    own name (Q_CLUSTER["name"]), so a plain `qcluster` and any other `async_task` keep theirs."""
    return Conf.PREFIX if queue == DEFAULT_QUEUE else queue


# A django-tasks priority runs on a band of its queue: above 0 on `<queue>-high`, below 0 on
# `<queue>-low`. Every cluster that serves a queue serves its bands too, and takes `-high` entries
# before the queue's own and those before `-low` (jobs.broker).
HIGH_BAND, LOW_BAND = "-high", "-low"


def queue_band(queue: str, priority: int) -> str:
    """The queue a job of this django-tasks `priority` runs on."""
    return f"{queue}{HIGH_BAND if priority > 0 else LOW_BAND if priority < 0 else ''}"


_MISSING = inspect.Parameter.empty
# Integers beyond 64 bits cannot be stored or compared safely in every database and client.
_INT_LIMIT = 2**63


@dataclass(frozen=True)
class Param:
    name: str
    annotation: Any
    default: Any = _MISSING

    @property
    def required(self) -> bool:
        return self.default is _MISSING


@dataclass
class JobSpec:
    name: str
    func: Callable[..., Any]
    params: list[Param]
    context_param: str | None
    protected: bool = False
    # Only for a signed-in user: jobs that read or write the caller's data (exports, imports).
    signed_in: bool = False
    roles: tuple[str, ...] = ()
    timeout: int | None = None
    max_attempts: int = 1
    backoff: float = 0.0
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # A protected job its holders may also run (`app_label.codename`), e.g. an admin bulk action's.
    permission: str = ""
    # The named queue whose clusters run it (`manage.py qcluster --queue NAME`).
    queue: str = DEFAULT_QUEUE
    # At most this many of the type run at once, across all clusters (None: no limit).
    max_running: int | None = None

    @property
    def permission_codename(self) -> str:
        return f"run_{self.name}"[:100]

    def backoff_for(self, attempt: int) -> float:
        """Seconds to wait before attempt `attempt + 1` (exponential in the attempts made)."""
        return float(self.backoff) * (2 ** max(0, attempt - 1))


_REGISTRY: dict[str, JobSpec] = {}
_QUEUE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


def queue_name_valid(name: str) -> bool:
    """Queue names are short lower-case words (they are django-q2 cluster names too)."""
    return bool(_QUEUE_NAME.fullmatch(name))


class Choice(str):
    """A text argument whose allowed values are known only once every app has registered its
    own (e.g. the export datasets); subclasses say which in `choices()`."""

    @classmethod
    def choices(cls) -> list[str]:
        raise NotImplementedError


def job(
    *,
    name: str | None = None,
    protected: bool = False,
    signed_in: bool | None = None,
    roles: tuple[str, ...] | list[str] = (),
    timeout: int | None = None,
    max_attempts: int = 1,
    backoff: float = 0.0,
    queue: str = DEFAULT_QUEUE,
    max_running: int | None = None,
) -> Callable[[F], F]:
    """Register a job function under `name` (default: `<module>.<function>`)."""

    def decorate(func: F) -> F:
        register(
            func,
            name=name,
            protected=protected,
            signed_in=signed_in,
            roles=tuple(roles),
            timeout=timeout,
            max_attempts=max_attempts,
            backoff=backoff,
            queue=queue,
            max_running=max_running,
        )
        return func

    return decorate


def register(
    func: Callable[..., Any],
    *,
    name: str | None = None,
    protected: bool = False,
    signed_in: bool | None = None,
    roles: tuple[str, ...] = (),
    timeout: int | None = None,
    max_attempts: int = 1,
    backoff: float = 0.0,
    permission: str = "",
    queue: str = DEFAULT_QUEUE,
    max_running: int | None = None,
) -> JobSpec:
    """Add `func` to the registry; re-registering the same name replaces it."""
    from jobs.context import JobContext

    job_name = name or f"{func.__module__}.{func.__qualname__}"
    if not queue_name_valid(queue):
        raise ValueError(f"job {job_name}: queue {queue!r} is not a short lower-case name")
    if max_running is not None and max_running < 1:
        raise ValueError(f"job {job_name}: max_running must be at least 1")
    hints = typing.get_type_hints(func)
    params: list[Param] = []
    context_param: str | None = None
    for parameter in inspect.signature(func).parameters.values():
        annotation = hints.get(parameter.name, Any)
        if annotation is JobContext:
            context_param = parameter.name
            continue
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(f"job {job_name}: *args/**kwargs cannot be validated")
        params.append(Param(parameter.name, annotation, parameter.default))
    spec = JobSpec(
        name=job_name,
        func=func,
        params=params,
        context_param=context_param,
        protected=protected,
        # Protected implies signed in unless said otherwise (the django-tasks job: trusted code).
        signed_in=protected if signed_in is None else signed_in,
        roles=roles,
        timeout=timeout,
        max_attempts=max(1, max_attempts),
        backoff=backoff,
        description=(inspect.getdoc(func) or "").split("\n")[0],
        permission=permission,
        queue=queue,
        max_running=max_running,
    )
    _REGISTRY[job_name] = spec
    return spec


def get_spec(name: str) -> JobSpec | None:
    return _REGISTRY.get(name)


def any_limited() -> bool:
    """Whether some job type declares `max_running` (claims of others then skip the check)."""
    return any(spec.max_running for spec in _REGISTRY.values())


def all_specs() -> list[JobSpec]:
    return sorted(_REGISTRY.values(), key=lambda spec: spec.name)


def type_label(annotation: Any) -> str:
    """How pytasks shows an argument type: `str(annotation)`, e.g. `<class 'int'>`."""
    return str(annotation)


# --- validation -------------------------------------------------------------------------------


def validate_args(spec: JobSpec, args: Any, *, strict: bool) -> dict[str, Any]:
    """Check caller arguments against the annotations; return them as stored JSON.

    `strict` is the pytasks dialect: scalar types must match exactly (`1` is not a float,
    `true` is not an int). Otherwise an int is accepted where a float is expected.
    Order of checks as in pytasks: missing, then type, then unexpected keys.
    """
    if not isinstance(args, dict):
        raise ArgumentError("type", "args", "dict", "the arguments must be a JSON object")
    known = {param.name for param in spec.params}
    for param in spec.params:
        if param.name not in args:
            if param.required:
                raise ArgumentError("missing", param.name, type_label(param.annotation))
            continue
        try:
            convert(param.annotation, args[param.name], strict=strict)
            # PostgreSQL cannot store NUL in text or jsonb; refuse it here rather than fail later.
            if "\\u0000" in json.dumps(args[param.name]):
                raise ValueError("NUL characters are not allowed")
        except (TypeError, ValueError) as exc:
            raise ArgumentError("type", param.name, type_label(param.annotation), str(exc)) from exc
    for key in args:
        if key not in known:
            raise ArgumentError("extra", str(key), "")
    return dict(args)


def build_kwargs(spec: JobSpec, args: dict[str, Any]) -> dict[str, Any]:
    """Turn stored JSON arguments into the Python values the function expects."""
    kwargs: dict[str, Any] = {}
    for param in spec.params:
        if param.name in args:
            kwargs[param.name] = convert(param.annotation, args[param.name], strict=False)
    return kwargs


def _is_typeddict(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, dict) and hasattr(annotation, "__total__")


def convert(annotation: Any, value: Any, *, strict: bool) -> Any:
    """Validate one JSON value against an annotation and build the Python value."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return value
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return convert(option, value, strict=strict)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise TypeError(f"expected {annotation}, got {type(value).__name__}")
    if origin is Literal:
        choices = get_args(annotation)
        if any(value == choice and type(value) is type(choice) for choice in choices):
            return value
        raise ValueError(f"expected one of {list(choices)}")
    if origin in (list, typing.List):  # noqa: UP006
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        (item_type,) = get_args(annotation) or (Any,)
        return [convert(item_type, item, strict=strict) for item in value]
    if origin in (dict, typing.Dict):  # noqa: UP006
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {type(value).__name__}")
        _key_type, value_type = get_args(annotation) or (str, Any)
        return {str(key): convert(value_type, item, strict=strict) for key, item in value.items()}
    if isinstance(annotation, type) and issubclass(annotation, Choice):
        if type(value) is str and value in annotation.choices():
            return value
        raise ValueError(f"expected one of {annotation.choices()}")
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        for member in annotation:
            if member.value == value and type(member.value) is type(value):
                return member
        raise ValueError(f"expected one of {[member.value for member in annotation]}")
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if not isinstance(value, dict):
            raise TypeError(f"expected an object for {annotation.__name__}")
        hints = typing.get_type_hints(annotation)
        names = {f.name for f in dataclasses.fields(annotation)}
        unknown = set(value) - names
        if unknown:
            raise ValueError(f"unexpected keys {sorted(unknown)}")
        built: dict[str, Any] = {}
        for f in dataclasses.fields(annotation):
            if f.name in value:
                built[f.name] = convert(hints.get(f.name, Any), value[f.name], strict=strict)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"missing key {f.name!r}")
        return annotation(**built)
    if _is_typeddict(annotation):
        if not isinstance(value, dict):
            raise TypeError(f"expected an object for {annotation.__name__}")
        hints = typing.get_type_hints(annotation)
        required = getattr(annotation, "__required_keys__", frozenset(hints))
        unknown = set(value) - set(hints)
        if unknown:
            raise ValueError(f"unexpected keys {sorted(unknown)}")
        for key in required:
            if key not in value:
                raise ValueError(f"missing key {key!r}")
        return {key: convert(hints[key], item, strict=strict) for key, item in value.items()}
    if annotation in (list, dict):
        if type(value) is not annotation:
            raise TypeError(f"expected {annotation.__name__}, got {type(value).__name__}")
        return value
    if annotation is bool:
        if type(value) is not bool:
            raise TypeError(f"expected bool, got {type(value).__name__}")
        return value
    if annotation is int:
        if type(value) is not int:
            raise TypeError(f"expected int, got {type(value).__name__}")
        if not -_INT_LIMIT <= value < _INT_LIMIT:
            raise ValueError("integer out of the 64-bit range")
        return value
    if annotation is float:
        if type(value) is float or (not strict and type(value) is int and abs(value) < _INT_LIMIT):
            return float(value)
        raise TypeError(f"expected float, got {type(value).__name__}")
    if annotation is str:
        if type(value) is not str:
            raise TypeError(f"expected str, got {type(value).__name__}")
        return value
    if value is None and annotation is type(None):
        return None
    raise TypeError(f"unsupported annotation {annotation!r}")
