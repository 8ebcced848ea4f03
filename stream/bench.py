"""``vigil bench {speed,quality,pipeline,replay}``: benchmarks that print figures and ratios
against a baseline measured in the same run."""

from __future__ import annotations

import sys
from collections.abc import Sequence

_COMMANDS = {
    "speed": "our Half-Space Trees against river's, same stream and settings",
    "quality": "ROC AUC, average precision and events/s of each detector on a data set",
    "pipeline": "decode, validate and score generated traffic with each engine",
    "replay": "replay's records/s against the live service's on a real broker",
}


def bench_cli(argv: Sequence[str]) -> int:
    if not argv or argv[0] not in _COMMANDS:
        print("usage: vigil bench {" + ",".join(_COMMANDS) + "} ...\n", file=sys.stderr)
        for name, text in _COMMANDS.items():
            print(f"  {name:<10} {text}", file=sys.stderr)
        return 2
    command, rest = argv[0], list(argv[1:])
    if command == "speed":
        from stream.bench_speed import bench_speed_cli

        return int(bench_speed_cli(rest))
    if command == "quality":
        from stream.bench_quality import bench_quality_cli

        return int(bench_quality_cli(rest))
    if command == "replay":
        from stream.bench_replay import bench_replay_cli

        return bench_replay_cli(rest)
    from stream.bench_pipeline import bench_pipeline_cli

    return bench_pipeline_cli(rest)
