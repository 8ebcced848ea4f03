"""The valid-event fast path of ``EventValidator.decode``: bytes to an accepted event dict.

Compiled with mypyc (detectors/compiled.py): once the parse and the Struct's check are
counted, what is left of a valid event's decoding is glue (the type lookup, the joined
string of its patterned fields, the calls), which compiled code does in about half the
time. Accept-only: whatever it does not accept, ``EventValidator.decode`` judges and words
again from the bytes, as before this module existed.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec
import orjson

# Joins the patterned strings of an event; no pattern accepts it (see PatternCheck).
SEPARATOR: Final = "\x00"
# The envelope's patterned strings, by path, in the order ``PatternCheck`` joins them.
ENVELOPE_FIELDS: Final = (
    ("event_id",),
    ("occurred_at",),
    ("context", "ip"),
    ("context", "country"),
)

_loads: Final = orjson.loads
_convert: Final = msgspec.convert


class PatternCheck:
    """Every pattern of one event type in a single regex match.

    msgspec runs a field's pattern through a generic method call, about 0.3 us each, five
    to seven times an event. Here the patterned strings are joined with NUL into one
    string and matched against the patterns joined the same way, each wrapped as
    ``(?:inner)`` between the anchors its own pattern had (``^inner\\Z``).

    Never looser than the patterns one by one: the text must hold exactly one NUL per
    join, so the joins' NULs are the only ones in it and every pattern must match exactly
    its own string, start to end. It can be stricter (a pattern whose lookaround peeks
    past its string's end would now see a NUL), and stricter is safe: a rejected event
    is judged again by fastjsonschema, as every event the Structs reject is.
    """

    def __init__(
        self,
        envelope_patterns: dict[tuple[str, ...], str],
        payload_patterns: dict[str, str],
    ) -> None:
        """The patterns of the envelope's strings by path (those of ENVELOPE_FIELDS, in
        that order), then ``payload_patterns`` by payload field."""
        if tuple(envelope_patterns) != ENVELOPE_FIELDS:
            raise ValueError(f"envelope patterns must be those of {ENVELOPE_FIELDS}, in order")
        patterns = [*envelope_patterns.values(), *payload_patterns.values()]
        inners = []
        for pattern in patterns:
            if not (pattern.startswith("^") and pattern.endswith("\\Z")):
                raise ValueError(f"pattern {pattern!r} is not anchored at both ends")
            inners.append(f"(?:{pattern[1:-2]})")
        self._match = re.compile("^" + SEPARATOR.join(inners) + "\\Z").match
        self._payload_fields = tuple(payload_patterns)
        self._separators = len(patterns) - 1

    def __call__(self, event: dict[str, Any]) -> bool:
        """Whether every patterned string of ``event`` (which its Struct accepted, so each
        is a ``str``) matches its pattern."""
        context: dict[str, Any] = event["context"]
        # ENVELOPE_FIELDS, spelled out: this runs for every event.
        event_id: str = event["event_id"]
        occurred_at: str = event["occurred_at"]
        ip: str = context["ip"]
        country: str = context["country"]
        text = f"{event_id}\x00{occurred_at}\x00{ip}\x00{country}"
        if self._payload_fields:
            payload: dict[str, Any] = event["payload"]
            for name in self._payload_fields:
                value: str = payload[name]
                text += SEPARATOR + value
        return text.count(SEPARATOR) == self._separators and self._match(text) is not None


class FastPath:
    """Per event type, its Struct (event_structs.py) and its ``PatternCheck``; records
    above ``max_bytes`` are left to the slow path, which refuses them."""

    def __init__(self, by_type: dict[str, tuple[type, PatternCheck]], max_bytes: int) -> None:
        self._by_type = by_type
        self._max_bytes = max_bytes

    def accept(self, raw: bytes | None) -> dict[str, Any] | None:
        """The parsed event if it is valid by the Structs and patterns; ``None``: not
        accepted here (maybe not even JSON), for the slow path to judge."""
        if raw is None or len(raw) > self._max_bytes:
            return None
        try:
            value = _loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(value, dict):
            return None
        event_type = value.get("event_type")
        if not isinstance(event_type, str):
            return None
        fast = self._by_type.get(event_type)
        if fast is None:
            return None
        struct, patterns_match = fast
        try:
            # Only the check: the Struct is dropped, so every value keeps orjson's type.
            _convert(value, struct)
        except msgspec.MsgspecError:
            return None
        if patterns_match(value):
            return value
        return None
