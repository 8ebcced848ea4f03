"""Compiled validators for the contracts: bytes in, a valid event or a dead-letter reason out.

fastjsonschema turns a schema into Python source once, which is an order of magnitude faster
per event than an interpreting validator. It implements drafts 04/06/07 (2019-09 only as 07
plus formats) and not 2020-12, so each schema is compiled as a draft-07 copy. That is sound only
because the schemas keep to keywords that mean the same in both drafts:
`draft07_incompatibilities` checks this before every compile, and the parity tests compare the
compiled verdicts with jsonschema's real 2020-12 validator.

Events take a faster path first: msgspec Structs mirroring event.v1.json
(`schemas/event_structs.py`) accept the valid ones at about a third of fastjsonschema's cost;
whatever they reject goes to fastjsonschema, which decides and words the dead-letter detail.
The Structs are never looser than the schema (tests/unit/test_validation_fast.py), so the
verdicts, reasons and details are those of fastjsonschema alone.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import fastjsonschema
import orjson

from schemas import ALERT_SCHEMA, DEAD_LETTER_SCHEMA, EVENT_SCHEMA, LABEL_SCHEMA, load_schema
from schemas.event_structs import EVENT_STRUCTS, PATTERN_CHECKS
from schemas.fast_path import FastPath

InvalidReason = Literal["oversized", "invalid_json", "not_an_object", "schema_violation"]
DEAD_LETTER_REASONS: Final[tuple[InvalidReason, ...]] = (
    "oversized",
    "invalid_json",
    "not_an_object",
    "schema_violation",
)

# A valid event that the service failed to score (a bug): kept, never dropped.
PROCESSING_ERROR: Final = "processing_error"
ALL_DEAD_LETTER_REASONS: Final[tuple[str, ...]] = (*DEAD_LETTER_REASONS, PROCESSING_ERROR)

# CONTRACTS.md: an event is at most 64 KiB.
MAX_EVENT_BYTES: Final = 65536
# Details can quote attacker-chosen text (the names of unexpected properties); they end up in
# a Kafka header and in logs, so they are capped.
MAX_DETAIL_CHARS: Final = 1000

_DRAFT_07: Final = "http://json-schema.org/draft-07/schema#"

# Keywords whose meaning is the same in draft-07 and 2020-12. Deliberately absent:
# `format` (asserted by fastjsonschema, an annotation in 2020-12), `default` (fastjsonschema
# writes it into the data), array-form `items` and `prefixItems`, `unevaluated*`,
# `dependent*`, `$anchor`, `$dynamicRef`. Add a keyword only after checking both specs and
# covering it in the parity tests.
_ANNOTATIONS: Final = frozenset({"title", "description", "$comment", "examples"})
# Local JSON pointers only, and no sibling assertions (checked in _check_ref).
_REFERENCE: Final = frozenset({"$ref"})
_ROOT_ONLY: Final = frozenset({"$schema", "$id", "$defs"})
_ASSERTIONS: Final = frozenset(
    {
        "type",
        "enum",
        "const",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minItems",
        "maxItems",
        "required",
    }
)
_SUBSCHEMA: Final = frozenset({"additionalProperties", "items", "if", "then", "else"})
_SUBSCHEMA_LIST: Final = frozenset({"allOf"})
_SUBSCHEMA_MAP: Final = frozenset({"properties", "$defs"})
_ALLOWED: Final = (
    _ANNOTATIONS
    | _REFERENCE
    | _ROOT_ONLY
    | _ASSERTIONS
    | _SUBSCHEMA
    | _SUBSCHEMA_LIST
    | _SUBSCHEMA_MAP
)


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why a record cannot be used: a dead-letter reason and a human-readable detail."""

    reason: InvalidReason
    detail: str


Validate = Callable[[Any], Any]


