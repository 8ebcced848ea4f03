"""Snapshots of one input partition's state as records of a compacted topic.

A snapshot is the partition's pickled scorer, compressed and cut into chunks below the
broker's record size limit, plus a manifest written last that says which input offset the
state reflects (the next offset it has not seen), how many chunks it has and their
checksum. Input partition ``p`` always goes to state partition ``p``, so restoring one
partition reads one state partition.

Chunks alternate between two slots by generation (``.../0/i`` and ``.../1/i``): writing
generation ``g`` never overwrites the chunks of ``g - 1``, so a crash halfway through a
snapshot (possible under at-least-once, where a snapshot is not one transaction) leaves
the previous manifest and its chunks intact. Compaction keeps the latest record per key,
which bounds the topic at two snapshots per partition.

Pure: no Kafka here; ``stream.state_store`` does the I/O.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

FORMAT = 1
# Below the broker's default record limit (1 MiB) with room for the key and headers.
CHUNK_BYTES = 512 * 1024
_GENERATION = struct.Struct(">Q")


class SnapshotError(ValueError):
    """A stored snapshot cannot be used (incomplete, corrupt, or of another format)."""


@dataclass(frozen=True, slots=True)
class Manifest:
    topic: str
    partition: int
    offset: int  # the next input offset this state has not seen
    generation: int
    chunks: int
    size: int  # compressed bytes
    sha256: str
    fingerprint: str  # of the configuration that made the state
    format: int = FORMAT

    @property
    def slot(self) -> int:
        return self.generation % 2


@dataclass(frozen=True, slots=True)
class StateRecord:
    key: bytes
    value: bytes | None  # None: a tombstone


def encode_state(state: object) -> bytes:
    # zlib level 1: state compresses ~6x and level 1 is several times faster than 6.
    return zlib.compress(pickle.dumps(state, protocol=5), 1)


def decode_state(blob: bytes) -> Any:
    # Only our own compacted topic is read here: the same trust as a local checkpoint file.
    return pickle.loads(zlib.decompress(blob))


def fingerprint(config: object) -> str:
    """Identifies a configuration: state made under another one is not restored."""
    return hashlib.blake2b(f"{FORMAT}:{config!r}".encode(), digest_size=8).hexdigest()


def _prefix(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


def manifest_key(topic: str, partition: int) -> bytes:
    return f"{_prefix(topic, partition)}/manifest".encode()


def chunk_key(topic: str, partition: int, slot: int, index: int) -> bytes:
    return f"{_prefix(topic, partition)}/{slot}/{index:06d}".encode()


@dataclass
class SnapshotWriter:
    """Turns successive states of one input partition into state records."""

    topic: str
    partition: int
    fingerprint: str
    generation: int = 0
    # Chunks present in each slot, so a shorter snapshot deletes the surplus.
    slot_chunks: dict[int, int] = field(default_factory=lambda: {0: 0, 1: 0})

    @classmethod
    def resume(
        cls, topic: str, partition: int, fp: str, found: SnapshotAssembler
    ) -> SnapshotWriter:
        """Continue after whatever the state topic holds for this partition."""
        manifest = found.manifest(topic, partition)
        generation = 0 if manifest is None else manifest.generation
        return cls(topic, partition, fp, generation, found.slot_chunks(topic, partition))

    def records(self, offset: int, blob: bytes) -> tuple[Manifest, list[StateRecord]]:
        generation = self.generation + 1
        slot = generation % 2
        pieces = [blob[i : i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)] or [b""]
        header = _GENERATION.pack(generation)
        out = [
            StateRecord(chunk_key(self.topic, self.partition, slot, i), header + piece)
            for i, piece in enumerate(pieces)
        ]
        out.extend(
            StateRecord(chunk_key(self.topic, self.partition, slot, i), None)
            for i in range(len(pieces), self.slot_chunks.get(slot, 0))
        )
        manifest = Manifest(
            topic=self.topic,
            partition=self.partition,
            offset=offset,
            generation=generation,
            chunks=len(pieces),
            size=len(blob),
            sha256=hashlib.sha256(blob).hexdigest(),
            fingerprint=self.fingerprint,
        )
        out.append(StateRecord(manifest_key(self.topic, self.partition), encode_manifest(manifest)))
        self.generation = generation
        self.slot_chunks[slot] = len(pieces)
        return manifest, out


def encode_manifest(manifest: Manifest) -> bytes:
    return orjson.dumps(asdict(manifest))


def decode_manifest(value: bytes) -> Manifest:
    try:
        data = orjson.loads(value)
        return Manifest(**data)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise SnapshotError(f"unreadable manifest: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Restored:
    manifest: Manifest
    blob: bytes


class SnapshotAssembler:
    """Reads a state partition's records (in offset order) and rebuilds its snapshots."""

    def __init__(self) -> None:
        self._latest: dict[bytes, bytes] = {}

    def add(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        if value is None:
            self._latest.pop(key, None)
        else:
            self._latest[key] = value

    def add_all(self, records: Iterable[StateRecord]) -> None:
        for record in records:
            self.add(record.key, record.value)

    def slot_chunks(self, topic: str, partition: int) -> dict[int, int]:
        """How many chunks each slot holds now (the writer deletes surplus ones)."""
        counts = {0: 0, 1: 0}
        prefix = _prefix(topic, partition).encode() + b"/"
        for key in self._latest:
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix) :].split(b"/")
            if len(rest) == 2 and rest[0] in (b"0", b"1"):
                slot = int(rest[0])
                counts[slot] = max(counts[slot], int(rest[1]) + 1)
        return counts

    def manifest(self, topic: str, partition: int) -> Manifest | None:
        value = self._latest.get(manifest_key(topic, partition))
        return None if value is None else decode_manifest(value)

    def snapshot(self, topic: str, partition: int) -> Restored | None:
        """The partition's latest snapshot; None if there is none; ``SnapshotError`` if
        the one there cannot be trusted."""
        manifest = self.manifest(topic, partition)
        if manifest is None:
            return None
        if manifest.format != FORMAT:
            raise SnapshotError(f"snapshot format {manifest.format}, this build reads {FORMAT}")
        pieces = []
        for i in range(manifest.chunks):
            value = self._latest.get(chunk_key(topic, partition, manifest.slot, i))
            if value is None or len(value) < _GENERATION.size:
                raise SnapshotError(f"chunk {i} of generation {manifest.generation} missing")
            (generation,) = _GENERATION.unpack_from(value)
            if generation != manifest.generation:
                raise SnapshotError(
                    f"chunk {i} is of generation {generation}, manifest {manifest.generation}"
                )
            pieces.append(value[_GENERATION.size :])
        blob = b"".join(pieces)
        if len(blob) != manifest.size or hashlib.sha256(blob).hexdigest() != manifest.sha256:
            raise SnapshotError(f"generation {manifest.generation} fails its checksum")
        return Restored(manifest, blob)
