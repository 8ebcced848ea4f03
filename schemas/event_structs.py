"""event.v1.json as msgspec Structs: a compiled accept-only check for the common case.

``EventValidator.decode`` parses with orjson as before and then runs
``msgspec.convert(event, EVENT_STRUCTS[event_type])`` on the parsed dict (in the compiled
fast path, ``schemas/fast_path.py``). If msgspec accepts,
the event is valid and the dict is returned as it is (the Structs are thrown away, so every
value keeps the type orjson gave it). If msgspec rejects, the fastjsonschema validator decides
and words the dead-letter detail, exactly as before this fast path existed.

So the Structs may be *stricter* than the schema, never looser. They are stricter in one
place only: JSON Schema's ``integer`` (and ``const: 1``) accepts a float without a fraction
such as ``1.0``, msgspec's ``int`` does not; such events take the slow path and are accepted
there. Everything else mirrors the schema one to one:

- ``additionalProperties: false`` on every object: ``forbid_unknown_fields=True``;
- ``required``: fields without a default; optional fields default to ``None``, and an
  optional field is ``| None`` only where the schema's type includes ``null``;
- ``minLength``/``maxLength`` (code points, as ``len``), ``minimum``/``maximum``/
  ``exclusiveMinimum``: ``msgspec.Meta``; ``type: number``: ``float``, which accepts ints
  and rejects booleans, as the schema does; ``type: integer``: ``int`` (rejects booleans);
- ``enum``/``const``: ``Literal``;
- ``pattern``: taken from the schema's ``$defs`` and properties, with every unescaped ``$``
  turned into ``\\Z`` as fastjsonschema does (ECMA-262 ``$`` is the end of the input; with
  Python's ``re.search`` it would also match before a final newline). Not in the Structs:
  after a Struct accepts, ``PatternCheck`` (fast_path.py) matches all of an event's
  patterns at once (``ENVELOPE_PATTERNS``, ``PAYLOAD_PATTERNS``), which costs a fifth of
  msgspec's call per pattern;
- the per-type ``allOf``/``if``/``then`` branch: one Struct per event type, whose
  ``event_type`` is that type's ``Literal`` (``decode`` picks it by ``event_type``), with the
  ``entities`` the branch requires non-null.

``tests/unit/test_validation_fast.py`` checks the Structs and the patterns against the
schema keyword by keyword, compares verdicts with fastjsonschema on generated traffic and on
mutations, and the one match with each pattern alone.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta, Struct

from schemas import EVENT_SCHEMA, load_schema
from schemas.fast_path import PatternCheck

# The same substitution fastjsonschema applies to every `pattern` (draft04.DOLLAR_FINDER).
_DOLLAR: Final = re.compile(r"(?<!\\)\$")


def python_pattern(ecma_pattern: str) -> str:
    """An ECMA-262 ``pattern`` as fastjsonschema compiles it for ``re.search``.

    >>> python_pattern("^[A-Z]{2}$")
    '^[A-Z]{2}\\\\Z'
    """
    return _DOLLAR.sub(r"\\Z", ecma_pattern)


_SCHEMA: Final = load_schema(EVENT_SCHEMA)
_DEFS: Final = _SCHEMA["$defs"]


def _pattern(*path: str) -> str:
    node: Any = _SCHEMA
    for token in path:
        node = node[token]
    return python_pattern(node["pattern"])


# Patterned strings are plain ``str`` here: their patterns are checked all at once by
# ``PatternCheck`` (PATTERN_CHECKS, below), after the Struct accepted everything else.
EventId = Annotated[str, Meta(min_length=1, max_length=64)]
Timestamp = str
EntityId = Annotated[str, Meta(min_length=1, max_length=64)]
Ipv4 = str
CountryCode = str
CurrencyCode = str
Amount = Annotated[float, Meta(gt=0, le=1000000)]
Id64 = Annotated[str, Meta(min_length=1, max_length=64)]
CardBin = str


class _Closed(Struct, forbid_unknown_fields=True, gc=False):
    """An object with ``additionalProperties: false``.

    ``gc=False``: the instances hold only scalars and other Structs, so they cannot form
    cycles, and they are dropped at once; untracked, the ~4 made per event do not push
    the collector into scanning the (large) scoring state.
    """


# -- envelope --------------------------------------------------------------------------


class Context(_Closed):
    ip: Ipv4
    device_id: Id64
    country: CountryCode


class Entities(_Closed):
    """account.created, account.login, message.sent: only ``user_id`` is required."""

    user_id: EntityId
    shop_id: EntityId | None = None
    listing_id: EntityId | None = None
    order_id: EntityId | None = None


class ShopListingEntities(_Closed):
    """listing.created, review.posted."""

    user_id: EntityId
    shop_id: EntityId
    listing_id: EntityId
    order_id: EntityId | None = None


class OrderEntities(_Closed):
    """order.placed."""

    user_id: EntityId
    shop_id: EntityId
    listing_id: EntityId
    order_id: EntityId


class PaymentEntities(_Closed):
    """payment.attempted. (Struct fields with defaults must come last; order is free.)"""

    user_id: EntityId
    order_id: EntityId
    shop_id: EntityId | None = None
    listing_id: EntityId | None = None


# -- payloads --------------------------------------------------------------------------


class AccountCreated(_Closed):
    account_kind: Literal["buyer", "seller"]
    signup_method: Literal["email", "google", "apple"]
    email_domain: Annotated[str, Meta(min_length=1, max_length=253)]


class AccountLogin(_Closed):
    success: bool
    method: Literal["password", "sso", "token"]


class ListingCreated(_Closed):
    title: Annotated[str, Meta(min_length=1, max_length=200)]
    category: Id64
    price: Amount
    currency: CurrencyCode
    quantity: Annotated[int, Meta(ge=1, le=10000)]


class OrderPlaced(_Closed):
    amount: Amount
    currency: CurrencyCode
    item_count: Annotated[int, Meta(ge=1, le=1000)]
    shipping_country: CountryCode


class PaymentAttempted(_Closed):
    amount: Amount
    currency: CurrencyCode
    card_bin: CardBin
    card_fingerprint: Id64
    outcome: Literal["approved", "declined", "error"]
    decline_reason: Id64 | None = None


class MessageSent(_Closed):
    recipient_id: Id64
    length: Annotated[int, Meta(ge=0, le=100000)]
    has_link: bool


class ReviewPosted(_Closed):
    rating: Annotated[int, Meta(ge=1, le=5)]
    text_length: Annotated[int, Meta(ge=0, le=100000)]


# -- one event Struct per event type ----------------------------------------------------


class AccountCreatedEvent(_Closed):
    event_id: EventId
    event_type: Literal["account.created"]
    occurred_at: Timestamp
    schema_version: Literal[1]
    entities: Entities
    context: Context
    payload: AccountCreated


class AccountLoginEvent(_Closed):
    event_id: EventId
    event_type: Literal["account.login"]
    occurred_at: Timestamp
    schema_version: Literal[1]
    entities: Entities
    context: Context
    payload: AccountLogin


class ListingCreatedEvent(_Closed):
    event_id: EventId
    event_type: Literal["listing.created"]
    occurred_at: Timestamp
    schema_version: Literal[1]
    entities: ShopListingEntities
    context: Context
    payload: ListingCreated


class OrderPlacedEvent(_Closed):
    event_id: EventId
    event_type: Literal["order.placed"]
    occurred_at: Timestamp
    schema_version: Literal[1]
    entities: OrderEntities
    context: Context
    payload: OrderPlaced


class PaymentAttemptedEvent(_Closed):
    event_id: EventId
    event_type: Literal["payment.attempted"]
    occurred_at: Timestamp
    schema_version: Literal[1]
    entities: PaymentEntities
    context: Context
    payload: PaymentAttempted


class MessageSentEvent(_Closed):
    event_id: EventId
    event_type: Literal["message.sent"]
    occurred_at: Timestamp
    schema_version: Literal[1]
    entities: Entities
    context: Context
    payload: MessageSent


class ReviewPostedEvent(_Closed):
    event_id: EventId
    event_type: Literal["review.posted"]
    occurred_at: Timestamp
    schema_version: Literal[1]
    entities: ShopListingEntities
    context: Context
    payload: ReviewPosted


EVENT_STRUCTS: Final[dict[str, type[Struct]]] = {
    "account.created": AccountCreatedEvent,
    "account.login": AccountLoginEvent,
    "listing.created": ListingCreatedEvent,
    "order.placed": OrderPlacedEvent,
    "payment.attempted": PaymentAttemptedEvent,
    "message.sent": MessageSentEvent,
    "review.posted": ReviewPostedEvent,
}


# -- patterns ---------------------------------------------------------------------------

# Every patterned string of an event, by path: the envelope's (every event type has them,
# in this order) and each payload's. tests/unit/test_validation_fast.py checks that these
# and the Structs together hold every keyword of the schema.
ENVELOPE_PATTERNS: Final[dict[tuple[str, ...], str]] = {
    ("event_id",): _pattern("$defs", "event_id"),
    ("occurred_at",): _pattern("$defs", "timestamp"),
    ("context", "ip"): _pattern("$defs", "ipv4"),
    ("context", "country"): _pattern("$defs", "country_code"),
}
PAYLOAD_PATTERNS: Final[dict[str, dict[str, str]]] = {
    "listing.created": {"currency": _pattern("$defs", "currency_code")},
    "order.placed": {
        "currency": _pattern("$defs", "currency_code"),
        "shipping_country": _pattern("$defs", "country_code"),
    },
    "payment.attempted": {
        "currency": _pattern("$defs", "currency_code"),
        "card_bin": _pattern("$defs", "payment.attempted", "properties", "card_bin"),
    },
}

PATTERN_CHECKS: Final[dict[str, PatternCheck]] = {
    event_type: PatternCheck(
        ENVELOPE_PATTERNS,
        PAYLOAD_PATTERNS.get(event_type, {}),
    )
    for event_type in EVENT_STRUCTS
}


def fast_accepts(event_type: str, event: dict[str, Any]) -> bool:
    """Whether the Structs and the patterns accept ``event`` (a parsed JSON object of type
    ``event_type``).

    True means valid under event.v1.json; False means "ask fastjsonschema".
    """
    try:
        msgspec.convert(event, EVENT_STRUCTS[event_type])
    except msgspec.ValidationError:
        return False
    return PATTERN_CHECKS[event_type](event)
