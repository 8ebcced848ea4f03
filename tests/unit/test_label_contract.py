"""The label contract (schemas/label.v1.json): a well-formed 2020-12 schema whose compiled
validator agrees with a real 2020-12 validator, and whose verdicts are those the precision
thresholds understand."""

from __future__ import annotations

import copy
import hashlib
import json
import random
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

import fastjsonschema
import pytest
from jsonschema import Draft202012Validator

from detectors.precision import VERDICTS
from schemas import ALERT_SCHEMA, EVENT_SCHEMA, load_schema
from schemas.validation import compile_validator, draft07_incompatibilities

LABEL_SCHEMA = "label.v1.json"
EXAMPLES = resources.files("schemas").joinpath("examples")

FAST = compile_validator(LABEL_SCHEMA)
REFERENCE = Draft202012Validator(load_schema(LABEL_SCHEMA))
DELETE = object()


def label_id(alert_id: str, reviewer: str, labeled_at: str) -> str:
    """The contract's recipe for a stable label id (as stream/alerts.py makes alert ids)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update("\x1f".join((alert_id, reviewer, labeled_at)).encode())
    return "lb-" + digest.hexdigest()


def valid_label() -> dict[str, Any]:
    alert_id = "al-" + "0123456789abcdef" * 2
    return {
        "label_id": label_id(alert_id, "ana@example.com", "2026-11-02T14:00:00Z"),
        "schema_version": 1,
        "alert_id": alert_id,
        "verdict": "false_positive",
        "reason": "A regular buyer's holiday order.",
        "reviewer": "ana@example.com",
        "labeled_at": "2026-11-02T14:00:00Z",
        "detector": "hst-river/1",
        "segment": "order.placed",
        "score": 0.93,
    }


def with_change(label: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(label)
    if value is DELETE:
        changed.pop(field, None)
    else:
        changed[field] = value
    return changed


def fast_accepts(instance: Any) -> bool:
    try:
        FAST(instance)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


def reference_accepts(instance: Any) -> bool:
    return bool(REFERENCE.is_valid(instance))


# ---------------------------------------------------------------- the schema itself


def test_schema_is_valid_draft_2020_12() -> None:
    schema = load_schema(LABEL_SCHEMA)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://vigil.dev/schemas/{LABEL_SCHEMA}"
    assert schema["title"]
    assert schema["description"]


def test_schema_compiles_as_draft_07_without_change_of_meaning() -> None:
    assert draft07_incompatibilities(load_schema(LABEL_SCHEMA)) == []


def test_schema_is_closed_and_every_property_described() -> None:
    schema = load_schema(LABEL_SCHEMA)
    assert schema["additionalProperties"] is False
    for name, child in schema["properties"].items():
        assert child.get("description"), name
    assert set(schema["required"]) == set(schema["properties"]) - {"reason", "entity"}


def test_timestamp_is_the_event_contracts() -> None:
    # The same definition (and so the same regex) as occurred_at: one notion of a timestamp.
    label = load_schema(LABEL_SCHEMA)
    assert label["$defs"]["timestamp"] == load_schema(EVENT_SCHEMA)["$defs"]["timestamp"]
    assert label["properties"]["labeled_at"]["$ref"] == "#/$defs/timestamp"


def test_verdicts_are_those_the_thresholds_understand() -> None:
    schema = load_schema(LABEL_SCHEMA)
    assert schema["properties"]["verdict"]["enum"] == list(VERDICTS)


def test_alert_ids_of_the_alert_contract_are_accepted() -> None:
    pattern = load_schema(ALERT_SCHEMA)["properties"]["alert_id"]["pattern"]
    alert_id = "al-" + "f" * 32
    assert re.search(pattern, alert_id)
    assert fast_accepts(with_change(valid_label(), "alert_id", alert_id))


# ---------------------------------------------------------------- parity with 2020-12


def _valid_cases() -> Iterator[tuple[str, dict[str, Any]]]:
    label = valid_label()
    yield "the base label", label
    for verdict in VERDICTS:
        yield f"verdict {verdict}", with_change(label, "verdict", verdict)
    yield "pattern alert", with_change(label, "alert_id", "pa-" + "0" * 32)
    yield "no reason", with_change(label, "reason", DELETE)
    yield "reason null", with_change(label, "reason", None)
    yield "reason empty", with_change(label, "reason", "")
    yield "reason of 500 code points", with_change(label, "reason", "é" * 500)
    yield "reviewer of 1 char", with_change(label, "reviewer", "a")
    yield "reviewer of 128 chars", with_change(label, "reviewer", "r" * 128)
    yield "segment a cohort", with_change(label, "segment", "new-sellers/US")
    yield "segment of 128 chars", with_change(label, "segment", "s" * 128)
    yield "integer score", with_change(label, "score", 3)
    yield "negative score", with_change(label, "score", -12.5)
    yield "huge score", with_change(label, "score", 1e300)
    yield "integer-valued float version", with_change(label, "schema_version", 1.0)
    for stamp in (
        "2026-11-02T14:00:00.1Z",
        "2026-11-02T14:00:00.123456789Z",
        "2028-02-29T00:00:00Z",
        "2000-02-29T23:59:59Z",
    ):
        yield f"labeled_at {stamp}", with_change(label, "labeled_at", stamp)


BAD_VALUES: dict[str, list[Any]] = {
    "label_id": ["", "lb-123", "lb-" + "A" * 32, "al-" + "0" * 32, "lb-" + "0" * 33, 7, None],
    "schema_version": [2, 0, "1", True, 1.5, None],
    "alert_id": [
        "al-123",
        "al-" + "0123456789ABCDEF" * 2,
        "px-" + "0" * 32,
        " al-" + "0" * 32,
        None,
    ],
    "verdict": ["TRUE_POSITIVE", "true", "", True, None],
    "reason": ["r" * 501, 5, False, ["why"]],
    "reviewer": ["", "r" * 129, None, 1],
    "labeled_at": [
        "2026-11-02T14:00:00",
        "2026-11-02T14:00:00+00:00",
        "2026-11-02 14:00:00Z",
        "2026-02-30T00:00:00Z",
        "2100-02-29T00:00:00Z",
        "2026-11-02T24:00:00Z",
        "2026-11-02T14:00:60Z",
        "2026-11-02T14:00:00.1234567890Z",
        1_793_000_000,
        None,
    ],
    "detector": ["", None, 1],
    "segment": ["", "s" * 129, None, ["order.placed"]],
    "score": ["0.9", True, None, [0.9]],
}


def _invalid_cases() -> Iterator[tuple[str, dict[str, Any]]]:
    label = valid_label()
    for field in label:
        if field != "reason":
            yield f"no {field}", with_change(label, field, DELETE)
    yield "extra field", with_change(label, "extra", 1)
    yield "the alert's threshold is not part of a label", with_change(label, "threshold", 0.9)
    for field, values in BAD_VALUES.items():
        for value in values:
            yield f"{field}={value!r:.40}", with_change(label, field, value)


@pytest.mark.parametrize(("case", "label"), list(_valid_cases()))
def test_valid_labels_pass_both_validators(case: str, label: dict[str, Any]) -> None:
    assert fast_accepts(label), case
    assert reference_accepts(label), case


@pytest.mark.parametrize(("case", "label"), list(_invalid_cases()))
def test_invalid_labels_fail_both_validators(case: str, label: dict[str, Any]) -> None:
    assert not fast_accepts(label), case
    assert not reference_accepts(label), case


def test_not_an_object_is_rejected() -> None:
    not_objects: list[Any] = [[], "label", 1, None]
    for value in not_objects:
        assert not fast_accepts(value)
        assert not reference_accepts(value)


def test_random_mutations_get_the_same_verdict_from_both() -> None:
    rng = random.Random(7)
    pool: list[Any] = [
        None,
        True,
        0,
        1,
        -1.5,
        "",
        "x",
        "r" * 129,
        "r" * 501,
        [],
        {},
        "unsure",
        "pa-" + "a" * 32,
        "lb-" + "b" * 32,
        "2026-11-02T14:00:00Z",
    ]
    for value_list in BAD_VALUES.values():
        pool.extend(value_list)
    fields = [*valid_label(), "extra"]
    verdicts = set()
    for _ in range(3000):
        label = valid_label()
        for _ in range(rng.randint(1, 3)):
            field = rng.choice(fields)
            label = with_change(label, field, rng.choice([*pool, DELETE]))
        accepted = reference_accepts(label)
        assert fast_accepts(label) == accepted, label
        verdicts.add(accepted)
    assert verdicts == {True, False}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("label_id", "lb-" + "0" * 32 + "\n"),
        ("alert_id", "al-" + "0" * 32 + "\n"),
        ("labeled_at", "2026-11-02T14:00:00Z\n"),
    ],
)
def test_a_trailing_newline_is_rejected_as_ecma_262_says(field: str, value: str) -> None:
    # 2020-12 patterns are ECMA-262 regexes, whose `$` matches only at the end of the input.
    # Python's `$` also matches before a final newline: fastjsonschema rewrites `$` as `\Z`
    # (right), jsonschema's reference calls re.search on the pattern as written (wrong). The
    # one known disagreement, pinned: if the reference starts rejecting these, move them to
    # BAD_VALUES.
    label = with_change(valid_label(), field, value)
    assert not fast_accepts(label)
    assert reference_accepts(label)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("verdict", "maybe", "data.verdict must be one of"),
        ("alert_id", "al-1", "data.alert_id must match pattern"),
        ("reason", "r" * 501, "data.reason must be shorter than or equal to 500 characters"),
        ("labeled_at", "2026-11-02T14:00:00+01:00", "data.labeled_at must match pattern"),
        ("extra", 1, "data must not contain {'extra'} properties"),
    ],
)
def test_compiled_messages_name_the_field(field: str, value: Any, message: str) -> None:
    with pytest.raises(fastjsonschema.JsonSchemaValueException, match="^" + re.escape(message)):
        FAST(with_change(valid_label(), field, value))


# ---------------------------------------------------------------- the documented example


def test_example_is_valid_and_consistent() -> None:
    example = json.loads(EXAMPLES.joinpath("label.json").read_text(encoding="utf-8"))
    FAST(example)
    assert reference_accepts(example)
    assert example["label_id"] == label_id(
        example["alert_id"], example["reviewer"], example["labeled_at"]
    )
    # It labels the documented alert, with that alert's detector, segment and score.
    alert = json.loads(EXAMPLES.joinpath("alert.json").read_text(encoding="utf-8"))
    assert example["alert_id"] == alert["alert_id"]
    assert (example["detector"], example["segment"], example["score"]) == (
        alert["detector"],
        alert["event_type"],
        alert["score"],
    )
