"""The MQTT topic tree of edged's deployment protocol (version 1).

Everything lives under ``edged/v1``. A device owns ``edged/v1/devices/<id>/…``; it reads its desired state,
commands and chunk replies there, and writes its reported state, presence, status and replies there. It also reads
the desired state of the groups it belongs to, and writes chunk requests to ``edged/v1/market/chunks/req/<id>``.
The per-device ACL in ``deploy/acl`` follows exactly this shape (``%u`` is the device's MQTT user name, which must
equal its device id).
"""

from __future__ import annotations

import re

ROOT = "edged/v1"

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


#: MQTT user names of other roles on the shared broker: never a device id (a device provisioned under one of these
#: names would be that user for the broker's ACL). Compared case-insensitively.
RESERVED_DEVICE_IDS = frozenset({"market", "homeassistant"})


def check_id(value: str, what: str = "device id") -> str:
    """Return ``value`` if it is a valid device or group id (no MQTT wildcards or separators), else raise. A device
    id may not be one of :data:`RESERVED_DEVICE_IDS`."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}: 1-64 chars of letters, digits, '_', '.', '-'")
    if what == "device id" and value.lower() in RESERVED_DEVICE_IDS:
        raise ValueError(
            f"invalid {what} {value!r}: reserved for the broker's other users ({sorted(RESERVED_DEVICE_IDS)})"
        )
    return value


def device(device_id: str, leaf: str) -> str:
    """``edged/v1/devices/<id>/<leaf>``."""
    return f"{ROOT}/devices/{device_id}/{leaf}"


def desired(device_id: str) -> str:
    """Retained, signed desired state of one device (marketplace → device)."""
    return device(device_id, "desired")


def group_desired(group: str) -> str:
    """Retained, signed desired state of a group (marketplace → devices)."""
    return f"{ROOT}/groups/{group}/desired"


def reported(device_id: str) -> str:
    """Retained reported state (device → marketplace)."""
    return device(device_id, "reported")


def presence(device_id: str) -> str:
    """Retained ``online``/``offline`` (last will) presence of a device."""
    return device(device_id, "presence")


def cmd(device_id: str) -> str:
    """Signed one-off commands (marketplace → device)."""
    return device(device_id, "cmd")


def reply(device_id: str) -> str:
    """Command replies with the command's correlation id (device → marketplace)."""
    return device(device_id, "reply")


def status(device_id: str) -> str:
    """Progress and error events (device → marketplace)."""
    return device(device_id, "status")


def chunks(device_id: str) -> str:
    """Chunk replies addressed to one device (marketplace → device)."""
    return device(device_id, "chunks")


def chunk_request(device_id: str) -> str:
    """Chunk requests of one device (device → marketplace)."""
    return f"{ROOT}/market/chunks/req/{device_id}"


def service(client_id: str) -> str:
    """Retained presence of one running marketplace service (``edged market serve``), cleared when it stops."""
    return f"{ROOT}/market/service/{client_id}"


#: what the marketplace service subscribes to
CHUNK_REQUESTS = f"{ROOT}/market/chunks/req/+"
ALL_REPORTED = f"{ROOT}/devices/+/reported"
ALL_STATUS = f"{ROOT}/devices/+/status"
ALL_PRESENCE = f"{ROOT}/devices/+/presence"
ALL_REPLIES = f"{ROOT}/devices/+/reply"
ALL_SERVICES = f"{ROOT}/market/service/+"


def device_of(topic: str) -> str | None:
    """The device id in a ``edged/v1/devices/<id>/…`` or chunk-request topic, or ``None``."""
    parts = topic.split("/")
    if len(parts) >= 4 and parts[:3] == ["edged", "v1", "devices"]:
        return parts[3]
    if len(parts) == 6 and parts[2:5] == ["market", "chunks", "req"]:
        return parts[5]
    return None


def group_of(topic: str) -> str | None:
    """The group id in ``edged/v1/groups/<g>/desired``, or ``None``."""
    parts = topic.split("/")
    if len(parts) == 5 and parts[:3] == ["edged", "v1", "groups"] and parts[4] == "desired":
        return parts[3]
    return None
