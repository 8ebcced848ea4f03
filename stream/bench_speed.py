"""``vigil bench speed``: our Half-Space Trees against river's, same stream, same process.

Both detectors get the same seeded stream (a labeled data set of ``../shared/datasets``,
shuffled, or a synthetic one), scaled to [0, 1] once beforehand, and score each event
before learning it, at river's default setting (10 trees of height 8, windows of 250) and
at the paper's (25 of height 15). Ours runs the batch path (``score_learn_many``) and,
separately, the per-event one (``score_one`` + ``learn_one`` on dicts); river runs its
per-event path. Tree building is left out of every timing (river builds at its first
``learn_one``, which is done before its clock starts). Speeds are events/s and the ratio
of the two, measured in this run, so a busy machine slows both.

river at 25/15 manages about a thousand events/s, so it only gets the first
``--river-events`` events there; ours is timed on the whole stream and compared with river
(ROC AUC, largest score difference) on the events river saw.
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from river import anomaly

from detectors.hst import HalfSpaceTrees
from detectors.protocol import FloatArray
from detectors.scaling import QuantileScaler

PROG = "vigil bench speed"
DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
SETTINGS = ((10, 8, 250), (25, 15, 250))
# From this height on river is too slow (about a thousand events/s at 25/15) to run the
# whole stream: it gets --river-events events.
_SLOW_RIVER_HEIGHT = 12


@dataclass(frozen=True)
class Stream:
    name: str
    rows: FloatArray  # scaled to [0, 1]
    labels: npt.NDArray[np.int64]
    description: str


@dataclass
class Result:
    setting: str
    ours_events_per_s: float
    river_events_per_s: float
    ratio: float
    ours_roc_auc: float | None
    river_roc_auc: float | None
    ours_roc_auc_all_events: float | None
    ours_per_event_events_per_s: float
    events: int
    river_events: int
    batch: int
    max_abs_score_diff: float
    ours_peak_memory_bytes: int
    max_rss_bytes: int
    state_bytes: int
    dataset: str
    seed: int


def roc_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float | None:
    """ROC AUC (None if only one class): scikit-learn's when installed, else ours."""
    y = np.asarray(labels)
    if len(np.unique(y)) < 2:
        return None
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:  # pragma: no cover - depends on the environment
        return rank_roc_auc(y, scores)
    return float(roc_auc_score(y, scores))


def rank_roc_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Mann-Whitney form of the ROC AUC, ties counted half (average ranks)."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_scores = s[order]
    # Average rank over each run of equal scores.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(s)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    positives = int(y.sum())
    negatives = len(y) - positives
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def load_stream(dataset: str, events: int, seed: int, scaling: str) -> Stream:
    """``events`` rows of a data set (shuffled with ``seed``) or of a synthetic stream."""
    rng = np.random.default_rng(seed)
    path = DATASETS / dataset / f"{dataset}.npz"
    if dataset != "synthetic" and path.exists():
        data = np.load(path)
        rows = np.asarray(data["X"], dtype=np.float64)
        labels = np.asarray(data["y"], dtype=np.int64)
        pick = rng.permutation(len(rows))[:events]
        rows, labels = rows[pick], labels[pick]
        source = f"{dataset} ({len(data['X']):,} rows), {len(rows):,} shuffled with seed {seed}"
    else:
        # Three clusters in 6 dimensions and 1 % of scattered anomalies.
        centres = rng.random((3, 6)) * 0.6 + 0.2
        rows = centres[rng.integers(0, 3, events)] + rng.normal(0.0, 0.04, (events, 6))
        labels = (rng.random(events) < 0.01).astype(np.int64)
        rows[labels == 1] = rng.random((int(labels.sum()), 6))
        source = f"synthetic ({events:,} rows, 1 % anomalies, seed {seed})"
        if dataset != "synthetic":
            source = f"{path} not found, so {source}"
        dataset = "synthetic"
    if scaling == "minmax":
        low, high = rows.min(axis=0), rows.max(axis=0)
        rows = (rows - low) / np.where(high > low, high - low, 1.0)
        how = "min-max scaled with the data's own ranges"
    else:
        names = tuple(f"f{i}" for i in range(rows.shape[1]))
        rows = QuantileScaler(names, seed=seed).transform_learn_many(rows)
        how = "scaled online to [0, 1] by QuantileScaler (each row before it is learned)"
    return Stream(dataset, rows, labels, f"{source}, {rows.shape[1]} features, {how}")


