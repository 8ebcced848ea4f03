"""``vigil demo``: the whole pipeline on one machine, then a summary against the labels."""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from detectors.evaluation import Label, evaluate, format_evaluation
from detectors.scoring import ENGINES
from stream import kafka_local
from stream.logs import configure_logging
from stream.service import RunSummary, Service
from stream.settings import load_settings
from stream.topic_reader import read_topic
from stream.traffic.generator import GeneratedRecord, TrafficConfig, generate
from stream.traffic.sinks import produce_to_kafka


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def demo_cli(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="vigil demo", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bad-fraction", type=float, default=0.01)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--engine", default="hst", choices=ENGINES)
    parser.add_argument("--workdir", type=Path, default=kafka_local.DEFAULT_WORKDIR)
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP"), help="use this broker"
    )
    args = parser.parse_args(argv)

    broker: kafka_local.LocalKafka | None = None
    bootstrap = args.bootstrap
    running = kafka_local.status(args.workdir) if bootstrap is None else None
    if running is not None:
        bootstrap = running.bootstrap  # started by `vigil kafka start`: use it, leave it up
    if bootstrap is None:
        _say("[1/5] starting a local Kafka (first run downloads the jars with Maven)...")
        kafka_local.ensure_jars(args.workdir)
        broker = kafka_local.start(args.workdir, progress=sys.stderr)
        bootstrap = broker.bootstrap
    _say(f"      Kafka at {bootstrap}")
    try:
        return _demo(args, bootstrap)
    finally:
        if broker is not None:
            _say("[5/5] stopping Kafka")
            kafka_local.stop_handle(broker)


def _examples(alerts: list[dict[str, Any]], labels: list[Label]) -> list[dict[str, Any]]:
    """One caught alert per attack type, to show what on-call would read."""
    attack_of = {label.event_id: label.attack for label in labels if label.attack}
    shown: dict[str, dict[str, Any]] = {}
    for alert in alerts:
        attack = attack_of.get(alert["event_ids"][0])
        if attack is not None and attack not in shown and alert["explanation"]:
            shown[attack] = alert
    return [shown[k] for k in sorted(shown)]


def _demo(args: argparse.Namespace, bootstrap: str) -> int:
    run_id = uuid.uuid4().hex[:8]
    topics = {
        "input": f"vigil-demo-events-{run_id}",
        "alerts": f"vigil-demo-alerts-{run_id}",
        "dlq": f"vigil-demo-dlq-{run_id}",
    }
    kafka_local.create_topics(
        bootstrap, {topics["input"]: args.partitions, topics["alerts"]: 1, topics["dlq"]: 1}
    )

    _say(f"[2/5] producing {args.events:,} events (seed {args.seed}, attacks injected)...")
    config = TrafficConfig(events=args.events, seed=args.seed, bad_fraction=args.bad_fraction)
    labels: list[Label] = []
    malformed: Counter[str] = Counter()

    def labelled() -> Iterator[GeneratedRecord]:
        for record in generate(config):
            labels.append(Label(record.event_id, record.attack, record.attack_id))
            if record.malformed is not None:
                malformed[record.malformed] += 1
            yield record

    step = max(args.events // 10, 1)
    started = time.monotonic()
    produce_to_kafka(
        labelled(),
        bootstrap,
        topics["input"],
        progress=lambda n: _say(f"      produced {n:,}") if n % step == 0 else None,
    )
    _say(f"      done in {time.monotonic() - started:.1f}s")

    _say("[3/5] running the detector service until it is caught up...")
    log_path = args.workdir / "demo-service.log"
    args.workdir.mkdir(parents=True, exist_ok=True)
    settings = load_settings(
        {
            "bootstrap": bootstrap,
            "input_topic": topics["input"],
            "alerts_topic": topics["alerts"],
            "dlq_topic": topics["dlq"],
            "group": f"vigil-demo-{run_id}",
            "exit_when_idle": 3.0,
            "metrics_port": 0,
            "engine": args.engine,
        },
        env={},
    )
    last_report = [0]

    def progress(summary: RunSummary) -> None:
        if summary.records - last_report[0] >= step:
            last_report[0] = summary.records
            rate = summary.records_per_s
            _say(
                f"      {summary.records:,} records, {summary.alerts:,} alerts,"
                f" {summary.dead_letters:,} dead letters ({rate:,.0f} records/s)"
            )

    with log_path.open("wb") as log_file:
        configure_logging("info", log_file)
        summary = Service(settings, on_batch=progress).run()

    _say("[4/5] reading the alerts and dead letters back from Kafka...")
    alerts = [orjson.loads(r.value or b"") for r in read_topic(bootstrap, topics["alerts"])]
    dead = read_topic(bootstrap, topics["dlq"])
    reasons = Counter(r.headers.get("vigil.dlq.reason", b"?").decode() for r in dead)
    result = evaluate(alerts, labels)
    rate = summary.records_per_s

    print()
    print("Vigil demo summary")
    print("==================")
    print(f"events consumed   {summary.events:,} (engine {args.engine})")
    print(f"records/s         {rate:,.0f} end to end (decode, validate, score, alert, commit)")
    print(
        f"dead letters      {len(dead):,} (generated malformed: {sum(malformed.values()):,};"
        f" reasons: {', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))})"
    )
    print(format_evaluation(result))
    for alert in _examples(alerts, labels):
        why = ", ".join(
            f"{r['feature']} {r['direction']} ({r['value']:.3g} vs usual {r['baseline']:.3g})"
            for r in alert["explanation"]
        )
        print(
            f"example: {alert['event_type']} by {alert['entity']['type']} {alert['entity']['id']}"
            f" score {alert['score']:.3f} > {alert['threshold']:.3f}: {why}"
        )
    print(f"service log       {log_path}")
    return 0
