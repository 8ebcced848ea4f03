"""``vigil generate``: synthetic traffic to a Kafka topic or a JSON-lines file."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

from stream.traffic.config import ATTACK_TYPES, TrafficConfig
from stream.traffic.generator import generate
from stream.traffic.records import GeneratedRecord
from stream.traffic.sinks import produce_to_kafka, tee_labels, write_file
from stream.traffic.tally import TrafficTally

PROG = "vigil generate"
PROGRESS_STEPS = 10


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Generate synthetic marketplace events with injected attacks "
        f"({', '.join(ATTACK_TYPES)}) and, optionally, malformed records. Give either "
        "--bootstrap and --topic, or --output.",
    )
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers, e.g. 127.0.0.1:9092")
    parser.add_argument("--topic", help="topic to produce to")
    parser.add_argument("--output", type=Path, help="write JSON lines to this file instead")
    parser.add_argument("--events", type=int, required=True, help="records to generate")
    parser.add_argument("--seed", type=int, required=True, help="seed; same seed, same bytes")
    parser.add_argument(
        "--bad-fraction", type=float, default=0.0, help="share of malformed records (0..0.5)"
    )
    parser.add_argument(
        "--attack-rate",
        type=float,
        default=1e-4,
        help="instances of each attack type per record (default 1e-4)",
    )
    parser.add_argument(
        "--events-per-day", type=float, default=50_000.0, help="mean event rate in event time"
    )
    parser.add_argument("--labels-out", type=Path, help="write one label line per record here")
    return parser


def generate_cli(argv: list[str]) -> int:
    """Run ``vigil generate``; the exit status (2 for bad arguments, 1 for a Kafka failure)."""
    parser = _parser()
    args = parser.parse_args(argv)
    to_kafka = args.bootstrap is not None or args.topic is not None
    if to_kafka == (args.output is not None):
        parser.error("give either --bootstrap and --topic, or --output (exactly one)")
    if to_kafka and (args.bootstrap is None or args.topic is None):
        parser.error("--bootstrap and --topic go together")
    try:
        config = TrafficConfig(
            events=args.events,
            seed=args.seed,
            bad_fraction=args.bad_fraction,
            attack_rate=args.attack_rate,
            events_per_day=args.events_per_day,
        )
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2

    tally = TrafficTally()
    started = time.monotonic()
    destination = f"topic {args.topic}" if to_kafka else str(args.output)
    with ExitStack() as stack:
        records: Iterator[GeneratedRecord] = tally.counted(generate(config))
        if args.labels_out is not None:
            records = tee_labels(records, stack.enter_context(args.labels_out.open("wb")))
        records = _with_progress(records, config.events, _say)
        try:
            if to_kafka:
                produce_to_kafka(records, args.bootstrap, args.topic)
            else:
                write_file(records, args.output)
        except RuntimeError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return 1
    elapsed = time.monotonic() - started
    rate = tally.records / elapsed if elapsed > 0 else 0.0
    _say(f"{PROG}: {tally.summary()} -> {destination} in {elapsed:.1f}s ({rate:,.0f} records/s)")
    return 0


def _with_progress(
    records: Iterator[GeneratedRecord], total: int, say: Callable[[str], None]
) -> Iterator[GeneratedRecord]:
    step = max(total // PROGRESS_STEPS, 1)
    for count, record in enumerate(records, start=1):
        yield record
        if count % step == 0:
            say(f"{PROG}: {count:,}/{total:,} records ({100 * count // total}%)")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
