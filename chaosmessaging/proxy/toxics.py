"""Toxic definitions: the types Toxiproxy documents, their attributes, defaults and validation.

A `Toxic` is configuration only (what the API shows and accepts). How a toxic acts on the bytes of
one connection lives in `link.py`, which reads these objects live, so a toxic added, updated or
removed through the API takes effect on connections that are already open.

Attributes are integers, as in Toxiproxy (Go `int64` fields): an integral float such as `100.0`
is accepted, anything else is a 400 `bad request body`. Unknown attributes are ignored, as Go's
JSON decoder does.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from .errors import INVALID_STREAM, INVALID_TOXIC_TYPE, bad_request, missing_field

__all__ = ["STREAMS", "TOXIC_TYPES", "Toxic", "new_toxic", "update_toxic"]

STREAMS = ("upstream", "downstream")

# type -> attributes with their defaults; units follow Toxiproxy's README:
#   latency     latency, jitter: ms               bandwidth   rate: KB/s
#   slow_close  delay: ms                         timeout     timeout: ms (0 = never close)
#   reset_peer  timeout: ms before the RST        slicer      average_size, size_variation: bytes,
#   limit_data  bytes: bytes before close                     delay: microseconds between slices
TOXIC_TYPES: dict[str, dict[str, int]] = {
    "latency": {"latency": 0, "jitter": 0},
    "bandwidth": {"rate": 0},
    "slow_close": {"delay": 0},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "slicer": {"average_size": 0, "size_variation": 0, "delay": 0},
    "limit_data": {"bytes": 0},
}

# Every created or updated toxic gets a fresh uid: a connection draws "does this toxic apply to
# me?" (toxicity) once per uid and keeps per-toxic state (bytes sent, timers) under it.
_uids = itertools.count(1)


@dataclass
class Toxic:
    """One toxic of a proxy, as the API shows it."""

    name: str
    type: str
    stream: str
    toxicity: float
    attributes: dict[str, int]
    uid: int = field(default_factory=lambda: next(_uids), compare=False)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": dict(self.attributes),
        }


def new_toxic(body: object) -> Toxic:
    """Build a toxic from a create request body, with Toxiproxy's defaults and errors."""
    if not isinstance(body, dict):
        raise bad_request("expected a JSON object")
    stream = body.get("stream") or "downstream"
    if stream not in STREAMS:
        raise INVALID_STREAM
    toxic_type = body.get("type")
    if not toxic_type:
        raise missing_field("type")
    if not isinstance(toxic_type, str) or toxic_type not in TOXIC_TYPES:
        raise INVALID_TOXIC_TYPE
    name = body.get("name") or f"{toxic_type}_{stream}"
    if not isinstance(name, str):
        raise bad_request("name must be a string")
    toxicity = _toxicity(body.get("toxicity", 1.0))
    attributes = dict(TOXIC_TYPES[toxic_type])
    attributes.update(_attributes(toxic_type, body.get("attributes")))
    return Toxic(
        name=name, type=toxic_type, stream=stream, toxicity=toxicity, attributes=attributes
    )


def update_toxic(old: Toxic, body: object) -> Toxic:
    """A copy of `old` with the attributes/toxicity of an update body (name/type/stream stay)."""
    if not isinstance(body, dict):
        raise bad_request("expected a JSON object")
    attributes = dict(old.attributes)
    attributes.update(_attributes(old.type, body.get("attributes")))
    toxicity = _toxicity(body["toxicity"]) if "toxicity" in body else old.toxicity
    return Toxic(
        name=old.name, type=old.type, stream=old.stream, toxicity=toxicity, attributes=attributes
    )


def _toxicity(value: object) -> float:
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise bad_request(f"toxicity must be a number between 0 and 1, got {value!r}")
    return float(value)


def _attributes(toxic_type: str, raw: object) -> dict[str, int]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise bad_request("attributes must be a JSON object")
    known = TOXIC_TYPES[toxic_type]
    result: dict[str, int] = {}
    for key, value in raw.items():
        if key not in known:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value != int(value)
        ):
            raise bad_request(
                f"attribute {key!r} of a {toxic_type} toxic must be an integer, got {value!r}"
            )
        result[key] = int(value)
    return result
