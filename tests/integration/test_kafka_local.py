"""A real local Kafka broker: start, produce/consume, stop; and no JVM left behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from stream import kafka_local
from tests.integration.conftest import PROJECT_ROOT

pytestmark = pytest.mark.integration

needs_java_and_maven = pytest.mark.skipif(
    shutil.which("java") is None or shutil.which("mvn") is None,
    reason="the local broker needs java and mvn",
)


def _roundtrip(bootstrap: str, topic: str, group: str) -> None:
    kafka_local.create_topics(bootstrap, {topic: 2})
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, value=b"hello", key=b"k1")
    assert producer.flush(30) == 0

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"}
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            assert message.value() == b"hello"
            assert message.key() == b"k1"
            return
        pytest.fail("no message consumed within 60s")
    finally:
        consumer.close()


def test_produce_and_consume(kafka_bootstrap: str, unique_name: Callable[..., str]) -> None:
    _roundtrip(kafka_bootstrap, unique_name("topic"), unique_name("group"))


def test_create_topics_partitions_and_exist_ok(
    kafka_bootstrap: str, unique_name: Callable[..., str]
) -> None:
    first, second = unique_name("a"), unique_name("b")
    kafka_local.create_topics(kafka_bootstrap, {first: 3, second: 1})
    topics = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
    assert len(topics[first].partitions) == 3
    assert len(topics[second].partitions) == 1
    kafka_local.create_topics(kafka_bootstrap, {first: 3}, exist_ok=True)
    with pytest.raises(kafka_local.KafkaLocalError, match="already exists"):
        kafka_local.create_topics(kafka_bootstrap, {first: 3})


def _shared_libs_workdir(tmp_path: Path) -> Path:
    """A fresh workdir whose kafka/libs is the project's (no second Maven copy)."""
    libs = kafka_local.ensure_jars(PROJECT_ROOT / kafka_local.DEFAULT_WORKDIR)
    workdir = tmp_path / "work"
    (workdir / "kafka").mkdir(parents=True)
    (workdir / "kafka" / "libs").symlink_to(libs, target_is_directory=True)
    return workdir


def _gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().rpartition(")")[2].split()[0] == "Z":
            return True
        time.sleep(0.1)
    return False


@needs_java_and_maven
def test_start_status_stop_in_process(tmp_path: Path, unique_name: Callable[..., str]) -> None:
    workdir = _shared_libs_workdir(tmp_path)
    broker = kafka_local.start(workdir, heap_mb=384)
    try:
        assert broker.bootstrap.startswith("127.0.0.1:")
        assert os.getpgid(broker.pid) == broker.pid  # its own process group
        assert broker.run_dir.parent == (workdir / "kafka").resolve()
        assert (broker.run_dir / "data" / "meta.properties").is_file()
        assert "Kafka Server started" in broker.log_file.read_text()
        assert kafka_local.status(workdir) == broker
        assert (workdir / "kafka" / "current.json").is_file()
        with pytest.raises(kafka_local.KafkaLocalError, match="already running"):
            kafka_local.start(workdir)
        _roundtrip(broker.bootstrap, unique_name("topic"), unique_name("group"))
    finally:
        stopped = kafka_local.stop_handle(broker)
    assert stopped
    assert _gone(broker.pid, 1.0)
    assert kafka_local.status(workdir) is None
    assert not (workdir / "kafka" / "current.json").exists()
    assert not (broker.run_dir / "data").exists()
    assert kafka_local.stop(workdir) is False
    assert kafka_local.stop_handle(broker) is False


def _python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code), *args]


@needs_java_and_maven
def test_cli_start_then_stop_from_another_process(tmp_path: Path) -> None:
    workdir = _shared_libs_workdir(tmp_path)
    cli = "import sys; from stream.kafka_local import kafka_cli; sys.exit(kafka_cli(sys.argv[1:]))"
    started = subprocess.run(
        _python(cli, "start", "--workdir", str(workdir), "--heap-mb", "384"),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    try:
        assert started.returncode == 0, started.stderr
        bootstrap = started.stdout.strip().splitlines()[-1]
        assert bootstrap.startswith("127.0.0.1:")
        assert "ready at" in started.stderr
        # the CLI process has exited; the broker keeps running, detached
        broker = kafka_local.status(workdir)
        assert broker is not None
        assert broker.bootstrap == bootstrap
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
        assert metadata.brokers
        status = subprocess.run(
            _python(cli, "status", "--workdir", str(workdir)),
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert status.returncode == 0
        assert status.stdout.strip() == bootstrap
    finally:
        stopped = subprocess.run(
            _python(cli, "--workdir", str(workdir), "stop"),
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        kafka_local.stop(workdir)  # belt and braces if the CLI failed
    assert stopped.returncode == 0, stopped.stderr
    assert "kafka: stopped" in stopped.stderr
    assert kafka_local.status(workdir) is None


@needs_java_and_maven
def test_watchdog_kills_the_broker_when_its_owner_is_killed(tmp_path: Path) -> None:
    workdir = _shared_libs_workdir(tmp_path)
    owner_code = """
        import sys, time
        from pathlib import Path
        from stream import kafka_local
        broker = kafka_local.start(Path(sys.argv[1]), heap_mb=384)
        print(broker.pid, flush=True)
        time.sleep(600)
    """
    owner = subprocess.Popen(
        _python(owner_code, str(workdir)),
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    broker_pid = 0
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()  # blocks until the broker is ready
        assert line.strip(), "the owner process did not start a broker"
        broker_pid = int(line)
        assert kafka_local.status(workdir) is not None
        owner.send_signal(signal.SIGKILL)  # no atexit, no finally: only the watchdog is left
        owner.wait(timeout=10)
        assert _gone(broker_pid, 30.0), "the broker outlived its owner"
        assert kafka_local.status(workdir) is None
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()
        if broker_pid and not _gone(broker_pid, 0.1):
            os.killpg(broker_pid, signal.SIGKILL)
        kafka_local.stop(workdir)
