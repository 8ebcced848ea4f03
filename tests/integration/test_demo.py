"""``vigil demo`` on a small stream and the real broker: both phases, the reviewer, the
restore and every figure of the on-call summary are computed (the targets themselves are
benchmarks, not asserted here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.demo import _parser, run_demo
from stream.demo_measure import AFTER, BEFORE, EVENT_LEVEL, INCIDENTS, PATTERNS
from stream.demo_report import summary

pytestmark = pytest.mark.integration


def test_demo_runs_the_label_loop_and_reports_what_on_call_sees(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    args = _parser().parse_args(
        [
            "--events", "8000",
            "--seed", "5",
            "--partitions", "2",
            "--warmup", "50",
            "--quantile", "0.98",
            "--attack-rate", "0.0008",
            "--min-labels", "10",
            "--max-labels", "60",
            "--workdir", str(tmp_path),
        ]
    )  # fmt: skip
    outcome = run_demo(args, kafka_bootstrap)

    assert sum(outcome.phase_events) == outcome.events > 7_800
    assert outcome.dead_letters == outcome.malformed > 0
    # The reviewer labelled after phase 1; phase 2 read the labels and gated on them.
    assert 0 < len(outcome.review.labels) <= 60
    assert len({label["alert_id"] for label in outcome.review.labels}) == len(outcome.review.labels)
    assert outcome.gate, "phase 2 logged the thresholds the labels set"
    # Phase 2 resumed every partition from phase 1's snapshots.
    assert outcome.restore is not None
    assert outcome.restore.partitions == outcome.restore.from_snapshot == 2
    assert outcome.restore.snapshot_bytes > 0

    views = outcome.measure.views
    assert list(views) == [EVENT_LEVEL, BEFORE, AFTER, INCIDENTS, PATTERNS]
    event_level, before, after = views[EVENT_LEVEL], views[BEFORE], views[AFTER]
    assert event_level.events == outcome.phase_events[1]
    assert event_level.instances == after.instances == outcome.instances_in_phase2 > 0
    assert event_level.alerts > 0
    assert event_level.precision is not None
    # On-call sees incident alerts, not pattern alerts: fewer, each grouping patterns.
    assert before.alerts == event_level.alerts + views[INCIDENTS].alerts
    assert views[INCIDENTS].pattern_alerts == 0
    assert views[INCIDENTS].incident_alerts == views[INCIDENTS].alerts
    assert 0 < views[INCIDENTS].alerts < views[PATTERNS].alerts
    # Labels only hold event alerts back.
    assert after.event_alerts <= event_level.alerts
    assert after.caught > 0
    assert after.recall is not None
    assert after.median_delay_events is not None
    assert after.median_delay_s is not None
    assert after.alerts_per_million > 0
    assert outcome.measure.ratio() is not None

    text = summary(outcome)
    for needle in (
        "Phase 2 as on-call sees it",
        "after labels",
        "incidents only",
        "state restore",
        "reviewer",
    ):
        assert needle in text
