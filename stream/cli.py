"""The ``vigil`` command line: kafka, generate, run, demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from stream.settings import ConfigError, load_settings

_RUN_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("bootstrap", str, "Kafka bootstrap servers, e.g. 127.0.0.1:9092"),
    ("input_topic", str, "topic of marketplace events"),
    ("alerts_topic", str, "topic the alerts go to"),
    ("dlq_topic", str, "dead-letter topic for records that cannot be processed"),
    ("group", str, "consumer group id"),
    ("exit_when_idle", float, "exit after this many seconds without input"),
    ("batch_size", int, "records per poll"),
    ("metrics_port", int, "port of /metrics, /healthz, /readyz (0: any free port)"),
    ("log_level", str, "debug, info, warning or error"),
    ("quantile", float, "alert budget: the score quantile above which an event alerts"),
    ("suspicious_quantile", float, "pattern bar: events above it are anomalous to the patterns"),
    ("warmup", int, "events per event type scored before any alert can fire"),
    ("seed", int, "seed of the detectors"),
    ("engine", str, "detector engine: hst (default), river-hst, iforest or ensemble"),
    ("guarantee", str, "exactly-once (default: Kafka transactions) or at-least-once"),
    ("state_topic", str, "compacted topic of state snapshots (default: <group>.state)"),
    ("checkpoint_every", int, "records per partition between state snapshots"),
    ("group_instance_id", str, "static group membership id (stable across restarts)"),
    ("labels_topic", str, "reviewers' labels: hold event alerts below the precision target"),
    ("target_precision", float, "precision the labels' thresholds aim at (default 0.9)"),
    ("unproven_segments", str, "event types with too few labels: budget (default) or hold"),
    ("pattern_alerts_topic", str, "pattern alerts: events of open patterns are not learned"),
)


def _run(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="vigil run",
        description="Run the detector service. Every flag can also be set as VIGIL_<NAME> "
        "in the environment or in a TOML file given by --config (or VIGIL_CONFIG).",
    )
    parser.add_argument("--config", type=Path, help="TOML config file")
    for name, kind, help_text in _RUN_FLAGS:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=help_text)
    args = parser.parse_args(argv)
    cli = {name: getattr(args, name) for name, _, _ in _RUN_FLAGS}
    try:
        settings = load_settings(cli, config_file=args.config)
    except ConfigError as exc:
        print(f"vigil run: {exc}", file=sys.stderr)
        return 2

    from stream.faults import FaultInjector
    from stream.logs import configure_logging
    from stream.service import SHUTDOWN_EXIT_GRACE_S, Service, ShutdownWatchdog

    configure_logging(settings.log_level)
    service = Service(settings, faults=FaultInjector.from_env())
    service.install_signal_handlers()
    # A stop ends the process within shutdown_timeout_s + SHUTDOWN_EXIT_GRACE_S, whatever
    # hangs: a supervisor's kill -9 after its grace period would say less in the logs.
    ShutdownWatchdog(service, settings.shutdown_timeout_s + SHUTDOWN_EXIT_GRACE_S).start()
    summary = service.run()
    # Non-zero when the shutdown gave something up (logged as service.shutdown_incomplete).
    return 0 if summary.clean else 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "kafka": "start, stop or check the local single-node Kafka",
        "generate": "generate synthetic marketplace traffic with injected attacks",
        "run": "run the detector service",
        "demo": "local Kafka, traffic, the service, and a summary of what it found",
        "replay": "a bounded range of a topic through the same pipeline, to a file or topic",
        "review": "list open alerts, record a verdict, or simulate a reviewer",
        "patterns": "pattern alerts from the observations topic (the keyed second stage)",
        "incidents": "incident alerts: the patterns of one attack grouped (the third stage)",
        "tune": "precision-targeted thresholds from a replay's scores and labels",
        "bench": "benchmarks: detector speed and quality, pipeline throughput",
    }
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in commands:
        print("usage: vigil {" + ",".join(commands) + "} ...\n", file=sys.stderr)
        for name, text in commands.items():
            print(f"  {name:<10} {text}", file=sys.stderr)
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    command, rest = argv[0], argv[1:]
    if command == "kafka":
        from stream.kafka_local import kafka_cli

        return int(kafka_cli(rest))
    if command == "generate":
        from stream.traffic.cli import generate_cli

        return int(generate_cli(rest))
    if command == "replay":
        from stream.replay import replay_cli

        return replay_cli(rest)
    if command == "review":
        from stream.review import review_cli

        return review_cli(rest)
    if command == "tune":
        from stream.tune import tune_cli

        return tune_cli(rest)
    if command == "patterns":
        from stream.patterns_stage import patterns_cli

        return patterns_cli(rest)
    if command == "incidents":
        from stream.incidents_stage import incidents_cli

        return incidents_cli(rest)
    if command == "bench" and rest[:1] == ["state"]:
        from stream.bench_state import bench_state_cli

        return bench_state_cli(rest[1:])
    if command == "bench":
        from stream.bench import bench_cli

        return bench_cli(rest)
    if command == "demo":
        from stream.demo import demo_cli

        return demo_cli(rest)
    return _run(rest)


if __name__ == "__main__":
    raise SystemExit(main())
