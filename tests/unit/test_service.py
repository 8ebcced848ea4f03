"""The consumer loop with in-memory clients: ordering of deliver and commit, dead letters."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest
from confluent_kafka import KafkaError

from schemas.validation import validate_dead_letter_headers
from stream.kafka_io import VigilKafkaError
from stream.service import Service
from stream.settings import load_settings
from tests.unit.events import make_event
from tests.unit.fakes import FakeConsumer, FakeMessage, FakeProducer


def _settings(**extra):
    return load_settings(
        {
            "bootstrap": "unused:1",
            "input_topic": "events",
            "alerts_topic": "alerts",
            "dlq_topic": "dlq",
            "group": "g",
            "metrics_port": 0,
            "warmup": 20,
            "window_size": 20,
            "quantile": 0.8,
            **extra,
        },
        env={},
    )


def _messages(values, partition=0, start=0):
    return [FakeMessage("events", partition, start + i, v) for i, v in enumerate(values)]


def _good(n, start=0):
    return [
        orjson.dumps(make_event("payment.attempted", i, user=f"u-{i % 7}", amount=10.0 + i % 13))
        for i in range(start, start + n)
    ]


def _run(batches, producer=None):
    journal: list[str] = []
    consumer = FakeConsumer(journal, batches)
    producer = producer or FakeProducer(journal)
    producer.journal = journal
    service = Service(
        _settings(exit_when_idle=0.01), consumer=cast(Any, consumer), producer=cast(Any, producer)
    )
    summary = service.run()
    return summary, consumer, producer, journal


def test_commits_after_each_batch_only_after_flush():
    batches = [_messages(_good(100)), _messages(_good(100, 100), start=100)]
    summary, consumer, producer, journal = _run(batches)
    assert summary.events == 200
    assert [[(tp.partition, tp.offset) for tp in c] for c in consumer.commits] == [
        [(0, 100)],
        [(0, 200)],
    ]
    # Every commit comes after a flush that follows the batch's produces.
    for i, entry in enumerate(journal):
        if entry == "commit":
            last_produce = max(
                (j for j in range(i) if journal[j].startswith("produce")), default=-1
            )
            flushes = [j for j in range(i) if journal[j] == "flush"]
            assert flushes
            assert flushes[-1] > last_produce
    assert summary.alerts > 0
    assert sum(1 for p in producer.delivered if p.topic == "alerts") == summary.alerts
    assert consumer.closed


def test_bad_records_go_to_dead_letters_with_reason_and_offsets_advance():
    values = [*_good(5), b"{not json", b"[1,2]", orjson.dumps({"event_id": "x"}), b"x" * 70_000]
    summary, consumer, producer, _ = _run([_messages(values, partition=3)])
    dead = [p for p in producer.delivered if p.topic == "dlq"]
    assert [d.headers["vigil.dlq.reason"] for d in dead] == [
        b"invalid_json",
        b"not_an_object",
        b"schema_violation",
        b"oversized",
    ]
    assert [d.value for d in dead] == values[5:]
    assert dead[0].headers["vigil.source.partition"] == b"3"
    assert dead[0].headers["vigil.source.offset"] == b"5"
    assert dead[2].headers["vigil.dlq.detail"]
    for d in dead:
        validate_dead_letter_headers(d.headers)
    assert summary.events == 5
    assert summary.dead_letters == 4
    assert consumer.commits[-1][0].offset == len(values)


def test_a_record_that_breaks_scoring_is_dead_lettered_not_fatal(monkeypatch):
    from detectors import scoring

    row_of = scoring.EventScorer._row_of
    rows_made: list[int] = []

    def exploding_row_of(self, event_type):
        """The real rows, but for the fourth event. Patched here, in Python: the per-event
        pass that calls it may be compiled, and compiled code calls the extractor natively."""
        row = row_of(self, event_type)

        def row_or_boom(features):
            rows_made.append(1)
            if len(rows_made) == 4:
                raise ZeroDivisionError("boom")
            return row(features)

        return row_or_boom

    monkeypatch.setattr(scoring.EventScorer, "_row_of", exploding_row_of)
    summary, consumer, producer, _ = _run([_messages(_good(6))])
    dead = [p for p in producer.delivered if p.topic == "dlq"]
    assert len(dead) == 1
    assert dead[0].headers["vigil.dlq.reason"] == b"processing_error"
    assert b"ZeroDivisionError" in dead[0].headers["vigil.dlq.detail"]
    assert summary.events == 5
    assert consumer.commits[-1][0].offset == 6


def test_failed_delivery_means_no_commit():
    journal: list[str] = []
    producer = FakeProducer(journal, fail_topics={"dlq"})
    with pytest.raises(VigilKafkaError, match="delivery failed"):
        _run([_messages([b"garbage"])], producer=producer)


def test_consumer_errors_are_skipped_but_fatal_ones_stop():
    skipped = FakeMessage("events", 0, -1, None, _error=KafkaError(KafkaError._TRANSPORT))
    summary, _, _, _ = _run([[skipped, *_messages(_good(2))]])
    assert summary.events == 2
    fatal = FakeMessage("events", 0, -1, None, _error=KafkaError(KafkaError._FATAL, fatal=True))
    with pytest.raises(VigilKafkaError, match="fatal"):
        _run([[fatal]])


def test_stop_finishes_the_batch_and_commits():
    journal: list[str] = []
    batches = [_messages(_good(10)), _messages(_good(10, 10), start=10)]
    consumer = FakeConsumer(journal, batches)
    service = Service(
        _settings(), consumer=cast(Any, consumer), producer=cast(Any, FakeProducer(journal))
    )
    service.on_batch = lambda summary: service.stop()
    summary = service.run()
    assert summary.batches == 1
    assert consumer.commits[-1][0].offset == 10
    assert consumer.closed


def test_alerts_do_not_depend_on_how_partitions_interleave():
    values = _good(400)
    p0, p1 = _messages(values[:200], partition=0), _messages(values[200:], partition=1)
    together = [[*p0[:150], *p1[:20]], [*p1[20:], *p0[150:]]]
    apart = [p0[:50], p1[:199], p0[50:], p1[199:]]
    alerts = []
    for batches in (together, apart):
        _, _, producer, _ = _run(batches)
        alerts.append(sorted(p.value for p in producer.delivered if p.topic == "alerts"))
    assert alerts[0]
    assert alerts[0] == alerts[1]


def test_interleaved_partitions_are_tracked_apart_and_counted_by_event_type():
    logins = [orjson.dumps(make_event("account.login", i, user=f"u-{i}")) for i in range(6)]
    payments = _good(9)
    # Partitions alternate record by record (the batch loop looks a partition's state up
    # once per run of records), with a dead letter inside a run.
    batch = []
    for i in range(9):
        batch.append(FakeMessage("events", 1, i, payments[i]))
        if i < 6:
            batch.append(FakeMessage("events", 0, i, logins[i]))
    batch.append(FakeMessage("events", 0, 6, b"{not json"))
    batch.append(FakeMessage("events", 1, 9, _good(1, 9)[0]))
    journal: list[str] = []
    consumer = FakeConsumer(journal, [batch, [FakeMessage("events", 1, 3, payments[3])]])
    service = Service(
        _settings(exit_when_idle=0.01),
        consumer=cast(Any, consumer),
        producer=cast(Any, FakeProducer(journal)),
    )
    summary = service.run()
    assert summary.events == 16  # the record fetched again in the second batch: seen
    assert summary.dead_letters == 1
    assert sorted((tp.partition, tp.offset) for tp in consumer.commits[0]) == [(0, 7), (1, 10)]

    def counted(event_type: str) -> float:
        value = service.metrics.registry.get_sample_value(
            "vigil_events_total", {"event_type": event_type}
        )
        return value or 0.0

    assert (counted("account.login"), counted("payment.attempted")) == (6.0, 10.0)
