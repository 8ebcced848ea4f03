"""The pattern stage on a real broker: observations keyed by pattern key, two consumers,
one alert per pattern; a growing attack updates its alert; state kept exactly once across
SIGKILLs and a consumer joining mid-stream."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from detectors.patterns import PatternFinder
from schemas.validation import validate_alert
from stream.kafka_io import DeliveryTracker, flush_or_raise
from stream.kafka_local import create_topics
from stream.patterns_stage import PatternStage, load_stage_settings, pattern_alert_id
from stream.topic_reader import committed_offsets, end_offsets, read_topic
from tests.integration.service_runner import ROOT, ServiceProcess
from tests.unit.observation_traffic import decode_all, reference_updates, scored_traffic

pytestmark = pytest.mark.integration


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """As the scoring service will: librdkafka's default (key-hash) partitioner."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    tracker = DeliveryTracker()
    for key, value in records:
        producer.produce(topic, key=key, value=value, on_delivery=tracker.callback)
        tracker.sent()
        producer.poll(0)
    flush_or_raise(producer, tracker, 30.0)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def all_committed(bootstrap: str, group: str, topic: str) -> Callable[[], bool]:
    def check() -> bool:
        return committed_offsets(bootstrap, group, topic) == end_offsets(bootstrap, topic)

    return check


def alerts_by_id(bootstrap: str, topic: str) -> dict[str, list[dict[str, Any]]]:
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in read_topic(bootstrap, topic):
        alert = orjson.loads(record.value or b"")
        validate_alert(alert)
        assert record.key == alert["alert_id"].encode()
        by_id[alert["alert_id"]].append(alert)
    return dict(by_id)


