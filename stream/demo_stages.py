"""The demo's running parts: the scoring service (in this process, one run per phase), the
pattern stage (``vigil patterns``) and the incident stage (``vigil incidents``), each in a
child process up for the whole demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from stream.logs import configure_logging
from stream.service import RunSummary, Service
from stream.settings import ServiceSettings, load_settings
from stream.topic_reader import committed_offsets, end_offsets


@dataclass(frozen=True)
class DemoTopics:
    """Topic and group names of one demo run."""

    run_id: str

    def topic(self, what: str) -> str:
        return f"vigil-demo-{what}-{self.run_id}"

    @property
    def input(self) -> str:
        return self.topic("events")

    @property
    def alerts(self) -> str:
        return self.topic("alerts")

    @property
    def dlq(self) -> str:
        return self.topic("dlq")

    @property
    def observations(self) -> str:
        return self.topic("observations")

    @property
    def labels(self) -> str:
        return self.topic("labels")

    @property
    def group(self) -> str:
        return f"vigil-demo-{self.run_id}"

    @property
    def patterns_group(self) -> str:
        return f"vigil-demo-patterns-{self.run_id}"

    @property
    def patterns(self) -> str:
        """Pattern records, from ``vigil patterns`` to ``vigil incidents`` (one partition)."""
        return self.topic("patterns")

    @property
    def incidents_group(self) -> str:
        return f"vigil-demo-incidents-{self.run_id}"


def service_settings(
    bootstrap: str,
    topics: DemoTopics,
    *,
    labels_topic: str | None,
    overrides: Mapping[str, Any],
) -> ServiceSettings:
    """The service of either phase: the same group (so phase 2 restores phase 1's state),
    observations on for the pattern stage, and the labels topic in phase 2."""
    return load_settings(
        {
            "bootstrap": bootstrap,
            "input_topic": topics.input,
            "alerts_topic": topics.alerts,
            "dlq_topic": topics.dlq,
            "observations_topic": topics.observations,
            "group": topics.group,
            "exit_when_idle": 3.0,
            "metrics_port": 0,
            "labels_topic": labels_topic,
            **overrides,
        },
        env={},
    )


def run_service(
    settings: ServiceSettings, log_path: Path, progress: Callable[[RunSummary], None]
) -> RunSummary:
    """One run of the service until it is caught up and idle; its JSON log to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    saved = structlog.get_config()
    try:
        with log_path.open("wb") as log_file:
            configure_logging("info", log_file)
            return Service(settings, on_batch=progress).run()
    finally:
        structlog.configure(**saved)  # not left writing to the closed file


class StageProcess:
    """A stage (``vigil patterns``, ``vigil incidents``) as a child process: always on, like
    in production, so that it keeps its state from phase 1 into phase 2."""

    def __init__(
        self,
        bootstrap: str,
        name: str,
        arguments: list[str],
        input_topic: str,
        group: str,
        log_path: Path,
    ) -> None:
        self.bootstrap = bootstrap
        self.name = name
        self.arguments = arguments
        self.input_topic = input_topic
        self.group = group
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "stream.cli", self.name, *self.arguments]
        prefix = f"VIGIL_{self.name.upper()}_"
        env = {k: v for k, v in os.environ.items() if not k.startswith(prefix)}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log_file:
            self._process = subprocess.Popen(command, stdout=log_file, stderr=log_file, env=env)

    def wait_caught_up(self, timeout_s: float = 180.0) -> float:
        """Until the stage has committed every record now on its input; the seconds
        waited. Its input is written in transactions, so each partition ends with a commit
        marker: caught up is a committed offset at the end less that one."""
        started = time.monotonic()
        while True:
            self._check_alive()
            ends = end_offsets(self.bootstrap, self.input_topic)
            committed = committed_offsets(self.bootstrap, self.group, self.input_topic)
            if all(high == 0 or committed.get(p, -1) >= high - 1 for p, high in ends.items()):
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"vigil {self.name} did not catch up in {timeout_s:.0f}s")
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM: the stage finishes its batch, commits and exits."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(
                f"vigil {self.name} exited with {self._process.returncode}; see {self.log_path}"
            )


def pattern_stage(
    bootstrap: str, topics: DemoTopics, log_path: Path, base_rate: float
) -> StageProcess:
    """``vigil patterns``, writing its pattern records to the pattern topic."""
    arguments = [
        "--bootstrap", bootstrap,
        "--observations-topic", topics.observations,
        "--alerts-topic", topics.alerts,
        "--pattern-topic", topics.patterns,
        "--dlq-topic", topics.topic("patterns-dlq"),
        "--group", topics.patterns_group,
        "--base-rate", str(base_rate),
    ]  # fmt: skip
    return StageProcess(
        bootstrap, "patterns", arguments, topics.observations, topics.patterns_group, log_path
    )


def incident_stage(bootstrap: str, topics: DemoTopics, log_path: Path) -> StageProcess:
    """``vigil incidents``, from the pattern topic to incident alerts on the alerts topic."""
    arguments = [
        "--bootstrap", bootstrap,
        "--pattern-topic", topics.patterns,
        "--alerts-topic", topics.alerts,
        "--dlq-topic", topics.topic("incidents-dlq"),
        "--group", topics.incidents_group,
    ]  # fmt: skip
    return StageProcess(
        bootstrap, "incidents", arguments, topics.patterns, topics.incidents_group, log_path
    )
