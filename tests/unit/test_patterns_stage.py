from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from confluent_kafka import TopicPartition
from jsonschema import Draft202012Validator

import schemas
from schemas import ALERT_SCHEMA, load_schema
from schemas.validation import validate_alert, validate_dead_letter_headers
from stream.checkpoint import SnapshotAssembler, fingerprint
from stream.delivery import AtLeastOnce, TransactionAbortedError
from stream.observations import Decoded, decode_observation
from stream.patterns_stage import (
    _RECORD,
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
    anomalies = [a for a in alerts_of(producer) if a["explanation"][0]["feature"] == "anomaly_rate"]
    alert = max(anomalies, key=lambda a: a["pattern"]["events"])
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


def test_an_arrival_pattern_alert_explains_itself() -> None:
    # Score-free evidence: many users turning up at one device or /24 at once. In this
    # traffic every such burst is an attack's (its events name attack events).
    traffic = scored_traffic(events=8000, seed=3)
    _, producer, _, _ = run_stage(list(traffic.records))
    arrivals = [a for a in alerts_of(producer) if a["explanation"][0]["feature"] == "arrival_rate"]
    assert arrivals, "the attacks' throwaway accounts arrive together"
    for alert in arrivals:
        validate_alert(alert)
        pattern = alert["pattern"]
        assert pattern["attribute"] in ("device", "ip24")
        assert pattern["users"] >= 3
        assert pattern["events"] >= 3
        assert pattern["top_features"][0]["feature"] == "arriving_users"
        explained = alert["explanation"][0]
        assert explained["value"] >= 5.0 * explained["baseline"] * 0.999 or alert["status"] != "new"
        assert {traffic.attack_of[e] for e in alert["event_ids"]} - {None}
    # Anomaly patterns on the same values keep ids of their own.
    anomaly_ids = {
        a["alert_id"]
        for a in alerts_of(producer)
        if a["explanation"][0]["feature"] != "arrival_rate"
    }
    assert not anomaly_ids & {a["alert_id"] for a in arrivals}


def test_a_snapshot_from_before_arrival_patterns_restores() -> None:
    part = PartitionPatterns(settings().pattern_config(), lateness_s=300.0)
    state = part.__dict__.copy()
    for name in ("arrivals", "_of_arrival_key"):
        del state[name]
    old = PartitionPatterns.__new__(PartitionPatterns)
    old.__setstate__(state)
    assert old.open_patterns == 0
    traffic = scored_traffic(events=3000, seed=3)
    for d in decode_all(traffic.records):
        old.observe(d)
    assert old.arrivals.counted_keys > 0


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
    # One late, normal observation far in event time resolves every open pattern: the
    # resolutions come with it, before anything it causes itself.
    late = max(d.observation.t for d in decoded) + 3 * 3600.0
    far = decode_observation(b"country:ZZ", orjson.dumps({"v": 1, "t": late, "a": False, "w": 8}))
    assert isinstance(far, Decoded)
    resolved = part.observe(far)
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
    with pytest.raises(ConfigError, match=r"setting 'arrival_min_users'"):
        load_stage_settings({**base, "arrival_min_users": 1}, env={})


def test_arrival_settings_reach_the_finder_and_only_changes_move_the_fingerprint() -> None:
    base = {"bootstrap": "b:1", "observations_topic": "o", "alerts_topic": "a", "group": "g"}
    default = load_stage_settings(base, env={})
    # At their defaults the arrival settings leave the fingerprint as it was before they
    # existed, so older snapshots still restore.
    old = fingerprint((default.pattern_config(), 300.0, 16, _RECORD))
    assert default.fingerprint() == old
    tuned = load_stage_settings(
        {**base, "arrival_min_users": 4, "arrival_prior_per_day": 2.0}, env={}
    )
    assert tuned.fingerprint() != old
    config = tuned.arrival_config()
    assert (config.min_users, config.prior_per_day) == (4, 2.0)
    assert PatternStage(tuned)._fresh(0).arrivals.arrival_config == config


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


# -- state across restarts, rebalances and aborted transactions (fakes) ---------------------

STATE_TOPIC = "patterns.state"  # the default: <group>.state


@dataclass
class StateProducer(FakeProducer):
    """Also takes the ``partition`` that snapshots are produced with."""

    def produce(self, topic: str, *args: Any, partition: int | None = None, **kw: Any) -> None:
        super().produce(topic, *args, **kw)

    def state_topic(self) -> SnapshotAssembler:
        found = SnapshotAssembler()
        for p in self.delivered:
            if p.topic == STATE_TOPIC:
                found.add(p.key, p.value)
        return found


@dataclass
class OwningConsumer(FakeConsumer):
    """Owns partition 0 of the observations: reads from wherever the stage assigns or
    seeks it, remembers the group's committed offset, and revokes on close if asked."""

    messages: list[FakeMessage] = field(default_factory=list)
    end: int = 0  # the partition's end for this life (a crash after it)
    batch: int = 500
    committed_at: int = -1001
    revoke_on_close: bool = False
    starts: list[int] = field(default_factory=list)
    callbacks: dict[str, Any] = field(default_factory=dict)

    def subscribe(self, topics: list[str], **kwargs: Any) -> None:
        self.callbacks = kwargs
        kwargs["on_assign"](self, [TopicPartition(TOPIC, 0)])

    def committed(self, partitions: list[TopicPartition], **kwargs: Any) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.committed_at) for tp in partitions]

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> list[Any]:
        super().commit(offsets=offsets, asynchronous=asynchronous)
        for tp in offsets:
            self.committed_at = tp.offset
        return offsets

    def incremental_assign(self, starts: list[TopicPartition]) -> None:
        (start,) = starts
        self.seek(start)

    def seek(self, partition: TopicPartition) -> None:
        self.starts.append(partition.offset)
        rest = self.messages[max(partition.offset, 0) : self.end]
        self.batches = [rest[i : i + self.batch] for i in range(0, len(rest), self.batch)]

    def close(self) -> None:
        if self.revoke_on_close:
            self.callbacks["on_revoke"](self, [TopicPartition(TOPIC, 0)])
        super().close()


