"""A SIGTERM'd service always exits, and soon.

The lifecycle integration test sends SIGTERM the moment it reads ``batch.committed``,
i.e. while the service is still inside structlog's write of that line. The signal handler
used to log too: structlog's lock is not reentrant, so the process deadlocked for good
(about one run in four on a 2-core machine).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, KafkaException

from stream.delivery import ExactlyOnce, ProducerFatalError
from stream.service import RunSummary, Service, ShutdownWatchdog
from stream.settings import load_settings
from tests.integration.service_runner import ROOT
from tests.unit.test_service_stuck_producer import (
    SMALL_SERVICE,
    Broker,
    GroupMember,
    TxnProducer,
    _inputs,
)

# Logs one line through the service's logging set-up, with a stream that delivers SIGTERM
# to the process in the middle of the write, i.e. while structlog holds its lock.
_SIGNAL_DURING_A_LOG_WRITE = textwrap.dedent(
    """
    import os, signal, structlog
    from stream.logs import configure_logging
    from stream.service import stop_on_signals

    class SignalsWhileWriting:
        def __init__(self):
            self.lines = []
        def write(self, data):
            if not self.lines:
                os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before write returns
            self.lines.append(data)
            return len(data)
        def flush(self):
            pass

    out = SignalsWhileWriting()
    configure_logging("info", stream=out)
    stopped = []
    stop_on_signals(stopped.append)
    structlog.get_logger("test").info("batch.committed", batch=1)
    assert stopped == ["SIGTERM"], stopped
    assert len(out.lines) == 1, out.lines
    print("ok")
    """
)


def test_a_signal_arriving_during_a_log_write_does_not_deadlock():
    done = subprocess.run(
        [sys.executable, "-c", _SIGNAL_DURING_A_LOG_WRITE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,  # a deadlock: TimeoutExpired fails the test instead of hanging it
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# -- every wait on the way out is bounded ----------------------------------------------------


class HangingCommit(TxnProducer):
    """commit_transaction number ``hang_at`` never returns, whatever its timeout (as
    librdkafka's coordinator requests can, #5456), until the test releases it."""

    def __init__(self, broker: Broker, hang_at: int | None, on_hang: Callable[[], None]) -> None:
        super().__init__(broker)
        self.hang_at, self.on_hang = hang_at, on_hang
        self.commits = 0
        self.timeouts: list[float] = []

    def commit_transaction(self, timeout: float) -> None:
        self.commits += 1
        self.timeouts.append(timeout)
        if self.commits == self.hang_at:
            self.on_hang()
            self.release.wait()
            raise KafkaException(KafkaError(KafkaError._FENCED, fatal=True))
        super().commit_transaction(timeout)


class AbortingCommit(TxnProducer):
    """commit_transaction number ``fail_at`` fails with an abortable error (the
    transaction must be aborted), after calling ``on_fail``."""

    def __init__(self, broker: Broker, fail_at: int, on_fail: Callable[[], None]) -> None:
        super().__init__(broker)
        self.fail_at, self.on_fail = fail_at, on_fail
        self.commits = 0

    def commit_transaction(self, timeout: float) -> None:
        self.commits += 1
        if self.commits == self.fail_at:
            self.on_fail()
            raise KafkaException(KafkaError(KafkaError._STATE, txn_requires_abort=True))
        super().commit_transaction(timeout)


class LeavingMember(GroupMember):
    """A group member whose close() revokes its partitions first, as librdkafka's does
    with cooperative-sticky (the service snapshots them on revoke)."""

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.callbacks = callbacks
        super().subscribe(topics, **callbacks)

    def close(self) -> None:
        self.callbacks["on_revoke"](self, self.assignment())


def _service(broker: Broker, producer: TxnProducer, **extra: Any) -> Service:
    settings = load_settings(
        {
            **SMALL_SERVICE,
            # Production's: only the shutdown deadline may cut the calls short.
            "flush_timeout_s": 30.0,
            "metrics_port": 0,
            **extra,
        },
        env={},
    )
    return Service(
        settings,
        consumer=cast(Any, LeavingMember(broker, per_partition=50)),
        producer=cast(Any, producer),
        delivery=ExactlyOnce(cast(Any, producer), settings.flush_timeout_s),
        read_state=broker.read_state,
    )


def _run_in_thread(service: Service, limit_s: float) -> float:
    started = time.monotonic()
    loop = threading.Thread(target=service.run, daemon=True)
    loop.start()
    loop.join(limit_s)
    assert not loop.is_alive(), f"the service did not stop within {limit_s}s"
    return time.monotonic() - started


def _undisturbed() -> Broker:
    broker = Broker(_inputs())
    _run_in_thread(_service(broker, TxnProducer(broker), exit_when_idle=0.05), 60.0)
    assert broker.offsets == {0: 600, 1: 600}
    return broker


def _restart(broker: Broker) -> None:
    """The next owner: a new producer (fencing the old one) reads on to the end."""
    _run_in_thread(_service(broker, TxnProducer(broker), exit_when_idle=0.05), 60.0)
    assert broker.offsets == {0: 600, 1: 600}


def test_a_stop_between_batches_commits_snapshots_and_exits_cleanly():
    broker = Broker(_inputs())
    producer = TxnProducer(broker)
    service = _service(broker, producer)
    service.on_batch = lambda summary: service.stop() if summary.batches == 3 else None
    _run_in_thread(service, 30.0)
    assert service.summary.clean
    processed = service.summary.records
    assert sum(broker.offsets.values()) == processed == 300
    # 150 records a partition, below checkpoint_every: the snapshots come from the
    # revoke on close, so a restart has nothing to re-score.
    assert set(broker.state) == {0, 1}
    _restart(broker)
    assert Counter(broker.outputs) == Counter(_undisturbed().outputs)


def test_a_stop_while_a_commit_hangs_exits_by_the_deadline_and_loses_nothing():
    """SIGTERM while commit_transaction is blocked in librdkafka (a broker away): the
    wait is cut short at the shutdown deadline, not its own 30 s timeout + 10 s; the
    batch is given up (not committed, its offsets neither), the run says it was not clean,
    and the next owner re-reads that batch: exactly the undisturbed run's outputs."""
    broker = Broker(_inputs())
    service: Service
    producer = HangingCommit(broker, hang_at=5, on_hang=lambda: service.stop("SIGTERM"))
    service = _service(broker, producer, shutdown_timeout_s=0.5)
    try:
        took = _run_in_thread(service, 30.0)
        committed = dict(broker.offsets)
    finally:
        producer.release.set()
    assert took < 5.0, "the shutdown waited past its deadline"
    assert not service.summary.clean
    assert "commit_transaction" in (service.summary.shutdown_error or "")
    # Four batches of 100 committed; the fifth, given up, left no offsets behind.
    assert sum(committed.values()) == 400
    assert producer.commits == 5, "a snapshot on revoke went on with a given-up producer"
    _restart(broker)
    assert Counter(broker.outputs) == Counter(_undisturbed().outputs)


def test_a_batch_aborted_at_a_stop_is_read_again_not_snapshotted_ahead():
    """Stopping, a batch's transaction aborts: no rewind and retry on the way out, but the
    in-memory state (ahead of what is durable) must not be snapshotted on revoke either,
    or the restart would skip the aborted batch's records and lose their alerts."""
    broker = Broker(_inputs())
    service: Service
    producer = AbortingCommit(broker, fail_at=5, on_fail=lambda: service.stop("SIGTERM"))
    service = _service(broker, producer)
    _run_in_thread(service, 30.0)
    assert not service.summary.clean
    assert sum(broker.offsets.values()) == 400
    _restart(broker)
    assert Counter(broker.outputs) == Counter(_undisturbed().outputs)


def test_after_a_stop_no_call_is_given_more_time_than_the_deadline_leaves():
    broker = Broker(_inputs())
    producer = HangingCommit(broker, hang_at=None, on_hang=lambda: None)
    service = _service(broker, producer, shutdown_timeout_s=2.0)
    service.on_batch = lambda summary: service.stop() if summary.batches == 2 else None
    _run_in_thread(service, 30.0)
    assert service.summary.clean
    # Every batch's commit had 30 s; the snapshot on revoke, after the stop, at most 2 s.
    assert producer.timeouts[:2] == [30.0, 30.0]
    assert len(producer.timeouts) == 3
    assert producer.timeouts[-1] <= 2.0


def test_a_deadline_set_while_a_call_waits_cuts_the_wait_short():
    producer = HangingCommit(Broker({}), hang_at=1, on_hang=lambda: None)
    out = ExactlyOnce(cast(Any, producer), timeout_s=30.0)
    out.start()
    out.begin()
    stop = threading.Timer(0.2, lambda: setattr(out, "deadline", time.monotonic() + 0.3))
    stop.start()
    started = time.monotonic()
    try:
        with pytest.raises(ProducerFatalError, match="commit_transaction given up"):
            out.commit(None, [])
    finally:
        producer.release.set()
        stop.cancel()
    assert time.monotonic() - started < 3.0  # 0.2 + 0.3 + DEADLINE_SLACK_S, not 40
    assert out.abandoned
    out.close()  # nothing more through a given-up producer, not even an abort
    assert producer.commits == 1


def test_past_the_deadline_no_transactional_call_is_made():
    producer = HangingCommit(Broker({}), hang_at=None, on_hang=lambda: None)
    out = ExactlyOnce(cast(Any, producer), timeout_s=30.0)
    out.start()
    out.begin()
    out.deadline = time.monotonic() - 1.0
    with pytest.raises(ProducerFatalError, match="deadline passed before the call"):
        out.commit(None, [])
    assert producer.commits == 0


# -- and what the deadline cannot reach, the watchdog does -----------------------------------


@dataclass
class Stopping:
    shutdown_started: float | None = None
    finished: bool = False
    summary: RunSummary = field(default_factory=RunSummary)


def _watch(service: Stopping, limit_s: float) -> tuple[list[int], threading.Thread]:
    exits: list[int] = []
    thread = ShutdownWatchdog(service, limit_s, exit=exits.append, poll_s=0.01).start()
    return exits, thread


def test_the_watchdog_waits_for_a_stop_then_ends_a_process_that_hangs_non_zero():
    service = Stopping()
    exits, thread = _watch(service, 0.1)
    time.sleep(0.3)
    assert exits == [], "ended before any stop"
    service.shutdown_started = time.monotonic()
    thread.join(5.0)
    assert exits == [1]


def test_the_watchdog_exits_zero_if_the_service_had_finished_cleanly():
    service = Stopping(shutdown_started=time.monotonic(), finished=True)
    exits, thread = _watch(service, 0.05)
    thread.join(5.0)
    assert exits == [0]
    unclean = Stopping(shutdown_started=time.monotonic(), finished=True)
    unclean.summary.shutdown_error = "given up"
    exits, thread = _watch(unclean, 0.05)
    thread.join(5.0)
    assert exits == [1]
