"""Stage 1 of arrival bursts (detectors/arrivals.py): which values a user arrives at.

Its own module because it runs for every event and is compiled with mypyc (setup.py),
with the feature state it sits next to in a partition's scorer; the rest of arrivals.py,
stage 2, runs on the few arrivals and stays Python.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from detectors.attributes import attribute_kind
from detectors.features.extractor import normalised_title, subnet24
from detectors.features.state import DEFAULT_MAX_KEYS, BoundedTable

DAY_S = 86_400.0
# Resources one actor controls: a burst of users there is coordination. Shops, countries,
# categories and card BINs are crowds (many honest users arrive at a popular shop at once).
# Listing titles ("title") can be tracked too, but honest sellers share plain titles ("gold
# hoop earrings"): in the demo traffic they raised the only false arrival patterns (seed
# 11) and caught no ring that the ring's /24 did not.
DEFAULT_KINDS: tuple[str, ...] = ("device", "ip24")


class ArrivalTracker:
    """Stage 1: the values of the tracked kinds a user arrives at (see the module docstring).

    >>> tracker = ArrivalTracker()
    >>> tracker.arrivals("u-1", ["device:d-1", "ip24:10.0.0", "country:US"], 0.0)
    ('device:d-1', 'ip24:10.0.0')
    >>> tracker.arrivals("u-1", ["device:d-1", "ip24:10.0.1"], 60.0)
    ('ip24:10.0.1',)
    >>> tracker.arrivals("u-1", ["device:d-1"], 2 * 86_400.0)  # a day later: again
    ('device:d-1',)
    """

    def __init__(
        self,
        kinds: Sequence[str] = DEFAULT_KINDS,
        forget_s: float = DAY_S,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        if not (math.isfinite(forget_s) and forget_s > 0):
            raise ValueError(f"forget_s must be positive, got {forget_s}")
        self.kinds = frozenset(kinds)
        self._device = "device" in self.kinds
        self._ip24 = "ip24" in self.kinds
        self._title = "title" in self.kinds
        self.forget_s = forget_s
        # "user\x1fvalue" -> event time of the last arrival counted
        self._last: BoundedTable[str, float] = BoundedTable(max_keys)

    def __len__(self) -> int:
        return len(self._last)

    def arrivals(self, user: str, attributes: Iterable[str], t: float) -> tuple[str, ...]:
        """The ``attributes`` of tracked kinds ``user`` arrives at by an event at ``t``."""
        values = [value for value in attributes if attribute_kind(value) in self.kinds]
        return self._arrive(user, values, t)

    def arrivals_of(self, event: Mapping[str, Any], t: float) -> tuple[str, ...]:
        """:meth:`arrivals` of a validated event's acting user and values, at event time
        ``t``: the scorer's per-event path, which builds only the values it tracks."""
        context = event["context"]
        values = []
        if self._device:
            values.append("device:" + context["device_id"])
        if self._ip24:
            values.append("ip24:" + subnet24(context["ip"]))
        if self._title and event["event_type"] == "listing.created":
            values.append("title:" + normalised_title(event["payload"]["title"]))
        return self._arrive(event["entities"]["user_id"], values, t)

    def _arrive(self, user: str, values: list[str], t: float) -> tuple[str, ...]:
        found: tuple[str, ...] = ()
        data = self._last._data
        for value in values:
            key = user + "\x1f" + value
            last = data.pop(key, None)
            if last is None or t - last >= self.forget_s:
                found += (value,)
                data[key] = t
            else:
                data[key] = last  # still the day's first: the day is counted from it
        self._last._evict()
        return found
