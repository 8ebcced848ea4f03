"""``vigil demo``: the whole loop on one machine, then what on-call sees.

Phase 1 (the first part of the traffic) runs through the scoring service and the pattern
stage; a simulated reviewer labels up to ``--max-labels`` alerts in the order raised; phase 2
(the rest) runs through the same groups, the service restoring its state from its
snapshots and holding back event alerts the labels say are below the precision target.
The summary scores phase 2 against the generator's ground truth (stream/demo_measure.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detectors.evaluation import evaluate
from detectors.oncall_eval import INCIDENT, PATTERN, current_alerts
from detectors.scoring import ENGINES
from stream import kafka_local
from stream.demo_logs import gate_segments, restore_figures
from stream.demo_measure import flagged_events, measure_phase, phase_alerts, read_alert_records
from stream.demo_report import DemoOutcome, event_examples, pattern_examples, summary
from stream.demo_review import Review, simulate_review
from stream.demo_stages import (
    DemoTopics,
    StageProcess,
    incident_stage,
    pattern_stage,
    run_service,
    service_settings,
)
from stream.demo_traffic import PhasedTraffic
from stream.review import produce_labels
from stream.service import RunSummary
from stream.topic_reader import end_offsets, read_topic
from stream.traffic.generator import TrafficConfig

STEPS = 6


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil demo", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bad-fraction", type=float, default=0.01)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--engine", default="hst", choices=ENGINES)
    parser.add_argument("--phase1-share", type=float, default=0.5, help="of the events")
    parser.add_argument("--max-labels", type=int, default=200, help="the reviewer's budget")
    parser.add_argument("--min-labels", type=int, default=30, help="per segment, to gate")
    parser.add_argument(
        "--unproven",
        choices=("budget", "hold"),
        default="hold",
        help="phase 2: event types whose labels do not prove the precision target raise no "
        "event alerts (hold, the default) or alert within the budget",
    )
    parser.add_argument("--quantile", type=float, default=0.995, help="the alert budget")
    parser.add_argument("--suspicious-quantile", type=float, default=0.98, help="the pattern bar")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--attack-rate", type=float, default=1e-4, help="per type and event")
    parser.add_argument("--no-attacks", action="store_true", help="attack rate 0")
    parser.add_argument("--workdir", type=Path, default=kafka_local.DEFAULT_WORKDIR)
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP"), help="use this broker"
    )
    return parser


def demo_cli(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    with kafka_local.broker_for(args.bootstrap, args.workdir, _say) as bootstrap:
        _say(f"      Kafka at {bootstrap}")
        print(summary(run_demo(args, bootstrap)))
        return 0


def _progress(step: int) -> Callable[[RunSummary], None]:
    last = [0]

    def report(s: RunSummary) -> None:
        if s.records - last[0] >= step:
            last[0] = s.records
            _say(
                f"      {s.records:,} records, {s.alerts:,} alerts ({s.held_by_labels:,} held"
                f" by labels), {s.dead_letters:,} dead letters ({s.records_per_s:,.0f}/s)"
            )

    return report


@dataclass(frozen=True)
class _Run:
    """What every phase shares."""

    bootstrap: str
    topics: DemoTopics
    traffic: PhasedTraffic
    stages: tuple[StageProcess, StageProcess]  # vigil patterns, vigil incidents
    overrides: Mapping[str, Any]


def _phase(run: _Run, phase: int, records: int, log: Path, labels: str | None) -> RunSummary:
    """Produce the phase's events, run the service over them, let the pattern stage catch up."""
    step = 1 if phase == 1 else 4
    _say(f"[{step}/{STEPS}] phase {phase}: producing {records:,} events...")
    run.traffic.produce(records)
    _say(f"[{step + 1}/{STEPS}] phase {phase}: the service, until caught up...")
    overrides = dict(run.overrides)
    if labels is None:  # phase 1 collects the labels: the budget decides everywhere
        overrides.pop("unproven_segments", None)
    settings = service_settings(run.bootstrap, run.topics, labels_topic=labels, overrides=overrides)
    summary_ = run_service(settings, log, _progress(max(records // 5, 1)))
    for stage in run.stages:  # in pipeline order: each one's input is complete
        _say(f"      vigil {stage.name} caught up {stage.wait_caught_up():.1f}s after")
    return summary_


def _review(run: _Run, max_labels: int) -> Review:
    _say(f"[3/{STEPS}] the reviewer labels up to {max_labels} alerts in the order raised...")
    records = read_alert_records(run.bootstrap, run.topics.alerts)
    review = simulate_review([r for _, r in records], run.traffic.attack_of, max_labels)
    produce_labels(run.bootstrap, run.topics.labels, review.labels)
    return review


def run_demo(args: argparse.Namespace, bootstrap: str) -> DemoOutcome:
    topics = DemoTopics(uuid.uuid4().hex[:8])
    kafka_local.create_topics(
        bootstrap,
        {
            topics.input: args.partitions,
            topics.alerts: 1,  # one partition: its order is the order alerts arrived in
            topics.dlq: 1,
            topics.observations: args.partitions,
            topics.patterns: 1,  # one partition: incidents group over all the patterns
            topics.labels: 1,
        },
    )
    config = TrafficConfig(
        events=args.events,
        seed=args.seed,
        bad_fraction=args.bad_fraction,
        attack_rate=0.0 if args.no_attacks else args.attack_rate,
    )
    args.workdir.mkdir(parents=True, exist_ok=True)
    logs = [args.workdir / f"demo-service-{n}.log" for n in (1, 2)]
    patterns_log = args.workdir / "demo-patterns.log"
    incidents_log = args.workdir / "demo-incidents.log"
    run = _Run(
        bootstrap,
        topics,
        PhasedTraffic(config, bootstrap, topics.input),
        (
            pattern_stage(
                bootstrap,
                topics,
                patterns_log,
                # The share the scorer flags: every alert is suspicious too.
                base_rate=1 - min(args.quantile, args.suspicious_quantile),
            ),
            incident_stage(bootstrap, topics, incidents_log),
        ),
        {
            "engine": args.engine,
            "quantile": args.quantile,
            "suspicious_quantile": args.suspicious_quantile,
            "warmup": args.warmup,
            "min_labels": args.min_labels,
            "unproven_segments": args.unproven,
        },
    )
    first = round(args.events * args.phase1_share)
    for stage in run.stages:
        stage.start()
    try:
        runs = [_phase(run, 1, first, logs[0], None)]
        boundaries = (
            end_offsets(bootstrap, topics.alerts)[0],
            end_offsets(bootstrap, topics.patterns)[0],
        )
        review = _review(run, args.max_labels)
        runs.append(_phase(run, 2, args.events - first, logs[1], topics.labels))
    finally:
        for stage in run.stages:
            stage.stop()
    outcome = _outcome(run, args, runs, boundaries, review)
    outcome.logs = [*logs, patterns_log, incidents_log]
    outcome.gate = gate_segments(logs[1])
    outcome.restore = restore_figures(logs[1])
    return outcome


def _outcome(
    run: _Run,
    args: argparse.Namespace,
    runs: list[RunSummary],
    boundaries: tuple[int, int],  # phase 2's first offsets on the alerts and pattern topics
    review: Review,
) -> DemoOutcome:
    _say(f"[6/{STEPS}] reading alerts, observations and dead letters back from Kafka...")
    traffic = run.traffic
    alert_records = read_alert_records(run.bootstrap, run.topics.alerts)
    event_alerts, incident_alerts = phase_alerts(alert_records, boundaries[0])
    pattern_records = [  # the pattern topic also carries stage 2's watermarks
        (offset, r)
        for offset, r in read_alert_records(run.bootstrap, run.topics.patterns)
        if r.get("kind") == PATTERN
    ]
    _, pattern_alerts = phase_alerts(pattern_records, boundaries[1])
    measure = measure_phase(
        traffic.phases[1],
        traffic.instances_starting_in(1),
        event_alerts,
        incident_alerts,
        flagged_events(run.bootstrap, run.topics.observations),
        pattern_alerts=pattern_alerts,
    )
    dead = read_topic(run.bootstrap, run.topics.dlq)
    all_event_alerts = [r for _, r in alert_records if r.get("kind", "event") == "event"]
    return DemoOutcome(
        engine=args.engine,
        events=sum(r.events for r in runs),
        records_per_s=[r.records_per_s for r in runs],
        dead_letters=len(dead),
        malformed=sum(traffic.malformed.values()),
        dead_letter_reasons=Counter(r.headers.get("vigil.dlq.reason", b"?").decode() for r in dead),
        phase_events=[len(p) for p in traffic.phases],
        instances_in_phase2=len(traffic.instances_starting_in(1)),
        review=review,
        max_labels=args.max_labels,
        measure=measure,
        whole_stream=evaluate(all_event_alerts, traffic.labels),
        event_alert_examples=event_examples(all_event_alerts, traffic.labels),
        pattern_alert_examples=pattern_examples(
            [a for a in current_alerts(r for _, r in alert_records) if a.kind == INCIDENT],
            traffic.attack_of,
        ),
    )
