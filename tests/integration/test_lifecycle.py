"""Health, readiness, metrics and a clean SIGTERM, against a real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import orjson
import pytest

from stream.kafka_local import create_topics
from stream.service import Service
from stream.settings import load_settings
from stream.topic_reader import committed_offsets, end_offsets
from stream.traffic.generator import TrafficConfig, generate
from stream.traffic.sinks import produce_to_kafka
from tests.integration.service_runner import ROOT, service_command

pytestmark = pytest.mark.integration


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait_for(predicate, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_health_readiness_and_metrics(kafka_bootstrap, unique_name):
    topics = {k: unique_name(k) for k in ("input", "alerts", "dlq")}
    create_topics(kafka_bootstrap, {topics["input"]: 2, topics["alerts"]: 1, topics["dlq"]: 1})
    records = list(generate(TrafficConfig(events=3_000, seed=3, bad_fraction=0.02)))
    produce_to_kafka(iter(records), kafka_bootstrap, topics["input"])
    settings = load_settings(
        {
            "bootstrap": kafka_bootstrap,
            "input_topic": topics["input"],
            "alerts_topic": topics["alerts"],
            "dlq_topic": topics["dlq"],
            "group": unique_name("group"),
            "metrics_port": 0,
            "metrics_host": "127.0.0.1",
            "warmup": 50,
        },
        env={},
    )
    service = Service(settings)
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        _wait_for(lambda: service.http_port is not None)
        port = service.http_port
        assert port is not None
        assert _get(port, "/healthz")[0] == 200
        _wait_for(lambda: _get(port, "/readyz")[0] == 200)
        _wait_for(lambda: service.summary.records == len(records))
        status, body = _get(port, "/metrics")
        assert status == 200
        malformed = sum(1 for r in records if r.malformed)
        dead = sum(
            float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith("vigil_dead_letters_total{")
        )
        assert dead == malformed
        assert "vigil_events_total{" in body
        assert "vigil_consumer_lag{" in body
        assert _get(port, "/nope")[0] == 404
    finally:
        service.stop()
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert _get_refused(port)


def _get_refused(port: int) -> bool:
    try:
        _get(port, "/healthz")
    except (urllib.error.URLError, ConnectionError):
        return True
    return False


def test_sigterm_drains_commits_and_exits_cleanly(kafka_bootstrap, unique_name, tmp_path):
    topics = {k: unique_name(k) for k in ("input", "alerts", "dlq")}
    create_topics(kafka_bootstrap, {topics["input"]: 1, topics["alerts"]: 1, topics["dlq"]: 1})
    records = list(generate(TrafficConfig(events=20_000, seed=4)))
    produce_to_kafka(iter(records), kafka_bootstrap, topics["input"])
    group = unique_name("group")
    # A file, not a pipe nobody reads until the end: librdkafka may log there.
    stderr_path = tmp_path / "stderr"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            service_command(
                kafka_bootstrap, topics, group, "--batch-size", "100", "--metrics-port", "0"
            ),
            cwd=ROOT,
            # faulthandler: a SIGABRT below dumps every thread's stack to stderr.
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"},
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    assert proc.stdout is not None
    lines = []
    signalled = None
    try:
        # SIGTERM the moment a batch.committed line arrives: the service is then often
        # still inside that line's write (the signal handler once deadlocked there).
        for raw in proc.stdout:
            line = orjson.loads(raw)
            lines.append(line)
            if line["event"] == "batch.committed":
                proc.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                break
        assert signalled is not None, "the service ended before its first batch"
        try:
            # vigil run ends itself 30 s after a stop at the latest (ShutdownWatchdog).
            rest, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            proc.communicate(timeout=30)
            pytest.fail("no exit within 60 s of SIGTERM; stacks:\n" + stderr_path.read_text())
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
    lines += [orjson.loads(raw) for raw in rest.splitlines()]
    assert proc.returncode == 0, stderr_path.read_text()[-5000:]
    stopped = next(line for line in lines if line["event"] == "service.stopped")
    assert stopped["clean"]
    assert took < 30.0
    committed = committed_offsets(kafka_bootstrap, group, topics["input"])
    # Whatever it processed before stopping is committed, and it stopped early.
    assert committed[0] == stopped["events"] + stopped["dead_letters"]
    assert 0 < committed[0] < end_offsets(kafka_bootstrap, topics["input"])[0]
