"""Event time: the start instant, the daily rhythm, session arrivals and timestamp text.

All times are integer milliseconds since the Unix epoch. Nothing here reads the wall clock.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from typing import Final

MS_PER_SECOND: Final = 1000
MS_PER_MINUTE: Final = 60 * MS_PER_SECOND
MS_PER_HOUR: Final = 60 * MS_PER_MINUTE
MS_PER_DAY: Final = 24 * MS_PER_HOUR

# Relative activity per UTC hour (00..23): quiet small hours, a working-day plateau and an
# evening peak, the usual shape of consumer-marketplace traffic.
HOURLY_ACTIVITY: Final[tuple[float, ...]] = (
    0.55,
    0.42,
    0.32,
    0.26,
    0.24,
    0.27,
    0.36,
    0.5,
    0.68,
    0.84,
    0.94,
    1.0,
    1.05,
    1.05,
    1.0,
    1.0,
    1.06,
    1.16,
    1.32,
    1.5,
    1.64,
    1.58,
    1.3,
    0.86,
)


def parse_start(text: str) -> int:
    """Epoch ms of an RFC 3339 UTC instant written with a literal ``Z``."""
    if not text.endswith("Z"):
        raise ValueError(f"must be UTC with a trailing 'Z', got {text!r}")
    try:
        instant = datetime.fromisoformat(text[:-1] + "+00:00")
    except ValueError as exc:
        raise ValueError(f"not an RFC 3339 time: {text!r}") from exc
    if not 1970 <= instant.year <= 9000:
        raise ValueError(f"year must be within 1970..9000, got {instant.year}")
    return round(instant.timestamp() * MS_PER_SECOND)


def minute_activity_table() -> tuple[float, ...]:
    """Activity multiplier for each minute of the UTC day, mean 1.

    Linear between the hourly points so the intensity has no steps at the hour.
    """
    table: list[float] = []
    for minute in range(24 * 60):
        hour, within = divmod(minute, 60)
        here = HOURLY_ACTIVITY[hour]
        there = HOURLY_ACTIVITY[(hour + 1) % 24]
        table.append(here + (there - here) * within / 60)
    mean = sum(table) / len(table)
    return tuple(value / mean for value in table)


class SessionArrivals:
    """A non-homogeneous Poisson process of session starts with the daily rhythm.

    Sampled by thinning: candidates at the peak rate, each kept with probability
    rate(t) / peak rate, which is exact for any bounded intensity.
    """

    def __init__(self, start_ms: int, sessions_per_day: float, rnd: random.Random) -> None:
        if sessions_per_day <= 0:
            raise ValueError(f"sessions_per_day must be positive, got {sessions_per_day}")
        self._table = minute_activity_table()
        self._peak = max(self._table)
        self._peak_rate_per_ms = sessions_per_day / MS_PER_DAY * self._peak
        self._rnd = rnd
        # Kept as a float so rounding to whole ms never accumulates.
        self._now = float(start_ms)

    def next_ms(self) -> int:
        """The start time of the next session."""
        rnd = self._rnd
        table = self._table
        while True:
            # 1 - random() is in (0, 1], so the log is finite.
            self._now += -math.log(1.0 - rnd.random()) / self._peak_rate_per_ms
            minute_of_day = int(self._now // MS_PER_MINUTE) % (24 * 60)
            if rnd.random() * self._peak <= table[minute_of_day]:
                return int(self._now)


class TimestampFormatter:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` of epoch ms, with the date part cached per day.

    Events arrive in time order, so the date changes rarely and datetime is called once a
    day instead of once an event.
    """

    def __init__(self) -> None:
        self._day = -1
        self._date_prefix = ""

    def __call__(self, epoch_ms: int) -> str:
        day, ms_of_day = divmod(epoch_ms, MS_PER_DAY)
        if day != self._day:
            self._day = day
            midnight = datetime.fromtimestamp(day * 86_400, tz=UTC)
            self._date_prefix = midnight.strftime("%Y-%m-%dT")
        seconds, millis = divmod(ms_of_day, MS_PER_SECOND)
        minutes, seconds = divmod(seconds, 60)
        hours, minutes = divmod(minutes, 60)
        return f"{self._date_prefix}{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"