def _names(stream: Stream) -> tuple[str, ...]:
    return tuple(f"f{i}" for i in range(stream.rows.shape[1]))


def _ours(stream: Stream, n_trees: int, height: int, window: int, seed: int) -> HalfSpaceTrees:
    return HalfSpaceTrees(
        _names(stream), n_trees=n_trees, height=height, window_size=window, seed=seed
    )


def _time_batches(
    stream: Stream, setting: tuple[int, int, int], seed: int, batch: int, repeat: int
) -> tuple[float, FloatArray, HalfSpaceTrees]:
    """Best events/s of ``repeat`` runs of ``score_learn_many`` over the stream."""
    best = 0.0
    scores = np.empty(0)
    det = None
    rows = stream.rows
    for _ in range(repeat):
        det = _ours(stream, *setting, seed)  # built before the clock starts
        start = time.perf_counter()
        parts = [det.score_learn_many(rows[i : i + batch]) for i in range(0, len(rows), batch)]
        elapsed = time.perf_counter() - start
        best = max(best, len(rows) / elapsed)
        scores = np.concatenate(parts)
    assert det is not None  # repeat >= 1
    return best, scores, det


def _time_per_event(stream: Stream, setting: tuple[int, int, int], seed: int, n: int) -> float:
    det = _ours(stream, *setting, seed)
    names = _names(stream)
    events = [dict(zip(names, row, strict=True)) for row in stream.rows[:n].tolist()]
    start = time.perf_counter()
    for x in events:
        det.score_one(x)
        det.learn_one(x)
    return len(events) / (time.perf_counter() - start)


def _time_river(
    stream: Stream, setting: tuple[int, int, int], seed: int, n: int
) -> tuple[float, FloatArray]:
    n_trees, height, window = setting
    model = anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window, seed=seed)
    names = _names(stream)
    events = [dict(zip(names, row, strict=True)) for row in stream.rows[:n].tolist()]
    scores = np.empty(len(events))
    # The first event builds the trees: outside the clock, as our constructor is.
    scores[0] = model.score_one(events[0])  # type: ignore[no-untyped-call]
    model.learn_one(events[0])  # type: ignore[no-untyped-call]
    start = time.perf_counter()
    for i in range(1, len(events)):
        x = events[i]
        scores[i] = model.score_one(x)  # type: ignore[no-untyped-call]
        model.learn_one(x)  # type: ignore[no-untyped-call]
    return (len(events) - 1) / (time.perf_counter() - start), scores


def _peak_memory(stream: Stream, setting: tuple[int, int, int], seed: int, batch: int) -> int:
    """tracemalloc's peak while building ours and running it over the stream."""
    tracemalloc.start()
    try:
        det = _ours(stream, *setting, seed)
        for i in range(0, len(stream.rows), batch):
            det.score_learn_many(stream.rows[i : i + batch])
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def run_setting(
    stream: Stream,
    setting: tuple[int, int, int],
    *,
    seed: int,
    batch: int,
    repeat: int,
    river_events: int,
    per_event: int,
) -> Result:
    n_trees, height, window = setting
    # Warm the jit (compiled or loaded from numba's cache) outside every clock.
    _ours(stream, 2, 2, 4, seed).score_learn_many(stream.rows[:50])
    ours_speed, ours_scores, det = _time_batches(stream, setting, seed, batch, repeat)
    n_river = min(len(stream.rows), river_events)
    river_speed, river_scores = _time_river(stream, setting, seed, n_river)
    labels = stream.labels
    return Result(
        setting=f"{n_trees}/{height}/{window}",
        ours_events_per_s=ours_speed,
        river_events_per_s=river_speed,
        ratio=ours_speed / river_speed,
        ours_roc_auc=roc_auc(labels[:n_river], ours_scores[:n_river]),
        river_roc_auc=roc_auc(labels[:n_river], river_scores),
        ours_roc_auc_all_events=roc_auc(labels, ours_scores),
        ours_per_event_events_per_s=_time_per_event(stream, setting, seed, per_event),
        events=len(stream.rows),
        river_events=n_river,
        batch=batch,
        max_abs_score_diff=float(np.max(np.abs(ours_scores[:n_river] - river_scores))),
        ours_peak_memory_bytes=_peak_memory(stream, setting, seed, batch),
        max_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        state_bytes=len(pickle.dumps(det)),
        dataset=stream.name,
        seed=seed,
    )


