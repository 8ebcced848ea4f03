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
instance fences it and aborts its open transaction) and rewinds. commit_transaction and
abort_transaction run the same way.

At shutdown the caller sets ``deadline``: from then on no call waits past it (a call
already waiting is given up there, with its producer), so a stopping service exits in
bounded time. A transaction given up like that is left open: the broker aborts it after
``transaction.timeout.ms``, or the next instance's ``init_transactions`` does at once;
either way it commits nothing, and offsets never commit outside their transaction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from stream.kafka_io import DeliveryTracker, VigilKafkaError, commit_or_raise, flush_or_raise

log = structlog.get_logger("vigil.delivery")

# How long past its own timeout a transactional call may take before the producer is
# given up for dead (librdkafka enforces the timeout itself when it works).
STUCK_GRACE_S = 10.0

# Past a shutdown deadline, how long a call given a timeout cut to that deadline may take
# to return librdkafka's own timeout error, before it counts as stuck.
DEADLINE_SLACK_S = 0.5

# How often a waiting caller looks at the deadline again (a stop can set it meanwhile).
_WAIT_SLICE_S = 0.1

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
    # Set at shutdown (time.monotonic()): no call waits past it. None: each call's timeout.
    deadline: float | None

    def start(self) -> None: ...
    def begin(self) -> None: ...
    def commit(self, consumer: Any, offsets: list[TopicPartition]) -> None: ...
    def close(self) -> None: ...


class AtLeastOnce:
    def __init__(self, producer: Producer, timeout_s: float) -> None:
        self.producer = producer
        self.timeout_s = timeout_s
        self.tracker = DeliveryTracker()
        self.deadline: float | None = None

    def start(self) -> None:
        pass

    def begin(self) -> None:
        pass

    def commit(self, consumer: Any, offsets: list[TopicPartition]) -> None:
        flush_or_raise(self.producer, self.tracker, _timeout(self.timeout_s, self.deadline))
        commit_or_raise(consumer, offsets)

    def close(self) -> None:
        flush_or_raise(self.producer, self.tracker, _timeout(self.timeout_s, self.deadline))


def _timeout(timeout_s: float, deadline: float | None) -> float:
    """``timeout_s``, or what is left until ``deadline`` if that is sooner (>= 0)."""
    if deadline is None:
        return timeout_s
    return max(0.0, min(timeout_s, deadline - time.monotonic()))


class ExactlyOnce:
    """A transactional producer; one transaction per batch."""

    def __init__(self, producer: Producer, timeout_s: float) -> None:
        self.producer = producer
        self.timeout_s = timeout_s
        self.tracker = DeliveryTracker()
        self.deadline: float | None = None
        self._open = False
        # An abort that failed without failing the producer (timed out, the broker away):
        # librdkafka goes on with it and refuses to begin another transaction until a new
        # abort_transaction call resumes it to its end.
        self._abort_unfinished = False

    def start(self) -> None:
        # Fences an earlier instance with the same transactional.id and aborts whatever
        # transaction it left open, so its half-written batch never becomes visible.
        self._call("init_transactions", self.timeout_s)

    def begin(self) -> None:
        if not self._open:
            if self._abort_unfinished:
                self._resume_abort()
            self._call("begin_transaction")
            self._open = True

    def _resume_abort(self) -> None:
        """Finish the abort that failed before (librdkafka: "retry call to resume"); until
        then begin_transaction fails ("Conflicting abort_transaction API call is already in
        progress"), which stopped the service after a broker restart. Still failing, the
        batch is given back (TransactionAbortedError: the caller rewinds and tries again)."""
        failed = self._abort_quietly()
        if failed is not None:
            raise TransactionAbortedError(
                f"the last transaction's abort is not finished: {failed.str()}", failed.name()
            )

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
        """``call(*args, timeout)`` on a helper thread, waited for its timeout and
        ``STUCK_GRACE_S`` more, but never past ``deadline`` (+ ``DEADLINE_SLACK_S``);
        raises what it raised, or ``ProducerFatalError`` if it is still blocked then, or
        if the deadline passed before the call (see the module docstring)."""
        timeout = _timeout(self.timeout_s, self.deadline)
        if timeout <= 0:
            self._give_up(name, "the shutdown deadline passed before the call")
        failed: list[BaseException] = []

        def run() -> None:
            try:
                call(*args, timeout)
            except BaseException as exc:  # handed to the waiting thread
                failed.append(exc)

        # A daemon thread: a call that never returns must not hold the process at exit.
        worker = threading.Thread(target=run, name=f"vigil-{name}", daemon=True)
        started = time.monotonic()
        worker.start()
        stuck_at = started + timeout + STUCK_GRACE_S
        while worker.is_alive():
            # Read each time: a stop (a signal handler) may set the deadline meanwhile.
            deadline = self.deadline
            limit = stuck_at if deadline is None else min(stuck_at, deadline + DEADLINE_SLACK_S)
            left = limit - time.monotonic()
            if left <= 0:
                break
            worker.join(min(left, _WAIT_SLICE_S))
        if worker.is_alive():
            waited = time.monotonic() - started
            self._give_up(name, f"it did not return in {waited:.1f}s (its timeout: {timeout:.1f}s)")
        if failed:
            raise failed[0]

    def _give_up(self, name: str, why: str) -> NoReturn:
        """The producer is not to be used again: a call of it may still be blocked in
        librdkafka, or its transaction is left open for the broker to abort."""
        _ABANDONED.append(self.producer)
        self._open = False
        log.error("transaction.call_given_up", call=name, reason=why)
        raise ProducerFatalError(f"{name} given up: {why}; the producer is given up", "_STUCK")

    def abort(self, exc: KafkaException) -> None:
        """A produce() of the batch was refused (the transaction is in an abortable
        state): abort it. Raises TransactionAbortedError, or ProducerFatalError."""
        self.tracker.failures.clear()
        self.tracker.pending = 0
        self._abort(exc)

    def _commit_with_retries(self) -> None:
        deadline = time.monotonic() + _timeout(self.timeout_s, self.deadline)
        while True:
            try:
                self._bounded("commit_transaction", self.producer.commit_transaction)
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

    def _abort_quietly(self) -> KafkaError | None:
        """Abort the transaction; returns why not, if it failed without failing the producer
        (then it is left unfinished, for ``begin`` to resume)."""
        failed: KafkaError | None = None
        try:
            self._bounded("abort_transaction", self.producer.abort_transaction)
        except KafkaException as exc:
            error = exc.args[0]
            if error.fatal():
                raise ProducerFatalError(
                    f"abort failed fatally: {error.str()}", error.name()
                ) from exc
            log.warning("transaction.abort_failed", error=error.str())
            failed = error
        self._abort_unfinished = failed is not None
        self._open = False
        return failed

    def _call(self, name: str, *args: Any) -> None:
        try:
            getattr(self.producer, name)(*args)
        except KafkaException as exc:
            error = exc.args[0]
            raise VigilKafkaError(f"{name} failed: {error.str()}", error.name()) from exc


def shutdown_problem(delivery: Delivery | None) -> str | None:
    """Why closing left a delivery unclean (a transactional call given up on the way out,
    e.g. a snapshot on revoke cut short by the deadline), or None if it did not."""
    if isinstance(delivery, ExactlyOnce) and delivery.abandoned:
        return "a transactional call was given up while closing"
    return None
