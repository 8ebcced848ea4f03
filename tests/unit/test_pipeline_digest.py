"""Pins the per-event pipeline's results bit for bit, so speed work cannot change them.

Generated traffic (with attacks and malformed records) goes through the validator, the
scorer (in uneven batches, some events kept out of learning) and the alert builder; a
digest covers every decode verdict, feature value, score, threshold, anomaly flag,
explanation and alert document. Floats enter the digest as ``float.hex``, so a change in
the last bit shows.

The expected digests were produced by running ``_digest`` at commit 8bdeb82 (before the
hot-path work on validation, features, scoring, thresholds and explanations), i.e. by the
code these tests now guard:

    .venv/bin/python -c "from tests.unit.test_pipeline_digest import _digest as d; \
print(d('hst', 20_000, 1_000_000))"

and likewise for each parameter row below. A mismatch means results changed: find out
why before touching the expected value. Re-pinned once since, deliberately, when events
above the suspicious quantile (for the pattern stage) got their reasons too: with the
digest counting reasons of alerts only, the new code still gave the old values. And again
when ``new_device``/``new_country`` became true for the hour after a device or country is
first seen on an account, not only at that first event (a deliberate feature change). And
the tiny-tables row once more when the six per-user tables became one entry per user
(``UserHistories``): an evicted user is now forgotten as a whole, where the tables of new
devices and countries used to outlive the others' evictions. On that row's traffic only
``new_device`` (96 events) and ``new_country`` (21) changed, every other feature of every
event stayed bit for bit; the rows without evictions kept their digests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import orjson
import pytest

from detectors.scoring import EventScorer, Scored, ScoringConfig
from schemas.validation import EventValidator, Invalid
from stream.alerts import SourceCoordinates, event_alert
from stream.traffic.generator import TrafficConfig, generate

# Batch sizes cycle through these, so chunk and window boundaries fall everywhere.
_BATCHES = (500, 1, 37, 250, 999, 3)


def _hexes(values: Iterable[float]) -> str:
    return ",".join(float(v).hex() for v in values)


def _digest(engine: str, events: int, max_keys: int, warmup: int = 300) -> str:
    config = TrafficConfig(events=events, seed=11, bad_fraction=0.01, attack_rate=5e-4)
    values = [record.value for record in generate(config)]
    validator = EventValidator()
    scorer = EventScorer(
        ScoringConfig(engine=engine, max_keys=max_keys, warmup=warmup)  # type: ignore[arg-type]
    )
    h = hashlib.sha256()
    start, b = 0, 0
    while start < len(values):
        size = _BATCHES[b % len(_BATCHES)]
        b += 1
        chunk = values[start : start + size]
        events_in = []
        for offset, raw in enumerate(chunk, start):
            decoded = validator.decode(raw)
            if isinstance(decoded, Invalid):
                h.update(f"I|{offset}|{decoded.reason}|{decoded.detail}\n".encode())
            else:
                events_in.append((offset, decoded))
        # Every 13th event is kept out of learning, as the learning guard would.
        exclude = [offset % 13 == 0 for offset, _ in events_in]
        results = scorer.score_batch([e for _, e in events_in], exclude)
        for (offset, event), result in zip(events_in, results, strict=True):
            if not isinstance(result, Scored):
                h.update(f"U|{offset}|{result.detail}\n".encode())
                continue
            reasons = ";".join(
                f"{r.feature}:{r.value.hex()}:{r.baseline.hex()}:{r.direction}:{r.z.hex()}"
                for r in result.reasons
            )
            h.update(
                f"S|{offset}|{result.event_type}|{result.detector}|{result.score.hex()}"
                f"|{result.threshold.hex()}|{result.is_anomaly}|{result.is_suspicious}"
                f"|{','.join(result.features)}|{_hexes(result.features.values())}"
                f"|{reasons}\n".encode()
            )
            if result.is_anomaly:
                alert = event_alert(event, result, SourceCoordinates("t", 0, offset))
                h.update(orjson.dumps(alert, option=orjson.OPT_SORT_KEYS) + b"\n")
        start += size
    return h.hexdigest()


@pytest.mark.parametrize(
    ("engine", "events", "max_keys", "expected"),
    [
        # The default engine on 20k events, and with tiny tables (evictions everywhere).
        (
            "hst",
            20_000,
            1_000_000,
            "e188995b7d3dfc2eae5ad94c338ff6c5cba2b0b5f4cde33d012bd0657ca946c3",
        ),
        ("hst", 6_000, 50, "a02975424dcec15f2a220e23cfbdb529a2fd4c68ec8192675048346310ee36c4"),
        # Other explanation paths: the forest's isolation splits; river's trees (z-scores).
        (
            "iforest",
            4_000,
            1_000_000,
            "9297c3d1bc2433edb8a0201dd5d14615f3c553203264cf3df6d5b6472e4ef4d1",
        ),
        (
            "river-hst",
            4_000,
            1_000_000,
            "d5a0a771661d2f86f2fdbc74fa1c87c01044da5b5b18e4609b12ed3faab7d011",
        ),
    ],
)
def test_pipeline_results_are_pinned(engine: str, events: int, max_keys: int, expected: str):
    assert _digest(engine, events, max_keys) == expected