def _setting(text: str) -> tuple[int, int, int]:
    try:
        n_trees, height, window = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected trees/height/window, not {text!r}") from None
    return n_trees, height, window


def _auc(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _table(stream: Stream, results: list[Result], repeat: int) -> str:
    lines = [
        f"{PROG}: {stream.description}",
        f"ours: score_learn_many in batches of {results[0].batch:,}, best of {repeat}; "
        "river: score_one + learn_one per event; tree building not timed",
        "",
        f"{'setting':<11} {'ours ev/s':>11} {'river ev/s':>11} {'ratio':>7} "
        f"{'AUC ours':>9} {'AUC river':>9} {'max|diff|':>9} {'per-event':>10} "
        f"{'peak MB':>8} {'state MB':>8}",
    ]
    notes = []
    for r in results:
        mark = "*" if r.river_events < r.events else " "
        lines.append(
            f"{r.setting:<11} {r.ours_events_per_s:>11,.0f} {r.river_events_per_s:>10,.0f}{mark} "
            f"{r.ratio:>6,.0f}x {_auc(r.ours_roc_auc):>9} {_auc(r.river_roc_auc):>9} "
            f"{r.max_abs_score_diff:>9.1e} {r.ours_per_event_events_per_s:>10,.0f} "
            f"{r.ours_peak_memory_bytes / 1e6:>8.1f} {r.state_bytes / 1e6:>8.2f}"
        )
        if mark == "*":
            notes.append(
                f"* {r.setting}: river ran the first {r.river_events:,} events only; ours ran "
                f"all {r.events:,} for its speed (ROC AUC {_auc(r.ours_roc_auc_all_events)} "
                f"on them) and is compared with river on the same {r.river_events:,}."
            )
    lines += [
        "",
        *notes,
        "AUC: ROC AUC on the events both ran; max|diff|: largest score difference there; "
        "per-event: our score_one + learn_one on dicts, events/s; peak MB: tracemalloc peak "
        "of ours (build and run); state MB: our pickled state.",
    ]
    return "\n".join(lines)


def bench_speed_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Our Half-Space Trees against river's: same stream, same settings, "
        "same process; events/s, their ratio, ROC AUC, memory and state size.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per setting")
    parser.add_argument("--events", type=int, default=40_000, help="stream length")
    parser.add_argument("--seed", type=int, default=0, help="shuffle, scaler and trees")
    parser.add_argument(
        "--dataset",
        default="shuttle",
        help="a data set of ../shared/datasets, or 'synthetic' (also the fallback)",
    )
    parser.add_argument("--scaling", choices=("quantile", "minmax"), default="quantile")
    parser.add_argument("--batch", type=int, default=1000, help="rows per score_learn_many")
    parser.add_argument("--repeat", type=int, default=3, help="our runs, best one counts")
    parser.add_argument(
        "--river-events",
        type=int,
        default=5000,
        help="events river gets at deep settings (height >= 12); all of them otherwise",
    )
    parser.add_argument(
        "--per-event", type=int, default=20_000, help="events timed on our per-event path"
    )
    parser.add_argument(
        "--setting",
        type=_setting,
        action="append",
        help="trees/height/window, repeatable (default: 10/8/250 and 25/15/250)",
    )
    args = parser.parse_args(argv)
    if args.events < 2 or args.batch < 1 or args.repeat < 1:
        parser.error("--events must be >= 2, --batch and --repeat >= 1")
    stream = load_stream(args.dataset, args.events, args.seed, args.scaling)
    results = []
    for setting in args.setting or SETTINGS:
        deep = setting[1] >= _SLOW_RIVER_HEIGHT
        result = run_setting(
            stream,
            setting,
            seed=args.seed,
            batch=args.batch,
            repeat=args.repeat,
            river_events=args.river_events if deep else args.events,
            per_event=args.per_event,
        )
        results.append(result)
        if args.json:
            print(json.dumps(asdict(result)), flush=True)
    if not args.json:
        print(_table(stream, results, args.repeat))
    sys.stdout.flush()
    return 0


def _main() -> int:  # pragma: no cover - ``python -m stream.bench_speed``
    return bench_speed_cli(sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
