"""How a batch's outputs and its input offsets become durable together.

* ``ExactlyOnce`` (the default): alerts, dead letters, state snapshots and the input
  offsets go into one Kafka transaction (KIP-447: the offsets are sent with the consumer's
  group metadata, so a fenced zombie cannot commit). Readers with ``read_committed`` see a
  batch's alerts only once its offsets are committed, never twice.
* ``AtLeastOnce``: flush, fail if anything is unsent, then commit synchronously. A crash
  between the two repeats the batch's alerts (with the same ids, so readers can dedupe).

A failed transaction raises ``TransactionAbortedError`` after aborting: the caller's in-memory state
is ahead of what is durable and must be rewound to the last snapshot.

``send_offsets_to_transaction`` can block forever, whatever its timeout: its second step
(TxnOffsetCommit to the group coordinator) goes through librdkafka's coordinator-request
machinery, which never checks its deadline (librdkafka #5456) and can wait indefinitely
for a cached group coordinator that will not come up again, e.g. a broker handle retired
while the broker restarted (#5511). Both were open in librdkafka 2.16. So it runs on a
helper thread; if it has not returned ``STUCK_GRACE_S`` after its own timeout the
producer is given up for dead (``ProducerFatalError``): the caller replaces it (the new
instance fences it and aborts its open transaction) and rewinds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog
from confluent_kafka import KafkaException, Producer, TopicPartition

from stream.kafka_io import DeliveryTracker, VigilKafkaError, commit_or_raise, flush_or_raise

log = structlog.get_logger("vigil.delivery")

# How long past its own timeout a transactional call may take before the producer is
# given up for dead (librdkafka enforces the timeout itself when it works).
STUCK_GRACE_S = 10.0

# Producers given up while a call of theirs is still blocked in librdkafka. Kept alive
# (never destroyed: rd_kafka_destroy under a blocked transactional call may hang too);
# the replacement's init_transactions fenced them, so nothing they hold can commit.
_ABANDONED: list[Any] = []


class ProducerFatalError(VigilKafkaError):
    """The transactional producer hit a fatal error: it is unusable and must be replaced
    (a new instance with the same transactional.id fences it and aborts what it left)."""


class TransactionAbortedError(VigilKafkaError):
    """The batch's transaction was aborted; nothing of it is visible downstream."""


class Delivery(Protocol):
    tracker: DeliveryTracker

    def start(self) -> None: ...
    def begin(self) -> None: ...
    def commit(self, consumer: Any, offsets: list[TopicPartition]) -> None: ...
    def close(self) -> None: ...


class AtLeastOnce:
    def __init__(self, producer: Producer, timeout_s: float) -> None:
        self.producer = producer
        self.timeout_s = timeout_s
        self.tracker = DeliveryTracker()

    def start(self) -> None:
        pass

    def begin(self) -> None:
        pass

    def commit(self, consumer: Any, offsets: list[TopicPartition]) -> None:
        flush_or_raise(self.producer, self.tracker, self.timeout_s)
        commit_or_raise(consumer, offsets)

    def close(self) -> None:
        flush_or_raise(self.producer, self.tracker, self.timeout_s)


class ExactlyOnce:
    """A transactional producer; one transaction per batch."""

    def __init__(self, producer: Producer, timeout_s: float) -> None:
        self.producer = producer
        self.timeout_s = timeout_s
        self.tracker = DeliveryTracker()
        self._open = False

    def start(self) -> None:
        # Fences an earlier instance with the same transactional.id and aborts whatever
        # transaction it left open, so its half-written batch never becomes visible.
        self._call("init_transactions", self.timeout_s)

    def begin(self) -> None:
        if not self._open:
            self._call("begin_transaction")
            self._open = True

    def commit(self, consumer: Any, offsets: list[TopicPartition]) -> None:
        if not self._open:
            return
        try:
            if offsets:
                self._bounded(
                    "send_offsets_to_transaction",
                    self.producer.send_offsets_to_transaction,
                    offsets,
                    consumer.consumer_group_metadata(),
                    self.timeout_s,
                )
            self._commit_with_retries()
        except KafkaException as exc:
            self._abort(exc)
        finally:
            self._open = False
        # commit_transaction flushed and every delivery succeeded, or it raised.
        self.tracker.failures.clear()
        self.tracker.pending = 0

    def close(self) -> None:
        if self._open and not self.abandoned:
            self._abort_quietly()

    @property
    def abandoned(self) -> bool:
        """A call of this producer never returned: it must not be used again."""
        return any(p is self.producer for p in _ABANDONED)

    def _bounded(self, name: str, call: Callable[..., None], *args: Any) -> None:
        """``call(*args)`` on a helper thread, waited for its timeout and
        ``STUCK_GRACE_S`` more; raises what it raised, or ``ProducerFatalError`` if it is
        still blocked then (see the module docstring)."""
        failed: list[BaseException] = []

        def run() -> None:
            try:
                call(*args)
            except BaseException as exc:  # handed to the waiting thread
                failed.append(exc)

        # A daemon thread: a call that never returns must not hold the process at exit.
        worker = threading.Thread(target=run, name=f"vigil-{name}", daemon=True)
        worker.start()
        worker.join(self.timeout_s + STUCK_GRACE_S)
        if worker.is_alive():
            _ABANDONED.append(self.producer)
            self._open = False
            log.error("transaction.call_stuck", call=name, waited_s=self.timeout_s + STUCK_GRACE_S)
            raise ProducerFatalError(
                f"{name} did not return within {self.timeout_s + STUCK_GRACE_S:.0f}s "
                f"(its timeout is {self.timeout_s:.0f}s): the producer is given up",
                "_STUCK",
            )
        if failed:
            raise failed[0]

    def abort(self, exc: KafkaException) -> None:
        """A produce() of the batch was refused (the transaction is in an abortable
        state): abort it. Raises TransactionAbortedError, or ProducerFatalError."""
        self.tracker.failures.clear()
        self.tracker.pending = 0
        self._abort(exc)

    def _commit_with_retries(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                self.producer.commit_transaction(self.timeout_s)
                return
            except KafkaException as exc:
                error = exc.args[0]
                if error.retriable() and time.monotonic() < deadline:
                    log.warning("transaction.commit_retry", error=error.str())
                    time.sleep(0.2)
                    continue
                raise

    def _abort(self, exc: KafkaException) -> None:
        error = exc.args[0]
        if error.fatal():
            raise ProducerFatalError(
                f"transaction failed fatally: {error.str()}", error.name()
            ) from exc
        log.warning("transaction.aborting", error=error.str(), code=error.name())
        self._abort_quietly()
        raise TransactionAbortedError(f"transaction aborted: {error.str()}", error.name()) from exc

    def _abort_quietly(self) -> None:
        try:
            self.producer.abort_transaction(self.timeout_s)
        except KafkaException as exc:
            error = exc.args[0]
            if error.fatal():
                raise ProducerFatalError(
                    f"abort failed fatally: {error.str()}", error.name()
                ) from exc
            log.warning("transaction.abort_failed", error=error.str())
        self._open = False

    def _call(self, name: str, *args: Any) -> None:
        try:
            getattr(self.producer, name)(*args)
        except KafkaException as exc:
            error = exc.args[0]
            raise VigilKafkaError(f"{name} failed: {error.str()}", error.name()) from exc
