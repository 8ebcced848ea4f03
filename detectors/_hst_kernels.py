"""numba kernels behind :mod:`detectors.hst`.

Node layout. All of a node's data sits in one 16-byte record (``NODE``: threshold, split
feature, window stamp, ``l_mass`` counter and the previous window's count), so a visit
touches one cache line, not one per array. The heap is 1-based (root at 1, children of
``k`` at ``2k`` and ``2k + 1``, index 0 unused, so 0 can mean "no node"): siblings share a
line. ``nodes[:, 1:]`` is the usual 0-based heap of shape ``(n_trees, 2**(height + 1) - 1)``.

Lazy window swap. river's swap sets ``r_mass = l_mass; l_mass = 0`` on every node: at 25
trees of height 15 that is 1.6 million nodes every 250 events. Here a node carries the
window ``stamp`` in which ``cnt`` was counted and ``prev``, the count of the window before
that. With ``age = gen - stamp`` (``gen`` the current window):

* ``l_mass`` is ``cnt`` if ``age == 0``, else 0;
* ``r_mass`` is ``prev`` if ``age == 0``, ``cnt`` if ``age == 1``, else 0.

A node is brought up to date only when an event visits it, so the swap is ``gen += 1``.
Stamps are 16-bit and compared modulo 2**16; every ``SWEEP_EVERY`` windows a sweep resets
nodes older than one window to age 2, so no age ever wraps around.

Lazy descent. Scoring reads a node's ``r_mass`` only if its parent's ``r_mass`` reached
``size_limit``: the walk stops at the first node below it. So the children of a node need
exact masses in a window only if the node ends the window with ``open_at =
ceil(size_limit)`` events or more. A node is *open* in a window once its count reaches
``open_at``, or from the start if its reference mass (previous window) is that large
already ("held open": the profile changes slowly, so this covers most of the traffic).
Learning walks down through open nodes only and parks an event at the first node that is
not open: counted there, not below. When a node opens by count, the events parked there in
this window are pushed one level down, in arrival order. Scores are exactly those of
counting every event down to its leaf, but a learn walks about as deep as the score walk,
a few top levels that stay in cache, instead of ``height + 1`` levels of mostly cold
memory. The rows and parking places of the current and previous window (two windows of
``window_size`` rows) are kept, so that the full masses can be rebuilt on demand
(:func:`materialise`), for state views, pickling and tests.

Missing values. A NaN value of the split feature descends to the child with the larger
``l_mass`` in the current window, the left child on a tie: river's rule for a missing key.
It is only ever applied where those masses are exact (below an open node, or in arrival
order while parked events are pushed), so it decides as it would with full counting.

Batches. Trees are independent of each other, so a batch is cut into segments that stay
inside one window, and each segment is run tree by tree: a tree's hot nodes stay in cache
across the segment's rows (row by row across all trees evicted them: 25 trees of height 15
are 26 MB). Splits never change, so where each row of a segment goes down a tree is found
first, level by level across the rows (:func:`_tree_paths`; :func:`_dense_paths`, without a
branch, when the segment has no NaN); the in-order pass that scores and counts then
follows known paths instead of waiting on one chain of dependent loads per walk. One event
at a time (``score_one``, ``learn_one``) skips the path pass.

The scalar state is a small int64 array ``clock = [gen, counter, first_window, deepest]``
that the kernels update in place (``deepest``: how deep the last block's walks went).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from detectors.protocol import FloatArray

IntArray = npt.NDArray[Any]
NodeArray = npt.NDArray[np.void]

NODE = np.dtype(
    [("threshold", "<f8"), ("feature", "<i2"), ("stamp", "<u2"), ("cnt", "<u2"), ("prev", "<u2")],
    align=True,
)
MAX_FEATURES = 2**15 - 1
MAX_WINDOW = 2**16 - 1
SWEEP_EVERY = 2**14
SEGMENT = 256

GEN = 0
COUNTER = 1
FIRST_WINDOW = 2
DEEPEST = 3


@njit(cache=True)
def build_trees(
    uniforms: FloatArray,
    lows: FloatArray,
    highs: FloatArray,
    population: IntArray,
    n_trees: int,
    height: int,
    padding: float,
) -> tuple[IntArray, FloatArray]:
    """River's ``make_padded_tree`` replayed on pre-drawn ``random.Random.random()`` values.

    river draws, for every internal node in pre-order (node, left subtree, right subtree),
    one uniform for ``rng.choices`` (a feature weighted by the width of its current limits)
    and one for ``rng.uniform`` (the split inside the padded limits), trees one after the
    other. ``lows``/``highs`` are in river's population order (sorted feature names) and
    ``population`` maps that order to our column index. Every float operation is done in
    CPython's order so that the thresholds are bit-identical to river's.
    """
    n_nodes = 2 ** (height + 1) - 1
    n_internal = 2**height - 1
    n_pop = lows.shape[0]
    feature = np.full((n_trees, n_nodes), -1, dtype=np.int32)
    threshold = np.full((n_trees, n_nodes), np.nan, dtype=np.float64)
    # Nodes are visited in heap order, each with its own copy of the limits box; the
    # pre-order rank (which pair of uniforms it consumes) follows from the heap index.
    box_lo = np.empty((max(n_internal, 1), n_pop), dtype=np.float64)
    box_hi = np.empty((max(n_internal, 1), n_pop), dtype=np.float64)
    rank = np.zeros(max(n_internal, 1), dtype=np.int64)
    cum = np.empty(n_pop, dtype=np.float64)
    for t in range(n_trees):
        base = t * 2 * n_internal
        if n_internal > 0:
            box_lo[0, :] = lows
            box_hi[0, :] = highs
            rank[0] = 0
        depth = 0
        next_level = 1
        for k in range(n_internal):
            if k == next_level:
                depth += 1
                next_level = 2 * next_level + 1
            # rng.choices(population, weights=[hi - lo for each feature])[0]
            acc = 0.0
            for i in range(n_pop):
                acc += box_hi[k, i] - box_lo[k, i]
                cum[i] = acc
            total = cum[n_pop - 1] + 0.0
            target = uniforms[base + 2 * rank[k]] * total
            low_i = 0
            upper = n_pop - 1
            while low_i < upper:  # bisect.bisect_right(cum, target, 0, n_pop - 1)
                mid = (low_i + upper) // 2
                if target < cum[mid]:
                    upper = mid
                else:
                    low_i = mid + 1
            f = low_i
            # rng.uniform(a + padding * (b - a), b - padding * (b - a))
            a = box_lo[k, f]
            b = box_hi[k, f]
            ua = a + padding * (b - a)
            ub = b - padding * (b - a)
            at = ua + (ub - ua) * uniforms[base + 2 * rank[k] + 1]
            feature[t, k] = population[f]
            threshold[t, k] = at
            left = 2 * k + 1
            if left < n_internal:
                # Internal pre-order: the left child comes right after its parent, the right
                # child after the whole left subtree (2**(height - 1 - depth) - 1 internal
                # nodes).
                rank[left] = rank[k] + 1
                rank[left + 1] = rank[k] + 2 ** (height - 1 - depth)
                box_lo[left, :] = box_lo[k, :]
                box_hi[left, :] = box_hi[k, :]
                box_hi[left, f] = at
                box_lo[left + 1, :] = box_lo[k, :]
                box_hi[left + 1, :] = box_hi[k, :]
                box_lo[left + 1, f] = at
    return feature, threshold


@njit(cache=True)
def sweep(nodes: NodeArray, gen: int) -> None:
    """Reset every node older than one window to age 2 (its masses are 0 either way)."""
    g = np.uint16(gen & 0xFFFF)
    stale = np.uint16((gen - 2) & 0xFFFF)
    for t in range(nodes.shape[0]):
        for k in range(1, nodes.shape[1]):
            nd = nodes[t, k]
            if np.uint16(g - nd.stamp) >= 2:
                nd.stamp = stale
                nd.cnt = 0
                nd.prev = 0


@njit(cache=True)
def _l_mass(nodes: NodeArray, t: int, k: int, g: np.uint16) -> np.int64:
    nd = nodes[t, k]
    return np.int64(nd.cnt) if nd.stamp == g else np.int64(0)


@njit(cache=True)
def _r_mass(nodes: NodeArray, t: int, k: int, g: np.uint16) -> np.int64:
    nd = nodes[t, k]
    age = np.uint16(g - nd.stamp)
    old = np.int64(nd.cnt) if age == 1 else np.int64(0)
    return np.int64(nd.prev) if age == 0 else old


@njit(cache=True)
def _count(nodes: NodeArray, t: int, k: int, g: np.uint16) -> np.int64:
    """Roll node ``k`` into the current window, count one event, return its ``l_mass``."""
    nd = nodes[t, k]
    age = np.uint16(g - nd.stamp)
    cnt = np.int64(nd.cnt)
    if age != 0:
        nd.prev = cnt if age == 1 else 0
        nd.stamp = g
        cnt = np.int64(0)
    nd.cnt = cnt + 1
    return cnt + 1


@njit(cache=True)
def _child(
    nodes: NodeArray, t: int, k: int, window: FloatArray, side: int, e: int, g: np.uint16
) -> int:
    """The child of node ``k`` that event ``e`` goes to.

    A missing value goes to the child with the larger ``l_mass``, so this is only called
    where those masses are exact so far: below an open node, or while a node that just
    opened pushes its parked events down in arrival order.
    """
    nd = nodes[t, k]
    v = window[side, e, nd.feature]
    if v == v:
        # Branch-free: which way a value goes is a coin flip the CPU cannot predict.
        return 2 * k + int(v >= nd.threshold)
    return 2 * k + int(_l_mass(nodes, t, 2 * k, g) < _l_mass(nodes, t, 2 * k + 1, g))


@njit(cache=True)
def _open(
    nodes: NodeArray,
    park: IntArray,
    window: FloatArray,
    side: int,
    e: int,
    t: int,
    k: int,
    g: np.uint16,
) -> None:
    """Node ``k`` just opened: push the events parked there one level down.

    In arrival order, because a missing value's way down depends on the events before it.
    """
    for earlier in range(e):
        if park[side, t, earlier] == k:
            child = _child(nodes, t, k, window, side, earlier, g)
            _count(nodes, t, child, g)
            park[side, t, earlier] = child


@njit(cache=True)
def _resume(
    nodes: NodeArray,
    park: IntArray,
    window: FloatArray,
    side: int,
    e: int,
    g: np.uint16,
    height: int,
    open_at: int,
    paper: bool,
    t: int,
    k: int,
    d: int,
    weight: int,
    score_on: bool,
    learn_on: bool,
) -> np.int64:
    """Finish the walk of tree ``t`` below node ``k`` (depth ``d``, done with).

    The general walk, for when the fast one in :func:`run_rows` meets a NaN on the way
    down. Returns the rest of the tree's score.
    """
    total = np.int64(0)
    while d < height and (score_on or learn_on):
        # Learning goes on only below an open node, scoring only below a node with
        # r_mass >= open_at, which is held open: either way k's children have exact
        # masses, as a missing value's rule needs.
        k = _child(nodes, t, k, window, side, e, g)
        d += 1
        weight *= 2
        if score_on:
            mass = _r_mass(nodes, t, k, g)
            if paper:
                if mass < open_at or d == height:
                    total += mass * weight
                    score_on = False
            else:
                total += mass * weight
                if mass < open_at:
                    score_on = False
        if learn_on:
            c = _count(nodes, t, k, g)
            held = _r_mass(nodes, t, k, g) >= open_at
            if d == height or (c < open_at and not held):
                park[side, t, e] = k
                learn_on = False
            elif c == open_at and not held:
                _open(nodes, park, window, side, e, t, k, g)
    return total


@njit(cache=True)
def _tree_paths(
    src: FloatArray,
    sd: int,
    first: int,
    count: int,
    nodes: NodeArray,
    t: int,
    depth: int,
    ahead: IntArray,
    reach: IntArray,
) -> None:
    """Where events ``first:first + count`` of ``src[sd]`` get to ``depth`` levels down tree
    ``t`` (node ``ahead``).

    Splits never change, so paths do not depend on what is learned and can be found before
    the in-order pass. Walking level by level across the rows gives the CPU many
    independent loads and compares to overlap, where one walk is a chain of dependent
    ones; the in-order pass then follows known paths, whose next node it knows before
    the current one is loaded (it walks on by itself below ``depth``). A tree's hot
    levels stay in cache over a segment, so explicit prefetches (used when rows went
    across all trees) no longer paid: without them 2-3% faster. A path stops at a NaN, whose
    way down depends on the masses at that moment: ``reach`` is the depth of ``ahead``.
    The caller starts every path at the root (``ahead`` 1, ``reach`` ``depth``).
    """
    for d in range(depth):
        for r in range(count):
            k = ahead[r]
            nd = nodes[t, k]
            v = src[sd, first + r, nd.feature]
            if v == v:
                k = 2 * k + int(v >= nd.threshold)
                ahead[r] = k
            elif reach[r] == depth:
                # The first NaN on the way: the path stays at k from here on.
                reach[r] = d


@njit(cache=True)
def _dense_paths(
    src: FloatArray,
    sd: int,
    first: int,
    count: int,
    nodes: NodeArray,
    t: int,
    depth: int,
    ahead: IntArray,
    reach: IntArray,
) -> None:
    """:func:`_tree_paths` for a segment without a NaN (the usual case): with no branch
    in the loop the CPU overlaps more rows' loads: 7-8% faster batches at 25/15/250."""
    for _ in range(depth):
        for r in range(count):
            k = ahead[r]
            nd = nodes[t, k]
            ahead[r] = 2 * k + np.int64(src[sd, first + r, nd.feature] >= nd.threshold)


