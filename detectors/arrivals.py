"""Arrival bursts: many accounts turning up at one device, /24 or listing title at once.

Coordinated fraud needs many accounts (throwaway sellers of a fake listing ring, review
bombers, card testers) and few resources: one laptop, one proxy range, one copied title.
Each of those accounts may look ordinary to a detector, above all when the attack is a
large share of its event type's traffic and the detector learns it as normal; what does
not look ordinary is the *resource*: a device that has had one user for months suddenly
has six. This is the score-free source of patterns, next to the pattern finder's
over-represented anomalous events (detectors/patterns.py).

Two pure parts, one per stage:

* :class:`ArrivalTracker` (stage 1, with the scorer's per-partition state; input records
  are keyed by user, so one partition sees all of a user's events): which of an event's
  attribute values of the tracked kinds the acting user *arrives at*: uses for the first
  time, or for the first time in ``forget_s`` (a day). One arrival per (user, value) and
  day, whatever the user's event count, so the stage-2 count is of distinct users.
* :class:`ArrivalFinder` (stage 2, fed the arrivals keyed by value, so that one finder
  sees every arrival at a value, from every partition): a :class:`PatternFinder` whose
  test is on the *rate* of arrivals at a value against the value's own lagged rate, not
  on a share of events. A value's recent arrivals (decayed with ``half_life_s``) are
  compared with ``baseline * exposure``, where the baseline is the value's arrival rate
  over the last day or so excluding the last hour (the difference of the two decayed
  counts, as the pattern finder does), blended with a prior of ``prior_per_day`` arrivals
  a day over ``prior_days`` days, and exposure is the short decay's weight over the time
  the value has been seen. A pattern needs ``min_users`` distinct users within
  ``window_s``, a risk ratio of ``min_risk_ratio`` and a Poisson tail ``p <=
  max_p_value``; its lifecycle (new, growing, resolved, ids, hysteresis) is the pattern
  finder's. A value many users share every day (a mobile carrier's /24) learns its rate
  and raises nothing for its usual crowd; a /24 first seen minutes ago with five new
  sellers on it does.

Pattern ids hash the key in their own namespace, so an arrival pattern and an
anomalous-event pattern on the same value never share an id.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from scipy.special import gammainc

# ArrivalTracker lived here: checkpoints written then name it by this module.
from detectors.arrival_tracker import DAY_S
from detectors.arrival_tracker import ArrivalTracker as ArrivalTracker
from detectors.patterns import (
    Key,
    Observation,
    PatternConfig,
    PatternFinder,
    _Evidence,
)

# What an arrival pattern's events say about it (the pattern alert's top feature).
ARRIVAL_REASON: tuple[str, str] = ("arriving_users", "high")


@dataclass(frozen=True)
class ArrivalConfig:
    """Thresholds of the arrival finder (see the module docstring)."""

    window_s: float = 3600.0
    half_life_s: float = 3600.0
    baseline_half_life_s: float = DAY_S
    # A value without history is assumed to see one new user a day; the prior weighs as
    # much as six hours of history, so a busy value's own rate takes over within hours.
    prior_per_day: float = 1.0
    prior_days: float = 0.25
    min_users: int = 3
    min_risk_ratio: float = 5.0
    keep_risk_ratio: float = 3.0
    max_p_value: float = 1e-3
    growth_factor: float = 2.0
    quiet_s: float = 3600.0
    max_keys: int = 200_000
    max_tracked: int = 20_000
    examples: int = 5

    def __post_init__(self) -> None:
        for name in ("prior_per_day", "prior_days"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive, got {value}")
        self.pattern_config()  # the shared checks (windows, ratios, p-value, bounds)

    def pattern_config(self) -> PatternConfig:
        """The pattern finder's settings that the lifecycle uses: single values only."""
        return PatternConfig(
            window_s=self.window_s,
            half_life_s=self.half_life_s,
            baseline_half_life_s=self.baseline_half_life_s,
            min_support=self.min_users,
            min_users=self.min_users,
            single_user_kinds=(),
            min_risk_ratio=self.min_risk_ratio,
            keep_risk_ratio=self.keep_risk_ratio,
            max_p_value=self.max_p_value,
            growth_factor=self.growth_factor,
            quiet_s=self.quiet_s,
            pair_kinds=(),
            max_keys=self.max_keys,
            max_tracked=self.max_tracked,
            examples=self.examples,
        )


