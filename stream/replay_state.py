"""``vigil replay --warm-up-from state``: start from the live service's latest snapshots.

A warm-up from ``earliest`` rebuilds the live service's state by running the topic from its
start: exact, but as slow as the topic is long, and impossible once retention has deleted
the start. The live service checkpoints each input partition's scorer to its state topic
with the offset the state reflects (stream/checkpoint.py); a replay can start from those
snapshots instead. With no ``--from``, the range starts where each snapshot does ("why did
this fire since the last checkpoint"); with ``--from``, the records from a snapshot up to it
are run first, outputs dropped, as for any warm-up.

The state topic is compacted, so it holds each partition's latest snapshot only: a range
that starts before it needs ``--warm-up-from earliest`` (or a time, or offsets). A snapshot
is used only if the live service made it under the replay's scoring configuration (its
fingerprint, as the live service checks on restore): state made under other detectors or
thresholds would score the range as neither configuration would.

A partition the state topic has no snapshot of starts from the partition's earliest record
with fresh state, as the live service does on its first start. A snapshot older than the
earliest record retention left is refused: the live service read the records retention
deleted since, and the replay cannot.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer

from detectors.scoring import EventScorer
from stream.checkpoint import SnapshotError, decode_state, fingerprint
from stream.kafka_io import VigilKafkaError
from stream.service import PartitionScorers, scoring_config
from stream.settings import ConfigError, ServiceSettings, load_settings
from stream.state_store import read_state_partition
from stream.topic_reader import ReplayError, ReplayOptionError

STATE = "state"

Ranges = dict[int, tuple[int, int]]


@dataclass(frozen=True)
class LiveState:
    """The latest snapshot of each input partition the state topic has one of."""

    state_topic: str
    # By input partition: the next offset the state has not seen, and the snapshot as
    # stored (compressed: decoded only for a partition the replay reads, by the process
    # that reads it, a worker's own, so no process holds every partition's state).
    snapshots: Mapping[int, tuple[int, bytes]]

    @property
    def offsets(self) -> dict[int, int]:
        """Where each snapshot stands: the first offset it has not seen."""
        return {p: offset for p, (offset, _) in sorted(self.snapshots.items())}

    def only(self, partitions: Iterable[int]) -> LiveState:
        """The snapshots of ``partitions`` (a worker's share)."""
        wanted = set(partitions)
        kept = {p: s for p, s in self.snapshots.items() if p in wanted}
        return LiveState(self.state_topic, kept)

    def scorers(self, settings: ServiceSettings) -> Callable[[int], EventScorer]:
        """Makes each partition's scorer: its snapshot's, without the work only observations
        read (as a replay's own scorers are made: ``EventScorer.drop_observation_work``),
        or a fresh one under ``settings`` for a partition the state topic has none of.
        ``ReplayError`` for a snapshot this build cannot read."""
        fresh = PartitionScorers(scoring_config(settings))

        def scorer(partition: int) -> EventScorer:
            found = self.snapshots.get(partition)
            if found is None:
                return fresh(partition)
            try:
                restored: EventScorer = decode_state(found[1])
                restored.drop_observation_work()
            except Exception as exc:  # unpickling runs whatever the pickle names
                raise ReplayError(
                    f"the snapshot of partition {partition} in {self.state_topic} cannot be "
                    f"read by this build: {type(exc).__name__}: {exc}"
                ) from exc
            return restored

        return scorer

    def describe(self, ranges: Mapping[int, tuple[int, int]]) -> str:
        """Where the snapshots stand, and which partitions with records in ``ranges`` have
        none."""
        offsets = self.offsets
        text = ",".join(f"{p}:{o}" for p, o in offsets.items())
        missing = sorted({p for p, (a, b) in ranges.items() if a < b} - set(offsets))
        if missing:
            listed = ",".join(map(str, missing))
            text += f"; none of partition {listed} (from its earliest record, fresh)"
        return text


def live_settings(
    bootstrap: str, topic: str, config: Path | None, state_topic: str | None
) -> ServiceSettings:
    """The live service's settings as it loads them (``config``, then the ``VIGIL_*``
    environment), without the changes a replay makes to them: its state topic, and the
    scoring configuration its snapshots carry the fingerprint of."""
    given = {"bootstrap": bootstrap, "input_topic": topic, "state_topic": state_topic}
    # The outputs' topics do not matter here, but are required settings.
    given |= {"alerts_topic": "vigil-replay-alerts", "dlq_topic": "vigil-replay-dead-letters"}
    try:
        return load_settings(given, config_file=config)
    except ConfigError as exc:
        # Only a group that is not set at all: a bad one is the config's error, as it is.
        if "setting 'group' (default)" not in str(exc):
            raise
    # A live service given its group on its command line: its config may still name the
    # state topic, and the group matters to nothing else here.
    named = load_settings(given | {"group": "vigil-replay"}, config_file=config)
    if named.state_topic is None:
        raise ReplayOptionError(
            "--warm-up-from state needs the live service's state topic: --state-topic, or a "
            "--config (or VIGIL_GROUP) that names its group or its state_topic"
        )
    return named


def read_live_state(settings: ServiceSettings) -> LiveState:
    """The latest snapshot of each partition of ``settings.input_topic`` in the state
    topic. ``ReplayOptionError`` if the state topic does not exist, holds no snapshot of the
    topic, or one made under another scoring configuration; ``ReplayError`` if a snapshot
    is incomplete or corrupt."""
    state_topic = settings.state_topic_name
    count = _partition_count(settings, state_topic)
    expected = fingerprint(scoring_config(settings))
    snapshots: dict[int, tuple[int, bytes]] = {}
    # Input partition p checkpoints to state partition p.
    for partition in range(count):
        try:
            found = read_state_partition(settings, partition, settings.restore_timeout_s)
        except VigilKafkaError as exc:
            raise ReplayError(f"reading {state_topic}: {exc}") from exc
        try:
            restored = found.snapshot(settings.input_topic, partition)
        except SnapshotError as exc:
            raise ReplayError(
                f"the snapshot of partition {partition} in {state_topic}: {exc}"
            ) from exc
        if restored is None:
            continue
        if restored.manifest.fingerprint != expected:
            raise ReplayOptionError(
                f"the snapshot of partition {partition} in {state_topic} was made under "
                "another scoring configuration than this replay's: --config and the VIGIL_* "
                "environment must be the live service's (if they are, it has not snapshotted "
                "since its configuration changed); to replay another configuration, warm up "
                "from earliest instead"
            )
        snapshots[partition] = (restored.manifest.offset, restored.blob)
    if not snapshots:
        raise ReplayOptionError(
            f"{state_topic} holds no snapshot of {settings.input_topic} (the live service "
            f"snapshots every {settings.checkpoint_every:,} records of a partition and when it "
            "stops)"
        )
    return LiveState(state_topic, snapshots)


def check_held(
    live: LiveState, held: Mapping[int, tuple[int, int]], ranges: Mapping[int, tuple[int, int]]
) -> None:
    """``ReplayOptionError`` if the snapshot of a partition with records in ``ranges``
    stands before the earliest offset the topic still holds (``held``: each partition's
    [earliest, end)): retention deleted records the live service read after it, and a
    replay from it would skip them, giving other alerts. A partition the replay does not
    read (a quiet one's snapshot may well be that old) does not matter."""
    for partition, offset in live.offsets.items():
        begin, end = ranges.get(partition, (0, 0))
        earliest = held.get(partition, (offset, offset))[0]
        if begin < end and offset < earliest:
            raise ReplayOptionError(
                f"the live state of partition {partition} is as of offset {offset}, but "
                f"retention has deleted the records before {earliest}, which the live "
                "service read after it: no replay can start from it"
            )


def ranges_from(live: LiveState, held: Mapping[int, tuple[int, int]]) -> Ranges:
    """``held`` ([earliest, end) of each partition) started where each snapshot stands.
    ``ReplayOptionError`` if a snapshot stands after its range's end (``--to``); a
    partition with nothing to read stays so."""
    ranges: Ranges = {}
    for partition, (begin, end) in sorted(held.items()):
        start = live.offsets.get(partition, begin)
        if begin == end:  # not to be read (left out of --to's offsets, or empty)
            ranges[partition] = (begin, end)
        elif start > end:
            raise ReplayOptionError(
                f"the live state of partition {partition} is as of offset {start}, "
                f"after the range's end ({end})"
            )
        else:
            ranges[partition] = (max(start, begin), end)
    return ranges


def _partition_count(settings: ServiceSettings, state_topic: str) -> int:
    consumer = Consumer(
        {**settings.kafka_common(), "group.id": f"vigil-replay-state-{uuid.uuid4()}"}
    )
    try:
        meta = consumer.list_topics(state_topic, timeout=10).topics.get(state_topic)
    finally:
        consumer.close()
    if meta is None or meta.error is not None:
        raise ReplayOptionError(f"state topic {state_topic!r} not found")
    return len(meta.partitions)
