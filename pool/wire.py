"""The seed's wire format: message dicts with its exact keys, timestamps, and the `to` grammar."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from coordinator.api.parsers import loads_strict
from pool.errors import InvalidTargetError
from pool.models import SLUG_PATTERN, Message

MESSAGE_KEYS = ["id", "ts", "from", "to", "type", "title", "body", "parent_id", "meta"]
MAX_DEVICE_ID = 2**63 - 1

_DEVICE_ONE = re.compile(r"device:(\d{1,19})")
_DEVICE_LIST = re.compile(r"device:(\[.*\])", re.DOTALL)
_DEVICE_SET = re.compile(r"device:(tag|group):(.*)", re.DOTALL)
_SLUG = re.compile(SLUG_PATTERN)
_USER = re.compile(r"user:([^\s@:]+@[^\s@]+\.[^\s@]+)")


def format_ts(value: datetime) -> str:
    """`2026-06-03T12:34:56Z`: UTC, second precision."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ts(value: str) -> datetime:
    """Parse the seed's `ts` (also accepts fractions and offsets); naive means UTC."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def message_to_wire(message: Message) -> dict[str, Any]:
    """One message as the seed writes it (one JSONL line / one JSON object)."""
    return {
        "id": message.msg_id,
        "ts": format_ts(message.ts),
        "from": message.sender,
        "to": message.to,
        "type": message.type,
        "title": message.title,
        "body": message.body,
        "parent_id": message.parent_id,
        "meta": message.meta,
    }


def message_line(message: Message) -> bytes:
    return (json.dumps(message_to_wire(message), ensure_ascii=False, separators=(",", ":")) + "\n").encode()


@dataclass(frozen=True)
class Target:
    """A parsed `to`: all devices, a set of device ids, the devices of a tag or group, or a user's email."""

    all_devices: bool = False
    device_ids: tuple[int, ...] = ()
    user_email: str | None = None
    tag: str | None = None
    group: str | None = None

    @property
    def is_devices(self) -> bool:
        return self.all_devices or bool(self.device_ids) or self.is_set

    @property
    def is_set(self) -> bool:
        """A tag or a group: the devices matching it when the task is sent (and later, if continuous)."""
        return self.tag is not None or self.group is not None

    def canonical(self) -> str:
        if self.tag is not None:
            return f"device:tag:{self.tag}"
        if self.group is not None:
            return f"device:group:{self.group}"
        if self.all_devices:
            return "device:*"
        if self.user_email is not None:
            return f"user:{self.user_email}"
        if len(self.device_ids) == 1:
            return f"device:{self.device_ids[0]}"
        return "device:[" + ",".join(str(i) for i in self.device_ids) + "]"


def _device_id(raw: Any) -> int:
    # Ids compare as strings in the seed, so "1" and 1 are the same device.
    if isinstance(raw, bool):
        raise InvalidTargetError(f"{raw!r} is not a device id.")
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, str) and raw.strip().isdigit() and len(raw.strip()) <= 19:
        value = int(raw.strip())
    else:
        raise InvalidTargetError(f"{raw!r} is not a device id (a positive integer).")
    if not 1 <= value <= MAX_DEVICE_ID:
        raise InvalidTargetError(f"{raw!r} is not a device id (a positive integer).")
    return value


def parse_target(raw: str) -> Target:
    """Parse `to` with the one grammar: device:<id> | device:* | device:[<id>,...] | device:tag:<slug> |
    device:group:<slug> | user:<email>."""
    text = raw.strip() if isinstance(raw, str) else ""
    if text == "device:*":
        return Target(all_devices=True)
    if match := _DEVICE_ONE.fullmatch(text):
        return Target(device_ids=(_device_id(match.group(1)),))
    if match := _DEVICE_LIST.fullmatch(text):
        try:
            items = loads_strict(match.group(1))
        except ValueError:
            items = None
        if not isinstance(items, list) or not items:
            raise InvalidTargetError("A device list is written device:[<id>,<id>,...] with at least one integer id.")
        ids = sorted({_device_id(item) for item in items})
        return Target(device_ids=tuple(ids))
    if match := _DEVICE_SET.fullmatch(text):
        kind, slug = match.group(1), match.group(2)
        if not _SLUG.fullmatch(slug):
            raise InvalidTargetError(
                f"A {kind} is written device:{kind}:<slug>, the slug 1 to 64 lower-case letters, digits or dashes."
            )
        return Target(tag=slug) if kind == "tag" else Target(group=slug)
    if match := _USER.fullmatch(text):
        return Target(user_email=match.group(1).lower())
    raise InvalidTargetError()
