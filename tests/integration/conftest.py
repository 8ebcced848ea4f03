"""Fixtures of the integration tests."""

from __future__ import annotations

import os
import re
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stream import kafka_local

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------------------------
# Kafka broker
#
# kafka_bootstrap picks, in order:
#   1. $KAFKA_BOOTSTRAP, if set (any broker you run yourself);
#   2. the broker that `vigil kafka start` left running for <project>/.work (kept running);
#   3. a Kafka container, if a Docker daemon answers (testcontainers);
#   4. a local broker from the Maven jars (stream.kafka_local), stopped at session end.


def _docker_kafka() -> Any | None:
    """A started testcontainers KafkaContainer, or None when no Docker daemon answers."""
    try:
        from testcontainers.core.docker_client import DockerClient

        DockerClient().client.ping()
    except Exception:
        return None
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers < 4.15
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from testcontainers.kafka import KafkaContainer
    container = KafkaContainer().with_kraft()
    container.start()
    return container


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The bootstrap address of a Kafka broker for the whole test session."""
    from_env = os.environ.get("KAFKA_BOOTSTRAP")
    if from_env:
        yield from_env
        return

    workdir = PROJECT_ROOT / kafka_local.DEFAULT_WORKDIR
    running = kafka_local.status(workdir)
    if running is not None:
        yield running.bootstrap
        return

    container = _docker_kafka()
    if container is not None:
        try:
            yield str(container.get_bootstrap_server())
        finally:
            container.stop()
        return

    # start() also registers an atexit handler and a watchdog that kills the JVM if this
    # process dies without running its finalizers.
    broker = kafka_local.start(workdir)
    try:
        yield broker.bootstrap
    finally:
        kafka_local.stop_handle(broker)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[..., str]:
    """A factory of unique topic/group names: ``unique_name("input")`` ->
    ``"input-test_x-1a2b3c4d"`` (Kafka-legal characters only)."""
    test = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-")[:60]

    def make(prefix: str = "t") -> str:
        return f"{prefix}-{test}-{uuid.uuid4().hex[:8]}"

    return make
