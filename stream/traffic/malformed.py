"""Broken records, made from a real event, that the contract must reject.

Kinds: ``invalid_json`` (truncated, trailing junk, a Python repr, binary framing),
``schema_violation`` (missing field, wrong type, unknown event_type, extra property, bad enum
or pattern), ``absurd_value`` (a number outside the contract's min/max, or an occurred_at
that is no time), ``oversized`` (a valid-looking object over 64 KiB, which also breaks a
maxLength or additionalProperties), ``not_an_object`` (a JSON array, number, string, null
or boolean). No value contains a newline byte, so files of records stay line-delimited.
"""

from __future__ import annotations

import itertools
import random
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import orjson

MALFORMED_KINDS: Final[tuple[str, ...]] = (
    "invalid_json",
    "schema_violation",
    "absurd_value",
    "oversized",
    "not_an_object",
)
# Oversized records are rare because they are big; the rest are about equally likely.
MALFORMED_KIND_WEIGHTS: Final[tuple[float, ...]] = (0.25, 0.3, 0.2, 0.1, 0.15)
_KIND_CUMULATIVE: Final = tuple(itertools.accumulate(MALFORMED_KIND_WEIGHTS))

# Above the contract's 64 KiB and well below Kafka's default 1 MB max.message.bytes.
OVERSIZED_MIN_BYTES: Final = 70 * 1024
OVERSIZED_MAX_BYTES: Final = 200 * 1024

_REQUIRED_PAYLOAD: Final[dict[str, tuple[str, ...]]] = {
    "account.created": ("account_kind", "signup_method", "email_domain"),
    "account.login": ("success", "method"),
    "listing.created": ("title", "category", "price", "currency", "quantity"),
    "order.placed": ("amount", "currency", "item_count", "shipping_country"),
    "payment.attempted": ("amount", "currency", "card_bin", "card_fingerprint", "outcome"),
    "message.sent": ("recipient_id", "length", "has_link"),
    "review.posted": ("rating", "text_length"),
}
_TOP_LEVEL: Final = (
    "event_type",
    "occurred_at",
    "schema_version",
    "entities",
    "context",
    "payload",
)
_CONTEXT: Final = ("ip", "device_id", "country")
_UNKNOWN_TYPES: Final = ("order.refunded", "account.deleted", "cart.updated", "Order.Placed")
# A field of each type given a value of the wrong JSON type.
_WRONG_TYPES: Final[dict[str, tuple[str, Any]]] = {
    "account.created": ("account_kind", 1),
    "account.login": ("success", "yes"),
    "listing.created": ("quantity", "3"),
    "order.placed": ("amount", "string"),
    "payment.attempted": ("amount", "string"),
    "message.sent": ("has_link", "false"),
    "review.posted": ("rating", "5"),
}
# A value outside a field's enum or pattern (or, where there is none, its integer type).
_BAD_ENUMS: Final[dict[str, tuple[str, Any]]] = {
    "account.created": ("signup_method", "facebook"),
    "account.login": ("method", "magic_link"),
    "listing.created": ("currency", "dollars"),
    "order.placed": ("shipping_country", "usa"),
    "payment.attempted": ("outcome", "pending"),
    "message.sent": ("recipient_id", ""),
    "review.posted": ("rating", 4.5),
}
# Out-of-range values of each type's numeric fields.
_ABSURD_NUMBERS: Final[dict[str, tuple[tuple[str, float], ...]]] = {
    "listing.created": (("price", -12.5), ("price", 1e9), ("quantity", 0), ("quantity", 10**6)),
    "order.placed": (("amount", -49.99), ("amount", 1e9), ("item_count", 0), ("item_count", 10**5)),
    "payment.attempted": (("amount", -5.0), ("amount", 1e9), ("amount", 0)),
    "message.sent": (("length", -1), ("length", 10**7)),
    "review.posted": (("rating", 9), ("rating", 0), ("rating", -1)),
}
_NOT_A_TIME: Final[tuple[object, ...]] = (
    "yesterday",
    "2026-02-30T10:00:00.000Z",
    "2026-11-02 13:45:07",
    "1793631907123",
    "",
    1793631907123,
)
_PAD_WORDS: Final = ("lorem", "ipsum", "handmade", "vintage", "gift", "sale", "free", "ship")
_NO_NEWLINES: Final = bytes(b for b in range(256) if b not in (0x0A, 0x0D))

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Corruption:
    kind: str
    value: bytes
    key: bytes | None


