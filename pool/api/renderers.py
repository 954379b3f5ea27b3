"""JSON Lines for `/pool/log`: one compact JSON object per line, as in the seed's day files."""

from __future__ import annotations

import json
from typing import Any

from rest_framework.renderers import BaseRenderer


class NDJSONRenderer(BaseRenderer):
    media_type = "application/x-ndjson"
    format = "jsonl"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        items = data if isinstance(data, list) else [data]  # an error envelope is one line
        return "".join(json.dumps(i, ensure_ascii=False, separators=(",", ":")) + "\n" for i in items).encode()
