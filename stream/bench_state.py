"""``vigil bench state``: size and speed of a partition's feature-state checkpoint.

The service checkpoints each partition's whole scorer with ``pickle.dumps(scorer,
protocol=5)``, compresses it, and restores it on partition assignment, so what matters is
the pickled size, the compressed size and the time to snapshot and to restore a table of a
million tracked entities. The state tables pickle in a columnar form (see
``detectors.features.state``); the baseline is the same tables pickled the old way (a dict
of Python objects per table), measured in the same run on the same contents.

With ``--kafka``, the snapshot also makes the round trip a partition's restore makes:
written as the service writes it (chunks and a manifest, ``stream/checkpoint.py``) to a
compacted topic of its own, read back as a restore reads it (``read_state_partition``),
reassembled, checked and decoded.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import pickle
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from detectors.compiled import attributes
from detectors.features import FeatureExtractor
from detectors.features.state import BoundedTable, DistinctSets, UserHistories, table_of
from stream import kafka_local
from stream.checkpoint import SnapshotWriter
from stream.state_store import (
    STATE_TOPIC_CONFIG,
    create_missing_topics,
    produce_state,
    read_state_partition,
)

_TYPES = (
    "account.created",
    "account.login",
    "listing.created",
    "order.placed",
    "payment.attempted",
    "message.sent",
    "review.posted",
)
_COUNTRIES = ("US", "GB", "DE", "FR", "BR", "IN", "NG", "PH")
_CATEGORIES = ("jewelry", "shoes", "toys", "books", "phones", "art")
_T0 = datetime(2026, 11, 2, tzinfo=UTC).timestamp()


def synthetic_events(entities: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """One event per entity: user ``i`` on device ``i`` from IP ``i``, types in turn.

    Every event brings a new user, device and IP, so ``entities`` events leave that many
    keys in each per-user, per-device and per-IP table. Shops, cards, recipients and
    countries repeat (a shop per 20 users, a card per 3), so the distinct-value sets hold
    more than one value for some keys, as they do in real traffic. Deterministic.
    """
    shops = max(entities // 20, 1)
    for i in range(entities):
        j = (i * 2_654_435_761 + seed) % entities  # a scrambled partner entity
        when = datetime.fromtimestamp(_T0 + i * 0.05, UTC)
        yield {
            "event_type": _TYPES[i % len(_TYPES)],
            "occurred_at": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "entities": {"user_id": f"u-{i:08d}", "shop_id": f"s-{i % shops:07d}"},
            "context": {
                "ip": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                "device_id": f"d-{i:08x}-{seed}",
                "country": _COUNTRIES[i % len(_COUNTRIES)],
            },
            "payload": {
                "success": i % 11 != 0,
                "title": f"item {j % 5000} {_CATEGORIES[i % len(_CATEGORIES)]}",
                "category": _CATEGORIES[i % len(_CATEGORIES)],
                "price": 5.0 + (j % 997),
                "quantity": 1 + j % 20,
                "amount": 3.0 + (j % 499),
                "card_fingerprint": f"card-{i // 3:08d}",
                "outcome": "approved" if j % 9 else "declined",
                "recipient_id": f"u-{j:08d}",
                "length": 20 + j % 400,
                "has_link": j % 13 == 0,
                "rating": 1 + j % 5,
            },
        }


def build_extractor(entities: int, max_keys: int) -> tuple[FeatureExtractor, float]:
    """A FeatureExtractor fed ``entities`` synthetic events, and the seconds it took."""
    extractor = FeatureExtractor(max_keys)
    started = time.perf_counter()
    for event in synthetic_events(entities):
        extractor.extract(event)
    return extractor, time.perf_counter() - started


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    gc.collect()  # no collection owed by earlier steps lands inside the measurement
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def _legacy_table(cls: type[BoundedTable[Any, Any]], max_keys: int, data: dict[Any, Any]) -> Any:
    table = cls.__new__(cls)
    table.__setstate__({"max_keys": max_keys, "_data": data})  # the form it restores as is
    return table


def _legacy_distinct(max_values: int, table: BoundedTable[Any, Any]) -> DistinctSets:
    sets = DistinctSets.__new__(DistinctSets)
    sets.max_values, sets._table = max_values, table
    return sets


def _legacy_distinct_reduce(sets: DistinctSets) -> tuple[Any, ...]:
    # The old DistinctSets held a set for every key, also for a lone value.
    data = {k: v if type(v) is set else {v} for k, v in sets._table._data.items()}
    table = _legacy_table(BoundedTable, sets._table.max_keys, data)
    return _legacy_distinct, (sets.max_values, table)


def _legacy_users(max_keys: int, settings: tuple[float, float, int], data: dict[Any, Any]) -> Any:
    users = UserHistories(max_keys, *settings)
    users._data = data
    return users


# Pickles the state tables as they were before the columnar form: one Python object per
# entry (a tuple per count, a set per DistinctSets key, a record per user), the baseline's
# format.
_LEGACY: dict[type, Callable[[Any], tuple[Any, ...]]] = {
    BoundedTable: lambda t: (_legacy_table, (type(t), t.max_keys, t._data)),
    DistinctSets: _legacy_distinct_reduce,
    UserHistories: lambda t: (
        _legacy_users,
        (t.max_keys, (t.half_life_s, t.new_for_s, t.max_values), t._data),
    ),
}


def _legacy_dumps(obj: object) -> bytes:
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=5)
    pickler.dispatch_table = _LEGACY
    pickler.dump(obj)
    return buffer.getvalue()


def measure(extractor: FeatureExtractor, dumps: Callable[[object], bytes]) -> dict[str, float]:
    """Sizes and seconds of one snapshot (pickle, zlib 1) and restore (unzlib, unpickle)."""
    blob, pickle_s = _timed(lambda: dumps(extractor))
    packed, zlib_s = _timed(lambda: zlib.compress(blob, 1))
    unpacked, unzlib_s = _timed(lambda: zlib.decompress(packed))
    restored, unpickle_s = _timed(lambda: pickle.loads(unpacked))
    _check_same(extractor, restored)
    return {
        "pickle_bytes": len(blob),
        "zlib1_bytes": len(packed),
        "pickle_s": pickle_s,
        "zlib1_s": zlib_s,
        "snapshot_s": pickle_s + zlib_s,
        "unzlib_s": unzlib_s,
        "unpickle_s": unpickle_s,
        "restore_s": unzlib_s + unpickle_s,
    }


def _check_same(original: FeatureExtractor, restored: FeatureExtractor) -> None:
    """Every restored table holds the same entries in the same (LRU) order.

    A DistinctSets value may come back as ``{v}`` instead of a bare ``v`` (the old format
    had only sets), which it treats alike. The unit tests check the behaviour itself.
    """
    for name, holder in attributes(original).items():
        mine, theirs = table_of(holder)._data, table_of(getattr(restored, name))._data
        if list(mine) != list(theirs):
            raise AssertionError(f"{name}: keys or their LRU order differ after restore")
        if isinstance(holder, DistinctSets):
            mine = {k: v if type(v) is set else {v} for k, v in mine.items()}
            theirs = {k: v if type(v) is set else {v} for k, v in theirs.items()}
        if isinstance(holder, UserHistories):
            mine = {k: attributes(v) for k, v in mine.items()}
            theirs = {k: attributes(v) for k, v in theirs.items()}
        if mine != theirs:
            raise AssertionError(f"{name}: values differ after restore")


def _keys(extractor: FeatureExtractor) -> int:
    return sum(len(table_of(holder)) for holder in attributes(extractor).values())


_ROWS = (
    ("pickle MB", "pickle_bytes", 1e-6),
    ("zlib-1 MB", "zlib1_bytes", 1e-6),
    ("snapshot s (pickle+zlib)", "snapshot_s", 1.0),
    ("restore s (unzlib+unpickle)", "restore_s", 1.0),
    ("  of which unpickle s", "unpickle_s", 1.0),
)


@dataclass(frozen=True)
class _BenchTopic:
    """What the state topic's I/O needs of settings (``StateTopicSettings``)."""

    bootstrap: str
    state_topic_name: str

    def kafka_common(self) -> dict[str, str | int | float | bool]:
        return {"bootstrap.servers": self.bootstrap}


