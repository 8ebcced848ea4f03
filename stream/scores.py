"""The scores file: every scored event of a replay, one JSON line each, for ``vigil tune``.

Alerts alone cannot tune a threshold: they only hold scores above the threshold that was in
force, and a lower threshold needs the scores below it too. ``vigil replay --output-scores``
writes one line per scored event (``stream/score_tap.py``); ``read_scores`` reads them back
and names the file and line of anything it cannot use. Light on imports (no detectors), so
that ``vigil tune`` starts fast.

A line: ``{"event_id", "event_type", "cohort", "detector", "score", "threshold", "alert",
"occurred_at"}``; ``cohort`` is ``new_account`` (the acting account is younger than a day,
as in ``detectors/attributes.py``) or ``established``; only ``cohort``, ``threshold``,
``alert`` and ``occurred_at`` may be missing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, NamedTuple

import orjson


class InputError(ValueError):
    """An input file that cannot be used, with the file and line (1-based) it is about."""

    def __init__(self, path: Path, detail: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {detail}")
        self.path = path
        self.line = line


def json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) per non-blank line; ``InputError`` for a missing file or a line
    that is not a JSON object."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(path, exc.strerror or str(exc)) from exc
    with handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise InputError(path, f"not JSON ({exc})", number) from exc
            if not isinstance(value, dict):
                raise InputError(path, "not a JSON object", number)
            yield number, value


class ScoreRecord(NamedTuple):
    event_id: str
    event_type: str
    cohort: str | None
    detector: str
    score: float


_TEXTS: Final = ("event_id", "event_type", "detector")


def read_scores(path: Path) -> list[ScoreRecord]:
    """The scored events of ``path``; ``InputError`` names the first line it cannot use."""
    records = []
    for number, row in json_lines(path):
        missing = [k for k in (*_TEXTS, "score") if k not in row]
        if missing:
            raise InputError(path, f"missing {', '.join(missing)}", number)
        score, texts, group = row["score"], [row[k] for k in _TEXTS], row.get("cohort")
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise InputError(path, f"score must be a number, got {score!r}", number)
        if not math.isfinite(score):
            raise InputError(path, f"score must be finite, got {score!r}", number)
        if not all(isinstance(t, str) and t for t in texts) or not isinstance(group, str | None):
            raise InputError(path, "event_id, event_type, detector, cohort must be strings", number)
        records.append(ScoreRecord(texts[0], texts[1], group, texts[2], float(score)))
    if not records:
        raise InputError(path, "no scored events")
    return records