class EventValidator:
    """Decodes and validates raw event bytes. Compiles once; decode() never raises on input."""

    def __init__(self, max_bytes: int = MAX_EVENT_BYTES, *, fast: bool = True) -> None:
        """``fast=False`` leaves out the msgspec fast path (for parity tests and benchmarks);
        verdicts, reasons and details are the same either way."""
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self._validate = compile_validator(EVENT_SCHEMA)
        # The schema's allOf holds one if/then branch per event type; for an event of type
        # T every other branch's `if` is false and vacuous, and T's own `if` (event_type
        # present and equal to T) is true, so its `then` applies. A validator holding T's
        # `then` alone is therefore exactly equivalent for events of type T (the only ones
        # it sees), and skips seven `if`s (the failing ones raise and catch inside
        # fastjsonschema). Its local $refs are inlined as well (`_inline_refs`), which
        # saves a call per referenced value. Together about 2.5 times as fast per event.
        schema = load_schema(EVENT_SCHEMA)
        self._by_type: dict[str, Validate] = {}
        for branch in schema["allOf"]:
            event_type = branch["if"]["properties"]["event_type"]["const"]
            # The allow-list check runs on the schema as written (refs and all) first.
            compile_schema({**schema, "allOf": [branch]}, EVENT_SCHEMA)
            specialised = _inline_refs({**schema, "allOf": [branch["then"]]}, schema)
            self._by_type[event_type] = compile_schema(specialised, EVENT_SCHEMA)
        # The compiled fast path: one msgspec Struct per event type, stricter than or equal
        # to the schema, never looser (parity-tested in tests/unit/test_validation_fast.py).
        # Its patterns are checked after it, all in one match (fast_path.PatternCheck).
        self.fast = (
            FastPath(
                {t: (struct, PATTERN_CHECKS[t]) for t, struct in EVENT_STRUCTS.items()},
                max_bytes,
            )
            if fast
            else None
        )

    def decode(self, raw: bytes | None) -> dict[str, Any] | Invalid:
        """The event as a dict if `raw` is a valid event, otherwise why not."""
        # The fast path takes bytes only (compiled, it refuses anything else); the rest,
        # and whatever it does not accept, is judged in full.
        if self.fast is not None and type(raw) is bytes:
            accepted = self.fast.accept(raw)
            if accepted is not None:
                return accepted
        return self.judge(raw)

    def judge(self, raw: bytes | None) -> dict[str, Any] | Invalid:
        """``decode`` without the fast path, for a record it did not accept: here
        fastjsonschema decides and words the dead-letter detail, as before the fast path."""
        if raw is None:
            # A tombstone: no bytes at all is not a JSON document.
            return Invalid("invalid_json", "record value is null")
        size = len(raw)
        if size > self.max_bytes:
            return Invalid("oversized", f"{size} bytes exceeds the limit of {self.max_bytes}")
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return Invalid("invalid_json", _capped(str(exc)))
        if not isinstance(value, dict):
            return Invalid("not_an_object", f"top-level JSON value is {_json_type_name(value)}")
        event_type = value.get("event_type")
        validate = self._by_type.get(event_type) if isinstance(event_type, str) else None
        try:
            (validate or self._validate)(value)
        except fastjsonschema.JsonSchemaValueException as exc:
            return Invalid("schema_violation", _capped(exc.message))
        return value


def validate_alert(alert: dict[str, Any]) -> None:
    """Raise ValueError naming the offending path if `alert` breaks alert.v1.json."""
    try:
        _alert_validator()(alert)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise ValueError(exc.message) from exc


def validate_label(label: dict[str, Any]) -> None:
    """Raise ValueError naming the offending path if `label` breaks label.v1.json."""
    try:
        _label_validator()(label)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise ValueError(exc.message) from exc


def validate_dead_letter_headers(headers: Mapping[str, bytes]) -> None:
    """Raise ValueError if the ``vigil.*`` headers of a dead letter break the contract."""
    decoded = {k: v.decode() for k, v in headers.items() if k.startswith("vigil.")}
    try:
        _dead_letter_validator()(decoded)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise ValueError(exc.message) from exc


def compile_validator(name: str) -> Validate:
    """The compiled validator of packaged schema `name`; it raises JsonSchemaValueException."""
    return compile_schema(load_schema(name), name)


def compile_schema(schema: dict[str, Any], name: str) -> Validate:
    """Compile `schema` (a packaged schema or a specialisation of one, called `name`)."""
    schema = copy.deepcopy(schema)  # fastjsonschema rewrites $refs in place
    problems = draft07_incompatibilities(schema)
    if problems:
        raise ValueError(f"{name} cannot be compiled as draft-07: " + "; ".join(problems))
    schema["$schema"] = _DRAFT_07
    return fastjsonschema.compile(
        schema,
        # Every $ref is local; a remote one must fail here, never fetch.
        handlers={"http": _refuse_remote_ref, "https": _refuse_remote_ref},
        use_default=False,
        use_formats=False,
    )


def draft07_incompatibilities(schema: Mapping[str, Any]) -> list[str]:
    """Why `schema` would not mean the same when compiled as draft-07 (empty when it would)."""
    problems: list[str] = []
    _check_subschema(schema, schema, "#", problems)
    return problems


@functools.cache
def _alert_validator() -> Validate:
    return compile_validator(ALERT_SCHEMA)


@functools.cache
def _dead_letter_validator() -> Validate:
    return compile_validator(DEAD_LETTER_SCHEMA)


