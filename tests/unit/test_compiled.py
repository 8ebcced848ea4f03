"""The compiled modules (mypyc, setup.py, detectors/compiled.py) against their source.

The source is the reference: the compiled extractor and arrival tracker must give the same
features and arrivals, bit for bit, and the same state, pickle byte for pickle byte, and
each must restore the other's checkpoints; the compiled decoding fast path must accept
exactly the records the source accepts, as the same dicts. The source modules are loaded from their
``.py`` files next to the compiled ones, under their own names, for the length of a test.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import io
import pickle
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, Message

from detectors.arrival_tracker import ArrivalTracker
from detectors.compiled import COMPILED_MODULES, attributes, compiled_modules
from detectors.features import FEATURE_SPECS, FeatureExtractor
from detectors.features.extractor import event_time_s
from detectors.features.state import UserHistory, table_of
from schemas.event_structs import ENVELOPE_PATTERNS, EVENT_STRUCTS, PAYLOAD_PATTERNS
from schemas.validation import EventValidator
from stream.partition_state import PartitionState
from stream.traffic.config import TrafficConfig
from stream.traffic.generator import generate

ROOT = Path(__file__).resolve().parents[2]

needs_compiled = pytest.mark.skipif(
    not compiled_modules(), reason="installed without compiling (VIGIL_COMPILE=0)"
)


@contextmanager
def source_modules() -> Iterator[dict[str, ModuleType]]:
    """The compiled modules as Python, from their source files, while the block runs.

    They take the compiled ones' places in ``sys.modules``, so the source extractor
    imports the source state, and pickles made or read meanwhile name the source classes.
    """
    saved = {name: sys.modules[name] for name in COMPILED_MODULES}
    loaded: dict[str, ModuleType] = {}
    try:
        for name in COMPILED_MODULES:  # in import order: each finds those before it
            spec = importlib.util.spec_from_file_location(name, _source(name))
            assert spec is not None
            assert spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            loaded[name] = module
        yield loaded
    finally:
        sys.modules.update(saved)


def _source(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def _events(count: int, seed: int) -> list[dict[str, Any]]:
    """Generated marketplace traffic with its attacks, as the service decodes it."""
    validator = EventValidator()
    decoded = [validator.decode(r.value) for r in generate(TrafficConfig(events=count, seed=seed))]
    return [e for e in decoded if isinstance(e, dict)]


def test_compiled_modules_are_the_ones_built_from_the_current_source():
    built = [m for m in COMPILED_MODULES if list(_source(m).parent.glob(_source(m).stem + ".*.so"))]
    if not built:
        pytest.skip("installed without compiling (VIGIL_COMPILE=0)")
    assert built == list(COMPILED_MODULES)  # all or none
    assert compiled_modules() == built  # and those are what imports
    for name in COMPILED_MODULES:
        source = _source(name)
        (extension,) = source.parent.glob(source.stem + ".*.so")
        # An edit after the build would run the old code: `make setup` compiles again.
        assert extension.stat().st_mtime >= source.stat().st_mtime, (
            f"{extension.name} is older than {source.name}: run `make setup` to compile again"
        )


@needs_compiled
def test_the_source_modules_really_are_python():
    with source_modules() as modules:
        for module in modules.values():
            assert str(module.__file__).endswith(".py")
        assert modules["detectors.features.extractor"].DecayingCounts is (
            modules["detectors.features.state"].DecayingCounts
        )
        assert modules["detectors.arrival_tracker"].BoundedTable is (
            modules["detectors.features.state"].BoundedTable
        )
    assert compiled_modules() == list(COMPILED_MODULES)  # and the compiled ones are back


@needs_compiled
@pytest.mark.parametrize("max_keys", [50, 1_000_000])  # with and without evictions
def test_compiled_extractor_gives_the_features_of_the_source(max_keys):
    events = _events(6_000, seed=4)
    compiled = FeatureExtractor(max_keys)
    expected = [compiled.extract(event) for event in events]
    with source_modules() as modules:
        source = modules["detectors.features.extractor"].FeatureExtractor(max_keys)
        got = [source.extract(event) for event in events]
        source_pickle = pickle.dumps(source)
    assert got == expected  # names, order and float values (== is exact; no NaN here)
    # The whole state: the same tables, entries, LRU orders and values, in the same form.
    assert pickle.dumps(compiled) == source_pickle


@needs_compiled
def test_checkpoints_restore_across_compiled_and_source():
    events = _events(4_000, seed=8)
    head, tail = events[:3_000], events[3_000:]
    compiled = FeatureExtractor(200)
    for event in head:
        compiled.extract(event)
    compiled_blob = pickle.dumps(compiled)
    with source_modules() as modules:
        source = pickle.loads(compiled_blob)  # a compiled pod's checkpoint, read by Python
        assert type(source) is modules["detectors.features.extractor"].FeatureExtractor
        from_source = [source.extract(event) for event in tail]
        source_blob = pickle.dumps(source)
    restored = pickle.loads(source_blob)  # and back into the compiled classes
    assert type(restored) is FeatureExtractor
    assert [compiled.extract(event) for event in tail] == from_source
    assert _entries(restored) == _entries(compiled)


def _entries(extractor: Any) -> dict[str, list[tuple[Any, Any]]]:
    """Every table's entries in LRU order, sets as frozensets: a restored set may iterate
    in another order than one built member by member, and pickle writes that order. A
    user's entry (``UserHistories``) as its fields."""
    return {
        name: [(key, _comparable(value)) for key, value in table_of(holder)._data.items()]
        for name, holder in attributes(extractor).items()
    }