def through_kafka(bootstrap: str, packed: bytes) -> dict[str, float]:
    """Seconds to write ``packed`` (a compressed snapshot) to a fresh state topic, and to
    restore it from there: read the partition, reassemble and check, unzlib, unpickle."""
    topic = _BenchTopic(bootstrap, f"vigil-bench-state-{uuid.uuid4().hex[:8]}")
    admin = AdminClient(topic.kafka_common())
    create_missing_topics(admin, {topic.state_topic_name: STATE_TOPIC_CONFIG}, 1, 30.0)
    try:
        _, records = SnapshotWriter("bench", 0, "fp").records(1, packed)
        producer = Producer({**topic.kafka_common(), "message.max.bytes": 2_000_000})
        started = time.perf_counter()
        produce_state(producer, topic.state_topic_name, 0, records, None)
        if producer.flush(60) != 0:
            raise RuntimeError(f"the snapshot was not written to {topic.state_topic_name}")
        write_s = time.perf_counter() - started
        found, read_s = _timed(lambda: read_state_partition(topic, 0, 120.0))
        restored, assemble_s = _timed(lambda: found.snapshot("bench", 0))
        if restored is None or restored.blob != packed:
            raise AssertionError("the snapshot read back is not the one written")
        _, decode_s = _timed(lambda: pickle.loads(zlib.decompress(restored.blob)))
    finally:
        for future in admin.delete_topics([topic.state_topic_name]).values():
            try:
                future.result(30)
            except KafkaException as exc:  # a bench's leftover, not its failure
                print(f"could not delete {topic.state_topic_name}: {exc}", file=sys.stderr)
    return {
        "chunks": len(records) - 1,
        "write_s": write_s,
        "read_s": read_s,
        "assemble_s": assemble_s,
        "decode_s": decode_s,
        "restore_s": read_s + assemble_s + decode_s,
    }


