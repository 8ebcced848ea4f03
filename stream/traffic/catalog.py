"""What shops sell: categories, listing titles built from category words, and prices."""

from __future__ import annotations

import itertools
import math
import random
from bisect import bisect_right
from typing import Final

from stream.traffic.vocab import CATEGORIES, TITLE_SUFFIXES, Category

MIN_PRICE: Final = 0.5
MAX_PRICE: Final = 50_000.0

_CATEGORY_CUMULATIVE: Final = tuple(itertools.accumulate(c.shop_weight for c in CATEGORIES))


def pick_category(rnd: random.Random) -> Category:
    """A category, weighted by how many shops sell in it."""
    point = rnd.random() * _CATEGORY_CUMULATIVE[-1]
    return CATEGORIES[bisect_right(_CATEGORY_CUMULATIVE, point)]


def listing_title(category: Category, rnd: random.Random) -> str:
    """E.g. ``Dainty Moonstone Ring - Gift for Her``."""
    return (
        f"{_pick(category.adjectives, rnd)} {_pick(category.materials, rnd)} "
        f"{_pick(category.nouns, rnd)}{_pick(TITLE_SUFFIXES, rnd)}"
    )


def listing_price(category: Category, rnd: random.Random) -> float:
    """A price from the category's lognormal distribution."""
    return shaped_price(rnd.lognormvariate(math.log(category.median_price), category.price_sigma))


def shaped_price(raw: float) -> float:
    """``raw`` clamped to a sane range and shaped like a shop price (24.99, not 25.137)."""
    clamped = min(max(raw, MIN_PRICE), MAX_PRICE)
    if clamped >= 3.0:
        return round(round(clamped) - 0.01, 2)
    return round(clamped, 2)


def _pick(options: tuple[str, ...], rnd: random.Random) -> str:
    return options[int(rnd.random() * len(options))]
