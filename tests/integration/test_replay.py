"""Replay reproduces the live service's alerts exactly, without touching its group."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import orjson
import pytest
from confluent_kafka import Producer

from stream.kafka_local import create_topics
from stream.review import make_label, truth_verdict
from stream.topic_reader import BoundedSource, committed_offsets, read_topic
from stream.traffic.generator import TrafficConfig, generate, label_line
from stream.traffic.sinks import produce_to_kafka
from tests.integration.service_runner import ROOT, TEST_ENV, ServiceProcess, run_service

pytestmark = pytest.mark.integration


def _replay(bootstrap: str, topic: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", "replay", "--bootstrap", bootstrap, "--topic", topic,
         *extra],
        cwd=ROOT, env={**os.environ, **TEST_ENV}, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip


def test_live_then_replay_gives_identical_alerts(kafka_bootstrap, unique_name, tmp_path):
    topics = {k: unique_name(k) for k in ("input", "alerts", "dlq")}
    create_topics(kafka_bootstrap, {topics["input"]: 3, topics["alerts"]: 1, topics["dlq"]: 1})
    records = list(generate(TrafficConfig(events=15_000, seed=21, bad_fraction=0.01)))
    produce_to_kafka(iter(records), kafka_bootstrap, topics["input"])
    group = unique_name("group")
    live = run_service(kafka_bootstrap, topics, group)
    assert live.returncode == 0, live.stderr[-3000:]
    live_alerts = [
        orjson.loads(r.value or b"") for r in read_topic(kafka_bootstrap, topics["alerts"])
    ]
    assert live_alerts
    committed_before = committed_offsets(kafka_bootstrap, group, topics["input"])

    labels = tmp_path / "labels.jsonl"
    labels.write_bytes(b"".join(label_line(r) + b"\n" for r in records))
    output = tmp_path / "alerts.jsonl"
    replay = _replay(
        kafka_bootstrap, topics["input"], "--output", str(output), "--labels", str(labels),
        "--compare-with", topics["alerts"],
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr[-3000:] + replay.stdout[-3000:]
    assert "0 differences" in replay.stdout
    replayed = [orjson.loads(line) for line in output.read_bytes().splitlines()]

    def key(alert):
        return alert["alert_id"]

    assert sorted(replayed, key=key) == sorted(live_alerts, key=key)
    assert f"alerts    {len(live_alerts):,}" in replay.stdout
    assert "precision" in replay.stdout
    # The live group's offsets are untouched.
    assert committed_offsets(kafka_bootstrap, group, topics["input"]) == committed_before

    # Reviewers' verdicts on the live alerts, from the labels topic: the replay raises the
    # same alerts, so every verdict lands on one of them and every confirmed one is caught.
    attack_of = {r.event_id: r.attack for r in records}
    judged = [(alert, truth_verdict(alert, attack_of)) for alert in sorted(live_alerts, key=key)]
    sample = [j for j in judged if j[1] == "true_positive"][:15]
    sample += [j for j in judged if j[1] == "false_positive"][: 40 - len(sample)]
    verdicts = [v for _, v in sample]
    sample_alerts = [a for a, _ in sample]
    assert len(verdicts) == 40
    labels_topic = unique_name("labels")
    create_topics(kafka_bootstrap, {labels_topic: 1})
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for alert, verdict in sample:
        label = make_label(alert, verdict, "test", "2026-11-20T10:00:00Z")
        producer.produce(labels_topic, key=label["alert_id"], value=orjson.dumps(label))
    assert producer.flush(30) == 0
    reviewed = _replay(
        kafka_bootstrap, topics["input"], "--output", str(output), "--labels", labels_topic
    )
    assert reviewed.returncode == 0, reviewed.stderr[-3000:]
    true, false = verdicts.count("true_positive"), verdicts.count("false_positive")
    assert true
    assert false
    assert (
        f"labels    40 reviewers' verdicts (topic {labels_topic}); 40 on events" in reviewed.stdout
    )
    assert (
        f"alerts reviewed: 40 of {len(live_alerts):,} (true {true}, false {false}, unsure 0)"
        f"  precision: {true / (true + false):.3f}"
    ) in reviewed.stdout
    assert f"confirmed events: {true}, alerted: {true}  recall: 1.000" in reviewed.stdout
    # Another engine raises other alert ids for the same events: the verdicts still find
    # their events (joined by the live detector's ids), and judge what this one raises.
    config = tmp_path / "iforest.toml"
    config.write_text('engine = "iforest"\n')
    backtest = _replay(
        kafka_bootstrap, topics["input"], "--output", str(output), "--labels", labels_topic,
        "--config", str(config),
    )  # fmt: skip
    assert backtest.returncode == 0, backtest.stderr[-3000:]
    assert "40 on events of the range" in backtest.stdout
    backtest_alerts = [orjson.loads(line) for line in output.read_bytes().splitlines()]
    assert backtest_alerts
    assert {a["detector"] for a in backtest_alerts}.isdisjoint(
        {a["detector"] for a in sample_alerts}
    )
    caught = {e for a in backtest_alerts for e in a["event_ids"]}
    caught_true = sum(1 for a, v in sample if v == "true_positive" and a["event_ids"][0] in caught)
    assert f"confirmed events: {true}, alerted: {caught_true}  " in backtest.stdout

    # From the middle of the topic: from empty state (the thresholds warming up again, the
    # features knowing nothing of the records before) the alerts differ from the live ones;
    # warmed up on the records before the range, they are the live ones exactly, in one
    # process or several.
    middle = "0:2000,1:2000,2:2000"
    cold = _replay(
        kafka_bootstrap, topics["input"], "--from", middle, "--output", str(output),
        "--compare-with", topics["alerts"],
    )  # fmt: skip
    assert cold.returncode == 1, cold.stderr[-3000:]
    assert "differences" in cold.stdout
    assert ": 0 differences" not in cold.stdout
    live_in_range = [a for a in live_alerts if a["source"]["offset"] >= 2000]
    assert live_in_range
    warmed_files = []
    for workers in ("1", "3"):
        warmed = _replay(
            kafka_bootstrap, topics["input"], "--from", middle, "--warm-up-from", "earliest",
            "--output", str(output), "--compare-with", topics["alerts"], "--workers", workers,
        )  # fmt: skip
        assert warmed.returncode == 0, warmed.stderr[-3000:] + warmed.stdout[-3000:]
        assert ": 0 differences" in warmed.stdout
        assert "warm-up   6,000 records before the range" in warmed.stdout
        replayed = [orjson.loads(line) for line in output.read_bytes().splitlines()]
        assert sorted(replayed, key=key) == sorted(live_in_range, key=key)
        warmed_files.append(output.read_bytes())
    assert warmed_files[0] == warmed_files[1]

    # To a topic: the same alerts, and nothing else lands there.
    replayed_topic = unique_name("replayed")
    create_topics(kafka_bootstrap, {replayed_topic: 1})
    to_topic = _replay(kafka_bootstrap, topics["input"], "--output-topic", replayed_topic)
    assert to_topic.returncode == 0, to_topic.stderr[-3000:]
    on_topic = [orjson.loads(r.value or b"") for r in read_topic(kafka_bootstrap, replayed_topic)]
    assert sorted(on_topic, key=key) == sorted(live_alerts, key=key)


def test_a_replay_from_the_live_state_gives_the_alerts_the_live_service_goes_on_to_give(
    kafka_bootstrap, unique_name, tmp_path
):
    topics = {k: unique_name(k) for k in ("input", "alerts", "dlq")}
    create_topics(kafka_bootstrap, {topics["input"]: 3, topics["alerts"]: 1, topics["dlq"]: 1})
    records = list(generate(TrafficConfig(events=12_000, seed=31, bad_fraction=0.01)))
    group = unique_name("group")
    config = tmp_path / "live.toml"
    config.write_text(f'group = "{group}"\n')
    # The live service runs over the first part, snapshotting every 1,000 records of a
    # partition, and is killed once it has committed it all: its snapshots stand behind its
    # committed offsets, as a running service's do.
    produce_to_kafka(iter(records[:7_000]), kafka_bootstrap, topics["input"])
    service = ServiceProcess(
        kafka_bootstrap, topics, group,
        extra_env={"VIGIL_CHECKPOINT_EVERY": "1000", "VIGIL_BATCH_SIZE": "300"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while sum(committed_offsets(kafka_bootstrap, group, topics["input"]).values()) < 7_000:
            assert time.monotonic() < deadline, service.log_tail()
            time.sleep(0.5)
    finally:
        service.kill()
    committed = committed_offsets(kafka_bootstrap, group, topics["input"])
    produce_to_kafka(iter(records[7_000:]), kafka_bootstrap, topics["input"])

    # From the snapshots to the end, in one process or several, before the live service
    # has read the rest.
    files = []
    for workers in ("1", "3"):
        output = tmp_path / f"from-state-{workers}.jsonl"
        replay = _replay(
            kafka_bootstrap, topics["input"], "--warm-up-from", "state", "--config", str(config),
            "--output", str(output), "--workers", workers,
        )  # fmt: skip
        assert replay.returncode == 0, replay.stderr[-3000:] + replay.stdout[-3000:]
        prefix = f"state     the snapshots in {group}.state, as of "
        (line,) = [x for x in replay.stdout.splitlines() if x.startswith(prefix)]
        offsets = line.removeprefix(prefix)
        stands = {int(p): int(o) for p, o in (x.split(":") for x in offsets.split(","))}
        assert sorted(stands) == [0, 1, 2]
        assert all(stands[p] <= committed[p] for p in stands)
        assert sum(stands.values()) < 7_000  # behind the commits: a killed service's
        assert f"records   {12_000 - sum(stands.values()):,} " in replay.stdout
        assert "warm-up" not in replay.stdout  # nothing to warm up: the range starts there
        files.append(output.read_bytes())
    assert files[0] == files[1]
    replayed = [orjson.loads(line) for line in files[0].splitlines()]
    assert replayed
    # The same range from empty state: other alerts.
    cold_output = tmp_path / "cold.jsonl"
    cold = _replay(
        kafka_bootstrap, topics["input"], "--from", offsets, "--output", str(cold_output)
    )
    assert cold.returncode == 0, cold.stderr[-3000:]
    cold_alerts = [orjson.loads(line) for line in cold_output.read_bytes().splitlines()]
    # A later range, warmed up from the snapshots: the records between are read first.
    later = ",".join(f"{p}:{o + 500}" for p, o in sorted(stands.items()))
    later_output = tmp_path / "later.jsonl"
    warmed = _replay(
        kafka_bootstrap, topics["input"], "--from", later, "--warm-up-from", "state",
        "--state-topic", f"{group}.state", "--output", str(later_output),
    )  # fmt: skip
    assert warmed.returncode == 0, warmed.stderr[-3000:]
    assert "warm-up   1,500 records before the range" in warmed.stdout
    assert f"as of {offsets}" in warmed.stdout
    # A range before the snapshots, or a configuration the live service did not run, is
    # refused: neither can start from them.
    early = _replay(
        kafka_bootstrap, topics["input"], "--from", "0:0,1:0,2:0", "--warm-up-from", "state",
        "--config", str(config), "--output", str(tmp_path / "early.jsonl"),
    )  # fmt: skip
    assert early.returncode == 2
    assert "the live state is after --from on partition 0" in early.stderr
    other = tmp_path / "other.toml"
    other.write_text(f'group = "{group}"\nn_trees = 12\n')
    refused = _replay(
        kafka_bootstrap, topics["input"], "--warm-up-from", "state", "--config", str(other),
        "--output", str(tmp_path / "other.jsonl"),
    )  # fmt: skip
    assert refused.returncode == 2
    assert "was made under another scoring configuration" in refused.stderr

    # The live service goes on from its snapshots: its alerts for the rest are the replay's.
    second = run_service(kafka_bootstrap, topics, group)
    assert second.returncode == 0, second.stderr[-3000:]
    live_rest = [
        alert
        for r in read_topic(kafka_bootstrap, topics["alerts"])
        if (alert := orjson.loads(r.value or b""))["source"]["offset"]
        >= stands[alert["source"]["partition"]]
    ]

    def key(alert):
        return alert["alert_id"]

    assert sorted(replayed, key=key) == sorted(live_rest, key=key)
    assert sorted(cold_alerts, key=key) != sorted(live_rest, key=key)
    live_later = [
        a for a in live_rest if a["source"]["offset"] >= stands[a["source"]["partition"]] + 500
    ]
    later_alerts = [orjson.loads(line) for line in later_output.read_bytes().splitlines()]
    assert sorted(later_alerts, key=key) == sorted(live_later, key=key)


def test_replay_of_a_range_is_a_subset_and_bad_bounds_fail_clearly(
    kafka_bootstrap, unique_name, tmp_path
):
    topic = unique_name("input")
    create_topics(kafka_bootstrap, {topic: 1})
    records = list(generate(TrafficConfig(events=3_000, seed=2, attack_rate=1e-3)))
    produce_to_kafka(iter(records), kafka_bootstrap, topic)
    output = tmp_path / "alerts.jsonl"
    truth = tmp_path / "truth.jsonl"
    truth.write_bytes(b"".join(label_line(r) + b"\n" for r in records))
    ranged = _replay(
        kafka_bootstrap, topic, "--to", "0:1000", "--output", str(output), "--labels", str(truth)
    )
    assert ranged.returncode == 0, ranged.stderr[-3000:]
    assert "records   1,000" in ranged.stdout
    # Judged by the truth about the range's events, not the whole file's.
    in_range = Counter(r.attack for r in records[:1000] if r.attack)
    assert in_range  # attacks to judge
    table = ranged.stdout.split("alerted\n", 1)[1].splitlines()
    rows = {line.split()[0]: int(line.split()[4]) for line in table if line.split()[0] in in_range}
    assert rows == dict(in_range)
    # Settings that differ from the live run's show up as differences.
    alerts_topic = unique_name("alerts")
    create_topics(kafka_bootstrap, {alerts_topic: 1})  # empty: every alert is "replay only"
    compared = _replay(
        kafka_bootstrap, topic, "--output", str(output), "--compare-with", alerts_topic
    )
    replayed_bytes = output.read_bytes()
    replayed = replayed_bytes.splitlines()
    assert replayed
    assert compared.returncode == 1
    assert f"{len(replayed)} differences" in compared.stdout
    assert "replay only al-" in compared.stdout
    bad = _replay(kafka_bootstrap, topic, "--from", "yesterday", "--output", str(output))
    assert bad.returncode == 2
    assert "bad time 'yesterday'" in bad.stderr
    late = _replay(
        kafka_bootstrap, topic, "--from", "0:1000", "--warm-up-from", "0:1500",
        "--output", str(output),
    )  # fmt: skip
    assert late.returncode == 2
    assert "--warm-up-from is after --from on partition 0 (offset 1500 > 1000)" in late.stderr
    assert output.read_bytes() == replayed_bytes  # a replay that did not run leaves it
    unknown = _replay(
        kafka_bootstrap, topic, "--to", "0:100", "--output", str(tmp_path / "few.jsonl"),
        "--compare-with", unique_name("nosuch"),
    )  # fmt: skip
    assert unknown.returncode == 1
    assert "vigil replay: --compare-with: topic" in unknown.stderr
    assert "not found" in unknown.stderr
    missing = _replay(kafka_bootstrap, unique_name("nosuch"), "--output", str(output))
    assert missing.returncode == 2
    assert "not found" in missing.stderr
    assert output.read_bytes() == replayed_bytes
    alone = _replay(kafka_bootstrap, topic, "--warm-up-from", "earliest", "--output", str(output))
    assert alone.returncode == 2
    assert "--warm-up-from needs --from" in alone.stderr
    # A warm-up from a time: the records from the first at or after it.
    from_time = records[500].timestamp_ms
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(from_time / 1000))
    timed = _replay(
        kafka_bootstrap, topic, "--from", "0:1000", "--to", "0:1200", "--warm-up-from",
        f"{stamp}.{from_time % 1000:03d}Z", "--output", str(output),
    )  # fmt: skip
    assert timed.returncode == 0, timed.stderr[-3000:]
    first_at_time = min(i for i, r in enumerate(records) if r.timestamp_ms >= from_time)
    assert f"warm-up   {1000 - first_at_time:,} records before the range" in timed.stdout
    assert "records   200 " in timed.stdout


def test_a_bounded_source_stops_at_its_end_without_waiting(kafka_bootstrap, unique_name):
    topic = unique_name("input")
    create_topics(kafka_bootstrap, {topic: 2})
    records = list(generate(TrafficConfig(events=500, seed=3)))
    produce_to_kafka(iter(records), kafka_bootstrap, topic)
    source = BoundedSource(kafka_bootstrap, topic)
    source.subscribe([topic])
    read = []
    try:
        deadline = time.monotonic() + 60
        while not source.exhausted and time.monotonic() < deadline:
            # More asked for than the range holds: the poll returns once all of it has
            # come, not after its 10 s timeout (the last, partial batch of every replay).
            started = time.monotonic()
            read.extend(source.consume(1000, 10.0))
            assert time.monotonic() - started < 5.0
        assert source.exhausted
        assert all(m.error() is None for m in read)
        assert len({(m.partition(), m.offset()) for m in read}) == len(read) == len(records)
        # Past the end nothing is assigned: a poll returns at once, not after its timeout
        # (the replay's last poll used to sit out 0.5 s, a fifth of a 100k-record replay).
        started = time.monotonic()
        assert source.consume(1000, 10.0) == []
        assert time.monotonic() - started < 5.0
    finally:
        source.close()


def test_replay_in_workers_writes_the_same_file(kafka_bootstrap, unique_name, tmp_path):
    topic = unique_name("input")
    create_topics(kafka_bootstrap, {topic: 3})
    records = list(generate(TrafficConfig(events=9_000, seed=5, bad_fraction=0.01)))
    produce_to_kafka(iter(records), kafka_bootstrap, topic)
    outputs = {}
    for workers in (1, 2, 3):
        output, scores = tmp_path / f"alerts-{workers}.jsonl", tmp_path / f"scores-{workers}"
        run = _replay(
            kafka_bootstrap, topic, "--output", str(output), "--output-scores", str(scores),
            "--workers", str(workers),
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        assert f"records   {len(records):,}" in run.stdout
        # The scores file too, byte for byte: partition after partition, whatever the
        # order in which batches were fetched and however the partitions were shared.
        outputs[workers] = (output.read_bytes(), scores.read_bytes())
        assert not list(tmp_path.glob(f"scores-{workers}.*"))  # the parts, joined
    assert outputs[1][0].count(b"\n") > 10  # alerts to compare
    assert outputs[1][1].count(b"\n") > 8_000  # every scored event
    assert outputs[1] == outputs[2] == outputs[3]
    too_few = _replay(kafka_bootstrap, topic, "--output", str(tmp_path / "x"), "--workers", "0")
    assert too_few.returncode == 2
    assert "argument --workers: must be >= 1, not 0" in too_few.stderr


def test_bench_replay_compares_replay_with_live(kafka_bootstrap):
    bench = subprocess.run(
        [sys.executable, "-m", "stream.cli", "bench", "replay", "--bootstrap", kafka_bootstrap,
         "--events", "4000", "--repeat", "1", "--workers", "2", "--json"],
        cwd=ROOT, env={**os.environ, **TEST_ENV}, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert bench.returncode == 0, bench.stderr[-3000:]
    rows = [orjson.loads(line) for line in bench.stdout.splitlines()]
    assert [r["mode"] for r in rows] == [
        "live (exactly-once, observations)",
        "replay, 1 worker",
        "replay, 2 workers",
    ]
    assert all(r["best"] > 0 for r in rows)
    assert rows[0]["alerts"] > 0
    assert all(r["alerts"] == rows[0]["alerts"] and r["same_alerts_as_live"] for r in rows[1:])