class AbortingDelivery(AtLeastOnce):
    """Transactions on the fake producer: nothing is delivered before the commit, and
    the ``fail_at``-th commit aborts instead (what was produced in it is dropped)."""

    def __init__(self, producer: StateProducer, fail_at: int) -> None:
        super().__init__(cast(Any, producer), 1.0)
        self.fake, self.fail_at, self.commits = producer, fail_at, 0

    def commit(self, consumer: Any, offsets: list[TopicPartition]) -> None:
        self.commits += 1
        if self.commits == self.fail_at:
            self.fake._pending.clear()
            self.tracker.pending = 0
            raise TransactionAbortedError("aborted by the test")
        super().commit(consumer, offsets)


def stateful_run(
    messages: list[FakeMessage],
    *,
    end: int,
    state: StateProducer | None = None,
    committed: int = -1001,
    batch: int = 500,
    revoke_on_close: bool = False,
    fail_at: int | None = None,
) -> tuple[PatternStage, StateProducer, OwningConsumer]:
    """One life of a stage that keeps state: restores from ``state``'s state topic and
    the group's ``committed`` offset, reads to ``end``, then stops (or crashes)."""
    journal: list[str] = []
    producer = StateProducer(journal)
    if state is not None:  # the topic so far: what earlier lives delivered
        producer.delivered = [p for p in state.delivered if p.topic == STATE_TOPIC]
    consumer = OwningConsumer(
        journal, [], messages=messages, end=end, batch=batch, committed_at=committed,
        revoke_on_close=revoke_on_close,
    )  # fmt: skip
    delivery = (
        AtLeastOnce(cast(Any, producer), 1.0)
        if fail_at is None
        else AbortingDelivery(producer, fail_at)
    )
    stage = PatternStage(
        settings(checkpoint_every=1200),
        consumer=cast(Any, consumer),
        producer=cast(Any, producer),
        delivery=delivery,
        read_state=lambda partition: producer.state_topic(),
    )
    consumer.exhausted = True  # type: ignore[attr-defined]
    stage.run()
    return stage, producer, consumer


def observation_messages() -> tuple[list[FakeMessage], list[dict[str, Any]]]:
    """The observations of 8000 events on one partition, and the alerts of a stage that
    reads them without interruption."""
    records: list[tuple[bytes | None, bytes | None]] = list(
        scored_traffic(events=8000, seed=3).records
    )
    messages = [FakeMessage(TOPIC, 0, i, value, key) for i, (key, value) in enumerate(records)]
    _, producer, _, _ = run_stage(records, batch=700)
    return messages, alerts_of(producer)


def test_a_restart_resumes_from_the_snapshot_and_replays_silently_to_the_commit() -> None:
    messages, want = observation_messages()
    cut = 5000
    first, state, consumer = stateful_run(messages, end=cut)  # then killed: no revoke
    assert consumer.committed_at == cut
    assert first.summary.replayed == 0
    # Batches of another size, from the last snapshot (every 1200 records, at batch ends).
    second, after, consumer2 = stateful_run(
        messages, end=len(messages), state=state, committed=cut, batch=300
    )
    assert consumer2.starts == [4500]
    assert second.summary.replayed == cut - 4500
    assert second.summary.observations == len(messages) - cut
    assert all(tp.offset > cut for c in consumer2.commits for tp in c)
    # Exactly the alerts of the uninterrupted run: same ids, sequences and content.
    assert alerts_of(state) + alerts_of(after) == want
    assert second.health.ready is False  # stopped
    assert second.owned.states[(TOPIC, 0)].restoring_since is None


