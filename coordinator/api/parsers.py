"""The one JSON parser of the platform: DRF's parser and the dialect views that read a body
themselves (`json_body`) both go through `loads_strict`.

Python's `json` accepts more than a database or a serializer can hold, and some of it crashed the
request with a 500: nesting past the interpreter's recursion limit, `NaN`/`Infinity`, numbers that
overflow to infinity (`1e999`), and lone UTF-16 surrogates (`"\\ud800"`), which no UTF-8 column
stores. Each is refused as invalid JSON, which every dialect answers with its 400.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def _refuse_lone_surrogates(data: Any) -> None:
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not item.isascii():
                item.encode("utf-8")  # UnicodeEncodeError (a ValueError) for a lone surrogate
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def loads_strict(text: str | bytes) -> Any:
    """`json.loads`, refusing (ValueError) what the module docstring lists."""
    try:
        data = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
    _refuse_lone_surrogates(data)
    return data


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser on `loads_strict` (every API view's, through DEFAULT_PARSER_CLASSES)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return loads_strict(stream.read().decode(encoding))
        except ValueError as exc:  # UnicodeDecodeError and UnicodeEncodeError included
            raise ParseError(f"JSON parse error - {str(exc)[:200]}") from exc
