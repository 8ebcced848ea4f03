"""Fault injection for crash tests: kill the process at a named point of the loop.

Set ``VIGIL_FAULT_KILL_AT=<point>:<batch number>`` (points: ``after_produce``,
``before_commit``). The process SIGKILLs itself there, as an OOM kill or node loss would,
so tests can prove that no alert is lost between producing and committing.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping

POINTS = ("after_produce", "before_commit")


class FaultInjector:
    def __init__(self, point: str | None = None, batch: int = 0) -> None:
        if point is not None and point not in POINTS:
            raise ValueError(f"VIGIL_FAULT_KILL_AT: unknown point {point!r}, known: {POINTS}")
        self.point = point
        self.batch = batch

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FaultInjector:
        spec = (os.environ if env is None else env).get("VIGIL_FAULT_KILL_AT")
        if not spec:
            return cls()
        point, _, batch = spec.partition(":")
        return cls(point, int(batch or "1"))

    def reached(self, point: str, batch: int) -> None:
        if point == self.point and batch >= self.batch:
            os.kill(os.getpid(), signal.SIGKILL)
