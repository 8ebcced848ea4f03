"""``vigil incidents`` with in-memory clients: stage 2's pattern records (from two
observation partitions) in, one incident alert per attack out."""

from __future__ import annotations

import json
import re
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from jsonschema import Draft202012Validator

import schemas
from schemas import ALERT_SCHEMA, LABEL_SCHEMA, load_schema
from schemas.validation import validate_alert, validate_dead_letter_headers, validate_label
from stream.incidents_stage import (
    IncidentStage,
    PartitionIncidents,
    load_incident_settings,
)
from stream.patterns_stage import PatternStage, load_stage_settings, watermark_record
from stream.review import make_label
from stream.settings import ConfigError
from tests.unit.fakes import FakeConsumer, FakeMessage, FakeProducer
from tests.unit.observation_traffic import scored_traffic

OBSERVATIONS, PATTERNS, ALERTS = "vigil.observations", "vigil.patterns", "alerts"
REFERENCE = Draft202012Validator(load_schema(ALERT_SCHEMA))


def _run(stage: Any, consumer: FakeConsumer) -> None:
    consumer.exhausted = True  # type: ignore[attr-defined]
    stage.run()


def pattern_records(events: int = 8000, seed: int = 3) -> tuple[list[FakeMessage], dict[str, Any]]:
    """What ``vigil patterns --pattern-topic`` writes for scored traffic whose observations
    are spread over two partitions by key, as the scoring service spreads them."""
    traffic = scored_traffic(events=events, seed=seed)
    offsets = [0, 0]
    messages = []
    for key, value in traffic.records:
        partition = zlib.crc32(key) % 2
        messages.append(FakeMessage(OBSERVATIONS, partition, offsets[partition], value, key))
        offsets[partition] += 1
    settings = load_stage_settings(
        {
            "bootstrap": "localhost:9092",
            "observations_topic": OBSERVATIONS,
            "alerts_topic": ALERTS,
            "pattern_topic": PATTERNS,
            "group": "patterns",
        },
        env={},
    )
    journal: list[str] = []
    consumer = FakeConsumer(journal, [messages[i : i + 700] for i in range(0, len(messages), 700)])
    producer = FakeProducer(journal)
    stage = PatternStage(settings, consumer=cast(Any, consumer), producer=cast(Any, producer))
    _run(stage, consumer)
    assert not [p for p in producer.delivered if p.topic == ALERTS], "all to the pattern topic"
    out = [
        FakeMessage(PATTERNS, 0, offset, p.value, p.key)
        for offset, p in enumerate(q for q in producer.delivered if q.topic == PATTERNS)
    ]
    return out, traffic.attack_of


def incident_settings(**overrides: Any) -> Any:
    cli = {
        "bootstrap": "localhost:9092",
        "pattern_topic": PATTERNS,
        "alerts_topic": ALERTS,
        "dlq_topic": "dlq",
        "group": "incidents",
        **overrides,
    }
    return load_incident_settings(cli, env={})


def run_incidents(
    messages: list[FakeMessage], batch: int = 50
) -> tuple[IncidentStage, FakeProducer]:
    journal: list[str] = []
    consumer = FakeConsumer(
        journal, [messages[i : i + batch] for i in range(0, len(messages), batch)]
    )
    producer = FakeProducer(journal)
    stage = IncidentStage(
        incident_settings(), consumer=cast(Any, consumer), producer=cast(Any, producer)
    )
    _run(stage, consumer)
    return stage, producer


def test_the_patterns_of_an_attack_become_one_incident_with_contiguous_steps() -> None:
    messages, attack_of = pattern_records()
    bodies = [orjson.loads(m.value() or b"") for m in messages]
    patterns = [b for b in bodies if b["kind"] == "pattern"]
    assert {b["kind"] for b in bodies} == {"pattern", "watermark"}
    for body in patterns:
        validate_alert(body)
        assert REFERENCE.is_valid(body)
        assert (
            set(body["event_ids"]) <= set(body["pattern"]["event_sample"])
            or len(body["pattern"]["event_sample"]) == 16
        )
        assert body["pattern"]["user_sample"]
    _, producer = run_incidents(messages)
    alerts = [orjson.loads(p.value or b"") for p in producer.delivered if p.topic == ALERTS]
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for alert in alerts:
        validate_alert(alert)
        assert REFERENCE.is_valid(alert)
        by_id[alert["alert_id"]].append(alert)
    assert [p.key for p in producer.delivered] == [a["alert_id"].encode() for a in alerts]
    pattern_ids = {b["alert_id"] for b in patterns}
    assert 0 < len(by_id) < len(pattern_ids) / 2, "several patterns per incident"
    listed: dict[str, str] = {}
    for alert_id, steps in by_id.items():
        assert [s["sequence"] for s in steps] == list(range(1, len(steps) + 1))
        assert steps[0]["status"] == "new"
        assert "resolved" not in [s["status"] for s in steps[:-1]]
        assert [s["status"] for s in steps[1:-1]] == ["growing"] * (len(steps) - 2)
        if steps[-1]["incident"]["merged_into"] is not None:
            assert steps[-1]["incident"]["merged_into"] in by_id
            continue  # its patterns are listed by the incident it was merged into
        for p in steps[-1]["incident"]["patterns"]:
            assert listed.setdefault(p["alert_id"], alert_id) == alert_id, "one incident each"
    assert set(listed) <= pattern_ids
    # Grouping adds no mix of attacks: where each of an incident's patterns names one attack
    # instance at most (concurrent attacks on one shop are one pattern), the incident does.
    named = {
        b["alert_id"]: {attack_of[e] for e in b["event_ids"] + b["pattern"]["event_sample"]}
        for b in patterns
    }
    for steps in by_id.values():
        members = [p["alert_id"] for p in steps[-1]["incident"]["patterns"]]
        if all(len(named[m] - {None}) <= 1 for m in members):
            assert len({attack_of[e] for e in steps[-1]["event_ids"]} - {None}) <= 1


