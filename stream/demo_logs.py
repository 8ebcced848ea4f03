"""Figures the demo reads back from a service run's JSON log: how its state was restored
and the thresholds reviewers' labels set."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson


def log_lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as lines:
        for line in lines:
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a stray non-JSON line (a library printing): not ours
            if isinstance(entry, dict):
                yield entry


@dataclass(frozen=True)
class Restore:
    """Partitions resumed from snapshots at start-up: the restore figure."""

    partitions: int
    from_snapshot: int  # partitions with a usable snapshot
    snapshot_bytes: int
    rescored: int  # records re-scored silently between snapshot and committed offset
    seconds: float  # from the first assignment to the last partition restored

    def describe(self) -> str:
        return (
            f"{self.from_snapshot} of {self.partitions} partitions from snapshots"
            f" ({self.snapshot_bytes / 1e6:.1f} MB), {self.rescored:,} records re-scored,"
            f" ready {self.seconds:.2f}s after assignment"
        )


def restore_figures(path: Path) -> Restore | None:
    assigned_at: float | None = None
    restored_at: float | None = None
    resumed: list[dict[str, Any]] = []
    for entry in log_lines(path):
        event = entry.get("event")
        when = _time(entry)
        if event == "partitions.assigned" and assigned_at is None:
            assigned_at = when
        elif event == "state.resumed":
            resumed.append(entry)
        elif event == "state.restored" and when is not None:
            restored_at = when
    if not resumed:
        return None
    seconds = 0.0
    if assigned_at is not None and restored_at is not None:
        seconds = max(restored_at - assigned_at, 0.0)
    return Restore(
        partitions=len(resumed),
        from_snapshot=sum(1 for r in resumed if r.get("snapshot_bytes")),
        snapshot_bytes=sum(int(r.get("snapshot_bytes") or 0) for r in resumed),
        rescored=sum(
            max(int(r.get("replay_until") or 0) - int(r.get("from_offset") or 0), 0)
            for r in resumed
        ),
        seconds=seconds,
    )


def gate_segments(path: Path) -> list[dict[str, Any]]:
    """The label gate's segments as the service last logged them (``labels.applied``)."""
    segments: list[dict[str, Any]] = []
    for entry in log_lines(path):
        if entry.get("event") == "labels.applied":
            segments = list(entry.get("segments") or [])
    return segments


def _time(entry: dict[str, Any]) -> float | None:
    stamp = entry.get("timestamp")
    if not isinstance(stamp, str):
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
