"""``vigil bench replay``: replay's records/s against the live service's, same topic, same run.

Generates a topic (``vigil generate``'s traffic: attacks and malformed records) on a real
broker (``--bootstrap``, else the one ``vigil kafka start`` left running, else one started
for the run), then, ``--repeat`` times each:

- **live**: the service as deployed by default (exactly-once transactions, observations
  on, event-time alignment on), a fresh consumer group, from the first record to the last
  commit;
- **replay**: ``vigil replay``'s own code path over the whole topic, in one process (one
  core for the pipeline; librdkafka's fetching runs on threads of its own) and with
  ``--workers`` processes.

Every mode's rate is records over the span from its first batch to its last commit, so
start-up (imports, connecting) is left out of all alike. The table gives each mode's best
run and its ratio to live's best, and checks that every replay raised exactly the live
run's alert ids.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from detectors.compiled import compiled_modules
from stream import kafka_local
from stream.logs import configure_logging
from stream.replay import (
    Progress,
    ReplayRun,
    ReplaySink,
    replay_settings,
    run_range,
    usable_cores,
)
from stream.replay_workers import replay_in_workers
from stream.service import Service
from stream.settings import load_settings
from stream.topic_reader import BoundedSource, plan_ranges, read_topic
from stream.traffic.generator import TrafficConfig, generate
from stream.traffic.sinks import produce_to_kafka

PROG = "vigil bench replay"
# The target for a replay on one core (README, "Replay").
TARGET_RECORDS_PER_S = 100_000


@dataclass(frozen=True)
class Measured:
    mode: str
    records_per_s: list[float]
    alerts: int
    same_alerts_as_live: bool | None

    @property
    def best(self) -> float:
        return max(self.records_per_s)


def _live(bootstrap: str, topic: str) -> tuple[float, set[str]]:
    """The service over ``topic`` from its start: records/s and alert ids. Settings come
    from the environment (``VIGIL_*``, ``VIGIL_CONFIG``) as the replay's do, so that both
    score alike; by default, the deployed defaults."""
    run_id = uuid.uuid4().hex[:8]
    alerts, dlq = f"bench-live-alerts-{run_id}", f"bench-live-dlq-{run_id}"
    kafka_local.create_topics(bootstrap, {alerts: 1, dlq: 1})
    settings = load_settings(
        {
            "bootstrap": bootstrap,
            "input_topic": topic,
            "alerts_topic": alerts,
            "dlq_topic": dlq,
            "group": f"bench-live-{run_id}",
            "exit_when_idle": 2.0,
        }
    ).model_copy(update={"metrics_port": None})
    summary = Service(settings).run()
    ids = {orjson.loads(r.value or b"{}")["alert_id"] for r in read_topic(bootstrap, alerts)}
    return summary.records_per_s, ids


def _replay(bootstrap: str, topic: str, workers: int) -> tuple[float, set[str]]:
    settings = replay_settings(bootstrap, topic, None, None)
    sink = ReplaySink(settings.alerts_topic)
    if workers == 1:
        summary = run_range(settings, BoundedSource(bootstrap, topic), sink, None)
        run = ReplayRun.of(summary)
    else:
        ranges = plan_ranges(bootstrap, topic, None, None)
        run = replay_in_workers(
            settings,
            bootstrap,
            topic,
            ranges,
            workers,
            sink,
            forward=False,
            scores_path=None,
            progress=Progress(None),  # the bench prints its table only
        )
    return run.records_per_s, {a["alert_id"] for a in sink.alerts}


def _table(events: int, partitions: int, repeat: int, rows: list[Measured]) -> str:
    live = rows[0].best
    lines = [
        f"{PROG}: {events:,} generated records on {partitions} partitions; best of {repeat} "
        "runs, first batch to last commit",
        f"compiled modules: {', '.join(compiled_modules()) or 'none (VIGIL_COMPILE=0)'}",
        "",
        f"{'mode':<32} {'records/s':>10} {'vs live':>8} {'alerts':>7}  same alerts as live",
    ]
    for row in rows:
        same = "-" if row.same_alerts_as_live is None else str(row.same_alerts_as_live).lower()
        lines.append(
            f"{row.mode:<32} {row.best:>10,.0f} {row.best / live:>7.2f}x {row.alerts:>7,}  {same}"
        )
    one = next(r for r in rows if r.mode.startswith("replay, 1 "))
    verdict = "met" if one.best >= TARGET_RECORDS_PER_S else "not met"
    lines += [
        "",
        f"target: replay {TARGET_RECORDS_PER_S:,} records/s on one core: {verdict} "
        f"({one.best:,.0f}, median {statistics.median(one.records_per_s):,.0f})",
    ]
    return "\n".join(lines)


def bench_replay_cli(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument("--bootstrap", help="a broker to use (default: a local one)")
    parser.add_argument("--workdir", type=Path, default=kafka_local.DEFAULT_WORKDIR)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument(
        "--workers",
        type=int,
        help="processes of the parallel replay (default: as `vigil replay --workers auto`, "
        "the usable cores, at most the partitions)",
    )
    parser.add_argument("--repeat", type=int, default=2, help="runs of each mode")
    parser.add_argument("--json", action="store_true", help="one JSON object per mode")
    args = parser.parse_args(argv)
    if args.workers is None:
        args.workers = min(usable_cores(), args.partitions)
    if args.events < 1 or args.partitions < 1 or args.workers < 1 or args.repeat < 1:
        parser.error("--events, --partitions, --workers and --repeat must be >= 1")
    configure_logging("warning", sys.stderr.buffer)

    def say(text: str) -> None:
        print(f"{PROG}: {text}", file=sys.stderr, flush=True)

    with kafka_local.broker_for(args.bootstrap, args.workdir, say) as bootstrap:
        topic = f"bench-replay-{args.events}-{args.seed}-{uuid.uuid4().hex[:8]}"
        kafka_local.create_topics(bootstrap, {topic: args.partitions})
        config = TrafficConfig(events=args.events, seed=args.seed, bad_fraction=0.01)
        produce_to_kafka(generate(config), bootstrap, topic)
        say(f"{args.events:,} records in {topic}")
        modes = ["live", "replay-1"] + ([f"replay-{args.workers}"] if args.workers > 1 else [])
        rates: dict[str, list[float]] = {mode: [] for mode in modes}
        alerts: dict[str, set[str]] = {}
        same: dict[str, bool] = {}
        for run in range(args.repeat):
            for mode in modes:  # interleaved, so that a noisy spell hits every mode
                if mode == "live":
                    rate, ids = _live(bootstrap, topic)
                else:
                    rate, ids = _replay(bootstrap, topic, int(mode.split("-")[1]))
                rates[mode].append(rate)
                say(f"run {run + 1}/{args.repeat}: {mode} {rate:,.0f} records/s")
                if mode != "live":  # against the live run just before it
                    same[mode] = same.get(mode, True) and ids == alerts["live"]
                alerts[mode] = ids
    rows = [
        Measured(
            "live (exactly-once, observations)" if mode == "live" else _replay_name(mode),
            rates[mode],
            len(alerts[mode]),
            None if mode == "live" else same[mode],
        )
        for mode in modes
    ]
    if args.json:
        for row in rows:
            print(json.dumps({**asdict(row), "best": row.best, "vs_live": row.best / rows[0].best}))
    else:
        print(_table(args.events, args.partitions, args.repeat, rows))
    return 0 if all(r.same_alerts_as_live is not False for r in rows) else 1


def _replay_name(mode: str) -> str:
    workers = int(mode.split("-")[1])
    return f"replay, {workers} worker{'s' if workers > 1 else ''}"