@njit(cache=True)
def run_rows(
    rows: FloatArray,
    nodes: NodeArray,
    park: IntArray,
    window: FloatArray,
    clock: IntArray,
    window_size: int,
    height: int,
    open_at: int,
    paper: bool,
    do_score: bool,
    do_learn: bool,
    out: FloatArray,
) -> None:
    """Score (into ``out``) and/or learn each row in order, exactly as one event at a time.

    With both flags each row is scored before it is learned, and the window swaps between
    rows exactly where river swaps, so a batch gives the per-event scores whatever its
    length or alignment with the window. ``park`` and ``window`` hold two windows, indexed
    by the parity of the window number.

    Trees are independent of each other, so the rows are taken in segments that stay
    inside one window, and each segment tree by tree: a tree's nodes stay in cache across
    the segment's rows, where going row by row across all trees evicts them. Within a tree
    the rows go in arrival order, which is all that per-event semantics ask.

    Per row and tree, scoring sums ``r_mass * 2**depth`` (river: along the walk; paper: at
    its end) and stops at the first node with ``r_mass < size_limit``, which for integer
    masses is ``r_mass < open_at``; learning counts the event down to the first node that
    is not open. Both follow the same path, so one walk serves both until each has
    stopped; the score reads only the previous window, which counting this event leaves
    alone, so scoring sees the state before learning.

    The walk is split for speed: a tight loop over the usual stretch (nodes held open,
    scoring and learning both on, path known ahead), then a general loop, which hands the
    rare cases over to :func:`_open` (a node opens by count) and :func:`_resume` (a NaN);
    with that rare code inside the loop it ran at half speed.
    """
    n_trees = nodes.shape[0]
    n_features = rows.shape[1]
    if paper:
        max_score = float(n_trees) * float(window_size) * float(2**height)
    else:
        max_score = float(n_trees) * float(window_size) * float(2 ** (height + 1) - 1)
    longest = max(1, min(rows.shape[0], SEGMENT))  # one event at a time: no 256-row arrays
    ahead = np.empty(longest, dtype=np.int64)
    reach = np.empty(longest, dtype=np.int64)
    totals = np.empty(longest, dtype=np.int64)
    # Rows only scored are walked from here (learned rows from their slot in ``window``).
    scratch = np.empty((1, longest, n_features), dtype=np.float64)
    gen = clock[GEN]
    e = clock[COUNTER]
    first = clock[FIRST_WINDOW] != 0
    deepest = clock[DEEPEST]
    i = 0
    while i < rows.shape[0]:
        side = gen & 1
        g = np.uint16(gen & 0xFFFF)
        count = min(rows.shape[0] - i, SEGMENT)
        if do_learn:
            count = min(count, window_size - e)
            src = window
            sd = side
            e0 = e
        else:
            src = scratch
            sd = 0
            e0 = 0
        dense = True  # no NaN in the segment: the branch-free path pass applies
        for r in range(count):
            totals[r] = 0
            for f in range(n_features):
                v = rows[i + r, f]
                src[sd, e0 + r, f] = v
                if v != v:
                    dense = False
        scoring = do_score and not first
        # Paths as deep as the deepest walk of the previous segment: walks end where
        # masses thin out, and a fixed depth either wastes work or falls short. One event
        # at a time has none: a path found first would only be walked twice.
        depth = min(deepest, height) if count > 1 else 0
        deepest = 0
        for t in range(n_trees if scoring or do_learn else 0):
            for r in range(count):
                ahead[r] = 1
                reach[r] = depth
            if depth > 0 and dense:
                _dense_paths(src, sd, e0, count, nodes, t, depth, ahead, reach)
            elif depth > 0:
                _tree_paths(src, sd, e0, count, nodes, t, depth, ahead, reach)
            for r in range(count):
                ee = e0 + r
                known = reach[r]
                end = ahead[r]
                k = 1
                d = 0
                weight = 1  # 2**depth
                total = np.int64(0)
                score_on = scoring
                learn_on = do_learn
                if score_on and learn_on:
                    # The usual stretch: nodes held open by their reference mass, so both
                    # scoring and learning go on, along the known path (no leaf, no NaN).
                    while d < known:
                        nd = nodes[t, k]
                        age = np.uint16(g - nd.stamp)
                        cnt = np.int64(nd.cnt)
                        old = cnt if age == 1 else np.int64(0)
                        mass = np.int64(nd.prev) if age == 0 else old
                        if mass < open_at:
                            break
                        if not paper:
                            total += mass * weight
                        if age != 0:
                            nd.prev = old
                            nd.stamp = g
                            cnt = np.int64(0)
                        nd.cnt = cnt + 1
                        d += 1
                        k = end >> (known - d)
                        weight *= 2
                counted = False  # node k already scored and counted (back from an opening)
                while True:
                    stop = 0  # 1: node k just opened, 2: NaN on the way down from k
                    while True:
                        if not counted:
                            nd = nodes[t, k]
                            age = np.uint16(g - nd.stamp)
                            cnt = np.int64(nd.cnt)
                            old = cnt if age == 1 else np.int64(0)
                            mass = np.int64(nd.prev) if age == 0 else old
                            if score_on:
                                if paper:
                                    # Tan et al.: only the node where the walk stops counts.
                                    if mass < open_at or d == height:
                                        total += mass * weight
                                        score_on = False
                                else:
                                    # river: every node on the way counts, the stop node too.
                                    total += mass * weight
                                    if mass < open_at:
                                        score_on = False
                            if learn_on:
                                # Roll the node into the current window, count the event.
                                if age != 0:
                                    nd.prev = old
                                    nd.stamp = g
                                    cnt = np.int64(0)
                                cnt += 1
                                nd.cnt = cnt
                                held = mass >= open_at
                                if d == height or (cnt < open_at and not held):
                                    park[side, t, ee] = k
                                    learn_on = False
                                elif cnt == open_at and not held:
                                    stop = 1
                                    break
                        counted = False
                        if d == height or not (score_on or learn_on):
                            break
                        if d < known:
                            k = end >> (known - d - 1)
                        else:
                            v = src[sd, ee, nodes[t, k].feature]
                            if v != v:
                                stop = 2
                                break
                            k = 2 * k + int(v >= nodes[t, k].threshold)
                        d += 1
                        weight *= 2
                    if stop == 1:
                        _open(nodes, park, window, side, ee, t, k, g)
                        counted = True
                        continue
                    if stop == 2:
                        total += _resume(
                            nodes, park, src, sd, ee, g, height, open_at, paper,
                            t, k, d, weight, score_on, learn_on,
                        )  # fmt: skip
                    break
                totals[r] += total
                deepest = max(deepest, d)
        if do_score:
            for r in range(count):
                out[i + r] = 1.0 - totals[r] / max_score if scoring else 0.0
        i += count
        if do_learn:
            e += count
            if e == window_size:
                gen += 1
                e = 0
                first = False
                if gen % SWEEP_EVERY == 0:
                    sweep(nodes, gen)
    clock[GEN] = gen
    clock[COUNTER] = e
    clock[FIRST_WINDOW] = int(first)
    clock[DEEPEST] = max(deepest, 1)


