"""A real single-node Apache Kafka (KRaft) broker for development and tests, without Docker.

The jars come from Maven Central (``deploy/kafka/pom.xml``: ``org.apache.kafka:kafka_2.13`` plus a
log4j2 backend), copied once into ``<workdir>/kafka/libs``. Each broker runs from a fresh
``<workdir>/kafka/run-<stamp>/`` directory (``server.properties``, ``kafka.log`` and the ``data``
log dir) and is recorded in ``<workdir>/kafka/current.json`` so that another process can stop it.

A broker started with ``detach=False`` (the default) belongs to the calling process: it is
stopped at interpreter exit, and a small watchdog process kills it if the caller dies without
running its exit handlers (SIGKILL, a hard crash). ``vigil kafka start`` uses ``detach=True`` and
leaves the broker running until ``vigil kafka stop``.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = [
    "DEFAULT_WORKDIR",
    "KAFKA_VERSION",
    "KafkaLocalError",
    "LocalKafka",
    "create_topics",
    "ensure_jars",
    "kafka_cli",
    "random_cluster_id",
    "render_server_properties",
    "start",
    "status",
    "stop",
    "stop_handle",
]

DEFAULT_WORKDIR = Path(".work")
"""Project-relative work folder (resolved against the current directory)."""

KAFKA_VERSION = "4.1.2"
"""The Kafka version pinned in deploy/kafka/pom.xml (informational)."""

DEPLOY_DIR = Path(__file__).resolve().parents[1] / "deploy" / "kafka"
POM_FILE = DEPLOY_DIR / "pom.xml"
LOG4J2_FILE = DEPLOY_DIR / "log4j2.properties"

_LIBS_MARKER = ".complete"
_STATE_FILE = "current.json"
_LOG_NAME = "kafka.log"
_DATA_NAME = "data"
_KEEP_RUN_DIRS = 5

# In-process bookkeeping: Popen objects of brokers and watchdogs this process started, so that
# their exit can be reaped (a dead child is a zombie, and a zombie still answers kill(pid, 0)).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_WATCHDOGS: dict[int, subprocess.Popen[bytes]] = {}


class KafkaLocalError(RuntimeError):
    """The local broker could not be prepared, started or stopped."""


@dataclass(frozen=True)
class LocalKafka:
    """A running local broker: where to reach it, its process and its files."""

    bootstrap: str
    pid: int
    run_dir: Path
    log_file: Path


# Brokers owned by this process (started with detach=False): stopped at interpreter exit.
_OWNED: dict[int, LocalKafka] = {}
_ATEXIT_REGISTERED = False


# --------------------------------------------------------------------------------------------
# Pure helpers (unit-tested)


def random_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, base64url without padding, not starting with '-'."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not cluster_id.startswith("-"):
            return cluster_id


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports (all sockets are held open until every port is picked)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def render_server_properties(
    *,
    broker_port: int,
    controller_port: int,
    log_dir: Path,
    host: str = "127.0.0.1",
    node_id: int = 1,
) -> str:
    """The ``server.properties`` of a combined broker+controller single-node KRaft cluster."""
    settings: dict[str, str | int] = {
        "node.id": node_id,
        "process.roles": "broker,controller",
        "controller.quorum.voters": f"{node_id}@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{broker_port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{broker_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": 1,
        "default.replication.factor": 1,
        "auto.create.topics.enable": "false",
        # Internal topics: one replica (a single broker), one partition (fast first group join).
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "share.coordinator.state.topic.num.partitions": 1,
        "group.initial.rebalance.delay.ms": 0,
        # Records carry event time, and replayed or generated history is older than the
        # default 7 days: time-based retention would delete it minutes after it arrived.
        "log.retention.ms": -1,
    }
    lines = ["# Written by stream/kafka_local.py: single-node KRaft broker for local use."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def parse_properties(text: str) -> dict[str, str]:
    """Parse simple ``key=value`` lines (comments and blank lines skipped)."""
    result: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, _, value = line.partition("=")
        result[key.strip()] = value.strip()
    return result


def broker_command(
    *,
    java: str,
    libs: Path,
    log4j2: Path,
    log_file: Path,
    properties: Path,
    heap_mb: int,
) -> list[str]:
    """The ``java`` command line that runs ``kafka.Kafka``."""
    if heap_mb < 64:
        raise ValueError(f"heap_mb must be at least 64, got {heap_mb}")
    return [
        java,
        f"-Xms{min(256, heap_mb)}m",
        f"-Xmx{heap_mb}m",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j2}",
        f"-Dvigil.kafka.log={log_file}",
        "-cp",
        f"{libs}{os.sep}*",
        "kafka.Kafka",
        str(properties),
    ]


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# Jars


def _tool(name: str) -> str:
    if name == "java":
        java_home = os.environ.get("JAVA_HOME")
        if java_home:
            candidate = Path(java_home) / "bin" / "java"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    found = shutil.which(name)
    if found is None:
        hint = {
            "java": "install a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless)",
            "mvn": "install Apache Maven 3.6+ (e.g. apt-get install maven)",
        }.get(name, "")
        raise KafkaLocalError(f"'{name}' not found on PATH: the local Kafka needs it; {hint}")
    return found


def _kafka_dir(workdir: Path) -> Path:
    return workdir.resolve() / "kafka"


@contextlib.contextmanager
def _locked(kafka_dir: Path) -> Iterator[None]:
    """An exclusive lock on ``<workdir>/kafka`` across processes (pytest-xdist, CLI + tests)."""
    kafka_dir.mkdir(parents=True, exist_ok=True)
    with (kafka_dir / ".lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _pom_digest() -> str:
    try:
        return hashlib.sha256(POM_FILE.read_bytes()).hexdigest()
    except OSError as exc:
        raise KafkaLocalError(
            f"cannot read {POM_FILE}: stream.kafka_local needs the project tree"
        ) from exc


def ensure_jars(workdir: Path) -> Path:
    """Copy the broker's jars into ``<workdir>/kafka/libs`` with Maven, once; return that folder.

    A marker file holding the pom's digest is written after a successful copy: later calls
    return at once, and a changed pom (another Kafka version) triggers a clean copy.
    """
    kafka_dir = _kafka_dir(workdir)
    libs = kafka_dir / "libs"
    marker = libs / _LIBS_MARKER
    digest = _pom_digest()
    if _marker_ok(marker, digest):
        return libs
    with _locked(kafka_dir):
        if _marker_ok(marker, digest):  # another process finished it meanwhile
            return libs
        mvn = _tool("mvn")
        _tool("java")
        if libs.exists():
            shutil.rmtree(libs)
        command = [
            mvn,
            "-B",
            "-q",
            "-Dstyle.color=never",
            "-f",
            str(POM_FILE),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
        ]
        try:
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise KafkaLocalError("Maven did not finish copying the Kafka jars in 15 min") from exc
        jars = sorted(libs.glob("kafka_2.13-*.jar")) if libs.is_dir() else []
        if done.returncode != 0 or not jars:
            output = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            raise KafkaLocalError(
                f"Maven failed to copy the Kafka jars (exit {done.returncode}): "
                f"{' '.join(command)}\n{output}"
            )
        marker.write_text(digest + "\n", encoding="utf-8")
    return libs


def _marker_ok(marker: Path, digest: str) -> bool:
    try:
        return marker.read_text(encoding="utf-8").strip() == digest
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# Processes


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (reaping it first if it is a dead child of ours)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie still answers kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _is_broker(pid: int, run_dir: Path) -> bool:
    """Whether ``pid`` is alive and is the broker of ``run_dir`` (guards against pid reuse)."""
    if not _pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): trust the pid
        return True
    return b"kafka.Kafka" in cmdline and str(run_dir).encode() in cmdline


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _wait_dead(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if not _pid_alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _kill(pid: int, timeout_s: float) -> None:
    """SIGTERM the broker's process group, then SIGKILL it if it lingers."""
    _signal_group(pid, signal.SIGTERM)
    if not _wait_dead(pid, timeout_s):
        _signal_group(pid, signal.SIGKILL)
        _wait_dead(pid, 10.0)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=1.0)
    watchdog = _WATCHDOGS.pop(pid, None)
    if watchdog is not None:
        try:
            watchdog.wait(timeout=3.0)  # it exits by itself once the broker is gone
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait()


