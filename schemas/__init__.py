"""Vigil's JSON Schema contracts (see CONTRACTS.md), packaged as data files."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

EVENT_SCHEMA = "event.v1.json"
ALERT_SCHEMA = "alert.v1.json"
DEAD_LETTER_SCHEMA = "dead_letter.v1.json"
LABEL_SCHEMA = "label.v1.json"

# Mirrors the event_type enum in event.v1.json; a test keeps the two equal.
EVENT_TYPES: tuple[str, ...] = (
    "account.created",
    "account.login",
    "listing.created",
    "order.placed",
    "payment.attempted",
    "message.sent",
    "review.posted",
)


def load_schema(name: str) -> dict[str, Any]:
    """A fresh copy of the packaged schema `name` (e.g. EVENT_SCHEMA); callers may mutate it."""
    # Only plain file names: the name must not reach outside the package.
    if "/" in name or "\\" in name or not name.endswith(".json"):
        raise ValueError(f"not a schema file name: {name!r}")
    text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    schema = json.loads(text)
    if not isinstance(schema, dict):
        raise ValueError(f"{name} is not a JSON object")
    return schema
