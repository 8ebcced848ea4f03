"""The columnar form in which a ``BoundedTable`` pickles (detectors/features/state.py).

Not compiled with the tables (setup.py): this is bulk work in numpy and C-level builtins,
once a snapshot, where compiled code was slower than the interpreter (a 300k-entity
extractor pickled in 1.09 s compiled, 0.96 s from source).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain, islice
from typing import Any

import numpy as np

FORMAT = 1
# Joins string keys into one string. A key containing it falls back to a plain list.
_SEP = "\x00"


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while a restore allocates millions of containers.

    Each new tuple or set counts towards the next collection, and full collections walk
    every live object, so a million-key restore spent most of its time in the GC. Nothing
    built here can form a reference cycle; the GC is resumed (if it was on) afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def pack_hashables(items: list[Any]) -> tuple[str, Any]:
    """Strings as one joined string (one pickle opcode, one ``split`` to restore)."""
    if items and set(map(type, items)) == {str}:
        joined = _SEP.join(items)
        if joined.count(_SEP) == len(items) - 1:  # no item contains the separator
            return "joined", joined
    return "list", items


def unpack_hashables(packed: tuple[str, Any]) -> list[Any]:
    kind, data = packed
    if kind == "joined":
        return data.split(_SEP)  # type: ignore[no-any-return]
    if kind == "list":
        return list(data)
    raise ValueError(f"unknown packed key form {kind!r}")


def _float_rows(values: list[Any]) -> int | None:
    """The common width if every value is a tuple or list of exactly-``float`` items."""
    widths = set(map(len, values))
    if len(widths) != 1:
        return None
    width = widths.pop()
    if width == 0 or set(map(type, chain.from_iterable(values))) != {float}:
        return None
    return width


def pack_values(values: list[Any]) -> tuple[str, Any]:
    """Columnar form of a table's values, chosen by their exact types.

    ``float`` -> a float64 array; tuples or lists of floats of one width -> an (n, width)
    float64 array; sets -> their members packed flat plus one length per set. float64
    holds a Python float exactly, and ``tolist`` gives Python floats back, so restored
    values compare and compute exactly as before. Anything else is kept as a list.
    """
    if not values:
        return "list", values
    types = set(map(type, values))
    if types == {float}:
        return "float", np.array(values, dtype=np.float64)
    if types in ({tuple}, {list}):
        width = _float_rows(values)
        if width is not None:
            flat = np.fromiter(
                chain.from_iterable(values), dtype=np.float64, count=len(values) * width
            )
            kind = "float_tuples" if types == {tuple} else "float_lists"
            return kind, flat.reshape(len(values), width)
    if set in types or types == {str}:
        # Bare values and sets (DistinctSets keeps a lone value bare): every member flat,
        # and per value its set size, or -1 for a bare value.
        lengths = np.fromiter(
            (len(v) if type(v) is set else -1 for v in values), dtype=np.int64, count=len(values)
        )
        # Most sets are tiny; the smallest integer type keeps the lengths column small.
        lengths = lengths.astype(np.min_scalar_type(-max(int(lengths.max()), 1)))
        members = list(chain.from_iterable(v if type(v) is set else (v,) for v in values))
        return "members", (lengths, pack_hashables(members))
    return "list", values


def unpack_values(packed: tuple[str, Any]) -> list[Any]:
    kind, data = packed
    if kind == "float":
        return data.tolist()  # type: ignore[no-any-return]
    if kind == "float_tuples":
        return list(map(tuple, data.tolist()))
    if kind == "float_lists":
        return data.tolist()  # type: ignore[no-any-return]
    if kind == "members":
        lengths, packed_members = data
        members = unpack_hashables(packed_members)
        if lengths.max(initial=-1) < 0:
            return members  # all bare
        flat = iter(members)
        return [next(flat) if n < 0 else set(islice(flat, n)) for n in lengths.tolist()]
    if kind == "list":
        return list(data)
    raise ValueError(f"unknown packed value form {kind!r}")


def pack_entries(entries: list[Any]) -> tuple[str, Any]:
    """Optional (value, float) entries (``RecentlyNew``'s form; None: none): whether each
    is there, and the values and times of those that are, as columns."""
    present = [entry for entry in entries if entry is not None]
    if any(type(entry) is not tuple or type(entry[1]) is not float for entry in present):
        return "list", entries
    return "entries", (
        np.fromiter((entry is not None for entry in entries), dtype=np.bool_, count=len(entries)),
        pack_hashables([value for value, _ in present]),
        np.array([t for _, t in present], dtype=np.float64),
    )


def unpack_entries(packed: tuple[str, Any]) -> list[Any]:
    kind, data = packed
    if kind == "entries":
        mask, packed_values, times = data
        found = iter(zip(unpack_hashables(packed_values), times.tolist(), strict=True))
        return [next(found) if there else None for there in mask.tolist()]
    if kind == "list":
        return list(data)
    raise ValueError(f"unknown packed entry form {kind!r}")
