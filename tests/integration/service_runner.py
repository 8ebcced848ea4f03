"""Runs ``vigil run`` as a real subprocess and reads its JSON log lines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
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


class ServiceProcess:
    """A ``vigil run`` left running: its log lines are collected as they come."""

    def __init__(
        self,
        bootstrap: str,
        topics: dict[str, str],
        group: str,
        *extra: str,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        env = {**os.environ, **TEST_ENV, "VIGIL_METRICS_PORT": "0", **(extra_env or {})}
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            service_command(bootstrap, topics, group, *extra),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            # A file, not a pipe: librdkafka logs there while the broker is away, and a
            # full pipe would stall the service.
            stderr=self._stderr,
        )
        self.logs: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            with self._changed:
                self.logs.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def events(self, name: str) -> list[dict[str, Any]]:
        with self._changed:
            return [line for line in self.logs if line.get("event") == name]

    def wait_for(self, name: str, count: int = 1, timeout_s: float = 120.0) -> None:
        """Until ``count`` log lines named ``name`` arrived; fails if the process ends first."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while sum(1 for line in self.logs if line.get("event") == name) < count:
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"service exited ({self.proc.returncode}) before {name}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {count}x {name} within {timeout_s}s")
                self._changed.wait(min(remaining, 1.0))

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._reader.join(10)

    def terminate(self, timeout_s: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout_s)
        self._reader.join(10)
        return code

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return (
            self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
        )

    def stderr_text(self) -> str:
        """What the process wrote to stderr so far (``stderr()`` reads ``proc.stderr``,
        which is None since stderr goes to a file)."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def log_tail(self, count: int = 40) -> str:
        """The last ``count`` log lines, one JSON object a line: for assertion messages."""
        with self._changed:
            lines = self.logs[-count:]
        return "\n".join(orjson.dumps(line).decode() for line in lines)