def _comparable(value: Any) -> Any:
    if type(value) is set:
        return frozenset(value)
    if isinstance(value, UserHistory):
        return tuple((name, _comparable(v)) for name, v in attributes(value).items())
    return value


@needs_compiled
def test_an_unknown_event_type_fails_alike():
    event = _events(10, seed=1)[0] | {"event_type": "account.deleted"}
    with pytest.raises(AttributeError, match="_account_deleted"):
        FeatureExtractor().extract(event)
    with source_modules() as modules, pytest.raises(AttributeError, match="_account_deleted"):
        modules["detectors.features.extractor"].FeatureExtractor().extract(event)


def test_doctests_of_the_source():
    """Run here, not by --doctest-modules, which collects the compiled module when built
    (conftest.py) and would find no docstrings in it."""
    with source_modules() as modules:
        results = [doctest.testmod(module) for module in modules.values()]
    assert sum(r.attempted for r in results) >= 4  # DecayingCounts, ArrivalTracker, ...
    assert sum(r.failed for r in results) == 0


@needs_compiled
@pytest.mark.parametrize("max_keys", [30, 1_000_000])  # with and without evictions
def test_compiled_arrival_tracker_gives_the_arrivals_of_the_source(max_keys):
    events = _events(6_000, seed=6)
    times = [event_time_s(event["occurred_at"]) for event in events]
    kinds = ("device", "ip24", "title")  # every branch, the default's and the optional one
    compiled = ArrivalTracker(kinds, max_keys=max_keys)
    expected = [compiled.arrivals_of(event, t) for event, t in zip(events, times, strict=True)]
    compiled_pickle = pickle.dumps(compiled)
    with source_modules() as modules:
        source = modules["detectors.arrival_tracker"].ArrivalTracker(kinds, max_keys=max_keys)
        got = [source.arrivals_of(event, t) for event, t in zip(events, times, strict=True)]
        source_pickle = pickle.dumps(source)
        restored_by_source = pickle.loads(compiled_pickle)
        assert type(restored_by_source) is modules["detectors.arrival_tracker"].ArrivalTracker
        again = restored_by_source.arrivals_of(events[0], times[-1] + 86_400.0)
    assert got == expected
    assert sum(map(len, expected)) > len(events) // 10  # the test saw arrivals, not only ()
    assert compiled_pickle == source_pickle
    assert compiled.arrivals_of(events[0], times[-1] + 86_400.0) == again


