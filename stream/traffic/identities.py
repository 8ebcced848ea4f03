"""Identifiers and the things users carry: ids, devices, IP addresses, cards.

Entity ids count up from 1 like database keys; devices and card fingerprints are random
64/80-bit hex strings, whose collisions are negligible at any stream length.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Card:
    bin: str
    fingerprint: str


class IdAllocator:
    """Sequential ids ``u-<n>``, ``s-<n>``, ``l-<n>``, ``o-<n>``, shared by all traffic."""

    def __init__(self) -> None:
        self._users = 0
        self._shops = 0
        self._listings = 0
        self._orders = 0

    def user(self) -> str:
        self._users += 1
        return f"u-{self._users}"

    def shop(self) -> str:
        self._shops += 1
        return f"s-{self._shops}"

    def listing(self) -> str:
        self._listings += 1
        return f"l-{self._listings}"

    def order(self) -> str:
        self._orders += 1
        return f"o-{self._orders}"


def device_id(rnd: random.Random) -> str:
    return f"d-{rnd.getrandbits(64):016x}"


def card(rnd: random.Random, bins: Sequence[str]) -> Card:
    return Card(bins[int(rnd.random() * len(bins))], f"fp-{rnd.getrandbits(80):020x}")


def ipv4(rnd: random.Random, first_octets: Sequence[int]) -> str:
    """A public address whose first octet is one of ``first_octets``."""
    first = first_octets[int(rnd.random() * len(first_octets))]
    return f"{first}.{subnet_octets(rnd)}.{host_octet(rnd)}"


def subnet_octets(rnd: random.Random) -> str:
    """The second and third octets of an address: ``"b.c"``."""
    return f"{int(rnd.random() * 256)}.{int(rnd.random() * 256)}"


def host_octet(rnd: random.Random) -> int:
    # 0 and 255 are network and broadcast addresses of a /24: never a client.
    return 1 + int(rnd.random() * 254)
