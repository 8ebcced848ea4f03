"""The contracts in schemas/: well-formed 2020-12 schemas, a compiled validator that agrees
with a real 2020-12 validator, and decode() reasons for every kind of bad input."""

from __future__ import annotations

import copy
import datetime
import ipaddress
import json
import random
import re
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any

import fastjsonschema
import orjson
import pytest
from jsonschema import Draft202012Validator

from schemas import (
    ALERT_SCHEMA,
    DEAD_LETTER_SCHEMA,
    EVENT_SCHEMA,
    EVENT_TYPES,
    load_schema,
)
from schemas.validation import (
    ALL_DEAD_LETTER_REASONS,
    DEAD_LETTER_REASONS,
    MAX_DETAIL_CHARS,
    MAX_EVENT_BYTES,
    EventValidator,
    Invalid,
    compile_validator,
    draft07_incompatibilities,
    validate_alert,
)

ALL_SCHEMAS = (EVENT_SCHEMA, ALERT_SCHEMA, DEAD_LETTER_SCHEMA)
EXAMPLES = resources.files("schemas").joinpath("examples")

FAST = {name: compile_validator(name) for name in ALL_SCHEMAS}
REFERENCE = {name: Draft202012Validator(load_schema(name)) for name in ALL_SCHEMAS}
VALIDATOR = EventValidator()

# ---------------------------------------------------------------- valid examples


def valid_event(event_type: str) -> dict[str, Any]:
    """A valid event of `event_type`: non-null only the entities the type requires."""
    entities: dict[str, Any] = {"user_id": "usr-1", "shop_id": None, "listing_id": None}
    payload: dict[str, Any]
    if event_type == "account.created":
        payload = {"account_kind": "buyer", "signup_method": "email", "email_domain": "example.com"}
    elif event_type == "account.login":
        payload = {"success": True, "method": "sso"}
    elif event_type == "listing.created":
        entities.update(shop_id="shp-1", listing_id="lst-1")
        payload = {
            "title": "Walnut side table",
            "category": "furniture",
            "price": 240.0,
            "currency": "USD",
            "quantity": 1,
        }
    elif event_type == "order.placed":
        entities.update(shop_id="shp-1", listing_id="lst-1", order_id="ord-1")
        payload = {"amount": 12.5, "currency": "USD", "item_count": 1, "shipping_country": "US"}
    elif event_type == "payment.attempted":
        entities.update(order_id="ord-1")
        payload = {
            "amount": 12.5,
            "currency": "USD",
            "card_bin": "411111",
            "card_fingerprint": "fp-1",
            "outcome": "approved",
        }
    elif event_type == "message.sent":
        payload = {"recipient_id": "usr-2", "length": 0, "has_link": False}
    elif event_type == "review.posted":
        entities.update(shop_id="shp-1", listing_id="lst-1")
        payload = {"rating": 4, "text_length": 120}
    else:
        raise AssertionError(event_type)
    return {
        "event_id": f"evt-{event_type}",
        "event_type": event_type,
        "occurred_at": "2026-11-02T13:45:07.123Z",
        "schema_version": 1,
        "entities": entities,
        "context": {"ip": "198.51.100.23", "device_id": "dev-1", "country": "US"},
        "payload": payload,
    }


def valid_alert() -> dict[str, Any]:
    return {
        "alert_id": "al-" + "0123456789abcdef" * 2,
        "schema_version": 1,
        "kind": "event",
        "detector": "hst-river/1",
        "event_type": "order.placed",
        "event_ids": ["evt-1"],
        "entity": {"type": "user", "id": "usr-1"},
        "score": 0.93,
        "threshold": 0.9,
        "occurred_at": "2026-11-02T13:45:07Z",
        "explanation": [
            {"feature": "amount", "value": 950.0, "baseline": 40.0, "direction": "high"},
        ],
        "source": {"topic": "marketplace.events", "partition": 0, "offset": 0},
    }


def valid_dead_letter() -> dict[str, Any]:
    return {
        "vigil.dlq.reason": "invalid_json",
        "vigil.dlq.detail": "unexpected character: line 1 column 1 (char 0)",
        "vigil.source.topic": "marketplace.events",
        "vigil.source.partition": "0",
        "vigil.source.offset": "42",
        "vigil.dlq.schema_version": "1",
    }