def bench_state_cli(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="vigil bench state", description=__doc__)
    parser.add_argument("--entities", type=int, default=1_000_000, help="users, devices, IPs")
    parser.add_argument("--no-baseline", action="store_true", help="skip the old format")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument(
        "--kafka",
        action="store_true",
        help="also write the snapshot to a state topic and restore it from there",
    )
    parser.add_argument("--bootstrap", help="with --kafka: a broker (default: a local one)")
    parser.add_argument("--workdir", type=Path, default=kafka_local.DEFAULT_WORKDIR)
    args = parser.parse_args(argv)
    if args.entities < 1:
        parser.error("--entities must be >= 1")
    extractor, fed_s = build_extractor(args.entities, max_keys=args.entities)
    result: dict[str, Any] = {
        "entities": args.entities,
        "fill": "extract",  # every entity comes from an event through FeatureExtractor.extract
        "fill_s": fed_s,
        "keys": _keys(extractor),
        "columnar": measure(extractor, lambda obj: pickle.dumps(obj, protocol=5)),
    }
    if not args.no_baseline:
        result["baseline"] = measure(extractor, _legacy_dumps)
        result["ratio"] = {
            key: result["baseline"][key] / max(value, 1e-9)
            for key, value in result["columnar"].items()
        }
    if args.kafka:
        packed = zlib.compress(pickle.dumps(extractor, protocol=5), 1)

        def say(text: str) -> None:
            print(f"vigil bench state: {text}", file=sys.stderr, flush=True)

        with kafka_local.broker_for(args.bootstrap, args.workdir, say) as bootstrap:
            result["kafka"] = through_kafka(bootstrap, packed)
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"state: {args.entities:,} users/devices/IPs fed as events through "
        f"FeatureExtractor.extract in {fed_s:.1f} s; {result['keys']:,} keys in all tables"
    )
    header = f"{'':<28} {'columnar':>10}"
    print(header + (f" {'old':>10} {'old/new':>8}" if "baseline" in result else ""))
    for label, key, unit in _ROWS:
        new = result["columnar"][key] * unit
        line = f"{label:<28} {new:>10.2f}"
        if "baseline" in result:
            old = result["baseline"][key] * unit
            line += f" {old:>10.2f} {result['ratio'][key]:>7.1f}x"
        print(line)
    if "kafka" in result:
        kafka = result["kafka"]
        print(
            f"through Kafka ({kafka['chunks']} chunks): written in {kafka['write_s']:.2f} s; "
            f"restored in {kafka['restore_s']:.2f} s (read {kafka['read_s']:.2f}, reassemble "
            f"{kafka['assemble_s']:.2f}, unzlib+unpickle {kafka['decode_s']:.2f})"
        )
    return 0
