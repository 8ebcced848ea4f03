"""``vigil tune`` end to end on small synthetic scores and labels files.

The expected thresholds are computed here by brute force, with scipy's Wilson interval, not
with the code under test: every distinct labeled score is tried, lowest first.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from jsonschema import Draft202012Validator
from scipy.stats import binomtest

from detectors.scoring import ScoringConfig
from schemas import load_schema
from schemas.validation import draft07_incompatibilities
from stream.alerts import alert_id
from stream.cli import main
from stream.review import make_label
from stream.score_tap import ScoreParts, tapped
from stream.scores import read_scores
from stream.service import PartitionScorers
from stream.tune import tune_cli
from tests.unit.events import make_event

DETECTOR = "hst/1"
TARGET = 0.9
MIN_LABELS = 30
MIN_SUPPORT = 10


def _brute_force_threshold(
    labeled: list[tuple[float, bool]], target: float, min_support: int
) -> float | None:
    """The lowest labeled score t whose labels at or above t have a Wilson lower bound
    (95%) on precision of at least ``target``, with at least ``min_support`` of them."""
    for t in sorted({score for score, _ in labeled}):
        above = [is_true for score, is_true in labeled if score >= t]
        k, n = sum(above), len(above)
        low = binomtest(k, n).proportion_ci(0.95, method="wilson").low
        if n >= min_support and low >= target:
            return t
    return None


def _write_lines(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path


def _score_row(event_id: str, event_type: str, score: float, cohort: str = "established"):
    return {
        "event_id": event_id,
        "event_type": event_type,
        "cohort": cohort,
        "detector": DETECTOR,
        "score": score,
        "threshold": 0.5,
        "alert": score > 0.5,
        "occurred_at": "2026-11-02T10:00:00.000Z",
    }


@pytest.fixture
def replay(tmp_path: Path) -> dict[str, Any]:
    """Payments: 600 events, every one in the ground truth, nearly all attacks above 0.75.
    Orders: 300 events, only 12 in the ground truth (too few: the budget decides)."""
    rnd = random.Random(5)
    scores, truth, expected = [], [], {}
    payments: list[tuple[float, bool]] = []
    for i in range(600):
        score = round(rnd.random(), 3)  # rounding makes ties, which share a threshold
        is_attack = rnd.random() < (0.97 if score > 0.75 else 0.03)
        scores.append(_score_row(f"p-{i}", "payment.attempted", score))
        truth.append({"event_id": f"p-{i}", "attack": "card_testing" if is_attack else None})
        payments.append((score, is_attack))
    orders = []
    for i in range(300):
        score = rnd.random()
        orders.append(score)
        scores.append(_score_row(f"o-{i}", "order.placed", score))
        if i < 12:
            truth.append({"event_id": f"o-{i}", "attack": None, "attack_id": None})
    expected["payment.attempted"] = _brute_force_threshold(payments, TARGET, MIN_SUPPORT)
    ordered = sorted(orders)
    # The budget: the 0.995 quantile, as an observed score ("higher" interpolation).
    expected["order.placed"] = ordered[int(np.ceil(0.995 * (len(ordered) - 1)))]
    return {
        "scores": _write_lines(tmp_path / "scores.jsonl", scores),
        "truth": _write_lines(tmp_path / "truth.jsonl", truth),
        "payments": payments,
        "orders": orders,
        "expected": expected,
    }


def _run(tmp_path: Path, *args: str | Path) -> tuple[int, dict[str, Any] | None]:
    out = tmp_path / "thresholds.json"
    code = tune_cli([*map(str, args), "--output", str(out)])
    return code, json.loads(out.read_text()) if code == 0 else None


def _by_segment(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["segment"]: row for row in document["thresholds"]}


def test_threshold_is_the_lowest_whose_wilson_bound_meets_the_target(replay, tmp_path, capsys):
    code, document = _run(tmp_path, "--scores", replay["scores"], "--truth", replay["truth"])
    assert code == 0
    assert document is not None
    payment = _by_segment(document)["payment.attempted"]
    expected = replay["expected"]["payment.attempted"]
    assert expected is not None  # the data are made so that the target is reachable
    assert payment["source"] == "labels"
    assert payment["threshold"] == expected
    above = [is_true for score, is_true in replay["payments"] if score >= expected]
    assert payment["labels_at_threshold"] == len(above)
    assert payment["precision"] == sum(above) / len(above)
    assert payment["precision_lower_bound"] >= TARGET
    total_true = sum(is_true for _, is_true in replay["payments"])
    assert payment["recall"] == pytest.approx(sum(above) / total_true)
    assert payment["events"] == payment["labels"] == 600
    assert payment["alerts"] == len(above)  # every event is labeled
    # One notch lower would not have met the target: the brute force says so by construction,
    # and the table printed to stdout names the segment and its source.
    printed = capsys.readouterr().out
    assert "payment.attempted" in printed
    assert "labels" in printed


def test_too_few_labels_fall_back_to_the_alert_budget(replay, tmp_path):
    code, document = _run(tmp_path, "--scores", replay["scores"], "--truth", replay["truth"])
    assert code == 0
    assert document is not None
    order = _by_segment(document)["order.placed"]
    assert order["source"] == "budget"
    assert order["labels"] == 12 < MIN_LABELS
    assert order["threshold"] == replay["expected"]["order.placed"]
    assert order["alerts"] == sum(s >= order["threshold"] for s in replay["orders"])
    # With a lower bar the same labels are enough to decide (no score meets the target: none
    # of the twelve is an attack), so the threshold goes above every labeled score.
    code, document = _run(
        tmp_path, "--scores", replay["scores"], "--truth", replay["truth"], "--min-labels", "10"
    )
    assert document is not None
    order = _by_segment(document)["order.placed"]
    assert order["source"] == "labels_unmet"
    assert order["threshold"] > max(replay["orders"][:12])


def test_the_document_follows_its_contract(replay, tmp_path):
    _, document = _run(tmp_path, "--scores", replay["scores"], "--truth", replay["truth"])
    schema = load_schema("thresholds.v1.json")
    assert draft07_incompatibilities(schema) == []
    Draft202012Validator.check_schema(schema)
    assert list(Draft202012Validator(schema).iter_errors(document)) == []
    assert document is not None
    assert document["settings"]["target"] == TARGET
    assert document["inputs"]["label_kind"] == "truth"


def test_csv_table_is_the_curve_and_png_is_a_png(replay, tmp_path):
    table, plot = tmp_path / "pr.csv", tmp_path / "pr.png"
    code, _ = _run(
        tmp_path,
        "--scores",
        replay["scores"],
        "--truth",
        replay["truth"],
        "--table",
        table,
        "--plot",
        plot,
    )
    assert code == 0
    with table.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["segment"] == "payment.attempted"]
    labeled = replay["payments"]
    thresholds = sorted({score for score, _ in labeled})
    assert [float(r["threshold"]) for r in rows] == thresholds
    total_true = sum(is_true for _, is_true in labeled)
    for row, t in zip(rows, thresholds, strict=True):
        above = [is_true for score, is_true in labeled if score >= t]
        assert int(row["alerts"]) == len(above)
        assert float(row["precision"]) == pytest.approx(sum(above) / len(above))
        assert float(row["recall"]) == pytest.approx(sum(above) / total_true)
        wilson = binomtest(sum(above), len(above)).proportion_ci(0.95, method="wilson").low
        assert float(row["wilson_lb"]) == pytest.approx(wilson, abs=1e-12)
    assert [float(r["threshold"]) for r in rows if r["chosen"] == "1"] == [
        replay["expected"]["payment.attempted"]
    ]
    data = plot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000


def test_reviewer_labels_join_by_alert_id_and_keep_the_latest_verdict(tmp_path):
    scores = [_score_row(f"e-{i}", "payment.attempted", i / 100) for i in range(100)]
    scores_file = _write_lines(tmp_path / "scores.jsonl", scores)
    labels = []
    for i in range(60, 100):
        alert = {
            "alert_id": alert_id(DETECTOR, "event", [f"e-{i}"]),
            "detector": DETECTOR,
            "event_type": "payment.attempted",
            "score": i / 100,
        }
        verdict = "true_positive" if i >= 70 else "false_positive"
        if i == 60:
            verdict = "unsure"
        if i == 75:  # first judged false, then corrected: the later verdict counts
            labels.append(make_label(alert, "false_positive", "ana", "2026-11-02T10:00:00.000Z"))
        labels.append(make_label(alert, verdict, "ana", "2026-11-02T11:00:00.000Z"))
    # A label of another detector's alert matches no scored event.
    other = {**alert, "alert_id": alert_id("iforest-asd/1", "event", ["e-99"])}
    labels.append(make_label(other, "true_positive", "ana", "2026-11-02T11:00:00.000Z"))
    labels_file = _write_lines(tmp_path / "labels.jsonl", labels)
    code, document = _run(
        tmp_path, "--scores", scores_file, "--labels", labels_file, "--target", "0.8"
    )
    assert code == 0
    assert document is not None
    (row,) = document["thresholds"]
    labeled = [(i / 100, i >= 70) for i in range(61, 100)]
    # e-75's corrected verdict counts: 30 true of 39 decisive; e-60 is unsure.
    assert (row["labels"], row["labels_true"], row["labels_unsure"]) == (39, 30, 1)
    assert row["threshold"] == _brute_force_threshold(labeled, 0.8, MIN_SUPPORT) == 0.69
    assert (row["precision"], row["recall"]) == (30 / 31, 1.0)
    assert document["inputs"]["label_kind"] == "reviewer"


def test_segments_by_event_type_and_cohort(tmp_path):
    rows = [
        _score_row(f"e-{i}", "order.placed", i / 50, "new_account" if i % 2 else "established")
        for i in range(50)
    ]
    scores_file = _write_lines(tmp_path / "scores.jsonl", rows)
    truth = _write_lines(tmp_path / "truth.jsonl", [{"event_id": "e-1", "attack": None}])
    code, document = _run(
        tmp_path, "--scores", scores_file, "--truth", truth, "--segment", "event_type,cohort"
    )
    assert code == 0
    assert document is not None
    assert sorted(_by_segment(document)) == ["order.placed/established", "order.placed/new_account"]
    assert document["settings"]["segment_by"] == ["event_type", "cohort"]


# ---------------------------------------------------------------- bad input: exit 2, no traceback


def _fails(capsys, argv: list[str]) -> str:
    assert tune_cli(argv) == 2
    err: str = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_missing_file_is_named(replay, tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    out = str(tmp_path / "t.json")
    err = _fails(
        capsys, ["--scores", str(missing), "--truth", str(replay["truth"]), "--output", out]
    )
    assert str(missing) in err
    err = _fails(
        capsys, ["--scores", str(replay["scores"]), "--truth", str(missing), "--output", out]
    )
    assert str(missing) in err


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"event_id": "x", "event_type": "order.placed", "detector": "d"}', "missing score"),
        (b'{"event_id": "x", "event_type": "t", "detector": "d", "score": "high"}', "number"),
        (b'{"event_id": "x", "event_type": "t", "detector": "d", "score": NaN}', "not JSON"),
    ],
)
def test_malformed_scores_line_is_named_with_its_number(replay, tmp_path, capsys, line, problem):
    lines = replay["scores"].read_bytes().splitlines(keepends=True)
    lines.insert(2, line + b"\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join(lines))
    argv = ["--scores", str(bad), "--truth", str(replay["truth"]), "--output", "x.json"]
    err = _fails(capsys, argv)
    assert f"{bad}:3:" in err
    assert problem in err


def test_malformed_label_lines_are_named(replay, tmp_path, capsys):
    bad_truth = _write_lines(tmp_path / "truth.jsonl", [{"event_id": "a"}, {"attack": None}])
    argv = ["--scores", str(replay["scores"]), "--truth", str(bad_truth), "--output", "x.json"]
    assert f"{bad_truth}:2:" in _fails(capsys, argv)
    bad_labels = _write_lines(tmp_path / "labels.jsonl", [{"alert_id": "al-1", "verdict": "x"}])
    argv = ["--scores", str(replay["scores"]), "--labels", str(bad_labels), "--output", "x.json"]
    err = _fails(capsys, argv)
    assert f"{bad_labels}:1: not a label.v1 record" in err


def test_cohort_segments_need_cohorts(tmp_path, capsys):
    row = _score_row("e-1", "order.placed", 0.5)
    del row["cohort"]
    scores_file = _write_lines(tmp_path / "scores.jsonl", [row])
    truth = _write_lines(tmp_path / "truth.jsonl", [])
    argv = ["--scores", str(scores_file), "--truth", str(truth), "--output", "x.json"]
    err = _fails(capsys, [*argv, "--segment", "event_type,cohort"])
    assert "no cohort" in err


def test_empty_scores_file_and_bad_flags(tmp_path, capsys):
    empty = _write_lines(tmp_path / "scores.jsonl", [])
    argv = ["--scores", str(empty), "--truth", str(empty), "--output", "x.json"]
    assert "no scored events" in _fails(capsys, argv)
    with pytest.raises(SystemExit) as exc:
        tune_cli([*argv, "--target", "1.5"])
    assert exc.value.code == 2


def test_registered_in_the_cli(replay, tmp_path):
    out = tmp_path / "t.json"
    argv = ["tune", "--scores", str(replay["scores"]), "--truth", str(replay["truth"])]
    assert main([*argv, "--output", str(out)]) == 0
    assert out.exists()


# ---------------------------------------------------------------- the replay's scores file


def test_score_tap_writes_every_scored_event_and_changes_nothing(tmp_path):
    events = [make_event("payment.attempted", n, seconds=n * 30.0) for n in range(40)]
    events += [make_event("order.placed", n, seconds=n * 30.0 + 5) for n in range(40, 60)]
    config = ScoringConfig(warmup=5)
    plain = PartitionScorers(config)(0).score_batch(events)
    path = tmp_path / "scores.jsonl"
    with path.open("wb") as out:
        tapped_results = tapped(PartitionScorers(config), lambda _: out)(0).score_batch(events)
    assert tapped_results == plain
    records = read_scores(path)
    assert [r.event_id for r in records] == [e["event_id"] for e in events]
    assert [r.score for r in records] == [s.score for s in plain]  # type: ignore[union-attr]
    assert {r.cohort for r in records} == {"new_account"}  # one user, minutes old
    assert {r.detector for r in records} == {"hst/1"}


def test_score_tap_passes_the_learning_guard_through(tmp_path):
    # The service always passes ``exclude``: the tap must take it and hand it on.
    events = [make_event("payment.attempted", n, seconds=n * 30.0) for n in range(60)]
    exclude = [n % 3 == 0 for n in range(60)]
    config = ScoringConfig(warmup=5, window_size=10)
    guarded = PartitionScorers(config)(0).score_batch(events, exclude)
    unguarded = PartitionScorers(config)(0).score_batch(events)
    assert guarded != unguarded  # what was kept out of learning changes later scores
    with (tmp_path / "scores.jsonl").open("wb") as out:
        scorer = tapped(PartitionScorers(config), lambda _: out)(0)
        assert scorer.score_batch(events, exclude) == guarded


def test_score_parts_join_partition_after_partition(tmp_path):
    parts = ScoreParts(tmp_path / "scores.jsonl")
    # Batches of partitions 2 and 0 interleaved, as a replay may meet them; 1 scores nothing.
    for partition, line in [(2, b"c1"), (0, b"a1"), (2, b"c2"), (0, b"a2")]:
        parts.writer(partition).write(line + b"\n")
    parts.close()
    parts.join([2, 1, 0])
    assert (tmp_path / "scores.jsonl").read_bytes() == b"a1\na2\nc1\nc2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.jsonl"]


def test_score_parts_a_failed_replay_left_are_discarded(tmp_path):
    target = tmp_path / "scores[1].jsonl"  # glob characters in the name are just characters
    parts = ScoreParts(target)
    parts.writer(1).write(b"stale\n")
    parts.close()
    (tmp_path / "other.jsonl.part-1").write_bytes(b"not ours\n")
    parts.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.jsonl.part-1"]
    parts.join([1])  # nothing left of partition 1 to join
    assert target.read_bytes() == b""
