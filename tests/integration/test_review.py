"""vigil review on a real broker: simulated reviewer labels, listing and one manual verdict."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from schemas.validation import validate_label
from stream.kafka_local import create_topics
from stream.topic_reader import read_topic
from stream.traffic.generator import TrafficConfig, generate, label_line
from stream.traffic.sinks import produce_to_kafka
from tests.integration.service_runner import ROOT, run_service

pytestmark = pytest.mark.integration


def _review(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", "review", *args],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_simulated_reviewer_labels_alerts_from_the_truth(kafka_bootstrap, unique_name, tmp_path):
    topics = {k: unique_name(k) for k in ("input", "alerts", "dlq", "labels")}
    create_topics(kafka_bootstrap, dict.fromkeys(topics.values(), 1))
    records = list(generate(TrafficConfig(events=6_000, seed=8)))
    produce_to_kafka(iter(records), kafka_bootstrap, topics["input"])
    assert run_service(kafka_bootstrap, topics, unique_name("group")).returncode == 0
    alerts = [orjson.loads(r.value or b"") for r in read_topic(kafka_bootstrap, topics["alerts"])]
    assert len(alerts) > 10
    truth = tmp_path / "truth.jsonl"
    truth.write_bytes(b"".join(label_line(r) + b"\n" for r in records))
    common = ["--bootstrap", kafka_bootstrap, "--alerts-topic", topics["alerts"]]

    simulated = _review(
        "simulate", *common, "--labels-topic", topics["labels"], "--truth", str(truth),
        "--max-labels", "10",
    )  # fmt: skip
    assert simulated.returncode == 0, simulated.stderr
    labels = [orjson.loads(r.value or b"") for r in read_topic(kafka_bootstrap, topics["labels"])]
    assert len(labels) == 10
    attack_of = {r.event_id: r.attack for r in records}
    for label, alert in zip(labels, alerts[:10], strict=True):
        validate_label(label)
        assert label["alert_id"] == alert["alert_id"]
        expected = attack_of[alert["event_ids"][0]]
        assert label["verdict"] == ("true_positive" if expected else "false_positive")

    listed = _review("list", *common, "--labels-topic", topics["labels"], "--limit", "1000")
    assert listed.returncode == 0, listed.stderr
    assert f"{len(alerts) - 10} open alerts" in listed.stderr
    assert alerts[0]["alert_id"] not in listed.stdout
    assert alerts[10]["alert_id"] in listed.stdout

    manual = _review(
        "label", *common, "--labels-topic", topics["labels"], "--alert-id", alerts[10]["alert_id"],
        "--verdict", "unsure", "--reviewer", "ana@example.com", "--reason", "needs a look",
    )  # fmt: skip
    assert manual.returncode == 0, manual.stderr
    last = orjson.loads(read_topic(kafka_bootstrap, topics["labels"])[-1].value or b"")
    validate_label(last)
    assert (last["alert_id"], last["verdict"], last["reviewer"]) == (
        alerts[10]["alert_id"], "unsure", "ana@example.com",
    )  # fmt: skip
