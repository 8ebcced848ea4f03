"""Emerging patterns: attribute values that anomalous events share more than chance allows.

One anomalous event is an alert; thirty anomalous events from one /24 within the hour are
an attack. The finder counts, per attribute value (``ip24:10.0.0``) and per pair of values
seen in the same event (``cohort:new_account`` + ``ip24:10.0.0``; by default only pairs
with the new-account cohort, see ``pair_kinds``), all events and anomalous events, and
raises a pattern when a key's recent anomalies are

* numerous: at least ``min_support`` anomalous events within ``window_s``, from at least
  ``min_users`` distinct users (one user's odd hour is an alert, not a pattern), except
  for a key on an account itself (``single_user_kinds``: a taken-over account acts alone)
  once one of those events was flagged for a new device (``single_user_evidence``);
* over-represented: the value's recent anomaly rate is at least ``min_risk_ratio`` times
  its baseline rate;
* unlikely by chance: a one-sided Poisson test of the recent anomalous count against the
  baseline rate times the recent event count gives ``p <= max_p_value``.

Recent counts decay with ``half_life_s`` (1 h). The baseline is the value's own *lagged*
rate: the difference of counts decaying with ``baseline_half_life_s`` (1 day) and with
``half_life_s`` weighs each past event by ``2^(-age/1d) - 2^(-age/1h)``, which is zero for
the events being tested and largest hours ago, so an attack does not hide in its own
baseline. A prior of ``prior_events`` events at ``base_rate`` (the share of events the
scorer flags by construction: 1 - its threshold quantile) stands in for the history a new
value lacks, and the baseline is never below ``base_rate``, so a value must stand out both
from its own past and from the stream as a whole. A value that is always flagged more
often (new accounts) therefore raises nothing; a new /24 whose every event is an attack
does.

The Poisson tail is used rather than the binomial because decayed counts are not integers
(``gammainc`` is the exact continuous extension, ``P(X >= k) = P(k, mu)``) and because for
the same mean it is never smaller than the binomial's upper tail, so the test is on the
safe side.

Lifecycle: ``new`` when raised; ``growing`` each time the support has grown by
``growth_factor`` since the last report (5, 10, 20, ...), never per event; ``resolved``
once no anomalous event has joined for ``quiet_s`` of event time. While a pattern is open
an anomalous event joins it if the key's recent anomaly rate is still at least
``keep_risk_ratio`` (3, below the 5 needed to raise: hysteresis) times its baseline, so the
background anomalies of a busy value do not keep it open for ever. The same rule closes a
pattern raised on a value that is always flagged more often once its baseline has learnt
that (a few hours), and, by the same token, an attack that goes on steadily for many hours
ends up as that value's new normal; it is reported as a new pattern if it grows again.

Independence: everything the finder knows about a key (a value or a pair) lives in that
key's own state; no global count enters any decision (the base rate is configuration).
So the updates of a key depend only on the observations of that key, in their order,
whatever they are interleaved with: observations may be routed by key (``keys``,
``observe_key``) to different consumers and give the same updates. Two things couple keys,
by design: least-recently-used eviction once the tables are full (``max_keys``,
``max_tracked``), and the batching of ``advance`` (which only changes *when* a resolution
is reported, not what it says: a resolution is stamped ``last_seen + quiet_s``).

Pure and deterministic: event time in seconds is passed in, pattern ids are hashes
(blake2b) of the key and the start of the window of the first anomalous event, so the same
input gives the same ids in any process.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Literal

from scipy.special import gammainc

from detectors.attributes import USER, attribute_kind
from detectors.features.state import BoundedTable

Key = tuple[str, ...]
Source = tuple[str, int, int]  # (topic, partition, offset)
Status = Literal["new", "growing", "resolved"]

_LN2 = math.log(2.0)
_MAX_FEATURES = 64
# Pairs are formed with the new-account cohort only by default: "new accounts from this /24"
# or "new accounts reviewing this shop" can stand out where the /24 or the shop alone is too
# busy to. Pairs of two specific values (device + /24) only repeat what each value says.
DEFAULT_PAIR_KINDS: tuple[str, ...] = ("cohort",)


@dataclass(frozen=True)
class PatternConfig:
    """Thresholds and bounds of the pattern finder (see the module docstring)."""

    window_s: float = 3600.0
    half_life_s: float = 3600.0
    baseline_half_life_s: float = 86400.0
    # The share of events the scorer flags as suspicious: 1 - ScoringConfig.suspicious_quantile.
    base_rate: float = 0.02
    prior_events: float = 200.0
    min_support: int = 5
    min_users: int = 2
    # Keys with a member of these kinds need one user only: the account itself (see
    # detectors/attributes.py, ``USER``).
    single_user_kinds: tuple[str, ...] = (USER,)
    # ... and then only once one of its anomalous events was explained by one of these
    # features being high: a takeover works from a device new to the account, while a
    # customer's own shopping spree does not, nor does a trip abroad with their own phone
    # (``new_country`` alone: it raised most false account patterns in the demo, seed 7).
    # Empty: no such condition.
    single_user_evidence: tuple[str, ...] = ("new_device",)
    min_risk_ratio: float = 5.0
    keep_risk_ratio: float = 3.0
    max_p_value: float = 1e-3
    growth_factor: float = 2.0
    quiet_s: float = 3600.0
    pair_kinds: tuple[str, ...] | None = DEFAULT_PAIR_KINDS
    max_attributes: int = 12
    max_keys: int = 200_000
    max_tracked: int = 20_000
    max_recent: int = 64
    examples: int = 5
    max_users: int = 1000
    max_partitions: int = 256
    top_features: int = 3

    def __post_init__(self) -> None:
        positive = {
            "window_s": self.window_s,
            "half_life_s": self.half_life_s,
            "baseline_half_life_s": self.baseline_half_life_s,
            "prior_events": self.prior_events,
            "min_risk_ratio": self.min_risk_ratio,
            "quiet_s": self.quiet_s,
        }
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive, got {value}")
        if not 0.0 < self.base_rate < 1.0:
            raise ValueError(f"base_rate must be within (0, 1), got {self.base_rate}")
        if not 0.0 < self.max_p_value <= 1.0:
            raise ValueError(f"max_p_value must be within (0, 1], got {self.max_p_value}")
        if self.baseline_half_life_s <= self.half_life_s:
            raise ValueError("baseline_half_life_s must exceed half_life_s")
        if not 0.0 < self.keep_risk_ratio <= self.min_risk_ratio:
            raise ValueError("keep_risk_ratio must be within (0, min_risk_ratio]")
        if self.growth_factor <= 1.0:
            raise ValueError(f"growth_factor must be > 1, got {self.growth_factor}")
        # Two episodes of one key are at least quiet_s apart, so with window_s <= quiet_s
        # their first events fall in different windows and their ids differ.
        if self.window_s > self.quiet_s:
            raise ValueError("window_s must not exceed quiet_s (pattern ids would repeat)")
        if not 1 <= self.min_support <= self.max_recent:
            raise ValueError("min_support must be within 1..max_recent")
        for name in ("min_users", "max_attributes", "max_keys", "max_tracked", "max_users"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.min_users > self.max_users:
            raise ValueError("min_users must not exceed max_users")


@dataclass(frozen=True, slots=True)
class Observation:
    """What the finder needs of one scored event.

    ``reasons`` are the (feature, direction) pairs that explained the score, if any.
    ``weight`` is how many events a normal observation stands for (``1 / rate`` when
    normal events are sampled at ``rate``, see stream/observations.py); an anomalous
    observation always counts as one event.
    """

    t: float
    event_id: str
    user: str
    is_anomalous: bool
    attributes: Sequence[str]
    source: Source
    score: float = 0.0
    reasons: Sequence[tuple[str, str]] = ()
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class PatternUpdate:
    """One step of a pattern's lifecycle, carrying everything needed to act on it.

    members: the attribute values the pattern shares (one, or a pair).
    support / users: anomalous events in the pattern and their distinct users (the user
        count saturates at ``max_users``).
    baseline_rate / risk_ratio / p_value: the evidence when the update was made.
    first_seen / last_seen: event times of its first and last anomalous event.
    at: event time of the update (of the triggering event; ``last_seen + quiet_s`` for a
        resolution).
    examples: ids of its first few anomalous events.
    offsets: (topic, partition, min offset, max offset) to replay its events.
    top_features: the most frequent (feature, direction, count) among its events' reasons.
    """

    pattern_id: str
    status: Status
    members: Key
    support: int
    users: int
    baseline_rate: float
    risk_ratio: float
    p_value: float
    first_seen: float
    last_seen: float
    at: float
    examples: tuple[str, ...]
    offsets: tuple[tuple[str, int, int, int], ...]
    top_features: tuple[tuple[str, str, int], ...]
    max_score: float

    @property
    def attribute(self) -> str:
        """The kinds of the members, e.g. ``cohort+ip24``."""
        return "+".join(attribute_kind(m) for m in self.members)

    @property
    def value(self) -> str:
        """The values of the members, e.g. ``new_account+10.0.0``."""
        return "+".join(m.split(":", 1)[-1] for m in self.members)


def pattern_keys(
    attributes: Sequence[str],
    pair_kinds: Collection[str] | None = DEFAULT_PAIR_KINDS,
    max_attributes: int = 12,
) -> list[Key]:
    """The keys an event counts under: each attribute, then pairs (sorted), in a fixed order.

    A pair is formed when one of its members is of a kind in ``pair_kinds`` (every pair if
    ``None``, none if empty). Only the first ``max_attributes`` attributes are used, which
    bounds the pairs.

    >>> pattern_keys(["ip24:10.0.0", "cohort:new_account", "country:US"])
    [('ip24:10.0.0',), ('cohort:new_account',), ('country:US',), \
('cohort:new_account', 'ip24:10.0.0'), ('cohort:new_account', 'country:US')]
    >>> pattern_keys(["ip24:10.0.0", "country:US"], pair_kinds=None)
    [('ip24:10.0.0',), ('country:US',), ('country:US', 'ip24:10.0.0')]
    """
    unique = list(dict.fromkeys(attributes))[:max_attributes]
    keys: list[Key] = [(a,) for a in unique]
    for a, b in combinations(unique, 2):
        if USER in (attribute_kind(a), attribute_kind(b)):
            continue  # an account is as specific as a key gets: pairing adds nothing
        if pair_kinds is None or attribute_kind(a) in pair_kinds or attribute_kind(b) in pair_kinds:
            keys.append((a, b) if a < b else (b, a))
    return keys


def pattern_id(members: Key, first_seen: float, window_s: float) -> str:
    """Stable id: a hash of the members and the window start of the first anomalous event.

    >>> pattern_id(("ip24:10.0.0",), 7300.0, 3600.0) == pattern_id(("ip24:10.0.0",), 7900.0, 3600.0)
    True
    """
    window_start = math.floor(first_seen / window_s) * window_s
    text = "\x1f".join(members) + f"\x1e{window_start:.3f}"
    return "pt-" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass(slots=True)
class _Evidence:
    baseline: float
    risk_ratio: float
    p_value: float


@dataclass(slots=True)
class _Hit:
    """An anomalous event remembered while its key is only a candidate."""

    t: float
    event_id: str
    user: str
    source: Source
    score: float
    reasons: Sequence[tuple[str, str]]


@dataclass(slots=True)
class _Pattern:
    pattern_id: str
    evidence: _Evidence
    first_seen: float
    last_seen: float
    support: int = 0
    next_report: int = 0
    max_score: float = -math.inf
    users: set[str] = field(default_factory=set)
    examples: list[str] = field(default_factory=list)
    offsets: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    features: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass(slots=True)
class _Track:
    """A key with anomalous events: its recent ones, and its open pattern if any."""

    recent: deque[_Hit]
    pattern: _Pattern | None = None


class PatternFinder:
    """Finds emerging patterns in a stream of scored events; see the module docstring.

    >>> finder = PatternFinder()
    >>> updates = []
    >>> for i in range(200):  # background: one event a minute, nothing anomalous
    ...     obs = Observation(60.0 * i, f"n{i}", "u", False, ["ip24:10.0.0"], ("ev", 0, i))
    ...     updates += finder.observe(obs)
    >>> for i in range(8):  # eight anomalous events from one new /24 within seconds
    ...     obs = Observation(12000.0 + i, f"a{i}", f"u{i}", True, ["ip24:203.0.113"],
    ...                       ("ev", 1, 100 + i))
    ...     updates += finder.observe(obs)
    >>> [(u.status, u.members, u.support) for u in updates]
    [('new', ('ip24:203.0.113',), 5)]
    >>> [(u.status, u.support, u.at) for u in finder.advance(20000.0)]
    [('resolved', 8, 15607.0)]
    """

    def __init__(self, config: PatternConfig | None = None) -> None:
        self.config = config or PatternConfig()
        c = self.config
        self._short_rate = _LN2 / c.half_life_s
        self._long_rate = _LN2 / c.baseline_half_life_s
        # key -> [events, anomalous events] decayed short, the same decayed long, last time
        self._counts: BoundedTable[Key, list[float]] = BoundedTable(c.max_keys)
        # Insertion order is recency order (a touched track is moved to the end).
        self._tracks: dict[Key, _Track] = {}
        # Keys with an open pattern, so that ``advance`` need not scan every track.
        self._open: dict[Key, None] = {}

    @property
    def counted_keys(self) -> int:
        return len(self._counts)

    @property
    def tracked_keys(self) -> int:
        return len(self._tracks)

    @property
    def open_patterns(self) -> int:
        return len(self._open)

    def keys(self, attributes: Sequence[str]) -> list[Key]:
        """The keys ``observe`` counts an event with these attributes under."""
        return pattern_keys(attributes, self.config.pair_kinds, self.config.max_attributes)

    def observe(self, obs: Observation) -> list[PatternUpdate]:
        """Count ``obs`` under each of its keys; return the updates it caused."""
        updates: list[PatternUpdate] = []
        for key in self.keys(obs.attributes):
            updates.extend(self.observe_key(key, obs))
        return updates

    def observe_key(self, key: Key, obs: Observation) -> list[PatternUpdate]:
        """Count ``obs`` under ``key`` only (for observations routed by key)."""
        c = self.config
        counts = self._count(key, obs)
        updates: list[PatternUpdate] = []
        track = self._tracks.get(key)
        if track is not None:
            pattern = track.pattern
            if pattern is not None and obs.t >= pattern.last_seen + c.quiet_s:
                updates.append(self._resolve(key, track, pattern, pattern.last_seen + c.quiet_s))
        if not obs.is_anomalous:
            return updates
        if track is None:
            track = _Track(deque(maxlen=c.max_recent))
            updates.extend(self._insert_track(key, track, obs.t))
        else:
            self._tracks[key] = self._tracks.pop(key)  # now the most recently used

        pattern = track.pattern
        if pattern is not None:
            evidence = self._evidence(counts, self._baseline(counts))
            if evidence.risk_ratio >= c.keep_risk_ratio:
                pattern.evidence = evidence
                self._join(pattern, _hit(obs))
                if pattern.support >= pattern.next_report:
                    pattern.next_report = self._next_report(pattern.support)
                    updates.append(self._update(key, pattern, "growing", obs.t))
            return updates

        recent = track.recent
        recent.append(_hit(obs))
        while recent and recent[0].t < obs.t - c.window_s:
            recent.popleft()
        if len(recent) < c.min_support:
            return updates
        if len({h.user for h in recent}) < c.min_users and not self._single_user_ok(key, recent):
            return updates
        evidence = self._evidence(counts, self._baseline(counts))
        if evidence.risk_ratio < c.min_risk_ratio or evidence.p_value > c.max_p_value:
            return updates
        first_seen = min(h.t for h in recent)
        pattern = _Pattern(
            pattern_id=self._pattern_id(key, first_seen),
            evidence=evidence,
            first_seen=first_seen,
            last_seen=first_seen,
        )
        for hit in recent:
            self._join(pattern, hit)
        recent.clear()
        pattern.next_report = self._next_report(pattern.support)
        track.pattern = pattern
        self._open[key] = None
        updates.append(self._update(key, pattern, "new", obs.t))
        return updates

    def _single_user_ok(self, key: Key, recent: Iterable[_Hit]) -> bool:
        """Whether ``key`` may raise a pattern on one user's events (see the config)."""
        c = self.config
        if not any(attribute_kind(m) in c.single_user_kinds for m in key):
            return False
        evidence = c.single_user_evidence
        return not evidence or any(
            feature in evidence and direction == "high"
            for hit in recent
            for feature, direction in hit.reasons
        )

    def advance(self, t: float) -> list[PatternUpdate]:
        """Resolve the patterns quiet since ``t - quiet_s`` (event time, e.g. a watermark)."""
        quiet_s = self.config.quiet_s
        updates = []
        for key in list(self._open):
            track = self._tracks[key]
            pattern = track.pattern
            if pattern is not None and t >= pattern.last_seen + quiet_s:
                updates.append(self._resolve(key, track, pattern, pattern.last_seen + quiet_s))
        updates.sort(key=lambda u: (u.at, u.pattern_id))
        return updates

    def _pattern_id(self, key: Key, first_seen: float) -> str:
        return pattern_id(key, first_seen, self.config.window_s)

    # -- counting -----------------------------------------------------------------------------

    def _count(self, key: Key, obs: Observation) -> list[float]:
        counts = self._counts.get(key)
        if counts is None:
            counts = [0.0, 0.0, 0.0, 0.0, obs.t]
            self._counts.put(key, counts)
        # An out-of-order event (earlier than the last) is counted without decay.
        elapsed = obs.t - counts[4]
        if elapsed > 0.0:
            short = math.exp(-self._short_rate * elapsed)
            long = math.exp(-self._long_rate * elapsed)
            counts[0] *= short
            counts[1] *= short
            counts[2] *= long
            counts[3] *= long
            counts[4] = obs.t
        anomalous = 1.0 if obs.is_anomalous else 0.0
        events = 1.0 if obs.is_anomalous else obs.weight
        counts[0] += events
        counts[1] += anomalous
        counts[2] += events
        counts[3] += anomalous
        return counts

    def _baseline(self, counts: list[float]) -> float:
        c = self.config
        # Long minus short decayed counts: the value's history, excluding the last hour or
        # so, which is what is being tested.
        lagged_events = max(counts[2] - counts[0], 0.0)
        lagged_anomalies = max(counts[3] - counts[1], 0.0)
        own = (lagged_anomalies + c.base_rate * c.prior_events) / (lagged_events + c.prior_events)
        return max(own, c.base_rate)

    def _evidence(self, counts: list[float], baseline: float) -> _Evidence:
        events, anomalies = counts[0], counts[1]
        if anomalies <= 0.0:
            return _Evidence(baseline, 0.0, 1.0)
        risk_ratio = anomalies / events / baseline
        # P(Poisson(mu) >= k) is the regularised lower incomplete gamma P(k, mu).
        p_value = float(gammainc(anomalies, baseline * events))
        return _Evidence(baseline, risk_ratio, p_value)

    # -- patterns -----------------------------------------------------------------------------

    def _next_report(self, support: int) -> int:
        return max(math.ceil(support * self.config.growth_factor), support + 1)

    def _insert_track(self, key: Key, track: _Track, t: float) -> list[PatternUpdate]:
        self._tracks[key] = track
        if len(self._tracks) <= self.config.max_tracked:
            return []
        oldest = next(iter(self._tracks))
        evicted = self._tracks.pop(oldest)
        if evicted.pattern is None:
            return []
        # Memory is full: close the pattern now rather than leave it open forever.
        return [self._resolve(oldest, evicted, evicted.pattern, t)]

    def _join(self, pattern: _Pattern, hit: _Hit) -> None:
        c = self.config
        pattern.support += 1
        pattern.first_seen = min(pattern.first_seen, hit.t)
        pattern.last_seen = max(pattern.last_seen, hit.t)
        pattern.max_score = max(pattern.max_score, hit.score)
        if len(pattern.users) < c.max_users:
            pattern.users.add(hit.user)
        if len(pattern.examples) < c.examples:
            pattern.examples.append(hit.event_id)
        topic, partition, offset = hit.source
        span = pattern.offsets.get((topic, partition))
        if span is not None:
            span[0] = min(span[0], offset)
            span[1] = max(span[1], offset)
        elif len(pattern.offsets) < c.max_partitions:
            pattern.offsets[(topic, partition)] = [offset, offset]
        for reason in hit.reasons:
            if reason in pattern.features or len(pattern.features) < _MAX_FEATURES:
                pattern.features[reason] = pattern.features.get(reason, 0) + 1

    def _resolve(self, key: Key, track: _Track, pattern: _Pattern, at: float) -> PatternUpdate:
        track.pattern = None
        track.recent.clear()
        del self._open[key]
        return self._update(key, pattern, "resolved", at)

    def _update(self, key: Key, pattern: _Pattern, status: Status, at: float) -> PatternUpdate:
        evidence = pattern.evidence
        ranked = sorted(pattern.features.items(), key=lambda item: (-item[1], item[0]))
        return PatternUpdate(
            pattern_id=pattern.pattern_id,
            status=status,
            members=key,
            support=pattern.support,
            users=len(pattern.users),
            baseline_rate=evidence.baseline,
            risk_ratio=evidence.risk_ratio,
            p_value=evidence.p_value,
            first_seen=pattern.first_seen,
            last_seen=pattern.last_seen,
            at=at,
            examples=tuple(pattern.examples),
            offsets=tuple(
                (topic, partition, span[0], span[1])
                for (topic, partition), span in sorted(pattern.offsets.items())
            ),
            top_features=tuple(
                (feature, direction, count)
                for (feature, direction), count in ranked[: self.config.top_features]
            ),
            max_score=pattern.max_score,
        )


def _hit(obs: Observation) -> _Hit:
    return _Hit(obs.t, obs.event_id, obs.user, obs.source, obs.score, obs.reasons)


def group_by_pattern(updates: Iterable[PatternUpdate]) -> dict[str, list[PatternUpdate]]:
    """Updates collected per pattern id, in order (a convenience for callers and tests)."""
    grouped: dict[str, list[PatternUpdate]] = {}
    for update in updates:
        grouped.setdefault(update.pattern_id, []).append(update)
    return grouped
