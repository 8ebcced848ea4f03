"""Runs ``vigil run`` as a real subprocess and reads its JSON log lines."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServiceRun:
    returncode: int
    logs: list[dict[str, Any]]
    stderr: str

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.logs if line.get("event") == name]

    @property
    def stopped(self) -> dict[str, Any]:
        (line,) = self.events("service.stopped")
        return line


# Small windows so short test streams raise alerts; the same settings serve live and replay.
TEST_ENV = {
    "VIGIL_WARMUP": "50",
    "VIGIL_WINDOW_SIZE": "50",
    "VIGIL_QUANTILE": "0.98",
    # A killed member's partitions move on after this (the broker's minimum).
    "VIGIL_SESSION_TIMEOUT_MS": "6000",
}


def service_command(bootstrap: str, topics: dict[str, str], group: str, *extra: str) -> list[str]:
    """``vigil run`` for ``topics`` (keys input, alerts, dlq) as a subprocess argv."""
    return [
        sys.executable, "-m", "stream.cli", "run",
        "--bootstrap", bootstrap,
        "--input-topic", topics["input"],
        "--alerts-topic", topics["alerts"],
        "--dlq-topic", topics["dlq"],
        "--group", group,
        *extra,
    ]  # fmt: skip


def run_service(
    bootstrap: str,
    topics: dict[str, str],
    group: str,
    *,
    extra_env: dict[str, str] | None = None,
    idle_s: float = 3.0,
    timeout_s: float = 240.0,
) -> ServiceRun:
    env = {**os.environ, **TEST_ENV, "VIGIL_METRICS_PORT": "0", **(extra_env or {})}
    proc = subprocess.run(
        service_command(bootstrap, topics, group, "--exit-when-idle", str(idle_s)),
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
    logs = []
    for raw in proc.stdout.splitlines():
        try:
            logs.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            continue
    return ServiceRun(proc.returncode, logs, proc.stderr.decode(errors="replace"))
