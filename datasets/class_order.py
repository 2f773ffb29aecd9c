"""Class order of the image-list data sets: which original class becomes class 0, 1, ...

The published code (MiSLAS and its ARB-Loss fork, ``datasets/imagenet.py``, ``ina2018.py``,
``places.py``, ``LT_Dataset.__init__``) numbers the classes by descending training count::

    sorted_classes = np.argsort(-np.array(cls_num_list_old))   # int64, default kind
    class_map[sorted_classes[i]] = i

The default kind is numpy's non-stable introsort, so classes with equal counts come out in the
order that sort happens to leave them in. The published code ran on numpy 1.x (both
repositories' requirements.txt pin numpy 1.19.2), whose scalar argsort for integers is the
same code in numpy 1.21.6 and 1.24.4 (quicksort / heapsort sources compared). numpy 1.25+ on
AVX-512 machines and numpy 2.x use SIMD sorts that break ties differently (and differently
per CPU), and a stable sort differs too (on 153 of Places-LT's 365 classes).
:func:`numpy124_argsort` reproduces numpy 1.24's ``np.argsort`` of an integer array exactly,
on any numpy and any CPU, so the published labels can be rebuilt.
"""
from __future__ import annotations

from typing import List

import numpy as np

# numpy 1.24 numpy/core/src/npysort/quicksort.cpp: partitions of at most this many + 1
# elements are finished by insertion sort
SMALL_QUICKSORT = 15

MODES = ("reference", "stable")


def _sift_down(v: list, t: List[int], o: int, i: int, n: int, tmp: int) -> None:
    """Place ``tmp`` at heap slot ``i`` (1-based, offset ``o``) of a heap of ``n`` slots,
    moving larger children up: numpy 1.24's sift-down, shared by both phases of its heapsort."""
    j = i << 1
    while j <= n:
        if j < n and v[t[o + j]] < v[t[o + j + 1]]:
            j += 1
        if v[tmp] < v[t[o + j]]:
            t[o + i] = t[o + j]
            i, j = j, j + j
        else:
            break
    t[o + i] = tmp


def _aheapsort(v: list, t: List[int], start: int, n: int) -> None:
    """numpy 1.24 ``aheapsort_`` (npysort_heapsort.h) on ``t[start:start + n]``, in place.

    The heap is 1-based as in numpy: heap slot ``k`` is ``t[start + k - 1]``.
    """
    o = start - 1
    for lo in range(n >> 1, 0, -1):  # build the max-heap
        _sift_down(v, t, o, lo, n, t[o + lo])
    while n > 1:  # move the maximum to the end, sift the displaced element down
        tmp = t[o + n]
        t[o + n] = t[o + 1]
        n -= 1
        _sift_down(v, t, o, 1, n, tmp)


def _aquicksort(v: list) -> List[int]:
    """numpy 1.24 ``aquicksort_`` (quicksort.cpp) on a list: the indices that sort ``v``.

    A line-by-line port that keeps every comparison (only ``<``) and swap in numpy's order, so
    equal values end up where numpy leaves them: median-of-three pivot, partitions of <= 16
    elements by insertion sort, the larger part pushed on an explicit stack, and a depth limit
    of 2 * floor(log2(n)), checked when a part is taken off the stack, past which that part is
    heap-sorted.
    """
    n = len(v)
    t = list(range(n))  # numpy starts from the identity permutation
    stack = []  # (first, last, depth) of the parts still to sort
    pl, pr = 0, n - 1
    depth = 2 * max(n.bit_length() - 1, 0)  # npy_get_msb(n) * 2
    while True:
        if depth < 0:
            _aheapsort(v, t, pl, pr - pl + 1)
        else:
            while pr - pl > SMALL_QUICKSORT:
                pm = pl + ((pr - pl) >> 1)
                if v[t[pm]] < v[t[pl]]:
                    t[pm], t[pl] = t[pl], t[pm]
                if v[t[pr]] < v[t[pm]]:
                    t[pr], t[pm] = t[pm], t[pr]
                if v[t[pm]] < v[t[pl]]:
                    t[pm], t[pl] = t[pl], t[pm]
                vp = v[t[pm]]
                pi, pj = pl, pr - 1
                t[pm], t[pj] = t[pj], t[pm]
                while True:
                    pi += 1
                    while v[t[pi]] < vp:
                        pi += 1
                    pj -= 1
                    while vp < v[t[pj]]:
                        pj -= 1
                    if pi >= pj:
                        break
                    t[pi], t[pj] = t[pj], t[pi]
                t[pi], t[pr - 1] = t[pr - 1], t[pi]
                depth -= 1
                if pi - pl < pr - pi:  # keep sorting the smaller part, push the larger
                    stack.append((pi + 1, pr, depth))
                    pr = pi - 1
                else:
                    stack.append((pl, pi - 1, depth))
                    pl = pi + 1
            for pi in range(pl + 1, pr + 1):  # insertion sort (stable)
                vi = t[pi]
                vp = v[vi]
                pj = pi
                while pj > pl and vp < v[t[pj - 1]]:
                    t[pj] = t[pj - 1]
                    pj -= 1
                t[pj] = vi
        if not stack:
            return t
        pl, pr, depth = stack.pop()


def numpy124_argsort(a) -> np.ndarray:
    """What ``np.argsort(a)`` (default kind) returns under numpy 1.24 for a 1-D integer array.

    Same result on every numpy version and CPU (pure Python, about 10 ms for 8,142 values).
    Integer input only: numpy orders floats with NaN rules this port does not copy.
    """
    a = np.asarray(a)
    if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
        raise ValueError(f"numpy124_argsort takes a 1-D integer array, got {a.dtype} "
                         f"with shape {a.shape}")
    return np.array(_aquicksort(a.tolist()), dtype=np.int64)


def class_order(counts, mode: str = "reference") -> np.ndarray:
    """Original class id of each new class id (``order[new] = old``), by descending count.

    ``mode='reference'``: ties broken as the published code broke them (numpy 1.x
    ``np.argsort(-counts)``, see :func:`numpy124_argsort`), so labels match the released
    checkpoints. ``mode='stable'``: ties keep the original id order (platform independent and
    easy to state, for new work). The two agree whenever there are at most 16 classes.
    """
    neg = -np.asarray(counts, dtype=np.int64)  # the published code sorts the negated counts
    if mode == "reference":
        return numpy124_argsort(neg)
    if mode == "stable":
        return np.argsort(neg, kind="stable").astype(np.int64)
    raise ValueError(f"class order {mode!r}; accepted: {', '.join(MODES)}")
