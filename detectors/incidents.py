"""Incidents: the pattern alerts of one attack, grouped, so that on-call gets one alert.

One attack shares several attribute values at once (a /24, a device, a shop, a card BIN,
each alone and with the new-account cohort), and the pattern finder (detectors/patterns.py)
raises one pattern per value. Those patterns name the *same anomalous events*: that is what
groups them here. Each pattern record carries a bounded sample of its member events
(``event_sample``: the ``k`` event ids of smallest hash, a bottom-k sketch, so two patterns
over mostly the same events keep mostly the same ids) and its examples; two patterns whose
named events overlap in at least ``min_shared`` ids, whose user samples share an account,
or whose members share a specific value (the same device, /24, shop, title or account:
an arrival burst on a device and the anomalous events on it, see detectors/arrivals.py)
belong to one incident (union-find: an incident is a connected component of that relation
over its open patterns).

A bottom-k sample rather than the first events on purpose: a pattern on a busy value holds
the attack's events among many others, and its smallest hashes are then mostly the
others'. And values that crowds share (a country, a category, a card BIN, the new-account
cohort: ``is_specific``) are shared by concurrent attacks too: a pattern on them joins the
one incident it shares most events with and never merges two; its events link later
patterns only when it opened the incident (its first events are then the attack's).

Lifecycle of an incident (each step one record, ``sequence`` 1, 2, ...):

- ``new`` when its first pattern arrives;
- ``growing`` when its events have grown by ``growth_factor`` since its last record (never
  per pattern update: a new pattern joining shows in the next record);
- ``resolved`` when every one of its patterns is resolved and the event-time watermark of
  every stage-2 partition has passed that (``advance``): patterns of one attack come from
  several partitions, which may be hours apart in event time when one is catching up, so
  an incident stays linkable until none of them can still add to it; or, with
  ``merged_into`` set, when a new pattern links it to an older incident that absorbs it.

Ids come from content, not arrival time: ``in-`` + a hash of the pattern that opened the
incident; when two incidents merge the older one (earlier ``first_seen``, then smaller id)
survives. Given the same pattern records in the same order the ids and records are the
same (a replay reproduces them). Records of different stage-2 partitions may interleave
differently from run to run: the grouping the incidents end with does not depend on it
(links only accumulate), and neither do the ids unless the interleaving changes which
pattern of an incident arrived first.

Pure: no I/O; everything kept pickles (stream/incidents_stage.py snapshots it).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from detectors.attributes import attribute_kind

Status = Literal["new", "growing", "resolved"]
SPECIFIC_KINDS: frozenset[str] = frozenset({"user", "device", "ip24", "shop", "title"})
SourceRange = tuple[str, int, int, int]  # topic, partition, from_offset, to_offset
# Which entity an incident is about, by the kind of its most specific member.
_ENTITY_KINDS: tuple[tuple[str, str], ...] = (
    ("user", "user"),
    ("device", "device"),
    ("ip24", "ip"),
    ("shop", "shop"),
)


def sample_hash(item: str) -> int:
    """The hash the bottom-k samples rank by (64 bits of blake2b)."""
    return int.from_bytes(hashlib.blake2b(item.encode(), digest_size=8).digest(), "big")


class BottomK:
    """The ``k`` distinct items of smallest hash seen so far (a bottom-k sketch).

    >>> sample = BottomK(2)
    >>> for item in ["a", "b", "c", "a"]:
    ...     sample.add(item)
    >>> len(sample.items()), set(sample.items()) <= {"a", "b", "c"}
    (2, True)
    """

    __slots__ = ("_hashes", "k")

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        self.k = k
        self._hashes: dict[str, int] = {}

    def add(self, item: str) -> None:
        if item in self._hashes:
            return
        h = sample_hash(item)
        if len(self._hashes) < self.k:
            self._hashes[item] = h
            return
        worst = max(self._hashes.items(), key=lambda kv: (kv[1], kv[0]))
        if (h, item) < (worst[1], worst[0]):
            del self._hashes[worst[0]]
            self._hashes[item] = h

    def items(self) -> tuple[str, ...]:
        """The sample, smallest hash first (so the same set gives the same order)."""
        return tuple(sorted(self._hashes, key=lambda item: (self._hashes[item], item)))

    def __getstate__(self) -> tuple[int, dict[str, int]]:
        return self.k, self._hashes

    def __setstate__(self, state: tuple[int, dict[str, int]]) -> None:
        self.k, self._hashes = state


@dataclass(frozen=True)
class IncidentConfig:
    """How patterns are grouped and how incidents are reported."""

    min_shared: int = 1  # named events two patterns must share to be one incident
    growth_factor: float = 2.0
    examples: int = 10  # event ids an incident alert names
    top_features: int = 5
    max_listed: int = 50  # patterns and members listed in a record
    max_open: int = 10_000  # open incidents kept; beyond, the oldest is resolved
    max_closed: int = 200_000  # ids of resolved patterns remembered, to ignore repeats
    # Event time an incident waits, from its first pattern, before its first record, so
    # that the other patterns of the same attack join it first (Alertmanager's
    # group_wait): 0 reports at once.
    group_wait_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.group_wait_s >= 0.0:
            raise ValueError("group_wait_s must be >= 0")
        if self.min_shared < 1:
            raise ValueError("min_shared must be at least 1")
        if self.growth_factor <= 1.0:
            raise ValueError("growth_factor must be above 1")
        for name in ("examples", "top_features", "max_listed", "max_open", "max_closed"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


def _epoch_s(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True, slots=True)
class PatternRecord:
    """What grouping needs of one pattern alert record (schemas/alert.v1.json)."""

    alert_id: str
    status: Status
    sequence: int
    members: tuple[str, ...]
    events: int
    users: int
    first_seen: float
    last_seen: float
    updated_at: float
    risk_ratio: float
    baseline_rate: float
    threshold: float
    max_score: float
    examples: tuple[str, ...]
    event_sample: tuple[str, ...]
    user_sample: tuple[str, ...]
    top_features: tuple[tuple[str, str, int], ...]
    source_ranges: tuple[SourceRange, ...]
    event_type: str
    source: tuple[str, int, int]
    occurred_at: str

    @classmethod
    def from_alert(cls, alert: Mapping[str, Any]) -> PatternRecord:
        """From a pattern alert record; raises KeyError/ValueError/TypeError if it is not one."""
        if alert.get("kind") != "pattern":
            raise ValueError(f"not a pattern alert: kind {alert.get('kind')!r}")
        p = alert["pattern"]
        src = alert["source"]
        return cls(
            alert_id=str(alert["alert_id"]),
            status=alert["status"],
            sequence=int(alert["sequence"]),
            members=tuple(str(m) for m in p["members"]),
            events=int(p["events"]),
            users=int(p["users"]),
            first_seen=_epoch_s(p["first_seen"]),
            last_seen=_epoch_s(p["last_seen"]),
            updated_at=_epoch_s(p["updated_at"]),
            risk_ratio=float(p["risk_ratio"]),
            baseline_rate=float(p["baseline_rate"]),
            threshold=float(alert["threshold"]),
            max_score=float(p["max_score"]),
            examples=tuple(str(e) for e in alert["event_ids"]),
            event_sample=tuple(str(e) for e in p.get("event_sample", ())),
            user_sample=tuple(str(u) for u in p.get("user_sample", ())),
            top_features=tuple(
                (str(f["feature"]), str(f["direction"]), int(f["events"]))
                for f in p["top_features"]
            ),
            source_ranges=tuple(
                (str(r["topic"]), int(r["partition"]), int(r["from_offset"]), int(r["to_offset"]))
                for r in p["source_ranges"]
            ),
            event_type=str(alert["event_type"]),
            source=(str(src["topic"]), int(src["partition"]), int(src["offset"])),
            occurred_at=str(alert["occurred_at"]),
        )

    @property
    def named_events(self) -> frozenset[str]:
        """The member events the record names: its examples and its sample."""
        return frozenset(self.examples) | frozenset(self.event_sample)


def example_record(
    alert_id: str,
    members: Sequence[str],
    events: Sequence[str],
    *,
    status: Status = "new",
    sequence: int = 1,
    t: float = 1_793_577_600.0,
    users: Sequence[str] = (),
) -> PatternRecord:
    """A pattern record naming ``events`` (examples and sample), for examples and tests."""
    return PatternRecord(
        alert_id=alert_id,
        status=status,
        sequence=sequence,
        members=tuple(members),
        events=len(events),
        users=max(len(users), 1),
        first_seen=t,
        last_seen=t + 60.0 * len(events),
        updated_at=t + 60.0 * len(events) + (3600.0 if status == "resolved" else 0.0),
        risk_ratio=10.0,
        baseline_rate=0.01,
        threshold=5.0,
        max_score=0.9,
        examples=tuple(events[:5]),
        event_sample=tuple(events),
        user_sample=tuple(users),
        top_features=(("ip_users", "high", len(events)),),
        source_ranges=(("events", 0, 100, 100 + len(events)),),
        event_type="account.login",
        source=("events", 0, 100 + len(events)),
        occurred_at="2026-11-02T00:00:00.000Z",
    )


@dataclass(frozen=True, slots=True)
class IncidentUpdate:
    """One lifecycle step of an incident, with everything its alert says."""

    incident_id: str
    status: Status
    sequence: int
    patterns: tuple[PatternRecord, ...]  # latest record of each, oldest first
    open_patterns: int
    events: int  # at least this many anomalous events (patterns overlap: a lower bound)
    users: int  # likewise
    first_seen: float
    last_seen: float
    updated_at: float
    examples: tuple[str, ...]
    trigger: PatternRecord  # the pattern record that caused the step
    merged_into: str | None = None

    @property
    def members(self) -> tuple[str, ...]:
        """Every attribute value its patterns share, sorted."""
        return tuple(sorted({m for p in self.patterns for m in p.members}))

    @property
    def max_risk(self) -> PatternRecord:
        return max(self.patterns, key=lambda p: (p.risk_ratio, p.alert_id))

    @property
    def max_score(self) -> float:
        return max(p.max_score for p in self.patterns)

    def top_features(self, n: int) -> list[tuple[str, str, int]]:
        """The explanation features of its patterns, by the events they explained: the most
        in one pattern (patterns overlap, so a sum would count shared events again)."""
        counts: dict[tuple[str, str], int] = {}
        for p in self.patterns:
            for feature, direction, events in p.top_features:
                counts[(feature, direction)] = max(counts.get((feature, direction), 0), events)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(f, d, c) for (f, d), c in ranked[:n]]

    def source_ranges(self) -> list[SourceRange]:
        """Per input topic-partition, the union of its patterns' offset ranges."""
        spans: dict[tuple[str, int], list[int]] = {}
        for p in self.patterns:
            for topic, partition, low, high in p.source_ranges:
                span = spans.setdefault((topic, partition), [low, high])
                span[0], span[1] = min(span[0], low), max(span[1], high)
        return [(t, p, lo, hi) for (t, p), (lo, hi) in sorted(spans.items())]

    def entity(self) -> dict[str, str]:
        """A device, /24 or shop its patterns share (the one with most events), else itself."""
        for kind, entity_type in _ENTITY_KINDS:
            best: tuple[int, str] | None = None
            for p in self.patterns:
                for member in p.members:
                    if attribute_kind(member) != kind:
                        continue
                    value = member.split(":", 1)[1]
                    entity_id = f"{value}.0/24" if kind == "ip24" else value
                    if len(entity_id) <= 64 and (best is None or (-p.events, entity_id) < best):
                        best = (-p.events, entity_id)
            if best is not None:
                return {"type": entity_type, "id": best[1]}
        return {"type": "incident", "id": self.incident_id}