@needs_compiled
def test_compiled_feature_rows_are_those_of_the_source():
    events: list[Any] = _events(3_000, seed=9)
    # Events that fail: without a time, of an unknown type, without a context.
    events[10] = {k: v for k, v in events[10].items() if k != "occurred_at"}
    events[20] = events[20] | {"event_type": "account.deleted"}
    events[30] = {k: v for k, v in events[30].items() if k != "context"}
    row_of = _row_of_names

    def model_key(event_type: str, features: Any) -> str:
        return event_type + ("|new" if features["user_age_h"] < 1.0 else "")

    def run(extract_rows: Any, extractor: Any, tracker: Any) -> Any:
        batches = [
            extract_rows(extractor, tracker, events[start : start + 500], row_of, model_key)
            for start in range(0, len(events), 500)
        ]
        return [
            (
                {k: (m.raws, m.rows, m.indices) for k, m in b.by_model.items()},
                b.failures,
                b.arrivals,
            )
            for b in batches
        ]

    kinds = ("device", "ip24")
    expected = run(
        importlib.import_module("detectors.feature_rows").extract_rows,
        FeatureExtractor(),
        ArrivalTracker(kinds),
    )
    with source_modules() as modules:
        got = run(
            modules["detectors.feature_rows"].extract_rows,
            modules["detectors.features.extractor"].FeatureExtractor(),
            modules["detectors.arrival_tracker"].ArrivalTracker(kinds),
        )
    assert got == expected
    failures = {i: d for batch in expected for i, d in batch[1].items()}
    assert len(failures) == 3, failures
    assert any("|new" in key for batch in expected for key in batch[0])
    assert sum(len(a) > 0 for batch in expected for a in batch[2]) > 100


def _row_of_names(event_type: str) -> Any:
    names = tuple(spec.name for spec in FEATURE_SPECS[event_type])
    return lambda features: tuple(features[name] for name in names)


