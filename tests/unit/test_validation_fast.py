"""The msgspec fast path of ``EventValidator.decode`` decides exactly as fastjsonschema.

``decode`` returns the parsed dict when the msgspec Structs (schemas/event_structs.py) accept
it and otherwise asks fastjsonschema, so its results equal the schema-only validator's if
the Structs never accept what the schema rejects. Three checks:

1. structure: the JSON Schema msgspec derives from each Struct equals event.v1.json
   specialised to that event type, keyword by keyword (patterns as fastjsonschema compiles
   them, ``$`` as ``\\Z``), except ``integer`` vs ``int``, which tests 3 pins down;
2. generated traffic with 20% malformed records (schema violations, absurd values, bad
   JSON), three seeds: every record decodes to the same dict or the same ``Invalid``;
3. mutations: every field of every event type set to boundary and wrong-typed values, then
   random multi-point mutations; on each, the Structs' verdict is compared with
   fastjsonschema's, and a disagreement is allowed only in the safe direction (the Structs
   reject) and only for the one known cause, an integer-valued float in an integer field.
"""

from __future__ import annotations

import copy
import math
import random
import re
from collections.abc import Iterator
from typing import Any

import msgspec
import orjson
import pytest

from schemas import EVENT_SCHEMA, EVENT_TYPES, load_schema
from schemas.event_structs import (
    ENVELOPE_PATTERNS,
    EVENT_STRUCTS,
    PATTERN_CHECKS,
    PAYLOAD_PATTERNS,
    fast_accepts,
    python_pattern,
)
from schemas.validation import EventValidator, Invalid, _inline_refs
from stream.traffic.generator import TrafficConfig, generate
from tests.unit.test_schemas import valid_event

FAST = EventValidator()
SLOW = EventValidator(fast=False)
SCHEMA = load_schema(EVENT_SCHEMA)

_ANNOTATIONS = {"title", "description", "$comment", "examples", "default"}


# ---------------------------------------------------------------- (1) structure


def _resolve(node: Any, root: dict[str, Any]) -> Any:
    if isinstance(node, dict) and "$ref" in node:
        target: Any = root
        for token in node["$ref"][2:].split("/"):
            target = target[token]
        return _resolve(target, root)
    return node