def test_an_incident_alert_explains_itself() -> None:
    messages, _ = pattern_records()
    _, producer = run_incidents(messages)
    alerts = [orjson.loads(p.value or b"") for p in producer.delivered]
    alert = max(alerts, key=lambda a: a["incident"]["pattern_count"])
    incident = alert["incident"]
    assert alert["kind"] == "incident"
    assert alert["detector"] == "incidents/1"
    assert incident["pattern_count"] >= 2
    assert len(incident["members"]) >= 2
    assert incident["events"] >= max(p["events"] for p in incident["patterns"])
    assert incident["first_seen"] <= incident["last_seen"]
    assert incident["top_features"]
    assert incident["source_ranges"]
    assert 1 <= len(alert["event_ids"]) <= 10
    assert alert["entity"]["type"] in {"user", "device", "ip", "shop", "incident"}


def test_watermarks_resolve_only_once_every_partition_has_passed() -> None:
    model = PartitionIncidents(incident_settings().incident_config())
    assert model.watermark == float("-inf")
    model.observe(orjson.dumps(watermark_record(0, 2, 100.0)))
    assert model.watermark == float("-inf")  # partition 1 not heard yet
    model.observe(orjson.dumps(watermark_record(1, 2, 50.0)))
    assert model.watermark == 50.0
    model.observe(orjson.dumps(watermark_record(1, 2, 40.0)))  # never backwards
    assert model.watermark == 50.0


def test_records_that_are_not_patterns_go_to_the_dead_letter_topic() -> None:
    messages = [
        FakeMessage(PATTERNS, 0, 0, b"not json", b"k"),
        FakeMessage(PATTERNS, 0, 1, b'{"kind": "event"}', b"k"),
    ]
    stage, producer = run_incidents(messages)
    dead = [p for p in producer.delivered if p.topic == "dlq"]
    assert len(dead) == 2
    for p in dead:
        validate_dead_letter_headers(dict(cast(Any, p.headers)))
    assert stage.summary.dead_letters == 2


def test_settings_have_their_own_prefix_and_name_bad_values(tmp_path: Path) -> None:
    loaded = load_incident_settings(
        {"pattern_topic": "p", "alerts_topic": "a"},
        env={"VIGIL_INCIDENTS_GROUP": "g", "VIGIL_INCIDENTS_BOOTSTRAP": "b", "VIGIL_GROUP": "x"},
    )
    assert (loaded.group, loaded.state_topic_name) == ("g", "g.state")
    assert loaded.transactional_id_value.startswith("vigil-incidents-g-")
    assert loaded.stage_settings().consumer_config()["isolation.level"] == "read_committed"
    assert loaded.stage_settings().observations_topic == "p"
    with pytest.raises(ConfigError, match="'min_shared' \\(env VIGIL_INCIDENTS_MIN_SHARED\\)"):
        load_incident_settings(
            {"pattern_topic": "p", "alerts_topic": "a", "group": "g", "bootstrap": "b"},
            env={"VIGIL_INCIDENTS_MIN_SHARED": "0"},
        )
    with pytest.raises(ConfigError, match="unknown setting 'nope'"):
        load_incident_settings({"nope": 1}, env={})
    config = tmp_path / "vigil.toml"
    config.write_text('[incidents]\nbootstrap = "b"\ngroup = "g"\npattern-topic = "p"\n')
    assert load_incident_settings({"alerts_topic": "a"}, config_file=config, env={}).group == "g"


def test_the_documented_incident_alert_is_valid_and_labels_can_name_it() -> None:
    text = (Path(schemas.__file__).parent / "CONTRACTS.md").read_text()
    section = text[text.index("### Incident alert example") :]
    block = re.search(r"```json\n(.*?)\n```", section, re.DOTALL)
    assert block is not None
    alert = json.loads(block.group(1))
    validate_alert(alert)
    assert REFERENCE.is_valid(alert)
    assert alert["kind"] == "incident"
    label = make_label(alert, "true_positive", "oncall", "2026-11-02T04:00:00.000Z")
    validate_label(label)
    assert Draft202012Validator(load_schema(LABEL_SCHEMA)).is_valid(label)


def test_group_wait_reaches_the_grouper_and_leaves_the_fingerprint_alone() -> None:
    from stream.checkpoint import fingerprint

    base = {"bootstrap": "b:1", "pattern_topic": "p", "alerts_topic": "a", "group": "g"}
    default = load_incident_settings(base, env={})
    assert default.incident_config().group_wait_s == 300.0
    changed = load_incident_settings({**base, "group_wait_s": 0.0}, env={})
    assert changed.incident_config().group_wait_s == 0.0
    # Snapshots made before group_wait_s existed (or under another value) still restore.
    before = "IncidentConfig(min_shared=1, growth_factor=2.0, examples=10, top_features=5, "
    before += "max_listed=50, max_open=10000, max_closed=200000)"

    class Old:
        def __repr__(self) -> str:
            return before

    assert default.fingerprint() == changed.fingerprint() == fingerprint(Old())
    assert load_incident_settings({**base, "min_shared": 2}, env={}).fingerprint() != (
        default.fingerprint()
    )
    with pytest.raises(ConfigError, match="group_wait_s"):
        load_incident_settings({**base, "group_wait_s": -5}, env={})
