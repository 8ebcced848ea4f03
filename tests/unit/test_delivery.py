"""Transactions: what commits, what aborts, and what is fatal."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from stream.delivery import ExactlyOnce, ProducerFatalError, TransactionAbortedError
from stream.kafka_io import VigilKafkaError


@dataclass
class TransactionalProducer:
    fail_commit: list[KafkaError] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def init_transactions(self, timeout: float) -> None:
        self.calls.append("init")

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        self.calls.append(f"offsets {[tp.offset for tp in offsets]}")

    def commit_transaction(self, timeout: float) -> None:
        if self.fail_commit:
            self.calls.append("commit failed")
            raise KafkaException(self.fail_commit.pop(0))
        self.calls.append("commit")

    def abort_transaction(self, timeout: float) -> None:
        self.calls.append("abort")


class GroupConsumer:
    def consumer_group_metadata(self) -> str:
        return "metadata"


def delivery(producer: TransactionalProducer) -> ExactlyOnce:
    out = ExactlyOnce(producer, timeout_s=5.0)  # type: ignore[arg-type]
    out.start()
    return out


def test_offsets_join_the_transaction_before_it_commits():
    producer = TransactionalProducer()
    out = delivery(producer)
    out.begin()
    out.commit(GroupConsumer(), [TopicPartition("t", 0, 42)])
    assert producer.calls == ["init", "begin", "offsets [42]", "commit"]


def test_begin_is_idempotent_within_a_batch_and_commit_without_begin_is_a_no_op():
    producer = TransactionalProducer()
    out = delivery(producer)
    out.commit(GroupConsumer(), [])
    out.begin()
    out.begin()
    out.commit(GroupConsumer(), [])
    assert producer.calls == ["init", "begin", "commit"]


def test_retriable_commit_errors_are_retried():
    producer = TransactionalProducer([KafkaError(KafkaError._TIMED_OUT, retriable=True)])
    out = delivery(producer)
    out.begin()
    out.commit(GroupConsumer(), [])
    assert producer.calls[-2:] == ["commit failed", "commit"]


def test_an_abortable_error_aborts_and_tells_the_caller_to_rewind():
    producer = TransactionalProducer([KafkaError(KafkaError._STATE, txn_requires_abort=True)])
    out = delivery(producer)
    out.begin()
    with pytest.raises(TransactionAbortedError):
        out.commit(GroupConsumer(), [TopicPartition("t", 0, 1)])
    assert producer.calls[-1] == "abort"
    out.begin()  # the next batch opens a new transaction
    assert producer.calls[-1] == "begin"


def test_a_fenced_producer_is_fatal():
    producer = TransactionalProducer([KafkaError(KafkaError._FENCED, fatal=True)])
    out = delivery(producer)
    out.begin()
    with pytest.raises(VigilKafkaError) as raised:
        out.commit(GroupConsumer(), [])
    assert not isinstance(raised.value, TransactionAbortedError)
    assert "abort" not in producer.calls


class StuckProducer(TransactionalProducer):
    """send_offsets_to_transaction never returns, whatever its timeout (librdkafka
    #5456/#5511: the TxnOffsetCommit waits for a group coordinator that never comes up)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        self.calls.append("offsets (stuck)")
        self.release.wait()


def test_a_send_offsets_that_never_returns_gives_the_producer_up(monkeypatch):
    monkeypatch.setattr("stream.delivery.STUCK_GRACE_S", 0.2)
    producer = StuckProducer()
    out = ExactlyOnce(producer, timeout_s=0.1)  # type: ignore[arg-type]
    out.start()
    out.begin()
    started = time.monotonic()
    try:
        with pytest.raises(ProducerFatalError, match="did not return"):
            out.commit(GroupConsumer(), [TopicPartition("t", 0, 7)])
        assert time.monotonic() - started < 5.0
        assert out.abandoned
        # Neither committed nor aborted through it, not even on close: a replacement
        # producer with the same transactional.id fences it and aborts what it left.
        out.close()
        assert producer.calls == ["init", "begin", "offsets (stuck)"]
    finally:
        producer.release.set()


@dataclass
class SlowAbortProducer(TransactionalProducer):
    """Its aborts time out (the broker away) as many times as ``abort_timeouts`` says."""

    abort_timeouts: int = 0

    def abort_transaction(self, timeout: float) -> None:
        if self.abort_timeouts:
            self.abort_timeouts -= 1
            self.calls.append("abort timed out")
            error = KafkaError(KafkaError._TIMED_OUT, "retry call to resume", retriable=True)
            raise KafkaException(error)
        self.calls.append("abort")


def test_an_abort_that_timed_out_is_finished_before_the_next_transaction_begins():
    # librdkafka refuses begin_transaction while an abort is unfinished ("Conflicting
    # abort_transaction API call is already in progress"): after a broker restart that
    # stopped the service. Its next begin resumes the abort first; while that fails too,
    # the batch is given back to be read again.
    abortable = KafkaError(KafkaError._STATE, txn_requires_abort=True)
    producer = SlowAbortProducer([abortable], abort_timeouts=2)
    out = delivery(producer)
    out.begin()
    with pytest.raises(TransactionAbortedError):
        out.commit(GroupConsumer(), [TopicPartition("t", 0, 1)])
    assert producer.calls[-1] == "abort timed out"
    with pytest.raises(TransactionAbortedError, match="abort is not finished"):
        out.begin()
    assert producer.calls[-1] == "abort timed out"  # and no begin
    out.begin()
    assert producer.calls[-2:] == ["abort", "begin"]
    out.commit(GroupConsumer(), [])
    out.begin()  # the abort is done: no more of it
    assert producer.calls[-4:] == ["abort", "begin", "commit", "begin"]