class ArrivalFinder(PatternFinder):
    """Stage 2: bursts of arrivals at one value (see the module docstring).

    Every observation is one arrival (``is_anomalous`` true); ``baseline_rate`` and the
    rates behind ``risk_ratio`` are arrivals per hour.

    >>> finder = ArrivalFinder()
    >>> updates = []
    >>> for i in range(30):  # a shared /24: a user arrives every two hours, for days
    ...     obs = Observation(7200.0 * i, f"n{i}", f"u{i}", True, (), ("ev", 0, i))
    ...     updates += finder.observe_key(("ip24:10.0.0",), obs)
    >>> for i in range(6):  # six sellers on one fresh device within ten minutes
    ...     obs = Observation(9000.0 + 100 * i, f"a{i}", f"s{i}", True, (), ("ev", 1, i))
    ...     updates += finder.observe_key(("device:d-9",), obs)
    >>> [(u.status, u.members, u.support, u.users) for u in updates]
    [('new', ('device:d-9',), 3, 3), ('growing', ('device:d-9',), 6, 6)]
    """

    def __init__(self, config: ArrivalConfig | None = None) -> None:
        self.arrival_config = config or ArrivalConfig()
        super().__init__(self.arrival_config.pattern_config())
        c = self.arrival_config
        self._prior_arrivals = c.prior_per_day * c.prior_days
        self._prior_s = c.prior_days * DAY_S
        self._short_mean_s = c.half_life_s / math.log(2.0)
        self._long_mean_s = c.baseline_half_life_s / math.log(2.0)

    def _pattern_id(self, key: Key, first_seen: float) -> str:
        window_s = self.config.window_s
        window_start = math.floor(first_seen / window_s) * window_s
        text = "arrivals\x1d" + "\x1f".join(key) + f"\x1e{window_start:.3f}"
        return "pt-" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

    def _count(self, key: Key, obs: Observation) -> list[float]:
        # [short-decayed arrivals, the same, long-decayed arrivals, the same, last time,
        # first time]: the layout of the pattern finder's counts, plus when the value was
        # first seen (the exposure).
        counts = self._counts.get(key)
        if counts is None:
            counts = [0.0, 0.0, 0.0, 0.0, obs.t, obs.t]
            self._counts.put(key, counts)
        elapsed = obs.t - counts[4]
        if elapsed > 0.0:
            short = math.exp(-self._short_rate * elapsed)
            long = math.exp(-self._long_rate * elapsed)
            counts[0] *= short
            counts[2] *= long
            counts[4] = obs.t
        counts[5] = min(counts[5], obs.t)
        counts[0] += 1.0
        counts[2] += 1.0
        counts[1] = counts[0]
        counts[3] = counts[2]
        return counts

    def _exposures(self, counts: list[float]) -> tuple[float, float]:
        """The weight of the time the value has been seen under the short decay and under
        the lagged (long minus short) one, in seconds."""
        age = max(counts[4] - counts[5], 0.0)
        short = self._short_mean_s * -math.expm1(-self._short_rate * age)
        long = self._long_mean_s * -math.expm1(-self._long_rate * age)
        return short, max(long - short, 0.0)

    def _baseline(self, counts: list[float]) -> float:
        """The value's lagged arrival rate, per second, blended with the prior."""
        _, lagged_s = self._exposures(counts)
        lagged = max(counts[2] - counts[0], 0.0)
        return (lagged + self._prior_arrivals) / (lagged_s + self._prior_s)

    def _evidence(self, counts: list[float], baseline: float) -> _Evidence:
        recent_s, _ = self._exposures(counts)
        arrivals = counts[0]
        # At least a minute of exposure: a burst within seconds of a value's first
        # arrival is tested as if spread over a minute, not over nothing.
        expected = baseline * max(recent_s, 60.0)
        risk_ratio = arrivals / expected
        p_value = float(gammainc(arrivals, expected))
        per_hour = baseline * 3600.0
        return _Evidence(per_hour, risk_ratio, p_value)
