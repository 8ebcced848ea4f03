"""Prometheus metrics and the health endpoints, served from one small HTTP thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)


class ServiceMetrics:
    """The service's instruments, on a registry of its own (so tests can run several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("vigil_events", "Events consumed", ["event_type"], registry=r)
        self.dead_letters = Counter(
            "vigil_dead_letters", "Records sent to the dead-letter topic", ["reason"], registry=r
        )
        self.alerts = Counter("vigil_alerts", "Alerts produced", ["event_type"], registry=r)
        self.commits = Counter("vigil_commits", "Offset commits", registry=r)
        self.lag = Gauge("vigil_consumer_lag", "Records behind the end", ["partition"], registry=r)
        self.held = Gauge(
            "vigil_held_records",
            "Records held back by event-time alignment (their partitions paused)",
            registry=r,
        )
        self.batch_seconds = Histogram(
            "vigil_batch_seconds", "Time to process, deliver and commit a batch", registry=r
        )
        self.assigned = Gauge("vigil_assigned_partitions", "Partitions assigned", registry=r)
        self.restore_seconds = Histogram(
            "vigil_state_restore_seconds",
            "From assignment to a partition's state restored and caught up",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, float("inf")),
            registry=r,
        )
        self.label_threshold = Gauge(
            "vigil_label_threshold",
            "Score an event alert must exceed, from reviewers' labels",
            ["detector", "segment", "source"],
            registry=r,
        )
        self.labels = Gauge(
            "vigil_labels", "Labels in force", ["detector", "segment", "verdict"], registry=r
        )
        self.held_by_labels = Counter(
            "vigil_alerts_held_by_labels",
            "Flagged events below the labels' threshold (no alert)",
            ["event_type"],
            registry=r,
        )
        self.not_learned = Counter(
            "vigil_events_not_learned",
            "Events scored but kept out of learning by the guard",
            registry=r,
        )
        self.guarded = Gauge(
            "vigil_guard_blocked", "What the learning guard blocks", ["kind"], registry=r
        )
        self.snapshots = Counter("vigil_state_snapshots", "State snapshots written", registry=r)
        self.state_bytes = Gauge(
            "vigil_state_bytes", "Compressed size of the last snapshot", ["partition"], registry=r
        )
        self._event_counters: dict[str, Counter] = {}

    def count_events(self, by_type: Mapping[str, int]) -> None:
        """Add a batch's scored events, by event type: once a batch, not once an event
        (each ``inc`` takes a lock)."""
        for event_type, count in by_type.items():
            # labels() costs microseconds per call; the hot path keeps the children.
            child = self._event_counters.get(event_type)
            if child is None:
                child = self._event_counters[event_type] = self.events.labels(event_type)
            child.inc(count)


class StateMetrics:
    """Restore and snapshot figures of the partitions a member owns, as metrics."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics

    def restored(self, partition: int, seconds: float) -> None:
        self.metrics.restore_seconds.observe(seconds)

    def snapshotted(self, partition: int, size: int) -> None:
        self.metrics.snapshots.inc()
        self.metrics.state_bytes.labels(str(partition)).set(size)

    def assigned(self, count: int) -> None:
        self.metrics.assigned.set(count)


class Health:
    """Liveness (the loop is turning) and readiness (assigned and not draining)."""

    def __init__(self, stall_after_s: float = 60.0) -> None:
        self.stall_after_s = stall_after_s
        self._beat = time.monotonic()
        self.ready = False

    def beat(self) -> None:
        self._beat = time.monotonic()

    @property
    def live(self) -> bool:
        return time.monotonic() - self._beat < self.stall_after_s


def serve(
    metrics: ServiceMetrics, health: Health, host: str, port: int
) -> tuple[ThreadingHTTPServer, int]:
    """Start ``/metrics``, ``/healthz`` and ``/readyz``; returns the server and its port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, status, ctype = generate_latest(metrics.registry), 200, CONTENT_TYPE_LATEST
            elif self.path == "/healthz":
                ok = health.live
                body, status, ctype = (
                    (b"ok\n" if ok else b"stalled\n"),
                    200 if ok else 503,
                    "text/plain",
                )
            elif self.path == "/readyz":
                ok = health.ready
                body, status, ctype = (
                    (b"ready\n" if ok else b"not ready\n"),
                    200 if ok else 503,
                    "text/plain",
                )
            else:
                body, status, ctype = b"not found\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # probes every few seconds would drown the logs

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="vigil-http", daemon=True).start()
    return server, server.server_address[1]