def _normalise(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """A schema node as comparable keywords: refs resolved, annotations dropped, ``const``
    as a one-value ``enum``, ``anyOf [X, null]`` as X with ``null`` added to its types."""
    node = _resolve(node, root)
    if "anyOf" in node:
        branches = [_resolve(b, root) for b in node["anyOf"]]
        nulls = [b for b in branches if b == {"type": "null"}]
        assert len(branches) == 2, node
        assert len(nulls) == 1, node
        (other,) = [b for b in branches if b != {"type": "null"}]
        merged = {k: v for k, v in node.items() if k != "anyOf"}
        merged.update(other)
        merged["type"] = [other["type"], "null"]
        node = merged
    out: dict[str, Any] = {}
    for keyword, value in node.items():
        if keyword in _ANNOTATIONS:
            continue
        if keyword == "properties":
            out[keyword] = {name: _normalise(child, root) for name, child in value.items()}
        elif keyword == "const":
            out["enum"] = frozenset([value])
        elif keyword == "enum":
            out["enum"] = frozenset(value)
        elif keyword == "required":
            out[keyword] = frozenset(value)
        elif keyword == "type":
            out[keyword] = frozenset([value] if isinstance(value, str) else value)
        else:
            out[keyword] = value
    if "enum" in out:
        # Literal[...] carries no `type`; the schema's type only restates the enum's.
        out.pop("type", None)
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Both nodes at once (allOf of two), for the shapes event.v1.json uses."""
    out = dict(base)
    for keyword, value in extra.items():
        if keyword not in out:
            out[keyword] = value
        elif keyword == "properties":
            merged = dict(out[keyword])
            for name, child in value.items():
                merged[name] = _merge(merged[name], child) if name in merged else child
            out[keyword] = merged
        elif keyword == "required":
            out[keyword] = out[keyword] | value
        elif keyword in ("type", "enum"):
            out[keyword] = out[keyword] & value
        else:
            assert out[keyword] == value, (keyword, out[keyword], value)
    return out


def _schema_for(event_type: str) -> dict[str, Any]:
    """event.v1.json as it applies to events of ``event_type``, in normal form."""
    (branch,) = [
        b for b in SCHEMA["allOf"] if b["if"]["properties"]["event_type"]["const"] == event_type
    ]
    then = _inline_refs(branch["then"], SCHEMA)
    envelope = {k: v for k, v in SCHEMA.items() if k not in ("allOf", "$schema", "$id")}
    base = _inline_refs(envelope, SCHEMA)
    merged = _merge(_normalise(base, SCHEMA), _normalise(then, SCHEMA))
    # The branch's `if`: event_type is this type.
    merged["properties"]["event_type"] = _merge(
        merged["properties"]["event_type"], {"enum": frozenset([event_type])}
    )
    return _ecma_to_python(merged)


def _ecma_to_python(node: dict[str, Any]) -> dict[str, Any]:
    out = dict(node)
    if "pattern" in out:
        out["pattern"] = python_pattern(out["pattern"])
    if "properties" in out:
        out["properties"] = {k: _ecma_to_python(v) for k, v in out["properties"].items()}
    return out


def _struct_schema(event_type: str) -> dict[str, Any]:
    """What the fast path checks for ``event_type``: the Struct's schema, with each pattern
    of ENVELOPE_PATTERNS and PAYLOAD_PATTERNS (checked after the Struct, in one match) put
    at its path."""
    generated = msgspec.json.schema(EVENT_STRUCTS[event_type])
    checked = _normalise(generated, generated)
    patterns: dict[tuple[str, ...], str] = {
        **ENVELOPE_PATTERNS,
        **{("payload", f): p for f, p in PAYLOAD_PATTERNS.get(event_type, {}).items()},
    }
    for path, pattern in patterns.items():
        node = checked
        for name in path:
            node = node["properties"][name]
        assert "pattern" not in node, path  # one place for a pattern, not two
        node["pattern"] = pattern
    return checked


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_structs_mirror_the_schema_keyword_by_keyword(event_type: str) -> None:
    assert _struct_schema(event_type) == _schema_for(event_type)


def test_there_is_one_struct_per_event_type() -> None:
    assert tuple(EVENT_STRUCTS) == EVENT_TYPES


def test_patterns_end_at_the_end_of_the_input() -> None:
    assert python_pattern("^a$") == "^a\\Z"
    assert python_pattern("^a\\$$") == "^a\\$\\Z"
    event = valid_event("order.placed")
    for path in ("event_id", "occurred_at", "context.ip", "context.country", "payload.currency"):
        changed = _with(event, path, _get(event, path) + "\n")
        assert not fast_accepts("order.placed", changed), path
        assert isinstance(SLOW.decode(orjson.dumps(changed)), Invalid), path


def test_values_that_are_not_bytes_decode_as_without_the_fast_path() -> None:
    # Compiled, the fast path refuses anything but bytes with a TypeError; decode() must
    # neither raise nor judge such a value differently (a str from a string deserializer).
    valid = next(r.value for r in generate(TrafficConfig(events=50, seed=7)))
    for raw in (valid.decode(), bytearray(valid), memoryview(valid), "[]", "{"):
        expected = SLOW.decode(raw)  # type: ignore[arg-type]
        assert FAST.decode(raw) == expected, raw  # type: ignore[arg-type]
    assert FAST.decode(valid.decode()) == orjson.loads(valid)  # type: ignore[arg-type]


# ---------------------------------------------------------------- (2) generated traffic


@pytest.mark.parametrize("seed", [7, 11, 2026])
def test_generated_traffic_decodes_identically(seed: int) -> None:
    config = TrafficConfig(events=50_000, seed=seed, bad_fraction=0.2)
    verdicts = {"fast": 0, "valid": 0, "invalid": 0}
    reasons: set[str] = set()
    for record in generate(config):
        raw = record.value
        expected = SLOW.decode(raw)
        result = FAST.decode(raw)
        assert result == expected, raw
        if isinstance(expected, Invalid):
            verdicts["invalid"] += 1
            reasons.add(expected.reason)
            assert type(result) is Invalid
            continue
        verdicts["valid"] += 1
        # Same values of the same types, all the way down (1 and 1.0 compare equal).
        assert _typed(result) == _typed(expected), raw
        verdicts["fast"] += _fast_verdict(raw)
    assert verdicts["invalid"] > 5_000
    assert "schema_violation" in reasons
    # Every valid generated event takes the fast path.
    assert verdicts["fast"] == verdicts["valid"] > 30_000


def _fast_verdict(raw: bytes | None) -> bool:
    value = orjson.loads(raw or b"")
    return fast_accepts(value["event_type"], value)


def _typed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


# ---------------------------------------------------------------- (3) mutations


def _get(event: dict[str, Any], path: str) -> Any:
    node: Any = event
    for part in path.split("."):
        node = node[part]
    return node


def _with(event: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(event)
    *parents, last = path.split(".")
    node = changed
    for part in parents:
        node = node[part]
    node[last] = value
    return changed


def _without(event: dict[str, Any], path: str) -> dict[str, Any]:
    changed = copy.deepcopy(event)
    *parents, last = path.split(".")
    node = changed
    for part in parents:
        node = node[part]
    node.pop(last, None)
    return changed


def _full_event(event_type: str) -> dict[str, Any]:
    """A valid event with every optional property present, so every path gets mutated."""
    event = valid_event(event_type)
    for name in ("shop_id", "listing_id", "order_id"):
        event["entities"].setdefault(name, None)
    if event_type == "payment.attempted":
        event["payload"]["decline_reason"] = "insufficient_funds"
    return event


def _paths(value: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for key, child in value.items():
            path = f"{prefix}{key}"
            yield path
            yield from _paths(child, path + ".")


_STRINGS = [
    "",
    "x",
    "x" * 63,
    "x" * 64,
    "x" * 65,
    "é" * 64,
    "é" * 65,
    "\U0001f600" * 64,  # astral: one code point each, as JSON Schema counts
    "\U0001f600" * 65,
    "x" * 200,
    "x" * 201,
    "x" * 253,
    "x" * 254,
    " evt-1",
    "evt-1 ",
    "evt 1",
    "evt-1\n",
    "\nevt-1",
    "evt\u00a0",
    "US",
    "us",
    "USA",
    "U",
    "\uff35\uff33",  # fullwidth US
    "USD",
    "usd",
    "USDX",
    "411111",
    "41111",
    "4111111",
    "\u0664\u0661\u0661\u0661\u0661\u0661",  # Arabic-Indic digits: not [0-9]
    "41111a",
    "0.0.0.0",
    "255.255.255.255",
    "256.0.0.1",
    "01.2.3.4",
    "1.2.3",
    "1.2.3.4.5",
    "1.2.3.4\n",
    "2026-11-02T13:45:07Z",
    "2026-11-02T13:45:07.123456789Z",
    "2026-11-02T13:45:07.1234567890Z",
    "2026-11-02T13:45:07.Z",
    "2026-11-02T13:45:07+00:00",
    "2024-02-29T00:00:00Z",
    "2026-02-29T00:00:00Z",
    "2026-11-02t13:45:07Z",
    "0000-01-01T00:00:00Z",
    "2026-11-02T24:00:00Z",
    "buyer",
    "seller",
    "Buyer",
    "email",
    "google",
    "password",
    "sso",
    "approved",
    "declined",
    "error",
    *EVENT_TYPES,
    "order.shipped",
]
_NUMBERS = [
    0,
    1,
    -1,
    2,
    4,
    5,
    6,
    999,
    1000,
    1001,
    9999,
    10_000,
    10_001,
    99_999,
    100_000,
    100_001,
    999_999,
    1_000_000,
    1_000_001,
    2**53 + 1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    0.0,
    -0.0,
    1.0,
    5.0,
    1000.0,
    10_000.0,
    100_000.0,
    1_000_000.0,
    0.5,
    1.5,
    5e-324,
    1e-300,
    999_999.999_999,
    1_000_000.000_000_1,
    1e300,
    -1e300,
    math.nextafter(1_000_000.0, math.inf),
    math.nextafter(0.0, -math.inf),
]
_OTHERS: list[Any] = [None, True, False, [], {}, [1], ["x"], {"a": 1}, {"user_id": "u"}]
_VALUES: list[Any] = _STRINGS + _NUMBERS + _OTHERS


def _integer_valued_float_in_integer_field(event: Any) -> bool:
    """The one case the Structs reject and the schema accepts: ``integer`` takes 1.0."""
    if not isinstance(event, dict):
        return False
    event_type = event.get("event_type")
    integer_paths = {"schema_version"}
    payload_integers = {
        "listing.created": ("quantity",),
        "order.placed": ("item_count",),
        "message.sent": ("length",),
        "review.posted": ("rating", "text_length"),
    }
    integer_paths |= {f"payload.{f}" for f in payload_integers.get(str(event_type), ())}
    for path in integer_paths:
        try:
            value = _get(event, path)
        except (KeyError, TypeError):
            continue
        if isinstance(value, float) and value.is_integer():
            return True
    return False


def _check(event: Any) -> tuple[bool, bool]:
    """Compare the two validators on ``event`` (via JSON, as decode sees it)."""
    raw = orjson.dumps(event)
    parsed = orjson.loads(raw)
    slow = SLOW.decode(raw)
    slow_ok = not isinstance(slow, Invalid)
    event_type = parsed.get("event_type") if isinstance(parsed, dict) else None
    fast_ok = False
    if isinstance(event_type, str) and event_type in EVENT_STRUCTS:
        fast_ok = fast_accepts(event_type, parsed)
    # The dangerous direction: never accept what the schema rejects.
    assert not (fast_ok and not slow_ok), (event, slow)
    if slow_ok and not fast_ok:
        assert _integer_valued_float_in_integer_field(parsed), event
    assert FAST.decode(raw) == slow, event
    return fast_ok, slow_ok


def test_every_field_at_its_boundaries_and_with_wrong_types() -> None:
    counts = {"both": 0, "neither": 0, "slow only": 0}
    for event_type in EVENT_TYPES:
        event = _full_event(event_type)
        assert _check(event) == (True, True)
        for path in list(_paths(event)):
            cases = [_without(event, path)]
            cases += [_with(event, path, value) for value in _VALUES]
            parent = path.rpartition(".")[0]
            extra = f"{parent}.unexpected" if parent else "unexpected"
            cases.append(_with(event, extra, 1))
            for case in cases:
                fast_ok, slow_ok = _check(case)
                counts["both" if fast_ok else "slow only" if slow_ok else "neither"] += 1
    # Not vacuous: many accepted and rejected; the slow-only ones are the 1.0-style floats.
    assert counts["both"] > 500
    assert counts["neither"] > 5_000
    assert 0 < counts["slow only"] < 100


def test_integer_fields_take_floats_only_on_the_slow_path() -> None:
    event = valid_event("review.posted")
    for path, value in (("payload.rating", 5.0), ("schema_version", 1.0)):
        changed = _with(event, path, value)
        assert not fast_accepts("review.posted", changed)
        decoded = FAST.decode(orjson.dumps(changed))
        assert decoded == changed
        assert isinstance(_get(decoded, path), float)
    # A bool is not an integer, nor a number, in either.
    for path in ("payload.rating", "schema_version"):
        changed = _with(event, path, True)
        assert not fast_accepts("review.posted", changed)
        assert isinstance(SLOW.decode(orjson.dumps(changed)), Invalid)


def test_big_and_out_of_range_numbers_in_raw_json() -> None:
    # orjson.dumps refuses ints beyond 64 bits: splice the literals into the bytes.
    cases = [
        (event_type, path, literal)
        for event_type, path in (
            ("order.placed", "payload.amount"),
            ("order.placed", "payload.item_count"),
            ("review.posted", "payload.rating"),
            ("review.posted", "schema_version"),
        )
        for literal in (
            b"18446744073709551616",
            b"-18446744073709551617",
            b"100000000000000000000000",
            b"1e400",
            b"-1e400",
            b"1E2",
            b"1e0",
            b"5.000",
            b"0.0000001e7",
            b"1000000.0000000001",
            b"-0",
        )
    ]
    for event_type, path, literal in cases:
        event = _with(valid_event(event_type), path, "SPLICE")
        raw = orjson.dumps(event).replace(b'"SPLICE"', literal)
        assert FAST.decode(raw) == SLOW.decode(raw), raw
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if fast_accepts(event_type, parsed):
            assert not isinstance(SLOW.decode(raw), Invalid), raw


def test_duplicate_keys_are_judged_on_the_value_kept() -> None:
    # orjson keeps the last of duplicate keys; the fast path checks the parsed dict, so
    # it judges the same value that decode() returns.
    good = orjson.dumps(valid_event("review.posted"))
    bad_then_good = good.replace(b'"rating":4', b'"rating":99,"rating":4')
    good_then_bad = good.replace(b'"rating":4', b'"rating":4,"rating":99')
    assert bad_then_good != good
    assert good_then_bad != good
    assert FAST.decode(bad_then_good) == SLOW.decode(bad_then_good) == valid_event("review.posted")
    assert FAST.decode(good_then_bad) == SLOW.decode(good_then_bad)
    assert isinstance(FAST.decode(good_then_bad), Invalid)


def _mutation_pool() -> list[Any]:
    pool = list(_VALUES)
    for event_type in EVENT_TYPES:
        event = _full_event(event_type)
        pool += [_get(event, path) for path in _paths(event)]
    return pool


def _mutate(event: dict[str, Any], rng: random.Random, pool: list[Any]) -> dict[str, Any]:
    mutated = copy.deepcopy(event)
    for _ in range(rng.randint(1, 3)):
        containers = [mutated] + [
            mutated[k]
            for k in ("entities", "context", "payload")
            if isinstance(mutated.get(k), dict)
        ]
        target = rng.choice(containers)
        action = rng.choice(("delete", "replace", "replace", "replace", "add", "retype"))
        keys = list(target)
        if action == "add" or not keys:
            name = rng.choice(("extra", "user_id", "shop_id", "payload", "amount", "rating", *keys))
            target[name] = copy.deepcopy(rng.choice(pool))
        elif action == "delete":
            del target[rng.choice(keys)]
        elif action == "retype":
            # Swap an event's type for another, keeping the rest: payloads of the wrong shape.
            mutated["event_type"] = rng.choice((*EVENT_TYPES, "order.shipped", None, 1))
        else:
            target[rng.choice(keys)] = copy.deepcopy(rng.choice(pool))
    return mutated


def test_random_mutations() -> None:
    rng = random.Random(20261126)
    pool = _mutation_pool()
    documents = [_full_event(t) for t in EVENT_TYPES] + [valid_event(t) for t in EVENT_TYPES]
    counts = {"fast": 0, "slow": 0}
    runs = 20_000
    for _ in range(runs):
        fast_ok, slow_ok = _check(_mutate(rng.choice(documents), rng, pool))
        counts["fast"] += fast_ok
        counts["slow"] += slow_ok
    assert 1_000 < counts["fast"] <= counts["slow"] < runs - 1_000


# ---------------------------------------------------------------- (4) patterns in one match


def _patterned_paths(event_type: str) -> dict[str, str]:
    paths = {".".join(path): pattern for path, pattern in ENVELOPE_PATTERNS.items()}
    for name, pattern in PAYLOAD_PATTERNS.get(event_type, {}).items():
        paths[f"payload.{name}"] = pattern
    return paths


def _string_variants(rng: random.Random, valid: str) -> list[str]:
    """Near misses of a valid string: the characters the patterns care about, the
    separator the combined match joins with, newlines, and empty strings."""
    alphabet = "0123456789AZaz.-:_TZ\x00\n "
    variants = ["", "\x00", valid + "\n", valid + "\x00", "\x00" + valid, valid * 2]
    for _ in range(40):
        chars = list(valid)
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(chars) + 1)
            if chars and rng.random() < 0.5:
                chars[min(position, len(chars) - 1)] = rng.choice(alphabet)
            else:
                chars.insert(position, rng.choice(alphabet))
        variants.append("".join(chars))
    return variants


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_one_match_decides_as_every_pattern_alone(event_type: str) -> None:
    rng = random.Random(event_type)
    event = _full_event(event_type)
    paths = _patterned_paths(event_type)
    check = PATTERN_CHECKS[event_type]
    assert check(event)
    verdicts = {True: 0, False: 0}
    for path in paths:
        for variant in _string_variants(rng, _get(event, path)):
            # One field changed, and sometimes a second one too: a NUL in one string must
            # not let another string's pattern match across it.
            changed = _with(event, path, variant)
            if rng.random() < 0.5:
                other = rng.choice(list(paths))
                changed = _with(
                    changed, other, rng.choice(_string_variants(rng, _get(changed, other)))
                )
            alone = all(re.search(p, _get(changed, q)) is not None for q, p in paths.items())
            assert check(changed) == alone, (path, variant)
            verdicts[alone] += 1
    assert verdicts[True] > 10
    assert verdicts[False] > 100