@njit(cache=True)
def _push_down(
    nodes: NodeArray,
    park: IntArray,
    window: FloatArray,
    side: int,
    n_events: int,
    height: int,
    mass: IntArray,
) -> None:
    """Count parked events on down to their leaves in ``mass``, in arrival order."""
    first_leaf = 2**height
    for t in range(nodes.shape[0]):
        for e in range(n_events):
            k = park[side, t, e]
            if k == 0:
                continue
            while k < first_leaf:
                nd = nodes[t, k]
                v = window[side, e, nd.feature]
                if v < nd.threshold:
                    k = 2 * k
                elif v >= nd.threshold or mass[t, 2 * k] < mass[t, 2 * k + 1]:
                    k = 2 * k + 1
                else:
                    k = 2 * k
                mass[t, k] += 1


@njit(cache=True)
def materialise(
    nodes: NodeArray,
    park: IntArray,
    window: FloatArray,
    clock: IntArray,
    window_size: int,
    height: int,
    l_mass: IntArray,
    r_mass: IntArray,
) -> None:
    """Fill ``l_mass``/``r_mass`` (1-based heap) with the masses of full counting."""
    gen = clock[GEN]
    g = np.uint16(gen & 0xFFFF)
    for t in range(nodes.shape[0]):
        for k in range(1, nodes.shape[1]):
            l_mass[t, k] = _l_mass(nodes, t, k, g)
            r_mass[t, k] = _r_mass(nodes, t, k, g)
    side = gen & 1
    if gen >= 1:
        _push_down(nodes, park, window, 1 - side, window_size, height, r_mass)
    _push_down(nodes, park, window, side, clock[COUNTER], height, l_mass)