@needs_compiled
def test_compiled_ingest_is_the_source_ingest():
    values = [r.value for r in generate(TrafficConfig(events=3_000, seed=3, bad_fraction=0.05))]
    messages = [
        Message(topic="events", partition=i % 2, offset=i // 2, value=value)
        for i, value in enumerate(values)
    ]
    messages[100:100] = [  # consumer errors, and records read again after a seek
        Message(topic="events", partition=0, offset=50, error=KafkaError(KafkaError._TRANSPORT)),
        Message(
            topic="events", partition=1, offset=1500, error=KafkaError(KafkaError._PARTITION_EOF)
        ),
        *messages[90:100],
    ]
    # A value as text, as a consumer with a string deserializer gives it (Record.of too).
    text = values[2].decode()
    messages.append(Message(topic="events", partition=1, offset=1500, value=text))  # type: ignore[arg-type]
    validator = EventValidator()

    def run(ingest: Any) -> Any:
        states: dict[tuple[str, int], PartitionState[None]] = {}

        def state_of(topic: str, partition: int) -> PartitionState[None]:
            if (topic, partition) not in states:
                # Partition 1 re-processes its first 500 records silently (after a restore).
                states[topic, partition] = PartitionState(
                    topic, partition, None, replay_until=500 * partition
                )
            return states[topic, partition]

        errors: list[str] = []
        done = [
            ingest(
                messages[start : start + 700],
                state_of,
                validator.fast,
                validator.judge,
                lambda e: errors.append(e.name()),
            )
            for start in range(0, len(messages), 700)
        ]
        place = {id(msg): i for i, msg in enumerate(messages)}
        return (
            [
                (
                    b.processed,
                    b.advanced,
                    [(place[id(msg)], event) for msg, event in b.valid],
                    b.silent,
                    b.by_partition,
                    [(place[id(msg)], why, silent) for msg, why, silent in b.invalid],
                )
                for b in done
            ],
            errors,
            {k: (s.next_offset, s.since_snapshot) for k, s in states.items()},
        )

    expected = run(importlib.import_module("stream.ingest").ingest)
    with source_modules() as modules:
        got = run(modules["stream.ingest"].ingest)
    assert got == expected
    batches, errors, states = expected
    assert errors == ["_TRANSPORT", "_PARTITION_EOF"]
    assert sum(b[0] for b in batches) == len(values) + 1  # each record once, and the str one
    assert states[("events", 0)] == (1500, 1500)
    invalid = [entry for b in batches for entry in b[5]]
    assert len(invalid) > 50
    assert {silent for _, _, silent in invalid} == {True, False}
    assert sum(silent for b in batches for silent in b[3]) > 400


@needs_compiled
def test_compiled_range_filter_is_the_source_filter():
    ranges = {0: (10, 60), 1: (0, 25), 2: (5, 5)}
    messages = [
        Message(topic="events", partition=p, offset=o, value=b"{}")
        for o in range(70)
        for p in (0, 1)
        if o >= ranges[p][0]
    ]
    eof = KafkaError(KafkaError._PARTITION_EOF)
    messages[7:7] = [Message(topic="events", partition=2, offset=5, error=eof)]
    messages[30:30] = [
        Message(topic="events", partition=0, offset=3, error=KafkaError(KafkaError._TRANSPORT))
    ]
    messages.append(Message(topic="events", partition=1, offset=70, error=eof))
    gone = KafkaError(KafkaError._AUTO_OFFSET_RESET, "Offset out of range")
    messages[50:50] = [Message(topic="events", partition=1, offset=9, error=gone)]

    def run(filter_to_ranges: Any) -> Any:
        next_offsets = {p: start for p, (start, _) in ranges.items()}
        place = {id(msg): i for i, msg in enumerate(messages)}
        polls = [
            filter_to_ranges(messages[start : start + 40], ranges, next_offsets)
            for start in range(0, len(messages), 40)
        ]
        return (
            [([place[id(m)] for m in f.kept], f.ends_seen, f.completed, f.gone) for f in polls],
            next_offsets,
        )

    expected = run(importlib.import_module("stream.range_filter").filter_to_ranges)
    with source_modules() as modules:
        got = run(modules["stream.range_filter"].filter_to_ranges)
    assert got == expected
    polls, next_offsets = expected
    kept = [i for kept, _, _, _ in polls for i in kept]
    assert len(kept) == 50 + 25 + 1  # the two ranges, and the transport error
    assert [end for _, ends, _, _ in polls for end in ends] == [(2, 5), (1, 70)]
    assert sorted({p for _, _, completed, _ in polls for p in completed}) == [0, 1]
    assert [g for _, _, _, gone in polls for g in gone] == [(1, "Offset out of range")]
    assert next_offsets == {0: 70, 1: 70, 2: 5}


@needs_compiled
def test_compiled_fast_path_accepts_what_the_source_accepts():
    records = [r.value for r in generate(TrafficConfig(events=4_000, seed=5, bad_fraction=0.05))]
    # And valid events broken in their patterned strings, which only the patterns reject.
    validator = EventValidator()
    for raw in records[:400:4]:
        event = validator.decode(raw)
        if isinstance(event, dict):
            event["context"]["ip"] = "10.0.0.256"
            records.append(orjson.dumps(event))
            event["context"]["ip"] = "10.0.0.1\x0010.0.0.1"
            records.append(orjson.dumps(event))
    compiled = validator.fast
    assert compiled is not None
    expected = [compiled.accept(raw) for raw in records]
    with source_modules() as modules:
        fast_path = modules["schemas.fast_path"]
        source = fast_path.FastPath(
            {
                event_type: (
                    struct,
                    fast_path.PatternCheck(
                        ENVELOPE_PATTERNS,
                        PAYLOAD_PATTERNS.get(event_type, {}),
                    ),
                )
                for event_type, struct in EVENT_STRUCTS.items()
            },
            validator.max_bytes,
        )
        got = [source.accept(raw) for raw in records]
    assert got == expected
    accepted = sum(event is not None for event in expected)
    assert 3_000 < accepted < len(records) - 300  # both verdicts, many times


@pytest.mark.parametrize(
    ("old_module", "name", "now"),
    [
        ("detectors.arrivals", "ArrivalTracker", "detectors.arrival_tracker"),
        ("detectors.features.extractor", "FeatureSpec", "detectors.features.specs"),
    ],
)
def test_classes_moved_out_still_load_from_checkpoints_that_name_them(old_module, name, now):
    """Moved into modules of their own for compiling (or for not compiling); a pickle
    written before names them by their old module."""
    found = pickle.Unpickler(io.BytesIO()).find_class(old_module, name)
    assert found is getattr(importlib.import_module(now), name)
