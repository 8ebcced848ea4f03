"""vigil replay's checks of its options, before it reads anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException

from stream.replay import _check_writable, replay_cli
from stream.topic_reader import ReplayError


def test_an_output_that_cannot_be_written_is_refused_before_the_replay(tmp_path):
    _check_writable(tmp_path / "alerts.jsonl")  # a new file in a writable directory
    (tmp_path / "alerts.jsonl").write_bytes(b"earlier\n")
    _check_writable(tmp_path / "alerts.jsonl")  # one there already, to be replaced
    with pytest.raises(ReplayError, match="no directory"):
        _check_writable(tmp_path / "missing" / "alerts.jsonl")
    with pytest.raises(ReplayError, match="is a directory"):
        _check_writable(tmp_path)


def _cli(tmp_path: Path, *options: str) -> int:
    # No broker at this address: every case here is decided before one is asked.
    output = str(tmp_path / "a.jsonl")
    return replay_cli(["--bootstrap", "127.0.0.1:9", "--topic", "t", "--output", output, *options])


def test_the_warm_up_options_are_checked_before_anything_is_read(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("VIGIL_GROUP", raising=False)
    monkeypatch.delenv("VIGIL_STATE_TOPIC", raising=False)
    monkeypatch.delenv("VIGIL_CONFIG", raising=False)
    assert _cli(tmp_path, "--state-topic", "s") == 2
    assert "--state-topic needs --warm-up-from state" in capsys.readouterr().err
    assert _cli(tmp_path, "--warm-up-from", "earliest") == 2
    assert "--warm-up-from needs --from" in capsys.readouterr().err
    assert _cli(tmp_path, "--warm-up-from", "state") == 2  # no group, no state topic
    assert "needs the live service's state topic" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("n_trees = 0\n")
    assert (
        _cli(tmp_path, "--warm-up-from", "state", "--state-topic", "s", "--config", str(bad)) == 2
    )
    assert "setting 'n_trees'" in capsys.readouterr().err


def test_a_broker_failure_exits_1_saying_what_librdkafka_said(tmp_path, capsys, monkeypatch):
    import stream.replay

    def unreachable(*args, **kwargs):
        error = KafkaError(KafkaError._TRANSPORT, "Failed to get metadata: broker down")
        raise KafkaException(error)

    monkeypatch.setattr(stream.replay, "plan_ranges", unreachable)
    # Not to capsys's stream, which closes after this test: structlog's configuration is
    # process-wide, and every later test's log line would fail on it.
    monkeypatch.setattr(stream.replay, "configure_logging", lambda *args: None)
    (tmp_path / "a.jsonl").write_bytes(b"earlier\n")
    assert _cli(tmp_path, "--workers", "2") == 1
    err = capsys.readouterr().err
    assert "vigil replay: Kafka at 127.0.0.1:9: Failed to get metadata: broker down" in err
    assert "Traceback" not in err
    assert (tmp_path / "a.jsonl").read_bytes() == b"earlier\n"  # left as it was