_WATCHDOG_SOURCE = """
import os, signal, sys, time
owner, broker = int(sys.argv[1]), int(sys.argv[2])
def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[:1] != ["Z"]
    except OSError:
        return True
while alive(broker):
    if not alive(owner):
        for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(broker, sig)
            except OSError:
                sys.exit(0)
            end = time.monotonic() + wait
            while alive(broker) and time.monotonic() < end:
                time.sleep(0.1)
        sys.exit(0)
    time.sleep(0.5)
"""


def _start_watchdog(owner_pid: int, broker_pid: int) -> subprocess.Popen[bytes]:
    """A tiny Python process that kills the broker if ``owner_pid`` dies (in its own session,
    so a Ctrl-C sent to the owner's process group does not kill it before it can act)."""
    return subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _WATCHDOG_SOURCE, str(owner_pid), str(broker_pid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


# --------------------------------------------------------------------------------------------
# State file


def _state_path(workdir: Path) -> Path:
    return _kafka_dir(workdir) / _STATE_FILE


def _write_state(workdir: Path, kafka: LocalKafka) -> None:
    path = _state_path(workdir)
    tmp = path.with_suffix(".tmp")
    state = {
        "bootstrap": kafka.bootstrap,
        "pid": kafka.pid,
        "run_dir": str(kafka.run_dir),
        "log_file": str(kafka.log_file),
    }
    tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _read_state(workdir: Path) -> LocalKafka | None:
    try:
        state = json.loads(_state_path(workdir).read_text(encoding="utf-8"))
        run_dir = Path(state["run_dir"])
        return LocalKafka(
            bootstrap=str(state["bootstrap"]),
            pid=int(state["pid"]),
            run_dir=run_dir,
            log_file=Path(state.get("log_file", run_dir / _LOG_NAME)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remove_state(workdir: Path, kafka: LocalKafka) -> None:
    """Remove the state file if it still describes ``kafka``."""
    recorded = _read_state(workdir)
    if recorded is None or recorded.pid == kafka.pid:
        _state_path(workdir).unlink(missing_ok=True)


def _prune_run_dirs(kafka_dir: Path, keep: int, active: Path | None) -> None:
    runs = sorted(kafka_dir.glob("run-*"), key=lambda path: path.stat().st_mtime, reverse=True)
    for old in runs[keep:]:
        if old != active:
            shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Start, stop, status


def status(workdir: Path) -> LocalKafka | None:
    """The broker recorded for ``workdir`` if it is still running, else None."""
    kafka = _read_state(workdir)
    if kafka is None or not _is_broker(kafka.pid, kafka.run_dir):
        return None
    return kafka


def start(
    workdir: Path,
    *,
    heap_mb: int = 512,
    timeout_s: float = 90.0,
    detach: bool = False,
    progress: IO[str] | None = None,
) -> LocalKafka:
    """Start a fresh single-node broker under ``workdir`` and wait until it serves clients.

    With ``detach=False`` the broker is tied to this process (stopped at exit, and by a
    watchdog if this process dies abruptly); with ``detach=True`` it keeps running until
    :func:`stop`. Raises :class:`KafkaLocalError` (with the broker log's tail) on failure, or
    if a broker recorded for ``workdir`` is already running.
    """

    def say(message: str) -> None:
        if progress is not None:
            print(message, file=progress, flush=True)

    kafka_dir = _kafka_dir(workdir)
    running = status(workdir)
    if running is not None:
        raise _already_running(workdir, running)
    if not _marker_ok(kafka_dir / "libs" / _LIBS_MARKER, _pom_digest()):
        say(f"kafka: copying the Kafka {KAFKA_VERSION} jars with Maven (downloads on first use)...")
    libs = ensure_jars(workdir)
    java = _tool("java")
    if not LOG4J2_FILE.is_file():
        raise KafkaLocalError(f"missing {LOG4J2_FILE}")

    with _locked(kafka_dir):
        running = status(workdir)  # again, under the lock
        if running is not None:
            raise _already_running(workdir, running)
        stale = _read_state(workdir)
        if stale is not None:  # its broker is gone: forget it
            _remove_state(workdir, stale)
            shutil.rmtree(stale.run_dir / _DATA_NAME, ignore_errors=True)

        attempts = 3
        for attempt in range(1, attempts + 1):
            kafka, process = _launch(kafka_dir, libs, java, heap_mb, say)
            # Guard the JVM from the moment it exists: the watchdog covers this process being
            # killed while waiting, the except clause covers errors and Ctrl-C.
            _WATCHDOGS[kafka.pid] = _start_watchdog(os.getpid(), kafka.pid)
            try:
                _wait_ready(kafka, process, timeout_s, say)
            except BaseException as exc:
                _kill(kafka.pid, 10.0)
                shutil.rmtree(kafka.run_dir / _DATA_NAME, ignore_errors=True)
                port_taken = "Address already in use" in str(exc)
                if isinstance(exc, KafkaLocalError) and port_taken and attempt < attempts:
                    say("kafka: a port was taken meanwhile, retrying with new ports...")
                    continue
                raise
            break
        _write_state(workdir, kafka)
        _prune_run_dirs(kafka_dir, _KEEP_RUN_DIRS, kafka.run_dir)

    if detach:  # from now on the broker outlives this process
        watchdog = _WATCHDOGS.pop(kafka.pid)
        watchdog.kill()
        watchdog.wait()
    else:
        _own(kafka)
    return kafka


def _already_running(workdir: Path, running: LocalKafka) -> KafkaLocalError:
    return KafkaLocalError(
        f"a local Kafka is already running for {workdir} at {running.bootstrap} "
        f"(pid {running.pid}); reuse it or stop it first (vigil kafka stop)"
    )


def _launch(
    kafka_dir: Path,
    libs: Path,
    java: str,
    heap_mb: int,
    say: Callable[[str], None],
) -> tuple[LocalKafka, subprocess.Popen[bytes]]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = kafka_dir / f"run-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    data_dir = run_dir / _DATA_NAME
    data_dir.mkdir(parents=True)
    log_file = run_dir / _LOG_NAME
    properties = run_dir / "server.properties"
    broker_port, controller_port = free_ports(2)
    properties.write_text(
        render_server_properties(
            broker_port=broker_port, controller_port=controller_port, log_dir=data_dir
        ),
        encoding="utf-8",
    )
    cluster_id = random_cluster_id()
    say(f"kafka: formatting {data_dir} (cluster id {cluster_id})...")
    format_command = [
        java,
        "-Xmx256m",
        "-XX:TieredStopAtLevel=1",  # a short-lived tool: C1 only starts faster
        "-XX:+UseSerialGC",
        f"-Dlog4j2.configurationFile={LOG4J2_FILE}",
        f"-Dvigil.kafka.log={run_dir / 'format.log'}",
        "-cp",
        f"{libs}{os.sep}*",
        "kafka.tools.StorageTool",
        "format",
        "-c",
        str(properties),
        "-t",
        cluster_id,
        "--ignore-formatted",
    ]
    formatted = subprocess.run(
        format_command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if formatted.returncode != 0:
        raise KafkaLocalError(
            f"formatting the Kafka log dir failed (exit {formatted.returncode}):\n"
            f"{formatted.stdout}{formatted.stderr}{tail(run_dir / 'format.log')}"
        )

    command = broker_command(
        java=java,
        libs=libs,
        log4j2=LOG4J2_FILE,
        log_file=log_file,
        properties=properties,
        heap_mb=heap_mb,
    )
    say(f"kafka: starting the broker on 127.0.0.1:{broker_port} (log: {log_file})...")
    with log_file.open("ab") as out:  # append mode: log4j2 writes to the same file
        process = subprocess.Popen(
            command,
            cwd=run_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _CHILDREN[process.pid] = process
    kafka = LocalKafka(
        bootstrap=f"127.0.0.1:{broker_port}", pid=process.pid, run_dir=run_dir, log_file=log_file
    )
    return kafka, process


def _wait_ready(
    kafka: LocalKafka,
    process: subprocess.Popen[bytes],
    timeout_s: float,
    say: Callable[[str], None],
) -> None:
    host, _, port_text = kafka.bootstrap.rpartition(":")
    port = int(port_text)
    deadline = time.monotonic() + timeout_s

    def fail(reason: str) -> KafkaLocalError:
        return KafkaLocalError(
            f"local Kafka {reason}; last lines of {kafka.log_file}:\n{tail(kafka.log_file)}"
        )

    # 1. process alive and the port accepts connections (only once the broker is unfenced)
    while True:
        code = process.poll()
        if code is not None:
            raise fail(f"exited with code {code} while starting")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                break
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise fail(f"did not accept connections within {timeout_s:g}s")
        time.sleep(0.1)

    # 2. the AdminClient sees a broker in the metadata
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": kafka.bootstrap, "log_level": 3})
    while True:
        code = process.poll()
        if code is not None:
            raise fail(f"exited with code {code} while starting")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise fail(f"did not report a broker within {timeout_s:g}s")
        try:
            metadata = admin.list_topics(timeout=min(5.0, max(remaining, 0.5)))
            if metadata.brokers:
                say(f"kafka: ready at {kafka.bootstrap}")
                return
        except Exception:  # KafkaException while metadata is not served yet
            pass
        time.sleep(0.2)


@contextlib.contextmanager
def broker_for(bootstrap: str | None, workdir: Path, say: Callable[[str], None]) -> Iterator[str]:
    """The bootstrap to use: ``bootstrap`` if given, else the broker ``vigil kafka start``
    left running in ``workdir`` (left up), else one started here and stopped on exit."""
    if bootstrap is not None:
        yield bootstrap
        return
    running = status(workdir)
    if running is not None:
        yield running.bootstrap
        return
    say("starting a local Kafka (first run downloads the jars with Maven)...")
    ensure_jars(workdir)
    broker = start(workdir, progress=sys.stderr)
    try:
        yield broker.bootstrap
    finally:
        say("stopping Kafka")
        stop_handle(broker)


def stop_handle(kafka: LocalKafka, *, timeout_s: float = 30.0) -> bool:
    """Stop the broker of ``kafka`` (started in this or another process) and delete its data.

    Returns False if it was not running. Also clears the workdir's state file if it names it.
    """
    _OWNED.pop(kafka.pid, None)
    running = _is_broker(kafka.pid, kafka.run_dir)
    if running:
        _kill(kafka.pid, timeout_s)
    else:
        _CHILDREN.pop(kafka.pid, None)
        watchdog = _WATCHDOGS.pop(kafka.pid, None)
        if watchdog is not None:
            watchdog.kill()
            watchdog.wait()
    shutil.rmtree(kafka.run_dir / _DATA_NAME, ignore_errors=True)
    # run_dir is <workdir>/kafka/run-*: the state file is beside it
    state = kafka.run_dir.parent / _STATE_FILE
    recorded = _read_state(kafka.run_dir.parent.parent)
    if recorded is not None and recorded.pid == kafka.pid:
        state.unlink(missing_ok=True)
    return running


def restart(
    kafka: LocalKafka, *, down_for_s: float = 0.0, heap_mb: int = 512, timeout_s: float = 90.0
) -> LocalKafka:
    """Kill the broker of ``kafka`` (as a crash would) and start it again on the same
    ports and data after ``down_for_s`` seconds: for fault tests. Returns the new handle."""
    owned = _OWNED.pop(kafka.pid, None) is not None
    watchdog = _WATCHDOGS.pop(kafka.pid, None)
    if watchdog is not None:
        watchdog.kill()
        watchdog.wait()
    _kill(kafka.pid, timeout_s)
    _CHILDREN.pop(kafka.pid, None)
    time.sleep(down_for_s)
    command = broker_command(
        java=_tool("java"),
        libs=kafka.run_dir.parent / "libs",
        log4j2=LOG4J2_FILE,
        log_file=kafka.log_file,
        properties=kafka.run_dir / "server.properties",
        heap_mb=heap_mb,
    )
    with kafka.log_file.open("ab") as out:
        process = subprocess.Popen(
            command,
            cwd=kafka.run_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _CHILDREN[process.pid] = process
    again = LocalKafka(kafka.bootstrap, process.pid, kafka.run_dir, kafka.log_file)
    _WATCHDOGS[again.pid] = _start_watchdog(os.getpid(), again.pid)
    try:
        _wait_ready(again, process, timeout_s, lambda message: None)
    except BaseException:
        _kill(again.pid, 10.0)
        raise
    if owned:
        _own(again)
    return again


def stop(workdir: Path, *, timeout_s: float = 30.0) -> bool:
    """Stop the broker recorded for ``workdir``; False if none was running."""
    kafka = _read_state(workdir)
    if kafka is None:
        return False
    running = stop_handle(kafka, timeout_s=timeout_s)
    _state_path(workdir).unlink(missing_ok=True)
    return running


def _own(kafka: LocalKafka) -> None:
    global _ATEXIT_REGISTERED
    _OWNED[kafka.pid] = kafka
    if not _ATEXIT_REGISTERED:
        atexit.register(_stop_owned)
        _ATEXIT_REGISTERED = True


def _stop_owned() -> None:
    """atexit: stop every broker this process started without ``detach``."""
    for kafka in list(_OWNED.values()):
        with contextlib.suppress(Exception):
            stop_handle(kafka, timeout_s=15.0)


# --------------------------------------------------------------------------------------------
# Admin helper


def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    exist_ok: bool = False,
    timeout_s: float = 30.0,
    config: Mapping[str, str] | None = None,
) -> None:
    """Create ``topics`` (name -> partitions, replication factor 1) and wait until every
    partition has a leader. With ``exist_ok`` an existing topic is not an error.

    Topics keep their records forever unless ``config`` says otherwise: test and demo
    records carry event time from the past, which time-based retention would delete.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic  # confluent_kafka.admin does not re-export it

    if not topics:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=1,
            config=dict(config) if config is not None else {"retention.ms": "-1"},
        )
        for name, partitions in topics.items()
    ]
    futures = admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if (
                exist_ok
                and isinstance(error, KafkaError)
                and error.code() == KafkaError.TOPIC_ALREADY_EXISTS
            ):
                continue
            raise KafkaLocalError(f"creating topic {name!r} failed: {exc}") from exc

    deadline = time.monotonic() + timeout_s
    while True:
        metadata = admin.list_topics(timeout=max(1.0, deadline - time.monotonic()))
        if all(_topic_ready(metadata, name) for name in topics):
            return
        if time.monotonic() >= deadline:
            raise KafkaLocalError(f"topics {sorted(topics)} had no leaders after {timeout_s}s")
        time.sleep(0.1)


def _topic_ready(metadata: Any, name: str) -> bool:
    topic = metadata.topics.get(name)
    if topic is None or topic.error is not None or not topic.partitions:
        return False
    return all(part.leader >= 0 for part in topic.partitions.values())


# --------------------------------------------------------------------------------------------
# Command line: vigil kafka start|stop|status


def kafka_cli(argv: list[str]) -> int:
    """``vigil kafka {start,stop,status,fetch} [--workdir DIR]``.

    ``start`` leaves the broker running and prints its bootstrap address as the last line of
    stdout (progress goes to stderr); ``status`` exits 3 if no broker runs.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--workdir",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"work folder holding kafka/ (default: {DEFAULT_WORKDIR})",
    )
    parser = argparse.ArgumentParser(
        prog="vigil kafka", description="A local single-node Apache Kafka (KRaft) broker."
    )
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)
    start_parser = commands.add_parser("start", parents=[common], help="start a broker")
    start_parser.add_argument("--heap-mb", type=int, default=512)
    start_parser.add_argument("--timeout", type=float, default=90.0, help="seconds")
    stop_parser = commands.add_parser("stop", parents=[common], help="stop the broker")
    stop_parser.add_argument("--timeout", type=float, default=30.0, help="seconds")
    commands.add_parser("status", parents=[common], help="exit 0 if a broker runs, else 3")
    commands.add_parser("fetch", parents=[common], help="download the broker's jars (Maven)")
    args = parser.parse_args(argv)
    workdir: Path = args.workdir

    try:
        if args.command == "start":
            started = time.monotonic()
            kafka = start(
                workdir,
                heap_mb=args.heap_mb,
                timeout_s=args.timeout,
                detach=True,
                progress=sys.stderr,
            )
            print(
                f"kafka: started in {time.monotonic() - started:.1f}s, pid {kafka.pid}, "
                f"log {kafka.log_file}",
                file=sys.stderr,
            )
            print(kafka.bootstrap, flush=True)
            return 0
        if args.command == "fetch":
            print(f"kafka: jars in {ensure_jars(workdir)}", file=sys.stderr)
            return 0
        if args.command == "stop":
            if stop(workdir, timeout_s=args.timeout):
                print("kafka: stopped", file=sys.stderr)
            else:
                print("kafka: no local broker was running", file=sys.stderr)
            return 0
        kafka_now = status(workdir)
        if kafka_now is None:
            print("kafka: not running", file=sys.stderr)
            return 3
        print(f"kafka: running, pid {kafka_now.pid}, log {kafka_now.log_file}", file=sys.stderr)
        print(kafka_now.bootstrap)
        return 0
    except KafkaLocalError as exc:
        print(f"kafka: error: {exc}", file=sys.stderr)
        return 1
