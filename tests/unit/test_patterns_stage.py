from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from jsonschema import Draft202012Validator

import schemas
from schemas import ALERT_SCHEMA, load_schema
from schemas.validation import validate_alert, validate_dead_letter_headers
from stream.observations import Decoded, decode_observation
from stream.patterns_stage import (
    PartitionPatterns,
    PatternStage,
    load_stage_settings,
    pattern_alert_id,
)
from stream.settings import ConfigError
from tests.unit.fakes import FakeConsumer, FakeMessage, FakeProducer
from tests.unit.observation_traffic import decode_all, reference_updates, scored_traffic

TOPIC = "vigil.observations"
REFERENCE = Draft202012Validator(load_schema(ALERT_SCHEMA))


def settings(**overrides: Any) -> Any:
    cli = {
        "bootstrap": "localhost:9092",
        "observations_topic": TOPIC,
        "alerts_topic": "alerts",
        "dlq_topic": "dlq",
        "group": "patterns",
        **overrides,
    }
    return load_stage_settings(cli, env={})


def run_stage(
    records: list[tuple[bytes | None, bytes | None]], batch: int = 500
) -> tuple[PatternStage, FakeProducer, FakeConsumer, list[str]]:
    journal: list[str] = []
    messages = [
        FakeMessage(TOPIC, 0, offset, value, key) for offset, (key, value) in enumerate(records)
    ]
    batches = [messages[i : i + batch] for i in range(0, len(messages), batch)]
    consumer = FakeConsumer(journal, batches)
    producer = FakeProducer(journal)
    stage = PatternStage(settings(), consumer=cast(Any, consumer), producer=cast(Any, producer))
    consumer.exhausted = True  # type: ignore[attr-defined]
    stage.run()
    return stage, producer, consumer, journal


def alerts_of(producer: FakeProducer) -> list[dict[str, Any]]:
    return [orjson.loads(p.value or b"") for p in producer.delivered if p.topic == "alerts"]


def test_the_stage_raises_the_patterns_one_finder_raises_with_one_id_each() -> None:
    traffic = scored_traffic(events=8000, seed=3)
    stage, producer, consumer, journal = run_stage(list(traffic.records))
    alerts = alerts_of(producer)
    expected = reference_updates(traffic.records, resolve_all=True)
    got = [(a["pattern"]["pattern_id"], a["status"], a["pattern"]["events"]) for a in alerts]
    # Resolutions wait for the watermark less the lateness; everything else matches.
    want = [(u.pattern_id, u.status, u.support) for u in expected]
    assert [g for g in got if g[1] != "resolved"] == [w for w in want if w[1] != "resolved"]
    assert {g for g in got if g[1] == "resolved"} <= set(want)
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for alert in alerts:
        validate_alert(alert)
        assert REFERENCE.is_valid(alert)
        by_id[alert["alert_id"]].append(alert)
    for alert_id, steps in by_id.items():
        assert alert_id == pattern_alert_id(steps[0]["pattern"]["pattern_id"])
        assert [s["sequence"] for s in steps] == list(range(1, len(steps) + 1))
        statuses = [s["status"] for s in steps]
        assert statuses[0] == "new"
        assert set(statuses[1:-1]) <= {"growing"}
        assert "resolved" not in statuses[:-1]
        events = [s["pattern"]["events"] for s in steps]
        assert events == sorted(events)
        assert {s["pattern"]["first_seen"] for s in steps} == {steps[0]["pattern"]["first_seen"]}
    growing = [steps for steps in by_id.values() if steps[-1]["status"] != "new"]
    assert any(s[1]["status"] == "growing" for s in growing if len(s) > 1)
    # Every alert record is keyed by its alert id (a compacted topic keeps the latest).
    keys = [p.key for p in producer.delivered if p.topic == "alerts"]
    assert keys == [a["alert_id"].encode() for a in alerts]
    last_commit = len(journal) - 1 - journal[::-1].index("commit")
    assert journal[last_commit - 1] == "flush"  # alerts delivered before the offsets move
    assert consumer.commits[-1][0].offset == len(traffic.records)
    assert stage.summary.observations == len(traffic.records)


def test_a_pattern_alert_explains_itself() -> None:
    traffic = scored_traffic(events=8000, seed=3)
    _, producer, _, _ = run_stage(list(traffic.records))
    alert = max(alerts_of(producer), key=lambda a: a["pattern"]["events"])
    pattern = alert["pattern"]
    assert alert["kind"] == "pattern"
    assert alert["detector"] == "patterns/1"
    # Raised at a risk ratio of 5 (the threshold), kept open while it stays above 3.
    assert alert["score"] == pattern["risk_ratio"] >= 3.0
    assert alert["threshold"] == 5.0
    assert alert["explanation"][0]["feature"] == "anomaly_rate"
    assert alert["explanation"][0]["value"] > alert["explanation"][0]["baseline"]
    assert 1 <= len(alert["event_ids"]) <= 5
    assert {traffic.attack_of[e] for e in alert["event_ids"]} - {None}, "an attack's events"
    assert pattern["top_features"]
    assert pattern["top_features"][0]["events"] >= pattern["top_features"][-1]["events"]
    assert pattern["users"] >= 2
    assert pattern["first_seen"] <= pattern["last_seen"] <= pattern["updated_at"]
    assert {r["partition"] for r in pattern["source_ranges"]} == {0, 1}
    for r in pattern["source_ranges"]:
        assert r["from_offset"] <= r["to_offset"]
    if "ip24" in pattern["attribute"]:
        assert alert["entity"]["type"] == "ip"