def fast_accepts(schema: str, instance: Any) -> bool:
    try:
        FAST[schema](instance)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


def reference_accepts(schema: str, instance: Any) -> bool:
    return bool(REFERENCE[schema].is_valid(instance))


DELETE = object()


def with_change(event: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `event` with the dotted `path` set to `value` (or removed if value is DELETE)."""
    changed = copy.deepcopy(event)
    *parents, last = path.split(".")
    node = changed
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return changed


# ---------------------------------------------------------------- (1) the schemas themselves


@pytest.mark.parametrize("name", ALL_SCHEMAS)
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://vigil.dev/schemas/{name}"
    assert schema["title"]
    assert schema["description"]


@pytest.mark.parametrize("name", ALL_SCHEMAS)
def test_schema_compiles_as_draft_07_without_change_of_meaning(name: str) -> None:
    assert draft07_incompatibilities(load_schema(name)) == []


def _schema_nodes(node: Any, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(node, dict):
        return
    yield path, node
    for keyword in ("additionalProperties", "items", "if", "then", "else"):
        yield from _schema_nodes(node.get(keyword), f"{path}/{keyword}")
    for index, child in enumerate(node.get("allOf", [])):
        yield from _schema_nodes(child, f"{path}/allOf/{index}")
    for keyword in ("properties", "$defs"):
        for key, child in node.get(keyword, {}).items():
            yield from _schema_nodes(child, f"{path}/{keyword}/{key}")


@pytest.mark.parametrize("name", ALL_SCHEMAS)
def test_every_object_is_closed_and_every_property_described(name: str) -> None:
    for path, node in _schema_nodes(load_schema(name)):
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, path
        for key, child in node.get("properties", {}).items():
            # The `if` branches only test event_type; they are not property declarations.
            if "/if" not in path:
                assert child.get("description"), f"{path}/properties/{key}"


def test_event_types_match_the_schema() -> None:
    schema = load_schema(EVENT_SCHEMA)
    assert tuple(schema["properties"]["event_type"]["enum"]) == EVENT_TYPES
    assert set(EVENT_TYPES) <= set(schema["$defs"])
    branch_types = [branch["if"]["properties"]["event_type"]["const"] for branch in schema["allOf"]]
    assert branch_types == list(EVENT_TYPES)


def test_dead_letter_reasons_match_the_schema() -> None:
    schema = load_schema(DEAD_LETTER_SCHEMA)
    assert tuple(schema["properties"]["vigil.dlq.reason"]["enum"]) == ALL_DEAD_LETTER_REASONS


@pytest.mark.parametrize(
    "schema",
    [
        {"format": "ipv4"},
        {"default": 1},
        {"unevaluatedProperties": False},
        {"prefixItems": [{}]},
        {"items": [{"type": "string"}]},
        {"dependentRequired": {"a": ["b"]}},
        {"properties": {"a": {"$id": "https://example.com/a"}}},
        {"properties": {"a": {"$ref": "#/$defs/a", "type": "string"}}, "$defs": {"a": {}}},
        {"properties": {"a": {"$ref": "https://example.com/a.json"}}},
        {"properties": {"a": {"$ref": "#/$defs/missing"}}},
        {"exclusiveMinimum": True},
        {"allOf": [{"$dynamicRef": "#meta"}]},
        {"then": {"properties": {"a": {"minContains": 1}}}},
    ],
)
def test_allow_list_rejects_keywords_whose_meaning_differs(schema: dict[str, Any]) -> None:
    assert draft07_incompatibilities(schema) != []


def test_load_schema_returns_a_fresh_copy_and_only_packaged_names() -> None:
    load_schema(EVENT_SCHEMA)["title"] = "changed"
    assert load_schema(EVENT_SCHEMA)["title"] != "changed"
    with pytest.raises(ValueError, match="not a schema file name"):
        load_schema("../pyproject.toml")
    with pytest.raises(FileNotFoundError):
        load_schema("nope.v1.json")


# ---------------------------------------------------------------- (2) parity with 2020-12

OTHER_TYPE = dict(zip(EVENT_TYPES, EVENT_TYPES[1:] + EVENT_TYPES[:1], strict=True))


def _valid_cases() -> Iterator[tuple[str, dict[str, Any]]]:
    for event_type in EVENT_TYPES:
        event = valid_event(event_type)
        yield event_type, event
        yield f"{event_type}: only the required entities", with_required_entities_only(event)
    payment = valid_event("payment.attempted")
    order = valid_event("order.placed")
    listing = valid_event("listing.created")
    yield "decline_reason null", with_change(payment, "payload.decline_reason", None)
    yield "decline_reason set", with_change(payment, "payload.decline_reason", "do_not_honor")
    yield "amount at the maximum", with_change(order, "payload.amount", 1_000_000)
    yield "amount just above zero", with_change(order, "payload.amount", 0.01)
    yield "integer-valued float is an integer", with_change(listing, "payload.quantity", 5.0)
    yield "title of 200 code points", with_change(listing, "payload.title", "é" * 200)
    yield "event_id of 64 chars", with_change(order, "event_id", "a:b.c_d-" * 8)
    yield "no fraction", with_change(order, "occurred_at", "2026-11-02T13:45:07Z")
    yield "nanoseconds", with_change(order, "occurred_at", "2026-11-02T13:45:07.123456789Z")
    yield "leap day", with_change(order, "occurred_at", "2028-02-29T00:00:00Z")
    yield "leap day of a 400th year", with_change(order, "occurred_at", "2000-02-29T23:59:59Z")
    yield "ip 0.0.0.0", with_change(order, "context.ip", "0.0.0.0")
    yield "ip 255.255.255.255", with_change(order, "context.ip", "255.255.255.255")
    yield "message of length 0", with_change(valid_event("message.sent"), "payload.length", 0)


def with_required_entities_only(event: dict[str, Any]) -> dict[str, Any]:
    event = copy.deepcopy(event)
    event["entities"] = {k: v for k, v in event["entities"].items() if v is not None}
    return event


# A value of the wrong JSON type for every field type the contract uses.
WRONG_TYPE = {str: 7, bool: "true", int: "1", float: "12.5", type(None): 0}


def _invalid_cases() -> Iterator[tuple[str, dict[str, Any]]]:
    for event_type in EVENT_TYPES:
        event = valid_event(event_type)
        for field in event:
            yield f"{event_type}: no {field}", with_change(event, field, DELETE)
        yield f"{event_type}: extra top-level", with_change(event, "extra", 1)
        for obj in ("entities", "context", "payload"):
            yield f"{event_type}: extra in {obj}", with_change(event, f"{obj}.extra", "x")
            yield f"{event_type}: {obj} not an object", with_change(event, obj, [])
        for field in ("ip", "device_id", "country"):
            yield (
                f"{event_type}: no context.{field}",
                with_change(event, f"context.{field}", DELETE),
            )
        for field, value in event["payload"].items():
            path = f"payload.{field}"
            yield f"{event_type}: no {path}", with_change(event, path, DELETE)
            yield (
                f"{event_type}: {path} wrong type",
                with_change(event, path, WRONG_TYPE[type(value)]),
            )
            yield f"{event_type}: {path} null", with_change(event, path, None)
        for entity, value in event["entities"].items():
            if value is not None:
                path = f"entities.{entity}"
                yield f"{event_type}: {path} null", with_change(event, path, None)
                yield f"{event_type}: {path} absent", with_change(event, path, DELETE)
        other = valid_event(OTHER_TYPE[event_type])
        yield (
            f"{event_type}: payload of another type",
            with_change(event, "payload", other["payload"]),
        )
        yield f"{event_type}: payload empty", with_change(event, "payload", {})
    yield from _invalid_envelopes(valid_event("order.placed"))
    yield from _invalid_payload_values()


def _invalid_envelopes(event: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    bad_values: dict[str, list[Any]] = {
        "event_id": ["", "a" * 65, "evt 1", "evt/1", "évt"],
        "event_type": ["order.cancelled", "ORDER.PLACED", None],
        "schema_version": [2, 0, "1", True, 1.5],
        "occurred_at": [
            "2026-11-02T13:45:07",
            "2026-11-02T13:45:07+00:00",
            "2026-11-02T13:45:07.123z",
            "2026-11-02t13:45:07Z",
            "2026-11-02 13:45:07Z",
            "2026-11-02",
            "2026-02-30T00:00:00Z",
            "2027-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "2026-11-02T24:00:00Z",
            "2026-11-02T13:60:00Z",
            "2026-12-31T23:59:60Z",
            "2026-11-02T13:45:07.Z",
            "2026-11-02T13:45:07.1234567890Z",
            "26-11-02T13:45:07Z",
            1_793_000_000,
        ],
        "entities.user_id": [None, "", "u" * 65, 42],
        "entities.shop_id": ["", "s" * 65, 42],
        "context.ip": [
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            " 1.2.3.4",
            "1.2.3.-4",
            "::1",
            "",
            16_909_060,
        ],
        "context.device_id": ["", "d" * 65, None],
        "context.country": ["us", "USA", "U", "", None],
    }
    for path, values in bad_values.items():
        for value in values:
            yield f"{path}={value!r:.40}", with_change(event, path, value)


def _invalid_payload_values() -> Iterator[tuple[str, dict[str, Any]]]:
    bad_values: dict[str, dict[str, list[Any]]] = {
        "account.created": {
            "account_kind": ["admin", "Buyer"],
            "signup_method": ["facebook"],
            "email_domain": ["", "d" * 254],
        },
        "account.login": {"method": ["otp"], "success": [1, "yes"]},
        "listing.created": {
            "title": ["", "t" * 201],
            "category": ["", "c" * 65],
            "price": [0, -1, 1_000_000.01, 10**30, "12.5", True],
            "currency": ["usd", "US", "USDT"],
            "quantity": [0, 10_001, 1.5, True],
        },
        "order.placed": {
            "amount": [0, -0.0, -12.5, 1_000_001],
            "item_count": [0, 1001, 2.5],
            "shipping_country": ["de", "DEU"],
        },
        "payment.attempted": {
            "card_bin": ["41111", "4111111", "41111a", 411111],
            "card_fingerprint": ["", "f" * 65],
            "outcome": ["pending"],
            "decline_reason": ["", "r" * 65, 3],
        },
        "message.sent": {
            "recipient_id": ["", None],
            "length": [-1, 100_001],
            "has_link": [0, None],
        },
        "review.posted": {"rating": [0, 6, 4.5], "text_length": [-1, 100_001]},
    }
    for event_type, fields in bad_values.items():
        event = valid_event(event_type)
        for field, values in fields.items():
            for value in values:
                path = f"payload.{field}"
                yield f"{event_type}: {path}={value!r:.30}", with_change(event, path, value)


def decode_accepts(event: Any) -> bool:
    try:
        raw = orjson.dumps(event)
    except TypeError:
        return False
    return isinstance(VALIDATOR.decode(raw), dict)


VALID_CASES = dict(_valid_cases())
INVALID_CASES = dict(_invalid_cases())


@pytest.mark.parametrize("case", VALID_CASES)
def test_parity_on_valid_events(case: str) -> None:
    event = VALID_CASES[case]
    assert reference_accepts(EVENT_SCHEMA, event)
    assert fast_accepts(EVENT_SCHEMA, event)
    assert decode_accepts(event)


@pytest.mark.parametrize("case", INVALID_CASES)
def test_parity_on_invalid_events(case: str) -> None:
    event = INVALID_CASES[case]
    assert not reference_accepts(EVENT_SCHEMA, event)
    assert not fast_accepts(EVENT_SCHEMA, event)
    assert not decode_accepts(event)


def test_cases_cover_every_type_and_none_is_lost_to_a_name_clash() -> None:
    assert len(list(_valid_cases())) == len(VALID_CASES)
    assert len(list(_invalid_cases())) == len(INVALID_CASES) > 300
    for event_type in EVENT_TYPES:
        assert any(case.startswith(event_type) for case in INVALID_CASES)


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for child in value.values():
            yield from _leaves(child)
    elif isinstance(value, list):
        for child in value:
            yield from _leaves(child)
    else:
        yield value


def _containers(value: Any) -> Iterator[dict[str, Any] | list[Any]]:
    if isinstance(value, dict | list):
        yield value
        children = value.values() if isinstance(value, dict) else value
        for child in children:
            yield from _containers(child)


def _mutation_pool(documents: list[dict[str, Any]]) -> list[Any]:
    # Values of every type, the boundaries of the contract, and every leaf of the valid
    # documents, so mutations also produce right-looking values in the wrong place.
    # No string ends with a newline: see test_known_divergence_trailing_newline.
    pool: list[Any] = [None, True, False, 0, -1, 1, 1.5, 5.0, 10_000, 10_001, 100_000]
    pool += [1_000_000, 1_000_000.5, 1e300, -0.0, "", "x", "x" * 65, "é" * 64, [], {}]
    pool += [["evt-1"], {"a": 1}, "US", "usd", "256.0.0.1", "2026-02-29T00:00:00Z"]
    pool += [leaf for document in documents for leaf in _leaves(document)]
    return pool


def _mutate(document: dict[str, Any], rng: random.Random, pool: list[Any]) -> dict[str, Any]:
    mutated = copy.deepcopy(document)
    for _ in range(rng.randint(1, 3)):
        target = rng.choice(list(_containers(mutated)))
        action = rng.choice(("delete", "replace", "replace", "add"))
        value = copy.deepcopy(rng.choice(pool))
        if isinstance(target, dict):
            keys = list(target)
            if action == "add" or not keys:
                target[rng.choice(("extra", "user_id", "payload", "amount", *keys))] = value
            elif action == "delete":
                del target[rng.choice(keys)]
            else:
                target[rng.choice(keys)] = value
        elif action == "add" or not target:
            target.append(value)
        elif action == "delete":
            target.pop(rng.randrange(len(target)))
        else:
            target[rng.randrange(len(target))] = value
    return mutated


@pytest.mark.parametrize(
    ("schema", "documents"),
    [
        (EVENT_SCHEMA, [valid_event(event_type) for event_type in EVENT_TYPES]),
        (ALERT_SCHEMA, [valid_alert()]),
        (DEAD_LETTER_SCHEMA, [valid_dead_letter()]),
    ],
)
def test_parity_on_random_mutations(schema: str, documents: list[dict[str, Any]]) -> None:
    rng = random.Random(20261102)
    pool = _mutation_pool(documents)
    accepted = 0
    runs = 1500
    for _ in range(runs):
        mutated = _mutate(rng.choice(documents), rng, pool)
        verdict = fast_accepts(schema, mutated)
        assert verdict == reference_accepts(schema, mutated), mutated
        if schema == EVENT_SCHEMA and isinstance(mutated, dict):
            # decode() uses a validator specialised to the event type: same verdicts.
            assert decode_accepts(mutated) == verdict, mutated
        accepted += verdict
    # Not vacuous: both verdicts occur many times.
    assert 25 < accepted < runs - 25


def test_known_divergence_trailing_newline() -> None:
    # Patterns are ECMA-262, where `$` matches only at the end of the input. fastjsonschema
    # honours that; python-jsonschema uses re.search, where `$` also matches before a final
    # newline. The compiled validator is the stricter, correct one. If this starts failing,
    # jsonschema changed and the pool in _mutation_pool may include such strings again.
    event = with_change(valid_event("order.placed"), "event_id", "evt-1\n")
    assert not fast_accepts(EVENT_SCHEMA, event)
    assert reference_accepts(EVENT_SCHEMA, event)


def _timestamps() -> Iterator[tuple[str, bool]]:
    for year in (0, 1, 1900, 1999, 2000, 2024, 2026, 2100, 2400, 9999):
        for month in range(14):
            for day in range(33):
                text = f"{year:04d}-{month:02d}-{day:02d}T12:00:00Z"
                yield text, _is_calendar_date(year, month, day)
    for hour, minute, second in ((23, 59, 59), (24, 0, 0), (0, 60, 0), (0, 0, 60), (9, 5, 7)):
        yield (
            f"2026-11-02T{hour:02d}:{minute:02d}:{second:02d}Z",
            hour < 24 and max(minute, second) < 60,
        )


def _is_calendar_date(year: int, month: int, day: int) -> bool:
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    return True


def test_timestamp_pattern_accepts_exactly_the_parseable_dates() -> None:
    event = valid_event("review.posted")
    for text, parseable in _timestamps():
        result = VALIDATOR.decode(orjson.dumps(with_change(event, "occurred_at", text)))
        assert isinstance(result, dict) == parseable, text
        if parseable:
            parsed = datetime.datetime.fromisoformat(text)
            assert parsed.utcoffset() == datetime.timedelta(0)


def _ip_candidates(rng: random.Random) -> Iterator[str]:
    for _ in range(1500):
        yield "".join(rng.choice("0123456789.") for _ in range(rng.randint(1, 16)))
    for _ in range(1500):
        octets = [str(rng.choice((0, 1, 9, 10, 99, 100, 199, 200, 249, 250, 255, 256, 300)))]
        octets += [str(rng.randrange(300)) for _ in range(rng.choice((2, 3, 3, 3, 4)))]
        if rng.random() < 0.2:
            octets[rng.randrange(len(octets))] = "0" + octets[0]
        yield ".".join(octets)


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def test_ipv4_pattern_agrees_with_ipaddress() -> None:
    event = valid_event("account.login")
    for text in _ip_candidates(random.Random(7)):
        accepted = fast_accepts(EVENT_SCHEMA, with_change(event, "context.ip", text))
        assert accepted == _is_ipv4(text), text


# ---------------------------------------------------------------- (3) decode() reasons


def _raw(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


def test_decode_returns_the_event() -> None:
    for event_type in EVENT_TYPES:
        event = valid_event(event_type)
        assert VALIDATOR.decode(_raw(event)) == event


def test_decode_size_limit_is_inclusive() -> None:
    raw = _raw(valid_event("order.placed"))
    # JSON allows trailing whitespace, so padding keeps the event valid.
    at_limit = raw + b" " * (MAX_EVENT_BYTES - len(raw))
    assert isinstance(VALIDATOR.decode(at_limit), dict)
    assert VALIDATOR.decode(at_limit + b" ") == Invalid(
        "oversized", f"{MAX_EVENT_BYTES + 1} bytes exceeds the limit of {MAX_EVENT_BYTES}"
    )
    assert VALIDATOR.decode(b"x" * 10_000_000).reason == "oversized"  # type: ignore[union-attr]


def test_decode_honours_a_custom_limit() -> None:
    assert EventValidator(max_bytes=10).decode(b"{}" * 6) == Invalid(
        "oversized", "12 bytes exceeds the limit of 10"
    )
    with pytest.raises(ValueError, match="positive"):
        EventValidator(max_bytes=0)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b" ",
        b"{",
        b'{"a": 1,}',
        b"{'a': 1}",
        b"\xff\xfe\xfd",
        "{}".encode("utf-16"),
        b"\xef\xbb\xbf{}",
        b'{"a": "\xc3"}',
        b'{"a": "\\ud800"}',
        b"NaN",
        b'{"amount": NaN}',
        b'{"amount": Infinity}',
        b'{"amount": -Infinity}',
        b'{"amount": 1e400}',
        b"[" * 60_000,
        b'{"a":' * 2000 + b"1" + b"}" * 2000,
        b'{"a": 1} {"b": 2}',
        b'{"a": 1}\x00',
    ],
)
def test_decode_invalid_json(raw: bytes | None) -> None:
    result = VALIDATOR.decode(raw)
    assert isinstance(result, Invalid)
    assert result.reason == "invalid_json"
    assert result.detail


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"[]", "top-level JSON value is an array"),
        (b"[{}]", "top-level JSON value is an array"),
        (b'"event"', "top-level JSON value is a string"),
        (b"12", "top-level JSON value is a number"),
        (b"1e308", "top-level JSON value is a number"),
        (b"true", "top-level JSON value is a boolean"),
        (b"null", "top-level JSON value is null"),
    ],
)
def test_decode_not_an_object(raw: bytes, detail: str) -> None:
    assert VALIDATOR.decode(raw) == Invalid("not_an_object", detail)


@pytest.mark.parametrize(
    ("event", "detail"),
    [
        (
            with_change(valid_event("payment.attempted"), "payload.amount", 1_000_000.5),
            "data.payload.amount must be smaller than or equal to 1000000",
        ),
        (
            with_change(valid_event("order.placed"), "payload.amount", 0),
            "data.payload.amount must be bigger than 0",
        ),
        (
            with_change(valid_event("order.placed"), "payload.amount", 10**19),
            "data.payload.amount must be smaller than or equal to 1000000",
        ),
        (
            with_change(valid_event("listing.created"), "entities.shop_id", None),
            "data.entities.shop_id must be string",
        ),
        (
            with_change(valid_event("account.login"), "entities.user_id", None),
            "data.entities.user_id must be string",
        ),
        (
            with_change(valid_event("review.posted"), "payload.stars", 5),
            "data.payload must not contain {'stars'} properties",
        ),
        (
            with_change(valid_event("message.sent"), "payload", {"rating": 1, "text_length": 2}),
            "data.payload must contain ['has_link', 'length', 'recipient_id'] properties",
        ),
        (
            with_change(valid_event("order.placed"), "event_type", "order.shipped"),
            f"data.event_type must be one of {list(EVENT_TYPES)}",
        ),
        (
            with_change(valid_event("order.placed"), "context.ip", "10.0.0.256"),
            "data.context.ip must match pattern "
            + load_schema(EVENT_SCHEMA)["$defs"]["ipv4"]["pattern"],
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_decode_schema_violation_names_the_path(event: dict[str, Any], detail: str) -> None:
    assert VALIDATOR.decode(_raw(event)) == Invalid("schema_violation", detail)


def test_decode_handles_nesting_up_to_the_parser_limit() -> None:
    # orjson.dumps stops at depth 255, so the nested value is spliced in as text.
    event = with_change(valid_event("review.posted"), "payload.rating", "NESTED")
    raw = _raw(event).replace(b'"NESTED"', b"[" * 1000 + b"1" + b"]" * 1000)
    assert VALIDATOR.decode(raw) == Invalid(
        "schema_violation", "data.payload.rating must be integer"
    )


def test_decode_caps_the_detail() -> None:
    event = with_change(valid_event("order.placed"), "payload." + "k" * 5000, 1)
    result = VALIDATOR.decode(_raw(event))
    assert isinstance(result, Invalid)
    assert result.reason == "schema_violation"
    assert len(result.detail) == MAX_DETAIL_CHARS
    assert result.detail.startswith("data.payload must not contain")


def _fuzz_inputs(rng: random.Random) -> Iterator[bytes]:
    for _ in range(3000):
        yield rng.randbytes(rng.randint(0, 200))
    alphabet = b'{}[]":,0123456789.eE+-truefalsnl \\u\xc3\xa9\xff'
    for _ in range(3000):
        yield bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
    seeds = [_raw(valid_event(event_type)) for event_type in EVENT_TYPES]
    for _ in range(6000):
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(raw))
            action = rng.randrange(3)
            if action == 0:
                raw[position] = rng.randrange(256)
            elif action == 1:
                del raw[position : position + rng.randint(1, 8)]
            else:
                raw[position:position] = rng.choice(alphabet).to_bytes(1, "big")
        yield bytes(raw)


def test_decode_never_raises_and_agrees_with_the_reference() -> None:
    reasons: set[str] = set()
    for raw in _fuzz_inputs(random.Random(11)):
        result = VALIDATOR.decode(raw)
        if isinstance(result, Invalid):
            assert result.reason in DEAD_LETTER_REASONS
            assert result.detail
            reasons.add(result.reason)
            if result.reason == "schema_violation":
                assert not reference_accepts(EVENT_SCHEMA, orjson.loads(raw)), raw
        else:
            assert reference_accepts(EVENT_SCHEMA, result), raw
            reasons.add("valid")
    assert reasons == {"invalid_json", "not_an_object", "schema_violation", "valid"}


# ---------------------------------------------------------------- (4) alerts and dead letters


def test_valid_alert_passes() -> None:
    alert = valid_alert()
    validate_alert(alert)
    assert reference_accepts(ALERT_SCHEMA, alert)
    alert["explanation"] = []
    validate_alert(alert)
    alert["kind"] = "pattern"
    alert["event_ids"] = ["evt-1", "evt-2"]
    validate_alert(alert)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("alert_id", "al-123", "data.alert_id must match pattern"),
        ("alert_id", "al-" + "0123456789ABCDEF" * 2, "data.alert_id must match pattern"),
        ("schema_version", 2, "data.schema_version must be same as const definition: 1"),
        ("kind", "group", "data.kind must be one of"),
        ("detector", "", "data.detector must be longer than or equal to 1 characters"),
        ("event_ids", [], "data.event_ids must contain at least 1 items"),
        ("event_ids", ["evt 1"], "data.event_ids[0] must match pattern"),
        ("entity", {"type": "merchant", "id": "m-1"}, "data.entity.type must be one of"),
        ("entity", {"type": "user"}, "data.entity must contain ['id'] properties"),
        ("score", "0.9", "data.score must be number"),
        ("threshold", None, "data.threshold must be number"),
        ("occurred_at", "2026-11-02T13:45:07+01:00", "data.occurred_at must match pattern"),
        ("explanation", [{"feature": "amount"}], "data.explanation[0] must contain"),
        (
            "explanation",
            [{"feature": "a", "value": 1, "baseline": 0, "direction": "up"}],
            "data.explanation[0].direction must be one of ['high', 'low']",
        ),
        ("source", {"topic": "t", "partition": 0, "offset": -1}, "data.source.offset must be"),
        ("source", {"topic": "bad topic", "partition": 0, "offset": 0}, "data.source.topic"),
        ("source", {"topic": "t", "partition": 0}, "data.source must contain ['offset']"),
        ("extra", 1, "data must not contain {'extra'} properties"),
    ],
)
def test_bad_alert_is_rejected(path: str, value: Any, message: str) -> None:
    alert = with_change(valid_alert(), path, value)
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        validate_alert(alert)
    assert not reference_accepts(ALERT_SCHEMA, alert)


def test_alert_without_a_required_field_is_rejected() -> None:
    for field in valid_alert():
        alert = with_change(valid_alert(), field, DELETE)
        with pytest.raises(ValueError, match=f"must contain .*'{field}'"):
            validate_alert(alert)
        assert not reference_accepts(ALERT_SCHEMA, alert)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("vigil.dlq.reason", "unknown"),
        ("vigil.dlq.detail", ""),
        ("vigil.source.partition", "-1"),
        ("vigil.source.partition", "01"),
        ("vigil.source.offset", 42),
        ("vigil.dlq.schema_version", 1),
        ("vigil.source.topic", ""),
        ("vigil.extra", "x"),
    ],
)
def test_bad_dead_letter_headers_are_rejected(header: str, value: Any) -> None:
    headers = valid_dead_letter() | {header: value}
    assert not fast_accepts(DEAD_LETTER_SCHEMA, headers)
    assert not reference_accepts(DEAD_LETTER_SCHEMA, headers)


def test_decode_details_fit_a_dead_letter_header() -> None:
    for raw in (None, b"x" * (MAX_EVENT_BYTES + 1), b"{", b"[]", b'{"a": 1}'):
        result = VALIDATOR.decode(raw)
        assert isinstance(result, Invalid)
        headers = valid_dead_letter() | {
            "vigil.dlq.reason": result.reason,
            "vigil.dlq.detail": result.detail,
        }
        assert fast_accepts(DEAD_LETTER_SCHEMA, headers)


# ---------------------------------------------------------------- the documented examples


def _example(name: str) -> dict[str, Any]:
    document = json.loads(EXAMPLES.joinpath(name).read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def test_there_is_one_example_per_contract_and_event_type() -> None:
    names = {entry.name for entry in EXAMPLES.iterdir() if entry.name.endswith(".json")}
    assert names == {f"{event_type}.json" for event_type in EVENT_TYPES} | {
        "alert.json",
        "label.json",
        "dead_letter.json",
    }


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_event_example_is_valid(event_type: str) -> None:
    raw = EXAMPLES.joinpath(f"{event_type}.json").read_bytes()
    event = VALIDATOR.decode(raw)
    assert isinstance(event, dict), event
    assert event["event_type"] == event_type
    assert reference_accepts(EVENT_SCHEMA, event)


@pytest.mark.parametrize(
    ("name", "schema", "check"),
    [
        ("alert.json", ALERT_SCHEMA, validate_alert),
        ("dead_letter.json", DEAD_LETTER_SCHEMA, FAST[DEAD_LETTER_SCHEMA]),
    ],
)
def test_contract_example_is_valid(name: str, schema: str, check: Callable[[Any], Any]) -> None:
    document = _example(name)
    check(document)
    assert reference_accepts(schema, document)
