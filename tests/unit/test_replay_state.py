"""``--warm-up-from state`` without a broker: which snapshots count, where ranges start, the
scorers handed out (its exactness against the live service is checked on the real broker,
tests/integration/test_replay.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

import stream.replay_state as replay_state
from stream.checkpoint import SnapshotAssembler, SnapshotWriter, encode_state, fingerprint
from stream.replay import replay_settings
from stream.replay_state import (
    LiveState,
    check_held,
    live_settings,
    ranges_from,
    read_live_state,
)
from stream.service import PartitionScorers, scoring_config
from stream.settings import ConfigError
from stream.topic_reader import ReplayError, ReplayOptionError
from stream.traffic.generator import TrafficConfig, generate

TOPIC = "events"


def _live(tmp_path: Path, config: str = 'group = "shop"\nwarmup = 20\nwindow_size = 30\n') -> Any:
    path = tmp_path / "live.toml"
    path.write_text(config)
    return live_settings("b", TOPIC, path, None)


def _state_topic(snapshots: dict[int, tuple[int, str, bytes]]) -> dict[int, SnapshotAssembler]:
    """State partitions holding, by input partition, a snapshot (offset, fingerprint, blob)."""
    found = {}
    for partition, (offset, fp, blob) in snapshots.items():
        assembler = SnapshotAssembler()
        _, records = SnapshotWriter(TOPIC, partition, fp).records(offset, blob)
        assembler.add_all(records)
        found[partition] = assembler
    return found


def _read_from(monkeypatch, found: dict[int, SnapshotAssembler], partitions: int = 3) -> None:
    monkeypatch.setattr(replay_state, "_partition_count", lambda settings, topic: partitions)
    monkeypatch.setattr(
        replay_state,
        "read_state_partition",
        lambda settings, p, timeout_s: found.get(p, SnapshotAssembler()),
    )


def test_the_state_topic_is_the_live_services(tmp_path, monkeypatch):
    monkeypatch.delenv("VIGIL_GROUP", raising=False)
    monkeypatch.delenv("VIGIL_CONFIG", raising=False)
    monkeypatch.delenv("VIGIL_STATE_TOPIC", raising=False)
    assert _live(tmp_path).state_topic_name == "shop.state"
    named = _live(tmp_path, 'group = "shop"\nstate_topic = "shop-snapshots"\n')
    assert named.state_topic_name == "shop-snapshots"
    # A live service given its group on its command line, its state topic in its config.
    assert _live(tmp_path, 'state_topic = "snaps"\n').state_topic_name == "snaps"
    assert live_settings("b", TOPIC, None, "given").state_topic_name == "given"


def test_without_a_group_or_a_state_topic_the_option_says_what_it_needs(tmp_path, monkeypatch):
    monkeypatch.delenv("VIGIL_GROUP", raising=False)
    monkeypatch.delenv("VIGIL_CONFIG", raising=False)
    monkeypatch.delenv("VIGIL_STATE_TOPIC", raising=False)
    with pytest.raises(ReplayOptionError, match=r"--state-topic, or a --config"):
        live_settings("b", TOPIC, None, None)
    # A group that is set but bad is the config's own error, named as such.
    with pytest.raises(ConfigError, match=r"setting 'group' \(file"):
        _live(tmp_path, 'group = ""\n')


def test_snapshots_are_read_by_input_partition_with_the_offsets_they_stand_at(
    tmp_path, monkeypatch
):
    settings = _live(tmp_path)
    fp = fingerprint(scoring_config(settings))
    scorers = PartitionScorers(scoring_config(settings))
    events = [orjson.loads(r.value) for r in generate(TrafficConfig(events=600, seed=3))]
    learned = scorers(0)
    learned.score_batch(events[:400])
    # Partition 1 has none; the state topic has a fourth partition, without any either.
    blob = encode_state(learned)
    found = _state_topic({0: (400, fp, blob), 2: (0, fp, encode_state(scorers(2)))})
    _read_from(monkeypatch, found, partitions=4)
    live = read_live_state(settings)
    assert live.state_topic == "shop.state"
    assert live.offsets == {0: 400, 2: 0}
    # Partition 4 has nothing to read: not named.
    ranges = dict.fromkeys(range(4), (0, 10)) | {4: (3, 3)}
    assert live.describe(ranges) == (
        "0:400,2:0; none of partition 1,3 (from its earliest record, fresh)"
    )

    replaying = replay_settings("b", TOPIC, None, None)
    make = live.only([0, 1]).scorers(replaying)
    restored, fresh = make(0), make(1)
    # The snapshot's scorer goes on as the live one would without its observation-only
    # work (tests/unit/test_scoring.py); partition 1's starts fresh.
    probe = events[400:]
    from_snapshot = restored.score_batch(probe)
    learned.drop_observation_work()
    assert restored.config == learned.config
    assert from_snapshot == learned.score_batch(probe)
    fresh_scores = fresh.score_batch(probe)
    assert fresh_scores == PartitionScorers(scoring_config(replaying))(1).score_batch(probe)
    assert fresh_scores != from_snapshot
    assert live.only([1]).offsets == {}


def test_a_snapshot_of_another_configuration_or_none_at_all_is_refused(tmp_path, monkeypatch):
    settings = _live(tmp_path)
    _read_from(monkeypatch, _state_topic({1: (10, "another", b"x")}))
    with pytest.raises(
        ReplayOptionError, match=r"partition 1 in shop\.state was made under another"
    ):
        read_live_state(settings)
    _read_from(monkeypatch, {})
    with pytest.raises(ReplayOptionError, match=r"shop\.state holds no snapshot of events"):
        read_live_state(settings)


def test_a_damaged_or_unreadable_snapshot_fails_the_replay(tmp_path, monkeypatch):
    settings = _live(tmp_path)
    fp = fingerprint(scoring_config(settings))
    found = _state_topic({0: (10, fp, b"x" * 10)})
    found[0].add(b"events/0/1/000000", b"\x00" * 7 + b"\x01" + b"tampered")  # generation 1
    _read_from(monkeypatch, found)
    with pytest.raises(ReplayError, match=r"partition 0 in shop\.state: generation 1 fails"):
        read_live_state(settings)
    # Intact, but not a state this build can unpickle: found when its scorer is made (by
    # the process that replays the partition).
    _read_from(monkeypatch, _state_topic({0: (10, fp, b"not zlib")}))
    make = read_live_state(settings).scorers(settings)
    with pytest.raises(ReplayError, match=r"partition 0 in shop\.state cannot be read by this"):
        make(0)


def test_ranges_start_where_the_snapshots_stand():
    live = LiveState("s", {0: (40, b""), 2: (5, b""), 3: (9, b"")})
    # Partition 1 has no snapshot: from its earliest, as the live service's first start.
    # Partition 3 is not to be read (left out of --to's offsets): it stays empty.
    held = {0: (0, 100), 1: (7, 50), 2: (5, 60), 3: (2, 2)}
    assert ranges_from(live, held) == {0: (40, 100), 1: (7, 50), 2: (5, 60), 3: (2, 2)}
    with pytest.raises(ReplayOptionError, match=r"partition 0 is as of offset 40, after .* \(30\)"):
        ranges_from(live, {0: (0, 30)})


def test_a_snapshot_older_than_what_retention_left_is_refused():
    live = LiveState("s", {0: (40, b""), 1: (3, b"")})
    held = {0: (40, 100), 1: (0, 50), 2: (9, 9)}
    check_held(live, held, held)  # all still held
    cut = {0: (0, 100), 1: (5, 50)}
    with pytest.raises(ReplayOptionError, match=r"partition 1 is as of offset 3, but retention"):
        check_held(live, cut, {0: (40, 100), 1: (5, 50)})
    # Partition 1 is not read (left out of --to): its old snapshot does not matter.
    check_held(live, cut, {0: (40, 100), 1: (5, 5)})