def test_quiet_patterns_resolve_in_event_time() -> None:
    traffic = scored_traffic(events=8000, seed=3)
    decoded = decode_all(traffic.records)
    part = PartitionPatterns(settings().pattern_config(), lateness_s=300.0)
    alerts = []
    for d in decoded:
        alerts += part.observe(d)
    alerts += part.advance()
    open_ids = {a["alert_id"] for a in alerts} - {
        a["alert_id"] for a in alerts if a["status"] == "resolved"
    }
    # One late, normal observation far in event time resolves every open pattern.
    late = max(d.observation.t for d in decoded) + 3 * 3600.0
    far = decode_observation(b"country:ZZ", orjson.dumps({"v": 1, "t": late, "a": False, "w": 8}))
    assert isinstance(far, Decoded)
    part.observe(far)
    resolved = part.advance()
    assert {a["alert_id"] for a in resolved} == open_ids
    for alert in resolved:
        assert alert["status"] == "resolved"
        updated = alert["pattern"]["updated_at"]
        assert updated > alert["pattern"]["last_seen"]
    assert part.advance() == []


def test_bad_observations_go_to_the_dead_letter_topic_and_the_offset_advances() -> None:
    good_key, good_value = scored_traffic(events=500, seed=3).records[0]
    records: list[tuple[bytes | None, bytes | None]] = [
        (b"ip24:1.2.3", b"not json"),
        (None, good_value),
        (good_key, good_value),
    ]
    stage, producer, consumer, journal = run_stage(records)
    dead = [p for p in producer.delivered if p.topic == "dlq"]
    assert [p.headers["vigil.dlq.reason"] for p in dead] == [b"invalid_json", b"schema_violation"]
    for p in dead:
        validate_dead_letter_headers(p.headers)
    assert dead[0].value == b"not json"
    assert dead[1].headers["vigil.source.offset"] == b"1"
    assert stage.summary.dead_letters == 2
    assert stage.summary.observations == 1
    assert consumer.commits[-1][0].offset == 3
    assert journal.index("flush") < journal.index("commit")


def test_settings_have_their_own_prefix_and_name_bad_values() -> None:
    base = {"bootstrap": "b:1", "observations_topic": "o", "alerts_topic": "a", "group": "g"}
    env = {"VIGIL_GROUP": "the-scorers", "VIGIL_PATTERNS_LATENESS_S": "60"}
    loaded = load_stage_settings(base, env=env)
    assert loaded.group == "g"
    assert loaded.lateness_s == 60.0
    assert loaded.dlq_topic == "vigil.patterns.dlq"
    with pytest.raises(
        ConfigError, match=r"setting 'lateness_s' \(env VIGIL_PATTERNS_LATENESS_S\)"
    ):
        load_stage_settings(base, env={"VIGIL_PATTERNS_LATENESS_S": "soon"})
    with pytest.raises(ConfigError, match="unknown setting 'warmup'"):
        load_stage_settings(base, env={"VIGIL_PATTERNS_WARMUP": "5"})
    with pytest.raises(ConfigError, match="window_s must not exceed quiet_s"):
        load_stage_settings({**base, "window_s": 7200.0}, env={})
    with pytest.raises(ConfigError, match=r"setting 'group' \(default\)"):
        load_stage_settings({k: v for k, v in base.items() if k != "group"}, env={})


def test_settings_from_a_toml_section(tmp_path: Path) -> None:
    config = tmp_path / "vigil.toml"
    config.write_text('[patterns]\nbootstrap = "b:1"\nobservations-topic = "o"\n')
    loaded = load_stage_settings({"alerts_topic": "a", "group": "g"}, config_file=config, env={})
    assert loaded.observations_topic == "o"


def test_the_documented_pattern_alert_is_valid() -> None:
    text = (Path(schemas.__file__).parent / "CONTRACTS.md").read_text()
    section = text[text.index("### Pattern alert example") :]
    block = re.search(r"```json\n(.*?)\n```", section, re.DOTALL)
    assert block is not None
    alert = json.loads(block.group(1))
    validate_alert(alert)
    assert REFERENCE.is_valid(alert)
    assert alert["kind"] == "pattern"
    assert alert["alert_id"] == pattern_alert_id(alert["pattern"]["pattern_id"])
