"""``vigil tune``: precision-targeted thresholds, offline, from a replay's scores and labels.

For each detector and segment (event type, or event type and cohort) the threshold is the
lowest one whose Wilson lower bound on the labels' precision meets the target; with fewer
labels than ``--min-labels`` the alert budget decides (``detectors/tuning.py``, which runs
``detectors/precision.py``'s rule). Scores come from ``vigil replay --output-scores``;
labels are reviewers' verdicts (``label.v1.json`` lines, joined to events by alert id) or
the generator's ground truth (every event labeled). Writes the thresholds
(``schemas/thresholds.v1.json``), and optionally the precision-recall curves as a CSV
table and a PNG plot. Bad input exits 2 with the file and line.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import orjson

from detectors.precision import PrecisionConfig
from detectors.tuning import SegmentTune, tune_segments
from schemas.validation import validate_thresholds
from stream.reviews import read_review_file
from stream.scores import InputError, ScoreRecord, json_lines, read_scores

SEGMENTINGS: Final = ("event_type", "event_type,cohort")
_DEFAULTS: Final = PrecisionConfig()


def read_truth(path: Path) -> dict[str, bool]:
    """event_id -> is an attack, from the generator's labels file (``--labels-out``)."""
    truth = {}
    for number, row in json_lines(path):
        event_id, attack = row.get("event_id"), row.get("attack")
        if not isinstance(event_id, str) or not isinstance(attack, str | None):
            raise InputError(path, "need event_id (string) and attack (string or null)", number)
        truth[event_id] = attack is not None
    return truth


def read_reviews(path: Path) -> dict[str, bool | None]:
    """alert_id -> verdict (``None``: unsure) from ``label.v1.json`` lines; an alert labeled
    more than once keeps its latest verdict, as the compacted labels topic does."""
    return {key: review.verdict for key, review in read_review_file(path).items()}


def segment_of(record: ScoreRecord, by: str, path: Path) -> str:
    if by == "event_type":
        return record.event_type
    if record.cohort is None:
        raise InputError(path, f"event {record.event_id} has no cohort; segment by event_type")
    return f"{record.event_type}/{record.cohort}"


def join_truth(records: Sequence[ScoreRecord], truth: Mapping[str, bool]) -> dict[int, bool]:
    """Index of each scored event the ground truth knows -> whether it is an attack."""
    return {i: truth[r.event_id] for i, r in enumerate(records) if r.event_id in truth}


def join_reviews(
    records: Sequence[ScoreRecord], reviews: Mapping[str, bool | None]
) -> dict[int, bool | None]:
    """Index of each scored event whose alert was labeled -> verdict (``None``: unsure)."""
    # Here, not at the top: stream.alerts loads the detectors (a second), which only
    # reviewers' labels need.
    from stream.alerts import alert_id

    labels: dict[int, bool | None] = {}
    # Labels name alerts; an event alert's id is a hash of its detector and event id.
    for i, record in enumerate(records):
        key = alert_id(record.detector, "event", [record.event_id])
        if key in reviews:
            labels[i] = reviews[key]
    return labels


def thresholds_document(
    tuned: Sequence[SegmentTune], config: PrecisionConfig, inputs: dict[str, str], by: str
) -> dict[str, Any]:
    """The ``thresholds.v1.json`` document, validated."""
    document = {
        "schema_version": 1,
        "alert_when": "score >= threshold",
        "settings": {
            "target": config.target,
            "confidence": config.confidence,
            "min_labels": config.min_labels,
            "min_support": config.min_support,
            "budget_quantile": config.budget_quantile,
            "segment_by": by.split(","),
        },
        "inputs": inputs,
        "thresholds": [
            {
                "detector": t.detector,
                "segment": t.segment,
                "threshold": t.threshold,
                "source": t.source,
                "precision": _or_none(t.precision),
                "precision_lower_bound": t.precision_lower_bound,
                "recall": _or_none(t.recall),
                "labels": t.labels,
                "labels_true": t.labels_true,
                "labels_unsure": t.labels_unsure,
                "labels_at_threshold": t.labels_at_threshold,
                "events": t.events,
                "alerts": t.alerts,
            }
            for t in tuned
        ],
    }
    validate_thresholds(document)
    return document


def _or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


CURVE_COLUMNS: Final = (
    "detector",
    "segment",
    "threshold",
    "precision",
    "wilson_lb",
    "recall",
    "alerts",
    "chosen",
)


