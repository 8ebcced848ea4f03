from __future__ import annotations

import pytest

from schemas.validation import _inline_refs


def test_refs_are_replaced_by_their_targets_and_defs_dropped():
    schema = {
        "$defs": {
            "id": {"type": "string", "minLength": 1},
            "ids": {"items": {"$ref": "#/$defs/id"}},
        },
        "properties": {
            "a": {"$ref": "#/$defs/id", "description": "kept out"},
            "b": {"$ref": "#/$defs/ids"},
            # Data keywords are copied as they are, even when they look like a reference.
            "c": {"const": {"$ref": "#/$defs/id"}},
            "$ref": {"type": "integer"},  # a property named $ref is a property
        },
    }
    assert _inline_refs(schema, schema) == {
        "properties": {
            "a": {"type": "string", "minLength": 1},
            "b": {"items": {"type": "string", "minLength": 1}},
            "c": {"const": {"$ref": "#/$defs/id"}},
            "$ref": {"type": "integer"},
        }
    }


def test_a_reference_cycle_is_refused():
    schema = {"$defs": {"node": {"items": {"$ref": "#/$defs/node"}}}, "$ref": "#/$defs/node"}
    with pytest.raises(ValueError, match="cycle"):
        _inline_refs(schema, schema)