def is_specific(members: Iterable[str]) -> bool:
    """Whether a pattern's values point at one actor's resources (a device, a /24, a shop, a
    listing title) rather than at a crowd (a country, a category, a card BIN, the
    new-account cohort), which concurrent attacks and normal users share.

    >>> is_specific(["cohort:new_account", "ip24:10.0.0"]), is_specific(["country:BR"])
    (True, False)
    """
    return any(attribute_kind(m) in SPECIFIC_KINDS for m in members)


def _specific_members(members: Iterable[str]) -> list[str]:
    return [m for m in members if attribute_kind(m) in SPECIFIC_KINDS]


def incident_id(pattern_alert_id: str) -> str:
    """``in-`` + 32 hex digits of a hash of the pattern alert that opened the incident.

    >>> incident_id("pa-" + "0" * 32) == incident_id("pa-" + "0" * 32)
    True
    """
    digest = hashlib.blake2b(("incident\x1f" + pattern_alert_id).encode(), digest_size=16)
    return "in-" + digest.hexdigest()


@dataclass(slots=True)
class _Incident:
    incident_id: str
    patterns: dict[str, PatternRecord] = field(default_factory=dict)  # alert id -> latest
    open: set[str] = field(default_factory=set)
    named: set[str] = field(default_factory=set)  # events its patterns named
    users: set[str] = field(default_factory=set)
    sequence: int = 0
    next_report: int = 0
    closing_at: float | None = None  # every pattern resolved: resolves at this event time
    closed_by: PatternRecord | None = None  # the last resolution, the trigger of its own

    @property
    def first_seen(self) -> float:
        return min((p.first_seen for p in self.patterns.values()), default=float("inf"))

    def events(self) -> int:
        return max(max(p.events for p in self.patterns.values()), len(self.named))

    def user_count(self) -> int:
        return max(max(p.users for p in self.patterns.values()), len(self.users))


