"""The compiled-code helpers of detection/arrays.py: borrowed views write through and leave ownership alone."""

from __future__ import annotations

import sys

import numpy as np
from numba import njit

from detection.arrays import borrowed, grown, prefetch


@njit
def _fill_through_borrowed(a, start):
    b = borrowed(a)
    for i in range(b.size):
        prefetch(b, min(i + 8, b.size - 1))
        b[i] = start + i
    return b.sum()


def test_a_borrowed_view_writes_into_the_array_and_leaves_its_reference_count():
    a = np.zeros(1000)
    refs = sys.getrefcount(a)
    for _ in range(3):  # a wrong count would free or leak the array across calls
        total = _fill_through_borrowed(a, 5.0)
    np.testing.assert_array_equal(a, 5.0 + np.arange(1000))
    assert total == a.sum()
    assert sys.getrefcount(a) == refs
    a[:] = 1.0  # still the caller's memory
    assert a.sum() == 1000.0


def test_grown_keeps_rows_and_fills_new_ones():
    a = np.arange(6).reshape(3, 2)
    g = grown(a, 5, -1)
    np.testing.assert_array_equal(g[:3], a)
    assert (g[3:] == -1).all() and g.shape == (5, 2)
