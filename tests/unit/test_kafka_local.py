"""Unit tests of stream.kafka_local that need neither Java, Maven nor a broker."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stream import kafka_local
from stream.kafka_local import (
    KafkaLocalError,
    LocalKafka,
    broker_command,
    free_port,
    free_ports,
    parse_properties,
    random_cluster_id,
    render_server_properties,
)


def _render(tmp_path: Path) -> dict[str, str]:
    text = render_server_properties(
        broker_port=19092, controller_port=19093, log_dir=tmp_path / "data"
    )
    return parse_properties(text)


def test_server_properties_single_node_kraft(tmp_path: Path) -> None:
    props = _render(tmp_path)
    assert props["node.id"] == "1"
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert props["log.dirs"] == str(tmp_path / "data")


def test_server_properties_internal_topics_fit_one_broker(tmp_path: Path) -> None:
    props = _render(tmp_path)
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
        "default.replication.factor",
        "num.partitions",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "false"


def test_server_properties_never_use_localhost(tmp_path: Path) -> None:
    text = render_server_properties(broker_port=1, controller_port=2, log_dir=tmp_path)
    assert "localhost" not in text


def test_parse_properties_skips_comments_and_blanks() -> None:
    text = "# comment\n! also\n\na=1\n b = two=2 \n"
    assert parse_properties(text) == {"a": "1", "b": "two=2"}


def test_cluster_id_is_16_bytes_base64url_without_padding() -> None:
    ids = {random_cluster_id() for _ in range(500)}
    assert len(ids) == 500
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert "=" not in cluster_id
        assert not cluster_id.startswith("-")
        assert set(cluster_id) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_free_ports_are_distinct() -> None:
    ports = free_ports(2)
    assert len(set(ports)) == 2
    assert all(1024 <= port <= 65535 for port in ports)


def test_broker_command(tmp_path: Path) -> None:
    command = broker_command(
        java="/usr/bin/java",
        libs=tmp_path / "libs",
        log4j2=tmp_path / "log4j2.properties",
        log_file=tmp_path / "kafka.log",
        properties=tmp_path / "server.properties",
        heap_mb=512,
    )
    assert command[0] == "/usr/bin/java"
    assert "-Xms256m" in command
    assert "-Xmx512m" in command
    assert "-XX:+ExitOnOutOfMemoryError" in command
    assert f"-Dlog4j2.configurationFile={tmp_path / 'log4j2.properties'}" in command
    assert command[command.index("-cp") + 1] == f"{tmp_path / 'libs'}/*"
    assert command[-2:] == ["kafka.Kafka", str(tmp_path / "server.properties")]


def test_broker_command_small_heap_keeps_xms_below_xmx(tmp_path: Path) -> None:
    command = broker_command(
        java="java",
        libs=tmp_path,
        log4j2=tmp_path,
        log_file=tmp_path,
        properties=tmp_path,
        heap_mb=128,
    )
    assert "-Xms128m" in command
    assert "-Xmx128m" in command
    with pytest.raises(ValueError, match="heap_mb"):
        broker_command(
            java="java",
            libs=tmp_path,
            log4j2=tmp_path,
            log_file=tmp_path,
            properties=tmp_path,
            heap_mb=16,
        )


def test_tail(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert kafka_local.tail(log, 3).splitlines() == ["line 97", "line 98", "line 99"]
    assert kafka_local.tail(tmp_path / "missing.log") == ""


def test_deploy_files_exist() -> None:
    assert kafka_local.POM_FILE.is_file()
    assert kafka_local.LOG4J2_FILE.is_file()
    pom = kafka_local.POM_FILE.read_text()
    assert "<artifactId>kafka_2.13</artifactId>" in pom
    assert f"<kafka.version>{kafka_local.KAFKA_VERSION}</kafka.version>" in pom
    assert "log4j-slf4j-impl" in pom
    log4j = parse_properties(kafka_local.LOG4J2_FILE.read_text())
    assert log4j["rootLogger.level"] == "WARN"
    assert log4j["logger.raftserver.name"] == "kafka.server.KafkaRaftServer"
    assert log4j["logger.raftserver.level"] == "INFO"


def test_missing_tool_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(KafkaLocalError, match="'mvn' not found"):
        kafka_local.ensure_jars(tmp_path / "work")
    with pytest.raises(KafkaLocalError, match="'java' not found"):
        kafka_local._tool("java")


def test_ensure_jars_skips_maven_when_marker_matches(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    libs = tmp_path / "kafka" / "libs"
    libs.mkdir(parents=True)
    (libs / ".complete").write_text(kafka_local._pom_digest() + "\n")
    monkeypatch.setenv("PATH", str(tmp_path))  # no mvn: it must not be needed
    assert kafka_local.ensure_jars(tmp_path) == libs


def test_ensure_jars_reports_maven_failure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, script in {
        "mvn": "#!/bin/sh\necho 'Could not resolve dependencies' >&2\nexit 1\n",
        "java": "#!/bin/sh\nexit 0\n",
    }.items():
        tool = bin_dir / name
        tool.write_text(script)
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(KafkaLocalError, match="Could not resolve dependencies"):
        kafka_local.ensure_jars(tmp_path / "work")
    assert not (tmp_path / "work" / "kafka" / "libs" / ".complete").exists()


def test_state_round_trip_and_status_of_dead_pid(tmp_path: Path) -> None:
    run_dir = tmp_path / "kafka" / "run-x"
    (run_dir / "data").mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(done.stdout)
    kafka = LocalKafka("127.0.0.1:1", dead_pid, run_dir.resolve(), run_dir / "kafka.log")
    kafka_local._write_state(tmp_path, kafka)
    state = json.loads((tmp_path / "kafka" / "current.json").read_text())
    assert state["bootstrap"] == "127.0.0.1:1"
    assert state["pid"] == dead_pid
    assert kafka_local._read_state(tmp_path) == kafka
    assert kafka_local.status(tmp_path) is None
    assert kafka_local.stop(tmp_path) is False  # nothing was running...
    assert not (tmp_path / "kafka" / "current.json").exists()  # ...but the state is cleared
    assert not (run_dir / "data").exists()
    assert kafka_local.stop(tmp_path) is False


def test_status_ignores_a_live_pid_that_is_not_a_broker(tmp_path: Path) -> None:
    run_dir = (tmp_path / "kafka" / "run-x").resolve()
    run_dir.mkdir(parents=True)
    kafka = LocalKafka("127.0.0.1:1", os.getpid(), run_dir, run_dir / "kafka.log")
    kafka_local._write_state(tmp_path, kafka)
    assert kafka_local.status(tmp_path) is None  # our own pid runs, but it is no kafka.Kafka


def test_cli_status_and_stop_without_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert kafka_local.kafka_cli(["status", "--workdir", str(tmp_path)]) == 3
    assert kafka_local.kafka_cli(["--workdir", str(tmp_path), "stop"]) == 0
    assert "no local broker" in capsys.readouterr().err


def test_cli_requires_a_command() -> None:
    with pytest.raises(SystemExit):
        kafka_local.kafka_cli([])