def write_table(tuned: Sequence[SegmentTune], path: Path) -> None:
    """Every segment's labeled curve as CSV: one row per distinct labeled score, ascending;
    ``alerts`` counts the decisive labels at or above it, ``chosen`` marks the threshold."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CURVE_COLUMNS)
        for t in tuned:
            for row in t.result.curve:
                chosen = t.source == "labels" and row.threshold == t.threshold
                # repr keeps every float exact, so the table reads back to the same curve.
                writer.writerow(
                    [t.detector, t.segment, *(repr(v) for v in row), "1" if chosen else "0"]
                )


def format_table(tuned: Sequence[SegmentTune], config: PrecisionConfig) -> str:
    def number(value: float) -> str:
        return "-" if math.isnan(value) else f"{value:.3f}"

    header = (
        f"{'detector':<14} {'segment':<32} {'source':<12} {'threshold':>10} {'precision':>9}"
        f" {'lower':>6} {'recall':>6} {'labels':>7} {'alerts':>8} {'events':>9}"
    )
    lines = [
        f"target precision {config.target:g} (Wilson lower bound, {config.confidence:g});"
        f" alert when score >= threshold",
        header,
    ]
    for t in tuned:
        lines.append(
            f"{t.detector:<14} {t.segment:<32} {t.source:<12} {t.threshold:>10.4f}"
            f" {number(t.precision):>9} {t.precision_lower_bound:>6.3f} {number(t.recall):>6}"
            f" {t.labels:>7,} {t.alerts:>8,} {t.events:>9,}"
        )
    return "\n".join(lines)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil tune", description=__doc__)
    parser.add_argument("--scores", type=Path, required=True, help="vigil replay --output-scores")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--labels", type=Path, help="reviewers' labels, label.v1 JSON lines")
    source.add_argument("--truth", type=Path, help="the generator's labels file (ground truth)")
    parser.add_argument("--target", type=_fraction, default=_DEFAULTS.target)
    parser.add_argument("--confidence", type=_fraction, default=_DEFAULTS.confidence)
    parser.add_argument(
        "--min-labels",
        type=_positive,
        default=_DEFAULTS.min_labels,
        help="decisive labels a segment needs; fewer: the alert budget decides",
    )
    parser.add_argument(
        "--min-support",
        type=_positive,
        default=_DEFAULTS.min_support,
        help="decisive labels a threshold needs at or above it",
    )
    parser.add_argument("--budget-quantile", type=_fraction, default=_DEFAULTS.budget_quantile)
    parser.add_argument("--segment", choices=SEGMENTINGS, default="event_type")
    parser.add_argument("--output", type=Path, required=True, help="thresholds JSON")
    parser.add_argument("--table", type=Path, help="precision-recall curves as CSV")
    parser.add_argument("--plot", type=Path, help="precision-recall curves as PNG")
    return parser


def tune_cli(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    config = PrecisionConfig(
        target=args.target,
        confidence=args.confidence,
        min_labels=args.min_labels,
        min_support=args.min_support,
        budget_quantile=args.budget_quantile,
    )
    try:
        records = read_scores(args.scores)
        keys = [(r.detector, segment_of(r, args.segment, args.scores)) for r in records]
        labels: Mapping[int, bool | None]
        unmatched = 0
        if args.truth is not None:
            labels = join_truth(records, read_truth(args.truth))
        else:
            reviews = read_reviews(args.labels)
            labels = join_reviews(records, reviews)
            unmatched = len(reviews) - len(labels)
    except InputError as exc:
        print(f"vigil tune: {exc}", file=sys.stderr)
        return 2
    if unmatched:
        print(
            f"vigil tune: {unmatched:,} labels match no scored event (another detector,"
            " another range, or pattern alerts); left out",
            file=sys.stderr,
        )
    tuned = tune_segments(keys, [r.score for r in records], labels, config)
    inputs = {
        "scores": str(args.scores),
        "labels": str(args.truth or args.labels),
        "label_kind": "truth" if args.truth is not None else "reviewer",
    }
    document = thresholds_document(tuned, config, inputs, args.segment)
    writers: list[tuple[Path | None, Callable[[Path], None]]] = [
        (args.output, lambda p: _write_json(document, p)),
        (args.table, lambda p: write_table(tuned, p)),
        (args.plot, lambda p: _plot(tuned, config.target, p)),
    ]
    for path, write in writers:
        if path is None:
            continue
        try:
            write(path)
        except OSError as exc:
            print(f"vigil tune: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    print(format_table(tuned, config))
    return 0


def _write_json(document: dict[str, Any], path: Path) -> None:
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))


def _plot(tuned: Sequence[SegmentTune], target: float, path: Path) -> None:
    from stream.tune_plot import plot_curves  # matplotlib only when a plot is asked for

    plot_curves(tuned, target, path)