def test_a_pattern_open_across_a_handover_keeps_its_id_and_sequence() -> None:
    messages, want = observation_messages()
    cut = 5200
    _, state, _ = stateful_run(messages, end=cut, revoke_on_close=True)
    second, after, consumer = stateful_run(messages, end=len(messages), state=state, committed=cut)
    assert consumer.starts == [cut]  # the revoke's snapshot: nothing to re-process
    assert second.summary.replayed == 0
    before, later = alerts_of(state), alerts_of(after)
    assert before + later == want
    spanning = {a["alert_id"] for a in before} & {a["alert_id"] for a in later}
    assert spanning, "no pattern was open across the handover"
    for alert_id in spanning:
        steps = [a["sequence"] for a in before + later if a["alert_id"] == alert_id]
        assert steps == list(range(1, len(steps) + 1))


def test_without_a_snapshot_the_state_is_rebuilt_from_the_first_offset() -> None:
    messages, want = observation_messages()
    cut = 6000  # past the first pattern alerts of this traffic, so some come before it
    _, state, _ = stateful_run(messages, end=cut)
    state.delivered = []  # no usable snapshot: replay [0, C) silently
    second, after, consumer = stateful_run(messages, end=len(messages), state=state, committed=cut)
    assert consumer.starts == [0]
    assert second.summary.replayed == cut
    later = alerts_of(after)
    assert 0 < len(later) < len(want)
    assert want[-len(later) :] == later


def test_an_aborted_transaction_rewinds_to_the_snapshot_and_loses_nothing() -> None:
    messages, want = observation_messages()
    stage, producer, consumer = stateful_run(messages, end=len(messages), fail_at=6)
    # Snapshot at 1500 (batch 3); batch 6 (records 2500-3000) aborted, read again from 1500.
    assert consumer.starts == [0, 1500]
    assert stage.summary.replayed == 2500 - 1500
    assert alerts_of(producer) == want


# -- shutdown ------------------------------------------------------------------------------


def test_a_stop_starts_the_shutdown_clock_and_bounds_the_delivery() -> None:
    traffic = scored_traffic(events=600, seed=4)
    messages = [
        FakeMessage(TOPIC, 0, offset, value, key)
        for offset, (key, value) in enumerate(traffic.records)
    ]
    journal: list[str] = []
    consumer = FakeConsumer(journal, [messages[:200], messages[200:]])
    stage = PatternStage(
        settings(shutdown_timeout_s=7.5),
        consumer=cast(Any, consumer),
        producer=cast(Any, FakeProducer(journal)),
    )
    deadlines: list[float | None] = []
    original = stage._process_batch

    def stop_after_first_batch(*args: Any) -> None:
        original(*args)
        deadlines.append(stage._out.deadline if stage._out else None)
        stage.stop("SIGTERM")  # as the signal handler would, between two batches
        deadlines.append(stage._out.deadline if stage._out else None)

    stage._process_batch = stop_after_first_batch  # type: ignore[method-assign,assignment]
    assert stage.shutdown_started is None
    assert not stage.finished
    summary = stage.run()
    assert deadlines[0] is None  # no deadline while running
    assert stage.shutdown_started is not None
    assert deadlines[1] == pytest.approx(stage.shutdown_started + 7.5)
    assert stage.finished
    assert summary.clean
    assert consumer.closed
    assert summary.observations < len(messages)  # the second batch was never taken


def test_the_watchdog_ends_a_stage_whose_close_hangs() -> None:
    import threading
    import time

    from stream.service import ShutdownWatchdog

    release = threading.Event()

    class HangingConsumer(FakeConsumer):
        def close(self) -> None:
            release.wait(30)  # a close librdkafka does not return from
            super().close()

    consumer = HangingConsumer([], [])
    consumer.exhausted = True  # type: ignore[attr-defined]
    stage = PatternStage(
        settings(shutdown_timeout_s=0.2),
        consumer=cast(Any, consumer),
        producer=cast(Any, FakeProducer([])),
    )
    exits: list[int] = []
    exited = threading.Event()

    def record_exit(code: int) -> None:
        exits.append(code)
        exited.set()

    ShutdownWatchdog(stage, 0.3, exit=record_exit, poll_s=0.01).start()
    runner = threading.Thread(target=stage.run, daemon=True)
    runner.start()
    try:
        assert exited.wait(10), "the watchdog did not end the stage"
        assert exits == [1]  # close never returned: not finished
        assert stage.shutdown_started is not None
        assert time.monotonic() - stage.shutdown_started < 10
    finally:
        release.set()
        runner.join(10)
    assert stage.finished
