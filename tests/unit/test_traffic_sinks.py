"""The I/O edge: files, labels, the Kafka producer loop (with a fake producer) and the CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from detectors.evaluation import Label
from stream.traffic import TrafficConfig, generate, label_line
from stream.traffic.cli import generate_cli
from stream.traffic.sinks import (
    PRODUCER_MAX_MESSAGE_BYTES,
    produce_with,
    producer_config,
    read_labels,
    write_file,
    write_labels,
)

CONFIG = TrafficConfig(events=3_000, seed=4, bad_fraction=0.05, attack_rate=1e-3)


def test_write_file_round_trip(tmp_path: Path):
    records = list(generate(CONFIG))
    path = tmp_path / "events.jsonl"
    assert write_file(iter(records), path) == len(records)
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert lines[:-1] == [r.value for r in records]
    good = [orjson.loads(line) for line, r in zip(lines, records, strict=False) if not r.malformed]
    assert [e["event_id"] for e in good] == [r.event_id for r in records if not r.malformed]


def test_write_labels(tmp_path: Path):
    records = list(generate(CONFIG))
    path = tmp_path / "labels.jsonl"
    assert write_labels(records, path) == len(records)
    assert path.read_bytes().splitlines() == [label_line(r) for r in records]
    assert read_labels(path) == [Label(r.event_id, r.attack, r.attack_id) for r in records]


class FakeProducer:
    def __init__(self, *, fail: frozenset[int] = frozenset(), full_every: int = 0) -> None:
        self.produced: list[dict[str, Any]] = []
        self._pending: list[tuple[Callable[[Any, Any], None], bool]] = []
        self._fail = fail
        self._full_every = full_every
        self._calls = 0
        self.polls = 0

    def produce(self, topic: str, value: Any = None, key: Any = None, **kwargs: Any) -> None:
        self._calls += 1
        if self._full_every and self._calls % self._full_every == 0:
            raise BufferError("queue full")
        index = len(self.produced)
        self.produced.append({"topic": topic, "value": value, "key": key, **kwargs})
        self._pending.append((kwargs["on_delivery"], index in self._fail))

    def poll(self, timeout: float = -1) -> int:
        self.polls += 1
        return self._drain()

    def flush(self, timeout: float = -1) -> int:
        self._drain()
        return 0

    def _drain(self) -> int:
        served = len(self._pending)
        for callback, failed in self._pending:
            callback("broker says no" if failed else None, None)
        self._pending.clear()
        return served


def test_produce_sets_key_value_and_event_time():
    records = list(generate(CONFIG))
    producer = FakeProducer(full_every=7)
    progress: list[int] = []
    delivered = produce_with(producer, records, "events", progress=progress.append)
    assert delivered == len(records)
    assert progress == list(range(1, len(records) + 1))
    assert [p["value"] for p in producer.produced] == [r.value for r in records]
    assert [p["key"] for p in producer.produced] == [r.key for r in records]
    assert [p["timestamp"] for p in producer.produced] == [r.timestamp_ms for r in records]
    assert {p["topic"] for p in producer.produced} == {"events"}


def test_produce_raises_when_a_record_fails():
    records = list(generate(TrafficConfig(events=50, seed=1)))
    with pytest.raises(RuntimeError, match=r"2 of 50 records .* failed.*broker says no"):
        produce_with(FakeProducer(fail=frozenset({3, 9})), records, "events")


def test_producer_config_allows_oversized_test_records():
    config = producer_config("127.0.0.1:9092")
    assert config["message.max.bytes"] == PRODUCER_MAX_MESSAGE_BYTES
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    oversized = [r for r in generate(CONFIG) if r.malformed == "oversized"]
    assert oversized
    assert all(len(r.value) < PRODUCER_MAX_MESSAGE_BYTES for r in oversized)


def test_cli_writes_the_same_bytes_as_the_library(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out, labels = tmp_path / "out.jsonl", tmp_path / "labels.jsonl"
    argv = ["--output", str(out), "--events", "3000", "--seed", "4", "--bad-fraction", "0.05"]
    argv += ["--attack-rate", "1e-3", "--labels-out", str(labels)]
    assert generate_cli(argv) == 0
    records = list(generate(CONFIG))
    assert out.read_bytes() == b"".join(r.value + b"\n" for r in records)
    assert labels.read_bytes() == b"".join(label_line(r) + b"\n" for r in records)
    err = capsys.readouterr().err
    assert "3,000/3,000 records (100%)" in err
    assert "3,000 records; malformed" in err
    assert "card_testing 3 (" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--events", "10", "--seed", "1"],
        ["--events", "10", "--seed", "1", "--output", "x", "--bootstrap", "b:1", "--topic", "t"],
        ["--events", "10", "--seed", "1", "--bootstrap", "b:1"],
    ],
)
def test_cli_needs_exactly_one_destination(argv: list[str]):
    with pytest.raises(SystemExit) as exc:
        generate_cli(argv)
    assert exc.value.code == 2


def test_cli_rejects_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    argv = ["--output", str(tmp_path / "x"), "--events", "10", "--seed", "1"]
    assert generate_cli([*argv, "--bad-fraction", "2"]) == 2
    assert "bad_fraction" in capsys.readouterr().err