def test_an_attack_over_two_partitions_and_two_consumers_is_one_alert(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    observations, alerts_topic = unique_name("observations"), unique_name("alerts")
    create_topics(kafka_bootstrap, {observations: 2, alerts_topic: 1})
    group = unique_name("patterns")
    settings = load_stage_settings(
        {
            "bootstrap": kafka_bootstrap,
            "observations_topic": observations,
            "alerts_topic": alerts_topic,
            "dlq_topic": unique_name("dlq"),
            "group": group,
            "session_timeout_ms": 6000,
        },
        env={},
    )
    # One process, two members: each its own transactional id.
    stages = [
        PatternStage(settings.model_copy(update={"group_instance_id": name}))
        for name in ("one", "two")
    ]
    threads = [threading.Thread(target=stage.run, daemon=True) for stage in stages]
    for thread in threads:
        thread.start()
    try:
        # Both members own one partition before any observation arrives.
        wait_for(lambda: all(len(s.owned.states) == 1 for s in stages), 60, "two members")
        # Events of two input partitions (keyed by user), scored per partition; their
        # observations keyed by pattern key.
        traffic = scored_traffic(events=8000, seed=3, partitions=2)
        produce(kafka_bootstrap, observations, traffic.records)
        wait_for(all_committed(kafka_bootstrap, group, observations), 120, "all committed")
    finally:
        for stage in stages:
            stage.stop()
        for thread in threads:
            thread.join(timeout=60)
    assert all(s.summary.observations > 0 for s in stages), "both consumers had work"
    assert sum(s.summary.observations for s in stages) == len(traffic.records)

    by_id = alerts_by_id(kafka_bootstrap, alerts_topic)
    expected = reference_updates(traffic.records)  # one finder over everything, in order
    assert set(by_id) == {pattern_alert_id(u.pattern_id) for u in expected}
    for alert_id, steps in by_id.items():
        # No duplicates: one record per lifecycle step, sequence 1, 2, 3, ...
        assert [s["sequence"] for s in steps] == list(range(1, len(steps) + 1)), alert_id
        assert steps[0]["status"] == "new"
        assert all(s["status"] == "growing" for s in steps[1:-1])
    # The same records, step by step, as the single finder (resolutions may wait for the
    # watermark of their partition, so only new and growing are compared).
    got = sorted(
        (s["pattern"]["pattern_id"], s["status"], s["pattern"]["events"])
        for steps in by_id.values()
        for s in steps
        if s["status"] != "resolved"
    )
    assert got == sorted(
        (u.pattern_id, u.status, u.support) for u in expected if u.status != "resolved"
    )
    # Attacks whose events came from both input partitions are one alert each.
    spanning = {
        alert_id
        for alert_id, steps in by_id.items()
        if {r["partition"] for r in steps[-1]["pattern"]["source_ranges"]} == {0, 1}
    }
    attacked = {
        alert_id
        for alert_id in spanning
        if any(traffic.attack_of.get(e) for e in by_id[alert_id][0]["event_ids"])
    }
    assert len(attacked) >= 5
    # Arrival bursts too: the accounts arriving at one device or /24 came from both input
    # partitions, and their pattern is one alert.
    arrivals = {
        alert_id
        for alert_id, steps in by_id.items()
        if steps[0]["explanation"][0]["feature"] == "arrival_rate"
    }
    assert arrivals & spanning
    # Nothing was produced twice: the topic holds exactly what the two members sent.
    assert sum(s.summary.alerts for s in stages) == sum(len(v) for v in by_id.values())


def test_a_growing_attack_updates_one_alert(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    observations, alerts_topic = unique_name("observations"), unique_name("alerts")
    create_topics(kafka_bootstrap, {observations: 2, alerts_topic: 1})
    group = unique_name("patterns")
    traffic = scored_traffic(events=8000, seed=3, partitions=2)
    # The attack that grows most, and the observation that raises it.
    finder = PatternFinder()
    raised_at: dict[str, int] = {}
    final: dict[str, int] = {}
    for i, decoded in enumerate(decode_all(traffic.records)):
        for update in finder.observe_key(decoded.key, decoded.observation):
            raised_at.setdefault(update.pattern_id, i)
            final[update.pattern_id] = max(final.get(update.pattern_id, 0), update.support)
    biggest = max(final, key=lambda pid: (final[pid], pid))
    assert final[biggest] >= 20
    alert_id = pattern_alert_id(biggest)
    cut = raised_at[biggest] + 1

    command = [
        sys.executable, "-m", "stream.cli", "patterns",
        "--bootstrap", kafka_bootstrap,
        "--observations-topic", observations,
        "--alerts-topic", alerts_topic,
        "--group", group,
    ]  # fmt: skip
    env = {**os.environ, "VIGIL_PATTERNS_SESSION_TIMEOUT_MS": "6000"}
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        # The attack so far: raised, once.
        produce(kafka_bootstrap, observations, traffic.records[:cut])
        wait_for(all_committed(kafka_bootstrap, group, observations), 120, "first part")
        first = alerts_by_id(kafka_bootstrap, alerts_topic)[alert_id]
        assert [(a["status"], a["sequence"]) for a in first] == [("new", 1)]
        # The attack goes on: the same alert grows.
        produce(kafka_bootstrap, observations, traffic.records[cut:])
        wait_for(all_committed(kafka_bootstrap, group, observations), 120, "second part")
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    logs = [orjson.loads(line) for line in stdout.splitlines() if line.startswith(b"{")]
    assert any(line["event"] == "patterns.stopped" for line in logs)

    steps = alerts_by_id(kafka_bootstrap, alerts_topic)[alert_id]
    statuses = [a["status"] for a in steps]
    assert statuses[:3] == ["new", "growing", "growing"]
    assert [a["sequence"] for a in steps] == list(range(1, len(steps) + 1))
    events = [a["pattern"]["events"] for a in steps]
    assert events == sorted(events)
    assert events[-1] == final[biggest]
    assert len({a["pattern"]["pattern_id"] for a in steps}) == 1
    assert len({a["pattern"]["first_seen"] for a in steps}) == 1
    # The latest record per id (a compacted topic's view) is the current state.
    latest = max(steps, key=lambda a: a["sequence"])
    assert latest["pattern"]["events"] == final[biggest]


# -- state across crashes and rebalances, exactly once --------------------------------------

# Small batches and snapshots every few of them, so restores start from a snapshot and
# re-process some records silently.
STAGE_ENV = {
    "VIGIL_PATTERNS_BATCH_SIZE": "300",
    "VIGIL_PATTERNS_CHECKPOINT_EVERY": "700",
    "VIGIL_PATTERNS_SESSION_TIMEOUT_MS": "6000",
}


def stage_command(bootstrap: str, topics: dict[str, str], group: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "stream.cli", "patterns",
        "--bootstrap", bootstrap,
        "--observations-topic", topics["observations"],
        "--alerts-topic", topics["alerts"],
        "--dlq-topic", topics["dlq"],
        "--group", group,
        *extra,
    ]  # fmt: skip


class StageProcess(ServiceProcess):
    """A ``vigil patterns`` left running; its log lines collected as ServiceProcess's."""

    def __init__(
        self, bootstrap: str, topics: dict[str, str], group: str, *extra: str, env: dict[str, str]
    ) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            stage_command(bootstrap, topics, group, *extra),
            cwd=ROOT,
            env={**os.environ, **STAGE_ENV, **env},
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.logs: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def wait_exit(self, timeout_s: float = 240.0) -> int:
        code = self.proc.wait(timeout_s)
        self._reader.join(10)
        return code

    def stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-3000:]


def run_to_idle(bootstrap: str, topics: dict[str, str], group: str, **env: str) -> StageProcess:
    stage = StageProcess(bootstrap, topics, group, "--exit-when-idle", "3", env=env)
    assert stage.wait_exit() == 0, stage.stderr_tail()
    return stage


def stage_topics(
    bootstrap: str, unique_name: Callable[[str], str], observations: str
) -> dict[str, str]:
    topics = {
        "observations": observations,
        "alerts": unique_name("alerts"),
        "dlq": unique_name("dlq"),
    }
    create_topics(bootstrap, {topics["alerts"]: 1, topics["dlq"]: 1})
    return topics


def pattern_steps(bootstrap: str, topic: str) -> dict[tuple[str, int], dict[str, Any]]:
    """Every committed alert record by (alert id, sequence); fails on a duplicate step."""
    steps: dict[tuple[str, int], dict[str, Any]] = {}
    for alert_id, records in alerts_by_id(bootstrap, topic).items():
        for alert in records:
            key = (alert_id, alert["sequence"])
            assert key not in steps, f"step {key} written twice"
            steps[key] = alert
        # One id per pattern, its steps 1, 2, 3, ... in order.
        assert [a["sequence"] for a in records] == list(range(1, len(records) + 1)), alert_id
        assert len({a["pattern"]["pattern_id"] for a in records}) == 1
    return steps


def assert_same_steps(
    got: dict[tuple[str, int], dict[str, Any]], want: dict[tuple[str, int], dict[str, Any]]
) -> None:
    lost = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    assert not lost, f"{len(lost)} of {len(want)} steps lost, e.g. {lost[:3]}"
    assert not extra, f"{len(extra)} steps an uninterrupted run did not write, e.g. {extra[:3]}"
    for key, alert in got.items():
        assert alert == want[key], key


def test_sigkills_end_with_exactly_the_pattern_alerts_of_an_uninterrupted_run(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    observations = unique_name("observations")
    create_topics(kafka_bootstrap, {observations: 2})
    traffic = scored_traffic(events=8000, seed=3, partitions=2)
    produce(kafka_bootstrap, observations, traffic.records)

    baseline = stage_topics(kafka_bootstrap, unique_name, observations)
    run_to_idle(kafka_bootstrap, baseline, unique_name("baseline"))
    want = pattern_steps(kafka_bootstrap, baseline["alerts"])
    assert len(want) > 20
    assert any(status == "resolved" for status in (a["status"] for a in want.values()))

    topics = stage_topics(kafka_bootstrap, unique_name, observations)
    group = unique_name("crashy")
    # Static membership and a stable transactional id: as a pod restarted in place.
    env = {"VIGIL_PATTERNS_GROUP_INSTANCE_ID": "crashy-0"}
    rng = random.Random(7)
    lives = []
    for _ in range(3):
        stage = StageProcess(kafka_bootstrap, topics, group, env=env)
        stage.wait_for("batch.committed", rng.randint(2, 6))
        time.sleep(rng.uniform(0.0, 0.2))  # anywhere in the next batch or snapshot
        stage.kill()
        lives.append(stage)
    lives.append(run_to_idle(kafka_bootstrap, topics, group, **env))
    resumed = [line for life in lives for line in life.events("state.resumed")]
    assert any(line["snapshot_bytes"] > 0 for line in resumed), "no restart used a snapshot"
    stopped = lives[-1].events("patterns.stopped")
    assert len(stopped) == 1

    assert_same_steps(pattern_steps(kafka_bootstrap, topics["alerts"]), want)
    assert committed_offsets(kafka_bootstrap, group, observations) == end_offsets(
        kafka_bootstrap, observations
    )


def test_a_consumer_joining_mid_stream_keeps_one_id_per_pattern_and_its_sequence(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    observations = unique_name("observations")
    create_topics(kafka_bootstrap, {observations: 4})
    traffic = scored_traffic(events=8000, seed=3, partitions=2)
    half = len(traffic.records) // 2
    topics = stage_topics(kafka_bootstrap, unique_name, observations)
    group = unique_name("pair")

    produce(kafka_bootstrap, observations, traffic.records[:half])
    one = StageProcess(
        kafka_bootstrap, topics, group, env={"VIGIL_PATTERNS_GROUP_INSTANCE_ID": "one"}
    )
    two: StageProcess | None = None
    try:
        wait_for(all_committed(kafka_bootstrap, group, observations), 120, "first half")
        two = StageProcess(
            kafka_bootstrap, topics, group, env={"VIGIL_PATTERNS_GROUP_INSTANCE_ID": "two"}
        )
        two.wait_for("state.resumed")
        produce(kafka_bootstrap, observations, traffic.records[half:])
        wait_for(all_committed(kafka_bootstrap, group, observations), 120, "second half")
    finally:
        codes = [s.terminate() for s in (two, one) if s is not None]
    assert codes == [0, 0], one.stderr_tail()
    assert two is not None
    # The newcomer took over partitions with the state the first member handed over.
    assert any(line["snapshot_bytes"] > 0 for line in two.events("state.resumed"))
    assert two.events("pattern.alert"), "the newcomer raised nothing"

    got = pattern_steps(kafka_bootstrap, topics["alerts"])
    # Patterns open across the handover went on under their id, sequence unbroken.
    handed_over = {line["alert_id"] for line in one.events("pattern.alert")} & {
        line["alert_id"] for line in two.events("pattern.alert")
    }
    assert handed_over, "no pattern was open across the handover"

    baseline = stage_topics(kafka_bootstrap, unique_name, observations)
    run_to_idle(kafka_bootstrap, baseline, unique_name("baseline"))
    assert_same_steps(got, pattern_steps(kafka_bootstrap, baseline["alerts"]))