def corrupt(event: dict[str, Any], key: bytes, rnd: random.Random) -> Corruption:
    """A broken record made from ``event`` (which is left unchanged)."""
    kind = MALFORMED_KINDS[bisect_right(_KIND_CUMULATIVE, rnd.random() * _KIND_CUMULATIVE[-1])]
    # A deep copy: the event's parts may be shared with other events of its session.
    copy: dict[str, Any] = orjson.loads(orjson.dumps(event))
    value, kept_key = _BREAKERS[kind](copy, rnd)
    return Corruption(kind, value, key if kept_key else None)


# Each breaker returns the broken value and whether the record keeps its key.
Breaker = Callable[[dict[str, Any], random.Random], tuple[bytes, bool]]


def _invalid_json(event: dict[str, Any], rnd: random.Random) -> tuple[bytes, bool]:
    raw = orjson.dumps(event)
    draw = rnd.random()
    if draw < 0.5:
        # Any proper prefix of a JSON object is invalid: the closing brace is missing.
        return raw[: 1 + int(rnd.random() * (len(raw) - 1))], True
    if draw < 0.7:
        return raw + _pick((b"}", b",", b"]", b'"', b"{"), rnd), True
    if draw < 0.85:
        # What a producer that called str() on a dict would send: single quotes, None.
        return repr(event).encode(), True
    # Binary framing (a schema-registry magic byte, then bytes) sent to a JSON topic.
    body = bytes(_pick(_NO_NEWLINES, rnd) for _ in range(20 + int(rnd.random() * 300)))
    return b"\x00" + body, False


def _schema_violation(event: dict[str, Any], rnd: random.Random) -> tuple[bytes, bool]:
    event_type: str = event["event_type"]
    payload: dict[str, Any] = event["payload"]
    draw = int(rnd.random() * 8)
    if draw == 0:
        del event[_pick(_TOP_LEVEL, rnd)]
    elif draw == 1:
        del payload[_pick(_REQUIRED_PAYLOAD[event_type], rnd)]
    elif draw == 2:
        del event["context"][_pick(_CONTEXT, rnd)]
    elif draw == 3:
        event["entities"]["user_id"] = None
    elif draw == 4:
        field, wrong = _WRONG_TYPES[event_type]
        payload[field] = wrong
    elif draw == 5:
        event["event_type"] = _pick(_UNKNOWN_TYPES, rnd)
    elif draw == 6:
        where = int(rnd.random() * 3)
        if where == 0:
            event["debug"] = True
        elif where == 1:
            payload["coupon_code"] = "SAVE10"
        else:
            event["context"]["user_agent"] = "Mozilla/5.0"
    else:
        field, bad = _BAD_ENUMS[event_type]
        payload[field] = bad
    return orjson.dumps(event), True


def _absurd_value(event: dict[str, Any], rnd: random.Random) -> tuple[bytes, bool]:
    numbers = _ABSURD_NUMBERS.get(event["event_type"], ())
    if numbers and rnd.random() < 0.75:
        field, absurd = _pick(numbers, rnd)
        event["payload"][field] = absurd
    else:
        event["occurred_at"] = _pick(_NOT_A_TIME, rnd)
    return orjson.dumps(event), True


def _oversized(event: dict[str, Any], rnd: random.Random) -> tuple[bytes, bool]:
    size = OVERSIZED_MIN_BYTES + int(rnd.random() * (OVERSIZED_MAX_BYTES - OVERSIZED_MIN_BYTES))
    chunk = " ".join(_pick(_PAD_WORDS, rnd) for _ in range(200))
    padding = (chunk * (size // len(chunk) + 1))[:size]
    if event["event_type"] == "listing.created":
        event["payload"]["title"] = padding  # far beyond the title's maxLength of 200
    elif rnd.random() < 0.5:
        event["padding"] = padding  # not a property of the envelope
    else:
        event["payload"]["notes"] = padding  # nor of any payload
    return orjson.dumps(event), True


def _not_an_object(event: dict[str, Any], rnd: random.Random) -> tuple[bytes, bool]:
    shapes: tuple[object, ...] = ([event], 42, 3.14, event["event_type"], None, True, [])
    return orjson.dumps(_pick(shapes, rnd)), False


_BREAKERS: Final[dict[str, Breaker]] = {
    "invalid_json": _invalid_json,
    "schema_violation": _schema_violation,
    "absurd_value": _absurd_value,
    "oversized": _oversized,
    "not_an_object": _not_an_object,
}


def _pick(options: Sequence[T], rnd: random.Random) -> T:
    return options[int(rnd.random() * len(options))]
