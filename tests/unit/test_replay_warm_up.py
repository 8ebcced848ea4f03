"""The warm-up's edges: outputs dropped as delivered, and its own progress line (the
exactness of a warmed-up replay is checked on the real broker, tests/integration)."""

from __future__ import annotations

import io

from stream.replay import Progress
from stream.replay_warm_up import DiscardSink


def test_the_discard_sink_reports_every_output_delivered():
    delivered = []
    sink = DiscardSink()
    sink.produce("alerts", key=b"k", value=b"{}", on_delivery=lambda e, m: delivered.append(e))
    sink.produce("dead-letters", value=b"x", on_delivery=lambda e, m: delivered.append(e))
    sink.produce("alerts", value=b"{}")  # no callback asked for
    assert delivered == [None, None]  # the service's delivery tracker waits for these
    assert sink.poll(0) == 0
    assert sink.flush(1.0) == 0


def test_the_progress_line_names_the_warm_up():
    out = io.StringIO()
    progress = Progress(out)
    progress._last = 0.0  # as if the last line were long ago
    progress.show(500, 2000, 250.0, "warm-up")
    progress._last = 0.0
    progress.show(100, 1000, 50.0)
    first, second = out.getvalue().split("\r")[1:]
    assert first.startswith("warm-up: 500/2,000 records  250/s  ETA 6s")
    assert second.startswith("100/1,000 records  50/s  ETA 18s")
    assert len(second) == len(first)  # padded over the longer line it overwrites