def _check_subschema(node: Any, root: Mapping[str, Any], path: str, problems: list[str]) -> None:
    if isinstance(node, bool):
        return
    if not isinstance(node, Mapping):
        problems.append(f"{path}: a schema must be an object or a boolean")
        return
    for keyword in node:
        if keyword not in _ALLOWED:
            problems.append(f"{path}: keyword {keyword!r} is outside the allow-list")
        elif keyword in _ROOT_ONLY and node is not root:
            problems.append(f"{path}: {keyword!r} is only allowed at the root")
    if "$ref" in node:
        _check_ref(node, root, path, problems)
    for keyword in ("exclusiveMinimum", "exclusiveMaximum"):
        # Draft-04's boolean form would be read differently.
        if keyword in node and not _is_number(node[keyword]):
            problems.append(f"{path}/{keyword}: must be a number")
    if isinstance(node.get("items"), list):
        problems.append(f"{path}/items: the array form means prefixItems in 2020-12")
    for keyword in _SUBSCHEMA & node.keys():
        _check_subschema(node[keyword], root, f"{path}/{keyword}", problems)
    for keyword in _SUBSCHEMA_LIST & node.keys():
        children = node[keyword]
        if not isinstance(children, list):
            problems.append(f"{path}/{keyword}: must be an array of schemas")
            continue
        for index, child in enumerate(children):
            _check_subschema(child, root, f"{path}/{keyword}/{index}", problems)
    for keyword in _SUBSCHEMA_MAP & node.keys():
        named = node[keyword]
        if not isinstance(named, Mapping):
            problems.append(f"{path}/{keyword}: must be an object of schemas")
            continue
        for name, child in named.items():
            _check_subschema(child, root, f"{path}/{keyword}/{name}", problems)


def _check_ref(
    node: Mapping[str, Any], root: Mapping[str, Any], path: str, problems: list[str]
) -> None:
    # Draft-07 ignores the siblings of $ref, 2020-12 applies them: only annotations may sit there.
    siblings = set(node) - {"$ref"} - _ANNOTATIONS
    if siblings:
        problems.append(f"{path}: $ref has sibling keywords {sorted(siblings)}")
    ref = node["$ref"]
    if not isinstance(ref, str) or not ref.startswith("#/"):
        problems.append(f"{path}: $ref {ref!r} is not a local JSON pointer")
        return
    target: Any = root
    for token in ref[2:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, Mapping) or token not in target:
            problems.append(f"{path}: $ref {ref!r} does not resolve")
            return
        target = target[token]


def _inline_refs(schema: dict[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with every local ``$ref`` replaced by its target, and without ``$defs``.

    Sound for schemas that pass ``draft07_incompatibilities``: a ``$ref`` has only
    annotations beside it, which validate nothing, and targets are local JSON pointers.
    A cycle of references cannot be inlined and raises ``ValueError``.
    """

    def inline(node: Any, trail: tuple[str, ...]) -> Any:
        if not isinstance(node, dict):
            return node  # a boolean schema
        ref = node.get("$ref")
        if isinstance(ref, str):
            if ref in trail:
                raise ValueError(f"$ref cycle through {ref!r}")
            target: Any = root
            for token in ref[2:].split("/"):
                target = target[token.replace("~1", "/").replace("~0", "~")]
            return inline(target, (*trail, ref))
        out: dict[str, Any] = {}
        for keyword, value in node.items():
            if keyword == "$defs":
                continue
            if keyword in _SUBSCHEMA:
                out[keyword] = inline(value, trail)
            elif keyword in _SUBSCHEMA_LIST:
                out[keyword] = [inline(child, trail) for child in value]
            elif keyword in _SUBSCHEMA_MAP:
                out[keyword] = {name: inline(child, trail) for name, child in value.items()}
            else:  # assertions and annotations hold data, never schemas
                out[keyword] = value
        return out

    inlined: dict[str, Any] = inline(schema, ())
    return inlined


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _refuse_remote_ref(uri: str) -> Any:
    raise ValueError(f"remote $ref refused: {uri}")


def _capped(detail: str) -> str:
    if len(detail) <= MAX_DETAIL_CHARS:
        return detail
    return detail[: MAX_DETAIL_CHARS - 1] + "…"


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array"


@functools.cache
def _label_validator() -> Validate:
    return compile_validator(LABEL_SCHEMA)


def validate_thresholds(document: dict[str, Any]) -> None:
    """Raise ValueError naming the offending path if `document` breaks thresholds.v1.json
    (``vigil tune``'s output; written once per run, so compiled on each call)."""
    try:
        compile_validator("thresholds.v1.json")(document)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise ValueError(exc.message) from exc
