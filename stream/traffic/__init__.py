"""Synthetic marketplace traffic with injected attacks and malformed records.

``generate`` is pure: a config in, records out. ``sinks`` writes them to a file or Kafka,
``cli`` is ``vigil generate``.
"""

from __future__ import annotations

from stream.traffic.config import ATTACK_TYPES, TrafficConfig
from stream.traffic.generator import generate
from stream.traffic.malformed import MALFORMED_KINDS
from stream.traffic.records import GeneratedRecord, label_line

__all__ = [
    "ATTACK_TYPES",
    "MALFORMED_KINDS",
    "GeneratedRecord",
    "TrafficConfig",
    "generate",
    "label_line",
]
