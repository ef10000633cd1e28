"""From raw message bytes to a validated message, or to the answer for a message that is not one.

The fast path validates the bytes in one `model_validate_json` call. Only when that fails does the slow
path parse the JSON to decide between a dead letter (too large, not JSON, not an object, no usable
`type`, no id to answer to, bad reference data) and an `INVALID_PAYLOAD` rejection (contracts.md
§Validation). Nothing here reads state, so the same bytes always get the same answer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import orjson
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from contracts.inbound import ACCOUNT_TYPES, CLAIM_TYPES, INBOUND, INBOUND_TYPES, InboundMessage
from contracts.outbound import ClaimRequestType, DeadLetter, Outbound
from contracts.types import ID_RE
from contracts.wire import Emitted, emit
from worker.domain.accounts import account_rejection
from worker.domain.claims import rejection_event
from worker.domain.errors import Code, Rejection

MAX_MESSAGE_BYTES = 1 << 20
DEAD_LETTER_PAYLOAD_BYTES = 64 << 10


class Source(NamedTuple):
    """Where a message came from: topic, partition, offset (replay: "replay", 0, line number)."""

    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class Decoded:
    """Either a valid message to adjudicate, or the events that already answer the bytes."""

    message: InboundMessage | None
    events: list[Emitted]


def dead_letter(raw: bytes, source: Source, error: str) -> DeadLetter:
    return DeadLetter.build(
        schema_version=1,
        type="dead_letter",
        source_topic=source.topic,
        partition=source.partition,
        offset=source.offset,
        error=error,
        payload_b64=base64.b64encode(raw[:DEAD_LETTER_PAYLOAD_BYTES]).decode("ascii"),
        payload_bytes=len(raw),
        payload_sha256=hashlib.sha256(raw).hexdigest(),
    )


def decode(raw: bytes, source: Source, now: str) -> Decoded:
    """Validate one message; never raises."""
    if len(raw) > MAX_MESSAGE_BYTES:
        return Decoded(None, [emit(dead_letter(raw, source, "message larger than 1 MiB"))])
    try:
        message = INBOUND.validate_json(raw)
        if (b"NaN" in raw or b"Infinity" in raw) and not _strict_json(raw):
            return Decoded(None, [emit(dead_letter(raw, source, "not valid JSON: NaN or Infinity"))])
        return Decoded(message, [])
    except ValidationError as exc:
        try:
            return Decoded(None, [emit(_answer_invalid(raw, source, exc, now))])
        except Exception as answer_error:  # e.g. a lone surrogate escape (\ud800) in member_id, which
            # Python's parser takes but no UTF-8 answer can repeat: the message itself is unusable
            error = f"not answerable: {type(answer_error).__name__}"
            return Decoded(None, [emit(dead_letter(raw, source, error))])
    except Exception as exc:  # a validator bug must not stop the worker: keep the message
        return Decoded(None, [emit(dead_letter(raw, source, f"validation failed: {type(exc).__name__}"))])


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes) -> Any:
    """The JSON value of `raw`; raises ValueError (or RecursionError) when it is not JSON. orjson
    first (C, ~5× faster); the standard parser where orjson refuses, which is also for integers
    beyond 64 bits (valid JSON: the field then gets `INVALID_PAYLOAD`). NaN and Infinity are not
    JSON for either, nor is anything but UTF-8 (RFC 8259 §8.1: no UTF-16/32, no byte order mark)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:  # decoded strictly first: bytes would let json guess UTF-16/32
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)


def _strict_json(raw: bytes) -> bool:
    """Whether `raw` is JSON as RFC 8259 defines it. The validator's parser takes NaN and Infinity
    (even in an unknown field), which are not JSON: only bytes that contain those words (rare) are
    parsed a second time, strictly."""
    try:
        parse_json(raw)
    except (ValueError, RecursionError):
        return False
    return True


def _answer_invalid(raw: bytes, source: Source, exc: ValidationError, now: str) -> Outbound:
    try:
        data = parse_json(raw)
    except (ValueError, RecursionError) as parse_error:
        return dead_letter(raw, source, f"not valid JSON: {type(parse_error).__name__}")
    if not isinstance(data, dict):
        return dead_letter(raw, source, "not a JSON object")
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in INBOUND_TYPES:
        return dead_letter(raw, source, "missing or unusable type")
    field, message = describe(exc.errors()[0])
    if kind not in CLAIM_TYPES and kind not in ACCOUNT_TYPES:
        return dead_letter(raw, source, f"invalid {kind}: {field}: {message}")
    id_name = "claim_id" if kind in CLAIM_TYPES else "request_id"
    ident = data.get(id_name)
    if not isinstance(ident, str) or not ID_RE.fullmatch(ident):
        return dead_letter(raw, source, f"missing or invalid {id_name}")
    member = data.get("member_id")
    member_id = member if isinstance(member, str) else None
    error = Rejection(Code.INVALID_PAYLOAD, f"{field}: {message}", field)
    digest = hashlib.sha256(raw).hexdigest()
    if kind in CLAIM_TYPES:
        return rejection_event(cast(ClaimRequestType, kind), ident, member_id, error, digest, now)
    return account_rejection(
        ident, member_id, kind, error, f"{ident}:request_rejected:INVALID_PAYLOAD:{digest[:12]}"
    )


_PREFIXED = re.compile(r"^(?:Value error, )?([A-Za-z_][\w.\[\]]*): (.+)$")
_MESSAGES = {
    "missing": "required field is missing",
    "int_type": "must be a JSON integer",
    "int_parsing": "must be a JSON integer",
    "int_from_float": "must be a JSON integer",
    "bool_type": "must be a JSON boolean",
    "bool_parsing": "must be a JSON boolean",
    "string_type": "must be a string",
    "date_type": "must be a real calendar date YYYY-MM-DD",
    "date_parsing": "must be a real calendar date YYYY-MM-DD",
    "date_from_datetime_parsing": "must be a real calendar date YYYY-MM-DD",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "string_too_short": "must not be empty",
}


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def describe(error: ErrorDetails) -> tuple[str, str]:
    """(field path, plain message) of a pydantic error, the union tag dropped from the path."""
    loc = tuple(error["loc"][1:])
    field = _path(loc)
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "value_error":
        text = str(ctx.get("error", error["msg"]))
        match = _PREFIXED.match(text)
        if match:
            sub = match.group(1)
            return (f"{field}.{sub}" if field and not sub.startswith(field) else sub), match.group(2)
        return field, text
    if kind in _MESSAGES:
        return field, _MESSAGES[kind]
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        if "T" in pattern:
            return field, "must be an ISO 8601 timestamp with an offset"
        if "A-Za-z" in pattern:
            return field, "must be an id of 1-64 characters from [A-Za-z0-9._:-]"
        return field, "must be a month YYYY-MM"
    if kind == "literal_error":
        return field, "must be one of " + str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
    if kind in ("too_short", "too_long") and loc == ("lines",):
        return field, "must have 1-200 lines"
    if field == "schema_version":
        return field, "must be the integer 1"
    if kind in ("greater_than_equal", "greater_than"):
        return field, f"must be at least {ctx.get('ge', ctx.get('gt'))}"
    if kind in ("less_than_equal", "less_than"):
        return field, f"must be at most {ctx.get('le', ctx.get('lt'))}"
    return field, str(error["msg"])
