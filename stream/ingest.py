"""The per-record pass of a batch: consumed messages in, new events (or why not) out.

For each message in order: a consumer error goes to ``on_error``; a record its
partition's state has seen already (read again after a seek) is skipped; every other
record advances its partition's state and is decoded. Valid events are kept in the
batch's order and indexed by partition; invalid records are kept for the dead-letter
topic. Both carry whether their outputs were made already (``PartitionState.silent``).

Its own module because it runs for every record and is compiled with mypyc (setup.py):
compiled, it calls the compiled decoding fast path (schemas/fast_path.py) natively, and
only the records that path does not accept go through ``EventValidator.judge``. The
consumed message is kept as it is: the service makes a ``Record`` of one only when it
has something to write about it (an alert, a dead letter).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schemas.fast_path import FastPath
from schemas.validation import Invalid

PartitionKey = tuple[str, int]


class Ingested:
    """What the per-record pass made of a batch."""

    def __init__(self) -> None:
        self.processed = 0  # records new to their partition's state
        self.advanced: dict[PartitionKey, None] = {}  # partitions with processed records
        self.valid: list[tuple[Any, dict[str, Any]]] = []  # (message, event), in order
        self.silent: list[bool] = []  # per valid event: its outputs were made already
        self.by_partition: dict[PartitionKey, list[int]] = {}  # places in ``valid``
        self.invalid: list[tuple[Any, Invalid, bool]] = []  # (message, why, silent)


def ingest(
    messages: list[Any],
    state_of: Callable[[str, int], Any],
    fast: FastPath | None,
    judge: Callable[[bytes | None], dict[str, Any] | Invalid],
    on_error: Callable[[Any], None],
) -> Ingested:
    """The pass over ``messages`` (confluent-kafka ``Message``s, or look-alikes).

    ``state_of(topic, partition)`` gives a partition's ``PartitionState``; ``fast`` is the
    decoding fast path (None: none), ``judge`` decodes what it did not accept
    (``EventValidator.judge``: an event dict or an ``Invalid``); ``on_error`` gets each
    consumer error (and may raise).
    """
    batch = Ingested()
    # A batch holds runs of one partition: its state is looked up once a run.
    state: Any = None
    key: PartitionKey = ("", -1)
    for msg in messages:
        error = msg.error()
        if error is not None:
            on_error(error)
            continue
        # As Record.of resolves them (librdkafka's getters are optional).
        topic: str = msg.topic() or ""
        partition_or_none: int | None = msg.partition()
        partition = -1 if partition_or_none is None else partition_or_none
        offset_or_none: int | None = msg.offset()
        offset = -1 if offset_or_none is None else offset_or_none
        if state is None or partition != key[1] or topic != key[0]:
            key = (topic, partition)
            state = state_of(topic, partition)
        silent: bool | None = state.take(offset)
        if silent is None:  # fetched again after a seek
            continue
        batch.processed += 1
        batch.advanced[key] = None
        value = msg.value()
        if isinstance(value, str):
            value = value.encode()
        event = None if fast is None else fast.accept(value)
        if event is None:
            decoded = judge(value)
            if isinstance(decoded, Invalid):
                batch.invalid.append((msg, decoded, silent))
                continue
            event = decoded
        indices = batch.by_partition.get(key)
        if indices is None:
            indices = batch.by_partition[key] = []
        indices.append(len(batch.valid))
        batch.valid.append((msg, event))
        batch.silent.append(silent)
    return batch
