"""The per-event pass of ``EventScorer.score_batch``: features in, rows grouped by model out.

For each event in order: its event time, its features (which update the entity state),
its row of feature values in its model's order and, when arrivals are tracked, the values
its user arrives at. Events are grouped by the model that scores them. An event that fails
(a missing field, an unknown event type) is set aside with why, and the batch goes on.

Its own module because it runs for every event and is compiled with mypyc (setup.py),
next to the extractor and the arrival tracker it calls: compiled code calls them without
the interpreter's per-call overhead. The rest of a batch (the detectors, thresholds and
explanations, per chunk of rows) stays in detectors/scoring.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from detectors.arrival_tracker import ArrivalTracker
from detectors.features.extractor import FeatureExtractor, event_time_s

Row = tuple[float, ...]
RowOf = Callable[[Mapping[str, float]], Row]


class ModelRows:
    """One model's events of a batch: their raw features, their rows (in the model's
    feature order) and their places in the batch, in the batch's order."""

    def __init__(self) -> None:
        self.raws: list[dict[str, float]] = []
        self.rows: list[Row] = []
        self.indices: list[int] = []


class BatchRows:
    """What the per-event pass made of a batch."""

    def __init__(self, size: int) -> None:
        # By model key, in the order the batch first names each.
        self.by_model: dict[str, ModelRows] = {}
        # By place in the batch: why the event could not be scored.
        self.failures: dict[int, str] = {}
        # By place in the batch: the values its user arrives at (empty when not tracked).
        self.arrivals: list[tuple[str, ...]] = [()] * size


def extract_rows(
    extractor: FeatureExtractor,
    tracker: ArrivalTracker | None,
    events: Sequence[Mapping[str, Any]],
    row_of: Callable[[str], RowOf],
    model_key: Callable[[str, Mapping[str, float]], str] | None,
) -> BatchRows:
    """Run ``events`` in order through ``extractor`` (and ``tracker``, if given).

    ``row_of(event_type)`` gives the function that turns that type's features into its
    model's row; ``model_key(event_type, features)`` names the model of an event (None:
    its event type does).
    """
    batch = BatchRows(len(events))
    row_functions: dict[str, RowOf] = {}
    for i, event in enumerate(events):
        try:
            # Event time parsed once, for the features and the arrivals alike.
            t = event_time_s(event["occurred_at"])
            features = extractor.extract(event, t)
            event_type: str = event["event_type"]
            row_function = row_functions.get(event_type)
            if row_function is None:
                row_function = row_functions[event_type] = row_of(event_type)
            row = row_function(features)
            if tracker is not None:
                batch.arrivals[i] = tracker.arrivals_of(event, t)
        except Exception as exc:  # the caller dead-letters it; the batch goes on
            batch.failures[i] = f"{type(exc).__name__}: {exc}"
            continue
        key = event_type if model_key is None else model_key(event_type, features)
        rows = batch.by_model.get(key)
        if rows is None:
            rows = batch.by_model[key] = ModelRows()
        rows.raws.append(features)
        rows.rows.append(row)
        rows.indices.append(i)
    return batch
