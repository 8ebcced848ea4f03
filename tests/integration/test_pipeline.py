"""The pipeline end to end on a real broker: generated traffic in, alerts and dead letters
out, checked from the outside."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from schemas.validation import validate_alert, validate_dead_letter_headers
from stream.kafka_local import create_topics
from stream.topic_reader import committed_offsets, end_offsets, read_topic
from stream.traffic.generator import TrafficConfig, generate
from stream.traffic.sinks import produce_to_kafka
from tests.integration.service_runner import run_service

pytestmark = pytest.mark.integration


def _topics(unique_name, input_partitions):
    topics = {kind: unique_name(kind) for kind in ("input", "alerts", "dlq")}
    return topics, {topics["input"]: input_partitions, topics["alerts"]: 1, topics["dlq"]: 1}


def test_events_in_alerts_and_dead_letters_out(kafka_bootstrap, unique_name):
    topics, partitions = _topics(unique_name, 3)
    create_topics(kafka_bootstrap, partitions)
    records = list(generate(TrafficConfig(events=20_000, seed=11, bad_fraction=0.02)))
    produce_to_kafka(iter(records), kafka_bootstrap, topics["input"])
    group = unique_name("group")

    first = run_service(kafka_bootstrap, topics, group)
    assert first.returncode == 0, first.stderr[-3000:]

    # Every offset of every partition is committed.
    assert committed_offsets(kafka_bootstrap, group, topics["input"]) == end_offsets(
        kafka_bootstrap, topics["input"]
    ), [line for line in first.logs if line["event"] != "dead_letter"][-30:]
    # Exactly the malformed records are dead letters, with their reason and source.
    malformed = [r for r in records if r.malformed is not None]
    assert malformed
    dead = read_topic(kafka_bootstrap, topics["dlq"])
    assert Counter(d.value for d in dead) == Counter(r.value for r in malformed)
    for d in dead:
        assert d.headers["vigil.dlq.reason"] in {
            b"oversized",
            b"invalid_json",
            b"not_an_object",
            b"schema_violation",
        }
        assert d.headers["vigil.dlq.detail"]
        validate_dead_letter_headers(d.headers)
        assert d.headers["vigil.source.topic"] == topics["input"].encode()
        int(d.headers["vigil.source.offset"])
    # Every alert follows the contract and points back at its event.
    alerts = [orjson.loads(r.value or b"") for r in read_topic(kafka_bootstrap, topics["alerts"])]
    assert alerts
    for alert in alerts:
        validate_alert(alert)
    assert len({a["alert_id"] for a in alerts}) == len(alerts)
    # Attacks are caught: alerts land on attack events far above the base rate.
    attack_of = {r.event_id: r.attack for r in records if r.attack is not None}
    attack_share = len(attack_of) / len(records)
    hits = [attack_of[a["event_ids"][0]] for a in alerts if a["event_ids"][0] in attack_of]
    assert len(hits) / len(alerts) > 3 * attack_share
    assert len(set(hits)) >= 2, "at least two attack types caught"
    stopped = first.stopped
    assert stopped["events"] + stopped["dead_letters"] == len(records)
    assert stopped["alerts"] == len(alerts)

    # A second run on the same group has nothing left to do.
    second = run_service(kafka_bootstrap, topics, group, idle_s=2.0)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stopped["events"] == 0
    assert second.stopped["dead_letters"] == 0
    assert len(read_topic(kafka_bootstrap, topics["alerts"])) == len(alerts)


@pytest.mark.parametrize("point", ["after_produce", "before_commit"])
def test_sigkill_between_alerts_and_commit_loses_no_alert(kafka_bootstrap, unique_name, point):
    """At-least-once: the process dies after producing a batch's alerts and before
    committing it. One input partition keeps the order fixed, so a restart from the same
    (empty) state must produce at least every alert the killed run produced."""
    topics, partitions = _topics(unique_name, 1)
    create_topics(kafka_bootstrap, partitions)
    records = list(generate(TrafficConfig(events=3_000, seed=5)))
    produce_to_kafka(iter(records), kafka_bootstrap, topics["input"])
    group = unique_name("group")
    env = {"VIGIL_BATCH_SIZE": "1500", "VIGIL_LOG_LEVEL": "debug"}

    killed = run_service(
        kafka_bootstrap, topics, group, extra_env={**env, "VIGIL_FAULT_KILL_AT": f"{point}:1"}
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    produced_before_kill = {line["alert_id"] for line in killed.events("alert.produced")}
    assert produced_before_kill, "the killed batch must have produced alerts"
    assert not killed.events("batch.committed")
    committed = committed_offsets(kafka_bootstrap, group, topics["input"])
    assert all(offset < 0 for offset in committed.values()), committed

    restarted = run_service(kafka_bootstrap, topics, group, extra_env=env)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    on_topic = [orjson.loads(r.value or b"") for r in read_topic(kafka_bootstrap, topics["alerts"])]
    missing = produced_before_kill - {a["alert_id"] for a in on_topic}
    assert not missing, (
        [line for line in killed.logs if line.get("alert_id") in missing],
        [line for line in restarted.logs if line["event"] != "alert.produced"][:40],
        [line for line in killed.logs if line["event"] != "alert.produced"][:20],
    )
    assert restarted.stopped["events"] == len(records)
    assert committed_offsets(kafka_bootstrap, group, topics["input"]) == end_offsets(
        kafka_bootstrap, topics["input"]
    )


@pytest.mark.parametrize("missing", ["alerts", "dlq"])
def test_a_missing_output_topic_fails_at_start_naming_its_setting(
    kafka_bootstrap, unique_name, missing
):
    topics, partitions = _topics(unique_name, 1)
    del partitions[topics[missing]]
    create_topics(kafka_bootstrap, partitions)
    produce_to_kafka(
        iter(list(generate(TrafficConfig(events=50, seed=1)))), kafka_bootstrap, topics["input"]
    )
    run = run_service(kafka_bootstrap, topics, unique_name("group"), idle_s=2.0)
    assert run.returncode != 0
    setting = {"alerts": "alerts_topic", "dlq": "dlq_topic"}[missing]
    assert f"setting '{setting}'" in run.stderr + "".join(map(str, run.logs))
    assert topics[missing] in run.stderr + "".join(map(str, run.logs))