class IncidentGrouper:
    """Pattern records in, incident updates out; see the module docstring.

    >>> grouper = IncidentGrouper()
    >>> a = example_record("pa-" + "a" * 32, ["ip24:10.0.0"], ["e1", "e2", "e3"])
    >>> b = example_record("pa-" + "b" * 32, ["device:d1"], ["e2", "e3", "e4"])
    >>> [(u.status, u.sequence) for u in grouper.observe(a) + grouper.observe(b)]
    [('new', 1)]
    >>> grouper.open_incidents
    1
    """

    def __init__(self, config: IncidentConfig | None = None) -> None:
        self.config = config or IncidentConfig()
        self._incidents: dict[str, _Incident] = {}  # insertion order: creation order
        self._of_pattern: dict[str, str] = {}  # open pattern alert id -> incident id
        self._of_event: dict[str, str] = {}  # named event -> incident id (open only)
        self._of_user: dict[str, str] = {}  # user of a named event -> incident id (open only)
        self._of_member: dict[str, str] = {}  # specific pattern value -> incident id (open)
        self._closed: OrderedDict[str, None] = OrderedDict()  # resolved pattern ids
        self._seen: dict[str, int] = {}  # pattern alert id -> highest sequence seen
        self._init_waiting()

    def _init_waiting(self) -> None:
        # Incidents not reported yet (group_wait_s): id -> (event time it may be, trigger).
        self._waiting: dict[str, tuple[float, PatternRecord]] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "_of_user" not in state:  # a snapshot from before accounts linked patterns
            self._of_user = {}
            for incident in self._incidents.values():
                for user in incident.users:
                    self._of_user.setdefault(user, incident.incident_id)
        if "_waiting" not in state:  # a snapshot from before group_wait_s
            self._init_waiting()
        if "_of_member" not in state:  # a snapshot from before shared values linked patterns
            self._of_member = {}
            for incident in self._incidents.values():
                for pattern in incident.patterns.values():
                    for member in _specific_members(pattern.members):
                        self._of_member.setdefault(member, incident.incident_id)

    @property
    def open_incidents(self) -> int:
        return len(self._incidents)

    def incident_of(self, pattern_alert_id: str) -> str | None:
        return self._of_pattern.get(pattern_alert_id)

    def observe(self, record: PatternRecord) -> list[IncidentUpdate]:
        """The incident steps ``record`` causes (none for a repeat or a stale record)."""
        pid = record.alert_id
        if pid in self._closed or record.sequence <= self._seen.get(pid, 0):
            return []  # a repeat (at-least-once upstream) or after its resolution
        self._seen[pid] = record.sequence
        updates: list[IncidentUpdate] = []
        current = self._of_pattern.get(pid)
        linked = self._linked(record)
        specific = is_specific(record.members)
        index = specific
        if current is None and record.status == "resolved":
            self._close_pattern(pid)  # began before this stage: nothing to add to
            return []
        if current is None and not linked:
            incident = _Incident(incident_id(pid))
            self._incidents[incident.incident_id] = incident
            updates.extend(self._evict(record))
            target, index = incident, True  # its first events: what later patterns share
        elif specific:
            target = self._merge(
                sorted({*linked, *([current] if current else [])}), record, updates
            )
        else:  # a broad value joins one incident, never bridges two
            target = self._incidents[current or linked[0]]
        self._add(target, record, index=index)
        target.closing_at = target.closed_by = None
        if record.status == "resolved":
            target.open.discard(pid)
            if not target.open:  # resolved once no partition can still add to it
                target.closing_at = max(p.updated_at for p in target.patterns.values())
                target.closed_by = record
                return updates
        if target.sequence == 0:
            waiting = self._waiting.get(target.incident_id)
            due = record.updated_at if waiting is None else waiting[0]
            if waiting is None:
                due += self.config.group_wait_s
            # Report now once the wait is over, or if it absorbed a reported incident
            # (whose last record points at this one).
            if record.updated_at >= due or any(u.merged_into for u in updates):
                self._waiting.pop(target.incident_id, None)
                updates.append(self._step(target, "new", record))
            else:
                self._waiting[target.incident_id] = (due, record)
        elif target.events() >= target.next_report:
            updates.append(self._step(target, "growing", record))
        return updates

    def advance(self, watermark: float) -> list[IncidentUpdate]:
        """Resolve the incidents whose patterns are all resolved by event time
        ``watermark``: the time every stage-2 partition has passed, so no pattern sharing
        their events can still come (``observe`` keeps them linkable until then)."""
        updates = []
        # Incidents whose wait is over are reported first (an attack that ended within
        # its wait is reported, then resolved).
        ready = sorted((due, iid) for iid, (due, _) in self._waiting.items() if due <= watermark)
        for _, iid in ready:
            _, trigger = self._waiting.pop(iid)
            updates.append(self._step(self._incidents[iid], "new", trigger))
        due = [
            inc
            for inc in self._incidents.values()
            if inc.closing_at is not None and inc.closing_at <= watermark
        ]
        due.sort(key=lambda inc: (inc.closing_at or 0.0, inc.incident_id))
        for incident in due:
            assert incident.closed_by is not None
            if incident.sequence == 0:  # resolved before its wait was over
                self._waiting.pop(incident.incident_id, None)
                updates.append(self._step(incident, "new", incident.closed_by))
            updates.append(self._step(incident, "resolved", incident.closed_by))
            self._drop(incident)
        return updates

    # -- grouping ------------------------------------------------------------------------

    def _linked(self, record: PatternRecord) -> list[str]:
        """Open incidents sharing at least ``min_shared`` named events with ``record``, the
        one sharing most first (then the older)."""
        shared: dict[str, int] = {}
        for event in record.named_events:
            owner = self._of_event.get(event)
            if owner is not None:
                shared[owner] = shared.get(owner, 0) + 1
        # An account's anomalous events in two patterns link them as shared events do: the
        # burst of a throwaway account (its own pattern) and the device pattern that holds
        # it and its siblings are one attack, though their small samples may not overlap.
        for user in record.user_sample:
            owner = self._of_user.get(user)
            if owner is not None:
                shared[owner] = shared.get(owner, 0) + self.config.min_shared
        # So does a value two patterns share: the arrival burst on a device and the
        # anomalous events on that device (or a pair with it) are one attack, whichever
        # accounts their samples happen to hold.
        for member in _specific_members(record.members):
            owner = self._of_member.get(member)
            if owner is not None:
                shared[owner] = shared.get(owner, 0) + self.config.min_shared
        linked = [i for i, n in shared.items() if n >= self.config.min_shared]
        return sorted(linked, key=lambda i: (-shared[i], self._incidents[i].first_seen, i))

    def _merge(
        self, ids: Sequence[str], record: PatternRecord, updates: list[IncidentUpdate]
    ) -> _Incident:
        """One incident of ``ids``: the oldest survives, the others resolve into it."""
        incidents = [self._incidents[i] for i in ids]
        if len(incidents) == 1:
            return incidents[0]
        survivor = min(incidents, key=lambda inc: (inc.first_seen, inc.incident_id))
        for other in incidents:
            if other is survivor:
                continue
            if other.sequence:
                updates.append(
                    self._step(other, "resolved", record, merged_into=survivor.incident_id)
                )
            for pid, pattern in other.patterns.items():
                survivor.patterns[pid] = pattern
                self._of_pattern[pid] = survivor.incident_id
                for member in _specific_members(pattern.members):
                    if self._of_member.get(member) == other.incident_id:
                        self._of_member[member] = survivor.incident_id
            survivor.open |= other.open
            survivor.users |= other.users
            for user in other.users:
                self._of_user[user] = survivor.incident_id
            for event in other.named:
                survivor.named.add(event)
                self._of_event[event] = survivor.incident_id
            waited = self._waiting.pop(other.incident_id, None)
            mine = self._waiting.get(survivor.incident_id)
            if waited is not None and mine is not None and waited[0] < mine[0]:
                self._waiting[survivor.incident_id] = waited  # the wait is not extended
            del self._incidents[other.incident_id]
        return survivor

    def _add(self, incident: _Incident, record: PatternRecord, *, index: bool) -> None:
        """``record`` into ``incident``; with ``index``, its named events link later
        patterns to the incident (an event already linked elsewhere stays there)."""
        pid = record.alert_id
        incident.patterns[pid] = record
        incident.open.add(pid)
        self._of_pattern[pid] = incident.incident_id
        if not index:
            return
        for event in record.named_events:
            incident.named.add(event)
            self._of_event.setdefault(event, incident.incident_id)
        incident.users.update(record.user_sample)
        for user in record.user_sample:
            self._of_user.setdefault(user, incident.incident_id)
        for member in _specific_members(record.members):
            self._of_member.setdefault(member, incident.incident_id)

    def _drop(self, incident: _Incident) -> None:
        del self._incidents[incident.incident_id]
        self._waiting.pop(incident.incident_id, None)
        for pid in incident.patterns:
            self._of_pattern.pop(pid, None)
            self._close_pattern(pid)
        for event in incident.named:
            if self._of_event.get(event) == incident.incident_id:
                del self._of_event[event]
        for user in incident.users:
            if self._of_user.get(user) == incident.incident_id:
                del self._of_user[user]
        for pattern in incident.patterns.values():
            for member in _specific_members(pattern.members):
                if self._of_member.get(member) == incident.incident_id:
                    del self._of_member[member]

    def _close_pattern(self, pid: str) -> None:
        self._seen.pop(pid, None)
        self._closed[pid] = None
        while len(self._closed) > self.config.max_closed:
            self._closed.popitem(last=False)

    def _evict(self, record: PatternRecord) -> list[IncidentUpdate]:
        """Memory is full: resolve the oldest open incident rather than keep it forever."""
        if len(self._incidents) <= self.config.max_open:
            return []
        oldest = self._incidents[next(iter(self._incidents))]
        update = self._step(oldest, "resolved", record) if oldest.sequence else None
        self._drop(oldest)
        return [update] if update is not None else []

    # -- reporting -----------------------------------------------------------------------

    def _step(
        self,
        incident: _Incident,
        status: Status,
        trigger: PatternRecord,
        *,
        merged_into: str | None = None,
    ) -> IncidentUpdate:
        incident.sequence += 1
        events = incident.events()
        c = self.config
        incident.next_report = max(int(events * c.growth_factor + 0.999999), events + 1)
        patterns = sorted(incident.patterns.values(), key=lambda p: (p.first_seen, p.alert_id))
        return IncidentUpdate(
            incident_id=incident.incident_id,
            status=status,
            sequence=incident.sequence,
            patterns=tuple(patterns),
            open_patterns=len(incident.open),
            events=events,
            users=incident.user_count(),
            first_seen=min(p.first_seen for p in patterns),
            last_seen=max(p.last_seen for p in patterns),
            updated_at=max(trigger.updated_at, max(p.updated_at for p in patterns)),
            examples=self._examples(patterns),
            trigger=trigger,
            merged_into=merged_into,
        )

    def _examples(self, patterns: Iterable[PatternRecord]) -> tuple[str, ...]:
        """The events most of its patterns name (the attack's core), then by id."""
        named: dict[str, int] = {}
        for p in patterns:
            for event in p.named_events:
                named[event] = named.get(event, 0) + 1
        ranked = sorted(named.items(), key=lambda kv: (-kv[1], kv[0]))
        return tuple(event for event, _ in ranked[: self.config.examples])
