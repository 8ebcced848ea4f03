"""``vigil bench pipeline``: decode, validate and score generated traffic, per engine.

The service's own hot path without Kafka: the same validator, feature extractor and
scorer in batches as the consumer cuts them. Every engine runs on the same events in the
same process, and the table gives each one's rate as a ratio to river's Half-Space Trees.
``--schema-only`` validates without the msgspec fast path (fastjsonschema alone, as before
it existed), to measure what the fast path saves; verdicts are the same either way.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import orjson

from detectors.compiled import compiled_modules
from detectors.scoring import ENGINES, EventScorer, Scored, ScoringConfig
from schemas.validation import EventValidator, Invalid
from stream.traffic.generator import TrafficConfig, generate


def run_engine(
    engine: str, values: Sequence[bytes], batch_size: int, fast_validation: bool = True
) -> tuple[float, int]:
    """Seconds to decode and score ``values`` with ``engine``, and the alerts raised."""
    validator = EventValidator(fast=fast_validation)
    scorer = EventScorer(ScoringConfig(engine=engine))  # type: ignore[arg-type]
    # Compile or warm the engine first (numba), so the figure is the steady state.
    warm = [validator.decode(v) for v in values[:50]]
    EventScorer(ScoringConfig(engine=engine)).score_batch(  # type: ignore[arg-type]
        [e for e in warm if not isinstance(e, Invalid)]
    )
    alerts = 0
    started = time.perf_counter()
    for start in range(0, len(values), batch_size):
        events = []
        for raw in values[start : start + batch_size]:
            decoded = validator.decode(raw)
            if not isinstance(decoded, Invalid):
                events.append(decoded)
        alerts += sum(
            1 for r in scorer.score_batch(events) if isinstance(r, Scored) and r.is_anomaly
        )
    return time.perf_counter() - started, alerts


def bench_pipeline_cli(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="vigil bench pipeline", description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--schema-only",
        action="store_true",
        help="validate with fastjsonschema alone (no msgspec fast path)",
    )
    args = parser.parse_args(argv)
    validation = "fastjsonschema" if args.schema_only else "msgspec+fastjsonschema"
    config = TrafficConfig(events=args.events, seed=args.seed, bad_fraction=0.01)
    values = [record.value for record in generate(config)]
    results = {
        e: run_engine(e, values, args.batch_size, not args.schema_only)
        for e in args.engines.split(",")
    }
    baseline = results.get("river-hst", next(iter(results.values())))[0]
    if not args.json:
        print(
            f"pipeline: {len(values):,} generated records, batches of {args.batch_size},"
            f" validation {validation}"
        )
        print(f"compiled modules: {', '.join(compiled_modules()) or 'none (VIGIL_COMPILE=0)'}")
        print(f"{'engine':<10} {'events/s':>10} {'vs river-hst':>13} {'alerts':>7}")
    for engine, (seconds, alerts) in results.items():
        row = {
            "engine": engine,
            "events_per_s": round(len(values) / seconds),
            "ratio_to_river_hst": round(baseline / seconds, 2),
            "alerts": alerts,
            "records": len(values),
            "validation": validation,
        }
        if args.json:
            sys.stdout.buffer.write(orjson.dumps(row) + b"\n")
        else:
            print(
                f"{engine:<10} {row['events_per_s']:>10,} {row['ratio_to_river_hst']:>12}x"
                f" {alerts:>7}"
            )
    return 0
