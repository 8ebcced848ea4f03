"""The learning guard: events of open patterns and of entities labeled as fraud are scored
but not learned, so a coordinated attack does not become the detectors' new normal.

Two sources feed it: pattern alerts (an open pattern blocks its attribute values until it
is resolved) and reviewers' true-positive labels (the alert's entity stays blocked). Only
specific attributes block (device, /24, card BIN, shop, title, user): a pattern on a
country or a category, or on the new-account cohort alone, would stop learning for a
large share of honest traffic. A pattern on a pair with the cohort (new accounts from one
/24) blocks its specific member for every event, erring toward not learning.

Pure and bounded: the caller passes pattern alerts and labels in; at most ``max_keys``
blocked values are kept, the oldest forgotten first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from detectors.attributes import attribute_kind, attributes
from detectors.features.state import BoundedTable

SPECIFIC_KINDS = frozenset({"device", "ip24", "card_bin", "shop", "title", "user"})


class LearningGuard:
    """Which events must not be learned.

    >>> guard = LearningGuard()
    >>> event = {
    ...     "event_type": "account.login",
    ...     "entities": {"user_id": "u-1"},
    ...     "context": {"ip": "10.0.0.7", "device_id": "d-1", "country": "US"},
    ...     "payload": {"success": True, "method": "password"},
    ... }
    >>> guard.blocks(event)
    False
    >>> guard.pattern("pt-1", ("cohort:new_account", "ip24:10.0.0"), "new")
    >>> guard.blocks(event)
    True
    >>> guard.pattern("pt-1", ("cohort:new_account", "ip24:10.0.0"), "resolved")
    >>> guard.blocks(event)
    False
    >>> guard.fraud("user:u-1")
    >>> guard.blocks(event)
    True
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        # value -> the open patterns blocking it (several patterns can share a /24).
        self._by_pattern: dict[str, tuple[str, ...]] = {}
        self._blocked: dict[str, set[str]] = {}
        self._fraud: BoundedTable[str, bool] = BoundedTable(max_keys)
        self.max_keys = max_keys

    @property
    def open_patterns(self) -> int:
        return len(self._by_pattern)

    @property
    def fraud_entities(self) -> int:
        return len(self._fraud)

    def pattern(self, pattern_id: str, members: Iterable[str], status: str) -> None:
        """A pattern alert's latest state: ``new`` or ``growing`` block, ``resolved`` frees."""
        self._release(pattern_id)
        if status == "resolved":
            return
        specific = tuple(m for m in members if attribute_kind(m) in SPECIFIC_KINDS)
        if not specific or len(self._by_pattern) >= self.max_keys:
            return
        self._by_pattern[pattern_id] = specific
        for value in specific:
            self._blocked.setdefault(value, set()).add(pattern_id)

    def fraud(self, entity: str) -> None:
        """An entity (``user:u-1``, ``shop:s-1``) a reviewer confirmed as fraud."""
        if attribute_kind(entity) in SPECIFIC_KINDS:
            self._fraud.put(entity, True)

    def blocks(self, event: Mapping[str, Any]) -> bool:
        if not self._blocked and not len(self._fraud):
            return False
        return any(v in self._blocked or v in self._fraud for v in attributes(event))

    def _release(self, pattern_id: str) -> None:
        for value in self._by_pattern.pop(pattern_id, ()):
            holders = self._blocked.get(value)
            if holders is not None:
                holders.discard(pattern_id)
                if not holders:
                    del self._blocked[value]
